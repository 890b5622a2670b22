#!/usr/bin/env bash
# Runs the kepu-loadgen scenarios against kepu-server, a plain automerge-repo 2.5.6
# (JavaScript) sync server and a plain samod 0.16 (Rust) sync server on this machine, one
# after the other, and writes
#   benchmarks/results/<date>.json   the three sets of figures and the kepu / peer ratios
#   docs/perf-peers.svg              the comparison plot
# and prints the table.
#
#   benchmarks/compare.sh [--quick] [--pg URL] [--no-samod] [-- extra kepu-loadgen flags]
#
#   --quick     small sizes, the whole comparison in a few minutes
#   --pg URL    run kepu-server on PostgreSQL: URL of an EMPTY database it may migrate
#               (default: SQLite in a fresh temporary data directory)
#   --out F     results file (default benchmarks/results/<UTC date>[-quick][-pg].json)
#   --no-plot   do not rewrite docs/perf-peers.svg
#   --no-samod  leave out the samod peer (and its release build)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
pg_url=""
out=""
plot=1
samod=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --pg)
      [ $# -ge 2 ] || { echo "compare.sh: --pg needs a database URL" >&2; exit 2; }
      pg_url="$2"
      shift
      ;;
    --out)
      [ $# -ge 2 ] || { echo "compare.sh: --out needs a file" >&2; exit 2; }
      out="$2"
      shift
      ;;
    --no-plot) plot=0 ;;
    --no-samod) samod=0 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
db_kind=sqlite
case "$pg_url" in
  "") ;;
  postgres://* | postgresql://*) db_kind=postgres ;;
  *) echo "compare.sh: --pg wants a postgres:// URL" >&2; exit 2 ;;
esac
command -v node >/dev/null || { echo "compare.sh: node (20 or later) is required for the JS peer" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
echo "== building release binaries" >&2
cargo build --release --locked -p kepu-server -p kepu-loadgen >&2
server_bin="$target_dir/release/kepu-server"
loadgen_bin="$target_dir/release/kepu-loadgen"
samod_bin="$target_dir/release/kepu-bench-samod-peer"
if [ "$samod" = 1 ]; then
  # Its own Cargo project (not a workspace member), built into the same target directory.
  echo "== building the samod peer" >&2
  cargo build --release --locked --manifest-path benchmarks/peers/samod/Cargo.toml >&2
fi
echo "== installing the JS peer (npm ci)" >&2
(cd benchmarks/peers && npm ci --no-audit --no-fund --silent >&2)

# shellcheck source=benchmarks/lib.sh
source benchmarks/lib.sh
bench_workdir

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# ---- kepu-server ----
data="$work/kepu-data"
db_args=(--data-dir "$data")
[ -n "$pg_url" ] && db_args+=(--database-url "$pg_url")
code="$("$server_bin" admin create-user --role bureau-admin "${db_args[@]}" 2>/dev/null |
  sed -n 's/^enrollment code //p')"
[ -n "$code" ] || { echo "compare.sh: could not create the admin user" >&2; exit 1; }
port="$(free_port)"
RUST_LOG=warn "$server_bin" "${db_args[@]}" --bind "127.0.0.1:$port" >"$work/kepu.log" 2>&1 &
kepu_pid=$!
pids+=("$kepu_pid")
wait_port "$port"
echo "== kepu-server (pid $kepu_pid, $db_kind)" >&2
# A kepu run that misses a goal (a reconnect, a device out of sync) exits non-zero but
# still writes its figures; the comparison goes on and the status is returned at the end.
kepu_status=0
KEPU_LOADGEN_ADMIN_CODE="$code" "$loadgen_bin" --target kepu --url "ws://127.0.0.1:$port/sync" \
  --server-pid "$kepu_pid" --json "$work/kepu.json" $quick "${extra[@]}" || kepu_status=$?
kill "$kepu_pid"
wait "$kepu_pid" 2>/dev/null || true

# ---- automerge-repo (JavaScript) ----
port="$(free_port)"
node benchmarks/peers/server.mjs "$port" "$work/js-data" >"$work/js.log" 2>&1 &
js_pid=$!
pids+=("$js_pid")
wait_port "$port"
echo "== automerge-repo 2.5.6 (pid $js_pid, node $(node --version))" >&2
"$loadgen_bin" --target js --url "ws://127.0.0.1:$port" \
  --server-pid "$js_pid" --json "$work/js.json" $quick "${extra[@]}" || true
kill "$js_pid"
wait "$js_pid" 2>/dev/null || true

# ---- samod (Rust) ----
if [ "$samod" = 1 ]; then
  port="$(free_port)"
  "$samod_bin" "$port" "$work/samod-data" >"$work/samod.log" 2>&1 &
  samod_pid=$!
  pids+=("$samod_pid")
  wait_port "$port"
  echo "== samod 0.16 (pid $samod_pid)" >&2
  # The same plain automerge-repo protocol as the JS peer: the loadgen's js target.
  "$loadgen_bin" --target js --url "ws://127.0.0.1:$port" \
    --server-pid "$samod_pid" --json "$work/samod.json" $quick "${extra[@]}" || true
  kill "$samod_pid"
  wait "$samod_pid" 2>/dev/null || true
fi

# ---- results ----
mkdir -p benchmarks/results
suffix="${quick:+-quick}${pg_url:+-pg}"
out="${out:-benchmarks/results/$(date -u +%F)$suffix.json}"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
svg="docs/perf-peers.svg"
figures=(kepu="$work/kepu.json" js="$work/js.json")
[ "$samod" = 1 ] && figures+=(samod="$work/samod.json")
[ "$plot" = 1 ] || svg="$work/plot.svg"
echo
BENCH_MACHINE="$(nproc) cores ($cpu), $mem RAM, $(uname -s) $(uname -r | cut -d- -f1), node $(node --version)" \
BENCH_COMMAND="benchmarks/compare.sh ${quick}${pg_url:+ --pg <url>}${extra[*]:+ -- ${extra[*]}}" \
BENCH_DB="$db_kind" \
  node benchmarks/report.mjs "$out" "$svg" "${figures[@]}"
echo
if [ "$plot" = 1 ]; then echo "results: $out, plot: $svg" >&2; else echo "results: $out" >&2; fi
exit "$kepu_status"
