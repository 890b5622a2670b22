//! Attendance of one booking: the earliest scan counts, every scan is kept, duplicates
//! are listed with device and time, and anomalies are flagged, never dropped.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{DeviceId, PupilId};
use crate::schema::booking::{Booking, Scan, Status};
use crate::schema::venue::Slot;

/// How early before a slot starts a check-in still counts as inside its window.
pub const EARLY_ARRIVAL_MS: i64 = 60 * 60 * 1000;
/// How late after a slot ends a check-in still counts as inside its window.
pub const LATE_ARRIVAL_MS: i64 = 30 * 60 * 1000;

/// What is odd about a check-in. Anomalous scans still count as attendance: nothing a
/// device recorded is dropped, it is shown for what it is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// The pupil is not on the roster.
    WalkIn,
    /// The booking was cancelled.
    CancelledBooking,
    /// The booking is requested or wait-listed, not confirmed.
    UnconfirmedBooking,
    /// The scan's time is outside the slot's window.
    OutsideSlot,
    /// The scan's proof is also the proof of another pupil's check-in: one proof used
    /// by several pupils (a copied gate proof; the server refuses new ones, see
    /// `docs/proofs.md`, but documents written before proofs were bound may hold them).
    SharedProof,
}

impl AnomalyKind {
    /// Stable text form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WalkIn => "walk_in",
            Self::CancelledBooking => "cancelled_booking",
            Self::UnconfirmedBooking => "unconfirmed_booking",
            Self::OutsideSlot => "outside_slot",
            Self::SharedProof => "shared_proof",
        }
    }
}

/// An anomaly on one scan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Anomaly {
    /// Which.
    pub kind: AnomalyKind,
    /// Pupil.
    pub pupil: PupilId,
    /// Device that scanned.
    pub device: DeviceId,
    /// Scan time.
    pub at: i64,
}

/// One pupil's attendance on the visit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PupilAttendance {
    /// Pupil.
    pub pupil: PupilId,
    /// On the roster.
    pub on_roster: bool,
    /// The scan that counts: the earliest check-in.
    pub counted: Option<Scan>,
    /// Every other check-in scan (duplicates), earliest first.
    pub duplicates: Vec<Scan>,
    /// Latest check-out, if any.
    pub last_check_out: Option<Scan>,
    /// Checked in and not checked out since.
    pub inside: bool,
}

/// Attendance of one booking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attendance {
    /// Pupils on the roster.
    pub expected: usize,
    /// Pupils counted as arrived (each once).
    pub arrived: usize,
    /// Pupils inside now.
    pub inside_now: usize,
    /// Pupils who checked in and then out.
    pub left: usize,
    /// Roster pupils not yet arrived.
    pub missing: Vec<PupilId>,
    /// Per pupil, roster pupils and walk-ins.
    pub pupils: Vec<PupilAttendance>,
    /// Anomalies, one per counted scan that has them.
    pub anomalies: Vec<Anomaly>,
}

fn scan_order(s: &Scan) -> (i64, DeviceId, &str) {
    (s.at, s.device, s.scan_id.as_str())
}

/// Computes the attendance of `booking`, given its slot if known (for the window check).
#[must_use]
pub fn attendance(booking: &Booking, slot: Option<&Slot>) -> Attendance {
    let mut ins: BTreeMap<PupilId, Vec<&Scan>> = BTreeMap::new();
    for s in &booking.check_ins {
        ins.entry(s.pupil).or_default().push(s);
    }
    let mut outs: BTreeMap<PupilId, Vec<&Scan>> = BTreeMap::new();
    for s in &booking.check_outs {
        outs.entry(s.pupil).or_default().push(s);
    }
    let mut everyone: Vec<PupilId> = booking.roster.keys().copied().collect();
    everyone.extend(ins.keys().filter(|p| !booking.roster.contains_key(p)));
    everyone.sort_unstable();

    let mut proof_users: BTreeMap<&str, BTreeSet<PupilId>> = BTreeMap::new();
    for s in &booking.check_ins {
        if let Some(p) = s.proof.as_deref() {
            proof_users.entry(p).or_default().insert(s.pupil);
        }
    }
    let mut out = Attendance {
        expected: booking.roster.len(),
        arrived: 0,
        inside_now: 0,
        left: 0,
        missing: Vec::new(),
        pupils: Vec::new(),
        anomalies: Vec::new(),
    };
    for pupil in everyone {
        let on_roster = booking.roster.contains_key(&pupil);
        let mut scans: Vec<&Scan> = ins.remove(&pupil).unwrap_or_default();
        scans.sort_by(|a, b| scan_order(a).cmp(&scan_order(b)));
        let mut check_outs: Vec<&Scan> = outs.remove(&pupil).unwrap_or_default();
        check_outs.sort_by(|a, b| scan_order(a).cmp(&scan_order(b)));
        let counted = scans.first().map(|s| (*s).clone());
        let last_in = scans.last().map(|s| s.at);
        let last_out = check_outs.last().map(|s| (*s).clone());
        let inside = match (last_in, &last_out) {
            (Some(i), Some(o)) => i > o.at,
            (Some(_), None) => true,
            _ => false,
        };
        if let Some(c) = &counted {
            out.arrived += 1;
            if inside {
                out.inside_now += 1;
            } else {
                out.left += 1;
            }
            let mut flag = |kind| {
                out.anomalies.push(Anomaly {
                    kind,
                    pupil,
                    device: c.device,
                    at: c.at,
                });
            };
            if !on_roster {
                flag(AnomalyKind::WalkIn);
            }
            if c.proof
                .as_deref()
                .and_then(|p| proof_users.get(p))
                .is_some_and(|users| users.len() > 1)
            {
                flag(AnomalyKind::SharedProof);
            }
            match booking.status {
                Status::Cancelled => flag(AnomalyKind::CancelledBooking),
                Status::Requested | Status::Waitlisted => flag(AnomalyKind::UnconfirmedBooking),
                Status::Confirmed => {}
            }
            if let Some(slot) = slot
                && (c.at < slot.start - EARLY_ARRIVAL_MS || c.at > slot.end + LATE_ARRIVAL_MS)
            {
                flag(AnomalyKind::OutsideSlot);
            }
        } else if on_roster {
            out.missing.push(pupil);
        }
        out.pupils.push(PupilAttendance {
            pupil,
            on_roster,
            counted,
            duplicates: scans.iter().skip(1).map(|s| (*s).clone()).collect(),
            last_check_out: last_out,
            inside,
        });
    }
    out.anomalies.sort();
    out
}
