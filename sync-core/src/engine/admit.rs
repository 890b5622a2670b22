//! Admitting a device's sync message before automerge applies it, and the bookkeeping
//! after: the payload guard's limits ([`super::guard`]), actor ids that belong to devices,
//! and a bound on changes that wait in memory for dependencies that never come.
//!
//! **Actor ids belong to devices.** The server learns which device owns an actor id from
//! the first accepted write under it and keeps the claim (persisted through
//! [`StorageTask::ClaimActors`], loaded back with [`Engine::load_actor_claims`]). A change
//! under an actor id owned by another device, or under the server's own, is refused with
//! `foreign-actor`, and so are the changes of the same message that depend on it; the rest
//! of the message is applied. Without this, anyone who can read a document (actor ids are
//! in its history) could take another device's next sequence number with an empty change,
//! and automerge would then refuse that device's own next change forever.

use std::collections::{HashMap, HashSet};

use automerge::sync::{self, ChunkList};
use automerge::{Automerge, ChangeHash, ReadDoc};

use super::guard::{self, Kind, Refused, Scan};
use super::shared::Claim;
use super::{ConnId, Engine, Event, Mode, StorageTask, TaskPurpose, actor};
use crate::doc_id::DocumentId;
use crate::ids::DeviceId;
use crate::receive::applied;
use crate::validate::{self, Refusal, RefusalCode};
use crate::wire;
use crate::writer::Writer;

/// The admission state of an engine.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Per document: changes waiting for missing dependencies, as far as we know them.
    queues: HashMap<DocumentId, Queue>,
    /// The message being handled: its connection, document and admitted changes.
    pub(super) current: Option<Current>,
    /// Ephemeral messages per connection in the current second: (second start, count).
    ephemeral: HashMap<ConnId, (i64, u32)>,
    /// Changes of messages read together and admitted, about to be merged as one
    /// (`together`): admission counts them as the document's already.
    pub(super) together: HashSet<ChangeHash>,
    /// The last admission counted a change as known because it was in `together`: if
    /// the merge does not take that change, the message is admitted again after it.
    pub(super) relied_on_together: bool,
    /// Whole documents loaded and split, and the changes rebuilt from them ([`Work`]).
    ///
    /// [`Work`]: super::Work
    pub(super) documents_split: u64,
    pub(super) changes_rebuilt: u64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Hashes of changes that were queued.
    hashes: HashSet<ChangeHash>,
    /// Inflated bytes of those changes, per connection that brought them.
    bytes: HashMap<ConnId, u64>,
}

/// A whole document split on admission.
struct Split {
    /// The changes kept, as plain change chunks one after the other.
    kept: Vec<u8>,
    /// How many changes were rebuilt from it, if it was loaded.
    rebuilt: Option<u64>,
    /// A change counted as known because it was among messages read together.
    relied: bool,
}

#[derive(Debug)]
pub(super) struct Current {
    conn: ConnId,
    doc: DocumentId,
    /// Admitted change chunks: hash, dependencies, inflated size.
    changes: Vec<(ChangeHash, Vec<ChangeHash>, u64)>,
}

/// Whose an actor id is, seen from the device that writes under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Mine,
    Foreign,
    Unclaimed,
}

/// Does `doc` hold the change `hash` (applied, or waiting in its queue)? `queue_deps` is
/// `doc.get_missing_deps(&[])`: automerge answers `get_missing_deps` from the queued
/// changes as well as from the hashes asked about.
fn holds(doc: &Automerge, queue_deps: &[ChangeHash], hash: ChangeHash) -> bool {
    if queue_deps.contains(&hash) {
        return false;
    }
    if queue_deps.is_empty() {
        return doc.get_missing_deps(&[hash]).is_empty();
    }
    let mut missing = doc.get_missing_deps(&[hash]);
    missing.sort_unstable();
    let mut base = queue_deps.to_vec();
    base.sort_unstable();
    missing == base
}

/// The changes of `other` that `doc` has applied and that no other such change depends
/// on, found walking back from `other`'s heads, and how many changes of `other` `doc` has
/// not applied (those the walk passed). `other.get_changes` of the frontier lists the
/// changes `doc` has not applied (what `doc` applied, it applied with every ancestor),
/// unless an actor's changes in `other` do not depend on one another: automerge leaves
/// out an actor's changes by sequence number, and a hand-made copy need not chain them.
fn applied_frontier(doc: &Automerge, other: &Automerge) -> (Vec<ChangeHash>, usize) {
    let mut frontier = Vec::new();
    let mut lacking = 0;
    let mut seen: HashSet<ChangeHash> = HashSet::new();
    let mut stack = other.get_heads();
    while let Some(hash) = stack.pop() {
        if !seen.insert(hash) {
            continue;
        }
        if applied(doc, &hash) {
            frontier.push(hash);
        } else if let Some(meta) = other.get_change_meta_by_hash(&hash) {
            lacking += 1;
            stack.extend(meta.deps);
        }
    }
    (frontier, lacking)
}

impl Engine {
    /// Loads actor claims (actor id → owning device) kept by the host, at start. The
    /// first claim of an actor id wins; a later one for another device is ignored.
    pub fn load_actor_claims(&mut self, claims: impl IntoIterator<Item = (Vec<u8>, DeviceId)>) {
        self.config.shared.load_claims(claims);
    }

    /// Claims the shared store holds (another node learned them, or the store refused
    /// an append because of them): they replace what this engine believed, since the
    /// store keeps the first claim of each actor id, whichever node made it. Changes
    /// under a corrected actor id that this engine admitted but could not store are
    /// refused when the device sends them again (`foreign-actor`).
    pub fn correct_actor_claims(&mut self, claims: impl IntoIterator<Item = (Vec<u8>, DeviceId)>) {
        self.config.shared.correct_claims(claims);
    }

    /// Server: the owner of each distinct actor id of `changes` as this engine admitted
    /// them (its own actor id is its writer's); empty on a phone.
    pub(super) fn owners_of(&self, changes: &[super::StoredChange]) -> Vec<(Vec<u8>, DeviceId)> {
        if self.config.mode != Mode::Server {
            return Vec::new();
        }
        let mut out: Vec<(Vec<u8>, DeviceId)> = Vec::new();
        for c in changes {
            let Some(a) = guard::change_actor(&c.bytes, &self.config.limits) else {
                continue;
            };
            if out.iter().any(|(x, _)| *x == a) {
                continue;
            }
            let owner = if a == self.config.actor.as_slice() {
                Some(self.config.writer.device)
            } else {
                self.config.shared.actor_owner(&a)
            };
            if let Some(owner) = owner {
                out.push((a, owner));
            }
        }
        out
    }

    /// The device that owns an actor id, if the server has seen one write under it.
    #[must_use]
    pub fn actor_owner(&self, actor: &[u8]) -> Option<DeviceId> {
        self.config.shared.actor_owner(actor)
    }

    /// Whose is `actor`, seen from `writer`?
    fn actor_status(&self, actor: &[u8], writer: &Writer) -> Status {
        if writer.device == self.config.writer.device {
            return Status::Mine;
        }
        if actor == self.config.actor.as_slice() {
            return Status::Foreign;
        }
        // An edge box writes nothing of its own: every actor id it sends must belong to
        // a device of its roster (ADR 0150).
        if let Some(roster) = self.config.shared.relay(writer.device) {
            return match self.config.shared.actor_owner(actor) {
                Some(owner) if roster.contains_key(&owner) => Status::Mine,
                _ => Status::Foreign,
            };
        }
        match self.config.shared.actor_owner(actor) {
            None => Status::Unclaimed,
            Some(owner) if owner == writer.device => Status::Mine,
            Some(_) => Status::Foreign,
        }
    }

    /// Is `actor` someone else's than `writer`'s?
    fn foreign(&self, actor: &[u8], writer: &Writer) -> bool {
        self.actor_status(actor, writer) == Status::Foreign
    }

    /// Sends a refusal of a whole frame.
    fn refuse_frame(&mut self, conn: ConnId, doc: DocumentId, refused: &Refused) {
        self.fx.events.push(Event::ProtocolError {
            conn,
            error: format!("sync message refused: {}", refused.detail),
        });
        self.send_error(
            conn,
            &refused.detail,
            Some(wire::Refusal::new(refused.code.clone(), Some(doc))),
        );
    }

    /// Checks `message` against the payload limits and, on the server, drops the changes
    /// written under another device's actor id (and those depending on them), answering
    /// with `foreign-actor`. Returns what automerge may apply, with the payload guard's
    /// reading of it (server), or `None` if the whole message is refused (the sender was
    /// told why).
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        mut message: sync::Message,
        writer: Option<&Writer>,
    ) -> Option<(sync::Message, Option<Scan>)> {
        self.admission.current = None;
        self.admission.relied_on_together = false;
        // A phone trusts what its server sends (documents may be larger than what one
        // device may send); the limits protect the server from devices.
        if self.config.mode == Mode::Client {
            return Some((message, None));
        }
        let scan = match guard::scan(&message, &self.config.limits) {
            Ok(scan) => scan,
            Err(refused) => {
                self.refuse_frame(conn, doc, &refused);
                return None;
            }
        };
        let mut refused: Vec<(ChangeHash, RefusalCode)> = Vec::new();
        let mut replaced: HashMap<usize, Vec<u8>> = HashMap::new();
        if let Some(w) = writer {
            if let Err(r) = self.check_actor_count(&scan, w) {
                self.refuse_frame(conn, doc, &r);
                return None;
            }
            let mut claims: Vec<Vec<u8>> = Vec::new();
            let mut relied = false;
            let queue_deps = self
                .docs
                .get(&doc)
                .map(|e| e.doc.get_missing_deps(&[]))
                .unwrap_or_default();
            let mut bad: HashSet<ChangeHash> = self
                .docs
                .get(&doc)
                .map(|e| e.refused.clone())
                .unwrap_or_default();
            for (i, chunk) in scan.chunks.iter().enumerate() {
                match &chunk.kind {
                    Kind::Change(m) => {
                        // A peer may echo back changes it got from us: those are ours
                        // already, whoever wrote them.
                        let pending = self.admission.together.contains(&m.hash);
                        relied |= pending;
                        let known = || {
                            pending
                                || self
                                    .docs
                                    .get(&doc)
                                    .is_some_and(|e| holds(&e.doc, &queue_deps, m.hash))
                        };
                        let deps_bad = m.deps.iter().any(|d| bad.contains(d));
                        let code = match self.actor_status(&m.actor, w) {
                            Status::Foreign if !known() => RefusalCode::ForeignActor,
                            _ if deps_bad => RefusalCode::DependsOnRefused,
                            Status::Unclaimed if !known() => {
                                // The sender's own new actor id is theirs from now on,
                                // claimed before automerge may queue the change (a change
                                // that waits for a dependency is stored later, when another
                                // peer's message completes it). Checked and taken in one
                                // step: another shard may be claiming it at this moment.
                                match self.config.shared.claims().claim(&m.actor, w.device) {
                                    Claim::New => claims.push(m.actor.clone()),
                                    Claim::Own => {}
                                    Claim::Taken(_) => {
                                        bad.insert(m.hash);
                                        refused.push((m.hash, RefusalCode::ForeignActor));
                                    }
                                }
                                continue;
                            }
                            _ => continue,
                        };
                        bad.insert(m.hash);
                        refused.push((m.hash, code));
                    }
                    Kind::Document(d) => {
                        if d.actors.iter().any(|a| self.foreign(a, w)) {
                            let element = &message.changes.iter().nth(chunk.element)?;
                            let bytes = &element[chunk.range.clone()];
                            let Some(split) = self.split_document(
                                doc,
                                bytes,
                                &d.heads,
                                w,
                                &mut bad,
                                &mut refused,
                            ) else {
                                let refused = Refused {
                                    code: RefusalCode::MalformedSync,
                                    detail: "a document chunk that does not load".into(),
                                };
                                self.refuse_frame(conn, doc, &refused);
                                return None;
                            };
                            relied |= split.relied;
                            if let Some(rebuilt) = split.rebuilt {
                                self.admission.documents_split += 1;
                                self.admission.changes_rebuilt += rebuilt;
                            }
                            replaced.insert(i, split.kept);
                        }
                    }
                }
            }
            self.keep_claims(doc, claims, w.device);
            self.admission.relied_on_together = relied;
        }
        let dropped: HashSet<ChangeHash> = refused.iter().map(|(h, _)| *h).collect();
        let rewritten = !refused.is_empty() || !replaced.is_empty();
        if rewritten {
            let elements: Vec<&[u8]> = message.changes.iter().collect();
            let mut kept: Vec<Vec<u8>> = Vec::new();
            for (i, chunk) in scan.chunks.iter().enumerate() {
                if let Some(bytes) = replaced.remove(&i) {
                    kept.push(bytes);
                    continue;
                }
                if let Kind::Change(m) = &chunk.kind
                    && dropped.contains(&m.hash)
                {
                    continue;
                }
                kept.push(elements[chunk.element][chunk.range.clone()].to_vec());
            }
            message.changes = ChunkList::from(kept);
        }
        if !refused.is_empty() {
            self.report_refused(conn, doc, writer, &refused);
        }
        // What was kept is read again (a whole document is kept as plain changes), and
        // counted against the queue's bounds as such.
        let kept = if rewritten {
            guard::scan(&message, &self.config.limits).ok()
        } else {
            None
        };
        let counted = kept.as_ref().unwrap_or(&scan);
        self.admission.current = Some(Current {
            conn,
            doc,
            changes: counted
                .changes()
                .filter(|(_, m)| !dropped.contains(&m.hash))
                .map(|(c, m)| (m.hash, m.deps.clone(), c.inflated))
                .collect(),
        });
        let scan = if rewritten { kept } else { Some(scan) };
        Some((message, scan))
    }

    /// A device may own at most so many actor ids.
    fn check_actor_count(&self, scan: &Scan, writer: &Writer) -> Result<(), Refused> {
        if writer.device == self.config.writer.device {
            return Ok(());
        }
        let held = self.config.shared.claims();
        let new: HashSet<&[u8]> = scan
            .changes()
            .map(|(_, m)| m.actor.as_slice())
            .filter(|a| held.owner(a).is_none())
            .collect();
        let owned = held.owned_by(writer.device);
        drop(held);
        if !new.is_empty() && owned + new.len() > self.config.limits.actors_per_device {
            return Err(Refused {
                code: RefusalCode::TooManyActors,
                detail: format!(
                    "a device may write under at most {} actor ids",
                    self.config.limits.actors_per_device
                ),
            });
        }
        Ok(())
    }

    /// A document chunk that lists actor ids of other devices: load it on the side and
    /// keep, as plain changes, those that are new to the server and not foreign (nor
    /// depending on a refused change). `None` if it does not load.
    ///
    /// Only the changes our copy lacks are rebuilt from the loaded one (rebuilding a
    /// change from a document costs about what applying it does): at the end of day a
    /// gate sends its whole copy, the booking's roster and earlier scans with its own new
    /// ones. A document whose declared heads we hold brings nothing and is not loaded
    /// (ADR 0200).
    fn split_document(
        &self,
        doc: DocumentId,
        bytes: &[u8],
        heads: &[ChangeHash],
        writer: &Writer,
        bad: &mut HashSet<ChangeHash>,
        refused: &mut Vec<(ChangeHash, RefusalCode)>,
    ) -> Option<Split> {
        let ours = self.docs.get(&doc).map(|e| &e.doc);
        if let Some(d) = ours
            && heads.iter().all(|h| applied(d, h))
        {
            return Some(Split {
                kept: Vec::new(),
                rebuilt: None,
                relied: false,
            });
        }
        let scratch = Automerge::load(bytes).ok()?;
        let queue_deps = ours.map(|d| d.get_missing_deps(&[])).unwrap_or_default();
        let changes = match ours {
            Some(d) => {
                let (frontier, lacking) = applied_frontier(d, &scratch);
                let since = scratch.get_changes(&frontier);
                // Fewer than the walk passed: an actor's changes not chained one after
                // the other left one out; every change is read then.
                if since.len() == lacking {
                    since
                } else {
                    scratch.get_changes(&[])
                }
            }
            None => scratch.get_changes(&[]),
        };
        let rebuilt = changes.len() as u64;
        let mut kept = Vec::new();
        let mut relied = false;
        for change in changes {
            let hash = change.hash();
            let pending = self.admission.together.contains(&hash);
            relied |= pending;
            let known = pending || ours.is_some_and(|d| holds(d, &queue_deps, hash));
            if known {
                // Waiting in our queue for a change refused now: what depends on it is
                // refused too.
                if change.deps().iter().any(|d| bad.contains(d)) {
                    bad.insert(hash);
                }
                continue;
            }
            let code = if self.foreign(change.actor_id().to_bytes(), writer) {
                RefusalCode::ForeignActor
            } else if change.deps().iter().any(|d| bad.contains(d)) {
                RefusalCode::DependsOnRefused
            } else {
                kept.extend_from_slice(change.raw_bytes());
                continue;
            };
            bad.insert(hash);
            refused.push((hash, code));
        }
        Some(Split {
            kept,
            rebuilt: Some(rebuilt),
            relied,
        })
    }

    fn report_refused(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        writer: Option<&Writer>,
        refused: &[(ChangeHash, RefusalCode)],
    ) {
        if let Some(e) = self.docs.get_mut(&doc) {
            e.refused.extend(refused.iter().map(|(h, _)| *h));
        }
        let code = refused
            .iter()
            .map(|(_, c)| c.clone())
            .find(|c| *c != RefusalCode::DependsOnRefused)
            .unwrap_or(RefusalCode::DependsOnRefused);
        let refusal = Refusal {
            code: code.clone(),
            path: String::new(),
        };
        self.fx.events.push(Event::Refused {
            conn: Some(conn),
            doc,
            writer: writer.map(|w| Box::new(w.clone())),
            refusal: refusal.clone(),
            changes: refused.len(),
        });
        self.send_error(
            conn,
            &format!("changes refused: {refusal}"),
            Some(wire::Refusal {
                code,
                path: String::new(),
                document_id: Some(doc),
                changes: refused.iter().map(|(h, _)| h.0).collect(),
            }),
        );
    }

    /// After a device's message for `doc` was handled: learn the actor ids of the changes
    /// it stored (the appends emitted since task `mark`), and bound what waits for missing
    /// dependencies.
    pub(super) fn after_message(&mut self, conn: ConnId, doc: DocumentId, mark: usize) {
        if self.config.mode == Mode::Server
            && let Some(device) = self
                .conns
                .get(&conn)
                .and_then(|c| c.writer.as_ref())
                .map(|w| w.device)
        {
            self.learn_actors(doc, mark, device);
        }
        let current = self.admission.current.take();
        let Some(current) = current.filter(|c| c.conn == conn && c.doc == doc) else {
            return;
        };
        self.bound_queue(&current);
    }

    /// After the server's own edit of `doc`: its actor id is the server's.
    pub(super) fn after_own_edit(&mut self, doc: DocumentId, mark: usize) {
        if self.config.mode == Mode::Server {
            self.learn_actors(doc, mark, self.config.writer.device);
        }
    }

    /// Claims, for `device`, the unclaimed actor ids of the changes appended to `doc`
    /// since task `mark`, and asks the host to keep the claims.
    fn learn_actors(&mut self, doc: DocumentId, mark: usize, device: DeviceId) {
        let mut actors: Vec<Vec<u8>> = Vec::new();
        for (_, task) in self.fx.tasks.iter().skip(mark) {
            let StorageTask::Append {
                doc: d, changes, ..
            } = task
            else {
                continue;
            };
            if *d == doc {
                self.unclaimed_actors(changes, &mut actors);
            }
        }
        self.keep_claims(doc, actors, device);
    }

    /// Adds to `actors` the actor ids of `changes` that no device owns yet.
    pub(super) fn unclaimed_actors(
        &self,
        changes: &[super::StoredChange],
        actors: &mut Vec<Vec<u8>>,
    ) {
        for c in changes {
            if let Some(a) = guard::change_actor(&c.bytes, &self.config.limits)
                && self.config.shared.actor_owner(&a).is_none()
                && !actors.contains(&a)
            {
                actors.push(a);
            }
        }
    }

    /// Claims `actors` for `device` and asks the host to keep the claims.
    pub(super) fn keep_claims(&mut self, doc: DocumentId, actors: Vec<Vec<u8>>, device: DeviceId) {
        if actors.is_empty() {
            return;
        }
        {
            let mut held = self.config.shared.claims();
            for a in &actors {
                held.claim(a, device);
            }
        }
        self.task(
            TaskPurpose::Other(doc),
            StorageTask::ClaimActors { device, actors },
        );
    }

    /// Changes whose dependencies are missing wait in automerge's memory. Count what
    /// each connection brought into the queue; beyond the bounds, empty the document's
    /// queue (those changes were never stored or acknowledged) and tell the sender.
    fn bound_queue(&mut self, current: &Current) {
        let Current { conn, doc, changes } = current;
        let Some(e) = self.docs.get(doc) else {
            self.admission.queues.remove(doc);
            return;
        };
        let missing: HashSet<ChangeHash> = e.doc.get_missing_deps(&[]).into_iter().collect();
        if missing.is_empty() {
            self.admission.queues.remove(doc);
            return;
        }
        let queue = self.admission.queues.entry(*doc).or_default();
        let mut added = 0u64;
        for (hash, deps, size) in changes {
            if deps
                .iter()
                .any(|d| missing.contains(d) || queue.hashes.contains(d))
            {
                queue.hashes.insert(*hash);
                added = added.saturating_add(*size);
            }
        }
        if added == 0 {
            return;
        }
        *queue.bytes.entry(*conn).or_default() += added;
        let doc_total: u64 = queue.bytes.values().sum();
        let docs = &self.docs;
        let conn_total: u64 = self
            .admission
            .queues
            .iter()
            .filter(|(d, _)| docs.contains_key(*d))
            .filter_map(|(_, q)| q.bytes.get(conn))
            .sum();
        let limits = &self.config.limits;
        if doc_total <= limits.queued_bytes_per_doc && conn_total <= limits.queued_bytes_per_conn {
            return;
        }
        let ours = actor(&self.config);
        if let Some(e) = self.docs.get_mut(doc) {
            let heads = e.doc.get_heads();
            if let Ok(mut without) = e.doc.fork_at(&heads) {
                without.set_actor(ours);
                e.doc = without;
            }
            if let Some(p) = e.peers.get_mut(conn) {
                p.state = sync::State::new();
            }
        }
        self.admission.queues.remove(doc);
        self.refuse_frame(
            *conn,
            *doc,
            &Refused {
                code: RefusalCode::DependencyQueueFull,
                detail: "too many changes wait for changes the server does not have".into(),
            },
        );
    }

    /// Relays an ephemeral message to the other peers of `doc` that may read it, bounded
    /// in size and rate, with the sender id set to the id the sending connection joined
    /// with (never the one the frame claims).
    pub(super) fn relay_ephemeral(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        session_id: &str,
        count: u64,
        data: &[u8],
    ) {
        let limits = &self.config.limits;
        if data.len() > limits.ephemeral_bytes {
            let detail = format!("ephemeral data is at most {} bytes", limits.ephemeral_bytes);
            self.refuse_frame(
                conn,
                doc,
                &Refused {
                    code: RefusalCode::PayloadTooLarge,
                    detail,
                },
            );
            return;
        }
        let per_second = limits.ephemeral_per_second;
        let now = self.now;
        if self.admission.ephemeral.len() > 2 * self.conns.len() + 16 {
            let live = &self.conns;
            self.admission.ephemeral.retain(|c, _| live.contains_key(c));
        }
        let window = self.admission.ephemeral.entry(conn).or_insert((now, 0));
        if now - window.0 >= 1_000 || now < window.0 {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
        if window.1 > per_second {
            if window.1 == per_second + 1 {
                self.refuse_frame(
                    conn,
                    doc,
                    &Refused {
                        code: RefusalCode::RateLimited,
                        detail: format!("at most {per_second} ephemeral messages a second"),
                    },
                );
            }
            return;
        }
        let Some(e) = self.docs.get(&doc) else {
            return;
        };
        let conns = &self.conns;
        let reader = |c: &ConnId| {
            conns
                .get(c)
                .and_then(|c| c.writer.as_ref())
                .is_some_and(|w| validate::can_read(w, &e.doc))
        };
        if !e.peers.contains_key(&conn) || !reader(&conn) {
            return;
        }
        let sender = self.target(conn);
        let targets: Vec<(ConnId, String)> = e
            .peers
            .keys()
            .filter(|c| **c != conn && reader(c))
            .map(|c| (*c, self.target(*c)))
            .collect();
        for (other, target_id) in targets {
            let msg = wire::Message::Ephemeral {
                sender_id: sender.clone(),
                target_id,
                document_id: doc,
                session_id: session_id.to_owned(),
                count,
                data: data.to_vec(),
            };
            self.send(other, &msg);
        }
    }
}
