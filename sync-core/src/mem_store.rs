//! An in-memory document store that runs [`StorageTask`]s: the reference
//! implementation the simulator uses, with the same semantics the SQL stores follow.

use std::collections::{BTreeMap, HashMap};

use automerge::ChangeHash;

use crate::doc_id::DocumentId;
use crate::engine::{IoResult, Loaded, StorageTask, StoredChange};
use crate::ids::DeviceId;

/// One stored document.
#[derive(Debug, Clone, Default)]
pub struct StoredDoc {
    /// Latest snapshot.
    pub snapshot: Option<Vec<u8>>,
    /// Change rows by hash.
    pub changes: BTreeMap<ChangeHash, Vec<u8>>,
    /// Sync states by peer storage id.
    pub sync_states: BTreeMap<String, Vec<u8>>,
}

/// The store.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    /// Documents.
    pub docs: HashMap<DocumentId, StoredDoc>,
    /// Changes the server refused, kept for the user to see.
    pub refused: Vec<(DocumentId, StoredChange, String)>,
    /// When set, every task fails (to test storage outages).
    pub failing: bool,
    /// Actor id → the device that owns it (server).
    pub actor_claims: BTreeMap<Vec<u8>, DeviceId>,
}

impl MemStore {
    /// Runs one task.
    pub fn run(&mut self, task: &StorageTask) -> IoResult {
        if self.failing {
            return IoResult::Failed("store offline".into());
        }
        match task {
            StorageTask::Load { doc } | StorageTask::LoadChanges { doc } => {
                let d = self.docs.get(doc).cloned().unwrap_or_default();
                IoResult::Loaded(Loaded {
                    snapshot: d.snapshot,
                    changes: d
                        .changes
                        .into_iter()
                        .map(|(hash, bytes)| StoredChange { hash, bytes })
                        .collect(),
                    sync_states: d.sync_states.into_iter().collect(),
                    snapshot_heads: None,
                    stored_heads: None,
                })
            }
            StorageTask::Append { doc, changes, .. } => {
                let d = self.docs.entry(*doc).or_default();
                for c in changes {
                    d.changes.entry(c.hash).or_insert_with(|| c.bytes.clone());
                }
                IoResult::Done
            }
            StorageTask::Compact {
                doc,
                snapshot,
                delete,
                ..
            } => {
                let d = self.docs.entry(*doc).or_default();
                d.snapshot = Some(snapshot.clone());
                for h in delete {
                    d.changes.remove(h);
                }
                IoResult::Done
            }
            StorageTask::SaveSyncState { doc, peer, state } => {
                self.docs
                    .entry(*doc)
                    .or_default()
                    .sync_states
                    .insert(peer.clone(), state.clone());
                IoResult::Done
            }
            StorageTask::Quarantine {
                doc,
                changes,
                refusal,
                snapshot,
            } => {
                let d = self.docs.entry(*doc).or_default();
                d.changes.clear();
                d.snapshot = Some(snapshot.clone());
                for c in changes {
                    self.refused
                        .push((*doc, c.clone(), refusal.code.as_str().to_owned()));
                }
                IoResult::Done
            }
            StorageTask::Forget { doc } => {
                self.docs.remove(doc);
                IoResult::Done
            }
            StorageTask::ClaimActors { device, actors } => {
                for a in actors {
                    self.actor_claims.entry(a.clone()).or_insert(*device);
                }
                IoResult::Done
            }
        }
    }

    /// Bytes stored for a document (snapshot plus change rows).
    #[must_use]
    pub fn stored_bytes(&self, doc: &DocumentId) -> usize {
        self.docs.get(doc).map_or(0, |d| {
            d.snapshot.as_ref().map_or(0, Vec::len)
                + d.changes.values().map(Vec::len).sum::<usize>()
        })
    }
}

/// `n` changes of a fresh document, each putting `k<i>` = `i` at its root, as storage
/// tasks carry them: for tests of stores.
///
/// # Panics
/// Never for a fresh document.
#[must_use]
pub fn plain_changes(n: usize) -> (automerge::Automerge, Vec<StoredChange>) {
    use automerge::transaction::Transactable as _;
    let mut d = automerge::Automerge::new();
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let mut tx = d.transaction();
        tx.put(
            automerge::ROOT,
            format!("k{i}"),
            i64::try_from(i).unwrap_or(i64::MAX),
        )
        .expect("a put at the root of a fresh document");
        tx.commit();
        let c = d.get_last_local_change().expect("the change just made");
        rows.push(StoredChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        });
    }
    (d, rows)
}

/// The engine's `Append` of `changes` into `doc`, whose heads are then `heads`.
#[must_use]
pub fn append(doc: DocumentId, changes: Vec<StoredChange>, heads: Vec<ChangeHash>) -> StorageTask {
    StorageTask::Append {
        doc,
        kind: None,
        changes,
        heads,
        owners: Vec::new(),
    }
}
