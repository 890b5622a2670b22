//! Figures for `docs/performance.md`. Run: `cargo bench -p kepu-sync-core --bench batches`.
//!
//! What the size of the batches costs automerge when a booking's check-ins are merged: a
//! 300-pupil booking, ten gates with 250 check-ins each made offline (2,500 changes), merged
//! into the booking the way the server receives them (each batch from one gate, the gates
//! taking turns), in batches of 1 to 2,500 changes, with the patch log on (as the server
//! merges, for validation) and off. Prints µs per check-in, best of three.
//!
//! Then what reading the booking back costs the server's projection at 250 to 2,500 scans
//! (ADR 0181): a whole `Booking::read`, automerge's diff of one new check-in, and a
//! `BookingReader` that read the booking before, after one and after ten new check-ins.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::time::Instant;

use automerge::{Automerge, Change};
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::schema::booking_reader::{BookingReader, ReadKind};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const PUPILS: u128 = 300;
const GATES: usize = 10;
const PER_GATE: usize = 250;
const T0: i64 = 1_767_225_600_000;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(id(10_000 + n)),
        user: UserId(id(20_000 + n)),
        role,
        school: (role == Role::Teacher).then_some(SchoolId(id(3))),
        venue: (role == Role::VenueStaff).then_some(VenueId(id(4))),
        pupil: None,
    }
}

/// The booking, and each gate's check-ins as its own changes on top of it.
fn day() -> (Automerge, Vec<Vec<Change>>) {
    let roster: Vec<PupilId> = (0..PUPILS).map(|i| PupilId(id(1_000 + i))).collect();
    let mut booking = Automerge::new();
    let create = Edit::CreateBooking {
        venue: VenueId(id(4)),
        slot: SlotId(id(5)),
        school: SchoolId(id(3)),
        party_size: PUPILS as u32,
        roster: roster.clone(),
    };
    apply_unchecked(&mut booking, &writer(0, Role::Teacher), T0, &create).expect("create");
    let heads = booking.get_heads();
    let gates = (0..GATES)
        .map(|g| {
            let mut doc = booking
                .fork()
                .with_actor(automerge::ActorId::from(vec![g as u8 + 1; 16]));
            let w = writer(1 + g as u128, Role::VenueStaff);
            for k in 0..PER_GATE {
                let edit = Edit::CheckIn {
                    pupil: roster[(g * PER_GATE + k) % roster.len()],
                    scan_id: id(
                        0x0190_0000_0000_7000_8000_0000_0000_0000 + (g * PER_GATE + k) as u128
                    )
                    .to_string(),
                    method: ScanMethod::Manual,
                    proof: None,
                };
                apply_unchecked(&mut doc, &w, T0 + 3_600_000 + k as i64 * 1_000, &edit)
                    .expect("check-in");
            }
            doc.get_changes(&heads)
        })
        .collect();
    (booking, gates)
}

/// The batches of `size` changes, each from one gate, the gates taking turns.
fn batches(gates: &[Vec<Change>], size: usize) -> Vec<Vec<Change>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < PER_GATE {
        for g in gates {
            out.push(g[at..(at + size).min(PER_GATE)].to_vec());
        }
        at += size;
    }
    out
}

fn merge(booking: &Automerge, batches: &[Vec<Change>], log_patches: bool) -> f64 {
    let mut doc = booking.clone();
    let t = Instant::now();
    for b in batches {
        if log_patches {
            let mut log = automerge::PatchLog::active();
            doc.apply_changes_log_patches(b.clone(), &mut log)
                .expect("apply");
            std::hint::black_box(doc.make_patches(&mut log));
        } else {
            doc.apply_changes(b.clone()).expect("apply");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        doc.get_heads().len(),
        GATES,
        "every gate's check-ins merged"
    );
    secs
}

fn main() {
    let (booking, gates) = day();
    let total = GATES * PER_GATE;
    println!(
        "{total} check-ins from {GATES} gates into a {PUPILS}-pupil booking; µs per check-in, best of 3"
    );
    println!(
        "{:>16} {:>10} {:>20} {:>20}",
        "changes a batch", "batches", "with patch log", "without"
    );
    // The last: every gate's check-ins in one batch, a burst of queued messages merged at once.
    let mut runs: Vec<Vec<Vec<Change>>> = [1, 5, 19, 50, PER_GATE]
        .into_iter()
        .map(|size| batches(&gates, size))
        .collect();
    runs.push(vec![gates.concat()]);
    for list in &runs {
        let best = |log| {
            (0..3)
                .map(|_| merge(&booking, list, log))
                .fold(f64::MAX, f64::min)
        };
        let (with, without) = (best(true), best(false));
        println!(
            "{:>16} {:>10} {:>20.1} {:>20.1}",
            list[0].len(),
            list.len(),
            with * 1e6 / total as f64,
            without * 1e6 / total as f64
        );
    }
    reads(&booking, &gates);
}

/// Best of `runs` of `f`, in µs.
fn best_us(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(f64::MAX, f64::min) * 1e6
}

/// What reading the booking back costs, whole and by a reader that read it before.
fn reads(booking: &Automerge, gates: &[Vec<Change>]) {
    println!();
    println!("reading the booking back; µs a read, best of 5");
    println!(
        "{:>8} {:>12} {:>16} {:>22} {:>22}",
        "scans", "whole read", "diff of one", "reader, one new", "reader, ten new"
    );
    for n in [1, 2, 4, GATES - 1] {
        let mut doc = booking.clone();
        doc.apply_changes(gates[..n].concat()).expect("apply");
        // The next gate's first check-ins arrive after the last read.
        let later: Vec<Change> = gates[n][..10].to_vec();
        let whole = best_us(5, || {
            let t = Instant::now();
            std::hint::black_box(Booking::read(&doc));
            t.elapsed().as_secs_f64()
        });
        let mut one = doc.clone();
        one.apply_changes(later[..1].to_vec()).expect("apply");
        let heads = doc.get_heads();
        let diff = best_us(5, || {
            let t = Instant::now();
            std::hint::black_box(one.diff(&heads, &one.get_heads()));
            t.elapsed().as_secs_f64()
        });
        let reader_after = |new: usize| {
            let mut next = doc.clone();
            next.apply_changes(later[..new].to_vec()).expect("apply");
            best_us(5, || {
                let mut reader = BookingReader::new();
                reader.read(&doc);
                reader.read(&doc);
                let t = Instant::now();
                let (read, kind) = reader.read(&next);
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(kind, ReadKind::Changed);
                assert_eq!(
                    read,
                    Booking::read(&next),
                    "the reader reads what a whole read does"
                );
                secs
            })
        };
        println!(
            "{:>8} {:>12.0} {:>16.0} {:>22.0} {:>22.0}",
            n * PER_GATE,
            whole,
            diff,
            reader_after(1),
            reader_after(10)
        );
    }
}
