//! Projecting a document into its records: the typed view of a merged document that its
//! relational records are written from. Pure; what the rows hold beyond the view
//! (attendance, minutes) comes from the same sync-core rules every device runs.

use std::collections::HashMap;

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::Booking;
use kepu_sync_core::schema::booking_reader::{BookingReader, ReadKind};
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

/// Scans a [`Projector`] keeps in all (up to about 1 KiB each, with a gate proof: about
/// 20 MiB): past this, the readers of the bookings projected longest ago are dropped
/// (their next read is whole).
pub const MAX_SCANS_KEPT: usize = 20_000;

/// Projects the documents of one hub shard, keeping a [`BookingReader`] per booking so
/// that a booking projected again reads only the scans that changed (ADR 0181).
#[derive(Debug, Default)]
pub struct Projector {
    readers: HashMap<DocumentId, (u64, BookingReader)>,
    /// Projections so far: when each reader was last used.
    clock: u64,
}

impl Projector {
    /// Projects a merged document, as [`project`] does; for a booking, also how its scans
    /// were read.
    pub fn project(
        &mut self,
        doc_id: DocumentId,
        doc: &Automerge,
    ) -> (Projection, Option<ReadKind>) {
        if kind_of(doc) != Some(DocKind::Booking) {
            self.readers.remove(&doc_id);
            return (project(doc_id, doc), None);
        }
        self.clock += 1;
        let clock = self.clock;
        let entry = self.readers.entry(doc_id).or_default();
        entry.0 = clock;
        let (booking, read) = entry.1.read(doc);
        self.bound(doc_id);
        let projection = booking.map_or(Projection::Nothing, |b| Projection::Booking(Box::new(b)));
        (projection, Some(read))
    }

    /// Drops what is kept for `doc_id` (it left memory).
    pub fn forget(&mut self, doc_id: &DocumentId) {
        self.readers.remove(doc_id);
    }

    /// Scans kept in all.
    #[must_use]
    pub fn scans_kept(&self) -> usize {
        self.readers.values().map(|(_, r)| r.scans_kept()).sum()
    }

    /// Drops the readers used longest ago while more than [`MAX_SCANS_KEPT`] scans are
    /// kept; never the one of `current`, just read.
    fn bound(&mut self, current: DocumentId) {
        let mut kept = self.scans_kept();
        while kept > MAX_SCANS_KEPT {
            let Some(oldest) = self
                .readers
                .iter()
                .filter(|(d, _)| **d != current)
                .min_by_key(|(_, (used, _))| *used)
                .map(|(d, _)| *d)
            else {
                return;
            };
            if let Some((_, r)) = self.readers.remove(&oldest) {
                kept -= r.scans_kept();
            }
        }
    }
}
