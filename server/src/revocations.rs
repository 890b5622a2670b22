//! Closing the connections of revoked devices. The authenticator broadcasts each
//! revocation this server makes, and [`forward`] passes it to the hub, which tells the
//! device `device-revoked` and closes it. The broadcast is not enough on its own: it
//! buffers 1,024 ids and drops the oldest when more arrive at once, and it never hears of
//! revocations made by another process (`kepu-server admin revoke-device`). So the same
//! task also reads the devices revoked lately from the database: at once when the
//! broadcast reports dropped ids, and every [`SWEEP_EVERY`] in any case.

use std::collections::HashMap;
use std::time::Duration;

use kepu_sync_core::ids::DeviceId;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::store::Store;
use crate::sync::SyncHub;

/// How often the database is read for revocations the broadcast did not carry.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Revocations are read back this far before the previous read: a revocation is stamped
/// before it is committed, and another process's clock may differ a little.
const MARGIN_MS: i64 = 60_000;

/// Runs until the broadcast closes (the server stops).
pub async fn forward(
    mut revocations: broadcast::Receiver<DeviceId>,
    store: Store,
    hub: SyncHub,
    sweep_every: Duration,
) {
    use broadcast::error::RecvError;
    let mut sweeper = Sweeper {
        since: now_ms() - MARGIN_MS,
        announced: HashMap::new(),
    };
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = revocations.recv() => match received {
                Ok(device) => hub.revoked(device),
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "more revocations at once than the broadcast holds; reading them");
                    sweeper.sweep(&store, &hub).await;
                }
                Err(RecvError::Closed) => break,
            },
            _ = sweep.tick() => sweeper.sweep(&store, &hub).await,
        }
    }
}

struct Sweeper {
    /// Read revocations stamped at or after this (unix ms).
    since: i64,
    /// Devices a sweep already passed to the hub, and when; a device is passed on by at
    /// most one sweep (and the broadcast), however often the margin reads it again.
    announced: HashMap<Uuid, i64>,
}

impl Sweeper {
    async fn sweep(&mut self, store: &Store, hub: &SyncHub) {
        let now = now_ms();
        match store.devices_revoked_since(self.since).await {
            Ok(devices) => {
                for device in devices {
                    if self.announced.insert(device, now).is_none() {
                        hub.revoked(DeviceId(device));
                    }
                }
                self.since = now - MARGIN_MS;
                let forget_before = self.since - MARGIN_MS;
                self.announced.retain(|_, at| *at >= forget_before);
            }
            // The next sweep reads from the same point again.
            Err(error) => tracing::warn!(%error, "reading revoked devices failed"),
        }
    }
}
