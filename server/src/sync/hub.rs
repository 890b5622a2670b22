//! The hub: a single task that owns the sync engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::{
    Config, ConnId, Effects, Engine, Event, Input, IoResult, Mode, TaskId,
};
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use tokio::sync::{mpsc, oneshot};

use super::worker::{self, Job};
use crate::app_state::AppState;
use crate::clock::now_ms;

/// What a connection's session is told to do.
#[derive(Debug)]
pub enum Outbound {
    /// Send this binary frame.
    Frame(Vec<u8>),
    /// Close the connection (after sending what is queued).
    Close(&'static str),
}

#[derive(Debug)]
pub(crate) enum HubMsg {
    Want {
        doc: DocumentId,
    },
    Connect {
        conn: ConnId,
        writer: Writer,
        out: mpsc::Sender<Outbound>,
    },
    Frame {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Disconnect {
        conn: ConnId,
    },
    IoDone {
        task: TaskId,
        result: IoResult,
    },
    Edit {
        doc: DocumentId,
        edit: Edit,
    },
    Revoked {
        device: DeviceId,
    },
    Tick,
    Flush {
        done: oneshot::Sender<()>,
    },
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Documents kept in memory at most.
    pub max_docs_in_memory: usize,
    /// Idle documents leave memory after this long.
    pub idle_evict: Duration,
    /// Documents one connection may sync.
    pub max_docs_per_conn: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_docs_in_memory: 20_000,
            idle_evict: Duration::from_secs(300),
            max_docs_per_conn: 2_000,
        }
    }
}

/// A handle on the hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHub {
    tx: mpsc::UnboundedSender<HubMsg>,
    next_conn: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
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
        let hub = Self {
            tx: tx.clone(),
            next_conn: Arc::new(AtomicU64::new(1)),
            connections: Arc::new(AtomicUsize::new(0)),
        };
        let jobs = worker::start(state.clone(), hub.clone());
        tokio::spawn(run(Engine::new(engine_config), rx, jobs, state));
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

    pub(crate) fn send(&self, msg: HubMsg) {
        let _ = self.tx.send(msg);
    }

    /// Registers a new connection for an authenticated device.
    pub fn connect(&self, writer: Writer, out: mpsc::Sender<Outbound>) -> ConnId {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.send(HubMsg::Connect { conn, writer, out });
        conn
    }

    /// A frame from a connection.
    pub fn frame(&self, conn: ConnId, bytes: Vec<u8>) {
        self.send(HubMsg::Frame { conn, bytes });
    }

    /// A connection closed.
    pub fn disconnect(&self, conn: ConnId) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.send(HubMsg::Disconnect { conn });
    }

    /// Writes an edit as the server.
    pub fn edit(&self, doc: DocumentId, edit: Edit) {
        self.send(HubMsg::Edit { doc, edit });
    }

    /// A device was revoked: close its connections at once.
    pub fn revoked(&self, device: DeviceId) {
        self.send(HubMsg::Revoked { device });
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Waits until everything the hub has handed to storage is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(HubMsg::Flush { done });
        let _ = wait.await;
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

async fn run(
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<HubMsg>,
    jobs: mpsc::UnboundedSender<Job>,
    state: AppState,
) {
    let mut conns: HashMap<ConnId, ConnOut> = HashMap::new();
    while let Some(msg) = rx.recv().await {
        let now = now_ms();
        let input = match msg {
            HubMsg::Connect { conn, writer, out } => {
                let device = writer.device;
                conns.insert(conn, ConnOut { out, device });
                state.live.device_connected(device.0);
                let touch = state.store.clone();
                tokio::spawn(async move {
                    let _ = touch.touch_device_sync(device.0, now_ms(), None).await;
                });
                Input::Connected {
                    conn,
                    writer: Some(writer),
                }
            }
            HubMsg::Frame { conn, bytes } => {
                state
                    .metrics
                    .sync_messages_total
                    .with_label_values(&["in"])
                    .inc();
                Input::Received { conn, bytes }
            }
            HubMsg::Disconnect { conn } => {
                if let Some(c) = conns.remove(&conn) {
                    let touch = state.store.clone();
                    let live = state.live.clone();
                    tokio::spawn(async move {
                        let _ = touch.touch_device_sync(c.device.0, now_ms(), None).await;
                        // Connected until its last sync time is written: the dashboard
                        // never sees it as neither connected nor just synced.
                        live.device_disconnected(c.device.0);
                    });
                }
                Input::Disconnected { conn }
            }
            HubMsg::IoDone { task, result } => Input::IoDone { task, result },
            HubMsg::Edit { doc, edit } => Input::Edit { doc, edit },
            HubMsg::Want { doc } => Input::Want { doc },
            HubMsg::Tick => Input::Tick,
            HubMsg::Revoked { device } => {
                let gone: Vec<ConnId> = conns
                    .iter()
                    .filter(|(_, c)| c.device == device)
                    .map(|(k, _)| *k)
                    .collect();
                for conn in gone {
                    if let Some(c) = conns.get(&conn) {
                        let err = Message::Error {
                            sender_id: Some(engine.config().peer_id.clone()),
                            target_id: None,
                            message: "device revoked".into(),
                            refusal: Some(wire::Refusal {
                                code: "device-revoked".into(),
                                document_id: None,
                                changes: Vec::new(),
                            }),
                        };
                        let _ = c.out.try_send(Outbound::Frame(err.encode()));
                        let _ = c.out.try_send(Outbound::Close("device revoked"));
                    }
                }
                continue;
            }
            HubMsg::Flush { done } => {
                let _ = jobs.send(Job::Flush(done));
                continue;
            }
        };
        let started = Instant::now();
        let fx = engine.handle(now, input);
        state
            .metrics
            .merge_seconds
            .observe(started.elapsed().as_secs_f64());
        state
            .metrics
            .docs_in_memory
            .set(i64::try_from(engine.docs_in_memory()).unwrap_or(i64::MAX));
        dispatch(&engine, fx, &conns, &jobs, &state);
    }
}

fn dispatch(
    engine: &Engine,
    fx: Effects,
    conns: &HashMap<ConnId, ConnOut>,
    jobs: &mpsc::UnboundedSender<Job>,
    state: &AppState,
) {
    let Effects {
        sends,
        tasks,
        events,
        close,
    } = fx;
    for (conn, bytes) in sends {
        if let Some(c) = conns.get(&conn) {
            state
                .metrics
                .sync_messages_total
                .with_label_values(&["out"])
                .inc();
            if c.out.try_send(Outbound::Frame(bytes)).is_err() {
                // A peer that cannot keep up is closed; it resumes from its sync state.
                let _ = c.out.try_send(Outbound::Close("too slow"));
            }
        }
    }
    if !tasks.is_empty() {
        let _ = jobs.send(Job::Tasks(tasks));
    }
    for event in events {
        match event {
            Event::DocChanged { doc, .. } => {
                if let Some(d) = engine.doc(&doc) {
                    let projection = crate::projection::project(doc, d);
                    let _ = jobs.send(Job::Project {
                        doc,
                        projection: Box::new(projection),
                        heads: d.get_heads(),
                    });
                }
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
                    let _ = jobs.send(Job::Refusal {
                        device,
                        doc,
                        code: refusal.code.as_str(),
                        detail: refusal.to_string(),
                    });
                }
            }
            Event::ProtocolError { conn, error } => {
                tracing::info!(conn = conn.0, error = %error, "protocol error");
            }
            Event::StorageFailed { doc, error } => {
                tracing::error!(doc = %doc, error = %error, "storage failed");
            }
            _ => {}
        }
    }
    for conn in close {
        if let Some(c) = conns.get(&conn) {
            let _ = c.out.try_send(Outbound::Close("protocol"));
        }
    }
}
