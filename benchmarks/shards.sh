#!/usr/bin/env bash
# Engine shards against cores (issue 11, ADR 0135): the end-of-day scenario (full size, or
# --quick) against a fresh kepu-server for each pair of engine shards and server cores,
# the server pinned with `taskset` and the load generator not. Prints one table.
#
#   benchmarks/shards.sh [--quick] [--pg URL] [--pairs "SHARDS:CPUS ..."]
#
#   --pg URL     PostgreSQL instead of SQLite: URL of a server holding databases the script
#                may drop and create (it uses kepu_shards_bench)
#   --pairs      default "1:0 2:0 1:0,1 2:0,1" (shards 1 and 2, on core 0 and on cores 0,1)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
pg=""
pairs="1:0 2:0 1:0,1 2:0,1"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --pg) pg="$2"; shift ;;
    --pairs) pairs="$2"; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "shards.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

out="$(mktemp -d -t kepu-shards-XXXXXX)"
trap 'rm -rf "$out"' EXIT
for pair in $pairs; do
  shards="${pair%%:*}"
  cpus="${pair#*:}"
  db=()
  if [ -n "$pg" ]; then
    psql "$pg" -qc "DROP DATABASE IF EXISTS kepu_shards_bench" -c "CREATE DATABASE kepu_shards_bench" >/dev/null
    db=(--pg "${pg%/*}/kepu_shards_bench")
  fi
  benchmarks/end-of-day.sh "${quick[@]}" "${db[@]}" --shards "$shards" --server-cpus "$cpus" \
    --json "$out/$shards-$cpus.json" >&2
done
python3 - "$out" $pairs <<'PY'
import json, sys
out, pairs = sys.argv[1], sys.argv[2:]
print("| engine shards | server cores | converged, s | check-ins/s | server CPU, s | µs per check-in | server peak RSS, MiB |")
print("|---|---|---|---|---|---|---|")
for pair in pairs:
    shards, cpus = pair.split(":")
    r = json.load(open(f"{out}/{shards}-{cpus}.json"))
    e = r["scenarios"]["end-of-day"]
    mem = r.get("server_memory") or {}
    f = lambda v, d=1: "—" if v is None else f"{v:,.{d}f}"
    print(f"| {shards} | {cpus} | {f(e['converge_s'], 2)} | {f(e['check_ins_per_s'], 0)} | "
          f"{f(e.get('server_cpu_s'), 2)} | {f(e.get('server_cpu_us_per_check_in'), 0)} | "
          f"{f((mem.get('hwm_kb') or 0) / 1024, 0)} |")
PY
