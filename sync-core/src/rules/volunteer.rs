//! Volunteer minutes: confirmed, declined and not yet confirmed.

use crate::schema::activity_log::{ActivityLog, Confirmation};

/// Minutes of one volunteer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Minutes {
    /// Minutes confirmed by venue staff.
    pub confirmed: u64,
    /// Minutes logged and not yet confirmed or declined.
    pub unconfirmed: u64,
    /// Minutes declined by venue staff.
    pub declined: u64,
    /// Activities logged.
    pub activities: usize,
}

/// The decision on one activity: the latest confirmation wins (time, then device id, so
/// every replica picks the same one).
#[must_use]
pub fn decision<'a>(log: &'a ActivityLog, activity: &str) -> Option<&'a Confirmation> {
    log.confirmations
        .iter()
        .filter(|c| c.activity == activity)
        .max_by(|a, b| (a.at, a.device).cmp(&(b.at, b.device)))
}

/// Adds up a volunteer's minutes. A confirmation may lower the minutes, never raise them.
#[must_use]
pub fn minutes(log: &ActivityLog) -> Minutes {
    let mut m = Minutes {
        activities: log.activities.len(),
        ..Minutes::default()
    };
    for a in &log.activities {
        let claimed = u64::from(a.minutes);
        match decision(log, &a.id) {
            None => m.unconfirmed += claimed,
            Some(c) if c.approved => {
                m.confirmed += c.minutes.map_or(claimed, |x| u64::from(x).min(claimed));
            }
            Some(_) => m.declined += claimed,
        }
    }
    m
}
