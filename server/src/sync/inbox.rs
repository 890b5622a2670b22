//! The hub's inbox: the messages it takes and the cheap handle every part of the server
//! uses to reach it (sessions, the storage worker, the server's own documents). The hub
//! itself (`hub.rs`) owns the engine; nothing here depends on it, so the worker and the
//! documents loop reach the hub without importing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::{ConnId, IoResult, TaskId};
use kepu_sync_core::ids::DeviceId;
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
    },
    Frame {
        conn: ConnId,
        bytes: Vec<u8>,
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
    /// Actor-id claims the database holds (another node made them, or an append was
    /// refused because of them): they replace what the engine believed.
    ActorClaims {
        claims: Vec<(Vec<u8>, DeviceId)>,
    },
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

/// A handle on the hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHub {
    tx: mpsc::UnboundedSender<HubMsg>,
    inbound: Arc<Semaphore>,
    next_conn: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    derived: Arc<super::derived::DerivedRegistry>,
}

impl SyncHub {
    /// A handle over the hub's channel (the hub reads the other end).
    pub(crate) fn new(
        tx: mpsc::UnboundedSender<HubMsg>,
        derived: Arc<super::derived::DerivedRegistry>,
    ) -> Self {
        Self {
            tx,
            derived,
            inbound: Arc::new(Semaphore::new(INBOUND_BUDGET as usize)),
            next_conn: Arc::new(AtomicU64::new(1)),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The ids at which the server creates documents itself (shared with the engine).
    #[must_use]
    pub fn derived_ids(&self) -> &super::derived::DerivedRegistry {
        &self.derived
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

    /// A frame from a connection. Waits while the frames already handed over and not yet
    /// handled exceed the inbound budget (back-pressure to the socket that sends).
    pub async fn frame(&self, conn: ConnId, bytes: Vec<u8>) {
        let cost = u32::try_from(bytes.len())
            .unwrap_or(u32::MAX)
            .clamp(MIN_FRAME_COST, INBOUND_BUDGET);
        let budget = self.inbound.clone().acquire_many_owned(cost).await.ok();
        self.send(HubMsg::Frame {
            conn,
            bytes,
            budget,
        });
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

    /// Another node stored new changes of `doc`: if it is in memory, read and sync them.
    pub fn stored_elsewhere(&self, doc: DocumentId) {
        self.send(HubMsg::StoredElsewhere { doc });
    }

    /// Other nodes may have stored changes of any document (notifications were missed):
    /// every document in memory reads its rows again.
    pub fn stored_elsewhere_all(&self) {
        self.send(HubMsg::StoredElsewhereAll);
    }

    /// The database holds these actor-id claims (first claim wins, whichever node made
    /// it): the engine refuses changes under them from any other device.
    pub fn actor_claims(&self, claims: Vec<(Vec<u8>, DeviceId)>) {
        if !claims.is_empty() {
            self.send(HubMsg::ActorClaims { claims });
        }
    }

    /// Claims may have been made elsewhere unheard: read them all again.
    pub fn reload_actor_claims(&self) {
        self.send(HubMsg::ReloadActorClaims);
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
