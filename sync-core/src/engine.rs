//! The sans-IO sync engine, the same on the server and on a phone.
//!
//! `handle(now, input) -> Effects`: no runtime, no clock, no sockets. The host feeds it
//! frames, connection events, storage completions and local edits; it answers with
//! frames to send, storage tasks (each with an id), events and connections to close.
//!
//! Guarantees:
//! - **Validation before merge** (server mode): incoming changes are checked against the
//!   sender's identity; refused changes never reach storage or other peers, and the
//!   sender gets an `error` with a machine-readable refusal.
//! - **Persist before acknowledge**: while an `Append` of a document is in flight, no
//!   sync message for that document leaves the engine; replies (which carry the heads
//!   that acknowledge the changes) are generated when the append completes.
//! - **Deny looks like unknown**: a document a peer may not read gets `doc-unavailable`.
//! - **Bounded memory**: idle documents are evicted; sync states are persisted per peer
//!   storage id so that a reconnect sends only what is new.
//!
//! This file holds the engine's types, its settings and [`Engine::handle`]; the rest is
//! in rooms, each an `impl Engine` block of its own:
//! - `connections`: handshake, frame dispatch, closing a peer with a reason;
//! - `documents`: loading and queueing, applying sync messages, replies, local edits;
//! - `merge`: server-side validation of a device's changes, change by change on refusal;
//! - `together`: one document's sync messages read together, merged with one apply;
//! - `storage`: storage tasks and their completions, retries, compaction;
//! - `elsewhere`: merging changes another server node stored in the shared database;
//! - `client`: what only a phone's engine does (announce, fetch, access lost, quarantine);
//! - `memory`: evicting idle documents;
//! - `admit`, [`guard`]: what a device's message may cost and which actor ids it may use;
//! - [`io`]: the tasks, results and events exchanged with the host.

mod admit;
mod client;
mod connections;
mod documents;
mod elsewhere;
pub mod guard;
pub mod io;
mod memory;
mod merge;
pub mod shared;
mod storage;
mod together;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::sync;
use automerge::{ActorId, Automerge, ChangeHash};

pub use io::{ConnId, Effects, Event, IoResult, Loaded, StorageTask, StoredChange, TaskId};

use crate::doc_id::DocumentId;
use crate::edits::Edit;
use crate::ids::DeviceId;
use crate::validate::{self};
use crate::writer::Writer;

/// Which end of the connection this engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts connections, validates, persists, fans out.
    Server,
    /// Dials the server, announces local documents, trusts what the server sends.
    Client,
}

/// With [`Config::compact_when_idle`], a document whose rows reach this many times
/// `compact_after` is compacted after an append all the same (bounds rows and load time).
pub const IDLE_COMPACT_FACTOR: usize = 32;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server or client.
    pub mode: Mode,
    /// Our peer id on the wire.
    pub peer_id: String,
    /// Our stable storage id (peers persist sync states against it).
    pub storage_id: String,
    /// Actor id for our own edits (16 random bytes per install; never shared).
    pub actor: [u8; 16],
    /// Identity of our own edits (the server's, or the device's).
    pub writer: Writer,
    /// Documents kept in memory at most (idle ones are evicted beyond this).
    pub max_docs_in_memory: usize,
    /// A document idle this long (ms) leaves memory.
    pub idle_evict_ms: i64,
    /// Compact a document once it has this many change rows and they take at least as
    /// many bytes as its last snapshot (so a document's compactions cost, together, a
    /// bounded multiple of its size instead of growing with its square; ADR 0115).
    pub compact_after: usize,
    /// Compact only on [`Input::Tick`] (the host sends it when idle), not right after an
    /// append, unless the rows reach `compact_after` × [`IDLE_COMPACT_FACTOR`]: a phone
    /// keeps the full save of a document off the write that a person waits for (ADR 0125).
    pub compact_when_idle: bool,
    /// Documents one connection may sync at most.
    pub max_docs_per_conn: usize,
    /// Times a failed append is retried before the document is dropped from memory.
    pub append_retries: u32,
    /// Server: verify check-in proofs again with this key (and the revocation list
    /// document, when loaded). `None` skips proof checks.
    pub proof_key: Option<crate::proof::ServerPublicKey>,
    /// The document holding the pass revocation list, if any.
    pub revocations_doc: Option<DocumentId>,
    /// Server: longest time (ms) a busy document keeps applying new frames before it
    /// holds them until its appends are written and its replies sent. Bounds how long a
    /// steady stream of writes to one document can delay its acknowledgements.
    pub max_ack_delay_ms: i64,
    /// Frames (and edits) one document queues while it loads or while its replies are
    /// due; a connection that would queue more is closed with `overloaded` and resumes
    /// from its sync state.
    pub max_pending_per_doc: usize,
    /// A peer's sync state is saved when it changed and this long (ms) has passed since
    /// its last save, so that a crash costs at most a small resend.
    pub save_state_every_ms: i64,
    /// Server: the ids at which the server creates documents itself; a device may not
    /// create a document there (`may-not-create`).
    pub derived_ids: Option<std::sync::Arc<dyn validate::DerivedIds>>,
    /// What one incoming sync message may cost (see [`guard`]).
    pub limits: guard::Limits,
    /// What this engine shares with the other engine shards of its process: actor-id
    /// claims and the revocation list ([`shared::Shared`], ADR 0135). One engine alone
    /// gets its own.
    pub shared: std::sync::Arc<shared::Shared>,
    /// Does this engine answer a device's `join` with `peer`? Every shard of a server
    /// learns the device's peer and storage ids from the `join`; one answers it.
    pub answers_join: bool,
}

impl Config {
    /// Sensible defaults for a mode.
    #[must_use]
    pub fn new(
        mode: Mode,
        peer_id: String,
        storage_id: String,
        actor: [u8; 16],
        writer: Writer,
    ) -> Self {
        Self {
            mode,
            peer_id,
            storage_id,
            actor,
            writer,
            max_docs_in_memory: 10_000,
            idle_evict_ms: 5 * 60 * 1000,
            compact_after: 64,
            compact_when_idle: false,
            max_docs_per_conn: 2_000,
            append_retries: 3,
            proof_key: None,
            revocations_doc: None,
            max_ack_delay_ms: 1_000,
            max_pending_per_doc: 1_024,
            save_state_every_ms: 5_000,
            derived_ids: None,
            limits: guard::Limits::default(),
            shared: shared::Shared::new(),
            answers_join: true,
        }
    }
}

/// Inputs to the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// A connection opened. Server: `writer` is the authenticated device. Client: `None`
    /// (the remote end is the server) and the engine sends `join`.
    Connected {
        /// Connection.
        conn: ConnId,
        /// Identity of the remote device (server mode).
        writer: Option<Writer>,
    },
    /// A binary frame arrived.
    Received {
        /// Connection.
        conn: ConnId,
        /// Frame bytes.
        bytes: Vec<u8>,
    },
    /// A message the host decoded from a connection's frame with [`crate::wire::decode`]
    /// (a frame that does not decode goes in as [`Input::Received`], which answers it).
    Message {
        /// Connection.
        conn: ConnId,
        /// The message.
        msg: Box<crate::wire::Message>,
    },
    /// Messages the host decoded and read from its queue together, in the order they came
    /// (server). Each is handled as [`Input::Message`] would; the sync messages of one
    /// document from several devices are merged with one automerge apply and stored with
    /// one append where that is the same as merging them one by one (ADR 0191).
    Messages {
        /// Each message with its connection.
        msgs: Vec<(ConnId, Box<crate::wire::Message>)>,
    },
    /// A connection closed.
    Disconnected {
        /// Connection.
        conn: ConnId,
    },
    /// A storage task finished.
    IoDone {
        /// Task.
        task: TaskId,
        /// Result.
        result: IoResult,
    },
    /// Write an edit as our own change (after validating it as our writer).
    Edit {
        /// Document.
        doc: DocumentId,
        /// Edit.
        edit: Edit,
    },
    /// Client: these documents exist locally (announce them on connect).
    Register {
        /// Documents.
        docs: Vec<DocumentId>,
    },
    /// Client: fetch a document we do not have yet (a venue, a booking shared with us).
    Want {
        /// Document.
        doc: DocumentId,
    },
    /// Time passes: evict idle documents, save sync states that moved, and (with
    /// [`Config::compact_when_idle`]) compact the documents that are due.
    Tick,
    /// Server: another node sharing our database stored new changes of this document.
    /// If the document is in memory, the engine reads the change rows it does not hold
    /// ([`StorageTask::LoadChanges`]), merges them as already validated (the storing node
    /// validated them) and syncs them to its peers. Otherwise nothing: the next load reads
    /// them.
    StoredElsewhere {
        /// Document.
        doc: DocumentId,
    },
}

#[derive(Debug)]
struct PeerDoc {
    state: sync::State,
    /// A frame from this peer arrived while the document was busy and was not answered:
    /// the next `generate` must send a message, whatever automerge's state says (a
    /// heads-only message read while busy makes automerge believe the peer was told).
    owed: bool,
    /// Shared heads when this state was last saved, and when.
    saved_heads: Vec<ChangeHash>,
    saved_at: i64,
    /// When this peer last brought changes to the document (server): a device writing
    /// now hears others' changes with its own acknowledgements, not before them.
    wrote_at: Option<i64>,
}

impl PeerDoc {
    fn new(state: sync::State, now: i64) -> Self {
        Self {
            saved_heads: state.shared_heads.clone(),
            state,
            owed: false,
            saved_at: now,
            wrote_at: None,
        }
    }
}

#[derive(Debug)]
enum Pending {
    Frame { conn: ConnId, doc_msg: DocMsg },
    Edit(Edit),
    Announce { conn: ConnId },
    Nothing,
}

impl Pending {
    /// The connection a queued frame came from.
    const fn frame_conn(&self) -> Option<ConnId> {
        match self {
            Self::Frame { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct DocMsg {
    request: bool,
    data: Vec<u8>,
}

/// A device's sync message for one document that passed the payload guard and admission.
#[derive(Debug)]
struct Admitted {
    message: sync::Message,
    writer: Option<Writer>,
    /// The payload guard's reading of the message as admitted (server).
    scan: Option<guard::Scan>,
}

#[derive(Debug)]
struct DocEntry {
    doc: Automerge,
    loaded: bool,
    load_task: Option<TaskId>,
    pending: Vec<Pending>,
    peers: BTreeMap<ConnId, PeerDoc>,
    saved_states: HashMap<String, Vec<u8>>,
    stored_rows: Vec<ChangeHash>,
    /// Bytes of the change rows in `stored_rows`.
    stored_bytes: usize,
    /// Bytes of the stored snapshot (0 when there is none).
    snapshot_bytes: usize,
    /// The heads of the stored snapshot as last read or written, when the host keeps
    /// them (see [`Loaded::snapshot_heads`]).
    snapshot_heads: Option<Vec<ChangeHash>>,
    appends_in_flight: usize,
    /// Devices (by the connection that brought the changes, and by the owners of their
    /// actor ids) with changes in those appends, each with its number of appends: a
    /// device is not sent heads that cover its own unwritten changes (ADR 0198).
    unwritten: HashMap<DeviceId, u32>,
    compacting: bool,
    last_used: i64,
    refused: HashSet<ChangeHash>,
    /// Which incarnation of the document in memory this is: completions of tasks issued
    /// for an earlier one (dropped after a storage failure, evicted) are ignored.
    generation: u64,
    /// Since when appends have been in flight without a break.
    busy_since: Option<i64>,
    /// Changes stored elsewhere are being read ([`Input::StoredElsewhere`]).
    refreshing: bool,
    /// More were stored elsewhere meanwhile (or while the document loaded): read again.
    refresh_again: bool,
}

#[derive(Debug)]
struct Conn {
    writer: Option<Writer>,
    remote_peer: Option<String>,
    remote_storage: Option<String>,
    joined: bool,
    docs: BTreeSet<DocumentId>,
}

#[derive(Debug)]
enum TaskPurpose {
    Load(DocumentId),
    Append {
        doc: DocumentId,
        generation: u64,
        /// What the completion needs; the task itself carries the changes.
        appended: storage::Appended,
    },
    Compact {
        doc: DocumentId,
        generation: u64,
        delete: Vec<ChangeHash>,
        /// Their bytes.
        bytes: usize,
        /// The snapshot's heads.
        heads: Vec<ChangeHash>,
    },
    Other(DocumentId),
    /// Reading changes another node stored: its rows (`full` false) or, when they
    /// depend on changes only its snapshot holds, the whole stored document.
    Refresh {
        doc: DocumentId,
        generation: u64,
        full: bool,
    },
}

/// A device that brought changes to a document this recently (ms) is a writer of it: it
/// is not sent others' changes ahead of its own acknowledgement (ADR 0198).
pub(crate) const WRITER_QUIET_MS: i64 = 10_000;

/// The engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    docs: HashMap<DocumentId, DocEntry>,
    conns: BTreeMap<ConnId, Conn>,
    tasks: HashMap<TaskId, TaskPurpose>,
    next_task: u64,
    local_docs: BTreeSet<DocumentId>,
    /// Documents the host keeps in memory whatever their idle time (a phone's active
    /// booking), besides the revocation list.
    pinned: BTreeSet<DocumentId>,
    /// Connected peers of evicted documents, with their sync states: they are attached
    /// again when the document comes back, so a watching device keeps hearing changes.
    watchers: HashMap<DocumentId, Vec<(ConnId, Vec<u8>)>>,
    next_generation: u64,
    now: i64,
    fx: Effects,
    admission: admit::Admission,
    /// The whole document last sent to a peer, for the next peer missing as much at the
    /// same heads (ADR 0196).
    replies: crate::generate::Replies,
    /// Appends whose changes were found by walking the document's history.
    history_walks: u64,
    /// Documents merged into during this input: their answerable peers hear the new
    /// changes once the input is handled, before the appends are written (ADR 0198).
    fan_out_due: BTreeSet<DocumentId>,
}

/// Counts of the engine's dearer steps since it started, for the server's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Appends whose changes were found by asking the document for every change since
    /// the heads before the merge (a walk of its history) instead of being read from the
    /// message that brought them.
    pub history_walks: u64,
    /// Whole documents saved for peers far behind (ADR 0196).
    pub whole_saves: u64,
    /// Whole documents sent from a save kept for an earlier peer at the same heads.
    pub whole_reused: u64,
    /// Changes sent to a peer as built for an earlier answer (ADR 0201).
    pub changes_reused: u64,
    /// Whole documents from devices that listed another's actor id, loaded on the side
    /// and split into the changes the server lacked.
    pub documents_split: u64,
    /// Changes rebuilt from those documents.
    pub changes_rebuilt: u64,
}

fn actor(config: &Config) -> ActorId {
    ActorId::from(config.actor.as_slice())
}

impl Engine {
    /// A new engine.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            config,
            docs: HashMap::new(),
            conns: BTreeMap::new(),
            tasks: HashMap::new(),
            next_task: 1,
            local_docs: BTreeSet::new(),
            pinned: BTreeSet::new(),
            watchers: HashMap::new(),
            next_generation: 1,
            now: 0,
            fx: Effects::default(),
            admission: admit::Admission::default(),
            replies: crate::generate::Replies::default(),
            history_walks: 0,
            fan_out_due: BTreeSet::new(),
        }
    }

    /// Counts of the engine's dearer steps so far.
    #[must_use]
    pub fn work(&self) -> Work {
        Work {
            history_walks: self.history_walks,
            whole_saves: self.replies.saves(),
            whole_reused: self.replies.reused(),
            changes_reused: self.replies.changes_reused(),
            documents_split: self.admission.documents_split,
            changes_rebuilt: self.admission.changes_rebuilt,
        }
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// A loaded document, for reading (projections, rules, UI).
    #[must_use]
    pub fn doc(&self, id: &DocumentId) -> Option<&Automerge> {
        self.docs.get(id).filter(|e| e.loaded).map(|e| &e.doc)
    }

    /// Documents in memory.
    #[must_use]
    pub fn docs_in_memory(&self) -> usize {
        self.docs.len()
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The documents in memory (loaded or loading).
    #[must_use]
    pub fn docs(&self) -> Vec<DocumentId> {
        self.docs.keys().copied().collect()
    }

    /// Client: local documents known to the engine.
    #[must_use]
    pub const fn local_docs(&self) -> &BTreeSet<DocumentId> {
        &self.local_docs
    }

    /// Keeps `doc` in memory (`true`) or lets it be evicted again (`false`). A pinned
    /// document still loads on first use; it is never evicted for idling, only when the
    /// number of documents in memory is over the bound and nothing else can go.
    pub fn pin(&mut self, doc: DocumentId, pinned: bool) {
        if pinned {
            self.pinned.insert(doc);
        } else {
            self.pinned.remove(&doc);
        }
    }

    /// Handles one input at time `now` (unix ms) and returns what to do.
    pub fn handle(&mut self, now: i64, input: Input) -> Effects {
        self.now = now;
        match input {
            Input::Connected { conn, writer } => self.on_connected(conn, writer),
            Input::Received { conn, bytes } => self.on_frame(conn, &bytes),
            Input::Message { conn, msg } => self.on_message(conn, *msg),
            Input::Messages { msgs } => self.on_messages(msgs),
            Input::Disconnected { conn } => self.on_disconnected(conn),
            Input::IoDone { task, result } => self.on_io(task, result),
            Input::Edit { doc, edit } => self.on_edit(doc, edit),
            Input::Register { docs } => self.local_docs.extend(docs),
            Input::Want { doc } => self.on_want(doc),
            Input::Tick => {
                self.save_changed_states();
                self.compact_due();
            }
            Input::StoredElsewhere { doc } => self.on_stored_elsewhere(doc),
        }
        self.run_due_fan_outs();
        self.evict();
        self.publish_revocations();
        std::mem::take(&mut self.fx)
    }
}
