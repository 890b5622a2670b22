//! The websocket side: one connection to `GET /sync` (automerge-repo protocol v1, the
//! device token as `Authorization: Bearer …`), driven until every local document is in
//! sync (`sync_now`) or until stopped (background sync, with backoff between attempts).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{Event, Input};
use kepu_sync_core::refusal::RefusalCode;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http};

use super::core::{Core, Outbound, now_ms};
use super::error::{Error, Result};

/// The refusal code the server uses when it has revoked the device.
pub const DEVICE_REVOKED: &str = "device-revoked";

/// The header in which kepu-server names why it refused the `/sync` upgrade:
/// `device-revoked` or `unauthenticated`.
pub const ERROR_HEADER: &str = "x-kepu-error";

/// The header in which the phone reports its app version at connect.
pub const APP_VERSION_HEADER: &str = "x-kepu-app-version";
/// The header in which the phone reports how many local changes wait to be sent.
pub const PENDING_CHANGES_HEADER: &str = "x-kepu-pending-changes";
/// The header that names the minimum version when the server refuses an old app.
pub const MIN_VERSION_HEADER: &str = "x-kepu-min-version";

/// How long to wait for the connection and the server's `peer`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A one-shot sync gives up when the server stays silent this long.
const QUIET: Duration = Duration::from_secs(5);
/// After this long without a frame, check which documents the server has in full.
const SETTLE: Duration = Duration::from_millis(150);
/// A one-shot sync never takes longer than this.
const SYNC_LIMIT: Duration = Duration::from_secs(120);

/// How long a connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until every local document is in sync.
    Synced,
    /// Until stopped or the connection breaks.
    Stopped,
}

/// What one sync reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Documents now in sync with the server.
    pub synced: u32,
    /// Documents the server does not have or this device may not read.
    pub unavailable: u32,
    /// Batches of local changes the server refused.
    pub refused: u32,
}

fn sync_url(server_url: &str) -> Result<String> {
    let rest = if let Some(r) = server_url.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = server_url.strip_prefix("http://") {
        format!("ws://{r}")
    } else if server_url.starts_with("ws://") || server_url.starts_with("wss://") {
        server_url.to_owned()
    } else {
        return Err(Error::InvalidInput(
            "server URL must start with http:// or https://".into(),
        ));
    };
    Ok(format!("{}/sync", rest.trim_end_matches('/')))
}

/// What a refused upgrade means for the phone.
#[derive(Debug, PartialEq, Eq)]
enum UpgradeRefusal {
    /// The server said, explicitly, that this device is revoked: wipe.
    Revoked,
    /// The app is below the server's minimum version for this role (`app-too-old`):
    /// keep everything until the app is updated.
    TooOld(String),
    /// The credentials were not accepted, with no word of revocation (a missing or
    /// unknown token): keep everything, report, retry later.
    Auth(String),
    /// Any other answer (a gateway error, maintenance): a network problem.
    Other(u16),
}

/// Reads a refused upgrade. Only the server's explicit answer counts as revocation: a
/// 401 or 403 carrying `X-Kepu-Error: device-revoked` or the JSON error code
/// `device_revoked`. A bare 401 (a proxy that dropped the `Authorization` header, a
/// server restored from a backup older than the enrollment, a rotated token) never
/// wipes the store.
fn upgrade_refusal(response: &http::Response<Option<Vec<u8>>>) -> UpgradeRefusal {
    let status = response.status();
    if status != http::StatusCode::UNAUTHORIZED && status != http::StatusCode::FORBIDDEN {
        return UpgradeRefusal::Other(status.as_u16());
    }
    let header = response
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let code = response
        .body()
        .as_deref()
        .and_then(|b| serde_json::from_slice::<super::enroll::ErrorBody>(b).ok())
        .map(|b| b.error.code)
        // A code is shown to the user: keep only a short machine-readable word.
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if header.is_some_and(|h| h.eq_ignore_ascii_case(DEVICE_REVOKED))
        || code.as_deref() == Some("device_revoked")
    {
        return UpgradeRefusal::Revoked;
    }
    if header.is_some_and(|h| h.eq_ignore_ascii_case(RefusalCode::AppTooOld.as_str()))
        || code.as_deref() == Some("app_too_old")
    {
        // The minimum is shown to the user: keep it only if it looks like a version.
        let minimum = response
            .headers()
            .get(MIN_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
            })
            .unwrap_or("?");
        return UpgradeRefusal::TooOld(minimum.to_owned());
    }
    UpgradeRefusal::Auth(code.unwrap_or_else(|| format!("http-{}", status.as_u16())))
}

/// Runs one connection. With [`Until::Synced`] it returns once every local document is
/// in sync; with [`Until::Stopped`] when `stop` turns true or the link breaks.
///
/// # Errors
/// [`Error::Network`] (cannot connect, broke before reaching sync), [`Error::Auth`] (the
/// server did not accept the token but did not say the device is revoked; nothing is
/// touched), [`Error::Revoked`] (the server said so; the store was wiped),
/// [`Error::NotEnrolled`].
pub async fn connect_and_sync(
    core: &Arc<Core>,
    until: Until,
    mut stop: Option<watch::Receiver<bool>>,
) -> Result<Report> {
    let identity = core.require_identity()?;
    let url = sync_url(core.server_url())?;
    let mut request = url
        .into_client_request()
        .map_err(|_| Error::InvalidInput("malformed server URL".into()))?;
    let bearer = http::HeaderValue::from_str(&format!("Bearer {}", identity.token))
        .map_err(|_| Error::Other("stored token is not a header value".into()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, bearer);
    // What the fleet page shows of this phone, and what the minimum version is checked
    // against.
    if let Ok(v) = http::HeaderValue::from_str(&core.app_version()) {
        request.headers_mut().insert(APP_VERSION_HEADER, v);
    }
    if let Ok(status) = core.status() {
        request.headers_mut().insert(
            PENDING_CHANGES_HEADER,
            http::HeaderValue::from(status.pending_changes),
        );
    }
    let sent = now_ms();
    let connected = tokio::select! {
        c = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)) => c,
        // Stopped (a cancelled `sync_now`) while connecting: the attempt is dropped.
        () = stopped(stop.as_mut()) => return Ok(Report::default()),
    };
    let ws = match connected {
        Err(_) => return Err(Error::Network("connecting timed out".into())),
        Ok(Err(tungstenite::Error::Http(response))) => {
            return match upgrade_refusal(&response) {
                UpgradeRefusal::Revoked => {
                    core.wipe_revoked()?;
                    Err(Error::Revoked)
                }
                UpgradeRefusal::TooOld(minimum) => {
                    tracing::warn!(%minimum, "the server needs a newer app; data kept");
                    Err(Error::AppTooOld { minimum })
                }
                UpgradeRefusal::Auth(code) => {
                    tracing::warn!(%code, "the server did not accept this device's token; data kept");
                    Err(Error::Auth(code))
                }
                UpgradeRefusal::Other(status) => {
                    Err(Error::Network(format!("server answered {status}")))
                }
            };
        }
        Ok(Err(_)) => return Err(Error::Network("cannot connect to the server".into())),
        Ok(Ok((ws, response))) => {
            // The server's clock, from its answer to the upgrade.
            let offset = response
                .headers()
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|d| super::clock::offset_from(d, sent, now_ms()));
            if let Some(offset) = offset {
                core.learn_clock_offset(offset);
            }
            ws
        }
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn, docs) = core.attach(tx)?;
    let mut waiting: BTreeSet<DocumentId> = docs.into_iter().collect();
    let mut joined = false;
    let mut report = Report::default();
    let started = Instant::now();
    let mut quiet_deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut settle_at: Option<Instant> = None;
    let outcome: Result<()> = loop {
        if until == Until::Synced && joined && waiting.is_empty() {
            break Ok(());
        }
        let mut deadline = if until == Until::Synced {
            quiet_deadline.min(started + SYNC_LIMIT)
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        if let Some(at) = settle_at {
            deadline = deadline.min(at);
        }
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outbound::Frame(bytes)) => {
                    // A day of check-ins goes in pieces: the server's socket then holds
                    // one piece at a time (ADR 0192).
                    if kepu_sync_core::wire::socket::send_binary(&mut sink, bytes).await.is_err() {
                        break Err(Error::Network("connection lost".into()));
                    }
                }
                Some(Outbound::Close) | None => {
                    let _ = sink.close().await;
                    // The store was wiped under this connection: revoked, or signed out.
                    break match core.identity() {
                        Ok(None) if core.revoked() => Err(Error::Revoked),
                        Ok(None) => Err(Error::NotEnrolled),
                        _ => Ok(()),
                    };
                }
            },
            frame = stream.next() => {
                let bytes = match frame {
                    Some(Ok(tungstenite::Message::Binary(b))) => b.to_vec(),
                    Some(Ok(tungstenite::Message::Close(reason))) => {
                        if reason.is_some_and(|r| r.reason.contains(DEVICE_REVOKED)) {
                            core.wipe_revoked()?;
                            break Err(Error::Revoked);
                        }
                        break Err(Error::Network("the server closed the connection".into()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break Err(Error::Network("connection lost".into())),
                };
                quiet_deadline = Instant::now() + QUIET;
                settle_at = Some(Instant::now() + SETTLE);
                core.bytes_received.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let events = match core.handle(Input::Received { conn, bytes }, false) {
                    Ok(e) => e,
                    Err(e) => break Err(e),
                };
                let revoked = |e: &Event| {
                    matches!(e, Event::ServerRefused { code: RefusalCode::DeviceRevoked, .. })
                };
                if events.iter().any(revoked) {
                    core.wipe_revoked()?;
                    break Err(Error::Revoked);
                }
                for e in events {
                    match e {
                        Event::PeerJoined { .. } => joined = true,
                        Event::Synced { doc } if waiting.remove(&doc) => report.synced += 1,
                        Event::Unavailable { doc } | Event::AccessLost { doc }
                            if waiting.remove(&doc) =>
                        {
                            report.unavailable += 1;
                        }
                        Event::Refused { .. } => report.refused += 1,
                        _ => {}
                    }
                }
            },
            () = sleep_until(deadline) => {
                if settle_at.is_some_and(|at| at <= Instant::now()) {
                    settle_at = None;
                    // The last message of a round trip goes unanswered: ask the engine
                    // which documents the server now has in full.
                    let docs: Vec<DocumentId> = if until == Until::Synced {
                        waiting.iter().copied().collect()
                    } else {
                        core.documents().map(|d| d.into_iter().map(|(d, _)| d).collect()).unwrap_or_default()
                    };
                    for doc in docs {
                        if core.settled(conn, &doc).unwrap_or(false) && waiting.remove(&doc) {
                            report.synced += 1;
                        }
                    }
                    core.notify_sync();
                    if !(until == Until::Synced && joined && waiting.is_empty()) {
                        continue;
                    }
                    break Ok(());
                }
                if until == Until::Synced {
                    break if joined {
                        // The server has nothing more to say; what is left stays pending.
                        Ok(())
                    } else {
                        Err(Error::Network("the server did not answer".into()))
                    };
                }
            },
            () = stopped(stop.as_mut()) => {
                let _ = sink.close().await;
                break Ok(());
            },
        }
    };
    core.detach(conn);
    // Compact what the sync brought in now, rather than on the next check-in.
    if let Err(e) = core.maintain() {
        tracing::debug!(error = %e, "maintenance after sync skipped");
    }
    outcome?;
    if joined && waiting.is_empty() {
        core.synced_at(now_ms())?;
    }
    Ok(report)
}

async fn stopped(stop: Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        None => std::future::pending().await,
    }
}

/// Keeps a connection open while the network allows, reconnecting with exponential
/// backoff (1 s doubling to 60 s, with jitter) until `stop` turns true or the device is
/// revoked.
pub async fn background(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        match connect_and_sync(&core, Until::Stopped, Some(stop.clone())).await {
            Err(Error::Revoked | Error::NotEnrolled) => return,
            Err(e) => core.set_error(Some(e.to_string())),
            Ok(_) => {}
        }
        if *stop.borrow() {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
        }
        let jitter = Duration::from_millis(u64::from(super::core::random::<1>()[0]) * 4);
        let wake = Instant::now() + backoff + jitter;
        backoff = (backoff * 2).min(Duration::from_secs(60));
        tokio::select! {
            () = sleep_until(wake) => {}
            () = stopped(Some(&mut stop)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{UpgradeRefusal, http, upgrade_refusal};

    fn answer(status: u16, header: Option<&str>, body: &str) -> UpgradeRefusal {
        let mut b = http::Response::builder().status(status);
        if let Some(h) = header {
            b = b.header("X-Kepu-Error", h);
        }
        let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
        upgrade_refusal(&b.body(body).unwrap())
    }

    #[test]
    fn an_app_below_the_minimum_is_told_so_with_the_minimum_and_keeps_its_data() {
        let too_old = |min: Option<&str>, header: Option<&str>, body: &str| {
            let mut b = http::Response::builder().status(403);
            if let Some(h) = header {
                b = b.header("X-Kepu-Error", h);
            }
            if let Some(m) = min {
                b = b.header("X-Kepu-Min-Version", m);
            }
            let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
            upgrade_refusal(&b.body(body).unwrap())
        };
        let body = r#"{"error":{"code":"app_too_old","message":"update"}}"#;
        assert_eq!(
            too_old(Some("1.4.0"), Some("app-too-old"), body),
            UpgradeRefusal::TooOld("1.4.0".into())
        );
        assert_eq!(
            too_old(Some("2.0-rc.1"), None, body),
            UpgradeRefusal::TooOld("2.0-rc.1".into())
        );
        assert_eq!(
            too_old(Some("<b>1</b>"), Some("app-too-old"), ""),
            UpgradeRefusal::TooOld("?".into())
        );
        assert_eq!(
            too_old(None, Some("app-too-old"), ""),
            UpgradeRefusal::TooOld("?".into())
        );
    }

    #[test]
    fn only_an_explicit_revocation_is_read_as_one() {
        let revoked = r#"{"error":{"code":"device_revoked","message":"device revoked"}}"#;
        let unknown = r#"{"error":{"code":"invalid_token","message":"invalid token"}}"#;
        assert_eq!(
            answer(401, Some("device-revoked"), revoked),
            UpgradeRefusal::Revoked
        );
        // Either sign is enough: a proxy may drop the header or replace the body.
        assert_eq!(
            answer(401, Some("Device-Revoked"), ""),
            UpgradeRefusal::Revoked
        );
        assert_eq!(answer(401, None, revoked), UpgradeRefusal::Revoked);
        assert_eq!(answer(403, None, revoked), UpgradeRefusal::Revoked);
        // Anything else on 401/403 keeps the data.
        let auth = |c: &str| UpgradeRefusal::Auth(c.to_owned());
        assert_eq!(
            answer(401, Some("unauthenticated"), unknown),
            auth("invalid_token")
        );
        assert_eq!(answer(401, None, ""), auth("http-401"));
        assert_eq!(
            answer(403, None, "<html>Forbidden</html>"),
            auth("http-403")
        );
        assert_eq!(answer(401, Some("revoked"), "{}"), auth("http-401"));
        // A code is shown to the user: odd or huge ones are not passed on.
        let long = format!(r#"{{"error":{{"code":"{}"}}}}"#, "a".repeat(5000));
        assert_eq!(answer(401, None, &long), auth("http-401"));
        let odd = r#"{"error":{"code":"<script>"}}"#;
        assert_eq!(answer(401, None, odd), auth("http-401"));
        // The revoked word on another status is not a revocation.
        assert_eq!(
            answer(502, Some("device-revoked"), revoked),
            UpgradeRefusal::Other(502)
        );
        assert_eq!(answer(429, None, ""), UpgradeRefusal::Other(429));
    }
}
