//! What the relational records hold for one document, computed by the same sync-core
//! rules every device runs. Pure: the store writes it, the tests compare it.

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::rules::attendance::{Attendance, attendance};
use kepu_sync_core::rules::volunteer;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::Booking;
use kepu_sync_core::schema::school_log::SchoolLog;
use kepu_sync_core::schema::venue::{Slot, Venue};
use kepu_sync_core::schema::{DocKind, kind_of};

/// The records of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// A venue: directory profile and slots.
    Venue(Box<Venue>),
    /// A booking.
    Booking(Box<Booking>),
    /// A volunteer's activities with their confirmation status.
    ActivityLog(Box<ActivityLog>),
    /// A school's year: sessions, lectures, tour stops and tour attendance.
    SchoolLog(Box<SchoolLog>),
    /// Nothing to project (other kinds, or a malformed document).
    Nothing,
}

/// One activity's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    /// Activity id.
    pub id: String,
    /// `confirmed`, `declined` or `unconfirmed`.
    pub status: &'static str,
    /// Minutes that count.
    pub confirmed_minutes: u64,
}

/// Projects a merged document.
#[must_use]
pub fn project(_doc_id: DocumentId, doc: &Automerge) -> Projection {
    match kind_of(doc) {
        Some(DocKind::Venue) => {
            Venue::read(doc).map_or(Projection::Nothing, |v| Projection::Venue(Box::new(v)))
        }
        Some(DocKind::Booking) => {
            Booking::read(doc).map_or(Projection::Nothing, |b| Projection::Booking(Box::new(b)))
        }
        Some(DocKind::ActivityLog) => ActivityLog::read(doc).map_or(Projection::Nothing, |l| {
            Projection::ActivityLog(Box::new(l))
        }),
        Some(DocKind::SchoolLog) => {
            SchoolLog::read(doc).map_or(Projection::Nothing, |l| Projection::SchoolLog(Box::new(l)))
        }
        _ => Projection::Nothing,
    }
}

/// The attendance records of a booking, given its slot if the venue is known.
#[must_use]
pub fn booking_attendance(booking: &Booking, slot: Option<&Slot>) -> Attendance {
    attendance(booking, slot)
}

/// The per-activity records of a log.
#[must_use]
pub fn activity_records(log: &ActivityLog) -> Vec<ActivityRecord> {
    log.activities
        .iter()
        .map(|a| {
            let claimed = u64::from(a.minutes);
            let (status, confirmed_minutes) = match volunteer::decision(log, &a.id) {
                None => ("unconfirmed", 0),
                Some(c) if c.approved => (
                    "confirmed",
                    c.minutes.map_or(claimed, |m| u64::from(m).min(claimed)),
                ),
                Some(_) => ("declined", 0),
            };
            ActivityRecord {
                id: a.id.clone(),
                status,
                confirmed_minutes,
            }
        })
        .collect()
}
