//! The rosters of the day's bookings, read from their records (`proj_rosters`) and kept
//! in memory until the pupils on them change (ADR 0185), not at every check-in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use crate::error::Result;
use crate::store::{DayBooking, Store};

/// Rosters kept in memory at most (one per booking document).
const ROSTER_CACHE_MAX: usize = 20_000;

/// Rosters by booking document, each valid for the records it was read with. Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub(super) struct RosterCache {
    rosters: Arc<Mutex<HashMap<String, CachedRoster>>>,
    /// Rosters read from the store so far.
    reads: Arc<AtomicU64>,
}

/// What a cached roster is valid for: the key of its pupils (ADR 0185), or for records
/// written before the key existed, the write time and size of the records it was read
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Key(i64),
    Written { updated_at: i64, expected: i64 },
}

impl Version {
    fn of(booking: &DayBooking) -> Self {
        match booking.roster_key {
            Some(k) => Self::Key(k),
            None => Self::Written {
                updated_at: booking.updated_at,
                expected: booking.expected,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct CachedRoster {
    version: Version,
    pupils: Arc<Vec<Uuid>>,
}

impl RosterCache {
    /// The pupils on `booking`'s roster: from memory while the roster is the one read
    /// last (a check-in changes the booking's records, not its roster), else from the
    /// records.
    pub(super) async fn roster(
        &self,
        store: &Store,
        booking: &DayBooking,
    ) -> Result<Arc<Vec<Uuid>>> {
        let version = Version::of(booking);
        if let Some(r) = self.cached(&booking.doc_id, version) {
            return Ok(r);
        }
        let r = Arc::new(store.booking_roster(&booking.doc_id).await?);
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.keep(&booking.doc_id, version, Arc::clone(&r));
        Ok(r)
    }

    /// Rosters read from the store so far.
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn cached(&self, doc: &str, version: Version) -> Option<Arc<Vec<Uuid>>> {
        let r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        r.get(doc)
            .filter(|c| c.version == version)
            .map(|c| Arc::clone(&c.pupils))
    }

    fn keep(&self, doc: &str, version: Version, pupils: Arc<Vec<Uuid>>) {
        let mut r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        if r.len() >= ROSTER_CACHE_MAX {
            r.clear();
        }
        r.insert(doc.to_owned(), CachedRoster { version, pupils });
    }
}
