//! Programme reports for education bureaus: how each school, county and city stands
//! against the "双走进" targets over a calendar year, up to an as-of date.
//!
//! Days are China time (UTC+8). Weeks are 7-day weeks counted from 1 January: week 1 is
//! 1–7 January, week 2 is 8–14 January, …, and week 53 is the last one or two days of the
//! year. The targets and the miss codes:
//!
//! | target | met when | miss code (flagged when) |
//! |---|---|---|
//! | venue visit | ≥ 1 booking with a counted arrival in a slot of the year | `no_venue_visit` (none, once 1 July has passed) |
//! | weekly science session | every week has ≥ 1 session | `weeks_without_session` (a completed week without one) |
//! | expert lecture | ≥ 1 lecture (1–2 a year) | `no_expert_lecture` (none, once 1 July has passed) |
//! | tour coverage (全覆盖) | every pupil attended a tour stop | `tour_coverage_incomplete` (fewer, once 1 July has passed) |
//!
//! The week in progress is never a miss: it is still open. Annual targets are flagged only
//! from 1 July (the year is past its middle), and at any date once the year is over.
//!
//! The pure part ([`Period`], [`school_row`], [`aggregate`]) takes rows and returns report
//! rows; [`load_schools`] reads those rows from the store (SQLite or PostgreSQL).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::Store;
pub use crate::store::{SchoolFacts, SchoolPlace, Scope};

/// China time, in which days and years are counted.
pub use kepu_sync_core::calendar::CHINA_UTC_OFFSET_MS as UTC_OFFSET_MS;
use kepu_sync_core::calendar::DAY_MS;
pub use kepu_sync_core::calendar::{
    china_day, civil_from_days, days_from_civil, format_date, parse_date,
};

/// Years a report may cover.
pub const YEARS: std::ops::RangeInclusive<i64> = 2000..=2100;

/// Why a year / as-of pair cannot be reported on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// The year is outside [`YEARS`].
    #[error("year must be between 2000 and 2100")]
    YearOutOfRange,
    /// The as-of date is before 1 January of the year.
    #[error("as_of {as_of} is before the start of {year}")]
    AsOfBeforeYear {
        /// The as-of date.
        as_of: String,
        /// The year.
        year: i64,
    },
}

/// A reporting period: a calendar year up to an as-of day (China time), both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The year.
    pub year: i64,
    /// Day number of 1 January.
    pub first_day: i64,
    /// Day number of 31 December.
    pub last_day: i64,
    /// Day number of the as-of date, at most `last_day`.
    pub as_of_day: i64,
}

impl Period {
    /// The period of `year` up to `as_of_day` (a later date is taken as 31 December).
    ///
    /// # Errors
    /// A year outside [`YEARS`] or an as-of date before the year.
    pub fn new(year: i64, as_of_day: i64) -> Result<Self, PeriodError> {
        if !YEARS.contains(&year) {
            return Err(PeriodError::YearOutOfRange);
        }
        let first_day = days_from_civil(year, 1, 1);
        let last_day = days_from_civil(year + 1, 1, 1) - 1;
        if as_of_day < first_day {
            return Err(PeriodError::AsOfBeforeYear {
                as_of: format_date(as_of_day),
                year,
            });
        }
        Ok(Self {
            year,
            first_day,
            last_day,
            as_of_day: as_of_day.min(last_day),
        })
    }

    /// First counted instant (1 January 00:00 China time), unix ms.
    #[must_use]
    pub const fn start_ms(&self) -> i64 {
        self.first_day * DAY_MS - UTC_OFFSET_MS
    }

    /// End of the counted window (exclusive: the midnight after the as-of day), unix ms.
    #[must_use]
    pub const fn end_ms(&self) -> i64 {
        (self.as_of_day + 1) * DAY_MS - UTC_OFFSET_MS
    }

    /// Is the instant inside the counted window?
    #[must_use]
    pub const fn contains(&self, ms: i64) -> bool {
        ms >= self.start_ms() && ms < self.end_ms()
    }

    /// The week (0-based, 7-day weeks from 1 January) of an instant in the window.
    #[must_use]
    pub fn week_of(&self, ms: i64) -> Option<usize> {
        if !self.contains(ms) {
            return None;
        }
        usize::try_from((china_day(ms) - self.first_day) / 7).ok()
    }

    /// Weeks begun by the as-of day (the current one included).
    #[must_use]
    pub fn weeks_elapsed(&self) -> usize {
        usize::try_from((self.as_of_day - self.first_day) / 7 + 1).unwrap_or(0)
    }

    /// Weeks completed by the as-of day: their last day (or 31 December) is on or before
    /// it.
    #[must_use]
    pub fn weeks_completed(&self) -> usize {
        (0..self.weeks_elapsed())
            .filter(|&w| {
                let last =
                    (self.first_day + 7 * i64::try_from(w).unwrap_or(0) + 6).min(self.last_day);
                last <= self.as_of_day
            })
            .count()
    }

    /// Are annual targets due: is the as-of day on or after 1 July?
    #[must_use]
    pub fn annual_targets_due(&self) -> bool {
        self.as_of_day >= days_from_civil(self.year, 7, 1)
    }

    /// The as-of date as `YYYY-MM-DD`.
    #[must_use]
    pub fn as_of(&self) -> String {
        format_date(self.as_of_day)
    }
}

/// A target a school did not meet, as bureaus filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Miss {
    /// No venue visit with an arrival this year.
    NoVenueVisit,
    /// At least one completed week without an in-school science session.
    WeeksWithoutSession,
    /// No expert lecture this year.
    NoExpertLecture,
    /// Not every pupil attended a mobile-museum tour stop.
    TourCoverageIncomplete,
}

impl Miss {
    /// Every miss, in report order.
    pub const ALL: [Self; 4] = [
        Self::NoVenueVisit,
        Self::WeeksWithoutSession,
        Self::NoExpertLecture,
        Self::TourCoverageIncomplete,
    ];

    /// The machine-readable code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::NoVenueVisit => "no_venue_visit",
            Self::WeeksWithoutSession => "weeks_without_session",
            Self::NoExpertLecture => "no_expert_lecture",
            Self::TourCoverageIncomplete => "tour_coverage_incomplete",
        }
    }
}

/// Which targets a row meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TargetsMet {
    /// At least one venue visit.
    pub venue_visit: bool,
    /// No completed week without a session.
    pub weekly_sessions: bool,
    /// At least one expert lecture.
    pub expert_lecture: bool,
    /// Every pupil reached by a tour stop.
    pub tour_coverage: bool,
}

/// One school's report row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchoolRow {
    /// Where the school is.
    #[serde(flatten)]
    pub place: SchoolPlace,
    /// Year.
    pub year: i64,
    /// As-of date.
    pub as_of: String,
    /// Bookings with a counted arrival in a slot of the period.
    pub venue_visits: i64,
    /// In-school science sessions.
    pub sessions: i64,
    /// Their minutes.
    pub session_minutes: i64,
    /// Weeks begun so far.
    pub weeks_elapsed: i64,
    /// Weeks with at least one session.
    pub weeks_with_session: i64,
    /// Completed weeks without a session.
    pub weeks_missed: i64,
    /// Sessions per week, week 1 first (the heat strip).
    pub week_sessions: Vec<u32>,
    /// Expert lectures.
    pub lectures: i64,
    /// Mobile-museum tour stops.
    pub tour_stops: i64,
    /// Days the tour stayed at the school (the programme asks for tours of two months or
    /// more a year in remote areas).
    pub tour_days: i64,
    /// Pupils (named plus erased, anonymously).
    pub pupils: i64,
    /// Pupils who attended a tour stop (at most `pupils`).
    pub pupils_reached: i64,
    /// `pupils_reached / pupils` (0 without pupils).
    pub tour_coverage: f64,
    /// Confirmed volunteer minutes.
    pub volunteer_minutes: i64,
    /// The same in hours, one decimal.
    pub volunteer_hours: f64,
    /// Targets met.
    pub met: TargetsMet,
    /// Targets missed (see the module documentation for when each is flagged).
    pub misses: Vec<Miss>,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let r = part as f64 / whole as f64;
    (r * 10_000.0).round() / 10_000.0
}

fn hours(minutes: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let h = minutes as f64 / 60.0;
    (h * 10.0).round() / 10.0
}

/// Computes one school's row for a period.
#[must_use]
pub fn school_row(period: &Period, place: SchoolPlace, facts: &SchoolFacts) -> SchoolRow {
    let venue_visits = count(facts.visits.iter().filter(|&&t| period.contains(t)).count());
    let mut week_sessions = vec![0u32; period.weeks_elapsed()];
    let (mut sessions, mut session_minutes) = (0i64, 0i64);
    for &(at, minutes, n) in &facts.sessions {
        if let Some(w) = period.week_of(at) {
            if let Some(slot) = week_sessions.get_mut(w) {
                *slot = slot.saturating_add(u32::try_from(n.max(0)).unwrap_or(u32::MAX));
            }
            sessions += n.max(0);
            session_minutes += minutes;
        }
    }
    let weeks_with_session = count(week_sessions.iter().filter(|&&n| n > 0).count());
    let weeks_missed = count(
        week_sessions
            .iter()
            .take(period.weeks_completed())
            .filter(|&&n| n == 0)
            .count(),
    );
    let lectures = count(
        facts
            .lectures
            .iter()
            .filter(|&&t| period.contains(t))
            .count(),
    );
    let stops: BTreeMap<&str, i64> = facts
        .tour_stops
        .iter()
        .filter(|(_, at, _)| period.contains(*at))
        .map(|(k, _, days)| (k.as_str(), (*days).max(0)))
        .collect();
    let pupils = facts.pupils.max(0);
    let pupils_reached = facts.tour_reached.clamp(0, pupils);
    let volunteer_minutes: i64 = facts
        .volunteer_activities
        .iter()
        .filter(|(at, _)| period.contains(*at))
        .map(|(_, m)| *m)
        .sum();
    let met = TargetsMet {
        venue_visit: venue_visits >= 1,
        weekly_sessions: weeks_missed == 0,
        expert_lecture: lectures >= 1,
        tour_coverage: !stops.is_empty() && pupils_reached >= pupils,
    };
    let annual = period.annual_targets_due();
    let mut misses = Vec::new();
    if annual && !met.venue_visit {
        misses.push(Miss::NoVenueVisit);
    }
    if !met.weekly_sessions {
        misses.push(Miss::WeeksWithoutSession);
    }
    if annual && !met.expert_lecture {
        misses.push(Miss::NoExpertLecture);
    }
    if annual && !met.tour_coverage {
        misses.push(Miss::TourCoverageIncomplete);
    }
    SchoolRow {
        place,
        year: period.year,
        as_of: period.as_of(),
        venue_visits,
        sessions,
        session_minutes,
        weeks_elapsed: count(week_sessions.len()),
        weeks_with_session,
        weeks_missed,
        week_sessions,
        lectures,
        tour_stops: count(stops.len()),
        tour_days: stops.values().sum(),
        pupils,
        pupils_reached,
        tour_coverage: ratio(pupils_reached, pupils),
        volunteer_minutes,
        volunteer_hours: hours(volunteer_minutes),
        met,
        misses,
    }
}

/// The level of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One row per school.
    Schools,
    /// One row per county.
    Counties,
    /// One row per city.
    Cities,
}

impl Level {
    /// Parses `schools`, `counties` or `cities`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "schools" => Some(Self::Schools),
            "counties" => Some(Self::Counties),
            "cities" => Some(Self::Cities),
            _ => None,
        }
    }

    /// The name used in URLs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Schools => "schools",
            Self::Counties => "counties",
            Self::Cities => "cities",
        }
    }
}

/// Schools of an area meeting each target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SchoolsMeeting {
    /// With a venue visit.
    pub venue_visit: i64,
    /// With a session every completed week.
    pub weekly_sessions: i64,
    /// With an expert lecture.
    pub expert_lecture: i64,
    /// With every pupil reached by a tour stop.
    pub tour_coverage: i64,
}

/// A county's or a city's report row: sums over its schools.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaRow {
    /// County or city id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The city of a county (its own id and name for a city).
    pub city_id: String,
    /// The city's name.
    pub city: String,
    /// Year.
    pub year: i64,
    /// As-of date.
    pub as_of: String,
    /// Schools.
    pub schools: i64,
    /// Sum of venue visits.
    pub venue_visits: i64,
    /// Sum of sessions.
    pub sessions: i64,
    /// Sum of completed weeks without a session.
    pub weeks_missed: i64,
    /// Sum of lectures.
    pub lectures: i64,
    /// Sum of tour stops.
    pub tour_stops: i64,
    /// Sum of tour days.
    pub tour_days: i64,
    /// Sum of pupils.
    pub pupils: i64,
    /// Sum of pupils reached by a tour stop.
    pub pupils_reached: i64,
    /// `pupils_reached / pupils`.
    pub coverage_rate: f64,
    /// Sum of confirmed volunteer minutes.
    pub volunteer_minutes: i64,
    /// The same in hours, one decimal.
    pub volunteer_hours: f64,
    /// Schools meeting each target.
    pub schools_meeting: SchoolsMeeting,
    /// Schools with at least one miss.
    pub schools_with_misses: i64,
    /// Every miss at least one of its schools has.
    pub misses: Vec<Miss>,
}

/// Sums school rows per county (`Level::Counties`) or per city (`Level::Cities`), in the
/// order the areas first appear. `Level::Schools` gives no rows.
#[must_use]
pub fn aggregate(period: &Period, level: Level, rows: &[SchoolRow]) -> Vec<AreaRow> {
    let mut order: Vec<String> = Vec::new();
    let mut areas: HashMap<String, AreaRow> = HashMap::new();
    for r in rows {
        let (id, name) = match level {
            Level::Schools => return Vec::new(),
            Level::Counties => (&r.place.county_id, &r.place.county),
            Level::Cities => (&r.place.city_id, &r.place.city),
        };
        let a = areas.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            AreaRow {
                id: id.clone(),
                name: name.clone(),
                city_id: r.place.city_id.clone(),
                city: r.place.city.clone(),
                year: period.year,
                as_of: period.as_of(),
                schools: 0,
                venue_visits: 0,
                sessions: 0,
                weeks_missed: 0,
                lectures: 0,
                tour_stops: 0,
                tour_days: 0,
                pupils: 0,
                pupils_reached: 0,
                coverage_rate: 0.0,
                volunteer_minutes: 0,
                volunteer_hours: 0.0,
                schools_meeting: SchoolsMeeting::default(),
                schools_with_misses: 0,
                misses: Vec::new(),
            }
        });
        a.schools += 1;
        a.venue_visits += r.venue_visits;
        a.sessions += r.sessions;
        a.weeks_missed += r.weeks_missed;
        a.lectures += r.lectures;
        a.tour_stops += r.tour_stops;
        a.tour_days += r.tour_days;
        a.pupils += r.pupils;
        a.pupils_reached += r.pupils_reached;
        a.volunteer_minutes += r.volunteer_minutes;
        a.schools_meeting.venue_visit += i64::from(r.met.venue_visit);
        a.schools_meeting.weekly_sessions += i64::from(r.met.weekly_sessions);
        a.schools_meeting.expert_lecture += i64::from(r.met.expert_lecture);
        a.schools_meeting.tour_coverage += i64::from(r.met.tour_coverage);
        a.schools_with_misses += i64::from(!r.misses.is_empty());
        for m in &r.misses {
            if !a.misses.contains(m) {
                a.misses.push(*m);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| areas.remove(&id))
        .map(|mut a| {
            a.coverage_rate = ratio(a.pupils_reached, a.pupils);
            a.volunteer_hours = hours(a.volunteer_minutes);
            a.misses.sort();
            a
        })
        .collect()
}

/// Reads the schools in `scope` with what the records hold for them in `period`, and
/// computes their rows (ordered by city, county and school name).
///
/// # Errors
/// A database failure.
pub async fn load_schools(store: &Store, period: &Period, scope: &Scope) -> Result<Vec<SchoolRow>> {
    Ok(store
        .school_facts(scope, period.start_ms(), period.end_ms())
        .await?
        .into_iter()
        .map(|(place, facts)| school_row(period, place, &facts))
        .collect())
}

/// The period for request values: `year` (default: the as-of date's year) and `as_of`
/// (`YYYY-MM-DD`, default: today in China time at `now_ms`).
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed year or date, a year out of range, an as-of
/// date before the year or after today (future weeks would count as missed).
pub fn period_for(year: Option<&str>, as_of: Option<&str>, now_ms: i64) -> Result<Period> {
    let today = china_day(now_ms);
    let as_of_day = match as_of.filter(|s| !s.is_empty()) {
        None => today,
        Some(text) => parse_date(text)
            .ok_or_else(|| Error::InvalidInput("as_of must be a date written YYYY-MM-DD".into()))?,
    };
    if as_of_day > today {
        return Err(Error::InvalidInput(format!(
            "as_of {} is after today ({} China time)",
            format_date(as_of_day),
            format_date(today)
        )));
    }
    let year = match year.filter(|s| !s.is_empty()) {
        None => civil_from_days(as_of_day).0,
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::InvalidInput("year must be a number such as 2026".into()))?,
    };
    Period::new(year, as_of_day).map_err(|e| Error::InvalidInput(e.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn place(n: u8, county: &str, city: &str) -> SchoolPlace {
        SchoolPlace {
            school_id: format!("s{n}"),
            school: format!("school {n}"),
            county_id: county.to_owned(),
            county: county.to_owned(),
            city_id: city.to_owned(),
            city: city.to_owned(),
        }
    }

    /// Noon China time on a date.
    fn noon(y: i64, m: i64, d: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS - UTC_OFFSET_MS + 12 * 3_600_000
    }

    fn period(y: i64, m: i64, d: i64) -> Period {
        Period::new(y, days_from_civil(y, m, d)).unwrap()
    }

    #[test]
    fn dates_parse_and_print() {
        assert_eq!(
            parse_date("2026-11-28").map(format_date).as_deref(),
            Some("2026-11-28")
        );
        assert_eq!(parse_date("2026-02-29"), None);
        assert_eq!(
            parse_date("2024-02-29").map(format_date).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("26-1-1"), None);
        assert_eq!(parse_date("today"), None);
    }

    #[test]
    fn days_are_china_time() {
        // 2026-01-01 00:00 +08:00 is 2025-12-31 16:00 UTC.
        let p = period(2026, 12, 31);
        assert_eq!(p.start_ms(), 1_767_196_800_000);
        assert!(!p.contains(p.start_ms() - 1));
        assert_eq!(p.week_of(p.start_ms()), Some(0));
    }

    #[test]
    fn weeks_run_seven_days_from_new_year() {
        let p = period(2026, 1, 14);
        assert_eq!(p.weeks_elapsed(), 2);
        assert_eq!(p.weeks_completed(), 2);
        assert_eq!(p.week_of(noon(2026, 1, 7)), Some(0));
        assert_eq!(p.week_of(noon(2026, 1, 8)), Some(1));
        let p = period(2026, 1, 15);
        assert_eq!((p.weeks_elapsed(), p.weeks_completed()), (3, 2));
        // The whole year: 52 full weeks and a one-day week 53 (2026 is not a leap year).
        let p = period(2026, 12, 31);
        assert_eq!((p.weeks_elapsed(), p.weeks_completed()), (53, 53));
    }

    #[test]
    fn a_later_as_of_closes_the_year_and_an_earlier_one_is_refused() {
        let p = Period::new(2025, days_from_civil(2026, 3, 1)).unwrap();
        assert_eq!(p.as_of(), "2025-12-31");
        assert!(p.annual_targets_due());
        assert_eq!(
            Period::new(2026, days_from_civil(2025, 12, 31)),
            Err(PeriodError::AsOfBeforeYear {
                as_of: "2025-12-31".into(),
                year: 2026
            })
        );
        assert_eq!(Period::new(99_999, 0), Err(PeriodError::YearOutOfRange));
        assert!(period_for(Some("99999"), None, 0).is_err());
        assert!(period_for(Some("abc"), None, 0).is_err());
        let now = noon(2026, 11, 28);
        assert!(period_for(Some("2026"), Some("2026-02-30"), now).is_err());
        assert!(period_for(Some("2026"), Some("2026-11-29"), now).is_err());
        assert!(period_for(Some("2027"), None, now).is_err());
        let p = period_for(None, None, now).unwrap();
        assert_eq!((p.year, p.as_of()), (2026, "2026-11-28".to_owned()));
        let p = period_for(Some("2025"), None, now).unwrap();
        assert_eq!(p.as_of(), "2025-12-31");
    }

    #[test]
    fn a_school_counted_by_hand() {
        let p = period(2026, 1, 24); // weeks 1–3 completed, week 4 (22–28 Jan) open
        let facts = SchoolFacts {
            visits: vec![noon(2026, 1, 10), noon(2025, 12, 20)],
            sessions: vec![
                (noon(2026, 1, 2), 40, 1),
                (noon(2026, 1, 3), 45, 1),
                (noon(2026, 1, 16), 40, 1),
            ],
            lectures: vec![],
            tour_stops: vec![
                ("d/a".into(), noon(2026, 1, 5), 3),
                ("d/b".into(), noon(2026, 2, 5), 4),
            ],
            tour_reached: 2,
            pupils: 4,
            volunteer_activities: vec![(noon(2026, 1, 11), 90), (noon(2026, 3, 1), 60)],
        };
        let r = school_row(&p, place(1, "c", "x"), &facts);
        assert_eq!(r.venue_visits, 1);
        assert_eq!((r.sessions, r.session_minutes), (3, 125));
        assert_eq!(r.week_sessions, vec![2, 0, 1, 0]);
        assert_eq!(
            (r.weeks_elapsed, r.weeks_with_session, r.weeks_missed),
            (4, 2, 1)
        );
        assert_eq!((r.tour_stops, r.tour_days), (1, 3));
        assert_eq!((r.pupils_reached, r.pupils), (2, 4));
        assert!((r.tour_coverage - 0.5).abs() < 1e-9);
        assert_eq!(r.volunteer_minutes, 90);
        assert!((r.volunteer_hours - 1.5).abs() < 1e-9);
        // January: only the weekly target can be missed yet.
        assert_eq!(r.misses, vec![Miss::WeeksWithoutSession]);
        let r = school_row(&period(2026, 7, 1), place(1, "c", "x"), &facts);
        assert_eq!(
            r.misses,
            vec![
                Miss::WeeksWithoutSession,
                Miss::NoExpertLecture,
                Miss::TourCoverageIncomplete
            ]
        );
    }

    #[test]
    fn areas_sum_their_schools() {
        let p = period(2026, 12, 31);
        let full = SchoolFacts {
            visits: vec![noon(2026, 5, 1)],
            lectures: vec![noon(2026, 5, 2)],
            sessions: (0..53)
                .map(|w| (noon(2026, 1, 1) + w * 7 * DAY_MS, 30, 1))
                .collect(),
            tour_stops: vec![("d/s".into(), noon(2026, 4, 1), 2)],
            tour_reached: 1,
            pupils: 1,
            volunteer_activities: vec![],
        };
        let rows = vec![
            school_row(&p, place(1, "c1", "x"), &full),
            school_row(
                &p,
                place(2, "c1", "x"),
                &SchoolFacts {
                    pupils: 3,
                    ..SchoolFacts::default()
                },
            ),
            school_row(&p, place(3, "c2", "x"), &full),
        ];
        assert!(rows[0].misses.is_empty(), "{:?}", rows[0].misses);
        assert_eq!(rows[1].misses, Miss::ALL.to_vec());
        let counties = aggregate(&p, Level::Counties, &rows);
        assert_eq!(counties.len(), 2);
        assert_eq!(counties[0].schools, 2);
        assert_eq!(counties[0].schools_meeting.venue_visit, 1);
        assert_eq!((counties[0].pupils, counties[0].pupils_reached), (4, 1));
        assert!((counties[0].coverage_rate - 0.25).abs() < 1e-9);
        assert_eq!(counties[0].misses, Miss::ALL.to_vec());
        let cities = aggregate(&p, Level::Cities, &rows);
        assert_eq!(cities.len(), 1);
        assert_eq!(cities[0].sessions, 106);
        assert_eq!(cities[0].schools_with_misses, 1);
    }

    proptest! {
        #[test]
        fn areas_are_the_sums_of_their_schools(
            schools in proptest::collection::vec((0u8..3, 0i64..5, 0i64..30, 0i64..3, 0i64..40), 1..20),
        ) {
            let p = period(2026, 12, 31);
            let rows: Vec<SchoolRow> = schools
                .iter()
                .enumerate()
                .map(|(i, &(county, visits, sessions, lectures, pupils))| {
                    let facts = SchoolFacts {
                        visits: (0..visits).map(|k| noon(2026, 3, 1) + k * DAY_MS).collect(),
                        sessions: (0..sessions).map(|k| (noon(2026, 1, 1) + k * 7 * DAY_MS, 40, 1)).collect(),
                        lectures: (0..lectures).map(|k| noon(2026, 5, 1) + k * DAY_MS).collect(),
                        tour_stops: vec![("d/s".into(), noon(2026, 4, 1), 2)],
                        tour_reached: pupils / 2,
                        pupils,
                        volunteer_activities: vec![(noon(2026, 6, 1), pupils * 10)],
                    };
                    let c = format!("c{county}");
                    school_row(&p, place(u8::try_from(i).unwrap(), &c, if county == 2 { "y" } else { "x" }), &facts)
                })
                .collect();
            for level in [Level::Counties, Level::Cities] {
                let areas = aggregate(&p, level, &rows);
                prop_assert_eq!(areas.iter().map(|a| a.schools).sum::<i64>(), count(rows.len()));
                for a in &areas {
                    let mine: Vec<&SchoolRow> = rows
                        .iter()
                        .filter(|r| if level == Level::Counties { r.place.county_id == a.id } else { r.place.city_id == a.id })
                        .collect();
                    prop_assert_eq!(a.venue_visits, mine.iter().map(|r| r.venue_visits).sum::<i64>());
                    prop_assert_eq!(a.sessions, mine.iter().map(|r| r.sessions).sum::<i64>());
                    prop_assert_eq!(a.pupils, mine.iter().map(|r| r.pupils).sum::<i64>());
                    prop_assert_eq!(a.pupils_reached, mine.iter().map(|r| r.pupils_reached).sum::<i64>());
                    prop_assert_eq!(a.volunteer_minutes, mine.iter().map(|r| r.volunteer_minutes).sum::<i64>());
                    prop_assert_eq!(
                        a.schools_meeting.venue_visit,
                        count(mine.iter().filter(|r| r.met.venue_visit).count())
                    );
                    prop_assert_eq!(
                        a.schools_with_misses,
                        count(mine.iter().filter(|r| !r.misses.is_empty()).count())
                    );
                    prop_assert!(a.coverage_rate >= 0.0 && a.coverage_rate <= 1.0);
                }
            }
        }

        #[test]
        fn dates_round_trip(days in -100_000i64..100_000) {
            let text = format_date(days);
            prop_assert_eq!(parse_date(&text), Some(days));
        }

        #[test]
        fn weeks_add_up(year in 2000i64..=2100, offset in 0i64..400, sessions in proptest::collection::vec((0i64..366, 1i64..120), 0..80)) {
            let first = days_from_civil(year, 1, 1);
            let p = Period::new(year, first + offset).unwrap();
            prop_assert!(p.weeks_completed() <= p.weeks_elapsed());
            prop_assert!(p.weeks_elapsed() <= 53);
            let facts = SchoolFacts {
                sessions: sessions.iter().map(|&(d, m)| ((first + d) * DAY_MS - UTC_OFFSET_MS, m, 1)).collect(),
                ..SchoolFacts::default()
            };
            let r = school_row(&p, place(0, "c", "x"), &facts);
            // Every session in the window lands in exactly one week.
            let in_window = sessions.iter().filter(|&&(d, _)| first + d <= p.as_of_day).count();
            prop_assert_eq!(r.week_sessions.iter().map(|&n| n as usize).sum::<usize>(), in_window);
            prop_assert_eq!(r.sessions as usize, in_window);
            // Weeks with and without a session never exceed the weeks elapsed.
            prop_assert!(r.weeks_with_session + r.weeks_missed <= r.weeks_elapsed);
            prop_assert_eq!(r.misses.contains(&Miss::WeeksWithoutSession), r.weeks_missed > 0);
        }
    }
}
