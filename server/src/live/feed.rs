//! The dashboard's change feed: which venues' records changed (the storage worker
//! publishes them) and which devices hold an open sync connection (the hub tells it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::roster::RosterCache;
use crate::records::Projection;

/// Change notifications for the dashboard and the set of devices connected right now.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    changes: broadcast::Sender<Uuid>,
    connected: Arc<Mutex<HashMap<Uuid, u32>>>,
    rosters: RosterCache,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    /// A feed with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            changes,
            connected: Arc::new(Mutex::new(HashMap::new())),
            rosters: RosterCache::default(),
        }
    }

    /// Tells every dashboard of `venue` that its records changed.
    pub fn publish(&self, venue: Uuid) {
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(venue);
    }

    /// Publishes the venue a document's records belong to, if it has one.
    pub fn publish_projection(&self, projection: &Projection) {
        if let Some(venue) = venue_of(projection) {
            self.publish(venue);
        }
    }

    /// Receives the ids of venues whose records changed.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    /// A device opened a sync connection.
    pub fn device_connected(&self, device: Uuid) {
        let mut c = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *c.entry(device).or_insert(0) += 1;
    }

    /// A device's sync connection closed.
    pub fn device_disconnected(&self, device: Uuid) {
        let mut c = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = c.get_mut(&device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&device);
            }
        }
    }

    /// Does the device hold an open sync connection now?
    #[must_use]
    pub fn is_connected(&self, device: Uuid) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&device)
    }

    /// The devices holding an open sync connection to this node now.
    #[must_use]
    pub fn connected_devices(&self) -> Vec<Uuid> {
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// How many times a dashboard read a booking's roster from the store (not from
    /// memory).
    #[must_use]
    pub fn roster_reads(&self) -> u64 {
        self.rosters.reads()
    }

    /// The rosters of booking documents read lately.
    pub(super) fn rosters(&self) -> &RosterCache {
        &self.rosters
    }
}

/// The venue whose dashboard a document's records feed: a venue document's own venue,
/// a booking's venue.
#[must_use]
pub fn venue_of(projection: &Projection) -> Option<Uuid> {
    match projection {
        Projection::Venue(v) => Some(v.venue.0),
        Projection::Booking(b) => Some(b.venue.0),
        _ => None,
    }
}
