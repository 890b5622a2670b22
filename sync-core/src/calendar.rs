//! The programme's calendar: China Standard Time (UTC+8, no daylight saving), proleptic
//! Gregorian dates as day numbers (days since 1970-01-01), school years and the programme's
//! weeks (7-day weeks counted from 1 January). One place for the server's records, reports
//! and dashboard and for the phone.

/// China Standard Time, UTC+8.
pub const CHINA_UTC_OFFSET_MS: i64 = 8 * 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (no range checks).
#[must_use]
pub const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Years start in March here, so that the leap day is the last day of a year.
    let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number; inverse of [`days_from_civil`].
#[must_use]
pub const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// Parses `YYYY-MM-DD` into a day number; `None` for any other shape or an impossible
/// date (31 February).
#[must_use]
pub fn parse_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `YYYY-MM-DD` of a day number.
#[must_use]
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The China-time day number of a unix-millisecond instant.
#[must_use]
pub const fn china_day(unix_ms: i64) -> i64 {
    (unix_ms + CHINA_UTC_OFFSET_MS).div_euclid(DAY_MS)
}

/// The first instant (unix ms) of a China-time day.
#[must_use]
pub const fn china_day_start(day: i64) -> i64 {
    day * DAY_MS - CHINA_UTC_OFFSET_MS
}

/// The calendar year of an instant in China time.
#[must_use]
pub const fn china_year(unix_ms: i64) -> i64 {
    civil_from_days(china_day(unix_ms)).0
}

/// The programme week of an instant: 7-day weeks counted from 1 January in China time,
/// 0-based (week 0 is 1–7 January), with its year.
#[must_use]
pub const fn china_week(unix_ms: i64) -> (i64, i64) {
    let day = china_day(unix_ms);
    let year = civil_from_days(day).0;
    (year, (day - days_from_civil(year, 1, 1)) / 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1971, 1, 1), 365);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(format_date(19_782), "2024-02-29");
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-1",
            "20260101",
            "",
            "２０２６-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_year_and_week_turn_at_midnight_beijing_time() {
        // 2026-12-31T16:00:00Z is 2027-01-01 00:00 in Beijing.
        let new_year = 1_798_732_800_000;
        assert_eq!(china_day_start(china_day(new_year)), new_year);
        assert_eq!(china_year(new_year - 1), 2026);
        assert_eq!(china_year(new_year), 2027);
        assert_eq!(china_week(new_year), (2027, 0));
        assert_eq!(china_week(new_year + 6 * DAY_MS), (2027, 0));
        assert_eq!(china_week(new_year + 7 * DAY_MS), (2027, 1));
        // 31 December 2026 is day 364 of 2026: week 52, the short 53rd week.
        assert_eq!(china_week(new_year - 1), (2026, 52));
        assert_eq!(china_year(-CHINA_UTC_OFFSET_MS - 1), 1969);
    }

    proptest! {
        #[test]
        fn dates_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            if (1000..=9999).contains(&y) {
                prop_assert_eq!(parse_date(&format_date(days)), Some(days));
            }
        }
    }
}
