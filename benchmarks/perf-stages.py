#!/usr/bin/env python3
"""Per-stage CPU of a sampled process, from `perf script` output with call graphs.

    perf-stages.py SCRIPT_OUTPUT --freq HZ --check-ins N [--threads NAME,NAME] [--kind server|devices]

Each sample is one tick of 1/HZ seconds of CPU. A sample counts towards the first stage
(in the order below) one of whose markers appears anywhere in its call stack, so a stage
is inclusive of what it calls, and an item listed earlier takes its samples out of a
later one (the whole-document saves inside `generate_sync_message` are not counted again
under `generate_sync_message`). Prints each stage's share, its microseconds of CPU per
check-in, and how much of it was in the kernel and in libc (malloc, free, memcpy).
"""

import argparse
import collections
import re
import sys

# (stage, markers that must all appear in the stack, thread names it is limited to)
SERVER = [
    ("replies and fan-out: whole-document saves in generate_sync_message", ["generate_sync_message", "save_with_options"], None),
    ("replies and fan-out: generate_sync_message (the rest)", ["generate_sync_message"], None),
    ("validate (validate_patches)", ["validate_patches"], None),
    ("patches for validation (make_patches)", ["make_patches"], None),
    ("merge (receive_sync_message: apply the changes)", ["receive_sync_message"], None),
    ("compaction (the engine's snapshot saves)", ["engine::storage", "compact"], None),
    ("records: compute (records::project)", ["records::project"], None),
    ("records: write (Rust side)", ["write_booking_records"], None),
    ("persist: store the changes (Rust side)", ["run_document_tasks"], None),
    ("SQLite (sqlx's SQLite thread)", [], {"sqlx-sqlite-wor"}),
    ("sqlx on the tokio workers (queries, rows, hand-off)", ["sqlx"], None),
    ("admission and payload guard", ["engine::admit"], None),
    ("admission and payload guard", ["engine::guard"], None),
    ("websocket and frames (tungstenite, CBOR)", ["tungstenite"], None),
    ("websocket and frames (tungstenite, CBOR)", ["sync::ws"], None),
    ("websocket and frames (tungstenite, CBOR)", ["wire::"], None),
    ("engine (the rest of Engine::handle)", ["Engine::handle"], None),
    ("hub and storage worker (the rest)", ["sync::hub"], None),
    ("hub and storage worker (the rest)", ["sync::worker"], None),
    ("HTTP (the load generator's record checks)", ["kepu_server::http"], None),
]

DEVICES = [
    ("apply the server's changes (receive_sync_message)", ["receive_sync_message"], None),
    ("list the changes a message brought (get_changes)", ["get_changes"], None),
    ("answer the server (generate_sync_message)", ["generate_sync_message"], None),
    ("make offline check-ins (before the reconnect)", ["edit"], None),
    ("websocket and frames", ["tungstenite"], None),
    ("websocket and frames", ["wire::"], None),
]

HEADER = re.compile(r"^(\S.*?)\s+\d+(/\d+)?\s+[\d.]+:")
FRAME = re.compile(r"^[0-9a-f]+ (.*?)(\+0x[0-9a-f]+)? \((.*)\)$")


def samples(lines):
    """Yields (thread name, [(symbol, object)]) per sample, leaf first."""
    thread, stack = None, None
    for raw in lines:
        if raw[:1] not in ("", " ", "\t", "\n"):
            if stack is not None:
                yield thread, stack
            m = HEADER.match(raw)
            thread = m.group(1) if m else raw.split()[0]
            stack = []
            continue
        line = raw.strip()
        if not line or stack is None:
            continue
        m = FRAME.match(line)
        if m:
            stack.append((m.group(1), m.group(3)))
    if stack is not None:
        yield thread, stack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--freq", type=float, required=True)
    ap.add_argument("--check-ins", type=int, required=True)
    ap.add_argument("--threads", default="", help="comma-separated thread names to keep (default: all)")
    ap.add_argument("--kind", choices=["server", "devices"], default="server")
    a = ap.parse_args()
    keep = {t for t in a.threads.split(",") if t}
    stages = SERVER if a.kind == "server" else DEVICES
    total = 0
    by = collections.Counter()
    kernel = collections.Counter()
    libc = collections.Counter()
    with open(a.script, errors="replace") as f:
        for thread, stack in samples(f):
            if keep and thread not in keep:
                continue
            total += 1
            syms = [s for s, _ in stack]
            name = "unattributed (stack cut short, runtime, allocator)"
            for stage, markers, threads in stages:
                if threads is not None and thread not in threads:
                    continue
                if all(any(m in s for s in syms) for m in markers):
                    name = stage
                    break
            by[name] += 1
            leaf = stack[0][1] if stack else ""
            if "kernel" in leaf:
                kernel[name] += 1
            elif "libc" in leaf:
                libc[name] += 1
    if total == 0:
        sys.exit("perf-stages.py: no samples")
    cpu_s = total / a.freq
    print(f"{total} samples at {a.freq:g} Hz: {cpu_s:.1f} s of CPU, "
          f"{cpu_s * 1e6 / a.check_ins:.0f} µs per check-in over {a.check_ins} check-ins")
    print(f"| stage | share | µs per check-in | of it in the kernel | of it in libc |")
    print(f"|---|---|---|---|---|")
    for name, n in by.most_common():
        us = n / a.freq * 1e6 / a.check_ins
        print(f"| {name} | {100 * n / total:.1f} % | {us:.0f} | "
              f"{100 * kernel[name] / n:.0f} % | {100 * libc[name] / n:.0f} % |")


if __name__ == "__main__":
    main()
