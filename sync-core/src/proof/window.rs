//! Time windows and UTC day numbers. All times are unix milliseconds (`now_ms: i64`).

/// Length of one gate-code window: a gate shows a new code every 30 seconds.
pub const WINDOW_MS: i64 = 30_000;

/// Length of one UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Windows per UTC day (86 400 000 / 30 000). Day `d` holds windows
/// `d * 2880 ..= d * 2880 + 2879`, so a window's day is `window / 2880`.
pub const WINDOWS_PER_DAY: u32 = 2_880;

/// Clock-skew tolerance, in windows: a gate code is accepted if its window is the
/// verifier's current window or at most this many windows before or after it (±1
/// window: 90 seconds of verifier time in all, so clocks may disagree by up to 30
/// seconds, and with both clocks right a replayed code stops working at most 30 seconds
/// after the gate stops showing it). The server applies the same tolerance to a
/// check-in's claimed scan time.
pub const WINDOW_TOLERANCE: i64 = 1;

/// The window number of an instant: `now_ms / 30 000`, rounded down. `None` before
/// 1970 or after the year 10 000-odd, which no code can carry.
#[must_use]
pub fn window_at(now_ms: i64) -> Option<u32> {
    u32::try_from(now_ms.div_euclid(WINDOW_MS)).ok()
}

/// The UTC day number of an instant (days since 1970-01-01, UTC). A UTC day starts at
/// 08:00 Beijing time, before venues open, so one certificate covers a visiting day.
/// `None` before 1970.
#[must_use]
pub fn utc_day(now_ms: i64) -> Option<u32> {
    u32::try_from(now_ms.div_euclid(DAY_MS)).ok()
}

/// The UTC day a window lies in.
#[must_use]
pub const fn day_of_window(window: u32) -> u32 {
    window / WINDOWS_PER_DAY
}

/// The first millisecond of a window.
#[must_use]
pub const fn window_start_ms(window: u32) -> i64 {
    // Widening u32 -> i64 is lossless; the product stays far below i64::MAX.
    window as i64 * WINDOW_MS
}

/// Whether `window` is within [`WINDOW_TOLERANCE`] of the window containing `now_ms`.
pub(crate) fn within_tolerance(window: u32, now_ms: i64) -> bool {
    let current = now_ms.div_euclid(WINDOW_MS);
    (i64::from(window) - current).abs() <= WINDOW_TOLERANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_days_exactly() {
        assert_eq!(i64::from(WINDOWS_PER_DAY) * WINDOW_MS, DAY_MS);
        let day_start = 20_000 * DAY_MS;
        let first = window_at(day_start).unwrap();
        let last = window_at(day_start + DAY_MS - 1).unwrap();
        assert_eq!(day_of_window(first), 20_000);
        assert_eq!(day_of_window(last), 20_000);
        assert_eq!(day_of_window(last + 1), 20_001);
        assert_eq!(window_start_ms(first), day_start);
    }

    #[test]
    fn tolerance_is_one_window_either_side() {
        let now = 1_757_000_012_345;
        let w = window_at(now).unwrap();
        assert!(within_tolerance(w, now));
        assert!(within_tolerance(w - 1, now));
        assert!(within_tolerance(w + 1, now));
        assert!(!within_tolerance(w - 2, now));
        assert!(!within_tolerance(w + 2, now));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        for t in [i64::MIN, -1, 0, i64::MAX] {
            let _ = window_at(t);
            let _ = utc_day(t);
            let _ = within_tolerance(0, t);
            let _ = within_tolerance(u32::MAX, t);
        }
        assert_eq!(window_at(-1), None);
        assert_eq!(utc_day(-1), None);
    }
}
