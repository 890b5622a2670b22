//! `chaos`: an end-of-day while the real `kepu-server` process is killed with SIGKILL at
//! random moments and restarted on the same database.
//!
//! The run starts the server binary itself (a free local port, the data directory and
//! database it is given), enrolls a bureau administrator with `kepu-server admin
//! create-user`, builds the venues of an end-of-day and connects every device with its
//! offline check-ins. While the connected devices keep writing check-ins, the server is
//! killed `chaos_kills` times, each after a random time up. After each kill:
//!
//! 1. the run waits until every device has noticed (no socket open), then takes the set
//!    of check-ins the devices saw acknowledged (the heads the server sent them cover
//!    the change);
//! 2. restarts the server on the same data after a random extra pause, and once it
//!    answers `/readyz` reads every booking's records (`/api/bookings/{doc}/attendance`):
//!    an acknowledged check-in missing there is *lost*, a scan id listed twice is
//!    *stored twice*;
//! 3. lets the devices back in: each reconnects with its persisted sync state.
//!
//! After the last restart the writing stops and the devices have `timeout_secs` to
//! converge; the records are read once more (every check-in made, once). A connection that
//! drops while the server is up is counted in `reconnects` (goal 0); those the kills cause
//! are counted apart.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use kepu_sync_core::doc_id::DocumentId;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::conn::Counters;
use crate::scenario::{
    Chaos, Cmd, Ctx, Ledger, Life, Scale, Seat, board, check_in, converge, online, prepare_day,
    read_slot,
};
use crate::world::{Provisioner, Target, TargetKind};

/// The server a chaos run starts, kills and restarts.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `kepu-server` binary.
    pub bin: PathBuf,
    /// Its `--data-dir` (the SQLite file `kepu.db` lives there unless `database_url` is set).
    pub data_dir: PathBuf,
    /// Its `--database-url` (PostgreSQL: an empty database, or one the run may add to).
    pub database_url: Option<String>,
    /// Where the server's stderr goes (appended; every start), `None` for nowhere.
    pub log: Option<PathBuf>,
}

impl ServerSpec {
    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn database(&self) -> &'static str {
        match &self.database_url {
            Some(u) if u.starts_with("postgres") => "postgres",
            _ => "sqlite",
        }
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for var in [
            "DATABASE_URL",
            "KEPU_DATA_DIR",
            "KEPU_BIND",
            "KEPU_DEMO",
            "KEPU_SERVER_SEED",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// A bureau administrator's one-time enrollment code, from `kepu-server admin
    /// create-user --role bureau-admin`.
    async fn admin_code(&self) -> anyhow::Result<String> {
        let out = self
            .command()
            .args(["admin", "create-user", "--role", "bureau-admin"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "kepu-server admin create-user failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("enrollment code "))
            .map(|c| c.trim().to_owned())
            .context("kepu-server admin create-user printed no enrollment code")
    }
}

/// A running server process.
struct Server {
    child: tokio::process::Child,
}

/// How long a (re)start may take until `/readyz` answers.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Server {
    /// Starts the binary on `port` and waits until `/readyz` answers 200.
    async fn start(spec: &ServerSpec, port: u16, http: &reqwest::Client) -> anyhow::Result<Self> {
        let stderr = match &spec.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("server log {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let child = spec
            .command()
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.bin.display()))?;
        let mut server = Self { child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("kepu-server exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("kepu-server was not ready within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reaps the process.
    async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("SIGKILL")?;
        self.child.wait().await.context("reaping the server")?;
        Ok(())
    }

    /// SIGTERM, then waits for the graceful stop (SIGKILL after 30 s).
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("kepu-server did not stop cleanly: {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.kill9().await?;
                bail!("kepu-server did not stop within 30 s of SIGTERM")
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port())
}

/// Every scan id in the records of `bookings`, with how often each is listed.
async fn recorded(
    prov: &Provisioner,
    bookings: &[DocumentId],
) -> anyhow::Result<HashMap<String, usize>> {
    let mut seen = HashMap::new();
    for doc in bookings {
        let v = prov
            .get(&format!("/api/bookings/{doc}/attendance"))
            .await
            .with_context(|| format!("reading the records of booking {doc}"))?;
        for scan in v["scans"].as_array().into_iter().flatten() {
            let id = scan["scan_id"]
                .as_str()
                .ok_or_else(|| anyhow!("a scan without scan_id in the records of {doc}"))?;
            *seen.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    Ok(seen)
}

fn twice(seen: &HashMap<String, usize>) -> usize {
    seen.values().map(|n| n.saturating_sub(1)).sum()
}

fn random_ms((lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(if hi > lo {
        rand::random_range(lo..=hi)
    } else {
        lo
    })
}

/// One kill, for the figures.
#[derive(Debug, serde::Serialize)]
struct Kill {
    /// Seconds since the devices first connected.
    at_s: f64,
    /// How long the server had been up (ready) when it was killed, ms.
    up_ms: u64,
    /// Devices connecting or connected at the kill.
    sockets: usize,
    /// Check-ins acknowledged so far (all kills).
    acked: usize,
    /// Of those, missing from the records after the restart.
    lost: usize,
    /// From the kill to `/readyz` answering again, ms.
    restart_ms: u64,
}

/// Runs the chaos scenario against the server `spec` describes. Returns the figures:
/// `kills`, `kills_survived`, `acked_lost`, `stored_twice`, `out_of_sync`, `reconnects`
/// (beyond those the kills caused), `kill_reconnects`, `missing_at_end` and the records'
/// totals, with one row per kill.
///
/// # Errors
/// The server does not start the first time, or provisioning fails. A restart that fails
/// ends the run with the figures so far (`restart_failed`).
#[allow(clippy::too_many_lines)]
pub async fn chaos(spec: &ServerSpec, scale: &Scale, progress: bool) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let port = free_port()?;
    let code = spec.admin_code().await?;
    let mut server = Server::start(spec, port, &http).await?;
    let target = Target {
        kind: TargetKind::Kepu,
        url: format!("ws://127.0.0.1:{port}/sync"),
        admin_code: Some(code),
        nodes: Vec::new(),
    };
    let ctx = Ctx {
        prov: Provisioner::new(&target).await?,
        target,
        counters: Arc::new(Counters::default()),
        progress,
    };
    let day = prepare_day(&ctx, scale, "chaos").await?;
    let n = day.devices.len();
    let booking_ids: Vec<DocumentId> = day.bookings.iter().map(|(b, _)| *b).collect();
    let ledger = Arc::new(Ledger::default());
    if let Ok(mut made) = ledger.made.lock() {
        made.extend(day.pending.iter().flatten().map(|(_, _, id)| id.clone()));
    }
    let offline = ledger.made.lock().map_or(0, |m| m.len());

    // Every device connects at once, as at the end of a day.
    let (life_tx, life_rx) = watch::channel(Life {
        incarnation: 0,
        up: true,
    });
    let sockets = Arc::new(AtomicUsize::new(0));
    let b = board(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut venue_of = Vec::with_capacity(n);
    for (v, g) in day.groups.iter().enumerate() {
        venue_of.extend(g.clone().map(|_| v));
    }
    for (i, (d, pending)) in day.devices.into_iter().zip(day.pending).enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let seat = Seat {
            target: ctx.target.clone(),
            counters: Arc::clone(&ctx.counters),
            board: Arc::clone(&b),
            index: i,
            latency: None,
            chaos: Some(Chaos {
                life: life_rx.clone(),
                sockets: Arc::clone(&sockets),
                ledger: Arc::clone(&ledger),
            }),
        };
        tasks.push(tokio::spawn(online(seat, d, rx, stop_rx.clone(), pending)));
    }

    // Connected devices keep scanning while the kills run.
    let (write_stop_tx, mut write_stop_rx) = watch::channel(false);
    let writer = {
        let senders = senders.clone();
        let rosters: Vec<_> = day.bookings.clone();
        let rate = f64::from(scale.chaos_rate.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = write_stop_rx.changed() => break,
                }
                let i = k % senders.len();
                let (booking, roster) = &rosters[venue_of[i]];
                let pupil = roster[(k / senders.len() * 7 + i) % roster.len()];
                let _ = senders[i].send(Cmd::Edit {
                    doc: *booking,
                    edit: check_in(pupil),
                    step: 0,
                });
                k += 1;
            }
        })
    };

    let bar = ctx.bar(scale.chaos_kills, "chaos: kills");
    let mut kills: Vec<Kill> = Vec::new();
    let mut lost: HashSet<String> = HashSet::new();
    let mut twice_max = 0usize;
    let mut restart_failed: Option<String> = None;
    let mut up_since = Instant::now();
    for incarnation in 0..scale.chaos_kills as u64 {
        tokio::time::sleep(random_ms(scale.chaos_up_ms)).await;
        // Down first, then the kill: a connection that drops from now on is the kill's.
        let _ = life_tx.send(Life {
            incarnation,
            up: false,
        });
        let at = started.elapsed();
        let up_ms = u64::try_from(up_since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let open = sockets.load(Ordering::SeqCst);
        let killed = Instant::now();
        server.kill9().await?;
        // Every device has seen its connection go before the acknowledged set is taken.
        let quiet = Instant::now() + Duration::from_secs(30);
        while sockets.load(Ordering::SeqCst) > 0 && Instant::now() < quiet {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let acked: HashSet<String> = ledger.acked.lock().map(|a| a.clone()).unwrap_or_default();
        tokio::time::sleep(random_ms((0, scale.chaos_down_ms))).await;
        server = match Server::start(spec, port, &http).await {
            Ok(s) => s,
            Err(e) => {
                restart_failed = Some(format!("{e:#}"));
                break;
            }
        };
        let restart_ms = u64::try_from(killed.elapsed().as_millis()).unwrap_or(u64::MAX);
        let seen = recorded(&ctx.prov, &booking_ids).await?;
        let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
        twice_max = twice_max.max(twice(&seen));
        kills.push(Kill {
            at_s: at.as_secs_f64(),
            up_ms,
            sockets: open,
            acked: acked.len(),
            lost: missing.len(),
            restart_ms,
        });
        lost.extend(missing.into_iter().cloned());
        up_since = Instant::now();
        let _ = life_tx.send(Life {
            incarnation: incarnation + 1,
            up: true,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = write_stop_tx.send(true);
    let _ = writer.await;

    // The last restart: every device must come back in sync, without help.
    let settle = Instant::now();
    let (converged, in_sync_at_end) = if restart_failed.is_none() {
        converge(
            &ctx,
            &b,
            &day.groups,
            settle,
            settle + Duration::from_secs(scale.timeout_secs),
            "chaos",
        )
        .await
    } else {
        (None, 0)
    };
    let _ = stop_tx.send(true);
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let failures: Vec<String> = (0..n).filter_map(|i| read_slot(&b, i).failed).collect();
    let made: HashSet<String> = ledger.made.lock().map(|m| m.clone()).unwrap_or_default();
    let acked_total = ledger.acked.lock().map_or(0, |a| a.len());

    // The records catch up with the documents shortly after the sync.
    let mut end = HashMap::new();
    if restart_failed.is_none() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            end = recorded(&ctx.prov, &booking_ids).await?;
            if made.iter().all(|id| end.contains_key(id)) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        twice_max = twice_max.max(twice(&end));
        if let Err(e) = server.stop().await {
            eprintln!("kepu-loadgen: {e:#}");
        }
    }
    let missing_at_end = made.iter().filter(|id| !end.contains_key(*id)).count();
    let unknown = end.keys().filter(|id| !made.contains(*id)).count();
    let relaxed = Ordering::Relaxed;
    Ok(json!({
        "database": spec.database(),
        "venues": scale.venues,
        "devices": n,
        "check_ins_offline": offline,
        "check_ins": made.len(),
        "kills": scale.chaos_kills,
        "kills_survived": kills.len(),
        "restart_failed": restart_failed,
        "acked": acked_total,
        "acked_lost": lost.len(),
        "stored_twice": twice_max,
        "converged": converged.is_some(),
        "converge_after_last_restart_s": converged.map(|d| d.as_secs_f64()),
        "in_sync_at_end": in_sync_at_end,
        "out_of_sync": n - in_sync_at_end,
        "timeout_s": scale.timeout_secs,
        "reconnects": ctx.counters.reconnects.load(relaxed),
        "kill_reconnects": ctx.counters.kill_reconnects.load(relaxed),
        "drop_reasons": ctx.counters.take_drop_reasons(),
        "failures": failures.len(),
        "first_failure": failures.first(),
        "records": {
            "stored_scans": end.values().sum::<usize>(),
            "missing_at_end": missing_at_end,
            "not_made_by_the_run": unknown,
        },
        "run_s": started.elapsed().as_secs_f64(),
        "restart_ms": crate::stats::Summary::of(
            kills.iter().map(|k| Duration::from_millis(k.restart_ms)).collect()
        ).json(),
        "per_kill": kills,
    }))
}
