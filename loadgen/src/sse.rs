//! The venue dashboard's live stream (`GET /api/venues/{venue}/live/events`, kepu only):
//! one reader per venue, timing how long a check-in takes to show in `totals.arrived`.
//!
//! Every live-day check-in scans a pupil not yet arrived at its venue, so each one raises
//! `arrived` by one. When a snapshot shows `arrived = a`, the first `a` check-ins sent to
//! that venue count as shown (in send order; devices' messages may overtake each other,
//! which this ignores).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{PupilId, VenueId};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::world::Provisioner;

#[derive(Default)]
struct Track {
    sent: Vec<(Instant, usize)>,
    shown: usize,
    base: Option<u64>,
    connected: bool,
    error: Option<String>,
}

/// The readers of every venue's stream.
pub struct Dashboards {
    tracks: Arc<Vec<Mutex<Track>>>,
    seen: Arc<Mutex<Vec<Vec<Duration>>>>,
}

/// A venue as live-day holds it: id, booking, roster, the observer's token.
pub type LiveVenue = (VenueId, DocumentId, Vec<PupilId>, Option<String>);

impl Dashboards {
    /// Opens one stream per venue with its staff token and waits (up to 5 s) for each
    /// first snapshot.
    pub async fn start(
        prov: &Provisioner,
        venues: &[LiveVenue],
        stop: watch::Receiver<bool>,
    ) -> Self {
        let tracks: Arc<Vec<Mutex<Track>>> = Arc::new(
            venues
                .iter()
                .map(|_| Mutex::new(Track::default()))
                .collect(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        for (i, (venue, _, _, token)) in venues.iter().enumerate() {
            let url = format!("{}/api/venues/{venue}/live/events", prov.base());
            let request = prov
                .http()
                .get(url)
                .bearer_auth(token.clone().unwrap_or_default())
                .timeout(Duration::from_secs(3600));
            let (tracks, seen, mut stop) = (Arc::clone(&tracks), Arc::clone(&seen), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    r = read(request, &tracks, i, &seen) => {
                        if let (Err(e), Ok(mut t)) = (r, tracks[i].lock()) {
                            t.error = Some(e);
                        }
                    }
                    _ = stop.changed() => {}
                }
            });
        }
        let d = Self { tracks, seen };
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(5) {
            let ready = d.tracks.iter().all(|t| {
                t.lock()
                    .map_or(true, |t| t.base.is_some() || t.error.is_some())
            });
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    /// Notes that a check-in was just sent to venue `v` during `step`.
    pub fn sent(&self, v: usize, step: usize) {
        if let Ok(mut t) = self.tracks[v].lock() {
            t.sent.push((Instant::now(), step));
        }
    }

    /// Waits until every sent check-in is shown, or `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let began = Instant::now();
        while began.elapsed() < timeout {
            let done = self.tracks.iter().all(|t| {
                t.lock().map_or(true, |t| {
                    t.error.is_some() || !t.connected || t.shown >= t.sent.len()
                })
            });
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Latencies per step.
    #[must_use]
    pub fn latencies(&self) -> Vec<Vec<Duration>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Streams connected, and the first error.
    #[must_use]
    pub fn status(&self) -> Value {
        let mut connected = 0;
        let mut error = None;
        let mut unshown = 0;
        for t in self.tracks.iter() {
            if let Ok(t) = t.lock() {
                connected += usize::from(t.connected);
                unshown += t.sent.len().saturating_sub(t.shown);
                if error.is_none() {
                    error.clone_from(&t.error);
                }
            }
        }
        json!({
            "streams": self.tracks.len(),
            "connected": connected,
            "unshown": unshown,
            "first_error": error,
        })
    }
}

async fn read(
    request: reqwest::RequestBuilder,
    tracks: &Arc<Vec<Mutex<Track>>>,
    i: usize,
    seen: &Arc<Mutex<Vec<Vec<Duration>>>>,
) -> Result<(), String> {
    let mut response = request.send().await.map_err(|e| format!("connect: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    if let Ok(mut t) = tracks[i].lock() {
        t.connected = true;
    }
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("read: {e}"))? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(arrived) = snapshot_arrived(&event) {
                shown(tracks, i, seen, arrived);
            }
        }
    }
    Err("the stream ended".into())
}

/// `totals.arrived` of a `snapshot` event's JSON, if the event is one.
fn snapshot_arrived(event: &str) -> Option<u64> {
    let mut name = "message";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if name != "snapshot" {
        return None;
    }
    // Only the one figure is read: the rest of the snapshot is skipped, not built as a
    // tree (the load generator shares the server's cores).
    #[derive(serde::Deserialize)]
    struct Snapshot {
        totals: Totals,
    }
    #[derive(serde::Deserialize)]
    struct Totals {
        arrived: u64,
    }
    serde_json::from_str::<Snapshot>(&data)
        .ok()
        .map(|s| s.totals.arrived)
}

fn shown(
    tracks: &Arc<Vec<Mutex<Track>>>,
    i: usize,
    seen: &Arc<Mutex<Vec<Vec<Duration>>>>,
    arrived: u64,
) {
    let Ok(mut t) = tracks[i].lock() else { return };
    let base = *t.base.get_or_insert(arrived);
    let upto = usize::try_from(arrived.saturating_sub(base))
        .unwrap_or(usize::MAX)
        .min(t.sent.len());
    if upto <= t.shown {
        return;
    }
    let now = Instant::now();
    if let Ok(mut s) = seen.lock() {
        for (at, step) in &t.sent[t.shown..upto] {
            if s.len() <= *step {
                s.resize_with(step + 1, Vec::new);
            }
            s[*step].push(now.duration_since(*at));
        }
    }
    t.shown = upto;
}

#[cfg(test)]
mod tests {
    use super::snapshot_arrived;

    #[test]
    fn snapshot_events_are_parsed_and_others_ignored() {
        let e = "event: snapshot\ndata: {\"generated_at\":1,\"totals\":{\"expected\":9,\"arrived\":4,\"inside\":4}}\n\n";
        assert_eq!(snapshot_arrived(e), Some(4));
        assert_eq!(snapshot_arrived(": heartbeat\n\n"), None);
        assert_eq!(
            snapshot_arrived("event: snapshot\ndata: {not json\n\n"),
            None
        );
        assert_eq!(
            snapshot_arrived("data: {\"totals\":{\"arrived\":1}}\n\n"),
            None
        );
    }
}
