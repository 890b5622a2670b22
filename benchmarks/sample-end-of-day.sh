#!/usr/bin/env bash
# A sampling profile with call graphs of the end of day (full size unless --quick): where
# the server's CPU goes, stage by stage, in µs per check-in; with --devices, also where
# the load generator's simulated devices spend theirs. Uses Linux `perf` (Debian package
# linux-perf) and runs `benchmarks/end-of-day.sh` with the remaining arguments.
#
#   benchmarks/sample-end-of-day.sh [--devices] [--freq HZ] [end-of-day.sh arguments]
#
#   --devices  also sample the load generator (its tokio threads: the devices)
#   --freq HZ  samples per second and thread (default 99)
#   --keep DIR keep the samples as text (`perf script`) in DIR, for reading further
#
# The profile covers each process from the moment the load generator starts, so the
# server's share includes enrolling the devices and creating the bookings (a few percent
# at full size). Stacks are unwound from DWARF (no frame pointers needed) and cut at
# 32 KiB; what is cut short is reported as unattributed. With `--scenario live-day` the
# figures are per check-in sent in the live day's steps.
set -euo pipefail
cd "$(dirname "$0")/.."

devices=0
freq=99
keep=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=1 ;;
    --freq)
      [ $# -ge 2 ] || { echo "sample-end-of-day.sh: --freq needs a number" >&2; exit 2; }
      freq="$2"
      shift
      ;;
    --keep)
      [ $# -ge 2 ] || { echo "sample-end-of-day.sh: --keep needs a directory" >&2; exit 2; }
      keep="$2"
      shift
      ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done
case "$freq" in
  '' | *[!0-9]*) echo "sample-end-of-day.sh: --freq wants a whole number" >&2; exit 2 ;;
esac
command -v perf >/dev/null || {
  echo "sample-end-of-day.sh: needs Linux perf (apt-get install linux-perf)" >&2
  exit 2
}

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
benchmarks/end-of-day.sh "${args[@]}" >"$out/eod.txt" 2>&1 &
eod=$!

# The load generator is started with the server's pid on its command line.
loadgen=""
for _ in $(seq 1 600); do
  loadgen="$(pgrep -n -f -- "--server-pid" || true)"
  [ -n "$loadgen" ] && break
  kill -0 "$eod" 2>/dev/null || break
  sleep 0.5
done
[ -n "$loadgen" ] || {
  echo "sample-end-of-day.sh: the load generator did not start" >&2
  cat "$out/eod.txt" >&2
  exit 1
}
server="$(tr '\0' '\n' <"/proc/$loadgen/cmdline" | sed -n '/^--server-pid$/{n;p}')"
[ -n "$server" ] || { echo "sample-end-of-day.sh: no --server-pid on the load generator" >&2; exit 1; }

perf record -q -F "$freq" --call-graph dwarf,32768 -p "$server" -o "$out/server.data" 2>"$out/perf-server.log" &
perfs=($!)
if [ "$devices" = 1 ]; then
  perf record -q -F "$freq" --call-graph dwarf,32768 -p "$loadgen" -o "$out/devices.data" 2>"$out/perf-devices.log" &
  perfs+=($!)
fi
status=0
wait "$eod" || status=$?
for p in "${perfs[@]}"; do
  kill -INT "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
done
grep -v '^== building\|Compiling\|Finished' "$out/eod.txt" || true
[ "$status" = 0 ] || { echo "sample-end-of-day.sh: the end-of-day run failed ($status)" >&2; exit "$status"; }
check_ins="$(sed -n 's/.* check-ins \([0-9][0-9]*\) .*/\1/p' "$out/eod.txt" | head -1)"
if [ -z "$check_ins" ]; then
  # The live day's table: a row per rate, its second column the check-ins sent.
  check_ins="$(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { n += $2 } END { if (n) print n }' "$out/eod.txt")"
fi
[ -n "$check_ins" ] || { echo "sample-end-of-day.sh: no check-in count in the run's output" >&2; exit 1; }

echo
echo "== the server, by stage"
perf script -i "$out/server.data" 2>/dev/null >"$out/server.txt"
python3 benchmarks/perf-stages.py "$out/server.txt" --freq "$freq" --check-ins "$check_ins" --kind server
[ -z "$keep" ] || { mkdir -p "$keep" && cp "$out/server.txt" "$keep/"; }
if [ "$devices" = 1 ]; then
  echo
  echo "== the devices (the load generator's tokio threads), by stage"
  perf script -i "$out/devices.data" 2>/dev/null >"$out/devices.txt"
  python3 benchmarks/perf-stages.py "$out/devices.txt" --freq "$freq" --check-ins "$check_ins" \
    --kind devices --threads tokio-rt-worker
  [ -z "$keep" ] || cp "$out/devices.txt" "$keep/"
fi
