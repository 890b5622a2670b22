//! Figures for `docs/performance.md`. Run: `cargo bench -p kepu-sync-core --bench read`.
//!
//! Prints the time to read a whole booking (`Booking::read`, what the server's records and
//! the phone's screens do after every merge) as its check-ins grow: 300 pupils on the
//! roster, 10 gate devices, 500 to 2,500 scans. A read that looks every field up by key
//! costs more per scan the bigger the booking; one that walks each map once does not.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::time::Instant;

use automerge::Automerge;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const PUPILS: u128 = 300;
const GATES: u128 = 10;

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

/// A booking of 300 pupils with `scans` check-ins spread over the gates.
fn booking(scans: usize) -> Automerge {
    let mut doc = Automerge::new();
    let roster: Vec<PupilId> = (0..PUPILS).map(|i| PupilId(uid(1000 + i))).collect();
    let edit = Edit::CreateBooking {
        venue: VenueId(uid(4)),
        slot: SlotId(uid(5)),
        school: SchoolId(uid(3)),
        party_size: PUPILS as u32,
        roster: roster.clone(),
    };
    apply_unchecked(&mut doc, &teacher(), 1_767_225_600_000, &edit).expect("create");
    for i in 0..scans {
        let scan_id =
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128).to_string();
        let edit = Edit::CheckIn {
            pupil: roster[i % roster.len()],
            scan_id,
            method: ScanMethod::PassScan,
            proof: None,
        };
        let g = gate(i as u128 % GATES);
        apply_unchecked(&mut doc, &g, 1_767_229_200_000 + i as i64 * 1000, &edit).expect("scan");
    }
    doc
}

fn main() {
    println!("{:>6} {:>14} {:>14}", "scans", "read, ms", "per scan, µs");
    for scans in [500usize, 1_000, 2_500] {
        let doc = booking(scans);
        let read = Booking::read(&doc).expect("a booking");
        assert_eq!(read.check_ins.len(), scans, "every scan is read");
        let rounds = 5;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(Booking::read(std::hint::black_box(&doc)));
        }
        let secs = started.elapsed().as_secs_f64() / f64::from(rounds);
        println!(
            "{scans:>6} {:>14.2} {:>14.2}",
            secs * 1e3,
            secs * 1e6 / scans as f64
        );
    }
}
