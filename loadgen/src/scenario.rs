//! The three scenarios: `end-of-day`, `live-day` and `reconnect-storm`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::ChangeHash;
use indicatif::{ProgressBar, ProgressStyle};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::schema::booking::ScanMethod;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::conn::Counters;
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
    fn bar(&self, len: usize, what: &str) -> ProgressBar {
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
struct Slot {
    in_sync: bool,
    heads: Vec<ChangeHash>,
    failed: Option<String>,
}

type Board = Arc<Vec<Mutex<Slot>>>;

fn board(n: usize) -> Board {
    Arc::new((0..n).map(|_| Mutex::new(Slot::default())).collect())
}

fn read_slot(board: &Board, i: usize) -> Slot {
    board[i].lock().map(|s| s.clone()).unwrap_or_default()
}

fn write_slot(board: &Board, i: usize, f: impl FnOnce(&mut Slot)) {
    if let Ok(mut s) = board[i].lock() {
        f(&mut s);
    }
}

/// Send times of changes, and the latencies observers saw, per live-day step.
#[derive(Default)]
struct Latency {
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
enum Cmd {
    /// Write this edit now and send it.
    Edit {
        doc: DocumentId,
        edit: Edit,
        step: usize,
    },
}

/// How often an online device reconnects after its connection dropped before it gives up.
const MAX_RECONNECTS: u32 = 20;
/// Quiet time after which a connected device that is still out of sync reconnects.
const STALL_AFTER: Duration = Duration::from_secs(20);

/// A device online until `stop`: connects, syncs every document, applies commands,
/// publishes its state on the board and feeds the latency book (send times of its own
/// changes; arrival times of others' when it is an observer). When the server drops the
/// connection it reconnects after a second, as automerge-repo clients do.
#[allow(clippy::too_many_arguments)]
async fn online(
    target: Target,
    mut device: Device,
    counters: Arc<Counters>,
    board: Board,
    index: usize,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    latency: Option<(Arc<Latency>, bool)>,
    mut stop: watch::Receiver<bool>,
) -> Device {
    let mut drops = 0;
    loop {
        let result = session(
            &target,
            &mut device,
            &counters,
            &board,
            index,
            &mut cmds,
            latency.as_ref(),
            &mut stop,
        )
        .await;
        match result {
            Ok(()) => break,
            Err(e) => {
                drops += 1;
                counters
                    .reconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                write_slot(&board, index, |s| s.in_sync = false);
                if drops > MAX_RECONNECTS || *stop.borrow() {
                    write_slot(&board, index, |s| s.failed = Some(format!("{e:#}")));
                    break;
                }
                if device.persist_states().is_err() {
                    device.reset_states();
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    device
}

/// One connection of [`online`]; `Ok` when told to stop.
#[allow(clippy::too_many_arguments)]
async fn session(
    target: &Target,
    device: &mut Device,
    counters: &Arc<Counters>,
    board: &Board,
    index: usize,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    latency: Option<&(Arc<Latency>, bool)>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut conn = connect(target, device, counters).await?;
    let (me, server) = (conn.peer_id.clone(), conn.server_id.clone());
    for m in device.all_outgoing(&me, &server) {
        conn.send(&m).await?;
    }
    loop {
        tokio::select! {
            received = conn.recv() => {
                let message = received?.context("the server closed the connection")?;
                let incoming = device.handle(&me, &server, message)?;
                if let Some(e) = incoming.error {
                    bail!("server error: {e}");
                }
                if let Some((book, true)) = latency {
                    for h in &incoming.new_changes {
                        book.observed(h);
                    }
                }
                for m in &incoming.replies {
                    conn.send(m).await?;
                }
            }
            cmd = cmds.recv() => {
                let Some(Cmd::Edit { doc, edit, step }) = cmd else { break };
                if let (Some(hash), Some((book, _))) = (device.edit(doc, &edit)?, latency) {
                    book.sent(hash, step);
                }
                if let Some(m) = device.outgoing(&me, &server, doc) {
                    conn.send(&m).await?;
                }
            }
            _ = stop.changed() => break,
            // Out of sync with nothing arriving: handled like a dropped connection
            // (reconnect with the persisted sync state, counted in `reconnects`), as a
            // phone's failed `sync_now` is retried. See known gap 21 in ARCHITECTURE.md.
            () = tokio::time::sleep(STALL_AFTER), if !device.all_in_sync() => {
                bail!("no progress for {} s while out of sync", STALL_AFTER.as_secs());
            }
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
        write_slot(board, index, |s| {
            s.in_sync = in_sync;
            s.heads = heads;
        });
    }
    conn.close().await;
    Ok(())
}

fn check_in(pupil: PupilId) -> Edit {
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

/// `end-of-day`: every staff device records check-ins offline, then all reconnect at
/// once; time until every device of every venue holds the same heads as the server.
///
/// # Errors
/// Provisioning or preparation failed.
pub async fn end_of_day(
    ctx: &Ctx,
    scale: &Scale,
    server_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let n = scale.venues * scale.devices_per_venue;
    let bar = ctx.bar(n, "end-of-day: enroll");
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
    let mut devices = Vec::with_capacity(n);
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bookings = Vec::new();
    for VenueWorld {
        booking,
        roster,
        staff,
        ..
    } in world
    {
        let start = devices.len();
        for (i, mut d) in staff.into_iter().enumerate() {
            for k in 0..scale.check_ins {
                let pupil = roster[(i * scale.check_ins + k) % roster.len()];
                d.edit(booking, &check_in(pupil))?;
            }
            devices.push(d);
        }
        groups.push(start..devices.len());
        bookings.push((booking, scale.devices_per_venue * scale.check_ins));
    }
    let offline_secs = built.elapsed().as_secs_f64();
    let total = n * scale.check_ins;

    // All reconnect at once.
    let (before_sent, before_recv) = ctx.counters.bytes();
    let b = board(n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for (i, d) in devices.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tasks.push(tokio::spawn(online(
            ctx.target.clone(),
            d,
            Arc::clone(&ctx.counters),
            Arc::clone(&b),
            i,
            rx,
            None,
            stop_rx.clone(),
        )));
    }
    let bar = ctx.bar(n, "end-of-day: in sync");
    let deadline = started + Duration::from_secs(scale.timeout_secs);
    let mut in_sync_at_end;
    let converged = loop {
        let slots: Vec<Slot> = (0..n).map(|i| read_slot(&b, i)).collect();
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
    let (after_sent, after_recv) = ctx.counters.bytes();
    let _ = stop_tx.send(true);
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let failures: Vec<String> = (0..n).filter_map(|i| read_slot(&b, i).failed).collect();
    let stored = records(ctx, &bookings, Duration::from_secs(60)).await;
    let secs = converged.map(|d| d.as_secs_f64());
    Ok(json!({
        "venues": scale.venues,
        "devices": n,
        "check_ins": total,
        "offline_build_s": offline_secs,
        "converged": converged.is_some(),
        "in_sync_at_end": in_sync_at_end,
        "converge_s": secs,
        "check_ins_per_s": secs.map(|s| total as f64 / s),
        "bytes_sent": after_sent - before_sent,
        "bytes_received": after_recv - before_recv,
        "failures": failures.len(),
        "first_failure": failures.first(),
        "reconnects": ctx.counters.reconnects.swap(0, std::sync::atomic::Ordering::Relaxed),
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
            tasks.push(tokio::spawn(online(
                ctx.target.clone(),
                d,
                Arc::clone(&ctx.counters),
                Arc::clone(&b),
                index,
                rx,
                Some((Arc::clone(&latency), observer)),
                stop_rx.clone(),
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
        "writers": scale.live_venues * scale.live_devices_per_venue,
        "observers": scale.live_venues,
        "steps": step_rows,
        "unobserved": lost,
        "reconnects": ctx.counters.reconnects.swap(0, std::sync::atomic::Ordering::Relaxed),
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
    let memory = rss(server_pid);
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
        "server_memory": memory,
    }))
}

/// Milliseconds of a duration, for tables.
#[must_use]
pub fn millis(d: Duration) -> f64 {
    ms(d)
}
