//! Storage tasks: issuing tasks to the host (load, append, compact, save sync state) and
//! handling their completions: retries, dropping a document after a storage failure,
//! compaction and periodic saving of sync states.

use std::collections::{BTreeSet, HashSet};

use automerge::sync;
use automerge::{ChangeHash, ReadDoc};

use super::{
    ConnId, Engine, Event, IoResult, Loaded, Mode, PeerDoc, Pending, StorageTask, StoredChange,
    TaskId, TaskPurpose, actor,
};
use crate::doc_id::DocumentId;
use crate::ids::DeviceId;
use crate::refusal::RefusalCode;
use crate::schema::{self, DocKind};

/// What an `Append`'s completion needs. The task carries the changes themselves; a
/// retry reads them again from the document, which keeps them.
#[derive(Debug)]
pub(super) struct Appended {
    /// The changes' hashes and their stored size.
    hashes: Vec<ChangeHash>,
    bytes: usize,
    kind: Option<DocKind>,
    /// Who owns the changes' actor ids, as admitted (the same on every retry).
    owners: Vec<(Vec<u8>, DeviceId)>,
    /// The devices counted in the document's `unwritten` for this append.
    devices: Vec<DeviceId>,
    tries: u32,
}

impl Engine {
    pub(super) fn task(&mut self, purpose: TaskPurpose, task: StorageTask) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        self.tasks.insert(id, purpose);
        self.fx.tasks.push((id, task));
        id
    }

    /// Hands an `Append` of `changes` to storage; `appended` says who brought them and
    /// which attempt this is (its hashes and size are filled in from `changes`).
    pub(super) fn append(
        &mut self,
        doc: DocumentId,
        changes: Vec<StoredChange>,
        heads: Vec<ChangeHash>,
        mut appended: Appended,
    ) {
        let generation = self.docs.get(&doc).map_or(0, |e| e.generation);
        appended.hashes = changes.iter().map(|c| c.hash).collect();
        appended.bytes = changes.iter().map(|c| c.bytes.len()).sum();
        let task = StorageTask::Append {
            doc,
            kind: appended.kind,
            changes,
            heads,
            owners: appended.owners.clone(),
        };
        self.task(
            TaskPurpose::Append {
                doc,
                generation,
                appended,
            },
            task,
        );
    }

    /// Emits an `Append` for every change added since `before`, brought by `by`.
    pub(super) fn persist_new(&mut self, doc: DocumentId, before: &[ChangeHash], by: &[DeviceId]) {
        self.persist(doc, before, None, by);
    }

    /// Emits an `Append` for the changes added since `before`: `known` when the caller
    /// already holds exactly those, else read from the document. `by`: the devices whose
    /// messages brought them (or the writer of our own edit).
    pub(super) fn persist(
        &mut self,
        doc: DocumentId,
        before: &[ChangeHash],
        known: Option<Vec<StoredChange>>,
        by: &[DeviceId],
    ) {
        if known.is_none() && self.docs.contains_key(&doc) {
            self.history_walks += 1;
        }
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
        let owners = self.owners_of(&changes);
        let mut devices: Vec<DeviceId> = by.to_vec();
        devices.extend(owners.iter().map(|(_, d)| *d));
        devices.sort_unstable();
        devices.dedup();
        if let Some(e) = self.docs.get_mut(&doc) {
            for d in &devices {
                *e.unwritten.entry(*d).or_default() += 1;
            }
        }
        let appended = Appended {
            hashes: Vec::new(),
            bytes: 0,
            kind,
            owners,
            devices,
            tries: 0,
        };
        self.append(doc, changes, heads, appended);
    }

    pub(super) fn on_io(&mut self, task: TaskId, result: IoResult) {
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
                appended,
            } => {
                if self
                    .docs
                    .get(&doc)
                    .is_some_and(|e| e.generation == generation)
                {
                    self.on_appended(doc, appended, result);
                }
            }
            TaskPurpose::Compact {
                doc,
                generation,
                delete,
                bytes,
                heads,
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
                        e.stored_bytes = e.stored_bytes.saturating_sub(bytes);
                        if e.snapshot_heads.is_some() {
                            e.snapshot_heads = Some(heads);
                        }
                    } else if e.snapshot_heads.is_some() && !e.refreshing {
                        // Another node replaced the snapshot: merge it, then compact
                        // over it another time.
                        self.start_refresh(doc, true);
                    }
                }
            }
            TaskPurpose::Refresh {
                doc,
                generation,
                full,
            } => self.on_refreshed(doc, generation, full, result),
            TaskPurpose::Other(doc) => {
                if let IoResult::Failed(error) = result {
                    self.fx.events.push(Event::StorageFailed { doc, error });
                }
            }
        }
    }

    pub(super) fn on_loaded(&mut self, doc: DocumentId, result: IoResult) {
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
        e.snapshot_bytes = loaded.snapshot.as_ref().map_or(0, Vec::len);
        e.snapshot_heads = loaded.snapshot_heads;
        e.stored_bytes = loaded.changes.iter().map(|c| c.bytes.len()).sum();
        let restored = crate::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
        e.doc = restored.doc.with_actor(actor);
        e.stored_rows = restored.rows;
        if !restored.problems.is_empty() {
            self.fx.events.push(Event::LoadProblems {
                doc,
                problems: restored.problems,
            });
        }
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
        self.refresh_if_owed(doc);
    }

    pub(super) fn on_appended(
        &mut self,
        doc: DocumentId,
        mut appended: Appended,
        result: IoResult,
    ) {
        let retries = self.config.append_retries;
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        if let IoResult::Failed(error) = result {
            if appended.tries < retries {
                // The document holds every change it was asked to store.
                let changes = appended
                    .hashes
                    .iter()
                    .filter_map(|h| e.doc.get_change_by_hash(h))
                    .map(|c| StoredChange {
                        hash: c.hash(),
                        bytes: c.raw_bytes().to_vec(),
                    })
                    .collect();
                let heads = e.doc.get_heads();
                appended.tries += 1;
                self.append(doc, changes, heads, appended);
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
        let Appended {
            hashes,
            bytes,
            devices,
            ..
        } = appended;
        e.appends_in_flight = e.appends_in_flight.saturating_sub(1);
        e.stored_rows.extend(hashes);
        e.stored_bytes += bytes;
        for d in devices {
            if let Some(n) = e.unwritten.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    e.unwritten.remove(&d);
                }
            }
        }
        if e.appends_in_flight > 0 {
            // Replies owed wait for the last: one message then carries all that was
            // merged meanwhile, instead of one now and another then (ADR 0198).
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
    pub(super) fn drop_peers_after_failure(&mut self, doc: DocumentId, conns: BTreeSet<ConnId>) {
        for conn in conns {
            if self.conns.contains_key(&conn) {
                self.close_with(
                    conn,
                    "storage unavailable, retry later",
                    RefusalCode::StorageUnavailable,
                    Some(doc),
                );
            }
        }
    }

    pub(super) fn maybe_compact(&mut self, doc: DocumentId) {
        if self.config.compact_when_idle {
            let bound = self
                .config
                .compact_after
                .saturating_mul(super::IDLE_COMPACT_FACTOR);
            if self
                .docs
                .get(&doc)
                .is_none_or(|e| e.stored_rows.len() < bound)
            {
                return;
            }
        }
        self.compact(doc, false);
    }

    /// On a tick, with [`super::Config::compact_when_idle`]: compacts every document in
    /// memory that is due (at most one task per document; the host runs them when idle).
    pub(super) fn compact_due(&mut self) {
        if !self.config.compact_when_idle {
            return;
        }
        let docs: Vec<DocumentId> = self.docs.keys().copied().collect();
        for doc in docs {
            self.compact(doc, false);
        }
    }

    /// Folds the stored change rows into a new snapshot once they are at least
    /// `compact_after` rows and as many bytes as the last snapshot (always when `force`).
    /// The snapshot's columns are not DEFLATE-compressed: compaction runs on the engine's
    /// own task, and compressing cost more than the rest of the save (ADR 0115).
    fn compact(&mut self, doc: DocumentId, force: bool) {
        let threshold = self.config.compact_after;
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        if e.compacting || e.appends_in_flight > 0 || e.stored_rows.is_empty() {
            return;
        }
        if !force && (e.stored_rows.len() < threshold || e.stored_bytes < e.snapshot_bytes) {
            return;
        }
        e.compacting = true;
        let snapshot = e.doc.save_nocompress();
        e.snapshot_bytes = snapshot.len();
        let heads = e.doc.get_heads();
        let delete = e.stored_rows.clone();
        let bytes = e.stored_bytes;
        let generation = e.generation;
        let replaces = e.snapshot_heads.clone();
        self.task(
            TaskPurpose::Compact {
                doc,
                generation,
                delete: delete.clone(),
                bytes,
                heads: heads.clone(),
            },
            StorageTask::Compact {
                doc,
                snapshot,
                heads,
                delete,
                replaces,
            },
        );
    }

    /// Forces compaction of a loaded document now (tests and benchmarks).
    #[cfg(feature = "testing")]
    pub fn compact_now(&mut self, now: i64, doc: DocumentId) -> super::Effects {
        self.now = now;
        self.compact(doc, true);
        std::mem::take(&mut self.fx)
    }

    /// Saves the sync states that moved since their last save, at most once per
    /// `save_state_every_ms` each: after a crash a peer resumes from a recent state.
    pub(super) fn save_changed_states(&mut self) {
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
}
