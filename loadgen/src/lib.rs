//! `kepu-loadgen`: plays many kepu devices over real websockets speaking the plain
//! automerge-repo v1 protocol, against kepu-server or a JavaScript automerge-repo sync
//! server, and measures convergence, throughput, latency and reconnect storms.
//!
//! Devices write real kepu documents (a teacher's booking for a venue slot, venue-staff
//! check-ins under their composite scan keys) with `kepu_sync_core::edits`, so kepu-server
//! accepts every change; the JavaScript peer receives documents built the same way.

pub mod conn;
pub mod device;
pub mod scenario;
pub mod sse;
pub mod stats;
pub mod world;

use std::sync::Arc;

use serde_json::{Value, json};

pub use scenario::Scale;
pub use world::{Target, TargetKind};

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Offline check-ins, then every device reconnects at once.
    EndOfDay,
    /// Rising check-in rates with devices online; latency to an observer.
    LiveDay,
    /// Devices in sync all reconnect within a second.
    ReconnectStorm,
}

impl Scenario {
    /// The name used in flags and JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::EndOfDay => "end-of-day",
            Self::LiveDay => "live-day",
            Self::ReconnectStorm => "reconnect-storm",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where.
    pub target: Target,
    /// Which scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Sizes.
    pub scale: Scale,
    /// The server's pid, to read its memory.
    pub server_pid: Option<u32>,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// Runs the scenarios one after the other; returns the figures as JSON
/// (`{"target", "scale", "scenarios": {name: figures}, "server_memory"}`). A scenario
/// that fails (e.g. the server drops a connection while it is prepared) is reported as
/// `{"error": …}` and the next one runs; a scenario that runs but does not converge says
/// so in its figures.
///
/// # Errors
/// Provisioning failed, or the only scenario asked for failed.
pub async fn run(run: &Run) -> anyhow::Result<Value> {
    let ctx = scenario::Ctx {
        target: run.target.clone(),
        prov: world::Provisioner::new(&run.target).await?,
        counters: Arc::new(conn::Counters::default()),
        progress: run.progress,
    };
    let mut results = serde_json::Map::new();
    for s in &run.scenarios {
        let figures = match s {
            Scenario::EndOfDay => scenario::end_of_day(&ctx, &run.scale, run.server_pid).await,
            Scenario::LiveDay => scenario::live_day(&ctx, &run.scale, run.server_pid).await,
            Scenario::ReconnectStorm => {
                scenario::reconnect_storm(&ctx, &run.scale, run.server_pid).await
            }
        }
        .map_err(|e| e.context(format!("scenario {}", s.name())));
        match figures {
            Ok(f) => {
                results.insert(s.name().to_owned(), f);
            }
            // With one scenario there is nothing else to report: fail the run.
            Err(e) if run.scenarios.len() == 1 => return Err(e),
            // Otherwise the others still run; the failure is part of the figures.
            Err(e) => {
                eprintln!("kepu-loadgen: {e:#}");
                results.insert(s.name().to_owned(), json!({ "error": format!("{e:#}") }));
            }
        }
    }
    Ok(json!({
        "target": run.target.kind,
        "scale": run.scale,
        "scenarios": results,
        "server_memory": run.server_pid.and_then(stats::server_memory)
            .map(|(rss, hwm)| json!({ "rss_kb": rss, "hwm_kb": hwm })),
    }))
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

/// The figures of [`run`] as a plain-text table.
#[must_use]
pub fn table(figures: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let target = figures["target"].as_str().unwrap_or("?");
    let s = &figures["scenarios"];
    for (name, v) in s.as_object().into_iter().flatten() {
        if let Some(e) = v.get("error") {
            let _ = writeln!(
                out,
                "{name} ({target}): failed: {}",
                e.as_str().unwrap_or("?")
            );
        }
    }
    if let Some(e) = s.get("end-of-day").filter(|v| v.get("error").is_none()) {
        let _ = writeln!(out, "end-of-day ({target})");
        let _ = writeln!(
            out,
            "  devices {}  check-ins {}  converged {} ({} in sync)  time {} s  {} check-ins/s",
            e["devices"],
            e["check_ins"],
            e["converged"],
            e["in_sync_at_end"],
            num(&e["converge_s"], 2),
            num(&e["check_ins_per_s"], 0)
        );
        let _ = writeln!(
            out,
            "  bytes sent {}  received {}  failures {}  reconnects {}  records {}",
            e["bytes_sent"], e["bytes_received"], e["failures"], e["reconnects"], e["records"]
        );
    }
    if let Some(l) = s.get("live-day").filter(|v| v.get("error").is_none()) {
        let _ = writeln!(out, "live-day ({target})");
        let _ = writeln!(
            out,
            "  {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "rate/s", "sent", "obs p50", "obs p99", "sse p50", "sse p99"
        );
        for st in l["steps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
                st["rate_per_s"].to_string(),
                st["sent"].to_string(),
                num(&st["observer"]["p50_ms"], 1),
                num(&st["observer"]["p99_ms"], 1),
                num(&st["dashboard_sse"]["p50_ms"], 1),
                num(&st["dashboard_sse"]["p99_ms"], 1)
            );
        }
        let _ = writeln!(
            out,
            "  unobserved {}  failures {}  records {}",
            l["unobserved"], l["failures"], l["records"]
        );
    }
    if let Some(r) = s
        .get("reconnect-storm")
        .filter(|v| v.get("error").is_none())
    {
        let _ = writeln!(out, "reconnect-storm ({target})");
        let _ = writeln!(
            out,
            "  devices {}  all back in {} s  failures {}  p50 {} ms  p99 {} ms  max {} ms",
            r["devices"],
            num(&r["all_back_s"], 2),
            r["failures"],
            num(&r["per_device"]["p50_ms"], 1),
            num(&r["per_device"]["p99_ms"], 1),
            num(&r["per_device"]["max_ms"], 1)
        );
    }
    if let Some(m) = figures["server_memory"].as_object() {
        let _ = writeln!(
            out,
            "server memory: VmRSS {} KiB, peak VmHWM {} KiB",
            m["rss_kb"], m["hwm_kb"]
        );
    }
    out
}
