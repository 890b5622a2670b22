# Shared by the benchmark scripts: source it after `cd` to the repository root.
#
#   bench_workdir        a temporary directory in $work, removed at exit together with
#                        the processes whose ids are added to the array `pids`; raises
#                        the open-file limit (thousands of sockets on both ends)
#   free_port            prints a free TCP port on 127.0.0.1
#   wait_port PORT [S]   waits up to S seconds (default 20) until something listens

bench_name="$(basename "$0")"

bench_workdir() {
  work="$(mktemp -d)"
  pids=()
  trap bench_cleanup EXIT
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local tries=$(( ${2:-20} * 10 ))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$bench_name: nothing listens on port $1" >&2
  return 1
}
