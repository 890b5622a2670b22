//! Client mode: what a phone's engine does that the server's does not — announcing and
//! fetching documents, knowing what the server holds, losing access, and quarantining
//! changes the server refused.

use std::collections::{BTreeSet, HashSet};

use automerge::sync;
use automerge::{Automerge, ChangeHash};

use super::{ConnId, Engine, Event, Mode, Pending, StorageTask, StoredChange, TaskPurpose, actor};
use crate::doc_id::DocumentId;
use crate::validate::{Refusal, RefusalCode};
use crate::wire;

impl Engine {
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

    /// Client: our own changes to `doc` that the server (on `conn`) is known to hold,
    /// those its last advertised heads cover.
    #[must_use]
    pub fn acknowledged(&self, conn: ConnId, doc: &DocumentId) -> Vec<ChangeHash> {
        let Some(e) = self.docs.get(doc).filter(|e| e.loaded) else {
            return Vec::new();
        };
        let Some(p) = e.peers.get(&conn) else {
            return Vec::new();
        };
        let ours = actor(&self.config);
        let unacknowledged: HashSet<ChangeHash> = e
            .doc
            .get_changes(&p.state.shared_heads)
            .iter()
            .map(|c| c.hash())
            .collect();
        e.doc
            .get_changes(&[])
            .iter()
            .filter(|c| c.actor_id() == &ours && !unacknowledged.contains(&c.hash()))
            .map(|c| c.hash())
            .collect()
    }

    /// Client: start syncing `doc` with the server on `conn`.
    pub(super) fn announce(&mut self, conn: ConnId, doc: DocumentId) {
        if !self.conns.get(&conn).is_some_and(|c| c.joined) {
            return;
        }
        let empty = self
            .docs
            .get(&doc)
            .is_none_or(|e| e.doc.get_heads().is_empty());
        self.generate(conn, doc, empty);
    }

    pub(super) fn on_want(&mut self, doc: DocumentId) {
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

    pub(super) fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
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
            // The server may have the document later (a colleague syncs it, the server
            // creates it): start the exchange over, so that the next ask on this
            // connection sends a request. automerge holds back a message while it waits
            // for an answer to the last one, and "unavailable" is not a sync message.
            if let Some(p) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
                p.state = sync::State::new();
            }
            self.fx.events.push(Event::Unavailable { doc });
        }
    }

    pub(super) fn on_remote_error(
        &mut self,
        conn: ConnId,
        refusal: Option<wire::Refusal>,
        message: &str,
    ) {
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
        match r.document_id {
            Some(doc) if !r.changes.is_empty() => self.quarantine(conn, doc, &r),
            doc => self.fx.events.push(Event::ServerRefused {
                conn,
                doc,
                code: r.code,
            }),
        }
    }

    /// Client: rebuild `doc` without the refused changes and those that depend on them.
    pub(super) fn quarantine(&mut self, conn: ConnId, doc: DocumentId, r: &wire::Refusal) {
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
        e.stored_bytes = 0;
        if let Some(p) = e.peers.get_mut(&conn) {
            p.state = sync::State::new();
        }
        let snapshot = e.doc.save();
        let refusal = Refusal {
            code: r.code.clone(),
            path: crate::validate::bounded_path(&r.path),
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
}
