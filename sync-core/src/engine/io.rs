//! What the engine asks its host to do, and what the host answers.

use automerge::ChangeHash;

use crate::doc_id::DocumentId;
use crate::ids::DeviceId;
use crate::schema::DocKind;
use crate::validate::Refusal;
use crate::writer::Writer;

/// One connection to a remote peer, numbered by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One storage task, numbered by the engine and answered by [`crate::engine::Input::IoDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// A change as stored: its hash (the idempotency key) and raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// Change hash.
    pub hash: ChangeHash,
    /// `Change::raw_bytes()`.
    pub bytes: Vec<u8>,
}

/// Storage described as data. The host runs each task and answers with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTask {
    /// Load a document: its snapshot, change rows and persisted sync states.
    Load {
        /// Document.
        doc: DocumentId,
    },
    /// Server: read a document's change rows (no snapshot, no sync states), after another
    /// node sharing the database stored some. Answered with [`IoResult::Loaded`]; the
    /// engine merges the rows it does not hold.
    LoadChanges {
        /// Document.
        doc: DocumentId,
    },
    /// Append change rows, idempotent by hash. The engine releases replies that
    /// acknowledge these changes only after this task completes.
    Append {
        /// Document.
        doc: DocumentId,
        /// Kind (known once the document has its skeleton).
        kind: Option<DocKind>,
        /// The new changes.
        changes: Vec<StoredChange>,
        /// The document's heads once these are stored.
        heads: Vec<ChangeHash>,
        /// Server: the device that owns each actor id of `changes`, as this engine
        /// admitted them (empty on a phone). The host stores the changes only if the
        /// shared claim table agrees (claiming the actor ids it does not hold yet, in the
        /// same transaction); otherwise the task fails and stores nothing: another node
        /// gave one of these actor ids to another device first. Retries carry the same
        /// owners.
        owners: Vec<(Vec<u8>, DeviceId)>,
    },
    /// Replace the snapshot and delete exactly the change rows listed (those the engine
    /// knows are inside the snapshot), never others appended meanwhile.
    Compact {
        /// Document.
        doc: DocumentId,
        /// `save()` of the document.
        snapshot: Vec<u8>,
        /// Heads of the snapshot.
        heads: Vec<ChangeHash>,
        /// Change rows now covered by the snapshot.
        delete: Vec<ChangeHash>,
        /// Server: replace the stored snapshot only if its heads are these (empty: there
        /// is none); otherwise fail and change nothing, since another node's snapshot may
        /// hold changes this one lacks. `None`: replace whatever is stored.
        replaces: Option<Vec<ChangeHash>>,
    },
    /// Remember what a peer (by its storage id) has of a document.
    SaveSyncState {
        /// Document.
        doc: DocumentId,
        /// The peer's storage id.
        peer: String,
        /// `sync::State::encode()`.
        state: Vec<u8>,
    },
    /// Client: the server refused these local changes. Move them out of the document's
    /// change rows into the refused list (kept and shown, never silently dropped) and
    /// replace the stored document by `snapshot`.
    Quarantine {
        /// Document.
        doc: DocumentId,
        /// Refused changes (and those that depended on them).
        changes: Vec<StoredChange>,
        /// Why.
        refusal: Refusal,
        /// The document without them.
        snapshot: Vec<u8>,
    },
    /// Client: this device may no longer read the document; drop the local copy.
    Forget {
        /// Document.
        doc: DocumentId,
    },
    /// Server: these actor ids belong to `device` (learned from its first accepted write
    /// under each). Keep each first claim; never replace one. Load them back at start with
    /// [`crate::engine::Engine::load_actor_claims`].
    ClaimActors {
        /// The device that wrote under them.
        device: DeviceId,
        /// Actor ids (at most 64 bytes each).
        actors: Vec<Vec<u8>>,
    },
}

/// A loaded document as the host found it in storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The latest snapshot, if any.
    pub snapshot: Option<Vec<u8>>,
    /// Change rows not covered by the snapshot (in any order).
    pub changes: Vec<StoredChange>,
    /// Persisted sync states by peer storage id.
    pub sync_states: Vec<(String, Vec<u8>)>,
    /// Server: the heads of the stored snapshot (empty: none), read in the same
    /// consistent read as the rows, when the host keeps them. `None`: not told (a phone).
    /// With them, the engine compacts only over the snapshot it knows
    /// ([`StorageTask::Compact::replaces`]) and reads the whole document again when
    /// another node replaced it.
    pub snapshot_heads: Option<Vec<ChangeHash>>,
    /// Server: the document's heads as the node that appended to it last recorded them
    /// (that node announces and projects that state). After merging changes stored
    /// elsewhere, a document whose heads are exactly these is not announced again as
    /// [`Event::DocChanged`]. `None`: not told.
    pub stored_heads: Option<Vec<ChangeHash>>,
}

/// The host's answer to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoResult {
    /// A `Load` finished.
    Loaded(Loaded),
    /// Any other task finished.
    Done,
    /// The task failed; the engine acknowledges nothing that depended on it.
    Failed(String),
}

/// Something the host may want to know or show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server: the sync messages of several devices for one document, read together,
    /// were merged with one apply and stored with one append (ADR 0191).
    MergedTogether {
        /// Document.
        doc: DocumentId,
        /// Messages merged.
        messages: usize,
    },
    /// Changes to a document were merged and are durable (after `Append` completed).
    DocChanged {
        /// Document.
        doc: DocumentId,
        /// Kind, if known.
        kind: Option<DocKind>,
    },
    /// Server: a writer's changes were refused. Client: the server refused ours.
    Refused {
        /// Connection.
        conn: Option<ConnId>,
        /// Document.
        doc: DocumentId,
        /// Who wrote them (server side).
        writer: Option<Box<Writer>>,
        /// Why.
        refusal: Refusal,
        /// How many changes.
        changes: usize,
    },
    /// A peer completed the handshake.
    PeerJoined {
        /// Connection.
        conn: ConnId,
        /// The peer's storage id, if it persists.
        storage_id: Option<String>,
    },
    /// Client: the server has every local change of this document.
    Synced {
        /// Document.
        doc: DocumentId,
    },
    /// Client: the server does not have the document or this device may not read it.
    Unavailable {
        /// Document.
        doc: DocumentId,
    },
    /// Client: read access was lost; the local copy is being dropped.
    AccessLost {
        /// Document.
        doc: DocumentId,
    },
    /// A local edit was applied and is being stored.
    EditApplied {
        /// Document.
        doc: DocumentId,
    },
    /// A local edit could not be applied: it does not fit the document, or this device's
    /// own validation refused it ([`crate::edits::EditError::Refused`], with the code the
    /// server would have given).
    EditFailed {
        /// Document.
        doc: DocumentId,
        /// Why (no personal data).
        error: crate::edits::EditError,
    },
    /// Part of a stored document could not be read when it was loaded (a snapshot or
    /// change rows that do not parse); the rest was loaded. The host logs and counts it.
    LoadProblems {
        /// Document.
        doc: DocumentId,
        /// What could not be read (hashes and automerge's reasons, no content).
        problems: Vec<crate::stored::LoadProblem>,
    },
    /// A storage task failed.
    StorageFailed {
        /// Document.
        doc: DocumentId,
        /// Why.
        error: String,
    },
    /// Client: the server refused a message or the connection, with a code and no changes
    /// named (a limit such as `payload-too-large`, `overloaded` before it closes, or
    /// `device-revoked`). Refused changes come as [`Event::Refused`] instead.
    ServerRefused {
        /// Connection.
        conn: ConnId,
        /// The document concerned, if the server named one.
        doc: Option<DocumentId>,
        /// Why.
        code: crate::refusal::RefusalCode,
    },
    /// A protocol error from or about a connection.
    ProtocolError {
        /// Connection.
        conn: ConnId,
        /// What.
        error: String,
    },
    /// An ephemeral message arrived (client) for the app.
    Ephemeral {
        /// Document.
        doc: DocumentId,
        /// Payload.
        data: Vec<u8>,
    },
    /// A document left memory.
    Evicted {
        /// Document.
        doc: DocumentId,
    },
}

/// Everything one call to [`crate::engine::Engine::handle`] asks of the host.
#[derive(Debug, Default)]
pub struct Effects {
    /// Frames to send.
    pub sends: Vec<(ConnId, Vec<u8>)>,
    /// Storage tasks to run.
    pub tasks: Vec<(TaskId, StorageTask)>,
    /// Things to know.
    pub events: Vec<Event>,
    /// Connections to close (after sending their frames).
    pub close: Vec<ConnId>,
}

impl Effects {
    /// Nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.tasks.is_empty()
            && self.events.is_empty()
            && self.close.is_empty()
    }

    /// Appends another call's effects.
    pub fn extend(&mut self, other: Self) {
        self.sends.extend(other.sends);
        self.tasks.extend(other.tasks);
        self.events.extend(other.events);
        self.close.extend(other.close);
    }
}
