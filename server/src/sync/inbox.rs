//! The hub's inbox: the messages it takes and the cheap handle every part of the server
//! uses to reach it (sessions, the storage worker, the server's own documents). The hub
//! itself (`hub.rs`) owns the engine; nothing here depends on it, so the worker and the
//! documents loop reach the hub without importing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::shared::Shared;
use kepu_sync_core::engine::{ConnId, IoResult, TaskId};
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

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
        /// Set by the first shard that drops the connection (shared by all shards).
        dropped: Arc<AtomicBool>,
    },
    /// A frame that does not decode: the engine answers why.
    Frame {
        conn: ConnId,
        bytes: Vec<u8>,
        /// Its share of the inbound byte budget, given back once the engine has it.
        budget: Option<OwnedSemaphorePermit>,
    },
    /// A frame decoded by the session, for the shard of its document.
    Message {
        conn: ConnId,
        msg: Box<Message>,
        /// Its share of the inbound byte budget, given back once the engine has it.
        budget: Option<OwnedSemaphorePermit>,
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
    StoredElsewhere {
        doc: DocumentId,
    },
    /// Every document in memory: notifications may have been missed.
    StoredElsewhereAll,
    /// Read every actor-id claim again (notifications may have been missed).
    ReloadActorClaims,
    Flush {
        done: oneshot::Sender<()>,
    },
}

/// Bytes of frames read from sockets and not yet handled by the engine, across all
/// connections. A session that would go beyond it waits before reading its socket again,
/// so a burst of devices slows at the socket instead of growing the server's memory.
pub const INBOUND_BUDGET: u32 = 64 << 20;
/// What a frame counts against [`INBOUND_BUDGET`] at least (bounds the number of small
/// frames waiting too).
const MIN_FRAME_COST: u32 = 1_024;

/// A handle on the hub, its engine shards (ADR 0135); cheap to clone. Every message
/// about one document goes to the shard of that document, so the frames of one
/// connection for one document keep their order; what concerns a connection as a whole
/// (connect, `join`, disconnect) goes to every shard, in order with its frames.
#[derive(Debug, Clone)]
pub struct SyncHub {
    shards: Arc<[mpsc::UnboundedSender<HubMsg>]>,
    inbound: Arc<Semaphore>,
    next_conn: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    derived: Arc<super::derived::DerivedRegistry>,
    /// What the shards share (actor-id claims, the revocation list).
    shared: Arc<Shared>,
}

/// The shard of `doc` among `shards`. Document ids are random (or, for the server's own
/// documents, hashes), so their last eight bytes spread evenly.
#[must_use]
pub fn shard_of(doc: &DocumentId, shards: usize) -> usize {
    let bytes = doc.as_bytes();
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&bytes[8..16]);
    let spread = u64::from_le_bytes(tail) % (shards.max(1) as u64);
    usize::try_from(spread).unwrap_or(0)
}

impl SyncHub {
    /// A handle over the shards' channels (each shard reads the other end of its own).
    pub(crate) fn new(
        shards: Vec<mpsc::UnboundedSender<HubMsg>>,
        derived: Arc<super::derived::DerivedRegistry>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            shards: shards.into(),
            derived,
            shared,
            inbound: Arc::new(Semaphore::new(INBOUND_BUDGET as usize)),
            next_conn: Arc::new(AtomicU64::new(1)),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Have every shard's tasks ended (the runtime is shutting down)?
    pub(crate) fn is_stopped(&self) -> bool {
        self.shards.iter().all(mpsc::UnboundedSender::is_closed)
    }

    /// Engine shards.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard that holds `doc`.
    #[must_use]
    pub fn shard_of(&self, doc: &DocumentId) -> usize {
        shard_of(doc, self.shards.len())
    }

    /// What the engine shards share; the relay rosters of edge boxes are set in it
    /// (ADR 0150).
    #[must_use]
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The ids at which the server creates documents itself (shared with the engine).
    #[must_use]
    pub fn derived_ids(&self) -> &super::derived::DerivedRegistry {
        &self.derived
    }

    /// To one shard.
    pub(crate) fn send_to(&self, shard: usize, msg: HubMsg) {
        if let Some(tx) = self.shards.get(shard) {
            let _ = tx.send(msg);
        }
    }

    /// To the shard of `doc`.
    pub(crate) fn send_doc(&self, doc: &DocumentId, msg: HubMsg) {
        self.send_to(self.shard_of(doc), msg);
    }

    /// To every shard, each its own copy.
    pub(crate) fn send_all(&self, msg: impl Fn() -> HubMsg) {
        for tx in self.shards.iter() {
            let _ = tx.send(msg());
        }
    }

    /// A shard dropped a connection (its queue was full, or it is gone): the others drop
    /// it too, so that its queue ends and its session closes.
    pub(crate) fn dropped_by(&self, shard: usize, conn: ConnId) {
        for (i, tx) in self.shards.iter().enumerate() {
            if i != shard {
                let _ = tx.send(HubMsg::Disconnect { conn });
            }
        }
    }

    /// Registers a new connection for an authenticated device.
    pub fn connect(&self, writer: Writer, out: mpsc::Sender<Outbound>) -> ConnId {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        self.connections.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicBool::new(false));
        let last = self.shards.len().saturating_sub(1);
        for shard in 0..last {
            self.send_to(
                shard,
                HubMsg::Connect {
                    conn,
                    writer: writer.clone(),
                    out: out.clone(),
                    dropped: dropped.clone(),
                },
            );
        }
        self.send_to(
            last,
            HubMsg::Connect {
                conn,
                writer,
                out,
                dropped,
            },
        );
        conn
    }

    /// A frame from a connection. Waits while the frames already handed over and not yet
    /// handled exceed the inbound budget (back-pressure to the socket that sends). The
    /// frame is decoded here, on the connection's own task, and goes to the shard of its
    /// document.
    pub async fn frame(&self, conn: ConnId, bytes: Vec<u8>) {
        let cost = u32::try_from(bytes.len())
            .unwrap_or(u32::MAX)
            .clamp(MIN_FRAME_COST, INBOUND_BUDGET);
        let budget = self.inbound.clone().acquire_many_owned(cost).await.ok();
        let Ok(msg) = wire::decode(&bytes) else {
            // The first shard answers what is wrong with it.
            return self.send_to(
                0,
                HubMsg::Frame {
                    conn,
                    bytes,
                    budget,
                },
            );
        };
        drop(bytes);
        let doc = match &msg {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. } => Some(*document_id),
            Message::Error { refusal, .. } => refusal.as_ref().and_then(|r| r.document_id),
            Message::Join { .. } | Message::Leave { .. } => {
                // Every shard learns who the peer is (or that it left); the first answers.
                let mut budget = budget;
                for shard in 0..self.shards.len() {
                    self.send_to(
                        shard,
                        HubMsg::Message {
                            conn,
                            msg: Box::new(msg.clone()),
                            budget: budget.take(),
                        },
                    );
                }
                return;
            }
            _ => None,
        };
        let shard = doc.map_or(0, |d| self.shard_of(&d));
        self.send_to(
            shard,
            HubMsg::Message {
                conn,
                msg: Box::new(msg),
                budget,
            },
        );
    }

    /// A connection closed.
    pub fn disconnect(&self, conn: ConnId) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.send_all(|| HubMsg::Disconnect { conn });
    }

    /// Writes an edit as the server.
    pub fn edit(&self, doc: DocumentId, edit: Edit) {
        self.send_doc(&doc, HubMsg::Edit { doc, edit });
    }

    /// Another node stored new changes of `doc`: if it is in memory, read and sync them.
    pub fn stored_elsewhere(&self, doc: DocumentId) {
        self.send_doc(&doc, HubMsg::StoredElsewhere { doc });
    }

    /// Other nodes may have stored changes of any document (notifications were missed):
    /// every document in memory reads its rows again.
    pub fn stored_elsewhere_all(&self) {
        self.send_all(|| HubMsg::StoredElsewhereAll);
    }

    /// The database holds these actor-id claims (first claim wins, whichever node made
    /// it): the engine refuses changes under them from any other device.
    pub fn actor_claims(&self, claims: Vec<(Vec<u8>, DeviceId)>) {
        // Shared by every shard, so it holds at once: the worker tells it before the
        // shard hears that the append failed.
        self.shared.correct_claims(claims);
    }

    /// Claims may have been made elsewhere unheard: read them all again.
    pub fn reload_actor_claims(&self) {
        self.send_to(0, HubMsg::ReloadActorClaims);
    }

    /// A device was revoked: close its connections at once.
    pub fn revoked(&self, device: DeviceId) {
        self.send_all(|| HubMsg::Revoked { device });
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Waits until everything the hub has handed to storage is written, in every shard.
    pub async fn flush(&self) {
        let mut waits = Vec::with_capacity(self.shards.len());
        for shard in 0..self.shards.len() {
            let (done, wait) = oneshot::channel();
            self.send_to(shard, HubMsg::Flush { done });
            waits.push(wait);
        }
        for wait in waits {
            let _ = wait.await;
        }
    }
}
