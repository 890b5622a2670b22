//! Merge (server): validating the changes a device sent against its identity, and when a
//! change is refused, rolling back and accepting the rest change by change.

use std::collections::HashSet;

use automerge::sync;
use automerge::{Change, ChangeHash};

use super::{ConnId, Engine, Event, StoredChange, actor};
use crate::doc_id::DocumentId;
use crate::validate::{self, Refusal, RefusalCode};
use crate::wire;
use crate::writer::Writer;

impl Engine {
    /// Server: the document already holds the incoming changes on top of `before`.
    /// Validate; on refusal, roll back and accept change by change.
    pub(super) fn merge_validated(
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
        // An edge box relays other devices' changes: each is validated as its author
        // wrote it, so they go change by change (ADR 0150).
        let relay = self.config.shared.relay(writer.device).is_some();
        let verdict = if relay {
            Err(Refusal {
                code: RefusalCode::ForeignActor,
                path: String::new(),
            })
        } else {
            validate::validate_patches_with(&e.doc, before, patches, writer, &checks)
        };
        if verdict.is_ok() {
            self.persist(doc, before, incoming, &[writer.device]);
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
            let author = if relay {
                let Some(w) = self
                    .config
                    .shared
                    .relayed_writer(writer.device, change.actor_id().to_bytes())
                else {
                    refused_set.insert(hash);
                    refused.push((
                        hash,
                        Refusal {
                            code: RefusalCode::ForeignActor,
                            path: String::new(),
                        },
                    ));
                    continue;
                };
                w
            } else {
                writer.clone()
            };
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
            if let Err(r) = validate::validate_patches_with(&rolled, &b, &patches, &author, &checks)
            {
                refused_set.insert(hash);
                refused.push((hash, r));
                if let Ok(mut f) = rolled.fork_at(&b) {
                    f.set_actor(actor(&self.config));
                    rolled = f;
                }
            }
        }
        // Every relayed change passed as its author's: nothing was rolled back.
        let relayed_all = relay && refused.is_empty();
        e.doc = rolled;
        e.refused.extend(refused_set.iter().copied());
        if relayed_all {
            self.persist(doc, before, incoming, &[writer.device]);
            return;
        }
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
            let message = format!("changes refused: {refusal}");
            self.send_error(
                conn,
                &message,
                Some(wire::Refusal {
                    code: refusal.code,
                    path: refusal.path,
                    document_id: Some(doc),
                    changes: hashes,
                }),
            );
        }
        self.persist_new(doc, before, &[writer.device]);
    }

    /// What the server verifies beyond the document rules, for a merge into `doc`.
    pub(super) fn proof_check(&self, doc: DocumentId) -> validate::ProofCheck {
        let Some(key) = self.config.proof_key else {
            return validate::ProofCheck {
                doc: Some(doc),
                derived: self.config.derived_ids.clone(),
                ..validate::ProofCheck::default()
            };
        };
        let revoked = if self.config.revocations_doc.is_some_and(|r| r != doc) {
            self.publish_revocations();
            self.config.shared.revoked()
        } else {
            std::collections::BTreeMap::default()
        };
        validate::ProofCheck {
            server_key: Some(key),
            revoked,
            doc: Some(doc),
            derived: self.config.derived_ids.clone(),
        }
    }

    /// If this engine holds the revocation list and it moved since it was last
    /// published, publishes it for every shard (`shared::Shared`).
    pub(super) fn publish_revocations(&self) {
        let Some(d) = self.config.revocations_doc.and_then(|r| self.doc(&r)) else {
            return;
        };
        let heads = d.get_heads();
        if !self.config.shared.revoked_at(&heads) {
            self.config
                .shared
                .publish_revoked(heads, crate::schema::revocations::read_with_times(d));
        }
    }
}
