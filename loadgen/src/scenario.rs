//! The three scenarios: `end-of-day`, `live-day` and `reconnect-storm`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use automerge::ChangeHash;
use indicatif::{ProgressBar, ProgressStyle};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::schema::booking::ScanMethod;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::conn::{Conn, Counters};
use crate::device::{Device, fresh_id};
use crate::stats::{Summary, ms};
use crate::world::{self, Provisioner, Target, TargetKind, VenueWorld, connect};

/// Sizes of a run (defaults are the full benchmark; `--quick` scales them down).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scale {
    /// end-of-day: venues.
    pub venues: usize,
    /// end-of-day: staff devices per venue.
    pub devices_per_venue: usize,
    /// end-of-day: offline check-ins per device.
    pub check_ins: usize,
    /// end-of-day: pupils on each booking's roster.
    pub roster: usize,
    /// live-day: venues.
    pub live_venues: usize,
    /// live-day: staff devices per venue (plus one observer).
    pub live_devices_per_venue: usize,
    /// live-day: check-ins per second, one step each.
    pub live_rates: Vec<u32>,
    /// live-day: seconds per step.
    pub live_step_secs: u64,
    /// live-day: also time the venue dashboard's SSE stream (kepu only).
    pub live_sse: bool,
    /// reconnect-storm: devices.
    pub storm_devices: usize,
    /// reconnect-storm: venues the devices belong to.
    pub storm_venues: usize,
    /// reconnect-storm: window in which every device reconnects, milliseconds.
    pub storm_window_ms: u64,
    /// chaos: SIGKILLs of the server during the run.
    pub chaos_kills: usize,
    /// chaos: shortest and longest time the server is up (from ready) before a kill, ms.
    pub chaos_up_ms: (u64, u64),
    /// chaos: longest extra time the server stays down after a kill, ms.
    pub chaos_down_ms: u64,
    /// chaos: check-ins per second the connected devices write while the kills run.
    pub chaos_rate: u32,
    /// Longest a scenario waits for convergence, seconds.
    pub timeout_secs: u64,
}

impl Scale {
    /// The full benchmark of the brief.
    #[must_use]
    pub fn full() -> Self {
        Self {
            venues: 20,
            devices_per_venue: 10,
            check_ins: 250,
            roster: 300,
            live_venues: 20,
            live_devices_per_venue: 5,
            live_rates: vec![10, 50, 100, 200],
            live_step_secs: 10,
            live_sse: true,
            storm_devices: 2000,
            storm_venues: 20,
            storm_window_ms: 1000,
            chaos_kills: 20,
            chaos_up_ms: (500, 3000),
            chaos_down_ms: 1000,
            chaos_rate: 20,
            timeout_secs: 180,
        }
    }

    /// A run of well under two minutes.
    #[must_use]
    pub fn quick() -> Self {
        Self {
            venues: 4,
            devices_per_venue: 5,
            check_ins: 50,
            roster: 100,
            live_venues: 4,
            live_devices_per_venue: 3,
            live_rates: vec![10, 50, 100],
            live_step_secs: 3,
            live_sse: true,
            storm_devices: 300,
            storm_venues: 6,
            storm_window_ms: 1000,
            chaos_kills: 5,
            chaos_up_ms: (300, 1500),
            chaos_down_ms: 500,
            chaos_rate: 10,
            timeout_secs: 120,
        }
    }
}

/// What a run shares: where, counters, and the provisioner.
pub struct Ctx {
    /// Target.
    pub target: Target,
    /// Provisioning (HTTP admin for kepu).
    pub prov: Provisioner,
    /// Traffic counters.
    pub counters: Arc<Counters>,
    /// Show progress bars.
    pub progress: bool,
}

impl Ctx {
    pub(crate) fn bar(&self, len: usize, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>24} {bar:40} {pos}/{len} {elapsed_precise}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_owned());
        bar
    }
}

/// Per-device status the coordinator polls.
#[derive(Debug, Default, Clone)]
pub(crate) struct Slot {
    pub in_sync: bool,
    pub heads: Vec<ChangeHash>,
    pub failed: Option<String>,
}

pub(crate) type Board = Arc<Vec<Mutex<Slot>>>;

pub(crate) fn board(n: usize) -> Board {
    Arc::new((0..n).map(|_| Mutex::new(Slot::default())).collect())
}

pub(crate) fn read_slot(board: &Board, i: usize) -> Slot {
    board[i].lock().map(|s| s.clone()).unwrap_or_default()
}

fn write_slot(board: &Board, i: usize, f: impl FnOnce(&mut Slot)) {
    if let Ok(mut s) = board[i].lock() {
        f(&mut s);
    }
}

/// Send times of changes, and the latencies observers saw, per live-day step.
#[derive(Default)]
pub(crate) struct Latency {
    sent: Mutex<HashMap<ChangeHash, (Instant, usize)>>,
    seen: Mutex<Vec<Vec<Duration>>>,
}

impl Latency {
    fn sent(&self, hash: ChangeHash, step: usize) {
        if let Ok(mut m) = self.sent.lock() {
            m.insert(hash, (Instant::now(), step));
        }
    }

    fn observed(&self, hash: &ChangeHash) {
        let hit = self.sent.lock().ok().and_then(|mut m| m.remove(hash));
        if let (Some((at, step)), Ok(mut seen)) = (hit, self.seen.lock()) {
            if seen.len() <= step {
                seen.resize_with(step + 1, Vec::new);
            }
            seen[step].push(at.elapsed());
        }
    }

    fn pending(&self) -> usize {
        self.sent.lock().map_or(0, |m| m.len())
    }
}

/// A command to an online device.
pub(crate) enum Cmd {
    /// Write this edit now and send it.
    Edit {
        doc: DocumentId,
        edit: Edit,
        step: usize,
    },
}

/// How often an online device reconnects after its connection dropped for no reason the
/// run knows of (not a kill of a chaos run) before it gives up.
const MAX_RECONNECTS: u32 = 20;
/// How many connection attempts in a row may fail before a device gives up.
const MAX_CONNECT_FAILURES: u32 = 30;

/// The server's life as a chaos run sees it: which start of the server process this is,
/// and whether it is up. Devices connect only while it is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Life {
    /// Starts of the server so far, minus one.
    pub incarnation: u64,
    /// The server is up (and its records checked after a restart).
    pub up: bool,
}

/// Check-ins made by the devices of a chaos run and those the devices saw acknowledged,
/// by scan id.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Every check-in a device wrote.
    pub made: Mutex<HashSet<String>>,
    /// Every check-in a device knows the server holds.
    pub acked: Mutex<HashSet<String>>,
}

/// What the devices of a chaos run share with the driver.
#[derive(Clone)]
pub(crate) struct Chaos {
    /// The server's life.
    pub life: watch::Receiver<Life>,
    /// Devices connecting or connected now.
    pub sockets: Arc<AtomicUsize>,
    /// Check-ins made and acknowledged.
    pub ledger: Arc<Ledger>,
}

/// A device's own check-ins not yet acknowledged: (document, change, scan id).
pub(crate) type Pending = Vec<(DocumentId, ChangeHash, String)>;

/// Moves the check-ins of `pending` that the server holds (as far as `device` knows) to
/// the ledger's acknowledged set.
fn note_acks(device: &Device, pending: &mut Pending, ledger: &Ledger) {
    if pending.is_empty() {
        return;
    }
    let docs: HashSet<DocumentId> = pending.iter().map(|p| p.0).collect();
    let mut held = HashSet::new();
    for doc in docs {
        let hashes: Vec<ChangeHash> = pending.iter().filter(|p| p.0 == doc).map(|p| p.1).collect();
        held.extend(device.server_holds(&doc, &hashes));
    }
    if held.is_empty() {
        return;
    }
    if let Ok(mut acked) = ledger.acked.lock() {
        pending.retain(|(_, hash, scan)| {
            let keep = !held.contains(hash);
            if !keep {
                acked.insert(scan.clone());
            }
            keep
        });
    }
}

/// Records a check-in `device` just wrote, for the ledger.
fn note_made(
    ledger: &Ledger,
    pending: &mut Pending,
    doc: DocumentId,
    hash: ChangeHash,
    edit: &Edit,
) {
    if let Edit::CheckIn { scan_id, .. } = edit {
        if let Ok(mut made) = ledger.made.lock() {
            made.insert(scan_id.clone());
        }
        pending.push((doc, hash, scan_id.clone()));
    }
}

/// Everything an online device shares with the run.
#[derive(Clone)]
pub(crate) struct Seat {
    pub target: Target,
    pub counters: Arc<Counters>,
    pub board: Board,
    pub index: usize,
    pub latency: Option<(Arc<Latency>, bool)>,
    pub chaos: Option<Chaos>,
}

/// How a connection ended.
enum End {
    /// Told to stop.
    Stopped,
    /// The connection dropped (closed, reset, or a send or receive failed): reconnect.
    Dropped(anyhow::Error),
    /// Something no reconnect mends (a server `error`, a message that does not apply).
    Failed(anyhow::Error),
}

/// A device online until `stop`: connects, syncs every document, applies commands,
/// publishes its state on the board and feeds the latency book (send times of its own
/// changes; arrival times of others' when it is an observer). When the connection drops
/// it reconnects after a second (in a chaos run: once the server is back), as
/// automerge-repo clients do; `reconnects` counts those that follow a drop the run did
/// not cause, `kill_reconnects` those that follow a chaos run's kill. A device that stays
/// connected but out of sync does not reconnect: it is reported out of sync.
pub(crate) async fn online(
    seat: Seat,
    mut device: Device,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut stop: watch::Receiver<bool>,
    mut pending: Pending,
) -> Device {
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let fail = |e: &anyhow::Error| {
        write_slot(&seat.board, seat.index, |s| {
            s.in_sync = false;
            s.failed = Some(format!("{e:#}"));
        });
    };
    // Some(caused by a kill) once a connection dropped.
    let mut dropped: Option<bool> = None;
    let (mut drops, mut refused) = (0u32, 0u32);
    loop {
        let mut life = None;
        if let Some(chaos) = &seat.chaos {
            let mut rx = chaos.life.clone();
            tokio::select! {
                up = rx.wait_for(|l| l.up) => match up {
                    Ok(l) => life = Some(l.incarnation),
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            }
            chaos.sockets.fetch_add(1, relaxed);
        }
        let opened = tokio::select! {
            c = connect(&seat.target, &device, &seat.counters) => Some(c),
            _ = stop.changed() => None,
        };
        let conn = match opened {
            None => {
                if let Some(chaos) = &seat.chaos {
                    chaos.sockets.fetch_sub(1, relaxed);
                }
                break;
            }
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                if let Some(chaos) = &seat.chaos {
                    chaos.sockets.fetch_sub(1, relaxed);
                }
                refused += 1;
                if refused > MAX_CONNECT_FAILURES || *stop.borrow() {
                    fail(&e);
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        refused = 0;
        match dropped.take() {
            Some(true) => seat.counters.kill_reconnects.fetch_add(1, relaxed),
            Some(false) => seat.counters.reconnects.fetch_add(1, relaxed),
            None => 0,
        };
        let end = session(&seat, &mut device, conn, &mut cmds, &mut stop, &mut pending).await;
        if let Some(chaos) = &seat.chaos {
            chaos.sockets.fetch_sub(1, relaxed);
        }
        match end {
            End::Stopped => break,
            End::Failed(e) => {
                fail(&e);
                break;
            }
            End::Dropped(e) => {
                write_slot(&seat.board, seat.index, |s| s.in_sync = false);
                let by_kill = seat.chaos.as_ref().is_some_and(|c| {
                    let now = *c.life.borrow();
                    !now.up || Some(now.incarnation) != life
                });
                if !by_kill {
                    seat.counters.dropped(&format!("{e:#}"));
                    drops += 1;
                    if drops > MAX_RECONNECTS {
                        fail(&e);
                        break;
                    }
                }
                if *stop.borrow() {
                    break;
                }
                dropped = Some(by_kill);
                if device.persist_states().is_err() {
                    device.reset_states();
                }
                if !by_kill {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        }
    }
    device
}

/// One connection of [`online`].
async fn session(
    seat: &Seat,
    device: &mut Device,
    mut conn: Conn,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    stop: &mut watch::Receiver<bool>,
    pending: &mut Pending,
) -> End {
    let (me, server) = (conn.peer_id.clone(), conn.server_id.clone());
    let ledger = seat.chaos.as_ref().map(|c| Arc::clone(&c.ledger));
    for m in device.all_outgoing(&me, &server) {
        if let Err(e) = conn.send(&m).await {
            return End::Dropped(e);
        }
    }
    loop {
        tokio::select! {
            received = conn.recv() => {
                let message = match received {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let why = conn.closed.as_deref().unwrap_or("no close frame");
                        return End::Dropped(anyhow::anyhow!("the server closed the connection ({why})"));
                    }
                    Err(e) => return End::Dropped(e),
                };
                let incoming = match device.handle(&me, &server, message) {
                    Ok(i) => i,
                    Err(e) => return End::Failed(e),
                };
                if let Some(e) = incoming.error {
                    return End::Failed(anyhow::anyhow!("server error: {e}"));
                }
                if let Some((book, true)) = &seat.latency {
                    for h in &incoming.new_changes {
                        book.observed(h);
                    }
                }
                if let Some(ledger) = &ledger {
                    note_acks(device, pending, ledger);
                }
                for m in &incoming.replies {
                    if let Err(e) = conn.send(m).await {
                        return End::Dropped(e);
                    }
                }
            }
            cmd = cmds.recv() => {
                let Some(Cmd::Edit { doc, edit, step }) = cmd else { break };
                let hash = match device.edit(doc, &edit) {
                    Ok(h) => h,
                    Err(e) => return End::Failed(e),
                };
                if let Some(hash) = hash {
                    if let Some((book, _)) = &seat.latency {
                        book.sent(hash, step);
                    }
                    if let Some(ledger) = &ledger {
                        note_made(ledger, pending, doc, hash, &edit);
                    }
                }
                if let Some(m) = device.outgoing(&me, &server, doc)
                    && let Err(e) = conn.send(&m).await
                {
                    return End::Dropped(e);
                }
            }
            _ = stop.changed() => break,
        }
        let (in_sync, heads) = (
            device.all_in_sync(),
            device
                .docs
                .keys()
                .next()
                .map(|d| device.heads(d))
                .unwrap_or_default(),
        );
        write_slot(&seat.board, seat.index, |s| {
            s.in_sync = in_sync;
            s.heads = heads;
        });
    }
    conn.close().await;
    End::Stopped
}

pub(crate) fn check_in(pupil: PupilId) -> Edit {
    Edit::CheckIn {
        pupil,
        scan_id: fresh_id().to_string(),
        method: ScanMethod::Manual,
        proof: None,
    }
}

fn rss(pid: Option<u32>) -> Value {
    match pid.and_then(crate::stats::server_memory) {
        Some((rss, hwm)) => json!({ "rss_kb": rss, "hwm_kb": hwm }),
        None => Value::Null,
    }
}

/// Waits until the server's records hold `expected` scans for each booking (kepu);
/// returns the counts found.
async fn records(ctx: &Ctx, bookings: &[(DocumentId, usize)], timeout: Duration) -> Value {
    if ctx.target.kind != TargetKind::Kepu {
        return Value::Null;
    }
    let deadline = Instant::now() + timeout;
    let mut found = vec![0usize; bookings.len()];
    loop {
        for (i, (doc, _)) in bookings.iter().enumerate() {
            if let Ok(v) = ctx
                .prov
                .get(&format!("/api/bookings/{doc}/attendance"))
                .await
            {
                found[i] = v["scans"].as_array().map_or(0, Vec::len);
            }
        }
        let done = found.iter().zip(bookings).all(|(f, (_, e))| f == e);
        if done || Instant::now() > deadline {
            let expected: usize = bookings.iter().map(|(_, e)| e).sum();
            let total: usize = found.iter().sum();
            return json!({
                "expected_scans": expected,
                "stored_scans": total,
                "every_scan_once": done,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The devices of an end-of-day, offline, each holding its venue's booking and its
/// check-ins.
pub(crate) struct Day {
    /// The devices, venue by venue.
    pub devices: Vec<Device>,
    /// Each device's own check-ins (for a chaos run's ledger).
    pub pending: Vec<Pending>,
    /// The devices of each venue (indices into `devices`).
    pub groups: Vec<std::ops::Range<usize>>,
    /// Each venue's booking and its roster.
    pub bookings: Vec<(DocumentId, Vec<PupilId>)>,
    /// Seconds the offline check-ins took to write.
    pub offline_secs: f64,
}

/// Builds the venues of an end-of-day and writes every device's offline check-ins.
pub(crate) async fn prepare_day(ctx: &Ctx, scale: &Scale, what: &str) -> anyhow::Result<Day> {
    let n = scale.venues * scale.devices_per_venue;
    let bar = ctx.bar(n, &format!("{what}: enroll"));
    let world = world::build(
        &ctx.target,
        &ctx.prov,
        scale.venues,
        scale.devices_per_venue,
        scale.roster,
        &ctx.counters,
        &bar,
    )
    .await?;
    bar.finish_and_clear();

    // Offline: every device scans its share of the roster.
    let built = Instant::now();
    let mut day = Day {
        devices: Vec::with_capacity(n),
        pending: Vec::with_capacity(n),
        groups: Vec::new(),
        bookings: Vec::new(),
        offline_secs: 0.0,
    };
    for VenueWorld {
        booking,
        roster,
        staff,
        ..
    } in world
    {
        let start = day.devices.len();
        for (i, mut d) in staff.into_iter().enumerate() {
            let mut own = Vec::with_capacity(scale.check_ins);
            for k in 0..scale.check_ins {
                let pupil = roster[(i * scale.check_ins + k) % roster.len()];
                let edit = check_in(pupil);
                if let (Some(hash), Edit::CheckIn { scan_id, .. }) = (d.edit(booking, &edit)?, edit)
                {
                    own.push((booking, hash, scan_id));
                }
            }
            day.devices.push(d);
            day.pending.push(own);
        }
        day.groups.push(start..day.devices.len());
        day.bookings.push((booking, roster));
    }
    day.offline_secs = built.elapsed().as_secs_f64();
    Ok(day)
}

/// Polls the board until every device of every group is in sync with the same heads, or
/// until `deadline` (or every device failed). Returns the time to converge from `started`
/// (`None` if it did not) and the devices in sync at the end.
pub(crate) async fn converge(
    ctx: &Ctx,
    b: &Board,
    groups: &[std::ops::Range<usize>],
    started: Instant,
    deadline: Instant,
    what: &str,
) -> (Option<Duration>, usize) {
    let n = b.len();
    let bar = ctx.bar(n, &format!("{what}: in sync"));
    let mut in_sync_at_end;
    let converged = loop {
        let slots: Vec<Slot> = (0..n).map(|i| read_slot(b, i)).collect();
        in_sync_at_end = slots
            .iter()
            .filter(|s| s.in_sync && s.failed.is_none())
            .count();
        bar.set_position(slots.iter().filter(|s| s.in_sync).count() as u64);
        let done = groups.iter().all(|g| {
            let first = &slots[g.start];
            slots[g.clone()]
                .iter()
                .all(|s| s.in_sync && s.failed.is_none() && s.heads == first.heads)
        });
        if done {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline || slots.iter().all(|s| s.failed.is_some()) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    bar.finish_and_clear();
    (converged, in_sync_at_end)
}

/// `end-of-day`: every staff device records check-ins offline, then all reconnect at
/// once; time until every device of every venue holds the same heads as the server. A
/// device still out of sync at the deadline is counted in `out_of_sync` and the scenario
/// fails (see [`crate::failures`]).
///
/// # Errors
/// Provisioning or preparation failed.
pub async fn end_of_day(
    ctx: &Ctx,
    scale: &Scale,
    server_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let n = scale.venues * scale.devices_per_venue;
    let day = prepare_day(ctx, scale, "end-of-day").await?;
    let total = n * scale.check_ins;
    let bookings: Vec<(DocumentId, usize)> = day
        .bookings
        .iter()
        .map(|(b, _)| (*b, scale.devices_per_venue * scale.check_ins))
        .collect();

    // All reconnect at once.
    let (before_sent, before_recv) = ctx.counters.bytes();
    let cpu_before = server_pid.and_then(crate::stats::cpu_seconds);
    let devices_cpu_before = crate::stats::cpu_seconds(std::process::id());
    let b = board(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for (i, d) in day.devices.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let seat = Seat {
            target: ctx.target.on_node(i),
            counters: Arc::clone(&ctx.counters),
            board: Arc::clone(&b),
            index: i,
            latency: None,
            chaos: None,
        };
        tasks.push(tokio::spawn(online(
            seat,
            d,
            rx,
            stop_rx.clone(),
            Vec::new(),
        )));
    }
    let deadline = started + Duration::from_secs(scale.timeout_secs);
    let (converged, in_sync_at_end) =
        converge(ctx, &b, &day.groups, started, deadline, "end-of-day").await;
    let (after_sent, after_recv) = ctx.counters.bytes();
    // The simulated devices' own CPU until they converged: what the load generator spent
    // applying and answering the server's messages.
    let devices_cpu_s = devices_cpu_before
        .zip(crate::stats::cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);
    let _ = stop_tx.send(true);
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let failures: Vec<String> = (0..n).filter_map(|i| read_slot(&b, i).failed).collect();
    let stored = records(ctx, &bookings, Duration::from_secs(60)).await;
    // The server's CPU from the reconnect until its records hold every check-in (the
    // merges, the writes and the records).
    let cpu_s = cpu_before
        .zip(server_pid.and_then(crate::stats::cpu_seconds))
        .map(|(a, b)| b - a);
    let secs = converged.map(|d| d.as_secs_f64());
    Ok(json!({
        "venues": scale.venues,
        "devices": n,
        "check_ins": total,
        "offline_build_s": day.offline_secs,
        "converged": converged.is_some(),
        "in_sync_at_end": in_sync_at_end,
        "out_of_sync": n - in_sync_at_end,
        "timeout_s": scale.timeout_secs,
        "converge_s": secs,
        "check_ins_per_s": secs.map(|s| total as f64 / s),
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_check_in": cpu_s.map(|c| c * 1e6 / total as f64),
        "devices_cpu_s": devices_cpu_s,
        "bytes_sent": after_sent - before_sent,
        "bytes_received": after_recv - before_recv,
        "failures": failures.len(),
        "first_failure": failures.first(),
        "reconnects": ctx.counters.reconnects.swap(0, std::sync::atomic::Ordering::Relaxed),
        "drop_reasons": ctx.counters.take_drop_reasons(),
        "records": stored,
        "server_memory": rss(server_pid),
    }))
}

/// `live-day`: staff devices online, check-ins at rising rates; latency from a device
/// writing a check-in to an observer device (and, for kepu, the venue dashboard's SSE
/// stream) seeing it.
///
/// # Errors
/// Provisioning or preparation failed.
#[allow(clippy::too_many_lines)]
pub async fn live_day(ctx: &Ctx, scale: &Scale, server_pid: Option<u32>) -> anyhow::Result<Value> {
    let per = scale.live_devices_per_venue + 1;
    let n = scale.live_venues * per;
    let needed: u64 = scale
        .live_rates
        .iter()
        .map(|r| u64::from(*r) * scale.live_step_secs)
        .sum();
    let roster = usize::try_from(needed).unwrap_or(usize::MAX) / scale.live_venues.max(1) + 10;
    let bar = ctx.bar(n, "live-day: enroll");
    let world = world::build(
        &ctx.target,
        &ctx.prov,
        scale.live_venues,
        per,
        roster,
        &ctx.counters,
        &bar,
    )
    .await?;
    bar.finish_and_clear();

    let latency = Arc::new(Latency::default());
    let b = board(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // Writers: (sender, venue index); observers get no commands.
    let mut writers: Vec<(mpsc::UnboundedSender<Cmd>, usize)> = Vec::new();
    let mut venues = Vec::new();
    let mut observers_tx = Vec::new();
    let mut index = 0;
    for (
        v,
        VenueWorld {
            booking,
            roster,
            staff,
            venue,
            ..
        },
    ) in world.into_iter().enumerate()
    {
        let observer_token = staff.last().and_then(|d| d.id.token.clone());
        for (i, d) in staff.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let observer = i + 1 == per;
            if observer {
                observers_tx.push(tx);
            } else {
                writers.push((tx, v));
            }
            // Several nodes: observers on the last one, writers spread over the others.
            let nodes = ctx.target.node_count();
            let target = if nodes == 1 {
                ctx.target.clone()
            } else if observer {
                ctx.target.on_node(nodes - 1)
            } else {
                ctx.target.on_node(writers.len() % (nodes - 1))
            };
            let seat = Seat {
                target,
                counters: Arc::clone(&ctx.counters),
                board: Arc::clone(&b),
                index,
                latency: Some((Arc::clone(&latency), observer)),
                chaos: None,
            };
            tasks.push(tokio::spawn(online(
                seat,
                d,
                rx,
                stop_rx.clone(),
                Vec::new(),
            )));
            index += 1;
        }
        venues.push((venue, booking, roster, observer_token));
    }
    // Wait until everyone holds the booking in sync.
    let deadline = Instant::now() + Duration::from_secs(scale.timeout_secs);
    loop {
        let slots: Vec<Slot> = (0..n).map(|i| read_slot(&b, i)).collect();
        if let Some(f) = slots.iter().find_map(|s| s.failed.clone()) {
            let _ = stop_tx.send(true);
            bail!("a live-day device failed before the ramp: {f}");
        }
        if slots.iter().all(|s| s.in_sync) {
            break;
        }
        if Instant::now() > deadline {
            let _ = stop_tx.send(true);
            bail!("live-day devices did not come in sync");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The dashboard streams (kepu only).
    let sse = if ctx.target.kind == TargetKind::Kepu && scale.live_sse {
        Some(crate::sse::Dashboards::start(&ctx.prov, &venues, stop_rx.clone()).await)
    } else {
        None
    };

    let (before_sent, before_recv) = ctx.counters.bytes();
    let mut next_pupil = vec![0usize; venues.len()];
    let mut steps = Vec::new();
    let mut w = 0usize;
    let total_ticks: u64 = scale
        .live_rates
        .iter()
        .map(|r| u64::from(*r) * scale.live_step_secs)
        .sum();
    let bar = ctx.bar(
        usize::try_from(total_ticks).unwrap_or(0),
        "live-day: check-ins",
    );
    // The server's CPU from the first check-in until the observers saw the last one.
    let cpu_before = server_pid.and_then(crate::stats::cpu_seconds);
    for (step, rate) in scale.live_rates.iter().enumerate() {
        let ticks = u64::from(*rate) * scale.live_step_secs;
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(*rate)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let began = Instant::now();
        for _ in 0..ticks {
            interval.tick().await;
            let (tx, v) = &writers[w % writers.len()];
            w += 1;
            let (_, booking, roster, _) = &venues[*v];
            let pupil = roster[next_pupil[*v] % roster.len()];
            if let Some(d) = &sse {
                d.sent(*v, step);
            }
            next_pupil[*v] += 1;
            let _ = tx.send(Cmd::Edit {
                doc: *booking,
                edit: check_in(pupil),
                step,
            });
            bar.inc(1);
        }
        steps.push((*rate, ticks, began.elapsed()));
    }
    bar.finish_and_clear();
    // Drain: wait until observers saw everything (or 10 s).
    let drain = Instant::now();
    while latency.pending() > 0 && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(d) = &sse {
        d.drain(Duration::from_secs(5)).await;
    }
    let cpu_s = cpu_before
        .zip(server_pid.and_then(crate::stats::cpu_seconds))
        .map(|(a, b)| b - a);
    let (after_sent, after_recv) = ctx.counters.bytes();
    let lost = latency.pending();
    let _ = stop_tx.send(true);
    drop(writers);
    drop(observers_tx);
    for t in tasks {
        let _ = t.await;
    }
    let failures: Vec<String> = (0..n).filter_map(|i| read_slot(&b, i).failed).collect();
    let seen = latency.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let sse_seen = sse.as_ref().map(crate::sse::Dashboards::latencies);
    let step_rows: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, (rate, ticks, took))| {
            let observer = Summary::of(seen.get(i).cloned().unwrap_or_default());
            let dashboard = sse_seen
                .as_ref()
                .map(|s| Summary::of(s.get(i).cloned().unwrap_or_default()));
            json!({
                "rate_per_s": rate,
                "sent": ticks,
                "achieved_per_s": *ticks as f64 / took.as_secs_f64(),
                "observer": observer.json(),
                "dashboard_sse": dashboard.map(|d| d.json()),
            })
        })
        .collect();
    let bookings: Vec<(DocumentId, usize)> = venues
        .iter()
        .zip(&next_pupil)
        .map(|((_, b, _, _), n)| (*b, *n))
        .collect();
    let stored = records(ctx, &bookings, Duration::from_secs(30)).await;
    Ok(json!({
        "venues": scale.live_venues,
        "nodes": ctx.target.node_count(),
        "writers": scale.live_venues * scale.live_devices_per_venue,
        "observers": scale.live_venues,
        "steps": step_rows,
        "unobserved": lost,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_check_in": cpu_s.map(|c| c * 1e6 / total_ticks.max(1) as f64),
        "reconnects": ctx.counters.reconnects.swap(0, std::sync::atomic::Ordering::Relaxed),
        "drop_reasons": ctx.counters.take_drop_reasons(),
        "sse": sse.as_ref().map(|d| d.status()),
        "bytes_sent": after_sent - before_sent,
        "bytes_received": after_recv - before_recv,
        "failures": failures.len(),
        "first_failure": failures.first(),
        "records": stored,
        "server_memory": rss(server_pid),
    }))
}

/// `reconnect-storm`: devices already in sync all reconnect within the window; time
/// until each (and all) are back in sync.
///
/// # Errors
/// Provisioning or preparation failed.
pub async fn reconnect_storm(
    ctx: &Ctx,
    scale: &Scale,
    server_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let venues = scale.storm_venues.max(1);
    let per = scale.storm_devices.div_ceil(venues);
    let n = per * venues;
    let bar = ctx.bar(n, "storm: enroll + sync");
    let world = world::build(&ctx.target, &ctx.prov, venues, per, 20, &ctx.counters, &bar).await?;
    bar.finish_and_clear();
    let devices: Vec<Device> = world.into_iter().flat_map(|v| v.staff).collect();

    // The server's memory with none of the storm's devices connected, to divide what the
    // connections add among them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory_before = rss(server_pid);
    let (before_sent, before_recv) = ctx.counters.bytes();
    let window = Duration::from_millis(scale.storm_window_ms);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let started = t0.into_std();
    let timeout = Duration::from_secs(scale.timeout_secs);
    let mut tasks = Vec::with_capacity(n);
    for (i, mut d) in devices.into_iter().enumerate() {
        let at = t0 + window.mul_f64(i as f64 / n as f64);
        let (target, counters, done, mut stop) = (
            ctx.target.clone(),
            Arc::clone(&ctx.counters),
            done_tx.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let began = Instant::now();
            let mut conn = None;
            let result = async {
                let mut c = connect(&target, &d, &counters).await?;
                world::sync_until(&mut d, &mut c, timeout, Device::all_in_sync).await?;
                conn = Some(c);
                anyhow::Ok(began.elapsed())
            }
            .await;
            let _ = done.send(result.map_err(|e| format!("{e:#}")));
            // Stay connected, as a real device would, until the storm is over.
            if let Some(c) = conn {
                let _ = stop.changed().await;
                c.close().await;
            }
        }));
    }
    drop(done_tx);
    let bar = ctx.bar(n, "storm: back in sync");
    let mut times = Vec::with_capacity(n);
    let mut failures = Vec::new();
    while let Some(r) = done_rx.recv().await {
        bar.inc(1);
        match r {
            Ok(d) => times.push(d),
            Err(e) => failures.push(e),
        }
        if times.len() + failures.len() == n {
            break;
        }
    }
    let all_back = started.elapsed();
    bar.finish_and_clear();
    let (after_sent, after_recv) = ctx.counters.bytes();
    // Every device is back in sync and stays connected, idle: what each costs the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory = rss(server_pid);
    let connected = times.len();
    let per_connection_kib = match (memory_before["rss_kb"].as_u64(), memory["rss_kb"].as_u64()) {
        (Some(before), Some(after)) if connected > 0 => {
            json!(after.saturating_sub(before) as f64 / connected as f64)
        }
        _ => Value::Null,
    };
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(json!({
        "devices": n,
        "window_ms": scale.storm_window_ms,
        "all_back_s": all_back.as_secs_f64(),
        "in_sync": times.len(),
        "failures": failures.len(),
        "first_failure": failures.first(),
        "per_device": Summary::of(times).json(),
        "bytes_sent": after_sent - before_sent,
        "bytes_received": after_recv - before_recv,
        "server_memory_before": memory_before,
        "server_memory": memory,
        "server_kib_per_connection": per_connection_kib,
    }))
}

/// Milliseconds of a duration, for tables.
#[must_use]
pub fn millis(d: Duration) -> f64 {
    ms(d)
}
