//! What every HTTP handler (and the sync endpoint) shares.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::accounts::{Accounts, Authenticator};
use crate::config::ConnectionLimits;
use crate::limits::{AttemptLimiter, OpenCounter};
use crate::metrics::Metrics;
use crate::store::Store;

/// Shared server state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Account operations (enroll, rotate, revoke, import, erase).
    pub accounts: Accounts,
    /// Metrics the handlers and the sync engine feed.
    pub metrics: Arc<Metrics>,
    /// Change notifications and connected devices for the live venue dashboard.
    pub live: crate::live::LiveFeed,
    /// Limits per client address, device and user, and who may read `/metrics`.
    pub guards: Arc<Guards>,
    /// Whether this node runs the work that must happen once (always on SQLite).
    pub leader: crate::cluster::Leadership,
}

/// Limits per client address, device and user that the HTTP handlers and the sync
/// endpoint share.
#[derive(Debug)]
pub struct Guards {
    /// The configured limits.
    pub limits: ConnectionLimits,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<String>,
    /// Open `/sync` connections per device.
    pub sync_per_device: OpenCounter<Uuid>,
    /// Open live-dashboard event streams per user.
    pub streams_per_user: OpenCounter<Uuid>,
    /// Wrong enrollment codes per client address.
    pub enroll_failures: AttemptLimiter<IpAddr>,
}

/// How long a client address waits after too many wrong enrollment codes.
pub const ENROLL_LOCKOUT_MS: i64 = 5 * 60 * 1000;

impl Guards {
    /// Guards with `limits`.
    #[must_use]
    pub fn new(limits: &ConnectionLimits, metrics_token: Option<String>) -> Self {
        Self {
            limits: limits.clone(),
            metrics_token: metrics_token.filter(|t| !t.is_empty()),
            sync_per_device: OpenCounter::new(limits.sync_connections_per_device),
            streams_per_user: OpenCounter::new(limits.event_streams_per_user),
            enroll_failures: AttemptLimiter::new(
                limits.enroll_failures_per_address,
                ENROLL_LOCKOUT_MS,
                15 * 60 * 1000,
                100_000,
            ),
        }
    }
}

impl AppState {
    /// State over an opened store, with the default limits.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self::with_guards(store, Guards::new(&ConnectionLimits::default(), None))
    }

    /// State over an opened store with `guards`.
    #[must_use]
    pub fn with_guards(store: Store, guards: Guards) -> Self {
        let accounts = Accounts::with_limits(store.clone(), &guards.limits);
        let metrics = Metrics::new();
        metrics.register(accounts.password_checks_running());
        metrics.register(store.records_rows_written());
        metrics.register(store.live_booking_rows());
        let live = crate::live::LiveFeed::new();
        metrics.register(live.venue_rows_metric());
        Self {
            accounts,
            store,
            metrics: Arc::new(metrics),
            live,
            guards: Arc::new(guards),
            leader: crate::cluster::Leadership::always(),
        }
    }

    /// The authenticator the sync endpoint calls at the upgrade.
    #[must_use]
    pub fn authenticator(&self) -> &Authenticator {
        self.accounts.authenticator()
    }
}
