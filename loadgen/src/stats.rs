//! Percentiles and the server's memory.

use std::time::Duration;

use serde_json::{Value, json};

/// Milliseconds, as a float.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Count and percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// How many.
    pub count: usize,
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (nearest-rank percentiles).
    #[must_use]
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let i = (p * samples.len() as f64).ceil() as usize;
            ms(samples[i.clamp(1, samples.len()) - 1])
        };
        Self {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples.last().map_or(0.0, |d| ms(*d)),
        }
    }

    /// As JSON (`null` percentiles when there are no samples).
    #[must_use]
    pub fn json(&self) -> Value {
        if self.count == 0 {
            return json!({ "count": 0, "p50_ms": null, "p99_ms": null, "max_ms": null });
        }
        json!({ "count": self.count, "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max })
    }
}

/// (`VmRSS`, `VmHWM`) of process `pid` in KiB, from `/proc/<pid>/status`.
#[must_use]
pub fn server_memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user and system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (utime and stime, in USER_HZ ticks: 100 per second on Linux).
#[must_use]
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields start after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Summary::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.count, 100);
        assert!((s.p50 - 50.0).abs() < 1e-9);
        assert!((s.p99 - 99.0).abs() < 1e-9);
        assert!((s.max - 100.0).abs() < 1e-9);
        assert_eq!(Summary::of(Vec::new()).json()["p50_ms"], Value::Null);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).expect("this process's CPU time");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(pid).expect("this process's CPU time");
        assert!(after >= before + 0.1, "{before} -> {after}");
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let (rss, hwm) = server_memory(std::process::id()).expect("own /proc status");
        assert!(rss > 0 && hwm >= rss);
        assert_eq!(server_memory(u32::MAX), None);
    }
}
