//! Documents: the in-memory entry of each document, loading it on first use and queueing
//! what arrives meanwhile, applying an incoming sync message (after the payload guard),
//! generating replies and fanning changes out, and our own local edits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::sync;
use automerge::{Automerge, Change, ChangeHash, ReadDoc};

use super::guard;
use super::{
    Admitted, ConnId, DocEntry, DocMsg, Engine, Event, Mode, Pending, StorageTask, StoredChange,
    TaskPurpose, actor,
};
use crate::doc_id::DocumentId;
use crate::edits::{self, Edit};
use crate::generate;
use crate::refusal::RefusalCode;
use crate::validate::{self};
use crate::wire::{self, Message};

impl Engine {
    pub(super) fn entry(&mut self, doc: DocumentId) -> &mut DocEntry {
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
            stored_bytes: 0,
            snapshot_bytes: 0,
            snapshot_heads: None,
            appends_in_flight: 0,
            unwritten: HashMap::new(),
            compacting: false,
            last_used: now,
            refused: HashSet::new(),
            generation,
            busy_since: None,
            refreshing: false,
            refresh_again: false,
        });
        e.last_used = now;
        e
    }

    /// Queues `p` until `doc` is loaded, starting the load if needed. Returns true if the
    /// document is loaded and `p` should run now.
    pub(super) fn ensure_loaded(&mut self, doc: DocumentId, p: Pending) -> Option<Pending> {
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
    pub(super) fn hold(&mut self, doc: DocumentId, p: Pending) {
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

    pub(super) fn run_pending(&mut self, doc: DocumentId, p: Pending) {
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

    /// May `conn` send a frame for `doc` (within its number of documents; not empty)?
    /// Answers the sender when not.
    pub(super) fn frame_allowed(&mut self, conn: ConnId, doc: DocumentId, msg: &DocMsg) -> bool {
        let over_limit = self.conns.get(&conn).is_some_and(|c| {
            !c.docs.contains(&doc) && c.docs.len() >= self.config.max_docs_per_conn
        });
        if over_limit {
            self.send_error(
                conn,
                "too many documents on one connection",
                Some(wire::Refusal::new(RefusalCode::TooManyDocuments, Some(doc))),
            );
            return false;
        }
        !msg.data.is_empty()
    }

    pub(super) fn on_doc_frame(&mut self, conn: ConnId, doc: DocumentId, msg: DocMsg) {
        if !self.frame_allowed(conn, doc, &msg) {
            return;
        }
        if self.starving(doc) {
            self.hold(doc, Pending::Frame { conn, doc_msg: msg });
            return;
        }
        if let Some(p) = self.ensure_loaded(doc, Pending::Frame { conn, doc_msg: msg }) {
            self.run_pending(doc, p);
        }
    }

    /// A document busy for longer than the bound stops taking new frames until its
    /// appends are written and its replies sent: acknowledgements are never starved.
    pub(super) fn starving(&self, doc: DocumentId) -> bool {
        let limit = self.config.max_ack_delay_ms;
        let now = self.now;
        self.config.mode == Mode::Server
            && self
                .docs
                .get(&doc)
                .is_some_and(|e| e.loaded && e.busy_since.is_some_and(|t| now - t >= limit))
    }

    pub(super) fn unavailable(&mut self, conn: ConnId, doc: DocumentId) {
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

    pub(super) fn on_doc_message(&mut self, conn: ConnId, doc: DocumentId, msg: &DocMsg) {
        if let Some(admitted) = self.admit_doc_message(conn, doc, msg) {
            self.apply_admitted(conn, doc, admitted);
        }
    }

    /// A device's sync message for `doc`, decoded, checked for access and through the
    /// payload guard and admission; `None` if it goes no further (the sender was told).
    pub(super) fn admit_doc_message(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        msg: &DocMsg,
    ) -> Option<Admitted> {
        if !self.conns.contains_key(&conn) {
            return None;
        }
        let Ok(message) = sync::Message::decode(&msg.data) else {
            self.send_error(
                conn,
                "malformed automerge sync message",
                Some(wire::Refusal::new(RefusalCode::MalformedSync, Some(doc))),
            );
            return None;
        };
        let writer = self.conns.get(&conn).and_then(|c| c.writer.clone());
        let server = self.config.mode == Mode::Server;
        let e = self.docs.get(&doc)?;
        let exists = !e.doc.get_heads().is_empty();
        if server {
            let Some(w) = writer.as_ref() else {
                self.unavailable(conn, doc);
                return None;
            };
            if exists && !validate::can_read(w, &e.doc) {
                self.unavailable(conn, doc);
                return None;
            }
            if !exists && message.heads.is_empty() {
                self.unavailable(conn, doc);
                return None;
            }
        }
        // Nothing reaches automerge before the payload guard has read it.
        let (message, scan) = self.admit(conn, doc, message, writer.as_ref())?;
        let _ = msg.request;
        Some(Admitted {
            message,
            writer,
            scan,
        })
    }

    /// Merges an admitted message into `doc` (validated, on the server), persists what it
    /// brought and answers, or owes the answer while the document's appends are written.
    pub(super) fn apply_admitted(&mut self, conn: ConnId, doc: DocumentId, admitted: Admitted) {
        let Admitted {
            message,
            writer,
            scan,
        } = admitted;
        let server = self.config.mode == Mode::Server;
        let device = writer.as_ref().map(|w| w.device);
        let Some(peer) = self.peer_state(conn, doc) else {
            return;
        };
        let mut state = std::mem::take(&mut peer.state);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let before = e.doc.get_heads();
        // The changes this message brings, read from its chunks, so that persisting them
        // needs no walk of the document's history.
        let mut incoming = incoming_changes(&e.doc, &message, scan.as_ref());
        let mut log = automerge::PatchLog::new(server);
        if let Err(err) = crate::receive::receive_sync_message_with(
            &mut e.doc,
            &mut state,
            message,
            &mut log,
            &mut self.replies,
        ) {
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
                Some(wire::Refusal::new(RefusalCode::MalformedSync, Some(doc))),
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
                self.persist(doc, &before, incoming, device.as_slice());
            }
            if server {
                self.wrote(conn, doc);
            }
        }
        self.answer_or_owe(conn, doc);
    }

    /// Answers `conn` now if it may be (see [`Self::answerable`]) and is not writing to
    /// a busy document; else the reply is owed and goes when the document's appends are
    /// written, carrying all that was merged meanwhile.
    pub(super) fn answer_or_owe(&mut self, conn: ConnId, doc: DocumentId) {
        let busy = self.docs.get(&doc).is_some_and(|e| e.appends_in_flight > 0);
        if self.answerable(conn, doc) && !(busy && self.writing(conn, doc)) {
            self.generate(conn, doc, false);
        } else if let Some(p) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
            p.owed = true;
        }
    }

    /// `conn` brought changes to `doc` now (server): it is a writer of it for a while, and
    /// the document's watchers are due to hear them.
    pub(super) fn wrote(&mut self, conn: ConnId, doc: DocumentId) {
        self.fan_out_due.insert(doc);
        let now = self.now;
        if let Some(p) = self.docs.get_mut(&doc).and_then(|e| e.peers.get_mut(&conn)) {
            p.wrote_at = Some(now);
        }
    }

    /// Has `conn` brought changes to `doc` recently ([`super::WRITER_QUIET_MS`])?
    fn writing(&self, conn: ConnId, doc: DocumentId) -> bool {
        let now = self.now;
        self.docs
            .get(&doc)
            .and_then(|e| e.peers.get(&conn))
            .and_then(|p| p.wrote_at)
            .is_some_and(|t| now - t < super::WRITER_QUIET_MS)
    }

    /// May `conn` be sent our heads of `doc` now? Persist before acknowledge: never
    /// heads that cover a change of its device not yet written. On the server that is
    /// decided per device, so that a device watching a busy document hears others'
    /// changes as they are merged (ADR 0198); on a phone, whose one peer is the server,
    /// only when nothing is being written.
    pub(super) fn answerable(&self, conn: ConnId, doc: DocumentId) -> bool {
        let Some(e) = self.docs.get(&doc) else {
            return false;
        };
        if e.appends_in_flight == 0 {
            return true;
        }
        if self.config.mode != Mode::Server {
            return false;
        }
        self.conns
            .get(&conn)
            .and_then(|c| c.writer.as_ref())
            .is_some_and(|w| !e.unwritten.contains_key(&w.device))
    }

    /// The fan-outs due after this input's merges and writes.
    pub(super) fn run_due_fan_outs(&mut self) {
        while let Some(doc) = self.fan_out_due.pop_first() {
            let busy = self.docs.get(&doc).is_some_and(|e| e.appends_in_flight > 0);
            if busy {
                self.fan_out_early(doc);
            } else {
                self.fan_out(doc);
            }
        }
    }

    /// While `doc`'s appends are written (ADR 0198): the merged changes to devices that
    /// watch without writing and had confirmed all we sent them. Devices writing to it hear
    /// others' changes with their acknowledgements, so that a busy document's writers
    /// are not sent a message (and do not answer one) per merge.
    pub(super) fn fan_out_early(&mut self, doc: DocumentId) {
        let Some(e) = self.docs.get(&doc) else {
            return;
        };
        // At rest: it confirmed everything we sent. A device still catching up, or not
        // yet answering our last message, hears the rest when it answers.
        let conns: Vec<ConnId> = e
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.owed
                    && !p.state.shared_heads.is_empty()
                    && p.state.shared_heads == p.state.last_sent_heads
            })
            .map(|(c, _)| *c)
            .collect();
        for conn in conns {
            if self.answerable(conn, doc) && !self.writing(conn, doc) {
                self.generate(conn, doc, false);
            }
        }
    }

    /// Sends our next sync message for `doc` to `conn`, if there is one.
    pub(super) fn generate(&mut self, conn: ConnId, doc: DocumentId, as_request: bool) {
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
        let message = if server {
            generate::generate_sync_message(&e.doc, &mut p.state, &mut self.replies)
        } else {
            // A device sends the server its changes, not its whole copy (ADR 0202).
            generate::generate_as_changes(
                &e.doc,
                &mut p.state,
                &mut self.replies,
                &self.config.limits,
            )
        };
        if let Some(m) = message {
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

    pub(super) fn fan_out(&mut self, doc: DocumentId) {
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

    pub(super) fn on_edit(&mut self, doc: DocumentId, edit: Edit) {
        if self.config.mode == Mode::Client {
            self.local_docs.insert(doc);
        }
        if let Some(p) = self.ensure_loaded(doc, Pending::Edit(edit)) {
            self.run_pending(doc, p);
        }
    }

    pub(super) fn apply_edit(&mut self, doc: DocumentId, edit: &Edit) {
        let writer = self.config.writer.clone();
        let now = self.now;
        let actor = actor(&self.config);
        let Some(e) = self.docs.get_mut(&doc) else {
            return;
        };
        let before = e.doc.get_heads();
        // Validated from the transaction's own patches, and the new change taken as the
        // last local one: neither walks the document or its history (ADR 0125).
        let (hash, patches) = match edits::apply_logged(&mut e.doc, &writer, now, edit) {
            Ok(done) => done,
            Err(err) => {
                self.fx.events.push(Event::EditFailed { doc, error: err });
                return;
            }
        };
        if let Err(refusal) = validate::validate_patches(&e.doc, &before, &patches, &writer) {
            if let Ok(mut f) = e.doc.fork_at(&before) {
                f.set_actor(actor);
                e.doc = f;
            }
            self.fx.events.push(Event::EditFailed {
                doc,
                error: edits::EditError::Refused(refusal),
            });
            return;
        }
        self.fx.events.push(Event::EditApplied { doc });
        let Some(hash) = hash else {
            return;
        };
        let known = e
            .doc
            .get_last_local_change()
            .filter(|c| c.hash() == hash)
            .map(|c| {
                vec![StoredChange {
                    hash,
                    bytes: c.raw_bytes().to_vec(),
                }]
            });
        let by = [self.config.writer.device];
        self.persist(doc, &before, known, &by);
    }

    /// Writes `edit` without validating it first, as a tampered or outdated app would.
    /// The server still validates it; this exists so tests can show that it does.
    #[cfg(feature = "testing")]
    pub fn edit_unchecked(&mut self, now: i64, doc: DocumentId, edit: &Edit) -> super::Effects {
        self.now = now;
        let writer = self.config.writer.clone();
        if let Some(e) = self.docs.get_mut(&doc).filter(|e| e.loaded) {
            let before = e.doc.get_heads();
            match edits::apply_unchecked(&mut e.doc, &writer, now, edit) {
                Ok(_) => self.persist_new(doc, &before, &[writer.device]),
                Err(err) => self.fx.events.push(Event::EditFailed { doc, error: err }),
            }
        }
        std::mem::take(&mut self.fx)
    }
}

/// The changes `message` brings that `doc` lacks, as they are to be stored: `None` when
/// `persist` must ask the document instead (changes wait in its queue, a whole document
/// came, or a chunk does not read). On the server the payload guard has read every chunk
/// with its hash, also the changes of an element that holds many (a whole document
/// split, or a message that concatenates its changes); a phone reads each element.
fn incoming_changes(
    doc: &Automerge,
    message: &sync::Message,
    scan: Option<&guard::Scan>,
) -> Option<Vec<StoredChange>> {
    let new = |hash: &ChangeHash| !doc.get_missing_deps(&[*hash]).is_empty();
    if !doc.get_missing_deps(&[]).is_empty() {
        return None;
    }
    let mut out = Vec::new();
    match scan {
        Some(scan) if scan.has_documents() => return None,
        Some(scan) => {
            let elements: Vec<&[u8]> = message.changes.iter().collect();
            for (chunk, m) in scan.changes() {
                let bytes = elements.get(chunk.element)?.get(chunk.range.clone())?;
                if new(&m.hash) {
                    out.push(StoredChange {
                        hash: m.hash,
                        bytes: bytes.to_vec(),
                    });
                }
            }
        }
        None => {
            for chunk in message.changes.iter() {
                let c = Change::try_from(chunk).ok()?;
                if new(&c.hash()) {
                    out.push(StoredChange {
                        hash: c.hash(),
                        bytes: chunk.to_vec(),
                    });
                }
            }
        }
    }
    Some(out)
}
