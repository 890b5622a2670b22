//! Projecting a document into its records: the typed view of a merged document that its
//! relational records are written from. Pure; what the rows hold beyond the view
//! (attendance, minutes) comes from the same sync-core rules every device runs.

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::Booking;
use kepu_sync_core::schema::school_log::SchoolLog;
use kepu_sync_core::schema::venue::Venue;
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
