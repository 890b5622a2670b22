//! One document's sync messages read together (server, ADR 0191). A gate's check-in is a
//! sync message of its own, and automerge's cost of applying a message grows with the
//! document as well as with the changes: ten gates' messages for one booking cost nearly
//! ten times one message of all of them. The host hands over the messages it has read
//! from its queue together ([`super::Input::Messages`]); the sync messages of one
//! document from several devices are applied with one `load_incremental`, validated
//! writer by writer, stored with one append and acknowledged each as if alone.
//!
//! Only what comes out the same as merging the messages one by one is merged together:
//! - every message is admitted as it would be alone, in order (actor ids, payload limits),
//!   and the changes admitted before it count as known;
//! - a message joins the merge only if it brings new plain changes whose dependencies
//!   the document holds or the message itself brings (so no change of the merge depends
//!   on another device's message), its writer is a device's own (not an edge box that
//!   relays), and its connection has no earlier message left out;
//! - every patch of the merge names the operation that made it, and so its actor id and
//!   the device that sent it; each device's patches are validated under its own
//!   identity. A patch that names no operation, or a conflict (where a losing write would
//!   not show), makes the merge fall back: rolled back, then message by message.
//!
//! What is left out is merged after the merge, message by message, in order.

use std::collections::{HashMap, HashSet};

use automerge::sync::{self, ChunkList};
use automerge::{ActorId, Automerge, ChangeHash, ObjId, Patch, PatchAction, ReadDoc};

use super::admit::Current;
use super::guard::Kind;
use super::{Admitted, ConnId, DocMsg, Engine, Event, Mode, StoredChange, actor};
use crate::doc_id::DocumentId;
use crate::ids::DeviceId;
use crate::validate;
use crate::wire::Message;
use crate::writer::Writer;

/// The changes of one merge hold at most so many bytes (as stored): a message that
/// would bring more is merged alone after it. Bounds the copy one merge holds on top of
/// the frames themselves (which count against the server's inbound budget).
const MERGE_BYTES: usize = 4 << 20;

/// A message that joins the merge.
struct Joining {
    conn: ConnId,
    admitted: Admitted,
    current: Option<Current>,
    writer: Writer,
    /// Its changes the document does not hold, as stored.
    incoming: Vec<StoredChange>,
    /// The actor ids of its changes.
    actors: Vec<ActorId>,
}

/// A message merged on its own, after the merge.
struct Alone {
    conn: ConnId,
    admitted: Admitted,
    current: Option<Current>,
    /// The message as it came, when its admission counted a change of the merge as
    /// known: admitted again if the merge did not take it.
    again: Option<DocMsg>,
}

impl Engine {
    /// Messages read together: each as [`Engine::on_message`] would handle it, except
    /// that consecutive sync messages are grouped by document and each group merged
    /// together. Anything else first merges the groups read before it.
    pub(super) fn on_messages(&mut self, msgs: Vec<(ConnId, Box<Message>)>) {
        let mut groups: Vec<(DocumentId, Vec<(ConnId, DocMsg)>)> = Vec::new();
        // The connections with messages in `groups`.
        let mut waiting: HashSet<ConnId> = HashSet::new();
        for (conn, msg) in msgs {
            let joined = self.conns.get(&conn).is_some_and(|c| c.joined);
            match *msg {
                Message::Sync {
                    document_id, data, ..
                } if joined && self.config.mode == Mode::Server => {
                    let m = DocMsg {
                        request: false,
                        data,
                    };
                    waiting.insert(conn);
                    match groups.iter_mut().find(|(d, _)| *d == document_id) {
                        Some((_, list)) => list.push((conn, m)),
                        None => groups.push((document_id, vec![(conn, m)])),
                    }
                }
                other => {
                    // Another kind of message comes after the connection's own sync
                    // messages; another connection's may go first (a `join`, say).
                    if waiting.contains(&conn) {
                        self.merge_groups(std::mem::take(&mut groups));
                        waiting.clear();
                    }
                    self.on_message(conn, other);
                }
            }
        }
        self.merge_groups(groups);
    }

    fn merge_groups(&mut self, groups: Vec<(DocumentId, Vec<(ConnId, DocMsg)>)>) {
        for (doc, list) in groups {
            if list.len() > 1 && self.can_merge_together(doc) {
                self.merge_together(doc, list);
            } else {
                for (conn, m) in list {
                    self.on_doc_frame(conn, doc, m);
                }
            }
        }
    }

    /// A document in memory, not new, with nothing waiting for dependencies, and taking
    /// frames (not held back until its acknowledgements are sent).
    fn can_merge_together(&mut self, doc: DocumentId) -> bool {
        if self.starving(doc) {
            return false;
        }
        let e = self.entry(doc);
        e.loaded && !e.doc.get_heads().is_empty() && e.doc.get_missing_deps(&[]).is_empty()
    }

    fn merge_together(&mut self, doc: DocumentId, list: Vec<(ConnId, DocMsg)>) {
        let mut joining: Vec<Joining> = Vec::new();
        let mut alone: Vec<Alone> = Vec::new();
        let mut left_out: HashSet<ConnId> = HashSet::new();
        for (conn, m) in list {
            if !self.frame_allowed(conn, doc, &m) {
                continue;
            }
            let Some(admitted) = self.admit_doc_message(conn, doc, &m) else {
                continue;
            };
            let current = self.admission.current.take();
            let again = self.admission.relied_on_together.then(|| m.clone());
            let first = !left_out.contains(&conn) && !joining.iter().any(|j| j.conn == conn);
            let held: usize = joining
                .iter()
                .flat_map(|j| j.incoming.iter().map(|c| c.bytes.len()))
                .sum();
            let joins = self.joins(conn, doc, &admitted).filter(|(_, incoming, _)| {
                let bytes: usize = incoming.iter().map(|c| c.bytes.len()).sum();
                first && held + bytes <= MERGE_BYTES
            });
            match joins {
                Some((writer, incoming, actors)) => {
                    self.admission
                        .together
                        .extend(incoming.iter().map(|c| c.hash));
                    joining.push(Joining {
                        conn,
                        admitted,
                        current,
                        writer,
                        incoming,
                        actors,
                    });
                }
                None => {
                    left_out.insert(conn);
                    alone.push(Alone {
                        conn,
                        admitted,
                        current,
                        again,
                    });
                }
            }
        }
        self.admission.together.clear();
        let merged = joining.len() > 1 && self.apply_together(doc, &mut joining);
        if merged {
            joining.clear();
        }
        let rest = joining.into_iter().map(|j| Alone {
            conn: j.conn,
            admitted: j.admitted,
            current: j.current,
            again: None,
        });
        for a in rest.chain(alone) {
            let mark = self.fx.tasks.len();
            match a.again.filter(|_| !merged) {
                // Admitted while a change it carries counted as the merge's, and the
                // merge did not happen: admitted again against the document as it is
                // (someone else's change refused meanwhile is foreign to this sender).
                Some(m) => self.on_doc_message(a.conn, doc, &m),
                None => {
                    self.apply_admitted(a.conn, doc, a.admitted);
                    self.admission.current = a.current;
                }
            }
            self.after_message(a.conn, doc, mark);
        }
    }

    /// Whether an admitted message may join the merge: its writer, its new changes as
    /// stored and their actor ids.
    fn joins(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        admitted: &Admitted,
    ) -> Option<(Writer, Vec<StoredChange>, Vec<ActorId>)> {
        let writer = admitted.writer.clone()?;
        if writer.device == self.config.writer.device
            || self.config.shared.relay(writer.device).is_some()
            || admitted.message.changes.is_empty()
        {
            return None;
        }
        if self.peer_state(conn, doc)?.state.read_only {
            return None;
        }
        let scan = admitted.scan.as_ref()?;
        let e = self.docs.get(&doc)?;
        let d = &e.doc;
        let elements: Vec<&[u8]> = admitted.message.changes.iter().collect();
        // The changes the message brings (as the payload guard read them), and those of a
        // whole saved document (a device far behind sends one) that are newer than what
        // the device and the server were known to share.
        let mut incoming: Vec<StoredChange> = Vec::new();
        let mut actors: Vec<ActorId> = Vec::new();
        let mut deps: Vec<ChangeHash> = Vec::new();
        for chunk in &scan.chunks {
            let bytes = elements.get(chunk.element)?.get(chunk.range.clone())?;
            match &chunk.kind {
                Kind::Change(m) => {
                    if d.get_missing_deps(&[m.hash]).is_empty() {
                        continue;
                    }
                    deps.extend_from_slice(&m.deps);
                    let actor = ActorId::from(m.actor.as_slice());
                    if !actors.contains(&actor) {
                        actors.push(actor);
                    }
                    incoming.push(StoredChange {
                        hash: m.hash,
                        bytes: bytes.to_vec(),
                    });
                }
                Kind::Document(_) => {
                    let saved = Automerge::load(bytes).ok()?;
                    let shared = &e.peers.get(&conn)?.state.shared_heads;
                    let missing = saved.get_missing_deps(shared);
                    let base: Vec<ChangeHash> = shared
                        .iter()
                        .filter(|h| !missing.contains(h))
                        .copied()
                        .collect();
                    for c in saved.get_changes(&base) {
                        if d.get_missing_deps(&[c.hash()]).is_empty() {
                            continue;
                        }
                        deps.extend_from_slice(c.deps());
                        if !actors.contains(c.actor_id()) {
                            actors.push(c.actor_id().clone());
                        }
                        incoming.push(StoredChange {
                            hash: c.hash(),
                            bytes: c.raw_bytes().to_vec(),
                        });
                    }
                }
            }
        }
        let own: HashSet<ChangeHash> = incoming.iter().map(|c| c.hash).collect();
        deps.retain(|h| !own.contains(h));
        let together = &self.admission.together;
        if incoming.is_empty()
            || incoming.iter().any(|c| together.contains(&c.hash))
            || !d.get_missing_deps(&deps).is_empty()
        {
            // Nothing new, another message of the merge brings it, or it depends on
            // what another message brings (or on what the server does not hold).
            return None;
        }
        Some((writer, incoming, actors))
    }

    /// Applies the joining messages' changes at once, validates each device's patches as
    /// its own, stores them with one append and brings each sender's sync state where
    /// the message alone would have. `false` (the document as it was) if the merge is
    /// not the same as message by message.
    fn apply_together(&mut self, doc: DocumentId, joining: &mut [Joining]) -> bool {
        let checks = self.proof_check(doc);
        let ours = actor(&self.config);
        let Some(e) = self.docs.get_mut(&doc) else {
            return false;
        };
        let before = e.doc.get_heads();
        let mut bytes = Vec::new();
        for j in joining.iter() {
            for c in &j.incoming {
                bytes.extend_from_slice(&c.bytes);
            }
        }
        let mut log = automerge::PatchLog::active();
        let applied = e.doc.load_incremental_log_patches(&bytes, &mut log).is_ok()
            && e.doc.get_missing_deps(&[]).is_empty();
        let valid = applied && {
            let patches = e.doc.make_patches(&mut log);
            match by_writer(patches, joining) {
                Some(parts) => parts.iter().zip(joining.iter()).all(|(part, j)| {
                    validate::validate_patches_with(&e.doc, &before, part, &j.writer, &checks)
                        .is_ok()
                }),
                None => false,
            }
        };
        if !valid {
            if e.doc.get_heads() != before
                && let Ok(mut f) = e.doc.fork_at(&before)
            {
                f.set_actor(ours);
                e.doc = f;
            }
            return false;
        }
        let incoming: Vec<StoredChange> = joining
            .iter()
            .flat_map(|j| j.incoming.iter().cloned())
            .collect();
        let by: Vec<DeviceId> = joining.iter().map(|j| j.writer.device).collect();
        self.persist(doc, &before, Some(incoming), &by);
        self.fx.events.push(Event::MergedTogether {
            doc,
            messages: joining.len(),
        });
        for j in joining.iter_mut() {
            self.wrote(j.conn, doc);
            let mut actors = Vec::new();
            self.unclaimed_actors(&j.incoming, &mut actors);
            self.keep_claims(doc, actors, j.writer.device);
            self.learn_sent(j.conn, doc, &j.admitted.message);
        }
        true
    }

    /// The sender's sync state after its message was merged together with others: what
    /// automerge would have made of the message alone. Its changes are in the document
    /// now; the rest of the message (heads, need, have, flags) is read as usual.
    fn learn_sent(&mut self, conn: ConnId, doc: DocumentId, message: &sync::Message) {
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let Some(p) = e.peers.get_mut(&conn) else {
            return;
        };
        let rest = sync::Message {
            heads: message.heads.clone(),
            need: message.need.clone(),
            have: message.have.clone(),
            changes: ChunkList::from(Vec::<Vec<u8>>::new()),
            flags: message.flags,
            version: message.version.clone(),
        };
        // A message with changes never counts as the peer having seen our heads.
        let last_sent = p.state.last_sent_heads.clone();
        let mut log = automerge::PatchLog::inactive();
        if crate::receive::receive_sync_message_with(
            &mut e.doc,
            &mut p.state,
            rest,
            &mut log,
            &mut self.replies,
        )
        .is_err()
        {
            p.state = sync::State::new();
        }
        p.state.last_sent_heads = last_sent;
        // Persist before acknowledge: answered when the append is written.
        self.answer_or_owe(conn, doc);
    }
}

/// The patches of a merge, split by the device whose operation each names (in the
/// order of `joining`); `None` if one names no operation of theirs, or is a conflict.
fn by_writer(patches: Vec<Patch>, joining: &[Joining]) -> Option<Vec<Vec<Patch>>> {
    let mut owner: HashMap<&ActorId, usize> = HashMap::new();
    for (i, j) in joining.iter().enumerate() {
        for a in &j.actors {
            if owner.insert(a, i).is_some_and(|k| k != i) {
                return None;
            }
        }
    }
    let mut parts: Vec<Vec<Patch>> = joining.iter().map(|_| Vec::new()).collect();
    for p in patches {
        let (PatchAction::PutMap {
            value: (_, id),
            conflict: false,
            ..
        }
        | PatchAction::PutSeq {
            value: (_, id),
            conflict: false,
            ..
        }) = &p.action
        else {
            return None;
        };
        let ObjId::Id(_, actor, _) = id else {
            return None;
        };
        let i = *owner.get(actor)?;
        parts[i].push(p);
    }
    Some(parts)
}
