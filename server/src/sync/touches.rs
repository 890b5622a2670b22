//! The last sync times of devices, written many at a time (ADR 0186). The hub's first
//! shard tells this task when a device's connection opens or leaves; the task writes
//! every time told since its last write in one transaction, then tells the live
//! dashboard which devices left (after their time is written, so that the dashboard
//! shows a device as gone with the time it left) and, on PostgreSQL, the other nodes.
//!
//! One write per connect and one per disconnect, each its own transaction waiting for the
//! disk, was what a reconnect storm of 10,000 devices queued behind the devices' changes.

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app_state::AppState;
use crate::store::Backend;

/// A device's connection opened or left, at a time (unix ms).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Touch {
    /// The connection opened.
    Connected(Uuid, i64),
    /// The connection left.
    Gone(Uuid, i64),
}

/// Most touches written in one transaction.
const MAX_BATCH: usize = 2_000;

/// Starts the task; touches sent after the server stopped are dropped.
pub(crate) fn start(state: AppState) -> mpsc::UnboundedSender<Touch> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(state, rx));
    tx
}

async fn run(state: AppState, mut rx: mpsc::UnboundedReceiver<Touch>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&state, &batch).await;
        batch.clear();
    }
}

/// Writes one batch, then tells the dashboard and the other nodes.
async fn write(state: &AppState, batch: &[Touch]) {
    let times: Vec<(Uuid, i64)> = batch
        .iter()
        .map(|t| match *t {
            Touch::Connected(d, at) | Touch::Gone(d, at) => (d, at),
        })
        .collect();
    if let Err(e) = state.store.touch_devices_synced(&times).await {
        tracing::warn!(devices = times.len(), error = %e, "could not record last sync times");
    }
    let shared = state.store.backend() == Backend::Postgres;
    let mut connected = Vec::new();
    let mut gone = Vec::new();
    for t in batch {
        match *t {
            Touch::Connected(device, _) => connected.push(device),
            Touch::Gone(device, _) => {
                state.live.device_disconnected(device);
                gone.push(device);
            }
        }
    }
    if shared {
        // Gone and not back once the batch is through: one statement per 200 devices,
        // not one each (a network blip ends thousands of connections at once).
        gone.retain(|d| !state.live.is_connected(*d));
        if !gone.is_empty()
            && let Err(e) = state.store.presence_gone(&gone).await
        {
            tracing::warn!(devices = gone.len(), error = %e, "could not record devices as gone");
        }
        // Still connected once the batch is through (not gone again in it).
        connected.retain(|d| state.live.is_connected(*d));
        if !connected.is_empty()
            && let Err(e) = state
                .store
                .presence_refresh(&connected, crate::clock::now_ms())
                .await
        {
            tracing::warn!(error = %e, "could not record devices as present");
        }
    }
}
