//! Wall-clock time as integer unix milliseconds, the unit of every stored time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
