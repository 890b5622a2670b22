//! Figures for `docs/performance.md`. Run: `cargo bench -p kepu-sync-core --bench engine`.
//!
//! Prints: check-ins merged per second through plain `apply_changes`, through the
//! engine's validate + merge path and end to end through the simulator (wire codec, sync
//! protocol, in-memory store); stored bytes per check-in before and after compaction; heap
//! bytes per loaded 60-pupil booking document.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use automerge::{Automerge, Change, ReadDoc};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::engine::StorageTask;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::ScanMethod;
use kepu_sync_core::sim::Sim;
use kepu_sync_core::validate::validate_patches;
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PUPILS: u128 = 60;

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn teacher() -> Writer {
    Writer {
        device: DeviceId(uid(1)),
        user: UserId(uid(2)),
        role: Role::Teacher,
        school: Some(SchoolId(uid(3))),
        venue: None,
        pupil: None,
    }
}

fn gate(n: u128) -> Writer {
    Writer {
        device: DeviceId(uid(100 + n)),
        user: UserId(uid(200 + n)),
        role: Role::VenueStaff,
        school: None,
        venue: Some(VenueId(uid(4))),
        pupil: None,
    }
}

fn pupils() -> Vec<PupilId> {
    (0..PUPILS).map(|i| PupilId(uid(1000 + i))).collect()
}

fn base_booking() -> Automerge {
    let mut doc = Automerge::new();
    let edit = Edit::CreateBooking {
        venue: VenueId(uid(4)),
        slot: SlotId(uid(5)),
        school: SchoolId(uid(3)),
        party_size: 60,
        roster: pupils(),
    };
    apply_unchecked(&mut doc, &teacher(), 1_767_225_600_000, &edit).expect("create");
    doc
}

/// `n` check-ins by gates, one change each, on top of `base`.
fn scan_changes(base: &Automerge, n: usize) -> Vec<Change> {
    let pupils = pupils();
    let mut gates: Vec<Automerge> = (0..4u8)
        .map(|g| {
            base.fork()
                .with_actor(automerge::ActorId::from(vec![g + 1; 16]))
        })
        .collect();
    for i in 0..n {
        let g = i % gates.len();
        let scan_id =
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128).to_string();
        let edit = Edit::CheckIn {
            pupil: pupils[i % pupils.len()],
            scan_id,
            method: ScanMethod::PassScan,
            proof: None,
        };
        apply_unchecked(
            &mut gates[g],
            &gate(g as u128),
            1_767_229_200_000 + i as i64 * 1000,
            &edit,
        )
        .expect("scan");
    }
    let heads = base.get_heads();
    let mut out = Vec::new();
    for g in &gates {
        out.extend(g.get_changes(&heads));
    }
    out
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    let n = 4_000usize;
    let batch = 50usize;
    let base = base_booking();
    let changes = scan_changes(&base, n);
    let batches: Vec<Vec<Change>> = changes.chunks(batch).map(<[Change]>::to_vec).collect();
    // Batches arrive per gate (a gate syncs its own scans); writer per batch.
    let writer_of = |b: &[Change]| {
        let a = b[0].actor_id().to_bytes()[0];
        gate(u128::from(a - 1))
    };
    let rounds = 5;
    let mut plain_best = f64::MAX;
    let mut engine_best = f64::MAX;
    for _ in 0..rounds {
        let mut doc = base.clone();
        let t = Instant::now();
        for b in &batches {
            doc.apply_changes(b.clone()).expect("apply");
        }
        plain_best = plain_best.min(t.elapsed().as_secs_f64());

        let mut doc = base.clone();
        let t = Instant::now();
        for b in &batches {
            let before = doc.get_heads();
            assert!(doc.get_missing_deps(&[]).is_empty());
            let fresh = b
                .iter()
                .filter(|c| !doc.get_missing_deps(&[c.hash()]).is_empty())
                .count();
            assert_eq!(fresh, b.len());
            let mut log = automerge::PatchLog::active();
            doc.apply_changes_log_patches(b.clone(), &mut log)
                .expect("apply");
            let patches = doc.make_patches(&mut log);
            validate_patches(&doc, &before, &patches, &writer_of(b)).expect("valid");
            // As the engine does: rows come from the message's own chunks.
            let rows: Vec<Change> = b
                .iter()
                .filter_map(|c| Change::try_from(c.raw_bytes()).ok())
                .collect();
            assert_eq!(rows.len(), b.len());
            assert!(!before.is_empty());
        }
        engine_best = engine_best.min(t.elapsed().as_secs_f64());
    }
    let raw: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
    let plain = rate(n, plain_best);
    let engine = rate(n, engine_best);
    println!("check-ins: {n} in batches of {batch}, 60-pupil booking, best of {rounds}");
    println!("  plain apply_changes         {plain:>10.0} check-ins/s");
    println!(
        "  engine validate + merge     {engine:>10.0} check-ins/s  ({:.0} % of plain)",
        100.0 * engine / plain
    );

    // End to end through the simulator: wire codec, sync protocol, storage tasks.
    let server = Writer::server(DeviceId(uid(9)));
    let mut sim = Sim::new(1, server);
    let t0 = sim.add_device(teacher());
    let gates: Vec<usize> = (0..4).map(|g| sim.add_device(gate(g))).collect();
    let doc = sim.new_doc_id();
    sim.edit(
        t0,
        doc,
        Edit::CreateBooking {
            venue: VenueId(uid(4)),
            slot: SlotId(uid(5)),
            school: SchoolId(uid(3)),
            party_size: 60,
            roster: pupils(),
        },
    );
    sim.settle();
    for g in &gates {
        sim.want(*g, doc);
    }
    sim.settle();
    sim.disconnect_all();
    let e2e = 2_000usize;
    let pupils = pupils();
    for i in 0..e2e {
        let g = gates[i % gates.len()];
        let scan_id = sim.new_entry_id();
        sim.edit(
            g,
            doc,
            Edit::CheckIn {
                pupil: pupils[i % pupils.len()],
                scan_id,
                method: ScanMethod::PassScan,
                proof: None,
            },
        );
    }
    let t = Instant::now();
    sim.settle();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  end to end (sim, 4 gates)   {:>10.0} check-ins/s  ({e2e} offline scans synced)",
        rate(e2e, secs)
    );

    // Stored bytes per check-in, before and after compaction.
    let before = sim.server.store.stored_bytes(&doc);
    let fx = sim.server.engine.compact_now(sim.now, doc);
    for (_, task) in &fx.tasks {
        if let StorageTask::Compact { .. } = task {
            let _ = sim.server_store_run(task);
        }
    }
    let after = sim.server.store.stored_bytes(&doc);
    let _ = before;
    println!(
        "stored bytes: {:.1} per check-in as raw change rows, {:.1} after compaction",
        raw as f64 / n as f64,
        after as f64 / e2e as f64
    );

    // Heap per loaded booking with 60 pupils checked in (and 20 duplicate scans).
    let mut one = base_booking();
    for c in scan_changes(&one, 80) {
        one.apply_changes([c]).expect("apply");
    }
    let saved = one.save();
    let k = 200;
    let start = LIVE.load(Ordering::Relaxed);
    let docs: Vec<Automerge> = (0..k)
        .map(|_| Automerge::load(&saved).expect("load"))
        .collect();
    let per = (LIVE.load(Ordering::Relaxed) - start) as f64 / f64::from(k);
    println!(
        "memory: {:.1} KiB heap per loaded 60-pupil booking (80 scans, {} B saved)",
        per / 1024.0,
        saved.len()
    );
    drop(docs);
    let _ = DocumentId::from_bytes([0; 16]);
}
