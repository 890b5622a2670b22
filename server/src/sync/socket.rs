//! The `/sync` websocket owned by the server (ADR 0192): the HTTP/1.1 upgrade checked
//! here, and a message larger than [`PIECE`] sent as a fragmented message of pieces.
//!
//! The websocket library writes a whole frame into a connection's write buffer before the
//! socket takes it, and the buffer keeps that capacity while the connection lives. A
//! server's largest frames are whole saved documents for a device far behind; sent whole,
//! every such connection kept a buffer of its largest document (21 MiB of the end of
//! day's heap at its peak). Sent in pieces, a connection's buffer stays near one piece.
//! Every websocket client reassembles a fragmented message (RFC 6455, section 5.4): the
//! peer still receives one message.

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use crate::http::error_response;

/// A server-side websocket on an upgraded HTTP connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Largest piece of a message sent in one websocket frame, bytes.
pub const PIECE: usize = 16 * 1024;

/// A request to open a websocket, checked: an HTTP/1.1 `GET` asking to upgrade to
/// websocket version 13, with a key, on a connection that can be upgraded.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Does a comma-separated header hold `token` (case-insensitive)?
fn lists(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    error_response(status, "not_a_websocket_upgrade", message.into())
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "open the sync websocket with GET",
            ));
        }
        if parts.version != Version::HTTP_11
            || !lists(&parts.headers, &header::CONNECTION, "upgrade")
            || !lists(&parts.headers, &header::UPGRADE, "websocket")
        {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this endpoint speaks websocket: send an HTTP/1.1 upgrade",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            let mut refused = refuse(StatusCode::UPGRADE_REQUIRED, "websocket version 13 only");
            refused.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(refused);
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the upgrade has no Sec-WebSocket-Key",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and runs `session` on the websocket once the
    /// client has the answer. A connection that fails to upgrade is dropped.
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, session: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            session(socket).await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Sends `bytes` as one binary message: in one frame up to [`PIECE`], else as a
/// fragmented message of [`PIECE`]-sized frames (the last one shorter), each written out
/// before the next is buffered.
///
/// # Errors
/// The connection failed or is closed.
pub async fn send_binary<S>(socket: &mut S, bytes: Vec<u8>) -> Result<(), tungstenite::Error>
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    if bytes.len() <= PIECE {
        return socket.send(Message::Binary(bytes.into())).await;
    }
    let bytes = Bytes::from(bytes);
    let pieces = bytes.len().div_ceil(PIECE);
    for i in 0..pieces {
        let piece = bytes.slice(i * PIECE..bytes.len().min((i + 1) * PIECE));
        let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
        socket
            .send(Message::Frame(Frame::message(
                piece,
                opcode,
                i + 1 == pieces,
            )))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The frames a server wrote, read off the wire: (final, opcode, payload length).
    fn frames(mut wire: &[u8]) -> Vec<(bool, u8, usize)> {
        let mut out = Vec::new();
        while wire.len() >= 2 {
            let fin = wire[0] & 0x80 != 0;
            let opcode = wire[0] & 0x0f;
            assert_eq!(wire[1] & 0x80, 0, "a server's frames are not masked");
            let (len, header) = match wire[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&wire[2..10]);
                    (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
                }
                n => (usize::from(n), 2),
            };
            out.push((fin, opcode, len));
            wire = &wire[header + len..];
        }
        out
    }

    async fn sent_on_the_wire(bytes: Vec<u8>) -> Vec<u8> {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut socket = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        send_binary(&mut socket, bytes).await.unwrap();
        drop(socket);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        wire
    }

    #[tokio::test]
    async fn a_large_message_goes_out_in_pieces_and_arrives_whole() {
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let wire = sent_on_the_wire(message.clone()).await;
        let frames = frames(&wire);
        assert_eq!(frames.len(), 7, "{frames:?}");
        assert_eq!(frames[0], (false, 2, PIECE), "a binary frame starts it");
        for f in &frames[1..6] {
            assert_eq!(*f, (false, 0, PIECE), "continuation frames");
        }
        assert_eq!(
            frames[6],
            (true, 0, 100_000 - 6 * PIECE),
            "the last one ends it"
        );
        // A client reassembles one message.
        let (mut feed, end) = tokio::io::duplex(1 << 20);
        feed.write_all(&wire).await.unwrap();
        let mut client = WebSocketStream::from_raw_socket(end, Role::Client, None).await;
        match client.next().await {
            Some(Ok(Message::Binary(got))) => assert!(got[..] == message[..], "the same bytes"),
            other => panic!("one binary message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_small_message_is_one_frame() {
        let wire = sent_on_the_wire(vec![7; PIECE]).await;
        assert_eq!(frames(&wire), vec![(true, 2, PIECE)]);
    }
}
