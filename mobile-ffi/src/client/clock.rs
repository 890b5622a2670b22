//! The server's clock as this device learns it: the `Date` header of each `/sync`
//! upgrade gives the server's time (to the second), and the offset to the device's clock
//! is kept (in memory and in the store) and added to every time the device writes or
//! checks (scan times, gate code windows). A phone whose clock is minutes off then still
//! records true scan times and accepts the gate's codes once it has synced.

use kepu_sync_core::calendar::{civil_from_days, days_from_civil};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const DAY_MS: i64 = 86_400_000;

/// Parses an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) into unix ms.
/// Anything else (the obsolete formats, a malformed or absurd value) is `None`.
#[must_use]
pub fn parse_http_date(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() != 29 || !text.is_ascii() || !text.ends_with(" GMT") {
        return None;
    }
    let (_, rest) = text.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)?;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if !(2000..=2200).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let month = i64::try_from(month).ok()? + 1;
    let days = days_from_civil(year, month, day);
    Some(days * DAY_MS + ((h * 60 + m) * 60 + s) * 1000)
}

/// Formats unix ms as an HTTP date (IMF-fixdate).
#[must_use]
pub fn format_http_date(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(DAY_MS);
    let secs = unix_ms.rem_euclid(DAY_MS) / 1000;
    let (y, m, d) = civil_from_days(days);
    let weekday = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(m - 1).unwrap_or(0).min(11)];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The offset (ms) to add to this device's clock, from the server's `Date` (whole
/// seconds) read in an answer that took from `sent` to `received` (device ms). `None`
/// when the header is unusable or the offset is absurd (over a year).
#[must_use]
pub fn offset_from(date: &str, sent: i64, received: i64) -> Option<i64> {
    let server = parse_http_date(date)? + 500;
    let local = sent + (received - sent) / 2;
    let offset = server - local;
    (offset.abs() <= 366 * DAY_MS).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip_and_bad_ones_are_refused() {
        // RFC 9110's example.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            None,
            "before 2000"
        );
        let t = 1_764_547_200_000 + 12_345_000; // 2025-12-01 03:25:45 UTC
        let text = format_http_date(t);
        assert_eq!(text, "Mon, 01 Dec 2025 03:25:45 GMT");
        assert_eq!(parse_http_date(&text), Some(t));
        for bad in [
            "",
            "yesterday",
            "Mon, 01 Dec 2025 03:25:45 UTC",
            "Monday, 01-Dec-25 03:25:45 GMT",
            "Mon, 41 Dec 2025 03:25:45 GMT",
            "Mon, 01 Foo 2025 03:25:45 GMT",
            "Mon, 01 Dec 2025 25:25:45 GMT",
            "Mon, 01 Dec 2025 03:2x:45 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_offset_is_the_servers_second_against_the_middle_of_the_round_trip() {
        let server = 1_764_547_200_000;
        let date = format_http_date(server);
        // The device is ten minutes behind; the answer took 200 ms.
        let sent = server - 600_000 - 100;
        let offset = offset_from(&date, sent, sent + 200).unwrap();
        assert!((offset - 600_000).abs() <= 1_000, "{offset}");
        assert_eq!(offset_from("garbage", sent, sent), None);
        let far = format_http_date(server + 400 * DAY_MS);
        assert_eq!(offset_from(&far, sent, sent), None);
    }
}
