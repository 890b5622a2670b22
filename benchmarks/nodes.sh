#!/usr/bin/env bash
# Several kepu-server nodes on one PostgreSQL database (ADR 0120): starts N release
# servers on the same empty database and runs the loadgen's live-day scenario with the
# writers on the first N-1 nodes and the observers on the last one, so its observer
# latency is the time from a check-in written on one node to a device on another (the
# storing node validates and commits, the other node hears NOTIFY, reads the rows and
# syncs them). Prints the loadgen's table.
#
#   benchmarks/nodes.sh --pg URL [--nodes N] [--quick] [--json F] [-- extra kepu-loadgen flags]
#
#   --pg URL   URL of an EMPTY PostgreSQL database the servers may migrate (required)
#   --nodes N  server processes (default 2)
#   --quick    small sizes
#   --json F   also write the figures to F
#   --scenario S  another loadgen scenario, e.g. end-of-day (P1 over the nodes: devices
#              are spread over every node); default live-day
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
pg_url=""
nodes=2
json=()
scenario=live-day
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --pg)
      [ $# -ge 2 ] || { echo "nodes.sh: --pg needs a database URL" >&2; exit 2; }
      pg_url="$2"
      shift
      ;;
    --nodes)
      [ $# -ge 2 ] || { echo "nodes.sh: --nodes needs a number" >&2; exit 2; }
      nodes="$2"
      shift
      ;;
    --json)
      [ $# -ge 2 ] || { echo "nodes.sh: --json needs a file" >&2; exit 2; }
      json=(--json "$2")
      shift
      ;;
    --) shift; extra=("$@"); break ;;
    --scenario)
      [ $# -ge 2 ] || { echo "nodes.sh: --scenario needs a name" >&2; exit 2; }
      scenario="$2"
      shift
      ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "nodes.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$pg_url" in
  postgres://* | postgresql://*) ;;
  *) echo "nodes.sh: --pg wants the postgres:// URL of an empty database" >&2; exit 2 ;;
esac
case "$nodes" in
  '' | *[!0-9]* | 0 | 1) echo "nodes.sh: --nodes wants a number of at least 2" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
echo "== building release binaries" >&2
cargo build --release --locked -p kepu-server -p kepu-loadgen >&2
server_bin="$target_dir/release/kepu-server"
loadgen_bin="$target_dir/release/kepu-loadgen"

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh
bench_workdir


db_args=(--data-dir "$work/data" --database-url "$pg_url")
code="$("$server_bin" admin create-user --role bureau-admin "${db_args[@]}" 2>/dev/null |
  sed -n 's/^enrollment code //p')"
[ -n "$code" ] || { echo "nodes.sh: could not create the admin user" >&2; exit 1; }
urls=()
for i in $(seq 1 "$nodes"); do
  port="$(free_port)"
  mkdir -p "$work/node$i"
  RUST_LOG=warn "$server_bin" --data-dir "$work/node$i" --database-url "$pg_url" \
    --bind "127.0.0.1:$port" >"$work/node$i.log" 2>&1 &
  pids+=("$!")
  wait_port "$port"
  urls+=("ws://127.0.0.1:$port/sync")
done
node_flags=()
for u in "${urls[@]:1}"; do node_flags+=(--node-url "$u"); done
echo "== $scenario over $nodes nodes on PostgreSQL${quick:+ (quick)}" >&2
status=0
KEPU_LOADGEN_ADMIN_CODE="$code" "$loadgen_bin" --target kepu --url "${urls[0]}" "${node_flags[@]}" \
  --scenario "$scenario" --no-progress $quick "${json[@]}" "${extra[@]}" || status=$?
if [ "$status" != 0 ]; then
  for i in $(seq 1 "$nodes"); do
    echo "== node $i: warnings and errors (last 10 lines)" >&2
    tail -10 "$work/node$i.log" >&2
  done
fi
exit "$status"
