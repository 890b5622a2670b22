//! One websocket connection speaking the automerge-repo v1 protocol: `join` → `peer`, then
//! binary frames of one CBOR message each, counted in shared byte counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use kepu_sync_core::wire::{self, Message, PROTOCOL_V1, PeerMetadata};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the handshake (`join` → `peer`) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Traffic counters shared by every connection of a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes of binary frames sent by the devices.
    pub bytes_sent: AtomicU64,
    /// Bytes of binary frames received by the devices.
    pub bytes_received: AtomicU64,
    /// Frames sent.
    pub frames_sent: AtomicU64,
    /// Frames received.
    pub frames_received: AtomicU64,
    /// `error` messages received (kepu refusals included).
    pub errors: AtomicU64,
    /// Connections that dropped for no reason the run knows of and that a device then
    /// re-opened (goal 0).
    pub reconnects: AtomicU64,
    /// Connections a chaos run's kill dropped and that a device then re-opened.
    pub kill_reconnects: AtomicU64,
    /// Why connections dropped (other than a chaos run's kills): reason → count.
    pub drop_reasons: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// (bytes sent, bytes received) so far.
    #[must_use]
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_sent.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// Counts a dropped connection under `reason`.
    pub fn dropped(&self, reason: &str) {
        if let Ok(mut m) = self.drop_reasons.lock() {
            *m.entry(reason.to_owned()).or_insert(0) += 1;
        }
    }

    /// The drop reasons so far, emptied.
    #[must_use]
    pub fn take_drop_reasons(&self) -> BTreeMap<String, u64> {
        self.drop_reasons
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// An open, joined connection.
pub struct Conn {
    socket: Socket,
    /// Our automerge-repo peer id.
    pub peer_id: String,
    /// The server's peer id, from its `peer` message.
    pub server_id: String,
    /// The code and reason of the server's close frame, once it sent one.
    pub closed: Option<String>,
    counters: Arc<Counters>,
}

impl Conn {
    /// Opens `url` (with `Authorization: Bearer` when `token` is set), sends `join` with the
    /// device's stable `storage_id` (so the server may keep its sync state) and waits for
    /// `peer`.
    ///
    /// # Errors
    /// The socket does not open, the upgrade is refused, or the server answers anything but
    /// `peer` within [`HANDSHAKE_TIMEOUT`].
    pub async fn open(
        url: &str,
        token: Option<&str>,
        peer_id: String,
        storage_id: &str,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let mut request = url
            .into_client_request()
            .with_context(|| format!("bad websocket URL {url:?}"))?;
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}")
                    .parse()
                    .context("token is not a valid header value")?,
            );
        }
        let (socket, _) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| anyhow!("websocket upgrade timed out"))?
                .context("websocket upgrade failed")?;
        let mut conn = Self {
            socket,
            peer_id,
            server_id: String::new(),
            closed: None,
            counters,
        };
        let join = Message::Join {
            sender_id: conn.peer_id.clone(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(storage_id.to_owned()),
                is_ephemeral: Some(false),
            }),
            supported_protocol_versions: vec![PROTOCOL_V1.to_owned()],
        };
        conn.send(&join).await?;
        let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv())
            .await
            .map_err(|_| anyhow!("no peer message within {HANDSHAKE_TIMEOUT:?}"))??;
        match reply {
            Some(Message::Peer { sender_id, .. }) => conn.server_id = sender_id,
            Some(Message::Error { message, .. }) => bail!("server refused join: {message}"),
            Some(other) => bail!("expected peer, got {}", other.type_name()),
            None => bail!("connection closed during the handshake"),
        }
        Ok(conn)
    }

    /// Sends one message as one binary websocket message.
    ///
    /// # Errors
    /// The socket is closed or broken.
    pub async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        let bytes = message.encode();
        let len = bytes.len() as u64;
        // In pieces, as the phone library sends (ADR 0192).
        kepu_sync_core::wire::socket::send_binary(&mut self.socket, bytes)
            .await
            .context("websocket send failed")?;
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The next protocol message; `None` when the server closed the connection.
    ///
    /// # Errors
    /// A broken socket, a text frame or a frame that does not decode.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            let Some(frame) = self.socket.next().await else {
                return Ok(None);
            };
            match frame.context("websocket receive failed")? {
                Ws::Binary(bytes) => {
                    self.counters
                        .bytes_received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    self.counters
                        .frames_received
                        .fetch_add(1, Ordering::Relaxed);
                    let message = wire::decode(&bytes).context("undecodable frame")?;
                    if matches!(message, Message::Error { .. }) {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Some(message));
                }
                Ws::Close(frame) => {
                    self.closed = Some(frame.map_or_else(
                        || "no close code".to_owned(),
                        |f| format!("{} {}", u16::from(f.code), f.reason),
                    ));
                    return Ok(None);
                }
                Ws::Text(_) => bail!("unexpected text frame"),
                _ => {}
            }
        }
    }

    /// Closes the connection politely (errors ignored: the peer may be gone already).
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
