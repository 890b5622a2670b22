//! Connections: a peer joining and leaving, decoding each frame and dispatching it, the
//! `join`/`peer` handshake, per-connection sync states, and telling a peer why before
//! closing it (`error` frames with a refusal code).

use std::collections::BTreeSet;

use automerge::sync;

use super::{
    Conn, ConnId, DocMsg, Engine, Event, Mode, PeerDoc, Pending, StorageTask, TaskPurpose,
};
use crate::doc_id::DocumentId;
use crate::refusal::RefusalCode;
use crate::wire::{self, Message, PeerMetadata};
use crate::writer::Writer;

impl Engine {
    pub(super) fn send(&mut self, conn: ConnId, msg: &Message) {
        self.fx.sends.push((conn, msg.encode()));
    }

    pub(super) fn target(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .and_then(|c| c.remote_peer.clone())
            .unwrap_or_default()
    }

    pub(super) fn send_error(
        &mut self,
        conn: ConnId,
        message: &str,
        refusal: Option<wire::Refusal>,
    ) {
        let msg = Message::Error {
            sender_id: Some(self.config.peer_id.clone()),
            target_id: Some(self.target(conn)),
            message: message.to_owned(),
            refusal,
        };
        self.send(conn, &msg);
    }

    /// Closes `conn` because the server cannot take more from it now.
    pub(super) fn overloaded(&mut self, conn: ConnId, doc: Option<DocumentId>) {
        self.close_with(
            conn,
            "server busy, reconnect later",
            RefusalCode::Overloaded,
            doc,
        );
    }

    /// Tells `conn` why with an `error` of refusal `code`, then closes it: the peer
    /// resumes from its saved sync state and sends again what the server did not keep.
    pub(super) fn close_with(
        &mut self,
        conn: ConnId,
        message: &str,
        code: RefusalCode,
        doc: Option<DocumentId>,
    ) {
        self.send_error(conn, message, Some(wire::Refusal::new(code, doc)));
        self.fx.close.push(conn);
        self.on_disconnected(conn);
    }

    pub(super) fn on_connected(&mut self, conn: ConnId, writer: Option<Writer>) {
        self.conns.insert(
            conn,
            Conn {
                writer,
                remote_peer: None,
                remote_storage: None,
                joined: false,
                docs: BTreeSet::new(),
            },
        );
        if self.config.mode == Mode::Client {
            let join = Message::Join {
                sender_id: self.config.peer_id.clone(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some(self.config.storage_id.clone()),
                    is_ephemeral: Some(false),
                }),
                supported_protocol_versions: vec![wire::PROTOCOL_V1.to_owned()],
            };
            self.send(conn, &join);
        }
    }

    pub(super) fn on_disconnected(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for doc in c.docs {
            if let Some(w) = self.watchers.get_mut(&doc) {
                w.retain(|(k, _)| *k != conn);
                if w.is_empty() {
                    self.watchers.remove(&doc);
                }
            }
            let Some(e) = self.docs.get_mut(&doc) else {
                continue;
            };
            let Some(p) = e.peers.remove(&conn) else {
                continue;
            };
            if let Some(storage) = &c.remote_storage {
                let state = p.state.encode();
                e.saved_states.insert(storage.clone(), state.clone());
                self.task(
                    TaskPurpose::Other(doc),
                    StorageTask::SaveSyncState {
                        doc,
                        peer: storage.clone(),
                        state,
                    },
                );
            }
        }
    }

    pub(super) fn on_frame(&mut self, conn: ConnId, bytes: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let msg = match wire::decode(bytes) {
            Ok(m) => m,
            Err(err) => {
                let text = format!("malformed message: {err}");
                self.fx.events.push(Event::ProtocolError {
                    conn,
                    error: text.clone(),
                });
                self.send_error(
                    conn,
                    &text,
                    Some(wire::Refusal::new(RefusalCode::MalformedMessage, None)),
                );
                return;
            }
        };
        self.on_message(conn, msg);
    }

    /// A decoded message from a connection (the host may decode frames itself, off the
    /// engine's task, to route them to the shard of their document).
    pub(super) fn on_message(&mut self, conn: ConnId, msg: Message) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let joined = self.conns.get(&conn).is_some_and(|c| c.joined);
        match msg {
            Message::Join {
                sender_id,
                peer_metadata,
                supported_protocol_versions,
            } => {
                self.on_join(
                    conn,
                    sender_id,
                    peer_metadata.as_ref(),
                    &supported_protocol_versions,
                );
            }
            Message::Peer {
                sender_id,
                peer_metadata,
                selected_protocol_version,
                ..
            } => {
                self.on_peer(conn, sender_id, peer_metadata, &selected_protocol_version);
            }
            _ if !joined => {
                self.send_error(
                    conn,
                    "join first",
                    Some(wire::Refusal::new(RefusalCode::NotJoined, None)),
                );
            }
            Message::Request {
                document_id, data, ..
            } => self.on_doc_frame(
                conn,
                document_id,
                DocMsg {
                    request: true,
                    data,
                },
            ),
            Message::Sync {
                document_id, data, ..
            } => self.on_doc_frame(
                conn,
                document_id,
                DocMsg {
                    request: false,
                    data,
                },
            ),
            Message::DocUnavailable { document_id, .. } => self.on_unavailable(conn, document_id),
            Message::Ephemeral {
                document_id,
                session_id,
                count,
                data,
                ..
            } => self.on_ephemeral(conn, document_id, &session_id, count, data),
            Message::Error {
                refusal, message, ..
            } => self.on_remote_error(conn, refusal, &message),
            Message::Leave { .. } => self.on_disconnected(conn),
            Message::RemoteHeadsChanged { .. } | Message::RemoteSubscriptionChange { .. } => {}
        }
    }

    pub(super) fn on_join(
        &mut self,
        conn: ConnId,
        sender: String,
        meta: Option<&PeerMetadata>,
        versions: &[String],
    ) {
        if self.config.mode != Mode::Server {
            return;
        }
        if !versions.iter().any(|v| v == wire::PROTOCOL_V1) {
            if !self.config.answers_join {
                return;
            }
            self.send_error(
                conn,
                "unsupported protocol version",
                Some(wire::Refusal::new(RefusalCode::UnsupportedProtocol, None)),
            );
            self.fx.close.push(conn);
            return;
        }
        let storage = meta
            .filter(|m| m.is_ephemeral != Some(true))
            .and_then(|m| m.storage_id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.remote_peer = Some(sender.clone());
            c.remote_storage.clone_from(&storage);
            c.joined = true;
        }
        if !self.config.answers_join {
            return;
        }
        let peer = Message::Peer {
            sender_id: self.config.peer_id.clone(),
            target_id: sender,
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(self.config.storage_id.clone()),
                is_ephemeral: Some(false),
            }),
            selected_protocol_version: wire::PROTOCOL_V1.to_owned(),
        };
        self.send(conn, &peer);
        self.fx.events.push(Event::PeerJoined {
            conn,
            storage_id: storage,
        });
    }

    pub(super) fn on_peer(
        &mut self,
        conn: ConnId,
        sender: String,
        meta: Option<PeerMetadata>,
        version: &str,
    ) {
        if self.config.mode != Mode::Client {
            return;
        }
        if version != wire::PROTOCOL_V1 {
            self.fx.events.push(Event::ProtocolError {
                conn,
                error: "server chose an unknown protocol version".into(),
            });
            self.fx.close.push(conn);
            return;
        }
        let storage = meta.and_then(|m| m.storage_id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.remote_peer = Some(sender);
            c.remote_storage.clone_from(&storage);
            c.joined = true;
        }
        self.fx.events.push(Event::PeerJoined {
            conn,
            storage_id: storage,
        });
        let docs: Vec<DocumentId> = self.local_docs.iter().copied().collect();
        for doc in docs {
            if let Some(p) = self.ensure_loaded(doc, Pending::Announce { conn }) {
                self.run_pending(doc, p);
            }
        }
    }

    pub(super) fn peer_state(&mut self, conn: ConnId, doc: DocumentId) -> Option<&mut PeerDoc> {
        let storage = self.conns.get(&conn).and_then(|c| c.remote_storage.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.docs.insert(doc);
        }
        let now = self.now;
        let e = self.docs.get_mut(&doc)?;
        Some(e.peers.entry(conn).or_insert_with(|| {
            let state = storage
                .and_then(|s| e.saved_states.get(&s))
                .and_then(|b| sync::State::decode(b).ok())
                .unwrap_or_default();
            PeerDoc::new(state, now)
        }))
    }

    pub(super) fn on_ephemeral(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        session_id: &str,
        count: u64,
        data: Vec<u8>,
    ) {
        if self.config.mode == Mode::Client {
            self.fx.events.push(Event::Ephemeral { doc, data });
            return;
        }
        self.relay_ephemeral(conn, doc, session_id, count, &data);
    }
}
