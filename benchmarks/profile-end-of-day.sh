#!/usr/bin/env bash
# The server's cost per check-in, stage by stage, in instructions: runs kepu-server under
# valgrind's callgrind (instruction counts do not depend on what else the machine does)
# through a reduced end-of-day twice, with two numbers of offline check-ins per device, and
# prints the difference per check-in for each stage (socket, decode, engine, validate,
# merge, persist, projections, fan-out, encode, compaction, allocation). The difference
# leaves out what both runs share: start-up, enrollment, the bookings and rosters.
#
#   benchmarks/profile-end-of-day.sh [--venues V] [--devices D] [--check-ins A,B]
#                                    [--roster R] [--out DIR] [--pg URL]
#
#   --venues V        venues (default 2)
#   --devices D       staff devices per venue (default 5)
#   --check-ins A,B   offline check-ins per device in the two runs (default 20,100)
#   --roster R        pupils per booking (default 300)
#   --out DIR         keep the callgrind files here (default: a temporary directory)
#   --pg URL          kepu-server on PostgreSQL: a server URL on which the script creates
#                     and drops a fresh database per run (default: SQLite)
#   --no-build        use the release binaries already built
#   KEPU_BENCH_SERVER_BIN=path  profile that server binary instead of this tree's build
#   KEPU_BENCH_LOADGEN_BIN=path run that load generator instead of this tree's build
#
# Needs valgrind. Takes a few minutes: the server runs about 50 times slower under it.
set -euo pipefail
cd "$(dirname "$0")/.."

venues=2
devices=5
check_ins="20,100"
roster=300
out=""
pg_url=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --venues | --devices | --check-ins | --roster | --out | --pg)
      [ $# -ge 2 ] || { echo "profile-end-of-day.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --venues) venues="$2" ;;
        --devices) devices="$2" ;;
        --check-ins) check_ins="$2" ;;
        --roster) roster="$2" ;;
        --out) out="$2" ;;
        --pg) pg_url="$2" ;;
      esac
      shift
      ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "profile-end-of-day.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
IFS=, read -r small large <<<"$check_ins"
for n in "$venues" "$devices" "$small" "$large" "$roster"; do
  case "$n" in
    '' | *[!0-9]*) echo "profile-end-of-day.sh: sizes are numbers" >&2; exit 2 ;;
  esac
done
[ "$large" -gt "$small" ] || { echo "profile-end-of-day.sh: --check-ins A,B wants A < B" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "profile-end-of-day.sh: valgrind is required" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
  echo "== building release binaries" >&2
  cargo build --release --locked -p kepu-server -p kepu-loadgen >&2
fi
# KEPU_BENCH_SERVER_BIN runs another build of the server (an A/B of two commits).
server_bin="${KEPU_BENCH_SERVER_BIN:-$target_dir/release/kepu-server}"
loadgen_bin="${KEPU_BENCH_LOADGEN_BIN:-$target_dir/release/kepu-loadgen}"

work="$(mktemp -d)"
[ -n "$out" ] || out="$work/out"
mkdir -p "$out"
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work/data-"*
}
trap cleanup EXIT
# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh


run() {
  local n="$1" data="$work/data-$1" db_args
  db_args=(--data-dir "$data")
  if [ -n "$pg_url" ]; then
    local db="kepu_profile_${n}_$$"
    psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    db_args+=(--database-url "${pg_url%/*}/$db")
  fi
  local code port
  code="$("$server_bin" admin create-user --role bureau-admin "${db_args[@]}" 2>/dev/null |
    sed -n 's/^enrollment code //p')"
  [ -n "$code" ] || { echo "profile-end-of-day.sh: could not create the admin user" >&2; exit 1; }
  port="$(free_port)"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$n.out" \
    "$server_bin" "${db_args[@]}" --bind "127.0.0.1:$port" >"$out/server.$n.log" 2>&1 &
  server_pid=$!
  wait_port "$port" 120
  echo "== end-of-day under callgrind: $venues venues x $devices devices x $n check-ins" >&2
  KEPU_LOADGEN_ADMIN_CODE="$code" "$loadgen_bin" --target kepu --url "ws://127.0.0.1:$port/sync" \
    --scenario end-of-day --no-progress --venues "$venues" --devices-per-venue "$devices" \
    --check-ins "$n" --roster "$roster" --timeout-secs 1200 --json "$out/loadgen.$n.json" >&2
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  if [ -n "$pg_url" ]; then
    psql -q "$pg_url" -c "DROP DATABASE IF EXISTS kepu_profile_${n}_$$" >/dev/null || true
  fi
}

run "$small"
run "$large"
echo "== callgrind files in $out" >&2
python3 benchmarks/callgrind-stages.py "$out/callgrind.$small.out" "$out/callgrind.$large.out" \
  --check-ins "$((venues * devices * (large - small)))"
