//! Server: changes another node sharing the database stored. The host tells the engine
//! ([`Input::StoredElsewhere`](super::Input::StoredElsewhere)); for a document in memory
//! the engine reads its change rows, merges those it does not hold without validating
//! them again (the node that stored them did) and syncs them to its own peers.

use std::collections::HashSet;

use automerge::{Change, ChangeHash, ReadDoc};

use super::{Engine, Event, IoResult, StorageTask, TaskPurpose};
use crate::doc_id::DocumentId;

impl Engine {
    pub(super) fn on_stored_elsewhere(&mut self, doc: DocumentId) {
        let Some(e) = self.docs.get_mut(&doc) else {
            // Not in memory: its next load reads what was stored.
            return;
        };
        if !e.loaded || e.refreshing {
            // A load in flight may have read before the other node committed: read again
            // once it (or the refresh running) completes.
            e.refresh_again = true;
            return;
        }
        self.start_refresh(doc, false);
    }

    /// Starts reading `doc`'s rows (`full`: its whole stored state).
    pub(super) fn start_refresh(&mut self, doc: DocumentId, full: bool) {
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        e.refreshing = true;
        e.refresh_again = false;
        let generation = e.generation;
        let task = if full {
            StorageTask::Load { doc }
        } else {
            StorageTask::LoadChanges { doc }
        };
        self.task(
            TaskPurpose::Refresh {
                doc,
                generation,
                full,
            },
            task,
        );
    }

    /// After a load: read again if more was stored elsewhere while it ran.
    pub(super) fn refresh_if_owed(&mut self, doc: DocumentId) {
        if self
            .docs
            .get(&doc)
            .is_some_and(|e| e.loaded && e.refresh_again && !e.refreshing)
        {
            self.start_refresh(doc, false);
        }
    }

    pub(super) fn on_refreshed(
        &mut self,
        doc: DocumentId,
        generation: u64,
        full: bool,
        result: IoResult,
    ) {
        let Some(e) = self
            .docs
            .get_mut(&doc)
            .filter(|e| e.generation == generation)
        else {
            return;
        };
        e.refreshing = false;
        let loaded = match result {
            IoResult::Loaded(l) => l,
            IoResult::Done => super::Loaded::default(),
            IoResult::Failed(error) => {
                // Read again at the next notification; devices still get what this node
                // stores, and a reconnect loads the document afresh.
                self.fx.events.push(Event::StorageFailed { doc, error });
                self.refresh_if_owed(doc);
                return;
            }
        };
        let stored_heads = loaded.stored_heads;
        let before = e.doc.get_heads();
        // Another node compacted since we last read the snapshot: its snapshot may hold
        // changes whose rows are gone.
        let replaced = !full
            && e.snapshot_heads.is_some()
            && loaded.snapshot_heads.is_some()
            && loaded.snapshot_heads != e.snapshot_heads;
        if full {
            // The rows stored now, exactly: those deleted by another node's compaction
            // are in its snapshot.
            e.stored_rows.clear();
            e.stored_bytes = 0;
            if loaded.snapshot_heads.is_some() {
                e.snapshot_heads = loaded.snapshot_heads.clone();
            }
        }
        let known: HashSet<ChangeHash> = e.stored_rows.iter().copied().collect();
        let mut problems = Vec::new();
        let mut new_rows = Vec::new();
        let mut changes = Vec::new();
        for row in loaded.changes {
            // A row we hold already is in `stored_rows`, or is our own append in flight
            // (added when it completes); after a whole read, every stored row counts.
            let held = e.doc.get_missing_deps(&[row.hash]).is_empty();
            if (full || !held) && !known.contains(&row.hash) {
                new_rows.push((row.hash, row.bytes.len()));
            }
            if held {
                continue;
            }
            match Change::from_bytes(row.bytes) {
                Ok(c) => changes.push(c),
                Err(err) => problems.push(crate::stored::LoadProblem::Row {
                    hash: row.hash,
                    error: err.to_string(),
                }),
            }
        }
        if let Err(err) = e.doc.apply_changes(changes) {
            problems.push(crate::stored::LoadProblem::Apply(err.to_string()));
        }
        if let Some(snapshot) = loaded.snapshot.as_deref() {
            match automerge::Automerge::load(snapshot) {
                Ok(mut other) => {
                    if let Err(err) = e.doc.merge(&mut other) {
                        problems.push(crate::stored::LoadProblem::Apply(err.to_string()));
                    }
                    e.snapshot_bytes = snapshot.len();
                }
                Err(err) => problems.push(crate::stored::LoadProblem::Snapshot(err.to_string())),
            }
        }
        // Rows stored elsewhere are covered by our next snapshot like our own.
        for (hash, bytes) in new_rows {
            e.stored_rows.push(hash);
            e.stored_bytes += bytes;
        }
        let missing = !e.doc.get_missing_deps(&[]).is_empty();
        let changed = e.doc.get_heads() != before;
        let quiet = e.appends_in_flight == 0;
        if !problems.is_empty() {
            self.fx.events.push(Event::LoadProblems { doc, problems });
        }
        if (missing || replaced) && !full {
            // Their ancestors were folded into a snapshot another node wrote.
            self.start_refresh(doc, true);
        } else {
            self.refresh_if_owed(doc);
        }
        if changed && quiet {
            // With appends in flight, their completion announces and fans out (persist
            // before acknowledge: our heads include changes not yet stored). A state the
            // storing node recorded as its own is announced (projected) by that node.
            let (kind, theirs) = self.docs.get(&doc).map_or((None, false), |e| {
                let mut ours = e.doc.get_heads();
                ours.sort_unstable();
                let theirs = stored_heads.is_some_and(|mut h| {
                    h.sort_unstable();
                    h == ours
                });
                (crate::schema::kind_of(&e.doc), theirs)
            });
            if !theirs {
                self.fx.events.push(Event::DocChanged { doc, kind });
            }
            self.fan_out(doc);
        } else if changed {
            // Written elsewhere: the watchers at rest hear them now (ADR 0198).
            self.fan_out_due.insert(doc);
        }
    }
}
