//! What every HTTP handler (and the sync endpoint) shares.

use std::sync::Arc;

use crate::accounts::{Accounts, Authenticator};
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
}

impl AppState {
    /// State over an opened store.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self {
            accounts: Accounts::new(store.clone()),
            store,
            metrics: Arc::new(Metrics::new()),
            live: crate::live::LiveFeed::new(),
        }
    }

    /// The authenticator the sync endpoint calls at the upgrade.
    #[must_use]
    pub fn authenticator(&self) -> &Authenticator {
        self.accounts.authenticator()
    }
}
