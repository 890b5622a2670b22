//! Volunteer minutes: confirmed, declined and not yet confirmed.

use crate::schema::activity_log::{Activity, ActivityLog, Confirmation};

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

/// What became of one logged activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Neither confirmed nor declined yet.
    Unconfirmed,
    /// Confirmed, counting these minutes (at most those claimed).
    Confirmed(u64),
    /// Declined.
    Declined,
}

impl Outcome {
    /// The stored name: `unconfirmed`, `confirmed` or `declined`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfirmed => "unconfirmed",
            Self::Confirmed(_) => "confirmed",
            Self::Declined => "declined",
        }
    }

    /// The minutes that count.
    #[must_use]
    pub fn confirmed_minutes(self) -> u64 {
        match self {
            Self::Confirmed(m) => m,
            Self::Unconfirmed | Self::Declined => 0,
        }
    }
}

/// What became of one activity of `log`. A confirmation may lower the minutes, never
/// raise them.
#[must_use]
pub fn outcome(log: &ActivityLog, activity: &Activity) -> Outcome {
    let claimed = u64::from(activity.minutes);
    match decision(log, &activity.id) {
        None => Outcome::Unconfirmed,
        Some(c) if c.approved => {
            Outcome::Confirmed(c.minutes.map_or(claimed, |x| u64::from(x).min(claimed)))
        }
        Some(_) => Outcome::Declined,
    }
}

/// Adds up a volunteer's minutes.
#[must_use]
pub fn minutes(log: &ActivityLog) -> Minutes {
    let mut m = Minutes {
        activities: log.activities.len(),
        ..Minutes::default()
    };
    for a in &log.activities {
        match outcome(log, a) {
            Outcome::Unconfirmed => m.unconfirmed += u64::from(a.minutes),
            Outcome::Confirmed(counted) => m.confirmed += counted,
            Outcome::Declined => m.declined += u64::from(a.minutes),
        }
    }
    m
}
