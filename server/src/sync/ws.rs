//! `GET /sync`: the automerge-repo websocket endpoint. Authentication happens at the
//! upgrade (`Authorization: Bearer …` or `?token=…` for browsers); one device per
//! connection; the token never reaches a log.

use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::hub::{Outbound, SyncHub};
use crate::accounts::{AuthError, DeviceIdentity, bearer_token};
use crate::app_state::AppState;
use crate::error::Error;

/// Longest wait for one frame to go out to a peer that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits on the sync endpoint.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted, bytes.
    pub max_frame: usize,
    /// Connections at most.
    pub max_connections: usize,
    /// Frames per second per connection (sustained).
    pub frames_per_second: u32,
    /// Burst allowance above the sustained rate.
    pub burst: u32,
    /// Keepalive ping interval.
    pub ping_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 8 * 1024 * 1024,
            max_connections: 20_000,
            frames_per_second: 200,
            burst: 2_000,
            ping_every: Duration::from_secs(20),
        }
    }
}

/// Shared by every session: the hub, limits, and the shutdown signal.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// The hub.
    pub hub: SyncHub,
    /// Limits.
    pub limits: Limits,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(ctx): Extension<SyncContext>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = bearer_token(&headers).map(str::to_owned).or(query.token);
    let Some(token) = token else {
        return Error::Auth(AuthError::Missing).into_response();
    };
    let identity = match state.authenticator().authenticate(&token).await {
        Ok(i) => i,
        Err(e) => return Error::Auth(e).into_response(),
    };
    if ctx.hub.connections() >= ctx.limits.max_connections {
        return Error::Unavailable("too many connections").into_response();
    }
    let limit = ctx.limits.max_frame;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session(socket, ctx, state, identity))
}

fn writer_of(id: &DeviceIdentity) -> kepu_sync_core::writer::Writer {
    kepu_sync_core::writer::Writer {
        device: id.device_id,
        user: id.user_id,
        role: id.role.into(),
        school: id.school_id,
        venue: id.venue_id,
        pupil: id.pupil_id,
    }
}

async fn session(
    mut socket: WebSocket,
    mut ctx: SyncContext,
    state: AppState,
    identity: DeviceIdentity,
) {
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(4096);
    let conn = ctx.hub.connect(writer_of(&identity), out_tx);
    state.metrics.ws_connections.inc();
    let mut ping = tokio::time::interval(ctx.limits.ping_every);
    ping.tick().await;
    let mut awaiting_pong = false;
    let rate = f64::from(ctx.limits.frames_per_second);
    let burst = f64::from(ctx.limits.burst);
    let mut tokens = burst;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break };
                match msg {
                    WsMessage::Binary(bytes) => {
                        let now = tokio::time::Instant::now();
                        tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
                        last = now;
                        if tokens < 1.0 {
                            let _ = socket.send(WsMessage::Close(Some(CloseFrame { code: 1008, reason: "rate limit".into() }))).await;
                            break;
                        }
                        tokens -= 1.0;
                        ctx.hub.frame(conn, bytes.to_vec()).await;
                    }
                    WsMessage::Text(_) => {
                        let err = kepu_sync_core::wire::Message::Error {
                            sender_id: None,
                            target_id: None,
                            message: "text frames are not part of the protocol; send binary CBOR".into(),
                            refusal: Some(kepu_sync_core::wire::Refusal { code: "malformed-message".into(), document_id: None, changes: Vec::new() }),
                        };
                        if socket.send(WsMessage::Binary(err.encode().into())).await.is_err() { break; }
                    }
                    WsMessage::Pong(_) => awaiting_pong = false,
                    WsMessage::Ping(_) => {}
                    WsMessage::Close(_) => break,
                }
            }
            out = out_rx.recv() => {
                match out {
                    Some(Outbound::Frame(bytes)) => {
                        // A peer that stops reading is cut off: the hub has then closed
                        // its queue, and the send must not wait forever.
                        let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(WsMessage::Binary(bytes.into()))).await;
                        if !matches!(sent, Ok(Ok(()))) { break; }
                    }
                    Some(Outbound::Close(reason)) => {
                        let _ = socket.send(WsMessage::Close(Some(CloseFrame { code: 1008, reason: reason.into() }))).await;
                        break;
                    }
                    None => break,
                }
            }
            _ = ping.tick() => {
                if awaiting_pong { break; }
                awaiting_pong = true;
                if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() { break; }
            }
            _ = ctx.shutdown.changed() => {
                // Let what the hub already queued for this peer go out, then close.
                while let Ok(Outbound::Frame(bytes)) = out_rx.try_recv() {
                    let _ = socket.send(WsMessage::Binary(bytes.into())).await;
                }
                let _ = socket.send(WsMessage::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                break;
            }
        }
    }
    ctx.hub.disconnect(conn);
    state.metrics.ws_connections.dec();
}
