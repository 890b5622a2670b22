#!/usr/bin/env bash
# The end-of-day scenario alone against kepu-server (release build, fresh data):
# 200 devices reconnect at once with 50,000 check-ins made offline (--quick: 20 devices,
# 1,000 check-ins). Prints the loadgen's table; exits non-zero when a device is left out of
# sync, fails, or the records do not hold every check-in once. `reconnects` must be 0.
#
#   benchmarks/end-of-day.sh [--quick] [--pg URL] [--busy N] [--json F] [--scenario S]
#                            [--shards N] [--server-cpus LIST] [-- extra kepu-loadgen flags]
#
#   --quick    small sizes
#   --pg URL   run kepu-server on PostgreSQL: URL of an EMPTY database it may migrate
#              (default: SQLite in a fresh temporary data directory)
#   --busy N   keep N extra processes spinning (`yes > /dev/null`) during the run, to
#              reproduce a loaded machine
#   --json F   also write the figures to F
#   --scenario S  another loadgen scenario against the same fresh server, e.g.
#              `reconnect-storm -- --storm-devices 10000` (P3, with the server's KiB per
#              idle connection)
#   --shards N the server's engine shards (default: one per core)
#   --server-cpus LIST  pin the server to these cores (`taskset -c LIST`, e.g. 0 or 0,1);
#              the load generator is not pinned
#   KEPU_BENCH_SERVER_BIN=path  run that server binary instead of this tree's release build
#   KEPU_BENCH_LOADGEN_BIN=path run that load generator instead of this tree's release build
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
pg_url=""
busy=0
json=()
extra=()
scenario=end-of-day
shards=""
server_cpus=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --pg)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --pg needs a database URL" >&2; exit 2; }
      pg_url="$2"
      shift
      ;;
    --busy)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --busy needs a number" >&2; exit 2; }
      busy="$2"
      shift
      ;;
    --json)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --json needs a file" >&2; exit 2; }
      json=(--json "$2")
      shift
      ;;
    --scenario)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --scenario needs a name" >&2; exit 2; }
      scenario="$2"
      shift
      ;;
    --shards)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --shards needs a number" >&2; exit 2; }
      shards="$2"
      shift
      ;;
    --server-cpus)
      [ $# -ge 2 ] || { echo "end-of-day.sh: --server-cpus needs a core list" >&2; exit 2; }
      server_cpus="$2"
      shift
      ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "end-of-day.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$pg_url" in
  "" | postgres://* | postgresql://*) ;;
  *) echo "end-of-day.sh: --pg wants a postgres:// URL" >&2; exit 2 ;;
esac
case "$busy" in
  '' | *[!0-9]*) echo "end-of-day.sh: --busy wants a number" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
# Both binaries given (an A/B of two builds): the tree is not built.
if [ -z "${KEPU_BENCH_SERVER_BIN:-}" ] || [ -z "${KEPU_BENCH_LOADGEN_BIN:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release --locked -p kepu-server -p kepu-loadgen >&2
fi
# KEPU_BENCH_SERVER_BIN runs another build of the server (an A/B of two commits).
server_bin="${KEPU_BENCH_SERVER_BIN:-$target_dir/release/kepu-server}"
loadgen_bin="${KEPU_BENCH_LOADGEN_BIN:-$target_dir/release/kepu-loadgen}"

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh
bench_workdir


db_name=SQLite
[ -n "$pg_url" ] && db_name=PostgreSQL
db_args=(--data-dir "$work/data")
[ -n "$pg_url" ] && db_args+=(--database-url "$pg_url")
code="$("$server_bin" admin create-user --role bureau-admin "${db_args[@]}" 2>/dev/null |
  sed -n 's/^enrollment code //p')"
[ -n "$code" ] || { echo "end-of-day.sh: could not create the admin user" >&2; exit 1; }
port="$(free_port)"
pin=()
[ -n "$server_cpus" ] && pin=(taskset -c "$server_cpus")
[ -n "$shards" ] && export KEPU_ENGINE_SHARDS="$shards"
RUST_LOG=warn "${pin[@]}" "$server_bin" "${db_args[@]}" --bind "127.0.0.1:$port" >"$work/kepu.log" 2>&1 &
kepu_pid=$!
pids+=("$kepu_pid")
wait_port "$port"
for _ in $(seq 1 "$busy"); do
  yes >/dev/null &
  pids+=("$!")
done
echo "== $scenario on $db_name${quick:+ (quick)}, $busy busy processes, shards ${shards:-default}, server cores ${server_cpus:-all}" >&2
status=0
KEPU_LOADGEN_ADMIN_CODE="$code" "$loadgen_bin" --target kepu --url "ws://127.0.0.1:$port/sync" \
  --scenario "$scenario" --server-pid "$kepu_pid" --no-progress $quick "${json[@]}" "${extra[@]}" ||
  status=$?
# The server's own count of peers it closed for not keeping up with their queue, and of
# the records it computed (a booking read per burst).
python3 - "$port" <<'PY' || true
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(("kepu_slow_peers_closed_total", "kepu_ws_connections", "kepu_projections_total", "kepu_booking_reads_total", "kepu_records_rows_written_total", "kepu_sync_messages_total", "kepu_batch_size_count", "kepu_merged_together_count", "kepu_merged_together_sum", "kepu_merge_seconds_count", "kepu_merge_seconds_sum", "kepu_batch_size_sum", "kepu_persist_seconds_count", "kepu_persist_seconds_sum", "kepu_records_lag_seconds_sum", "kepu_records_lag_seconds_count", "kepu_records_write_seconds_sum", "kepu_records_write_seconds_count", "kepu_live_snapshot_seconds_sum", "kepu_live_snapshot_seconds_count", "kepu_live_booking_rows_total", "kepu_engine_work_total")):
        print("server metric:", line)
PY
if [ "$status" != 0 ] && [ -s "$work/kepu.log" ]; then
  echo "== the server's warnings and errors (last 20 lines)" >&2
  tail -20 "$work/kepu.log" >&2
fi
exit "$status"
