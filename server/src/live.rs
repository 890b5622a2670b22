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
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::store::{DayBookings, Store, VenueRows};

/// Is there a venue with this id?
///
/// # Errors
/// A database failure.
pub async fn venue_exists(store: &Store, venue: Uuid) -> Result<bool> {
    Ok(store.venue_name(venue).await?.is_some())
}

/// The rows of a venue-day that change seldom (the venue's name, its slots, the devices
/// relevant to the day, the pupils' names), kept by one dashboard stream from one read to
/// the next (ADR 0199). They are read again when they are `max_age` old, when the
/// feed says the venue's own records changed (or another node wrote, or anything it cannot
/// tell apart), when the day's bookings are of other schools than before, and for another
/// day. A booking's numbers, scans and anomalies are taken afresh at every read.
#[derive(Debug)]
pub struct Kept {
    max_age: Duration,
    rows: Option<KeptRows>,
}

#[derive(Debug)]
struct KeptRows {
    read_at: Instant,
    generation: u64,
    day: Day,
    names_shown: bool,
    schools: Vec<String>,
    rows: VenueRows,
    /// On PostgreSQL: the devices asked whether another node holds their connection
    /// since the rows were read, with the answer (kept with the rows, ADR 0199).
    elsewhere: HashMap<Uuid, bool>,
}

impl Kept {
    /// Nothing kept yet; rows are kept for at most `max_age`.
    #[must_use]
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            rows: None,
        }
    }
}

impl KeptRows {
    /// Why these rows cannot serve a read of `day` for `schools`, if they cannot (the
    /// `source` label of `kepu_live_venue_rows_total`).
    fn stale(
        &self,
        generation: u64,
        day: Day,
        names_shown: bool,
        schools: &[String],
        max_age: Duration,
    ) -> Option<&'static str> {
        if self.generation != generation || self.day != day || self.names_shown != names_shown {
            Some("venue")
        } else if self.schools != schools {
            Some("schools")
        } else if self.read_at.elapsed() >= max_age {
            Some("aged")
        } else {
            None
        }
    }
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
    let mut nothing_kept = Kept::new(Duration::ZERO);
    snapshot_with(store, feed, venue, day, viewer, now, &mut nothing_kept).await
}

/// Reads the snapshot of `venue` on `day` for `viewer`, with the seldom rows `kept`
/// from the stream's last read where they still hold (ADR 0199), and keeps them for the
/// next.
///
/// # Errors
/// As [`snapshot`].
pub async fn snapshot_with(
    store: &Store,
    feed: &LiveFeed,
    venue: Uuid,
    day: Day,
    viewer: Viewer,
    now: i64,
    kept: &mut Kept,
) -> Result<Snapshot> {
    if !may_watch(viewer, venue) {
        // An unknown venue is not found, for everyone; a known one is forbidden.
        return match store.venue_name(venue).await? {
            Some(_) => Err(Error::Forbidden(
                "only this venue's staff and bureau administrators",
            )),
            None => Err(Error::not_found("venue", venue)),
        };
    }
    let names_shown = may_see_names(viewer, venue);
    let (start, end) = day.bounds();
    // The count first: a change published while the rows are read makes the next read
    // read them again.
    let generation = feed.generation(venue);
    let booked = store.day_bookings(venue, start, end).await?;
    let schools = booked.schools();
    let why = kept.rows.as_ref().map_or(Some("first"), |k| {
        k.stale(generation, day, names_shown, &schools, kept.max_age)
    });
    let k: &mut KeptRows = match (why, &mut kept.rows) {
        (None, Some(k)) => {
            feed.count_venue_rows("memory");
            k
        }
        (why, slot) => {
            // Their age counts from before the read.
            let read_at = Instant::now();
            let rows = store.venue_rows(venue, start, end, names_shown).await?;
            feed.count_venue_rows(why.unwrap_or("first"));
            slot.insert(KeptRows {
                read_at,
                generation,
                day,
                names_shown,
                schools,
                rows,
                elsewhere: HashMap::new(),
            })
        }
    };
    let Some(venue_name) = k.rows.venue_name.clone() else {
        return Err(Error::not_found("venue", venue));
    };
    let devices = store
        .with_scanners(k.rows.devices.clone(), &booked.scanned)
        .await?;
    if devices.len() != k.rows.devices.len() {
        // Devices that scanned without being relevant to the day: kept with the rest.
        k.rows.devices.clone_from(&devices);
    }
    let DayBookings {
        bookings,
        scans,
        anomalies,
        ..
    } = booked;
    let mut rows = Rows {
        venue_name,
        slots: k.rows.slots.clone(),
        bookings,
        rosters: HashMap::new(),
        scans,
        anomalies,
        devices,
        names: Arc::clone(&k.rows.names),
    };
    for d in &mut rows.devices {
        d.connected = d
            .device_id
            .parse::<Uuid>()
            .is_ok_and(|id| feed.is_connected(id));
    }
    // Devices connected to the other nodes sharing the database (PostgreSQL), asked
    // once for each device while the seldom rows are kept.
    if store.backend() == crate::store::Backend::Postgres {
        let unasked: Vec<Uuid> = rows
            .devices
            .iter()
            .filter(|d| !d.connected)
            .filter_map(|d| d.device_id.parse().ok())
            .filter(|id| !k.elsewhere.contains_key(id))
            .collect();
        if !unasked.is_empty() {
            let since = crate::clock::now_ms() - crate::cluster::PRESENCE_STALE_MS;
            let present = store.present_elsewhere(&unasked, since).await?;
            for id in unasked {
                k.elsewhere.insert(id, present.contains(&id));
            }
        }
        for d in &mut rows.devices {
            if !d.connected
                && d.device_id
                    .parse()
                    .is_ok_and(|id| k.elsewhere.get(&id) == Some(&true))
            {
                d.connected = true;
            }
        }
    }
    for b in &rows.bookings {
        let roster = feed.rosters().roster(store, b).await?;
        rows.rosters.insert(b.doc_id.clone(), roster);
    }
    Ok(assemble(venue, day, &rows, names_shown, now))
}
