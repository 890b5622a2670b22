//! The hub: a single task that owns the sync engine.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{Config, ConnId, Effects, Engine, Event, Input, Mode};
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use tokio::sync::mpsc;

use super::inbox::HubMsg;
pub use super::inbox::{INBOUND_BUDGET, Outbound, SyncHub};
use super::worker::{self, Job};
use crate::app_state::AppState;
use crate::clock::now_ms;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Documents kept in memory at most.
    pub max_docs_in_memory: usize,
    /// Idle documents leave memory after this long.
    pub idle_evict: Duration,
    /// Documents one connection may sync.
    pub max_docs_per_conn: usize,
    /// Longest a merged document waits for its records while more frames keep arriving
    /// (they are computed at once when the hub's queue is empty).
    pub projection_delay: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_docs_in_memory: 20_000,
            idle_evict: Duration::from_secs(300),
            max_docs_per_conn: 2_000,
            projection_delay: Duration::from_millis(20),
        }
    }
}

impl SyncHub {
    /// Starts the hub and its storage worker.
    #[must_use]
    pub fn start(state: AppState, config: &HubConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let seed = *state.store.server_seed();
        let storage_id = hex::encode(derive(&seed, b"kepu-storage-id"));
        let server_device = DeviceId::from_bytes(derive(&seed, b"kepu-server-device"));
        let actor: [u8; 16] = rand::random();
        let mut engine_config = Config::new(
            Mode::Server,
            format!("kepu-server-{}", &storage_id[..8]),
            storage_id,
            actor,
            Writer::server(server_device),
        );
        engine_config.max_docs_in_memory = config.max_docs_in_memory;
        engine_config.idle_evict_ms =
            i64::try_from(config.idle_evict.as_millis()).unwrap_or(i64::MAX);
        engine_config.max_docs_per_conn = config.max_docs_per_conn;
        engine_config.proof_key =
            Some(kepu_sync_core::proof::ServerSigner::from_seed(seed).public());
        engine_config.revocations_doc = Some(super::documents::REVOCATIONS_DOC);
        let derived = super::derived::DerivedRegistry::new();
        engine_config.derived_ids = Some(derived.clone());
        let hub = Self::new(tx.clone(), derived);
        let jobs = worker::start(state.clone(), hub.clone());
        tokio::spawn(run(
            Engine::new(engine_config),
            rx,
            jobs,
            state,
            config.projection_delay,
        ));
        // Keep the revocation list in memory: every pass check reads it.
        hub.send(HubMsg::Want {
            doc: super::documents::REVOCATIONS_DOC,
        });
        let ticker = tx;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                if ticker.send(HubMsg::Tick).is_err() {
                    break;
                }
            }
        });
        hub
    }
}

/// 16 bytes derived from the server seed for a purpose (stable across restarts).
fn derive(seed: &[u8; 32], purpose: &[u8]) -> [u8; 16] {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(purpose)
        .chain_update(seed)
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

struct ConnOut {
    out: mpsc::Sender<Outbound>,
    device: DeviceId,
}

/// Documents merged since their records were last computed. A burst of frames for one
/// booking (ten gates syncing a day's scans) is projected once, when the hub's queue is
/// empty or the oldest change has waited [`HubConfig::projection_delay`], not once per
/// frame.
struct Dirty {
    docs: BTreeSet<DocumentId>,
    since: Option<Instant>,
    delay: Duration,
}

impl Dirty {
    const fn new(delay: Duration) -> Self {
        Self {
            docs: BTreeSet::new(),
            since: None,
            delay,
        }
    }

    fn mark(&mut self, doc: DocumentId) {
        self.docs.insert(doc);
        self.since.get_or_insert_with(Instant::now);
    }

    fn due(&self, queue_empty: bool) -> bool {
        self.since
            .is_some_and(|t| queue_empty || t.elapsed() >= self.delay)
    }
}

/// Computes the records of every dirty document and hands them to the worker, behind the
/// storage tasks already queued for those documents. A document that left memory
/// meanwhile is projected by the worker from the store.
async fn project_dirty(
    engine: &Engine,
    dirty: &mut Dirty,
    jobs: &mpsc::Sender<Job>,
    state: &AppState,
) {
    dirty.since = None;
    for doc in std::mem::take(&mut dirty.docs) {
        let job = match engine.doc(&doc) {
            Some(d) => {
                state
                    .metrics
                    .projections_total
                    .with_label_values(&["memory"])
                    .inc();
                Job::Project {
                    doc,
                    projection: Box::new(crate::records::project(doc, d)),
                    heads: d.get_heads(),
                }
            }
            None => Job::Reproject { doc },
        };
        let _ = jobs.send(job).await;
    }
}

async fn run(
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<HubMsg>,
    jobs: mpsc::Sender<Job>,
    state: AppState,
    projection_delay: Duration,
) {
    let mut conns: HashMap<ConnId, ConnOut> = HashMap::new();
    let mut dirty = Dirty::new(projection_delay);
    load_actor_claims(&mut engine, &state).await;
    while let Some(msg) = rx.recv().await {
        handle_message(&mut engine, msg, &mut conns, &mut dirty, &jobs, &state).await;
        if dirty.due(rx.is_empty()) {
            project_dirty(&engine, &mut dirty, &jobs, &state).await;
        }
    }
}

/// One message of the hub's queue: into the engine, and its effects carried out.
async fn handle_message(
    engine: &mut Engine,
    msg: HubMsg,
    conns: &mut HashMap<ConnId, ConnOut>,
    dirty: &mut Dirty,
    jobs: &mpsc::Sender<Job>,
    state: &AppState,
) {
    let now = now_ms();
    let mut budget = None;
    let input = match msg {
        HubMsg::Connect { conn, writer, out } => {
            let device = writer.device;
            conns.insert(conn, ConnOut { out, device });
            state.live.device_connected(device.0);
            let touch = state.store.clone();
            tokio::spawn(async move {
                let _ = touch.touch_device_sync(device.0, now_ms(), None).await;
                if touch.backend() == crate::store::Backend::Postgres {
                    let _ = touch.presence_connected(device.0, now_ms()).await;
                }
            });
            Input::Connected {
                conn,
                writer: Some(writer),
            }
        }
        HubMsg::Frame {
            conn,
            bytes,
            budget: b,
        } => {
            budget = b;
            state
                .metrics
                .sync_messages_total
                .with_label_values(&["in"])
                .inc();
            Input::Received { conn, bytes }
        }
        HubMsg::Disconnect { conn } => {
            if let Some(c) = conns.remove(&conn) {
                // Connected until its last sync time is written: the dashboard
                // never sees it as neither connected nor just synced.
                live_gone(state, c.device);
            }
            Input::Disconnected { conn }
        }
        HubMsg::IoDone { task, result } => Input::IoDone { task, result },
        HubMsg::Edit { doc, edit } => Input::Edit { doc, edit },
        HubMsg::Want { doc } => Input::Want { doc },
        HubMsg::Tick => Input::Tick,
        HubMsg::StoredElsewhere { doc } => Input::StoredElsewhere { doc },
        HubMsg::StoredElsewhereAll => {
            let mut fx = Effects::default();
            for doc in engine.docs() {
                fx.extend(engine.handle(now, Input::StoredElsewhere { doc }));
            }
            settle(engine, fx, conns, dirty, jobs, state, now).await;
            return;
        }
        HubMsg::ActorClaims { claims } => {
            engine.correct_actor_claims(claims);
            return;
        }
        HubMsg::ReloadActorClaims => {
            match state.store.actor_claims().await {
                Ok(claims) => engine.correct_actor_claims(claims),
                Err(e) => tracing::warn!(error = %e, "could not read the actor claims again"),
            }
            return;
        }
        HubMsg::Revoked { device } => {
            let gone: Vec<ConnId> = conns
                .iter()
                .filter(|(_, c)| c.device == device)
                .map(|(k, _)| *k)
                .collect();
            let mut fx = Effects::default();
            for conn in gone {
                if let Some(c) = conns.remove(&conn) {
                    live_gone(state, c.device);
                    let err = Message::Error {
                        sender_id: Some(engine.config().peer_id.clone()),
                        target_id: None,
                        message: "device revoked".into(),
                        refusal: Some(wire::Refusal::new(wire::RefusalCode::DeviceRevoked, None)),
                    };
                    // Dropping the queue's sender ends the session once the
                    // queue is sent, even when these two did not fit.
                    let _ = c.out.try_send(Outbound::Frame(err.encode()));
                    let _ = c.out.try_send(Outbound::Close("device revoked"));
                }
                fx.extend(engine.handle(now, Input::Disconnected { conn }));
            }
            settle(engine, fx, conns, dirty, jobs, state, now).await;
            return;
        }
        HubMsg::Flush { done } => {
            // Everything before is written, the records of merged documents too.
            project_dirty(engine, dirty, jobs, state).await;
            let _ = jobs.send(Job::Flush(done)).await;
            return;
        }
    };
    let started = Instant::now();
    let fx = engine.handle(now, input);
    drop(budget);
    state
        .metrics
        .merge_seconds
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .docs_in_memory
        .set(i64::try_from(engine.docs_in_memory()).unwrap_or(i64::MAX));
    settle(engine, fx, conns, dirty, jobs, state, now).await;
}

/// The device left the connected set: its last sync time, then the live dashboard.
fn live_gone(state: &AppState, device: DeviceId) {
    let touch = state.store.clone();
    let live = state.live.clone();
    tokio::spawn(async move {
        let _ = touch.touch_device_sync(device.0, now_ms(), None).await;
        live.device_disconnected(device.0);
        if touch.backend() == crate::store::Backend::Postgres && !live.is_connected(device.0) {
            let _ = touch.presence_gone(device.0).await;
        }
    });
}

/// Carries out `fx`. A connection whose queue is full, or that the engine closes, is
/// disconnected for certain: its queue's sender is dropped (the session ends once what is
/// queued is sent) and the engine is told at once, so that it records nothing more as
/// sent to it; the device resumes from its saved sync state.
async fn settle(
    engine: &mut Engine,
    mut fx: Effects,
    conns: &mut HashMap<ConnId, ConnOut>,
    dirty: &mut Dirty,
    jobs: &mpsc::Sender<Job>,
    state: &AppState,
    now: i64,
) {
    loop {
        let gone = dispatch(fx, conns, dirty, jobs, state).await;
        if gone.is_empty() {
            return;
        }
        fx = Effects::default();
        for conn in gone {
            if let Some(c) = conns.remove(&conn) {
                live_gone(state, c.device);
            }
            fx.extend(engine.handle(now, Input::Disconnected { conn }));
        }
    }
}

/// Which device owns which actor id: without the claims, a device could write under
/// another's. Frames wait in the hub's queue meanwhile; the database is retried until it
/// answers.
async fn load_actor_claims(engine: &mut Engine, state: &AppState) {
    let mut wait = Duration::from_millis(100);
    loop {
        match state.store.actor_claims().await {
            Ok(claims) => {
                engine.load_actor_claims(claims);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not load actor claims; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Carries out `fx`; returns the connections to disconnect.
async fn dispatch(
    fx: Effects,
    conns: &HashMap<ConnId, ConnOut>,
    dirty: &mut Dirty,
    jobs: &mpsc::Sender<Job>,
    state: &AppState,
) -> Vec<ConnId> {
    let mut gone = Vec::new();
    let Effects {
        sends,
        tasks,
        events,
        close,
    } = fx;
    for (conn, bytes) in sends {
        if gone.contains(&conn) {
            continue;
        }
        if let Some(c) = conns.get(&conn) {
            state
                .metrics
                .sync_messages_total
                .with_label_values(&["out"])
                .inc();
            match c.out.try_send(Outbound::Frame(bytes)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // A peer that cannot keep up is disconnected; it resumes from its
                    // sync state. The frame that did not fit was never sent.
                    state.metrics.slow_peers_closed_total.inc();
                    gone.push(conn);
                }
                // The session has already ended; its disconnect is on its way.
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(conn),
            }
        }
    }
    if !tasks.is_empty() {
        let _ = jobs.send(Job::Tasks(tasks)).await;
    }
    for event in events {
        match event {
            Event::DocChanged { doc, .. } => dirty.mark(doc),
            Event::Evicted { doc } if dirty.docs.remove(&doc) => {
                let _ = jobs.send(Job::Reproject { doc }).await;
            }
            Event::Refused {
                writer,
                doc,
                refusal,
                changes,
                ..
            } => {
                state
                    .metrics
                    .refusals_total
                    .with_label_values(&[refusal.code.as_str()])
                    .inc();
                let device = writer.as_ref().map(|w| w.device);
                tracing::warn!(doc = %doc, device = ?device.map(|d| d.to_string()), code = refusal.code.as_str(), changes, "changes refused");
                if let Some(device) = device {
                    let _ = jobs
                        .send(Job::Refusal {
                            device,
                            doc,
                            detail: refusal.to_string(),
                            code: refusal.code,
                        })
                        .await;
                }
            }
            Event::ProtocolError { conn, error } => {
                tracing::info!(conn = conn.0, error = %error, "protocol error");
            }
            Event::StorageFailed { doc, error } => {
                tracing::error!(doc = %doc, error = %error, "storage failed");
            }
            Event::LoadProblems { doc, problems } => {
                state
                    .metrics
                    .stored_unreadable_total
                    .inc_by(problems.len() as u64);
                for problem in problems {
                    tracing::error!(doc = %doc, problem = %problem, "stored document partly unreadable");
                }
            }
            _ => {}
        }
    }
    for conn in close {
        if let Some(c) = conns.get(&conn) {
            let _ = c.out.try_send(Outbound::Close("protocol"));
            if !gone.contains(&conn) {
                gone.push(conn);
            }
        }
    }
    gone
}
