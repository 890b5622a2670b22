//! The dashboard's change feed: which venues' records changed (the storage worker
//! publishes them), whether the change may touch the rows of a venue that change seldom
//! (ADR 0199), and which devices hold an open sync connection (the hub tells it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{IntCounterVec, Opts};
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
    /// Per venue, a count raised by every change that may touch the rows that change
    /// seldom (its name, slots, relevant devices, pupils' names): a stream reads them
    /// again when the count differs from the one it read them with (ADR 0199).
    generations: Arc<Mutex<HashMap<Uuid, u64>>>,
    /// A count raised when a pupil is erased or a device revoked, wherever: every
    /// stream's kept names and devices are read again at its next read (ADR 0199).
    people: Arc<std::sync::atomic::AtomicU64>,
    /// `kepu_live_venue_rows_total{source}`: how a dashboard stream's read came by the
    /// venue's seldom rows (ADR 0199).
    venue_rows: IntCounterVec,
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
        let venue_rows = IntCounterVec::new(
            Opts::new(
                "kepu_live_venue_rows_total",
                "Reads of live dashboard snapshots by how they came by the venue's rows that \
                 change seldom: kept in memory, or read because nothing was kept (first), \
                 they were a second old (aged), a change was told (venue: the venue's, or \
                 an erasure or revocation anywhere) or the day's schools changed (ADR 0199).",
            ),
            &["source"],
        )
        .expect("a valid metric");
        Self {
            changes,
            connected: Arc::new(Mutex::new(HashMap::new())),
            rosters: RosterCache::default(),
            generations: Arc::new(Mutex::new(HashMap::new())),
            people: Arc::default(),
            venue_rows,
        }
    }

    /// Tells every dashboard of `venue` that its records changed in a way not known
    /// here (another node wrote them): the venue's seldom rows are read again too.
    pub fn publish(&self, venue: Uuid) {
        self.changed(venue, true);
    }

    /// Publishes the venue a document's records belong to, if it has one. Only the
    /// venue's own document changes its seldom rows; a booking's changes its numbers and
    /// scans, which every read takes afresh.
    pub fn publish_projection(&self, projection: &Projection) {
        if let Some(venue) = venue_of(projection) {
            self.changed(venue, matches!(projection, Projection::Venue(_)));
        }
    }

    fn changed(&self, venue: Uuid, seldom_rows: bool) {
        // Raised before the notification: a stream woken by it reads the new count.
        if seldom_rows {
            *self
                .generations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(venue)
                .or_insert(0) += 1;
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(venue);
    }

    /// A pupil was erased or a device revoked: no stream shows the rows it kept of
    /// them after its next read.
    pub fn people_changed(&self) {
        self.people
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many changes that may touch `venue`'s seldom rows were published so far
    /// (those of the venue and those of people anywhere; both only grow).
    #[must_use]
    pub fn generation(&self, venue: Uuid) -> u64 {
        let venue_changes = self
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&venue)
            .copied()
            .unwrap_or(0);
        venue_changes.wrapping_add(self.people.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// `kepu_live_venue_rows_total` (ADR 0199).
    #[must_use]
    pub fn venue_rows_metric(&self) -> IntCounterVec {
        self.venue_rows.clone()
    }

    /// Reads that came by the venue's seldom rows this way so far: `memory`, `first`,
    /// `aged`, `venue` or `schools`.
    #[must_use]
    pub fn venue_rows(&self, source: &str) -> u64 {
        self.venue_rows.with_label_values(&[source]).get()
    }

    pub(super) fn count_venue_rows(&self, source: &str) {
        self.venue_rows.with_label_values(&[source]).inc();
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
