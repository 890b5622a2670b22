//! The venue day: a calendar day in China Standard Time.

use kepu_sync_core::calendar::{self, DAY_MS};

/// Venue days are counted in China Standard Time (UTC+8, no daylight saving).
pub const VENUE_UTC_OFFSET_MS: i64 = calendar::CHINA_UTC_OFFSET_MS;

/// A calendar day at the venue (China Standard Time), as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(i64);

impl Day {
    /// The venue day that contains the instant `ms` (unix milliseconds).
    #[must_use]
    pub fn containing(ms: i64) -> Self {
        Self(calendar::china_day(ms))
    }

    /// Parses `YYYY-MM-DD` (a real calendar date between the years 2000 and 2200).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let day = Self(calendar::parse_date(text)?);
        (2000..=2200).contains(&day.civil().0).then_some(day)
    }

    /// The day's first and one-past-last instant, unix milliseconds.
    #[must_use]
    pub fn bounds(self) -> (i64, i64) {
        let start = calendar::china_day_start(self.0);
        (start, start + DAY_MS)
    }

    fn civil(self) -> (i64, i64, i64) {
        calendar::civil_from_days(self.0)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_counted_in_china_standard_time() {
        let d = Day::parse("2026-11-28").expect("a date");
        // 2026-11-28 00:00 +08:00 = 2026-11-27 16:00 UTC.
        assert_eq!(d.bounds(), (1_795_795_200_000, 1_795_881_600_000));
        assert_eq!(d.to_string(), "2026-11-28");
        assert_eq!(Day::containing(1_795_795_200_000), d);
        assert_eq!(Day::containing(1_795_795_199_999).to_string(), "2026-11-27");
        assert_eq!(
            Day::parse("2028-02-29").map(|d| d.to_string()).as_deref(),
            Some("2028-02-29")
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "",
            "2026-11-28T00",
            "+026-11-28",
            "1999-12-31",
            "２０２６-11-28",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }
}
