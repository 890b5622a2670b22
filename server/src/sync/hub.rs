//! The hub: a single task that owns the sync engine.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{Config, ConnId, Effects, Engine, Event, Input, Mode};
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::schema::booking_reader::ReadKind;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::inbox::HubMsg;
pub use super::inbox::{INBOUND_BUDGET, Outbound, SyncHub};
use super::touches::Touch;
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
    /// Engine shards, each one task with its own documents and storage worker, merging in
    /// parallel (ADR 0135). Default: the machine's cores, at most 16.
    pub engine_shards: usize,
    /// The key gate codes and passes verify against; `None`: this server's own. An edge
    /// box verifies against its upstream's (ADR 0150).
    pub proof_key: Option<kepu_sync_core::proof::ServerPublicKey>,
}

/// The default number of engine shards: one per core, at most 16.
#[must_use]
pub fn default_engine_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 16)
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_docs_in_memory: 20_000,
            idle_evict: Duration::from_secs(300),
            max_docs_per_conn: 2_000,
            projection_delay: Duration::from_millis(20),
            engine_shards: default_engine_shards(),
            proof_key: None,
        }
    }
}

impl SyncHub {
    /// Starts the hub: its engine shards, each with its storage worker.
    #[must_use]
    pub fn start(state: &AppState, config: &HubConfig) -> Self {
        let shards = config.engine_shards.clamp(1, 64);
        let seed = *state.store.server_seed();
        let storage_id = hex::encode(derive(&seed, b"kepu-storage-id"));
        let server_device = DeviceId::from_bytes(derive(&seed, b"kepu-server-device"));
        let actor: [u8; 16] = rand::random();
        let derived = super::derived::DerivedRegistry::new();
        let shared = kepu_sync_core::engine::shared::Shared::new();
        let claims_loaded = std::sync::Arc::new(tokio::sync::OnceCell::new());
        let mut txs = Vec::with_capacity(shards);
        let mut rxs = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            rxs.push(rx);
        }
        let hub = Self::new(txs, derived.clone(), shared.clone());
        let touches = super::touches::start(state.clone());
        for (shard, rx) in rxs.into_iter().enumerate() {
            let mut engine_config = Config::new(
                Mode::Server,
                format!("kepu-server-{}", &storage_id[..8]),
                storage_id.clone(),
                actor,
                Writer::server(server_device),
            );
            engine_config.max_docs_in_memory = config.max_docs_in_memory.div_ceil(shards);
            engine_config.idle_evict_ms =
                i64::try_from(config.idle_evict.as_millis()).unwrap_or(i64::MAX);
            engine_config.max_docs_per_conn = config.max_docs_per_conn;
            engine_config.proof_key =
                Some(config.proof_key.unwrap_or_else(|| {
                    kepu_sync_core::proof::ServerSigner::from_seed(seed).public()
                }));
            engine_config.revocations_doc = Some(super::documents::REVOCATIONS_DOC);
            engine_config.derived_ids = Some(derived.clone());
            engine_config.shared = shared.clone();
            engine_config.answers_join = shard == 0;
            let jobs = worker::start(state.clone(), hub.clone(), shard);
            tokio::spawn(run(
                Shard {
                    engine: Engine::new(engine_config),
                    index: shard,
                    hub: hub.clone(),
                    conns: HashMap::new(),
                    dirty: Dirty::new(config.projection_delay),
                    projector: crate::records::Projector::default(),
                    jobs,
                    state: state.clone(),
                    docs_counted: 0,
                    work_counted: kepu_sync_core::engine::Work::default(),
                    claims_loaded: claims_loaded.clone(),
                    touches: touches.clone(),
                },
                rx,
            ));
        }
        // Keep the revocation list in memory: every pass check reads it.
        hub.send_doc(
            &super::documents::REVOCATIONS_DOC,
            HubMsg::Want {
                doc: super::documents::REVOCATIONS_DOC,
            },
        );
        let ticker = hub.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                if ticker.is_stopped() {
                    break;
                }
                ticker.send_all(|| HubMsg::Tick);
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
    /// Shared by the shards: the first to drop the connection for being slow counts it.
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// One engine shard: its engine, the connections it knows (every connection, each with
/// its own sender on the connection's queue), the documents merged since their records
/// were computed, and its storage worker.
struct Shard {
    engine: Engine,
    index: usize,
    hub: SyncHub,
    conns: HashMap<ConnId, ConnOut>,
    dirty: Dirty,
    /// Keeps each booking's scans between projections (ADR 0181).
    projector: crate::records::Projector,
    jobs: mpsc::Sender<Job>,
    state: AppState,
    /// Documents in memory as last added to the gauge.
    docs_counted: usize,
    /// The engine's work as last added to `kepu_engine_work_total`.
    work_counted: kepu_sync_core::engine::Work,
    /// Set once the actor claims are loaded (by any shard).
    claims_loaded: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// Devices' connections opening and leaving, for their last sync times (the first
    /// shard's only: it speaks for connections).
    touches: mpsc::UnboundedSender<Touch>,
}

/// Documents merged since their records were last computed. A burst of frames for one
/// booking (ten gates syncing a day's scans) is projected once, when the hub's queue is
/// empty or the oldest change has waited [`HubConfig::projection_delay`], not once per
/// frame.
struct Dirty {
    /// Each document with when it was first marked since its last projection.
    docs: BTreeMap<DocumentId, Instant>,
    since: Option<Instant>,
    delay: Duration,
}

impl Dirty {
    const fn new(delay: Duration) -> Self {
        Self {
            docs: BTreeMap::new(),
            since: None,
            delay,
        }
    }

    fn mark(&mut self, doc: DocumentId) {
        let now = Instant::now();
        self.docs.entry(doc).or_insert(now);
        self.since.get_or_insert(now);
    }

    fn due(&self, queue_empty: bool) -> bool {
        self.since
            .is_some_and(|t| queue_empty || t.elapsed() >= self.delay)
    }
}

/// At most so many decoded messages are read from a shard's queue and handed to its
/// engine together (ADR 0191): one document's sync messages among them are merged with
/// one apply. Bounds the time one hand-over holds the shard.
const READ_TOGETHER: usize = 64;

async fn run(mut shard: Shard, mut rx: mpsc::UnboundedReceiver<HubMsg>) {
    load_actor_claims(&shard).await;
    let mut next: Option<HubMsg> = None;
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        if matches!(msg, HubMsg::Message { .. }) {
            // The decoded messages queued behind it, up to the first of another kind
            // (which is handled after them, in its order). A storage completion or a new
            // connection among them is handled at once: as if the disk had been that
            // much faster, or the device had connected that much earlier.
            let mut read = vec![msg];
            while read.len() < READ_TOGETHER {
                match rx.try_recv() {
                    Ok(m @ HubMsg::Message { .. }) => read.push(m),
                    Ok(m @ (HubMsg::IoDone { .. } | HubMsg::Connect { .. })) => {
                        shard.handle_message(m).await;
                    }
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            shard.handle_messages(read).await;
        } else {
            shard.handle_message(msg).await;
        }
        if shard.dirty.due(next.is_none() && rx.is_empty()) {
            shard.project_dirty().await;
        }
    }
}

impl Shard {
    /// The first shard speaks for a connection as a whole: the dashboard's connected
    /// devices, the last sync time, the `peer` answer and the revocation notice.
    const fn speaks_for_connections(&self) -> bool {
        self.index == 0
    }

    /// Computes the records of every dirty document and hands them to the worker, behind
    /// the storage tasks already queued for those documents. A document that left memory
    /// meanwhile is projected by the worker from the store.
    async fn project_dirty(&mut self) {
        self.dirty.since = None;
        for (doc, since) in std::mem::take(&mut self.dirty.docs) {
            let job = match self.engine.doc(&doc) {
                Some(d) => {
                    let metrics = &self.state.metrics;
                    metrics
                        .projections_total
                        .with_label_values(&["memory"])
                        .inc();
                    let (projection, read) = self.projector.project(doc, d);
                    if let Some(read) = read {
                        let label = match read {
                            ReadKind::Whole => "whole",
                            ReadKind::Changed => "changed",
                        };
                        metrics
                            .booking_reads_total
                            .with_label_values(&[label])
                            .inc();
                    }
                    Job::Project {
                        doc,
                        projection: Box::new(projection),
                        heads: d.get_heads(),
                        since,
                    }
                }
                None => {
                    self.projector.forget(&doc);
                    Job::Reproject { doc }
                }
            };
            let _ = self.jobs.send(job).await;
        }
    }

    /// One message of the shard's queue: into the engine, and its effects carried out.
    async fn handle_message(&mut self, msg: HubMsg) {
        let now = now_ms();
        let mut budget = None;
        let input = match msg {
            HubMsg::Connect {
                conn,
                writer,
                out,
                dropped,
            } => {
                let device = writer.device;
                self.conns.insert(
                    conn,
                    ConnOut {
                        out,
                        device,
                        dropped,
                    },
                );
                if self.speaks_for_connections() {
                    self.state.live.device_connected(device.0);
                    let _ = self.touches.send(Touch::Connected(device.0, now_ms()));
                }
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
                self.count_in();
                Input::Received { conn, bytes }
            }
            HubMsg::Message {
                conn,
                msg,
                budget: b,
            } => {
                budget = b;
                self.count_in();
                Input::Message { conn, msg }
            }
            HubMsg::Disconnect { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    self.gone(c.device);
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
                for doc in self.engine.docs() {
                    fx.extend(self.engine.handle(now, Input::StoredElsewhere { doc }));
                }
                self.settle(fx, now).await;
                return;
            }
            HubMsg::ReloadActorClaims => {
                match self.state.store.actor_claims().await {
                    Ok(claims) => self.engine.config().shared.correct_claims(claims),
                    Err(e) => tracing::warn!(error = %e, "could not read the actor claims again"),
                }
                return;
            }
            HubMsg::Revoked { device } => {
                let gone: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.device == device)
                    .map(|(k, _)| *k)
                    .collect();
                let mut fx = Effects::default();
                for conn in gone {
                    if let Some(c) = self.conns.remove(&conn) {
                        self.gone(c.device);
                        if self.speaks_for_connections() {
                            let err = Message::Error {
                                sender_id: Some(self.engine.config().peer_id.clone()),
                                target_id: None,
                                message: "device revoked".into(),
                                refusal: Some(wire::Refusal::new(
                                    wire::RefusalCode::DeviceRevoked,
                                    None,
                                )),
                            };
                            // Dropping the queue's senders (every shard does) ends the
                            // session once the queue is sent, even when these two did
                            // not fit.
                            let _ = c.out.try_send(Outbound::Frame(err.encode()));
                            let _ = c.out.try_send(Outbound::Close("device revoked"));
                        }
                    }
                    fx.extend(self.engine.handle(now, Input::Disconnected { conn }));
                }
                self.settle(fx, now).await;
                return;
            }
            HubMsg::Flush { done } => {
                // Everything before is written, the records of merged documents too.
                self.project_dirty().await;
                let _ = self.jobs.send(Job::Flush(done)).await;
                return;
            }
        };
        self.feed(now, input, budget.into_iter().collect()).await;
    }

    /// Decoded messages read from the queue together: one input for the engine.
    async fn handle_messages(&mut self, read: Vec<HubMsg>) {
        if read.len() == 1 {
            for msg in read {
                self.handle_message(msg).await;
            }
            return;
        }
        let mut budgets = Vec::with_capacity(read.len());
        let mut msgs = Vec::with_capacity(read.len());
        for m in read {
            if let HubMsg::Message { conn, msg, budget } = m {
                self.count_in();
                budgets.extend(budget);
                msgs.push((conn, msg));
            }
        }
        self.feed(now_ms(), Input::Messages { msgs }, budgets).await;
    }

    /// One input into the engine; the frames' budgets given back once it has them, and
    /// its effects carried out.
    async fn feed(&mut self, now: i64, input: Input, budgets: Vec<OwnedSemaphorePermit>) {
        let started = Instant::now();
        let fx = self.engine.handle(now, input);
        drop(budgets);
        self.state
            .metrics
            .merge_seconds
            .observe(started.elapsed().as_secs_f64());
        self.count_docs();
        self.settle(fx, now).await;
    }

    fn count_in(&self) {
        self.state
            .metrics
            .sync_messages_total
            .with_label_values(&["in"])
            .inc();
    }

    /// Adds this shard's change of documents in memory to the gauge of all shards, and
    /// its engine's work since to `kepu_engine_work_total`.
    fn count_docs(&mut self) {
        let now = self.engine.docs_in_memory();
        if now != self.docs_counted {
            let delta = i64::try_from(now).unwrap_or(i64::MAX)
                - i64::try_from(self.docs_counted).unwrap_or(i64::MAX);
            self.state.metrics.docs_in_memory.add(delta);
            self.docs_counted = now;
        }
        let work = self.engine.work();
        if work != self.work_counted {
            let was = std::mem::replace(&mut self.work_counted, work);
            let steps = [
                (work.history_walks, was.history_walks),
                (work.whole_saves, was.whole_saves),
                (work.whole_reused, was.whole_reused),
                (work.changes_reused, was.changes_reused),
                (work.documents_split, was.documents_split),
                (work.changes_rebuilt, was.changes_rebuilt),
            ];
            for (step, (now, before)) in crate::metrics::ENGINE_STEPS.iter().zip(steps) {
                if now > before {
                    self.state
                        .metrics
                        .engine_work_total
                        .with_label_values(&[step])
                        .inc_by(now - before);
                }
            }
        }
    }

    /// A device's connection left this shard. The first shard records its last sync time,
    /// then tells the live dashboard.
    fn gone(&self, device: DeviceId) {
        if self.speaks_for_connections() {
            let _ = self.touches.send(Touch::Gone(device.0, now_ms()));
        }
    }

    /// Carries out `fx`. A connection whose queue is full, or that the engine closes, is
    /// disconnected for certain: every shard drops its sender on the connection's queue
    /// (the session ends once what is queued is sent) and this engine is told at once, so
    /// that it records nothing more as sent to it; the device resumes from its saved sync
    /// state.
    async fn settle(&mut self, mut fx: Effects, now: i64) {
        loop {
            let gone = self.dispatch(fx).await;
            if gone.is_empty() {
                return;
            }
            fx = Effects::default();
            for conn in gone {
                if let Some(c) = self.conns.remove(&conn) {
                    self.gone(c.device);
                }
                self.hub.dropped_by(self.index, conn);
                fx.extend(self.engine.handle(now, Input::Disconnected { conn }));
            }
        }
    }

    /// Carries out `fx`; returns the connections to disconnect.
    async fn dispatch(&mut self, fx: Effects) -> Vec<ConnId> {
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
            if let Some(c) = self.conns.get(&conn) {
                self.state
                    .metrics
                    .sync_messages_total
                    .with_label_values(&["out"])
                    .inc();
                match c.out.try_send(Outbound::Frame(bytes)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // A peer that cannot keep up is disconnected; it resumes from its
                        // sync state. The frame that did not fit was never sent.
                        if !c.dropped.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            self.state.metrics.slow_peers_closed_total.inc();
                        }
                        gone.push(conn);
                    }
                    // The session has already ended; its disconnect is on its way.
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push(conn),
                }
            }
        }
        if !tasks.is_empty() {
            let _ = self.jobs.send(Job::Tasks(tasks)).await;
        }
        for event in events {
            self.on_event(event).await;
        }
        for conn in close {
            if let Some(c) = self.conns.get(&conn) {
                let _ = c.out.try_send(Outbound::Close("protocol"));
                if !gone.contains(&conn) {
                    gone.push(conn);
                }
            }
        }
        gone
    }

    async fn on_event(&mut self, event: Event) {
        let state = &self.state;
        match event {
            Event::DocChanged { doc, .. } => self.dirty.mark(doc),
            Event::MergedTogether { messages, .. } => {
                state.metrics.merged_together.observe(messages as f64);
            }
            Event::Evicted { doc } if self.dirty.docs.remove(&doc).is_some() => {
                let _ = self.jobs.send(Job::Reproject { doc }).await;
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
                    let _ = self
                        .jobs
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
}

/// Which device owns which actor id: without the claims, a device could write under
/// another's. Frames wait in the shards' queues meanwhile; the database is retried until
/// it answers. The claims are shared by every shard: one of them reads them, the others
/// wait for it.
async fn load_actor_claims(shard: &Shard) {
    shard
        .claims_loaded
        .get_or_init(|| async {
            let mut wait = Duration::from_millis(100);
            loop {
                match shard.state.store.actor_claims().await {
                    Ok(claims) => {
                        shard.engine.config().shared.load_claims(claims);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not load actor claims; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
        .await;
}
