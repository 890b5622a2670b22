//! `GET /sync`: the automerge-repo websocket endpoint. Authentication happens at the
//! upgrade (`Authorization: Bearer …` or `?token=…` for browsers); one device per
//! connection; the token never reaches a log.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::hub::{Outbound, SyncHub};
use kepu_sync_core::wire::socket::send_binary;

use super::socket::{Socket, Upgrade};
use crate::accounts::{AuthError, DeviceIdentity, bearer_token};
use crate::app_state::AppState;
use crate::error::Error;
use crate::store::ConnectFacts;

/// Longest wait for one frame to go out to a peer that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection's websocket reads from its socket at a time, and its write buffer
/// before a flush. The library's default of 128 KiB each suits a few busy connections; a
/// province has thousands of mostly idle ones, and a frame larger than this still
/// arrives whole (the buffer grows for it). `docs/performance.md` has the memory per
/// idle connection.
const SOCKET_BUFFER: usize = 8 * 1024;

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
    /// Bytes per second per connection (sustained); bursts up to `max_frame`.
    pub bytes_per_second: u64,
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
            bytes_per_second: 1024 * 1024,
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
    app_version: Option<String>,
}

/// The header in which a device reports its app version at connect (`?app_version=` on
/// the URL for browsers).
pub const APP_VERSION_HEADER: &str = "x-kepu-app-version";
/// The header in which a device reports how many local changes wait to be sent.
pub const PENDING_CHANGES_HEADER: &str = "x-kepu-pending-changes";

/// Records what the device reported at connect, then lets it in only if its app is at
/// least its role's minimum version (`app-too-old` otherwise; it keeps its data).
async fn admit(
    state: &AppState,
    identity: &DeviceIdentity,
    facts: &ConnectFacts,
    headers: &HeaderMap,
    query_version: Option<&str>,
) -> Result<(), Error> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let version = header(APP_VERSION_HEADER)
        .or(query_version)
        .and_then(crate::fleet::reported_version);
    let pending = header(PENDING_CHANGES_HEADER).and_then(crate::fleet::reported_pending);
    let device = identity.writer.device.0;
    if version.is_some() || pending.is_some() {
        state
            .store
            .record_device_report(device, version, pending)
            .await?;
    }
    crate::fleet::admit_version(
        device,
        identity.writer.role,
        facts.min_app_version.as_deref(),
        version,
        facts.app_version.as_deref(),
    )
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(ctx): Extension<SyncContext>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    let token = bearer_token(&headers)
        .map(str::to_owned)
        .or(query.token.clone());
    let Some(token) = token else {
        return Error::Auth(AuthError::Missing).into_response();
    };
    let (identity, facts) = match state.authenticator().authenticate_connect(&token).await {
        Ok(i) => i,
        Err(e) => return Error::Auth(e).into_response(),
    };
    if let Err(e) = admit(
        &state,
        &identity,
        &facts,
        &headers,
        query.app_version.as_deref(),
    )
    .await
    {
        return e.into_response();
    }
    // An edge box relays for its venue's roster (ADR 0150): set it before it syncs.
    if let Err(e) =
        crate::edge::relay::register(&state.store, &ctx.hub, &identity, facts.edge_venue).await
    {
        return e.into_response();
    }
    if ctx.hub.connections() >= ctx.limits.max_connections {
        return Error::Unavailable("too many connections").into_response();
    }
    let Some(slot) = state.guards.sync_per_device.open(identity.writer.device.0) else {
        return Error::TooManyConnections(
            "this device has as many sync connections open as it may",
        )
        .into_response();
    };
    let limit = ctx.limits.max_frame;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER);
    ws.on_upgrade(config, move |socket| async move {
        session(socket, ctx, state, identity).await;
        drop(slot);
    })
}

/// A token bucket: `rate` per second sustained, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes `cost` tokens if there are that many.
    fn take(&mut self, cost: f64) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// The `error` frame a connection gets before it is closed for sending too much.
fn rate_limited() -> Vec<u8> {
    kepu_sync_core::wire::Message::Error {
        sender_id: None,
        target_id: None,
        message: "too many frames or bytes per second; reconnect later".into(),
        refusal: Some(kepu_sync_core::wire::Refusal::new(
            kepu_sync_core::wire::RefusalCode::RateLimited,
            None,
        )),
    }
    .encode()
}

/// Carries out one thing the hub queued for this session; false when the session ends.
async fn deliver(socket: &mut Socket, out: Option<Outbound>) -> bool {
    match out {
        Some(Outbound::Frame(bytes)) => {
            // A peer that stops reading is cut off: the hub has then closed its queue,
            // and the send must not wait forever.
            let sent = tokio::time::timeout(SEND_TIMEOUT, send_binary(socket, bytes)).await;
            matches!(sent, Ok(Ok(())))
        }
        Some(Outbound::Close(reason)) => {
            let _ = socket
                .send(WsMessage::Close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: reason.into(),
                })))
                .await;
            false
        }
        None => false,
    }
}

async fn session(
    mut socket: Socket,
    mut ctx: SyncContext,
    state: AppState,
    identity: DeviceIdentity,
) {
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(4096);
    let conn = ctx.hub.connect(identity.writer.clone(), out_tx);
    state.metrics.ws_connections.inc();
    let mut ping = tokio::time::interval(ctx.limits.ping_every);
    ping.tick().await;
    let mut awaiting_pong = false;
    let mut frames = Bucket::new(
        f64::from(ctx.limits.frames_per_second),
        f64::from(ctx.limits.burst),
    );
    #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
    let mut bytes = Bucket::new(
        ctx.limits.bytes_per_second as f64,
        ctx.limits.max_frame as f64,
    );
    loop {
        tokio::select! {
            incoming = socket.next() => {
                let Some(Ok(msg)) = incoming else { break };
                // Every frame counts, whatever its kind: one frame and its bytes.
                let size = match &msg {
                    WsMessage::Binary(b) | WsMessage::Ping(b) | WsMessage::Pong(b) => b.len(),
                    WsMessage::Text(t) => t.len(),
                    WsMessage::Close(_) | WsMessage::Frame(_) => 0,
                };
                #[allow(clippy::cast_precision_loss)] // at most the 8 MiB frame limit
                if !frames.take(1.0) || !bytes.take(size as f64) {
                    let _ = socket.send(WsMessage::Binary(rate_limited().into())).await;
                    let _ = socket.send(WsMessage::Close(Some(CloseFrame { code: CloseCode::Policy, reason: "rate limit".into() }))).await;
                    break;
                }
                match msg {
                    WsMessage::Binary(frame) => {
                        // Any frame shows the peer is alive.
                        awaiting_pong = false;
                        // While the hub's inbound budget is spent, this session waits
                        // before reading its socket again (back-pressure), but keeps
                        // sending what the hub queued for it, so that its queue does not
                        // overflow because the hub itself is slow.
                        let waited = tokio::time::Instant::now();
                        let submit = ctx.hub.frame(conn, frame.to_vec());
                        tokio::pin!(submit);
                        let mut open = true;
                        loop {
                            tokio::select! {
                                () = &mut submit => break,
                                out = out_rx.recv() => {
                                    open = deliver(&mut socket, out).await;
                                    if !open { break; }
                                }
                            }
                        }
                        if !open { break; }
                        if waited.elapsed() >= Duration::from_secs(1) {
                            // The pong may be waiting unread behind the stalled frame: the
                            // stall was ours, so the keepalive starts over.
                            awaiting_pong = false;
                            ping.reset();
                        }
                    }
                    WsMessage::Text(_) => {
                        let err = kepu_sync_core::wire::Message::Error {
                            sender_id: None,
                            target_id: None,
                            message: "text frames are not part of the protocol; send binary CBOR".into(),
                            refusal: Some(kepu_sync_core::wire::Refusal::new(kepu_sync_core::wire::RefusalCode::MalformedMessage, None)),
                        };
                        if socket.send(WsMessage::Binary(err.encode().into())).await.is_err() { break; }
                    }
                    WsMessage::Pong(_) => awaiting_pong = false,
                    WsMessage::Ping(_) => {}
                    WsMessage::Close(_) => break,
                    // Only sent, never read: the library hands whole messages.
                    WsMessage::Frame(_) => {}
                }
            }
            out = out_rx.recv() => {
                if !deliver(&mut socket, out).await { break; }
            }
            _ = ping.tick() => {
                if awaiting_pong { break; }
                awaiting_pong = true;
                if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() { break; }
            }
            _ = ctx.shutdown.changed() => {
                // Let what the hub already queued for this peer go out, then close.
                while let Ok(Outbound::Frame(bytes)) = out_rx.try_recv() {
                    let _ = send_binary(&mut socket, bytes).await;
                }
                let _ = socket.send(WsMessage::Close(Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() }))).await;
                break;
            }
        }
    }
    ctx.hub.disconnect(conn);
    state.metrics.ws_connections.dec();
}
