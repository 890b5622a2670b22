#!/usr/bin/env python3
"""Turns two callgrind profiles of kepu-server (a reduced end-of-day with fewer and with
more check-ins, from benchmarks/profile-end-of-day.sh) into instructions per check-in for
each stage of the server's work: the difference between the runs divided by the number of
check-ins it adds, so that start-up, enrollment and the bookings drop out.

    callgrind-stages.py SMALL.out LARGE.out --check-ins N [--json F]

A stage is either the inclusive cost of its entry functions ("incl": the function and
everything it calls, wherever it is called from) or the functions' own cost ("self"),
selected by name or by source file. Rows indented under another are part of it; the
top-level rows overlap only where their labels say so.
"""
import argparse
import json
import re
import sys

# (label, how, pattern, indent). how: "incl" or "self" by function name, "file" = self
# cost of every function defined in a matching source file, "edge" = the inclusive cost of
# the calls from callers matching the first pattern to callees matching the second.
STAGES = [
    ("socket: websocket frames read + written (tungstenite)", "incl",
     r"^tungstenite::protocol::WebSocketContext::(read|_write|flush)$", 0),
    ("decode: CBOR frame (wire::decode)", "incl", r"^kepu_sync_core::wire::decode::decode$", 0),
    ("engine: Engine::handle, whole", "incl", r"^kepu_sync_core::engine::Engine::handle$", 0),
    ("admission: payload guard, actor ids, whole documents split", "incl",
     r"^kepu_sync_core::engine::documents::<impl kepu_sync_core::engine::Engine>"
     r"::admit_doc_message$", 1),
    ("whole documents from devices loaded and split", "edge",
     (r"::admit_doc_message$",
      r"^automerge::automerge::Automerge::(load|get_changes)$"), 2),
    ("merge: receive_sync_message (apply changes)", "incl",
     r"^(<automerge::automerge::Automerge as automerge::sync::SyncDoc>"
     r"::receive_sync_message_log_patches|kepu_sync_core::receive::receive_sync_message(_with)?)$", 1),
    ("patches for validation (make_patches)", "incl",
     r"^automerge::automerge::Automerge::make_patches$", 1),
    ("validate (validate_patches_with)", "incl",
     r"^kepu_sync_core::validate::validate_patches_with$", 1),
    ("persist: the engine's appends (history walked if not read)", "incl", r"^kepu_sync_core::engine::storage::<impl kepu_sync_core::engine::Engine>::persist$",
     1),
    ("replies + fan-out: generate_sync_message (ADR 0196's, around automerge's)", "incl",
     r"^kepu_sync_core::generate::generate_sync_message$", 1),
    ("whole-document saves inside generate_sync_message", "edge",
     (r"(::generate_sync_message|::generate::Replies::of)$",
      r"^automerge::automerge::Automerge::save(_with_options)?$"), 2),
    ("changes since a peer's last sync (get_changes_meta)", "edge",
     (r"(::generate_sync_message|::generate::Replies::(since|bloom|of)|::generate::hashes_to_send)$",
      r"^automerge::automerge::Automerge::get_changes_meta$"), 2),
    ("changes built by automerge for an answer", "edge",
     (r"^<automerge::automerge::Automerge as automerge::sync::SyncDoc>::generate_sync_message$",
      r"ChangeCollector::from_build_meta$"), 2),
    ("encode: CBOR frame (wire::Message::encode)", "incl",
     r"^kepu_sync_core::wire::Message::encode$", 1),
    ("compaction: snapshot saves by the engine (Automerge::save*)", "edge",
     (r"^kepu_sync_core::engine::storage::<impl kepu_sync_core::engine::Engine>::compact",
      r"^automerge::automerge::Automerge::save(_nocompress|_with_options)?$"), 1),
    ("projections: compute (records::project, in the hub)", "incl",
     r"^kepu_server::(projection::project|records::project::project"
     r"|records::project::Projector::project)$", 0),
    ("projections: write (Rust side of the store's record writes)", "incl",
     r"^kepu_server::store::(projections|records)::<impl kepu_server::store::Store>"
     r"::write_(projection|[a-z_]+_records)::\{\{closure\}\}$", 0),
    ("persist: storage tasks (Rust side of run_document_tasks)", "incl",
     r"^kepu_server::store::documents::<impl kepu_server::store::Store>"
     r"::run_document_tasks::\{\{closure\}\}$", 0),
    ("SQL: SQLite itself (self, every statement)", "file", r"/sqlite3\.c$", 0),
    ("SQL: sqlx (self)", "file", r"/sqlx-[a-z]+-[0-9.]+/", 0),
    ("allocation: malloc, free, realloc (self)", "self",
     r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate"
     r"|unlink_chunk.*|sysmalloc.*|__rustc::.*)$", 0),
    ("memset, memcpy, memmove (self)", "self", r"^__(memset|memcpy|memmove|mempcpy)", 0),
    ("tokio: runtime, channels, timers (self)", "file", r"/tokio-1\.[0-9.]+/", 0),
    ("SHA-256 (self; in software: valgrind hides the SHA instructions)", "self", r"^sha2::sha256::", 0),
]


def ident(rest, table):
    """`(id) name` defines a compressed name, `(id)` reuses it; a plain name is itself."""
    m = re.match(r"\((\d+)\)(?: (.*))?$", rest.strip())
    if not m:
        return rest.strip()
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), m.group(1))


def parse(path):
    """Self cost and inclusive cost per function (recursion levels `'N` folded), the
    source file each function is defined in, and the program's total."""
    fns, files = {}, {}
    self_cost, call_cost, fn_file, edges = {}, {}, {}, {}
    fn = fl = cfn = None
    in_call = False
    total = None
    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if in_call:
                    if cfn != fn:
                        call_cost[fn] = call_cost.get(fn, 0) + cost
                        edges[(fn, cfn)] = edges.get((fn, cfn), 0) + cost
                    in_call = False
                else:
                    self_cost[fn] = self_cost.get(fn, 0) + cost
            elif line.startswith("fl="):
                fl = ident(line[3:], files)
            elif line.startswith(("fi=", "fe=")):
                ident(line[3:], files)
            elif line.startswith("fn="):
                fn = re.sub(r"'\d+$", "", ident(line[3:], fns))
                fn_file.setdefault(fn, fl)
            elif line.startswith("cfn="):
                cfn = re.sub(r"'\d+$", "", ident(line[4:], fns))
            elif line.startswith(("cfi=", "cfl=")):
                ident(line[4:], files)
            elif line.startswith("calls="):
                in_call = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    incl = {k: self_cost.get(k, 0) + call_cost.get(k, 0) for k in set(self_cost) | set(call_cost)}
    return total, self_cost, incl, fn_file, edges


def stage_costs(path):
    total, self_cost, incl, fn_file, edges = parse(path)
    rows = []
    for _, how, pattern, _ in STAGES:
        if how == "edge":
            caller, callee = (re.compile(p) for p in pattern)
            rows.append(sum(v for (a, b), v in edges.items()
                            if caller.search(a or "") and callee.search(b or "")))
            continue
        r = re.compile(pattern)
        if how == "incl":
            rows.append(sum(v for k, v in incl.items() if r.search(k)))
        elif how == "self":
            rows.append(sum(v for k, v in self_cost.items() if r.search(k)))
        else:
            rows.append(sum(v for k, v in self_cost.items() if r.search(fn_file.get(k) or "")))
    return total, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("small")
    ap.add_argument("large")
    ap.add_argument("--check-ins", type=int, required=True,
                    help="check-ins the large run has beyond the small one")
    ap.add_argument("--json")
    a = ap.parse_args()
    t0, r0 = stage_costs(a.small)
    t1, r1 = stage_costs(a.large)
    n = a.check_ins
    per = (t1 - t0) / n
    print(f"instructions per check-in: (large run - small run) / {n:,} check-ins")
    print(f"{'stage':<64} {'per check-in':>13} {'share':>7}")
    print(f"{'whole server process (user space)':<64} {per:>13,.0f} {100:>6.1f}%")
    out = {"check_ins": n, "whole_process": per, "stages": {}}
    for (label, _, _, indent), a0, a1 in zip(STAGES, r0, r1):
        v = (a1 - a0) / n
        out["stages"][label] = round(v)
        name = "  " * indent + label
        print(f"{name:<64} {v:>13,.0f} {100 * v / per:>6.1f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
