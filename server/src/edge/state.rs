//! An edge box's own state as its venue's staff see it: whether the upstream is
//! reachable and since when it is not, what waits to go up, and whether the edge's
//! enrollment was revoked (then it serves nothing, ADR 0150). The pages and routes that
//! show it are in [`super::status`].

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;
/// The state of an edge's link to its upstream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EdgeStatus {
    pub(super) venue: Uuid,
    inner: Arc<Mutex<Inner>>,
    /// Turns true when the edge is revoked.
    revoked: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: bool,
    /// When the link was last up or went down (ms); the edge's start before either.
    since: i64,
    /// The last time every document was in step with the upstream (ms).
    in_step_at: Option<i64>,
    /// Documents with changes the upstream does not hold yet.
    unsynced_docs: usize,
    /// Changes the upstream refused (kept aside, see the log).
    refused_changes: usize,
    revoked: bool,
}

/// `GET /api/edge/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    /// Always true: this server is an edge box.
    pub edge: bool,
    /// The venue it serves.
    pub venue: Uuid,
    /// Whether the upstream is connected now.
    pub upstream_connected: bool,
    /// Since when the upstream has been unreachable (ms), if it is.
    pub cut_off_since: Option<i64>,
    /// For how many whole minutes.
    pub cut_off_minutes: Option<i64>,
    /// The last time every document was in step with the upstream (ms).
    pub in_step_at: Option<i64>,
    /// Documents with changes the upstream does not hold yet.
    pub unsynced_documents: usize,
    /// Changes the upstream refused.
    pub refused_changes: usize,
    /// The edge's enrollment was revoked upstream: it serves nothing and keeps its data.
    pub revoked: bool,
    /// The banner for the staff, in Chinese and English; empty while connected.
    pub banner: String,
}

impl EdgeStatus {
    /// A new edge for `venue`, not yet connected, as of `now`.
    #[must_use]
    pub fn new(venue: Uuid, now: i64) -> Self {
        Self {
            venue,
            inner: Arc::new(Mutex::new(Inner {
                since: now,
                ..Inner::default()
            })),
            revoked: watch::Sender::new(false),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The link is up.
    pub fn connected(&self, now: i64) {
        let mut i = self.inner();
        if !i.connected {
            i.connected = true;
            i.since = now;
        }
    }

    /// The link is down (or never came up).
    pub fn disconnected(&self, now: i64) {
        let mut i = self.inner();
        if i.connected {
            i.connected = false;
            i.since = now;
        }
    }

    /// What waits to go up, as the link counts it.
    pub fn progress(&self, now: i64, unsynced_docs: usize, refused: usize) {
        let mut i = self.inner();
        i.unsynced_docs = unsynced_docs;
        i.refused_changes += refused;
        if unsynced_docs == 0 && i.connected {
            i.in_step_at = Some(now);
        }
    }

    /// The upstream revoked this edge.
    pub fn revoke(&self) {
        self.inner().revoked = true;
        self.revoked.send_replace(true);
    }

    /// A signal for the sync sessions: true once `stop` is (the server stops) or the
    /// edge is revoked (its devices' sessions close; they reconnect and are refused).
    #[must_use]
    pub fn end_sessions_with(&self, mut stop: watch::Receiver<bool>) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(*stop.borrow() || self.is_revoked());
        let mut revoked = self.revoked.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = revoked.wait_for(|r| *r) => {}
            }
            let _ = tx.send(true);
        });
        rx
    }

    /// Was this edge revoked?
    #[must_use]
    pub fn is_revoked(&self) -> bool {
        self.inner().revoked
    }

    /// The status as of `now`.
    #[must_use]
    pub fn view(&self, now: i64) -> StatusView {
        let i = self.inner();
        let cut_off_since = (!i.connected).then_some(i.since);
        let cut_off_minutes = cut_off_since.map(|s| (now - s).max(0) / 60_000);
        let banner = if i.revoked {
            "此边缘服务器已被吊销 · this edge box was revoked".to_owned()
        } else {
            cut_off_minutes.map_or_else(String::new, |m| {
                format!("上游已断开 {m} 分钟 · upstream unreachable for {m} min")
            })
        };
        StatusView {
            edge: true,
            venue: self.venue,
            upstream_connected: i.connected,
            cut_off_since,
            cut_off_minutes,
            in_step_at: i.in_step_at,
            unsynced_documents: i.unsynced_docs,
            refused_changes: i.refused_changes,
            revoked: i.revoked,
            banner,
        }
    }
}
