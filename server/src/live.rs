//! The live venue dashboard (`/venues/{id}/live`): what the gate staff of a venue see of
//! today's visits while pupils arrive. Its rooms:
//!
//! - `feed.rs`: [`LiveFeed`], in [`AppState`](crate::AppState). The storage worker
//!   publishes "venue V changed" on it after it writes a document's records; the hub tells
//!   it which devices hold an open connection.
//! - `day.rs`: the venue [`Day`] (China Standard Time).
//! - `access.rs`: who may watch a venue ([`may_watch`]) and see pupils' names
//!   ([`may_see_names`]); pseudonyms and short device ids for everyone else.
//! - `roster.rs`: the rosters of the day's bookings, read from their records
//!   (`proj_rosters`) and kept in memory while the pupils on them stay the same.
//! - `view.rs`: the [`Snapshot`] the page shows; `assemble.rs`: [`assemble`] (pure) turns
//!   one venue-day's rows into it: slots and bookings with their numbers, arrivals over
//!   time, missing pupils per group, the duplicate and anomaly ledger and the uncertainty
//!   band.
//!
//! [`snapshot`] puts them together: the venue-day's records from the store
//! (`Store::venue_day`), the rosters, the connected devices, then [`assemble`].
//!
//! Snapshots never carry a pupil's name unless [`may_see_names`] allows it for the
//! viewer; otherwise a pupil is shown by a short pseudonym. Nothing here logs a name.

mod access;
mod assemble;
mod day;
mod feed;
mod roster;
mod view;

use std::collections::HashMap;

use uuid::Uuid;

pub use access::{Viewer, may_see_names, may_watch, pseudonym, short_device};
pub use assemble::{BUCKET_MS, Rows, STALE_AFTER_MS, assemble};
pub use day::{Day, VENUE_UTC_OFFSET_MS};
pub use feed::{LiveFeed, venue_of};
pub use view::{
    AnomalyView, Arrivals, Band, BookingView, Bucket, DeviceLabel, Duplicate, PupilLabel, ScanView,
    SlotView, Snapshot, StaleDevice, Totals,
};

use crate::error::{Error, Result};
use crate::store::{Store, VenueDay};

/// Is there a venue with this id?
///
/// # Errors
/// A database failure.
pub async fn venue_exists(store: &Store, venue: Uuid) -> Result<bool> {
    Ok(store.venue_name(venue).await?.is_some())
}

/// Reads the snapshot of `venue` on `day` for `viewer`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown venue; [`Error::Forbidden`] when the viewer may
/// not watch it; a database failure.
pub async fn snapshot(
    store: &Store,
    feed: &LiveFeed,
    venue: Uuid,
    day: Day,
    viewer: Viewer,
    now: i64,
) -> Result<Snapshot> {
    let Some(venue_name) = store.venue_name(venue).await? else {
        return Err(Error::not_found("venue", venue));
    };
    if !may_watch(viewer, venue) {
        return Err(Error::Forbidden(
            "only this venue's staff and bureau administrators",
        ));
    }
    let names_shown = may_see_names(viewer, venue);
    let (start, end) = day.bounds();
    let VenueDay {
        slots,
        bookings,
        scans,
        anomalies,
        devices,
        names,
    } = store.venue_day(venue, start, end, names_shown).await?;
    let mut rows = Rows {
        venue_name,
        slots,
        bookings,
        rosters: HashMap::new(),
        scans,
        anomalies,
        devices,
        names,
    };
    for d in &mut rows.devices {
        d.connected = d
            .device_id
            .parse::<Uuid>()
            .is_ok_and(|id| feed.is_connected(id));
    }
    // Devices connected to the other nodes sharing the database (PostgreSQL).
    if store.backend() == crate::store::Backend::Postgres {
        let others: Vec<Uuid> = rows
            .devices
            .iter()
            .filter(|d| !d.connected)
            .filter_map(|d| d.device_id.parse().ok())
            .collect();
        if !others.is_empty() {
            let since = crate::clock::now_ms() - crate::cluster::PRESENCE_STALE_MS;
            let present = store.present_elsewhere(&others, since).await?;
            for d in &mut rows.devices {
                if !d.connected && d.device_id.parse().is_ok_and(|id| present.contains(&id)) {
                    d.connected = true;
                }
            }
        }
    }
    for b in &rows.bookings {
        let roster = feed.rosters().roster(store, b).await?;
        rows.rosters.insert(b.doc_id.clone(), roster);
    }
    Ok(assemble(venue, day, &rows, names_shown, now))
}
