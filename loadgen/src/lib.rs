//! `kepu-loadgen`: plays many kepu devices over real websockets speaking the plain
//! automerge-repo v1 protocol, against kepu-server or a JavaScript automerge-repo sync
//! server, and measures convergence, throughput, latency and reconnect storms.
//!
//! Devices write real kepu documents (a teacher's booking for a venue slot, venue-staff
//! check-ins under their composite scan keys) with `kepu_sync_core::edits`, so kepu-server
//! accepts every change; the JavaScript peer receives documents built the same way.

pub mod chaos;
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
    /// An end-of-day while the server is killed (SIGKILL) and restarted again and again
    /// (runs alone; starts the server itself, see `--server-bin`).
    Chaos,
}

impl Scenario {
    /// The name used in flags and JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::EndOfDay => "end-of-day",
            Self::LiveDay => "live-day",
            Self::ReconnectStorm => "reconnect-storm",
            Self::Chaos => "chaos",
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
            Scenario::Chaos => Err(anyhow::anyhow!(
                "chaos starts its own server: run it alone, with --server-bin"
            )),
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

/// Runs the chaos scenario (see [`chaos`]) against a server it starts from `spec`; returns
/// the figures in the shape of [`run`]'s (`{"target", "scale", "scenarios": {"chaos": …}}`).
///
/// # Errors
/// The server does not start or provisioning failed.
pub async fn run_chaos(
    spec: &chaos::ServerSpec,
    scale: &Scale,
    progress: bool,
) -> anyhow::Result<Value> {
    let figures = chaos::chaos(spec, scale, progress)
        .await
        .map_err(|e| e.context("scenario chaos"))?;
    Ok(json!({
        "target": TargetKind::Kepu,
        "scale": scale,
        "scenarios": { "chaos": figures },
        "server_memory": Value::Null,
    }))
}

/// Why the run in `figures` failed, one line each; empty when every scenario kept its
/// promises: a scenario that could not run, end-of-day devices out of sync at the
/// deadline or failed, records that do not hold every check-in once, and for chaos any
/// acknowledged check-in lost, check-in stored twice, device out of sync, reconnect the
/// kills did not cause or restart that failed.
#[must_use]
pub fn failures(figures: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let s = &figures["scenarios"];
    let count = |v: &Value, key: &str| v[key].as_u64().unwrap_or(0);
    for (name, v) in s.as_object().into_iter().flatten() {
        if let Some(e) = v.get("error") {
            out.push(format!("{name}: {}", e.as_str().unwrap_or("?")));
            continue;
        }
        if count(v, "out_of_sync") > 0 {
            out.push(format!(
                "{name}: {} devices out of sync after {} s",
                v["out_of_sync"], v["timeout_s"]
            ));
        }
        if count(v, "failures") > 0 {
            out.push(format!(
                "{name}: {} devices failed, the first: {}",
                v["failures"],
                v["first_failure"].as_str().unwrap_or("?")
            ));
        }
        // kepu-server drops no connection of a healthy device (the JS peer's keepalive
        // does, on a busy machine; that is its figure, not a failure).
        if figures["target"] == "kepu" && count(v, "reconnects") > 0 {
            out.push(format!(
                "{name}: {} reconnects after dropped connections ({})",
                v["reconnects"], v["drop_reasons"]
            ));
        }
        if v["records"]["every_scan_once"] == false {
            out.push(format!(
                "{name}: the records hold {} of {} check-ins",
                v["records"]["stored_scans"], v["records"]["expected_scans"]
            ));
        }
        if name == "chaos" {
            for (key, what) in [
                ("acked_lost", "acknowledged check-ins lost"),
                ("stored_twice", "check-ins stored twice"),
            ] {
                if count(v, key) > 0 {
                    out.push(format!("chaos: {} {what}", v[key]));
                }
            }
            if count(&v["records"], "missing_at_end") > 0 {
                out.push(format!(
                    "chaos: {} check-ins missing from the records at the end",
                    v["records"]["missing_at_end"]
                ));
            }
            if let Some(e) = v["restart_failed"].as_str() {
                out.push(format!(
                    "chaos: a restart failed after {} of {} kills: {e}",
                    v["kills_survived"], v["kills"]
                ));
            }
        }
    }
    out
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
            "  devices {}  check-ins {}  converged {} ({} in sync)  time {} s  {} check-ins/s  server CPU {} s ({} µs per check-in)",
            e["devices"],
            e["check_ins"],
            e["converged"],
            e["in_sync_at_end"],
            num(&e["converge_s"], 2),
            num(&e["check_ins_per_s"], 0),
            num(&e["server_cpu_s"], 2),
            num(&e["server_cpu_us_per_check_in"], 0)
        );
        let _ = writeln!(
            out,
            "  devices' CPU {} s  bytes sent {}  received {}  failures {}  reconnects {}  out of sync {}  records {}",
            num(&e["devices_cpu_s"], 2),
            e["bytes_sent"],
            e["bytes_received"],
            e["failures"],
            e["reconnects"],
            e["out_of_sync"],
            e["records"]
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
        if !l["server_cpu_s"].is_null() {
            let _ = writeln!(
                out,
                "  server CPU {} s ({} µs per check-in, from the first check-in until the observers saw the last)",
                num(&l["server_cpu_s"], 2),
                num(&l["server_cpu_us_per_check_in"], 0)
            );
        }
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
        if !r["server_kib_per_connection"].is_null() {
            let _ = writeln!(
                out,
                "  server VmRSS {} KiB before, {} KiB with every device connected and idle: {} KiB per connection",
                r["server_memory_before"]["rss_kb"],
                r["server_memory"]["rss_kb"],
                num(&r["server_kib_per_connection"], 1)
            );
        }
    }
    if let Some(c) = s.get("chaos").filter(|v| v.get("error").is_none()) {
        let _ = writeln!(
            out,
            "chaos ({target}, {})",
            c["database"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            out,
            "  devices {}  check-ins {} ({} offline)  kills survived {} of {}  restart p50 {} ms  max {} ms",
            c["devices"],
            c["check_ins"],
            c["check_ins_offline"],
            c["kills_survived"],
            c["kills"],
            num(&c["restart_ms"]["p50_ms"], 0),
            num(&c["restart_ms"]["max_ms"], 0)
        );
        let _ = writeln!(
            out,
            "  acknowledged check-ins lost {}  stored twice {}  out of sync {}  reconnects {} (after kills {})",
            c["acked_lost"],
            c["stored_twice"],
            c["out_of_sync"],
            c["reconnects"],
            c["kill_reconnects"]
        );
        let _ = writeln!(
            out,
            "  in sync {} s after the last restart  missing from the records {}  failures {}  run {} s",
            num(&c["converge_after_last_restart_s"], 2),
            c["records"]["missing_at_end"],
            c["failures"],
            num(&c["run_s"], 1)
        );
    }
    for (name, v) in s.as_object().into_iter().flatten() {
        if let Some(reasons) = v["drop_reasons"].as_object().filter(|r| !r.is_empty()) {
            let _ = writeln!(out, "{name}: connections dropped (other than by a kill):");
            for (why, n) in reasons {
                let _ = writeln!(out, "  {n} × {why}");
            }
        }
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
