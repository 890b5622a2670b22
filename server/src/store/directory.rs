//! What the 科普地图 directory reads: every venue's projected profile and its bookable
//! slots.

use std::collections::HashMap;

use sqlx::Row;

use crate::error::Result;
use crate::store::Store;

/// A venue as the directory lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryVenue {
    /// Venue id.
    pub venue_id: String,
    /// The venue document's profile as JSON text, as projected.
    pub profile_json: String,
    /// When its records were last written (unix ms).
    pub updated_at: i64,
    /// Its slots, earliest first.
    pub slots: Vec<DirectorySlot>,
}

/// A bookable slot of a venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySlot {
    /// Slot id.
    pub slot_id: String,
    /// Start (unix ms).
    pub start_ms: i64,
    /// End (unix ms).
    pub end_ms: i64,
    /// Places.
    pub capacity: i64,
    /// The venue's label for it.
    pub label: String,
}

impl Store {
    /// Every projected venue, by id, with its slots.
    ///
    /// # Errors
    /// A database failure.
    pub async fn directory(&self) -> Result<Vec<DirectoryVenue>> {
        let mut slots: HashMap<String, Vec<DirectorySlot>> = HashMap::new();
        for s in sqlx::query(
            "SELECT venue_id, slot_id, start_ms, end_ms, capacity, label FROM proj_slots \
             ORDER BY venue_id, start_ms, slot_id",
        )
        .fetch_all(&self.pool)
        .await?
        {
            slots.entry(s.try_get(0)?).or_default().push(DirectorySlot {
                slot_id: s.try_get(1)?,
                start_ms: s.try_get(2)?,
                end_ms: s.try_get(3)?,
                capacity: s.try_get(4)?,
                label: s.try_get(5)?,
            });
        }
        sqlx::query("SELECT venue_id, profile_json, updated_at FROM proj_venues ORDER BY venue_id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                let venue_id: String = r.try_get(0)?;
                Ok(DirectoryVenue {
                    slots: slots.remove(&venue_id).unwrap_or_default(),
                    venue_id,
                    profile_json: r.try_get(1)?,
                    updated_at: r.try_get(2)?,
                })
            })
            .collect()
    }
}
