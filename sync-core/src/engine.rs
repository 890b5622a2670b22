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

mod admit;
pub mod guard;
pub mod io;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};

pub use io::{ConnId, Effects, Event, IoResult, Loaded, StorageTask, StoredChange, TaskId};

use crate::doc_id::DocumentId;
use crate::edits::{self, Edit};
use crate::schema::{self, DocKind};
use crate::validate::{self, Refusal, RefusalCode};
use crate::wire::{self, Message, PeerMetadata};
use crate::writer::Writer;

/// Which end of the connection this engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts connections, validates, persists, fans out.
    Server,
    /// Dials the server, announces local documents, trusts what the server sends.
    Client,
}

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
    /// Compact a document once it has this many change rows.
    pub compact_after: usize,
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
            max_docs_per_conn: 2_000,
            append_retries: 3,
            proof_key: None,
            revocations_doc: None,
            max_ack_delay_ms: 1_000,
            max_pending_per_doc: 1_024,
            save_state_every_ms: 5_000,
            derived_ids: None,
            limits: guard::Limits::default(),
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
    /// Time passes: evict idle documents.
    Tick,
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
}

impl PeerDoc {
    fn new(state: sync::State, now: i64) -> Self {
        Self {
            saved_heads: state.shared_heads.clone(),
            state,
            owed: false,
            saved_at: now,
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

#[derive(Debug)]
struct DocEntry {
    doc: Automerge,
    loaded: bool,
    load_task: Option<TaskId>,
    pending: Vec<Pending>,
    peers: BTreeMap<ConnId, PeerDoc>,
    saved_states: HashMap<String, Vec<u8>>,
    stored_rows: Vec<ChangeHash>,
    appends_in_flight: usize,
    compacting: bool,
    last_used: i64,
    refused: HashSet<ChangeHash>,
    /// Which incarnation of the document in memory this is: completions of tasks issued
    /// for an earlier one (dropped after a storage failure, evicted) are ignored.
    generation: u64,
    /// Since when appends have been in flight without a break.
    busy_since: Option<i64>,
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
        changes: Vec<StoredChange>,
        kind: Option<DocKind>,
        tries: u32,
    },
    Compact {
        doc: DocumentId,
        generation: u64,
        delete: Vec<ChangeHash>,
    },
    Other(DocumentId),
}

/// The engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    docs: HashMap<DocumentId, DocEntry>,
    conns: BTreeMap<ConnId, Conn>,
    tasks: HashMap<TaskId, TaskPurpose>,
    next_task: u64,
    local_docs: BTreeSet<DocumentId>,
    /// Connected peers of evicted documents, with their sync states: they are attached
    /// again when the document comes back, so a watching device keeps hearing changes.
    watchers: HashMap<DocumentId, Vec<(ConnId, Vec<u8>)>>,
    next_generation: u64,
    now: i64,
    fx: Effects,
    admission: admit::Admission,
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
            watchers: HashMap::new(),
            next_generation: 1,
            now: 0,
            fx: Effects::default(),
            admission: admit::Admission::default(),
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

    /// Client: local documents known to the engine.
    #[must_use]
    pub const fn local_docs(&self) -> &BTreeSet<DocumentId> {
        &self.local_docs
    }

    /// Client: does the server (on `conn`) have every change of `doc` we have?
    #[must_use]
    pub fn peer_has_all(&self, conn: ConnId, doc: &DocumentId) -> bool {
        self.docs
            .get(doc)
            .and_then(|e| e.peers.get(&conn).map(|p| (e, p)))
            .is_some_and(|(e, p)| {
                let ours = e.doc.get_heads();
                p.state
                    .shared_heads
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .is_superset(&ours.into_iter().collect())
            })
    }

    /// Client: how many of our own changes to `doc` the server (on `conn`) is not known
    /// to hold: changes made under our actor id that its last advertised heads do not
    /// cover. Zero means every change we made is acknowledged.
    #[must_use]
    pub fn unacknowledged(&self, conn: ConnId, doc: &DocumentId) -> usize {
        let Some(e) = self.docs.get(doc).filter(|e| e.loaded) else {
            return 0;
        };
        let ours = actor(&self.config);
        let shared: Vec<ChangeHash> = e
            .peers
            .get(&conn)
            .map(|p| p.state.shared_heads.clone())
            .unwrap_or_default();
        e.doc
            .get_changes(&shared)
            .iter()
            .filter(|c| c.actor_id() == &ours)
            .count()
    }

    /// Handles one input at time `now` (unix ms) and returns what to do.
    pub fn handle(&mut self, now: i64, input: Input) -> Effects {
        self.now = now;
        match input {
            Input::Connected { conn, writer } => self.on_connected(conn, writer),
            Input::Received { conn, bytes } => self.on_frame(conn, &bytes),
            Input::Disconnected { conn } => self.on_disconnected(conn),
            Input::IoDone { task, result } => self.on_io(task, result),
            Input::Edit { doc, edit } => self.on_edit(doc, edit),
            Input::Register { docs } => self.local_docs.extend(docs),
            Input::Want { doc } => self.on_want(doc),
            Input::Tick => self.save_changed_states(),
        }
        self.evict();
        std::mem::take(&mut self.fx)
    }

    // ----- plumbing -----

    fn task(&mut self, purpose: TaskPurpose, task: StorageTask) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        self.tasks.insert(id, purpose);
        self.fx.tasks.push((id, task));
        id
    }

    fn send(&mut self, conn: ConnId, msg: &Message) {
        self.fx.sends.push((conn, msg.encode()));
    }

    fn target(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .and_then(|c| c.remote_peer.clone())
            .unwrap_or_default()
    }

    fn send_error(&mut self, conn: ConnId, message: &str, refusal: Option<wire::Refusal>) {
        let msg = Message::Error {
            sender_id: Some(self.config.peer_id.clone()),
            target_id: Some(self.target(conn)),
            message: message.to_owned(),
            refusal,
        };
        self.send(conn, &msg);
    }

    fn entry(&mut self, doc: DocumentId) -> &mut DocEntry {
        let now = self.now;
        let actor = actor(&self.config);
        let generation = self.next_generation;
        if !self.docs.contains_key(&doc) {
            self.next_generation += 1;
        }
        let e = self.docs.entry(doc).or_insert_with(|| DocEntry {
            doc: Automerge::new().with_actor(actor),
            loaded: false,
            load_task: None,
            pending: Vec::new(),
            peers: BTreeMap::new(),
            saved_states: HashMap::new(),
            stored_rows: Vec::new(),
            appends_in_flight: 0,
            compacting: false,
            last_used: now,
            refused: HashSet::new(),
            generation,
            busy_since: None,
        });
        e.last_used = now;
        e
    }

    /// Queues `p` until `doc` is loaded, starting the load if needed. Returns true if the
    /// document is loaded and `p` should run now.
    fn ensure_loaded(&mut self, doc: DocumentId, p: Pending) -> Option<Pending> {
        let e = self.entry(doc);
        if e.loaded {
            return Some(p);
        }
        self.hold(doc, p);
        let e = self.docs.get(&doc)?;
        if e.load_task.is_none() {
            let t = self.task(TaskPurpose::Load(doc), StorageTask::Load { doc });
            if let Some(e) = self.docs.get_mut(&doc) {
                e.load_task = Some(t);
            }
        }
        None
    }

    /// Queues `p` on `doc` (loading, or replies due). A frame beyond the document's queue
    /// bound closes its connection: the peer resumes from its sync state, nothing it
    /// sent is recorded as received.
    fn hold(&mut self, doc: DocumentId, p: Pending) {
        let cap = self.config.max_pending_per_doc;
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        if e.pending.len() < cap {
            e.pending.push(p);
            return;
        }
        if let Pending::Frame { conn, .. } = p {
            self.overloaded(conn, Some(doc));
        }
    }

    /// Closes `conn` because the server cannot take more from it now.
    fn overloaded(&mut self, conn: ConnId, doc: Option<DocumentId>) {
        self.close_with(conn, "server busy, reconnect later", "overloaded", doc);
    }

    /// Tells `conn` why with an `error` of refusal `code`, then closes it: the peer
    /// resumes from its saved sync state and sends again what the server did not keep.
    fn close_with(&mut self, conn: ConnId, message: &str, code: &str, doc: Option<DocumentId>) {
        self.send_error(
            conn,
            message,
            Some(wire::Refusal {
                code: code.into(),
                document_id: doc,
                changes: Vec::new(),
            }),
        );
        self.fx.close.push(conn);
        self.on_disconnected(conn);
    }

    fn run_pending(&mut self, doc: DocumentId, p: Pending) {
        match p {
            Pending::Frame { conn, doc_msg } => {
                let mark = self.fx.tasks.len();
                self.on_doc_message(conn, doc, &doc_msg);
                self.after_message(conn, doc, mark);
            }
            Pending::Edit(edit) => {
                let mark = self.fx.tasks.len();
                self.apply_edit(doc, &edit);
                self.after_own_edit(doc, mark);
            }
            Pending::Announce { conn } => self.announce(conn, doc),
            Pending::Nothing => {}
        }
    }

    // ----- connections -----

    fn on_connected(&mut self, conn: ConnId, writer: Option<Writer>) {
        self.conns.insert(
            conn,
            Conn {
                writer,
                remote_peer: None,
                remote_storage: None,
                joined: false,
                docs: BTreeSet::new(),
            },
        );
        if self.config.mode == Mode::Client {
            let join = Message::Join {
                sender_id: self.config.peer_id.clone(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some(self.config.storage_id.clone()),
                    is_ephemeral: Some(false),
                }),
                supported_protocol_versions: vec![wire::PROTOCOL_V1.to_owned()],
            };
            self.send(conn, &join);
        }
    }

    fn on_disconnected(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for doc in c.docs {
            if let Some(w) = self.watchers.get_mut(&doc) {
                w.retain(|(k, _)| *k != conn);
                if w.is_empty() {
                    self.watchers.remove(&doc);
                }
            }
            let Some(e) = self.docs.get_mut(&doc) else {
                continue;
            };
            let Some(p) = e.peers.remove(&conn) else {
                continue;
            };
            if let Some(storage) = &c.remote_storage {
                let state = p.state.encode();
                e.saved_states.insert(storage.clone(), state.clone());
                self.task(
                    TaskPurpose::Other(doc),
                    StorageTask::SaveSyncState {
                        doc,
                        peer: storage.clone(),
                        state,
                    },
                );
            }
        }
    }

    fn on_frame(&mut self, conn: ConnId, bytes: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let msg = match wire::decode(bytes) {
            Ok(m) => m,
            Err(err) => {
                let text = format!("malformed message: {err}");
                self.fx.events.push(Event::ProtocolError {
                    conn,
                    error: text.clone(),
                });
                self.send_error(
                    conn,
                    &text,
                    Some(wire::Refusal {
                        code: "malformed-message".into(),
                        document_id: None,
                        changes: Vec::new(),
                    }),
                );
                return;
            }
        };
        let joined = self.conns.get(&conn).is_some_and(|c| c.joined);
        match msg {
            Message::Join {
                sender_id,
                peer_metadata,
                supported_protocol_versions,
            } => {
                self.on_join(
                    conn,
                    sender_id,
                    peer_metadata.as_ref(),
                    &supported_protocol_versions,
                );
            }
            Message::Peer {
                sender_id,
                peer_metadata,
                selected_protocol_version,
                ..
            } => {
                self.on_peer(conn, sender_id, peer_metadata, &selected_protocol_version);
            }
            _ if !joined => {
                self.send_error(
                    conn,
                    "join first",
                    Some(wire::Refusal {
                        code: "not-joined".into(),
                        document_id: None,
                        changes: Vec::new(),
                    }),
                );
            }
            Message::Request {
                document_id, data, ..
            } => self.on_doc_frame(
                conn,
                document_id,
                DocMsg {
                    request: true,
                    data,
                },
            ),
            Message::Sync {
                document_id, data, ..
            } => self.on_doc_frame(
                conn,
                document_id,
                DocMsg {
                    request: false,
                    data,
                },
            ),
            Message::DocUnavailable { document_id, .. } => self.on_unavailable(conn, document_id),
            Message::Ephemeral {
                document_id,
                session_id,
                count,
                data,
                ..
            } => self.on_ephemeral(conn, document_id, &session_id, count, data),
            Message::Error {
                refusal, message, ..
            } => self.on_remote_error(conn, refusal, &message),
            Message::Leave { .. } => self.on_disconnected(conn),
            Message::RemoteHeadsChanged { .. } | Message::RemoteSubscriptionChange { .. } => {}
        }
    }

    fn on_join(
        &mut self,
        conn: ConnId,
        sender: String,
        meta: Option<&PeerMetadata>,
        versions: &[String],
    ) {
        if self.config.mode != Mode::Server {
            return;
        }
        if !versions.iter().any(|v| v == wire::PROTOCOL_V1) {
            self.send_error(
                conn,
                "unsupported protocol version",
                Some(wire::Refusal {
                    code: "unsupported-protocol".into(),
                    document_id: None,
                    changes: Vec::new(),
                }),
            );
            self.fx.close.push(conn);
            return;
        }
        let storage = meta
            .filter(|m| m.is_ephemeral != Some(true))
            .and_then(|m| m.storage_id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.remote_peer = Some(sender.clone());
            c.remote_storage.clone_from(&storage);
            c.joined = true;
        }
        let peer = Message::Peer {
            sender_id: self.config.peer_id.clone(),
            target_id: sender,
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(self.config.storage_id.clone()),
                is_ephemeral: Some(false),
            }),
            selected_protocol_version: wire::PROTOCOL_V1.to_owned(),
        };
        self.send(conn, &peer);
        self.fx.events.push(Event::PeerJoined {
            conn,
            storage_id: storage,
        });
    }

    fn on_peer(&mut self, conn: ConnId, sender: String, meta: Option<PeerMetadata>, version: &str) {
        if self.config.mode != Mode::Client {
            return;
        }
        if version != wire::PROTOCOL_V1 {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: "server chose an unknown protocol version".into(),
            });
            self.fx.close.push(conn);
            return;
        }
        let storage = meta.and_then(|m| m.storage_id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.remote_peer = Some(sender);
            c.remote_storage.clone_from(&storage);
            c.joined = true;
        }
        self.fx.events.push(Event::PeerJoined {
            conn,
            storage_id: storage,
        });
        let docs: Vec<DocumentId> = self.local_docs.iter().copied().collect();
        for doc in docs {
            if let Some(p) = self.ensure_loaded(doc, Pending::Announce { conn }) {
                self.run_pending(doc, p);
            }
        }
    }

    fn peer_state(&mut self, conn: ConnId, doc: DocumentId) -> Option<&mut PeerDoc> {
        let storage = self.conns.get(&conn).and_then(|c| c.remote_storage.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.docs.insert(doc);
        }
        let now = self.now;
        let e = self.docs.get_mut(&doc)?;
        Some(e.peers.entry(conn).or_insert_with(|| {
            let state = storage
                .and_then(|s| e.saved_states.get(&s))
                .and_then(|b| sync::State::decode(b).ok())
                .unwrap_or_default();
            PeerDoc::new(state, now)
        }))
    }

    /// Client: start syncing `doc` with the server on `conn`.
    fn announce(&mut self, conn: ConnId, doc: DocumentId) {
        if !self.conns.get(&conn).is_some_and(|c| c.joined) {
            return;
        }
        let empty = self
            .docs
            .get(&doc)
            .is_none_or(|e| e.doc.get_heads().is_empty());
        self.generate(conn, doc, empty);
    }

    fn on_want(&mut self, doc: DocumentId) {
        if self.config.mode == Mode::Client {
            self.local_docs.insert(doc);
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.joined)
            .map(|(k, _)| *k)
            .collect();
        if conns.is_empty() {
            if let Some(p) = self.ensure_loaded(doc, Pending::Nothing) {
                self.run_pending(doc, p);
            }
            return;
        }
        for conn in conns {
            if let Some(p) = self.ensure_loaded(doc, Pending::Announce { conn }) {
                self.run_pending(doc, p);
            }
        }
    }

    // ----- documents -----

    fn on_doc_frame(&mut self, conn: ConnId, doc: DocumentId, msg: DocMsg) {
        let over_limit = self.conns.get(&conn).is_some_and(|c| {
            !c.docs.contains(&doc) && c.docs.len() >= self.config.max_docs_per_conn
        });
        if over_limit {
            self.send_error(
                conn,
                "too many documents on one connection",
                Some(wire::Refusal {
                    code: "too-many-documents".into(),
                    document_id: Some(doc),
                    changes: Vec::new(),
                }),
            );
            return;
        }
        if msg.data.is_empty() {
            return;
        }
        // A document busy for longer than the bound stops taking new frames until its
        // appends are written and its replies sent: acknowledgements are never starved.
        let limit = self.config.max_ack_delay_ms;
        let now = self.now;
        let starving = self.config.mode == Mode::Server
            && self
                .docs
                .get(&doc)
                .is_some_and(|e| e.loaded && e.busy_since.is_some_and(|t| now - t >= limit));
        if starving {
            self.hold(doc, Pending::Frame { conn, doc_msg: msg });
            return;
        }
        if let Some(p) = self.ensure_loaded(doc, Pending::Frame { conn, doc_msg: msg }) {
            self.run_pending(doc, p);
        }
    }

    fn unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        let msg = Message::DocUnavailable {
            sender_id: self.config.peer_id.clone(),
            target_id: self.target(conn),
            document_id: doc,
        };
        self.send(conn, &msg);
        if let Some(e) = self.docs.get_mut(&doc) {
            e.peers.remove(&conn);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.docs.remove(&doc);
        }
    }

    fn on_doc_message(&mut self, conn: ConnId, doc: DocumentId, msg: &DocMsg) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let Ok(message) = sync::Message::decode(&msg.data) else {
            self.send_error(
                conn,
                "malformed automerge sync message",
                Some(wire::Refusal {
                    code: "malformed-sync".into(),
                    document_id: Some(doc),
                    changes: Vec::new(),
                }),
            );
            return;
        };
        let writer = self.conns.get(&conn).and_then(|c| c.writer.clone());
        let server = self.config.mode == Mode::Server;
        let Some(e) = self.docs.get(&doc) else {
            return;
        };
        let exists = !e.doc.get_heads().is_empty();
        if server {
            let Some(w) = writer.as_ref() else {
                self.unavailable(conn, doc);
                return;
            };
            if exists && !validate::can_read(w, &e.doc) {
                self.unavailable(conn, doc);
                return;
            }
            if !exists && message.heads.is_empty() {
                self.unavailable(conn, doc);
                return;
            }
        }
        // Nothing reaches automerge before the payload guard has read it.
        let Some(message) = self.admit(conn, doc, message, writer.as_ref()) else {
            return;
        };
        let _ = msg.request;
        let Some(peer) = self.peer_state(conn, doc) else {
            return;
        };
        let mut state = std::mem::take(&mut peer.state);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let before = e.doc.get_heads();
        // The changes this message brings, read from its chunks, so that persisting them
        // needs no walk of the document's history. Only when nothing is queued and every
        // chunk is a plain change; otherwise `persist_new` asks the document.
        let mut incoming = if e.doc.get_missing_deps(&[]).is_empty() {
            Some(Vec::new())
        } else {
            None
        };
        for chunk in message.changes.iter() {
            let Some(list) = incoming.as_mut() else { break };
            match Change::try_from(chunk) {
                Ok(c) if !e.doc.get_missing_deps(&[c.hash()]).is_empty() => {
                    list.push(StoredChange {
                        hash: c.hash(),
                        bytes: chunk.to_vec(),
                    });
                }
                Ok(_) => {}
                Err(_) => incoming = None,
            }
        }
        let mut log = automerge::PatchLog::new(server);
        if let Err(err) = e
            .doc
            .receive_sync_message_log_patches(&mut state, message, &mut log)
        {
            // Roll back whatever part was applied; the peer starts over.
            if let Ok(mut f) = e.doc.fork_at(&before) {
                f.set_actor(actor(&self.config));
                e.doc = f;
            }
            if let Some(p) = e.peers.get_mut(&conn) {
                p.state = sync::State::new();
            }
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: format!("sync message refused by automerge: {err}"),
            });
            self.send_error(
                conn,
                "sync message could not be applied",
                Some(wire::Refusal {
                    code: "malformed-sync".into(),
                    document_id: Some(doc),
                    changes: Vec::new(),
                }),
            );
            return;
        }
        if let Some(p) = e.peers.get_mut(&conn) {
            p.state = state;
        }
        let after = e.doc.get_heads();
        if !e.doc.get_missing_deps(&[]).is_empty() {
            incoming = None;
        }
        if after != before {
            if let (true, Some(w)) = (server, writer) {
                let patches = e.doc.make_patches(&mut log);
                self.merge_validated(conn, doc, &before, &patches, &w, incoming);
            } else {
                self.persist(doc, &before, incoming);
            }
        }
        let busy = self.docs.get(&doc).is_some_and(|e| e.appends_in_flight > 0);
        if busy {
            // Persist before acknowledge: the reply waits for the append, and is owed.
            if let Some(p) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
                p.owed = true;
            }
        } else {
            self.generate(conn, doc, false);
        }
    }

    /// Server: the document already holds the incoming changes on top of `before`.
    /// Validate; on refusal, roll back and accept change by change.
    fn merge_validated(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        before: &[ChangeHash],
        patches: &[automerge::Patch],
        writer: &Writer,
        incoming: Option<Vec<StoredChange>>,
    ) {
        let checks = self.proof_check(doc);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let verdict =
            validate::validate_patches_with(&e.doc, before.is_empty(), patches, writer, &checks);
        if verdict.is_ok() {
            self.persist(doc, before, incoming);
            return;
        }
        let new_changes: Vec<Change> = e.doc.get_changes(before);
        let Ok(mut rolled) = e.doc.fork_at(before) else {
            return;
        };
        rolled.set_actor(actor(&self.config));
        let mut refused: Vec<(ChangeHash, Refusal)> = Vec::new();
        let mut refused_set: HashSet<ChangeHash> = HashSet::new();
        for change in new_changes {
            let hash = change.hash();
            if change.deps().iter().any(|d| refused_set.contains(d)) {
                refused_set.insert(hash);
                refused.push((
                    hash,
                    Refusal {
                        code: RefusalCode::DependsOnRefused,
                        path: String::new(),
                    },
                ));
                continue;
            }
            let b = rolled.get_heads();
            let mut log = automerge::PatchLog::active();
            if rolled
                .apply_changes_log_patches([change], &mut log)
                .is_err()
            {
                refused_set.insert(hash);
                refused.push((
                    hash,
                    Refusal {
                        code: RefusalCode::MalformedValue,
                        path: String::new(),
                    },
                ));
                continue;
            }
            let patches = rolled.make_patches(&mut log);
            if let Err(r) =
                validate::validate_patches_with(&rolled, b.is_empty(), &patches, writer, &checks)
            {
                refused_set.insert(hash);
                refused.push((hash, r));
                if let Ok(mut f) = rolled.fork_at(&b) {
                    f.set_actor(actor(&self.config));
                    rolled = f;
                }
            }
        }
        e.doc = rolled;
        e.refused.extend(refused_set.iter().copied());
        // The peer's sync state described a document we no longer hold; start over.
        if let Some(p) = e.peers.get_mut(&conn) {
            p.state = sync::State::new();
        }
        let first = refused
            .iter()
            .find(|(_, r)| r.code != RefusalCode::DependsOnRefused)
            .or(refused.first())
            .map(|(_, r)| r.clone());
        if let Some(refusal) = first {
            let hashes: Vec<[u8; 32]> = refused.iter().map(|(h, _)| h.0).collect();
            self.fx.events.push(Event::Refused {
                conn: Some(conn),
                doc,
                writer: Some(Box::new(writer.clone())),
                refusal: refusal.clone(),
                changes: hashes.len(),
            });
            self.send_error(
                conn,
                &format!("changes refused: {refusal}"),
                Some(wire::Refusal {
                    code: refusal.code.as_str().to_owned(),
                    document_id: Some(doc),
                    changes: hashes,
                }),
            );
        }
        self.persist_new(doc, before);
    }

    /// What the server verifies beyond the document rules, for a merge into `doc`.
    fn proof_check(&self, doc: DocumentId) -> validate::ProofCheck {
        let Some(key) = self.config.proof_key else {
            return validate::ProofCheck {
                doc: Some(doc),
                derived: self.config.derived_ids.clone(),
                ..validate::ProofCheck::default()
            };
        };
        let revoked = self
            .config
            .revocations_doc
            .filter(|r| *r != doc)
            .and_then(|r| self.doc(&r))
            .map(crate::schema::revocations::read_with_times)
            .unwrap_or_default();
        validate::ProofCheck {
            server_key: Some(key),
            revoked,
            doc: Some(doc),
            derived: self.config.derived_ids.clone(),
        }
    }

    /// Hands an `Append` of `changes` to storage (attempt number `tries`).
    fn append(
        &mut self,
        doc: DocumentId,
        kind: Option<DocKind>,
        changes: Vec<StoredChange>,
        heads: Vec<ChangeHash>,
        tries: u32,
    ) {
        let generation = self.docs.get(&doc).map_or(0, |e| e.generation);
        let task = StorageTask::Append {
            doc,
            kind,
            changes: changes.clone(),
            heads,
        };
        self.task(
            TaskPurpose::Append {
                doc,
                generation,
                changes,
                kind,
                tries,
            },
            task,
        );
    }

    /// Emits an `Append` for every change added since `before`.
    fn persist_new(&mut self, doc: DocumentId, before: &[ChangeHash]) {
        self.persist(doc, before, None);
    }

    /// Emits an `Append` for the changes added since `before`: `known` when the caller
    /// already holds exactly those, else read from the document.
    fn persist(
        &mut self,
        doc: DocumentId,
        before: &[ChangeHash],
        known: Option<Vec<StoredChange>>,
    ) {
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let changes: Vec<StoredChange> = known.unwrap_or_else(|| {
            e.doc
                .get_changes(before)
                .into_iter()
                .map(|c| StoredChange {
                    hash: c.hash(),
                    bytes: c.raw_bytes().to_vec(),
                })
                .collect()
        });
        if changes.is_empty() {
            return;
        }
        if e.appends_in_flight == 0 {
            e.busy_since = Some(self.now);
        }
        e.appends_in_flight += 1;
        let kind = schema::kind_of(&e.doc);
        let heads = e.doc.get_heads();
        self.append(doc, kind, changes, heads, 0);
    }

    /// Sends our next sync message for `doc` to `conn`, if there is one.
    fn generate(&mut self, conn: ConnId, doc: DocumentId, as_request: bool) {
        let server = self.config.mode == Mode::Server;
        let writer = self.conns.get(&conn).and_then(|c| c.writer.clone());
        if server {
            let readable = match (self.docs.get(&doc), writer.as_ref()) {
                (Some(e), Some(w)) => e.doc.get_heads().is_empty() || validate::can_read(w, &e.doc),
                _ => false,
            };
            if !readable {
                // Read access was lost (e.g. removed from a roster): the peer drops it.
                self.unavailable(conn, doc);
                return;
            }
        }
        if self.peer_state(conn, doc).is_none() {
            return;
        }
        let target = self.target(conn);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let Some(p) = e.peers.get_mut(&conn) else {
            return;
        };
        if std::mem::take(&mut p.owed) {
            // A reply is owed for a frame read while busy: make automerge answer.
            p.state.have_responded = false;
        }
        if let Some(m) = e.doc.generate_sync_message(&mut p.state) {
            let data = m.encode();
            let msg = if as_request {
                Message::Request {
                    sender_id: self.config.peer_id.clone(),
                    target_id: target,
                    document_id: doc,
                    data,
                }
            } else {
                Message::Sync {
                    sender_id: self.config.peer_id.clone(),
                    target_id: target,
                    document_id: doc,
                    data,
                }
            };
            self.send(conn, &msg);
        } else if self.config.mode == Mode::Client && !e.doc.get_heads().is_empty() {
            let ours: BTreeSet<ChangeHash> = e.doc.get_heads().into_iter().collect();
            let theirs: BTreeSet<ChangeHash> = p.state.shared_heads.iter().copied().collect();
            if theirs.is_superset(&ours) {
                self.fx.events.push(Event::Synced { doc });
            }
        }
    }

    fn fan_out(&mut self, doc: DocumentId) {
        let mut conns: BTreeSet<ConnId> = self
            .docs
            .get(&doc)
            .map(|e| e.peers.keys().copied().collect())
            .unwrap_or_default();
        if self.config.mode == Mode::Client && self.local_docs.contains(&doc) {
            // A document made or first written while connected goes to the server now,
            // not at the next connection.
            conns.extend(self.conns.iter().filter(|(_, c)| c.joined).map(|(k, _)| *k));
        }
        for conn in conns {
            self.generate(conn, doc, false);
        }
    }

    fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        if self.config.mode != Mode::Client {
            return;
        }
        let had = self
            .docs
            .get(&doc)
            .is_some_and(|e| !e.doc.get_heads().is_empty());
        if had {
            // The server would have our copy if we could read it: access was lost.
            // Our own changes it never received are kept aside, not silently dropped.
            let ours = actor(&self.config);
            if let Some(e) = self.docs.get(&doc) {
                let shared: Vec<ChangeHash> = e
                    .peers
                    .get(&conn)
                    .map(|p| p.state.shared_heads.clone())
                    .unwrap_or_default();
                let unsynced: Vec<StoredChange> = e
                    .doc
                    .get_changes(&shared)
                    .into_iter()
                    .filter(|c| c.actor_id() == &ours)
                    .map(|c| StoredChange {
                        hash: c.hash(),
                        bytes: c.raw_bytes().to_vec(),
                    })
                    .collect();
                if !unsynced.is_empty() {
                    let n = unsynced.len();
                    let refusal = Refusal {
                        code: RefusalCode::AccessLost,
                        path: String::new(),
                    };
                    self.task(
                        TaskPurpose::Other(doc),
                        StorageTask::Quarantine {
                            doc,
                            changes: unsynced,
                            refusal: refusal.clone(),
                            snapshot: Vec::new(),
                        },
                    );
                    self.fx.events.push(Event::Refused {
                        conn: Some(conn),
                        doc,
                        writer: None,
                        refusal,
                        changes: n,
                    });
                }
            }
            self.docs.remove(&doc);
            self.local_docs.remove(&doc);
            self.task(TaskPurpose::Other(doc), StorageTask::Forget { doc });
            self.fx.events.push(Event::AccessLost { doc });
        } else {
            self.fx.events.push(Event::Unavailable { doc });
        }
    }

    fn on_ephemeral(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        session_id: &str,
        count: u64,
        data: Vec<u8>,
    ) {
        if self.config.mode == Mode::Client {
            self.fx.events.push(Event::Ephemeral { doc, data });
            return;
        }
        self.relay_ephemeral(conn, doc, session_id, count, &data);
    }

    fn on_remote_error(&mut self, conn: ConnId, refusal: Option<wire::Refusal>, message: &str) {
        if self.config.mode != Mode::Client {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: format!(
                    "peer reported an error: {}",
                    message.chars().take(200).collect::<String>()
                ),
            });
            return;
        }
        let Some(r) = refusal else {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: message.chars().take(200).collect(),
            });
            return;
        };
        let Some(doc) = r.document_id else {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: format!("server refused: {}", r.code),
            });
            return;
        };
        if r.changes.is_empty() {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: format!("server refused: {}", r.code),
            });
            return;
        }
        self.quarantine(conn, doc, &r);
    }

    /// Client: rebuild `doc` without the refused changes and those that depend on them.
    fn quarantine(&mut self, conn: ConnId, doc: DocumentId, r: &wire::Refusal) {
        let actor = actor(&self.config);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let mut bad: HashSet<ChangeHash> = r.changes.iter().map(|h| ChangeHash(*h)).collect();
        let all = e.doc.get_changes(&[]);
        let mut keep = Vec::new();
        let mut dropped = Vec::new();
        for c in all {
            if bad.contains(&c.hash()) || c.deps().iter().any(|d| bad.contains(d)) {
                bad.insert(c.hash());
                dropped.push(StoredChange {
                    hash: c.hash(),
                    bytes: c.raw_bytes().to_vec(),
                });
            } else {
                keep.push(c);
            }
        }
        if dropped.is_empty() {
            return;
        }
        let mut rebuilt = Automerge::new().with_actor(actor);
        if rebuilt.apply_changes(keep).is_err() {
            return;
        }
        e.doc = rebuilt;
        e.stored_rows.clear();
        if let Some(p) = e.peers.get_mut(&conn) {
            p.state = sync::State::new();
        }
        let snapshot = e.doc.save();
        let code = validate_code(&r.code);
        let refusal = Refusal {
            code,
            path: String::new(),
        };
        let n = dropped.len();
        self.task(
            TaskPurpose::Other(doc),
            StorageTask::Quarantine {
                doc,
                changes: dropped,
                refusal: refusal.clone(),
                snapshot,
            },
        );
        self.fx.events.push(Event::Refused {
            conn: Some(conn),
            doc,
            writer: None,
            refusal,
            changes: n,
        });
        self.generate(conn, doc, false);
    }

    // ----- local edits -----

    fn on_edit(&mut self, doc: DocumentId, edit: Edit) {
        if self.config.mode == Mode::Client {
            self.local_docs.insert(doc);
        }
        if let Some(p) = self.ensure_loaded(doc, Pending::Edit(edit)) {
            self.run_pending(doc, p);
        }
    }

    fn apply_edit(&mut self, doc: DocumentId, edit: &Edit) {
        let writer = self.config.writer.clone();
        let now = self.now;
        let actor = actor(&self.config);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let before = e.doc.get_heads();
        if let Err(err) = edits::apply_unchecked(&mut e.doc, &writer, now, edit) {
            self.fx.events.push(Event::EditFailed {
                doc,
                error: err.to_string(),
            });
            return;
        }
        if let Err(refusal) = validate::validate(&e.doc, &before, &writer) {
            if let Ok(mut f) = e.doc.fork_at(&before) {
                f.set_actor(actor);
                e.doc = f;
            }
            self.fx.events.push(Event::EditFailed {
                doc,
                error: edits::EditError::Refused(refusal).to_string(),
            });
            return;
        }
        self.fx.events.push(Event::EditApplied { doc });
        self.persist_new(doc, &before);
    }

    /// Writes `edit` without validating it first, as a tampered or outdated app would.
    /// The server still validates it; this exists so tests can show that it does.
    pub fn edit_unchecked(&mut self, now: i64, doc: DocumentId, edit: &Edit) -> Effects {
        self.now = now;
        let writer = self.config.writer.clone();
        if let Some(e) = self.docs.get_mut(&doc).filter(|e| e.loaded) {
            let before = e.doc.get_heads();
            match edits::apply_unchecked(&mut e.doc, &writer, now, edit) {
                Ok(_) => self.persist_new(doc, &before),
                Err(err) => self.fx.events.push(Event::EditFailed {
                    doc,
                    error: err.to_string(),
                }),
            }
        }
        std::mem::take(&mut self.fx)
    }

    // ----- storage completions -----

    fn on_io(&mut self, task: TaskId, result: IoResult) {
        let Some(purpose) = self.tasks.remove(&task) else {
            return;
        };
        match purpose {
            TaskPurpose::Load(doc) => {
                // Only the load this incarnation is waiting for.
                if self
                    .docs
                    .get(&doc)
                    .is_some_and(|e| e.load_task == Some(task))
                {
                    self.on_loaded(doc, result);
                }
            }
            TaskPurpose::Append {
                doc,
                generation,
                changes,
                kind,
                tries,
            } => {
                if self
                    .docs
                    .get(&doc)
                    .is_some_and(|e| e.generation == generation)
                {
                    self.on_appended(doc, changes, kind, tries, result);
                }
            }
            TaskPurpose::Compact {
                doc,
                generation,
                delete,
            } => {
                if let Some(e) = self
                    .docs
                    .get_mut(&doc)
                    .filter(|e| e.generation == generation)
                {
                    e.compacting = false;
                    if result == IoResult::Done {
                        let gone: HashSet<ChangeHash> = delete.into_iter().collect();
                        e.stored_rows.retain(|h| !gone.contains(h));
                    }
                }
            }
            TaskPurpose::Other(doc) => {
                if let IoResult::Failed(error) = result {
                    self.fx.events.push(Event::StorageFailed { doc, error });
                }
            }
        }
    }

    fn on_loaded(&mut self, doc: DocumentId, result: IoResult) {
        let actor = actor(&self.config);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        e.load_task = None;
        let loaded = match result {
            IoResult::Loaded(l) => l,
            IoResult::Failed(error) => {
                // Nothing can be answered for this document now; peers will retry.
                let conns: BTreeSet<ConnId> =
                    e.pending.iter().filter_map(Pending::frame_conn).collect();
                self.docs.remove(&doc);
                self.fx.events.push(Event::StorageFailed { doc, error });
                self.drop_peers_after_failure(doc, conns);
                return;
            }
            IoResult::Done => Loaded::default(),
        };
        let mut d = Automerge::new().with_actor(actor.clone());
        if let Some(s) = &loaded.snapshot
            && let Ok(l) = Automerge::load(s)
        {
            d = l.with_actor(actor);
        }
        let mut rows = Vec::with_capacity(loaded.changes.len());
        let mut parsed = Vec::with_capacity(loaded.changes.len());
        for c in loaded.changes {
            if let Ok(ch) = Change::from_bytes(c.bytes) {
                rows.push(c.hash);
                parsed.push(ch);
            }
        }
        let _ = d.apply_changes(parsed);
        e.doc = d;
        e.stored_rows = rows;
        e.saved_states = loaded.sync_states.into_iter().collect();
        e.loaded = true;
        if self.config.mode == Mode::Client && !e.doc.get_heads().is_empty() {
            self.local_docs.insert(doc);
        }
        // Devices still connected that watched this document before it was evicted.
        let now = self.now;
        for (conn, state) in self.watchers.remove(&doc).unwrap_or_default() {
            if self.conns.contains_key(&conn) {
                let state = sync::State::decode(&state).unwrap_or_default();
                e.peers.insert(conn, PeerDoc::new(state, now));
            }
        }
        let pending = std::mem::take(&mut e.pending);
        for p in pending {
            self.run_pending(doc, p);
        }
    }

    fn on_appended(
        &mut self,
        doc: DocumentId,
        changes: Vec<StoredChange>,
        kind: Option<DocKind>,
        tries: u32,
        result: IoResult,
    ) {
        let retries = self.config.append_retries;
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        if let IoResult::Failed(error) = result {
            if tries < retries {
                let heads = e.doc.get_heads();
                self.append(doc, kind, changes, heads, tries + 1);
                return;
            }
            // Give up on this copy: nothing it held beyond storage was acknowledged, so
            // dropping it loses nothing a device has seen confirmed. Its peers (and those
            // with frames queued) are disconnected, so that they resend on reconnect
            // instead of believing the server has what they sent.
            let mut conns: BTreeSet<ConnId> = e.peers.keys().copied().collect();
            conns.extend(e.pending.iter().filter_map(Pending::frame_conn));
            self.docs.remove(&doc);
            self.fx.events.push(Event::StorageFailed { doc, error });
            self.drop_peers_after_failure(doc, conns);
            return;
        }
        e.appends_in_flight = e.appends_in_flight.saturating_sub(1);
        e.stored_rows.extend(changes.iter().map(|c| c.hash));
        if e.appends_in_flight > 0 {
            return;
        }
        e.busy_since = None;
        let kind = schema::kind_of(&e.doc);
        self.fx.events.push(Event::DocChanged { doc, kind });
        self.fan_out(doc);
        self.maybe_compact(doc);
        // Frames held while replies were due run now, in arrival order.
        let held = self
            .docs
            .get_mut(&doc)
            .map(|e| std::mem::take(&mut e.pending))
            .unwrap_or_default();
        for p in held {
            if self.docs.get(&doc).is_some_and(|e| e.loaded) {
                self.run_pending(doc, p);
            } else {
                self.hold(doc, p);
            }
        }
    }

    /// After `doc` was dropped for a storage failure: tell `conns` and close them, so
    /// that each resumes from its sync state and sends again what was not stored.
    fn drop_peers_after_failure(&mut self, doc: DocumentId, conns: BTreeSet<ConnId>) {
        for conn in conns {
            if self.conns.contains_key(&conn) {
                self.close_with(
                    conn,
                    "storage unavailable, retry later",
                    "storage-unavailable",
                    Some(doc),
                );
            }
        }
    }

    fn maybe_compact(&mut self, doc: DocumentId) {
        let threshold = self.config.compact_after;
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        if e.compacting || e.appends_in_flight > 0 || e.stored_rows.len() < threshold {
            return;
        }
        e.compacting = true;
        let snapshot = e.doc.save();
        let heads = e.doc.get_heads();
        let delete = e.stored_rows.clone();
        let generation = e.generation;
        self.task(
            TaskPurpose::Compact {
                doc,
                generation,
                delete: delete.clone(),
            },
            StorageTask::Compact {
                doc,
                snapshot,
                heads,
                delete,
            },
        );
    }

    /// Forces compaction of a loaded document now (benchmarks, admin tools).
    pub fn compact_now(&mut self, now: i64, doc: DocumentId) -> Effects {
        self.now = now;
        let saved = self.config.compact_after;
        self.config.compact_after = 1;
        self.maybe_compact(doc);
        self.config.compact_after = saved;
        std::mem::take(&mut self.fx)
    }

    /// Saves the sync states that moved since their last save, at most once per
    /// `save_state_every_ms` each: after a crash a peer resumes from a recent state.
    fn save_changed_states(&mut self) {
        let every = self.config.save_state_every_ms;
        let now = self.now;
        let mut saves = Vec::new();
        for (doc, e) in &mut self.docs {
            for (conn, p) in &mut e.peers {
                if p.state.shared_heads == p.saved_heads || now - p.saved_at < every {
                    continue;
                }
                let Some(storage) = self.conns.get(conn).and_then(|c| c.remote_storage.clone())
                else {
                    continue;
                };
                p.saved_heads.clone_from(&p.state.shared_heads);
                p.saved_at = now;
                let state = p.state.encode();
                e.saved_states.insert(storage.clone(), state.clone());
                saves.push((*doc, storage, state));
            }
        }
        for (doc, peer, state) in saves {
            self.task(
                TaskPurpose::Other(doc),
                StorageTask::SaveSyncState { doc, peer, state },
            );
        }
    }

    // ----- memory -----

    fn evict(&mut self) {
        let idle_ms = self.config.idle_evict_ms;
        let now = self.now;
        let busy = |e: &DocEntry| {
            !e.loaded
                || e.appends_in_flight > 0
                || e.compacting
                || !e.pending.is_empty()
                || e.load_task.is_some()
        };
        let pinned = self.config.revocations_doc;
        let mut candidates: Vec<(i64, DocumentId)> = self
            .docs
            .iter()
            .filter(|(id, e)| !busy(e) && Some(**id) != pinned)
            .map(|(id, e)| (e.last_used, *id))
            .collect();
        let over = self
            .docs
            .len()
            .saturating_sub(self.config.max_docs_in_memory);
        if over == 0 && !candidates.iter().any(|(t, _)| now - *t >= idle_ms) {
            return;
        }
        candidates.sort_unstable();
        for (evicted, (last, doc)) in candidates.into_iter().enumerate() {
            if evicted >= over && now - last < idle_ms {
                break;
            }
            self.evict_one(doc);
        }
    }

    fn evict_one(&mut self, doc: DocumentId) {
        let Some(e) = self.docs.remove(&doc) else {
            return;
        };
        for (conn, p) in e.peers {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let state = p.state.encode();
            // The connection stays subscribed: it is attached again on reload.
            self.watchers
                .entry(doc)
                .or_default()
                .push((conn, state.clone()));
            if let Some(storage) = c.remote_storage.clone() {
                self.task(
                    TaskPurpose::Other(doc),
                    StorageTask::SaveSyncState {
                        doc,
                        peer: storage,
                        state,
                    },
                );
            }
        }
        self.fx.events.push(Event::Evicted { doc });
    }
}

fn validate_code(code: &str) -> RefusalCode {
    use RefusalCode as C;
    [
        C::RoleMayNotWrite,
        C::StatusIsServerOnly,
        C::NotOwnDevice,
        C::NotOwnPupil,
        C::NotOnRoster,
        C::OtherVenue,
        C::OtherSchool,
        C::NotOwner,
        C::ScanImmutable,
        C::NoDelete,
        C::UnknownField,
        C::ImmutableField,
        C::MayNotCreate,
        C::MalformedValue,
        C::UnknownKind,
        C::DependsOnRefused,
        C::BadProof,
        C::AccessLost,
        C::TooLong,
        C::ActivityConfirmed,
        C::ForeignActor,
    ]
    .into_iter()
    .find(|c| c.as_str() == code)
    .unwrap_or(C::RoleMayNotWrite)
}
