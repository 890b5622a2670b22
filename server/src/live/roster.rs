//! The rosters of the day's bookings, read from their records (`proj_rosters`) and kept
//! in memory until the booking's records change.

use std::collections::HashMap;
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
}

#[derive(Debug, Clone)]
struct CachedRoster {
    updated_at: i64,
    expected: i64,
    pupils: Arc<Vec<Uuid>>,
}

impl RosterCache {
    /// The pupils on `booking`'s roster: from memory while its records are the ones the
    /// roster was read with, else from the records.
    pub(super) async fn roster(
        &self,
        store: &Store,
        booking: &DayBooking,
    ) -> Result<Arc<Vec<Uuid>>> {
        if let Some(r) = self.cached(&booking.doc_id, booking.updated_at, booking.expected) {
            return Ok(r);
        }
        let r = Arc::new(store.booking_roster(&booking.doc_id).await?);
        self.keep(
            &booking.doc_id,
            booking.updated_at,
            booking.expected,
            Arc::clone(&r),
        );
        Ok(r)
    }

    fn cached(&self, doc: &str, updated_at: i64, expected: i64) -> Option<Arc<Vec<Uuid>>> {
        let r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        r.get(doc)
            .filter(|c| c.updated_at == updated_at && c.expected == expected)
            .map(|c| Arc::clone(&c.pupils))
    }

    fn keep(&self, doc: &str, updated_at: i64, expected: i64, pupils: Arc<Vec<Uuid>>) {
        let mut r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        if r.len() >= ROSTER_CACHE_MAX {
            r.clear();
        }
        r.insert(
            doc.to_owned(),
            CachedRoster {
                updated_at,
                expected,
                pupils,
            },
        );
    }
}
