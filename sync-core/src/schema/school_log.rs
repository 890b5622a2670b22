//! One school's year: in-school science sessions, expert lectures, mobile-museum tour
//! stops with attendance.
//!
//! ```text
//! { kind: "school_log", schema, school, year,
//!   sessions:   { "<id>": { at, topic, minutes, by } },
//!   lectures:   { "<id>": { at, topic, expert_ref, by } },
//!   tour_stops: { "<id>": { at, tour, location, days, by } },
//!   tour_attendance: { "<stop id>/<pupil>/<device>": <at> } }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ROOT, ReadDoc};

use crate::doc_read as r;
use crate::ids::{PupilId, SchoolId, UserId};

/// Root keys.
pub mod key {
    /// School id.
    pub const SCHOOL: &str = "school";
    /// Calendar year.
    pub const YEAR: &str = "year";
    /// In-school science sessions.
    pub const SESSIONS: &str = "sessions";
    /// Expert lectures.
    pub const LECTURES: &str = "lectures";
    /// Mobile science museum tour stops.
    pub const TOUR_STOPS: &str = "tour_stops";
    /// Tour attendance.
    pub const TOUR_ATTENDANCE: &str = "tour_attendance";
}

/// A dated entry (session, lecture or tour stop).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Entry id.
    pub id: String,
    /// When, unix ms.
    pub at: i64,
    /// Topic, tour name or location.
    pub title: String,
    /// Minutes (sessions) or days (tour stops).
    pub amount: u32,
    /// Who logged it.
    pub by: Option<UserId>,
}

/// A school log read from its merged document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchoolLog {
    /// Schema version.
    pub schema: i64,
    /// School.
    pub school: SchoolId,
    /// Year.
    pub year: i64,
    /// Sessions.
    pub sessions: Vec<Entry>,
    /// Lectures.
    pub lectures: Vec<Entry>,
    /// Tour stops.
    pub tour_stops: Vec<Entry>,
    /// Pupils who attended each tour stop (counted once however many devices).
    pub tour_attendance: BTreeMap<String, BTreeSet<PupilId>>,
}

fn entries<D: ReadDoc>(doc: &D, container: &str, title: &str, amount: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Some(obj) = r::map(doc, &ROOT, container) {
        for id in r::keys(doc, &obj) {
            if let Some(e) = r::map(doc, &obj, &id) {
                out.push(Entry {
                    at: r::int(doc, &e, "at").unwrap_or(0),
                    title: r::string(doc, &e, title).unwrap_or_default(),
                    amount: r::int(doc, &e, amount)
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                    by: r::parsed(doc, &e, "by"),
                    id,
                });
            }
        }
    }
    out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    out
}

impl SchoolLog {
    /// Reads a school log; `None` if malformed.
    pub fn read<D: ReadDoc>(doc: &D) -> Option<Self> {
        if crate::schema::kind_of(doc)? != crate::schema::DocKind::SchoolLog {
            return None;
        }
        let mut tour_attendance: BTreeMap<String, BTreeSet<PupilId>> = BTreeMap::new();
        if let Some(obj) = r::map(doc, &ROOT, key::TOUR_ATTENDANCE) {
            for k in r::keys(doc, &obj) {
                let mut parts = k.split('/');
                if let (Some(stop), Some(Ok(pupil))) =
                    (parts.next(), parts.next().map(str::parse::<PupilId>))
                {
                    tour_attendance
                        .entry(stop.to_owned())
                        .or_default()
                        .insert(pupil);
                }
            }
        }
        Some(Self {
            schema: crate::schema::schema_of(doc),
            school: r::parsed(doc, &ROOT, key::SCHOOL)?,
            year: r::int(doc, &ROOT, key::YEAR).unwrap_or(0),
            sessions: entries(doc, key::SESSIONS, "topic", "minutes"),
            lectures: entries(doc, key::LECTURES, "topic", "minutes"),
            tour_stops: entries(doc, key::TOUR_STOPS, "location", "days"),
            tour_attendance,
        })
    }
}
