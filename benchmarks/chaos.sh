#!/usr/bin/env bash
# Crash and kill: an end-of-day while kepu-server is killed with SIGKILL at random moments
# and restarted on the same database, by `kepu-loadgen --scenario chaos`. Prints the kills
# survived, acknowledged check-ins lost, check-ins stored twice, devices out of sync at the
# end and reconnects the kills did not cause (goal 0 each), and writes the figures to
#   benchmarks/results/<date>-chaos[-quick][-pg].json
#
#   benchmarks/chaos.sh [--quick] [--pg URL] [--out F] [-- extra kepu-loadgen flags]
#
#   --quick    small sizes (20 devices, 5 kills), about half a minute
#   --pg URL   run kepu-server on PostgreSQL: URL of an EMPTY database it may migrate
#              (default: SQLite in a fresh temporary data directory)
#   --out F    results file
# Extra flags, e.g. `-- --kills 40 --up-ms 200,2000 --down-ms 500 --chaos-rate 50`; see
# `kepu-loadgen --help`. Exits non-zero when a goal is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
pg_url=""
out=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --pg)
      [ $# -ge 2 ] || { echo "chaos.sh: --pg needs a database URL" >&2; exit 2; }
      pg_url="$2"
      shift
      ;;
    --out)
      [ $# -ge 2 ] || { echo "chaos.sh: --out needs a file" >&2; exit 2; }
      out="$2"
      shift
      ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$pg_url" in
  "" | postgres://* | postgresql://*) ;;
  *) echo "chaos.sh: --pg wants a postgres:// URL" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
echo "== building release binaries" >&2
cargo build --release --locked -p kepu-server -p kepu-loadgen >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

db_name=SQLite
[ -n "$pg_url" ] && db_name=PostgreSQL
db_args=()
[ -n "$pg_url" ] && db_args+=(--database-url "$pg_url")
mkdir -p benchmarks/results
suffix="-chaos${quick:+-quick}${pg_url:+-pg}"
out="${out:-benchmarks/results/$(date -u +%F)$suffix.json}"
echo "== chaos on $db_name" >&2
status=0
"$target_dir/release/kepu-loadgen" --scenario chaos --server-bin "$target_dir/release/kepu-server" \
  --data-dir "$work/data" "${db_args[@]}" --server-log "$work/server.log" \
  --json "$out" $quick "${extra[@]}" || status=$?
if [ "$status" != 0 ] && [ -s "$work/server.log" ]; then
  echo "== the server's warnings and errors (last 20 lines)" >&2
  tail -20 "$work/server.log" >&2
fi
[ -f "$out" ] && echo "results: $out" >&2
exit "$status"
