//! Figures for `docs/performance.md`. Run: `cargo bench -p kepu-sync-core --bench map_size`.
//!
//! What one check-in costs automerge 0.12 to merge as the map it lands in grows. A
//! booking's scans live in one map (a key per pupil and device, each a map of scan
//! records); automerge merges a change into a map by walking the map's operations in
//! order up to and past the change's keys. This applies one gate's check-in changes, one
//! at a time as the live day sends them, into a document whose scan map already holds K
//! keys, in three layouts: the keys in one map (as the booking schema has them), and the
//! same keys spread over 16 or 256 maps by their first one or two characters (maps that
//! exist, or are made by the gate: a schema would have to create them with the booking,
//! since two offline gates creating the same map would hide one's scans). Each change is
//! merged as the server merges it: from its bytes, with the patches it validates. Prints
//! µs per change applied, best of three.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ObjType, PatchLog, ROOT};

const APPLIED: usize = 200;

fn key(n: usize) -> String {
    // Scan keys start with a pupil's UUID: spread evenly over their first characters.
    format!(
        "{:08x}-0000-7000-8000-{:012x}",
        (n as u64).wrapping_mul(0x9e37_79b9) as u32,
        n
    )
}

/// The map a key lands in: the scan map itself, or its bucket.
fn parent(
    doc: &mut AutoCommit,
    scans: &automerge::ObjId,
    k: &str,
    prefix: usize,
) -> automerge::ObjId {
    if prefix == 0 {
        return scans.clone();
    }
    let b = &k[..prefix];
    match automerge::ReadDoc::get(doc, scans, b).expect("read") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => doc.put_object(scans, b, ObjType::Map).expect("bucket"),
    }
}

fn scan(doc: &mut AutoCommit, scans: &automerge::ObjId, n: usize, prefix: usize) {
    let k = key(n);
    let p = parent(doc, scans, &k, prefix);
    let per_device = doc.put_object(&p, k.as_str(), ObjType::Map).expect("key");
    let rec = doc
        .put_object(&per_device, format!("scan-{n}").as_str(), ObjType::Map)
        .expect("record");
    doc.put(&rec, "at", 1_767_225_600_000_i64 + n as i64)
        .expect("at");
    doc.put(&rec, "method", "pass_scan").expect("method");
    doc.put(&rec, "by", "0190a2b3-0000-7000-8000-000000000001")
        .expect("by");
}

/// Seconds to apply `APPLIED` check-in changes, one by one, to a document with `existing`
/// scan keys, kept in maps by their first `prefix` characters (0: one map).
fn run(existing: usize, prefix: usize) -> f64 {
    let mut base = AutoCommit::new().with_actor(ActorId::from([1u8; 16].as_slice()));
    let scans = base
        .put_object(ROOT, "check_ins", ObjType::Map)
        .expect("scans");
    for n in 0..existing {
        scan(&mut base, &scans, n, prefix);
        if n % 50 == 49 {
            base.commit();
        }
    }
    base.commit();
    let mut gate = base.fork().with_actor(ActorId::from([2u8; 16].as_slice()));
    for n in existing..existing + APPLIED {
        scan(&mut gate, &scans, n, prefix);
        gate.commit();
    }
    let changes: Vec<Change> = gate.get_changes(&base.get_heads());
    let mut server = base.document().clone();
    let t = Instant::now();
    for c in changes {
        // As the server merges: from the change's bytes, with the patches it validates.
        let mut log = PatchLog::active();
        server
            .load_incremental_log_patches(c.raw_bytes(), &mut log)
            .expect("apply");
        std::hint::black_box(server.make_patches(&mut log));
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    println!("µs per check-in change applied one by one (automerge 0.12), best of 3");
    println!(
        "{:>12} {:>12} {:>12} {:>12}",
        "scan keys", "one map", "16 maps", "256 maps"
    );
    for existing in [500, 2_000, 8_000] {
        let best = |prefix| {
            (0..3)
                .map(|_| run(existing, prefix))
                .fold(f64::MAX, f64::min)
        };
        println!(
            "{existing:>12} {:>12.1} {:>12.1} {:>12.1}",
            best(0) * 1e6 / APPLIED as f64,
            best(1) * 1e6 / APPLIED as f64,
            best(2) * 1e6 / APPLIED as f64
        );
    }
}
