//! A simulated device: its identity, its copies of documents and one automerge sync state
//! per document for the current connection. It writes with `kepu_sync_core::edits`, so
//! every change is one a real kepu device would make.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use automerge::sync;
use automerge::{ActorId, Automerge, ChangeHash};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{self, Edit};
use kepu_sync_core::engine::guard::Limits;
use kepu_sync_core::generate;
use kepu_sync_core::wire::Message;
use kepu_sync_core::writer::Writer;

/// Current time, unix milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A UUID v7 text id (scan ids, slot ids) from the clock and fresh randomness.
#[must_use]
pub fn fresh_id() -> uuid::Uuid {
    kepu_sync_core::ids::uuid_v7(now_ms(), rand::random())
}

/// A random (version 4) UUID.
#[must_use]
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// One document on one device.
pub struct Replica {
    /// The device's copy.
    pub doc: Automerge,
    /// Sync state towards the server for the current connection.
    pub state: sync::State,
    /// The server said it has no copy it can share.
    pub unavailable: bool,
}

/// What a device knows about itself.
#[derive(Clone)]
pub struct Identity {
    /// Who writes (device, user, role, school, venue).
    pub writer: Writer,
    /// Bearer token for kepu-server; `None` for the JavaScript peer.
    pub token: Option<String>,
}

/// A device with its documents.
pub struct Device {
    /// Identity.
    pub id: Identity,
    /// Its documents.
    pub docs: BTreeMap<DocumentId, Replica>,
    actor: ActorId,
}

impl Device {
    /// A device with no documents.
    #[must_use]
    pub fn new(id: Identity) -> Self {
        let actor = ActorId::from(rand::random::<[u8; 16]>().as_slice());
        Self {
            id,
            docs: BTreeMap::new(),
            actor,
        }
    }

    /// The automerge-repo peer id for a new connection: one per app session, as a
    /// restarted automerge-repo client picks a fresh one.
    #[must_use]
    pub fn peer_id(&self) -> String {
        let session: u32 = rand::random();
        format!("dev-{}-{session:08x}", self.id.writer.device)
    }

    /// The device's stable storage id.
    #[must_use]
    pub fn storage_id(&self) -> String {
        format!("st-{}", self.id.writer.device)
    }

    /// Tracks `doc` (empty until synced) if it is not tracked yet.
    pub fn want(&mut self, doc: DocumentId) {
        let actor = self.actor.clone();
        self.docs.entry(doc).or_insert_with(|| Replica {
            doc: Automerge::new().with_actor(actor),
            state: sync::State::new(),
            unavailable: false,
        });
    }

    /// Writes `edit` into `doc` as this device; returns the new change's hash.
    ///
    /// # Errors
    /// The edit does not fit the document (e.g. a check-in on a booking not yet received).
    pub fn edit(&mut self, doc: DocumentId, edit: &Edit) -> anyhow::Result<Option<ChangeHash>> {
        self.want(doc);
        let replica = self.docs.get_mut(&doc).context("tracked document")?;
        edits::apply_unchecked(&mut replica.doc, &self.id.writer, now_ms(), edit)
            .map_err(|e| anyhow!("edit {} on {doc}: {e}", edit.name()))
    }

    /// Forgets every sync state: the next connection starts from scratch (or from states
    /// restored with [`Device::restore_states`]).
    pub fn reset_states(&mut self) {
        for r in self.docs.values_mut() {
            r.state = sync::State::new();
            r.unavailable = false;
        }
    }

    /// Keeps only what a device persists of each sync state (the shared heads), as after
    /// going offline and coming back.
    ///
    /// # Errors
    /// A state does not round-trip (never expected).
    pub fn persist_states(&mut self) -> anyhow::Result<()> {
        for r in self.docs.values_mut() {
            r.state = sync::State::decode(&r.state.encode()).context("sync state round trip")?;
            r.unavailable = false;
        }
        Ok(())
    }

    /// The persisted form of each document's sync state (only the shared heads).
    #[must_use]
    pub fn save_states(&self) -> BTreeMap<DocumentId, Vec<u8>> {
        self.docs
            .iter()
            .map(|(id, r)| (*id, r.state.encode()))
            .collect()
    }

    /// Restores sync states saved with [`Device::save_states`].
    ///
    /// # Errors
    /// A saved state does not decode.
    pub fn restore_states(&mut self, saved: &BTreeMap<DocumentId, Vec<u8>>) -> anyhow::Result<()> {
        for (id, bytes) in saved {
            if let Some(r) = self.docs.get_mut(id) {
                r.state = sync::State::decode(bytes).context("saved sync state")?;
                r.unavailable = false;
            }
        }
        Ok(())
    }

    /// The message to send for `doc`, if any: `request` while the device has nothing,
    /// otherwise `sync`. Like the phone's engine, the device sends its changes, not its
    /// whole copy (ADR 0202).
    pub fn outgoing(&mut self, conn_peer: &str, server: &str, doc: DocumentId) -> Option<Message> {
        let replica = self.docs.get_mut(&doc)?;
        let empty = replica.doc.get_heads().is_empty();
        let data = generate::generate_as_changes(
            &replica.doc,
            &mut replica.state,
            &mut generate::Replies::default(),
            &Limits::default(),
        )?
        .encode();
        Some(if empty {
            Message::Request {
                sender_id: conn_peer.to_owned(),
                target_id: server.to_owned(),
                document_id: doc,
                data,
            }
        } else {
            Message::Sync {
                sender_id: conn_peer.to_owned(),
                target_id: server.to_owned(),
                document_id: doc,
                data,
            }
        })
    }

    /// Every message due on every document.
    pub fn all_outgoing(&mut self, conn_peer: &str, server: &str) -> Vec<Message> {
        let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
        ids.into_iter()
            .filter_map(|d| self.outgoing(conn_peer, server, d))
            .collect()
    }

    /// Handles one message from the server; returns the replies due and the changes it
    /// brought (hashes new to this device).
    ///
    /// # Errors
    /// An automerge sync message that does not decode or apply.
    pub fn handle(
        &mut self,
        conn_peer: &str,
        server: &str,
        message: Message,
    ) -> anyhow::Result<Incoming> {
        let mut incoming = Incoming::default();
        match message {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => {
                let Some(replica) = self.docs.get_mut(&document_id) else {
                    // Not a document this device tracks: say so, as automerge-repo would.
                    incoming.replies.push(Message::DocUnavailable {
                        sender_id: conn_peer.to_owned(),
                        target_id: server.to_owned(),
                        document_id,
                    });
                    return Ok(incoming);
                };
                let before = replica.doc.get_heads();
                let msg = sync::Message::decode(&data).context("automerge sync message")?;
                // As automerge's `receive_sync_message`, without its walk of the whole
                // history for every message (ADR 0194): the devices share the server's
                // cores, and every server faces the same devices.
                kepu_sync_core::receive::receive_sync_message(
                    &mut replica.doc,
                    &mut replica.state,
                    msg,
                    &mut automerge::PatchLog::inactive(),
                )
                .context("receive sync message")?;
                replica.unavailable = false;
                let after = replica.doc.get_heads();
                if after != before {
                    // Metadata only: building the changes themselves cost the devices an
                    // eighth of their CPU at the end of day, for hashes alone.
                    incoming.new_changes = replica
                        .doc
                        .get_changes_meta(&before)
                        .iter()
                        .map(|m| m.hash)
                        .collect();
                }
                incoming
                    .replies
                    .extend(self.outgoing(conn_peer, server, document_id));
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(r) = self.docs.get_mut(&document_id) {
                    r.unavailable = true;
                }
                incoming.unavailable = Some(document_id);
            }
            Message::Error {
                message, refusal, ..
            } => {
                incoming.error = Some(match refusal {
                    Some(r) => format!("{message} (refusal {})", r.code),
                    None => message,
                });
            }
            _ => {}
        }
        Ok(incoming)
    }

    /// Is `doc` in sync with the server: the server's last heads equal ours and nothing
    /// of ours is missing there?
    #[must_use]
    pub fn in_sync(&self, doc: &DocumentId) -> bool {
        self.docs.get(doc).is_some_and(|r| {
            let ours = r.doc.get_heads();
            !ours.is_empty()
                && r.state.their_heads.as_ref().is_some_and(|theirs| {
                    let mut theirs = theirs.clone();
                    theirs.sort();
                    theirs == ours
                })
        })
    }

    /// Which of `hashes` (changes of `doc` this device holds) the server holds as far as
    /// this device knows: the changes covered by the heads it shares with the server
    /// (automerge's `shared_heads`, set from the heads the server sends, which it sends
    /// only for stored changes). This is the device's acknowledgement.
    #[must_use]
    pub fn server_holds(&self, doc: &DocumentId, hashes: &[ChangeHash]) -> Vec<ChangeHash> {
        let Some(r) = self.docs.get(doc) else {
            return Vec::new();
        };
        let shared = &r.state.shared_heads;
        if shared.is_empty() {
            return Vec::new();
        }
        if r.doc.get_heads().iter().all(|h| shared.contains(h)) {
            return hashes.to_vec();
        }
        let not_shared: std::collections::HashSet<ChangeHash> = r
            .doc
            .get_changes_meta(shared)
            .iter()
            .map(|m| m.hash)
            .collect();
        hashes
            .iter()
            .filter(|h| !not_shared.contains(h))
            .copied()
            .collect()
    }

    /// Is every document in sync?
    #[must_use]
    pub fn all_in_sync(&self) -> bool {
        self.docs.keys().all(|d| self.in_sync(d))
    }

    /// Heads of `doc` (empty when untracked).
    #[must_use]
    pub fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.docs
            .get(doc)
            .map(|r| r.doc.get_heads())
            .unwrap_or_default()
    }
}

/// What one received message did.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Messages to send back.
    pub replies: Vec<Message>,
    /// Changes this device did not have before.
    pub new_changes: Vec<ChangeHash>,
    /// The server has no copy of this document.
    pub unavailable: Option<DocumentId>,
    /// An `error` message's text.
    pub error: Option<String>,
}
