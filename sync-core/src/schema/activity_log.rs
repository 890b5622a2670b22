//! The activity log of one junior science volunteer (小小科普辅导员).
//!
//! ```text
//! { kind: "activity_log", schema, volunteer, school,
//!   activities:    { "<activity id>": { venue, activity_kind, start, minutes, description } },
//!   confirmations: { "<activity id>/<device>": { at, by, approved, minutes } } }
//! ```

use automerge::{ROOT, ReadDoc};

use crate::doc_read as r;
use crate::ids::{DeviceId, SchoolId, UserId, VenueId};

/// Root keys.
pub mod key {
    /// The volunteer's user id.
    pub const VOLUNTEER: &str = "volunteer";
    /// The volunteer's school.
    pub const SCHOOL: &str = "school";
    /// Activities.
    pub const ACTIVITIES: &str = "activities";
    /// Staff confirmations.
    pub const CONFIRMATIONS: &str = "confirmations";
}

/// One logged activity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    /// Activity id (UUID v7 text).
    pub id: String,
    /// Where.
    pub venue: VenueId,
    /// What ("guided_tour", "demonstration", "explainer_shift", …).
    pub activity_kind: String,
    /// Start, unix ms.
    pub start: i64,
    /// Minutes claimed.
    pub minutes: u32,
    /// Free text.
    pub description: String,
}

/// A venue staff member's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confirmation {
    /// Activity confirmed.
    pub activity: String,
    /// Device of the staff member.
    pub device: DeviceId,
    /// Staff user.
    pub by: Option<UserId>,
    /// When.
    pub at: i64,
    /// Approved or declined.
    pub approved: bool,
    /// Minutes the staff member confirms (may be fewer than claimed).
    pub minutes: Option<u32>,
}

/// An activity log read from its merged document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActivityLog {
    /// Schema version.
    pub schema: i64,
    /// Volunteer.
    pub volunteer: UserId,
    /// School.
    pub school: Option<SchoolId>,
    /// Activities by start time.
    pub activities: Vec<Activity>,
    /// Every confirmation.
    pub confirmations: Vec<Confirmation>,
}

/// Builds `"<activity>/<device>"`.
#[must_use]
pub fn confirmation_key(activity: &str, device: DeviceId) -> String {
    format!("{activity}/{device}")
}

impl ActivityLog {
    /// Reads an activity log; `None` if malformed.
    pub fn read<D: ReadDoc>(doc: &D) -> Option<Self> {
        if crate::schema::kind_of(doc)? != crate::schema::DocKind::ActivityLog {
            return None;
        }
        let mut activities = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, key::ACTIVITIES) {
            for id in r::keys(doc, &obj) {
                let Some(a) = r::map(doc, &obj, &id) else {
                    continue;
                };
                let Some(venue) = r::parsed(doc, &a, "venue") else {
                    continue;
                };
                activities.push(Activity {
                    venue,
                    activity_kind: r::string(doc, &a, "activity_kind").unwrap_or_default(),
                    start: r::int(doc, &a, "start").unwrap_or(0),
                    minutes: r::int(doc, &a, "minutes")
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                    description: r::string(doc, &a, "description").unwrap_or_default(),
                    id,
                });
            }
        }
        activities.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        let mut confirmations = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, key::CONFIRMATIONS) {
            for k in r::keys(doc, &obj) {
                let Some((activity, device)) = k.rsplit_once('/') else {
                    continue;
                };
                let (Ok(device), Some(c)) = (device.parse(), r::map(doc, &obj, &k)) else {
                    continue;
                };
                confirmations.push(Confirmation {
                    activity: activity.to_owned(),
                    device,
                    by: r::parsed(doc, &c, "by"),
                    at: r::int(doc, &c, "at").unwrap_or(0),
                    approved: r::boolean(doc, &c, "approved").unwrap_or(false),
                    minutes: r::int(doc, &c, "minutes").and_then(|m| u32::try_from(m).ok()),
                });
            }
        }
        Some(Self {
            schema: crate::schema::schema_of(doc),
            volunteer: r::parsed(doc, &ROOT, key::VOLUNTEER)?,
            school: r::parsed(doc, &ROOT, key::SCHOOL),
            activities,
            confirmations,
        })
    }
}
