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

/// China Standard Time, UTC+8, the programme's calendar for school years and weeks.
pub const CHINA_UTC_OFFSET_MS: i64 = 8 * 3_600_000;

/// The calendar year (proleptic Gregorian) of a unix-millisecond instant in China time.
#[must_use]
pub fn china_year(unix_ms: i64) -> i64 {
    let days = (unix_ms + CHINA_UTC_OFFSET_MS).div_euclid(86_400_000);
    // Days since 1970-01-01 to a civil year (Howard Hinnant's days_from_civil inverse).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// Days from 1970-01-01 to 1 January of `year` (proleptic Gregorian).
#[must_use]
pub fn days_to_new_year(year: i64) -> i64 {
    // days_from_civil(year, 1, 1): January counts as month 11 of the previous March-based year.
    let y = year - 1;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * 10 + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The programme week of an instant: 7-day weeks counted from 1 January in China time,
/// 0-based (week 0 is 1–7 January), with its year.
#[must_use]
pub fn china_week(unix_ms: i64) -> (i64, i64) {
    let year = china_year(unix_ms);
    let day = (unix_ms + CHINA_UTC_OFFSET_MS).div_euclid(86_400_000);
    (year, (day - days_to_new_year(year)) / 7)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_year_turns_at_midnight_beijing_time() {
        // 2026-12-31T16:00:00Z is 2027-01-01 00:00 in Beijing.
        let new_year_beijing = 1_798_732_800_000;
        assert_eq!(china_year(new_year_beijing - 1), 2026);
        assert_eq!(china_year(new_year_beijing), 2027);
        assert_eq!(china_year(0), 1970);
        // 2024-02-29 12:00 Beijing, a leap day.
        assert_eq!(china_year(1_709_179_200_000), 2024);
        assert_eq!(china_year(-CHINA_UTC_OFFSET_MS - 1), 1969);
    }

    #[test]
    fn weeks_count_from_new_year_in_china_time() {
        assert_eq!(days_to_new_year(1970), 0);
        assert_eq!(days_to_new_year(1971), 365);
        assert_eq!(days_to_new_year(2000), 10_957);
        let new_year_2027 = 1_798_732_800_000;
        assert_eq!(china_week(new_year_2027), (2027, 0));
        assert_eq!(china_week(new_year_2027 + 6 * 86_400_000), (2027, 0));
        assert_eq!(china_week(new_year_2027 + 7 * 86_400_000), (2027, 1));
        // 31 December 2026 is day 364 of 2026: week 52, the short 53rd week.
        assert_eq!(china_week(new_year_2027 - 1), (2026, 52));
    }
}
