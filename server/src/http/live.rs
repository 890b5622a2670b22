//! The live venue dashboard over HTTP: `GET /api/venues/{venue}/live?day=` (a JSON
//! snapshot), `GET /api/venues/{venue}/live/events` (Server-Sent Events: a `snapshot`
//! event at connect and within a second of any change to the venue's records, heartbeat
//! comments every 15 s) and `GET /venues/{venue}/live`, the page, with its script and
//! style. The venue's staff and bureau administrators only.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::page::{self, Caching, Lang, Policy, Shell, Style};
use super::{ApiJson, PageUser, WebUser};
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::live::{self, Day, Snapshot, Viewer};
use crate::sync::ws::SyncContext;

/// A stream reads snapshots at most this often: a change after a quiet spell is read at
/// once, the changes that follow a read are read together this long after it (ADR 0108;
/// 150 ms until a read took bookings' rows from memory, ADR 0193).
const DEBOUNCE: Duration = Duration::from_millis(60);
/// A stream spends at most one part in this many of its time reading: after a read that
/// took longer than a tenth of [`DEBOUNCE`] (a busy database, a busy machine), the next
/// waits ten times as long as it took, up to [`MAX_PAUSE`].
const READ_SHARE: u32 = 10;
/// The longest wait between two reads of a stream that has changes to show.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Snapshots are read again this often even without a change (the band ages), and the
/// viewer's login is checked again.
const REFRESH: Duration = Duration::from_secs(10);
/// A stream keeps the venue's rows that change seldom (name, slots, relevant devices,
/// pupils' names) at most this long between reads, and reads them again at once when the
/// venue's own records change (ADR 0199).
const VENUE_ROWS_MAX_AGE: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The page's main part, which the script fills in; its texts marked `data-i18n` are
/// replaced in the reader's language.
const MAIN: &str = include_str!("../../assets/live-main.html");
const SCRIPT: &str = include_str!("../../assets/live.js");
const STYLE: &str = include_str!("../../assets/live.css");
const ICON: &str = include_str!("../../assets/live-icon.svg");

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/venues/{venue}/live", get(snapshot_json))
        .route("/api/venues/{venue}/live/events", get(events))
        .route("/venues/{venue}/live", get(page))
        .route("/assets/live.js", get(script))
        .route("/assets/live.css", get(style))
        .route("/assets/live-icon.svg", get(icon))
}

#[derive(Debug, Deserialize)]
struct LiveQuery {
    day: Option<String>,
}

fn viewer(user: WebUser) -> Viewer {
    Viewer {
        role: user.role,
        venue_id: user.venue_id,
    }
}

fn venue_id(text: &str) -> Result<Uuid> {
    text.parse()
        .map_err(|_| Error::not_found("venue", "(malformed id)"))
}

/// The requested day, or `None` for "today" (re-read with every snapshot).
fn day_of(query: std::result::Result<Query<LiveQuery>, QueryRejection>) -> Result<Option<Day>> {
    let Query(q) = query.map_err(|_| Error::InvalidInput("malformed query string".into()))?;
    match q.day.as_deref() {
        None | Some("" | "today") => Ok(None),
        Some(text) => Day::parse(text)
            .map(Some)
            .ok_or_else(|| Error::InvalidInput("day must be a date YYYY-MM-DD".into())),
    }
}

async fn snapshot_json(
    State(state): State<AppState>,
    user: WebUser,
    Path(venue): Path<String>,
    query: std::result::Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Response> {
    let venue = venue_id(&venue)?;
    let day = day_of(query)?;
    let now = now_ms();
    let snapshot = live::snapshot(
        &state.store,
        &state.live,
        venue,
        day.unwrap_or_else(|| Day::containing(now)),
        viewer(user),
        now,
    )
    .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], ApiJson(snapshot)).into_response())
}

async fn events(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    sync: Option<Extension<SyncContext>>,
    Path(venue): Path<String>,
    query: std::result::Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Response> {
    let venue = venue_id(&venue)?;
    let day = day_of(query)?;
    let Some(slot) = state.guards.streams_per_user.open(user.user_id) else {
        return Err(Error::TooManyConnections(
            "this login has as many live event streams open as it may",
        ));
    };
    let viewer = viewer(user);
    let now = now_ms();
    let mut kept = live::Kept::new(VENUE_ROWS_MAX_AGE);
    // The first snapshot is read here so that a refusal is an HTTP status, not a stream.
    let first = live::snapshot_with(
        &state.store,
        &state.live,
        venue,
        day.unwrap_or_else(|| Day::containing(now)),
        viewer,
        now,
        &mut kept,
    )
    .await?;
    // Only now that the viewer may watch: while the stream is open, the records writes
    // of the venue's bookings keep the rows it reads in memory (ADR 0193).
    let watching = state.store.watch_venue(venue);
    let (tx, rx) = mpsc::channel::<Event>(8);
    let watch = Watch {
        state,
        venue,
        day,
        viewer,
        headers,
        shutdown: sync.map(|Extension(ctx)| ctx.shutdown),
        kept,
    };
    tokio::spawn(async move {
        feed(watch, first, tx).await;
        drop(watching);
        drop(slot);
    });
    let sse =
        Sse::new(stream(rx)).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"));
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        sse,
    )
        .into_response())
}

fn stream(
    rx: mpsc::Receiver<Event>,
) -> impl futures_util::Stream<Item = std::result::Result<Event, Infallible>> {
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

fn snapshot_event(s: &Snapshot) -> Option<Event> {
    Event::default()
        .event("snapshot")
        .id(s.generated_at.to_string())
        .json_data(s)
        .ok()
}

/// One open event stream: whose, of which venue-day, and the request's credentials
/// (checked again on every refresh).
struct Watch {
    state: AppState,
    venue: Uuid,
    day: Option<Day>,
    viewer: Viewer,
    headers: HeaderMap,
    /// The server's shutdown signal: open streams end with it, or a graceful shutdown
    /// would wait for them forever.
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// The venue's seldom rows from the last read (ADR 0199).
    kept: live::Kept,
}

impl Watch {
    /// Is the login the stream was opened with still valid and still allowed here? A
    /// logout, an expired session or a revoked device ends the stream.
    async fn still_allowed(&self) -> bool {
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.headers = self.headers.clone();
        match WebUser::from_request_parts(&mut parts, &self.state).await {
            Ok(user) => viewer(user) == self.viewer && live::may_watch(self.viewer, self.venue),
            Err(_) => false,
        }
    }
}

/// Feeds one event stream until its client goes away: the first snapshot, then a new one
/// shortly after each change of the venue's records and on every refresh that differs.
async fn feed(mut s: Watch, first: Snapshot, tx: mpsc::Sender<Event>) {
    let mut changes = s.state.live.subscribe();
    let Some(event) = snapshot_event(&first) else {
        return;
    };
    if tx.send(event.retry(Duration::from_secs(2))).await.is_err() {
        return;
    }
    let mut last = first;
    // No read before the next one is due (the first was just read).
    let mut next_read = tokio::time::Instant::now() + DEBOUNCE;
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = s.shutdown.take();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            () = stopping(shutdown.as_mut()) => return,
            _ = refresh.tick() => {
                if !s.still_allowed().await {
                    return;
                }
            }
            change = changes.recv() => match change {
                Ok(v) if v == s.venue => settle(&mut changes, next_read).await,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => settle(&mut changes, next_read).await,
                Err(RecvError::Closed) => return,
            },
        }
        let now = now_ms();
        let last_read = tokio::time::Instant::now();
        let read = live::snapshot_with(
            &s.state.store,
            &s.state.live,
            s.venue,
            s.day.unwrap_or_else(|| Day::containing(now)),
            s.viewer,
            now,
            &mut s.kept,
        )
        .await;
        let took = last_read.elapsed();
        next_read = last_read + pause_after(took);
        s.state
            .metrics
            .live_snapshot_seconds
            .observe(took.as_secs_f64());
        let next = match read {
            Ok(snapshot) => snapshot,
            Err(Error::Forbidden(_) | Error::NotFound { .. }) => return,
            Err(e) => {
                tracing::warn!(venue = %s.venue, error = %e, "live snapshot failed");
                continue;
            }
        };
        let same = Snapshot {
            generated_at: last.generated_at,
            ..next.clone()
        } == last;
        if same {
            continue;
        }
        let Some(event) = snapshot_event(&next) else {
            continue;
        };
        if tx.send(event).await.is_err() {
            return;
        }
        last = next;
    }
}

/// Completes when the server starts shutting down (never without a signal).
async fn stopping(shutdown: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match shutdown {
        // An error means the sender is gone: the server is stopping too.
        Some(rx) => drop(rx.wait_for(|stop| *stop).await),
        None => std::future::pending().await,
    }
}

/// How long after the start of a read that took `took` the next may start.
fn pause_after(took: Duration) -> Duration {
    (took * READ_SHARE).clamp(DEBOUNCE, MAX_PAUSE)
}

/// Waits until the next read is due (not at all after a quiet spell), then drops the
/// notifications that arrived meanwhile: the next read answers them all.
async fn settle(
    changes: &mut tokio::sync::broadcast::Receiver<Uuid>,
    next_read: tokio::time::Instant,
) {
    tokio::time::sleep_until(next_read).await;
    while !matches!(
        changes.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty
            | tokio::sync::broadcast::error::TryRecvError::Closed)
    ) {}
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    lang: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(venue): Path<String>,
    Query(q): Query<PageQuery>,
    edge: Option<Extension<crate::edge::state::EdgeStatus>>,
    headers: HeaderMap,
) -> Result<Response> {
    let venue = venue_id(&venue)?;
    if crate::live::venue_exists(&state.store, venue).await? {
        if !live::may_watch(viewer(user), venue) {
            return Err(Error::Forbidden(
                "only this venue's staff and bureau administrators",
            ));
        }
    } else {
        return Err(Error::not_found("venue", venue));
    }
    // The script chooses the language again (`?lang=`, else the browser's) and switches
    // it in place; the server's choice only spares a flash of the other language.
    let lang = Lang::preferred(q.lang.as_deref(), &headers);
    Ok(page::html(
        StatusCode::OK,
        Policy::OwnAssets,
        Caching::Revalidate,
        page_html(lang, edge.map(|Extension(e)| e.view(now_ms()).banner)),
    ))
}

fn page_html(lang: Lang, edge_banner: Option<String>) -> String {
    let header = format!(
        "<div class=\"heading\"><h1 id=\"venue-name\">…</h1>\
         <p class=\"sub\"><span data-i18n=\"title\">{title}</span> · <span id=\"day\"></span></p></div>\
         <div class=\"tools\"><span id=\"conn\" class=\"conn\" data-state=\"connecting\" role=\"status\" aria-live=\"polite\"></span>\
         {switch}<form method=\"post\" action=\"/logout\" class=\"logout\">\
         <button type=\"submit\" data-i18n=\"logout\">{logout}</button></form></div>",
        title = lang.pick("实时入馆", "Live attendance"),
        switch = lang
            .switch_link(&format!("?lang={}", lang.other().code()))
            .replacen("<a ", "<a id=\"lang\" ", 1),
        logout = lang.pick("退出", "Log out"),
    );
    // An edge box says how long its upstream has been unreachable (ADR 0150); the
    // script keeps it current from `/api/edge/status`. The text is the server's own.
    let header = match edge_banner {
        Some(text) => format!(
            "{header}<p id=\"edge-banner\" class=\"edge-banner\" role=\"alert\"{hidden}>{text}</p>",
            hidden = if text.is_empty() { " hidden" } else { "" },
        ),
        None => header,
    };
    let footer = format!(
        "<span data-i18n=\"updated\">{}</span> <span id=\"updated\">–</span>",
        lang.pick("更新于", "Updated")
    );
    Shell {
        lang,
        title: "实时入馆 · Live attendance",
        style: Style::Assets {
            css: "/assets/live.css",
            script: "/assets/live.js",
            icon: "/assets/live-icon.svg",
        },
        header: Some(&header),
        main: MAIN,
        footer: Some(&footer),
    }
    .render()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    page::respond(
        StatusCode::OK,
        content_type,
        Policy::OwnAssets,
        Caching::Revalidate,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_spell_is_read_at_once_and_those_after_a_read_together() {
        let venue = Uuid::from_u128(7);
        let (tx, mut changes) = tokio::sync::broadcast::channel(16);

        // Nothing read for a while: the change is read at once.
        let quiet_since = tokio::time::Instant::now();
        tokio::time::sleep(DEBOUNCE * 3).await;
        tx.send(venue).unwrap();
        let _ = changes.recv().await;
        let started = tokio::time::Instant::now();
        settle(&mut changes, quiet_since + pause_after(Duration::ZERO)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Just read: the next changes wait for the rest of the interval and are read
        // together (the notifications that came meanwhile are dropped).
        let read = tokio::time::Instant::now();
        tokio::time::sleep(DEBOUNCE / 3).await;
        for _ in 0..3 {
            tx.send(venue).unwrap();
        }
        let _ = changes.recv().await;
        settle(&mut changes, read + pause_after(Duration::from_millis(2))).await;
        assert_eq!(read.elapsed(), DEBOUNCE);
        assert!(matches!(
            changes.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
    }

    #[test]
    fn a_slow_read_makes_the_next_wait_longer() {
        assert_eq!(pause_after(Duration::from_millis(3)), DEBOUNCE);
        assert_eq!(
            pause_after(Duration::from_millis(20)),
            Duration::from_millis(200)
        );
        assert_eq!(pause_after(Duration::from_secs(3)), MAX_PAUSE);
    }
}
