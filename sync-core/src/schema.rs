//! Document kinds, their layout and typed read views.
//!
//! Every document has at its root `kind` (text) and `schema` (the schema version of the
//! engine that created it). Layout rules that keep offline merges safe (see
//! `docs/conflict-rules.md`):
//! - the skeleton (every container) is created once, in the creator's first change;
//! - entries are keyed by UUID v7 or by natural keys, never by list position;
//! - a container that several devices may add to is keyed so that each device creates
//!   its own (`check_ins_by_device["<device>"]`, `check_ins["<pupil>/<device>"]` before
//!   schema 3), never the same key twice.

pub mod activity_log;
pub mod booking;
pub mod booking_reader;
pub mod revocations;
pub mod school_log;
pub mod venue;

use automerge::{ROOT, ReadDoc};

use crate::doc_read;

/// The schema version this engine writes. Version history (additive only):
/// - 1: first release.
/// - 2: bookings gain `guide` (venue staff name a guide group label) and venue profiles
///   gain `after_school` (opening hours aligned with after-school time). Engines at 2
///   read and accept everything version 1 devices write.
/// - 3: bookings gain `check_ins_by_device` and `check_outs_by_device`, where engines of
///   version 3 write each device's scans in a map of its own (ADR 0203). Scans under
///   `"<pupil>/<device>"` keep being written by older devices and read as before.
/// - 4: bookings gain `check_in_records` and `check_out_records`, where engines of
///   version 4 write each scan as one value (a JSON object's text) at
///   `"<pupil>/<scan id>"` in a map of the device's own (ADR 0205): a scan is one
///   operation and makes no object. Scans of versions 1 to 3 are read as before.
pub const SCHEMA_VERSION: i64 = 4;

/// Root key holding the kind.
pub const KIND: &str = "kind";
/// Root key holding the schema version.
pub const SCHEMA: &str = "schema";

/// The kinds of documents kepu syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A venue: directory profile, slots, gate keys.
    Venue,
    /// One visit of one school group to one venue slot.
    Booking,
    /// One volunteer's activities and their confirmations.
    ActivityLog,
    /// One school's year: in-school sessions, expert lectures, tour stops.
    SchoolLog,
    /// The server's list of revoked pupil passes.
    Revocations,
}

impl DocKind {
    /// The text stored at the root `kind` key.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Venue => "venue",
            Self::Booking => "booking",
            Self::ActivityLog => "activity_log",
            Self::SchoolLog => "school_log",
            Self::Revocations => "revocations",
        }
    }

    /// Parses [`DocKind::as_str`]'s output.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "venue" => Self::Venue,
            "booking" => Self::Booking,
            "activity_log" => Self::ActivityLog,
            "school_log" => Self::SchoolLog,
            "revocations" => Self::Revocations,
            _ => return None,
        })
    }
}

/// The kind of a document, if it has a well-formed one.
pub fn kind_of<D: ReadDoc>(doc: &D) -> Option<DocKind> {
    DocKind::parse(&doc_read::string(doc, &ROOT, KIND)?)
}

/// The schema version a document was created with (1 if absent).
pub fn schema_of<D: ReadDoc>(doc: &D) -> i64 {
    doc_read::int(doc, &ROOT, SCHEMA).unwrap_or(1)
}
