//! What the live venue dashboard reads: one venue-day from the records (slots, bookings
//! with their schools' names, scans, anomalies), the devices relevant to it and, when the
//! viewer may see them, the booked pupils' display names.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::day_rows::{BookingDay, Unsorted};
use super::rows::numbered;
use crate::error::Result;
use crate::store::Store;

/// Documents or devices a statement names at most.
const CHUNK: usize = 200;

/// A slot of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySlot {
    /// Slot id.
    pub slot_id: String,
    /// Start.
    pub start: i64,
    /// End.
    pub end: i64,
    /// Places.
    pub capacity: i64,
    /// Label.
    pub label: String,
}

/// A booking of the day with its school's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayBooking {
    /// Document id.
    pub doc_id: String,
    /// Slot id.
    pub slot_id: String,
    /// School id.
    pub school_id: String,
    /// School name (empty if unknown).
    pub school_name: String,
    /// Places.
    pub party_size: i64,
    /// Status.
    pub status: String,
    /// Wait-list position.
    pub wait_position: Option<i64>,
    /// Roster size.
    pub expected: i64,
    /// Arrived.
    pub arrived: i64,
    /// Inside now.
    pub inside: i64,
    /// When the records were written.
    pub updated_at: i64,
    /// The key of the pupils on its roster (ADR 0185; the dashboard keeps a roster in
    /// memory until it changes); `None` in records written before it existed.
    pub roster_key: Option<i64>,
}

/// A check-in scan of one of the day's bookings. Its text is shared (`Arc<str>`): a
/// dashboard's every refresh copies a venue-day's scans out of the rows kept in memory
/// (ADR 0193), and a copy is then a count, not four strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayScan {
    /// Booking document.
    pub doc_id: Arc<str>,
    /// Pupil.
    pub pupil_id: Arc<str>,
    /// Device.
    pub device_id: Arc<str>,
    /// Time.
    pub at: i64,
    /// Method.
    pub method: Arc<str>,
    /// The scan that counts.
    pub counted: bool,
}

/// An anomaly of one of the day's bookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayAnomaly {
    /// Booking document.
    pub doc_id: Arc<str>,
    /// Pupil.
    pub pupil_id: Arc<str>,
    /// Device.
    pub device_id: Arc<str>,
    /// Kind.
    pub kind: Arc<str>,
    /// Time.
    pub at: i64,
}

/// A device relevant to the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayDevice {
    /// Device id.
    pub device_id: String,
    /// Owner's role.
    pub role: String,
    /// Last sync (unix ms), if ever.
    pub last_sync_at: Option<i64>,
    /// Revoked devices are labelled but are not in the band.
    pub revoked: bool,
    /// Relevant to the day (the live dashboard's uncertainty band); other rows only
    /// label scans.
    pub relevant: bool,
    /// Holds an open sync connection now.
    pub connected: bool,
}

/// One venue-day as the records hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VenueDay {
    /// The day's slots.
    pub slots: Vec<DaySlot>,
    /// Their bookings.
    pub bookings: Vec<DayBooking>,
    /// The bookings' check-in scans.
    pub scans: Vec<DayScan>,
    /// Their anomalies.
    pub anomalies: Vec<DayAnomaly>,
    /// Devices that scanned, and every relevant device.
    pub devices: Vec<DayDevice>,
    /// Pupil id to (display name, school id), only when names were asked for.
    pub names: HashMap<String, (String, String)>,
}

/// What changes with every check-in of a venue-day: its bookings with their numbers,
/// their scans and anomalies, and the devices that recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayBookings {
    /// The day's bookings.
    pub bookings: Vec<DayBooking>,
    /// Their check-in scans.
    pub scans: Vec<DayScan>,
    /// Their anomalies.
    pub anomalies: Vec<DayAnomaly>,
    /// Every device that recorded a check-in or a check-out for them, once, sorted.
    pub scanned: Vec<String>,
}

impl DayBookings {
    /// The schools of the day's bookings, once each, sorted: the devices relevant to the
    /// day and the pupils' names depend on them.
    #[must_use]
    pub fn schools(&self) -> Vec<String> {
        let mut schools: Vec<String> = self.bookings.iter().map(|b| b.school_id.clone()).collect();
        schools.sort_unstable();
        schools.dedup();
        schools
    }
}

/// What changes seldom in a venue-day (ADR 0199): the venue's name, the slots of its
/// document, the devices relevant to the day and the booked schools' pupils' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VenueRows {
    /// The venue's name; `None` if there is no such venue.
    pub venue_name: Option<String>,
    /// The day's slots.
    pub slots: Vec<DaySlot>,
    /// The venue's staff's devices, the booked schools' teachers' and those that scanned
    /// at the venue that day for a booking of another day, by id.
    pub devices: Vec<DayDevice>,
    /// Pupil id to (display name, school id), only when names were asked for.
    pub names: Arc<HashMap<String, (String, String)>>,
}

/// A device's row: id, its owner's role, last sync, revocation (`d` devices, `u` users).
macro_rules! device_columns {
    () => {
        "SELECT d.id, u.role, d.last_sync_at, d.revoked_at FROM devices d JOIN users u ON u.id = d.user_id"
    };
}
/// The day's bookings of a venue: `$1` venue, `$2`..`$3` the day's bounds, by slot start.
macro_rules! day_bookings {
    () => {
        "SELECT b.doc_id FROM proj_bookings b JOIN proj_slots s \
         ON s.slot_id = b.slot_id AND s.venue_id = b.venue_id \
         WHERE b.venue_id = $1 AND s.start_ms >= $2 AND s.start_ms < $3"
    };
}

/// Runs a query over one venue-day (`$1` the venue, `$2`..`$3` the day's bounds) and
/// reads each row with `row`.
async fn day_query<T>(
    store: &Store,
    sql: &'static str,
    venue: &str,
    (start, end): (i64, i64),
    row: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Vec<T>> {
    sqlx::query(sql)
        .bind(venue)
        .bind(start)
        .bind(end)
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(row)
        .collect()
}

impl Store {
    /// The venue's name, `None` if there is no such venue.
    ///
    /// # Errors
    /// A database failure.
    pub async fn venue_name(&self, venue: Uuid) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT name FROM venues WHERE id = $1")
            .bind(venue.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    /// What the records hold for `venue` on the day from `start` (inclusive) to `end`
    /// (exclusive), unix ms: its slots starting that day and their bookings, their scans
    /// and anomalies, the devices relevant to the day and, with `names`, the display
    /// names of the booked schools' pupils.
    ///
    /// # Errors
    /// A database failure.
    pub async fn venue_day(
        &self,
        venue: Uuid,
        start: i64,
        end: i64,
        names: bool,
    ) -> Result<VenueDay> {
        let booked = self.day_bookings(venue, start, end).await?;
        let seldom = self.venue_rows(venue, start, end, names).await?;
        let devices = self.with_scanners(seldom.devices, &booked.scanned).await?;
        Ok(VenueDay {
            slots: seldom.slots,
            bookings: booked.bookings,
            scans: booked.scans,
            anomalies: booked.anomalies,
            devices,
            names: Arc::unwrap_or_clone(seldom.names),
        })
    }

    /// The bookings of `venue` on the day from `start` to `end` with their numbers,
    /// scans, anomalies and the devices that recorded them: one statement, the rest from
    /// memory while the bookings' records are the ones kept (ADR 0193).
    ///
    /// # Errors
    /// A database failure.
    pub async fn day_bookings(&self, venue: Uuid, start: i64, end: i64) -> Result<DayBookings> {
        day_bookings(self, &venue.to_string(), (start, end)).await
    }

    /// The rows of `venue`'s day from `start` to `end` that change seldom: its name,
    /// slots, relevant devices and, with `names`, the booked schools' pupils' names.
    ///
    /// # Errors
    /// A database failure.
    pub async fn venue_rows(
        &self,
        venue: Uuid,
        start: i64,
        end: i64,
        names: bool,
    ) -> Result<VenueRows> {
        venue_rows(self, venue, (start, end), names).await
    }

    /// `devices` (sorted by id) with the devices of `scanned` that are not among them
    /// read and added, still sorted.
    ///
    /// # Errors
    /// A database failure.
    pub async fn with_scanners(
        &self,
        mut devices: Vec<DayDevice>,
        scanned: &[String],
    ) -> Result<Vec<DayDevice>> {
        let known: std::collections::HashSet<&str> =
            devices.iter().map(|d| d.device_id.as_str()).collect();
        let others: Vec<&str> = scanned
            .iter()
            .map(String::as_str)
            .filter(|d| !known.contains(*d))
            .collect();
        if others.is_empty() {
            return Ok(devices);
        }
        for chunk in others.chunks(CHUNK) {
            for r in where_in(self, concat!(device_columns!(), " WHERE d.id IN"), chunk).await? {
                devices.push(device_row(&r)?);
            }
        }
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(devices)
    }
}

async fn day_bookings(store: &Store, v: &str, day: (i64, i64)) -> Result<DayBookings> {
    let booked = day_query(store,
        "SELECT b.doc_id, b.slot_id, b.school_id, sc.name, b.party_size, b.status, b.wait_position, \
         b.expected, b.arrived, b.inside_now, b.updated_at, b.roster_key, w.token \
         FROM proj_bookings b JOIN proj_slots s ON s.slot_id = b.slot_id AND s.venue_id = b.venue_id \
         LEFT JOIN schools sc ON sc.id = b.school_id \
         LEFT JOIN records_writes w ON w.doc_id = b.doc_id \
         WHERE b.venue_id = $1 AND s.start_ms >= $2 AND s.start_ms < $3 \
         ORDER BY s.start_ms, b.received_seq", v, day, |r| {
        Ok((DayBooking {
            doc_id: r.try_get(0)?,
            slot_id: r.try_get(1)?,
            school_id: r.try_get(2)?,
            school_name: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
            party_size: r.try_get(4)?,
            status: r.try_get(5)?,
            wait_position: r.try_get(6)?,
            expected: r.try_get(7)?,
            arrived: r.try_get(8)?,
            inside: r.try_get(9)?,
            updated_at: r.try_get(10)?,
            roster_key: r.try_get(11)?,
        }, r.try_get::<Option<i64>, _>(12)?))
    })
    .await?;

    // Each booking's scans, anomalies and scanning devices: from memory while its
    // records' token is the one they were kept with, else from the records (ADR 0193).
    let mut days = booking_days(store, v, &booked).await?;
    days.sort_by(|a, b| a.0.cmp(&b.0));
    let bookings: Vec<DayBooking> = booked.into_iter().map(|(b, _)| b).collect();
    let mut scans = Vec::with_capacity(days.iter().map(|(_, d)| d.scans.len()).sum());
    let mut anomalies = Vec::new();
    let mut scanned: Vec<&str> = Vec::new();
    for (_, d) in &days {
        scans.extend(d.scans.iter().cloned());
        anomalies.extend(d.anomalies.iter().cloned());
        scanned.extend(d.devices.iter().map(String::as_str));
    }
    anomalies.sort_by(|a: &DayAnomaly, b: &DayAnomaly| {
        (a.at, &a.pupil_id, &a.kind).cmp(&(b.at, &b.pupil_id, &b.kind))
    });
    scanned.sort_unstable();
    scanned.dedup();
    let scanned = scanned.into_iter().map(str::to_owned).collect();
    Ok(DayBookings {
        bookings,
        scans,
        anomalies,
        scanned,
    })
}

async fn venue_rows(store: &Store, venue: Uuid, day: (i64, i64), names: bool) -> Result<VenueRows> {
    let v = venue.to_string();
    let venue_name = store.venue_name(venue).await?;
    let slots = day_query(
        store,
        "SELECT slot_id, start_ms, end_ms, capacity, label FROM proj_slots \
         WHERE venue_id = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY start_ms, slot_id",
        &v,
        day,
        |r| {
            Ok(DaySlot {
                slot_id: r.try_get(0)?,
                start: r.try_get(1)?,
                end: r.try_get(2)?,
                capacity: r.try_get(3)?,
                label: r.try_get(4)?,
            })
        },
    )
    .await?;
    let devices = day_devices(store, &v, day).await?;
    let mut names_by_pupil = HashMap::new();
    if names {
        let rows = day_query(
            store,
            concat!(
                "SELECT u.id, u.display_name, u.school_id FROM users u \
                 WHERE u.role = 'pupil' AND u.erased_at IS NULL AND u.display_name IS NOT NULL \
                 AND u.school_id IN (SELECT bs.school_id FROM proj_bookings bs WHERE bs.doc_id IN (",
                day_bookings!(),
                "))"
            ),
            &v,
            day,
            |r| Ok((r.try_get::<String, _>(0)?, (r.try_get(1)?, r.try_get(2)?))),
        )
        .await?;
        names_by_pupil.extend(rows);
    }
    Ok(VenueRows {
        venue_name,
        slots,
        devices,
        names: Arc::new(names_by_pupil),
    })
}

/// The dashboard's rows of each of `booked` (with its records' token), by document id:
/// from memory where kept with the stored token, the rest read from the records in a
/// few statements and kept for the next read.
async fn booking_days(
    store: &Store,
    venue: &str,
    booked: &[(DayBooking, Option<i64>)],
) -> Result<Vec<(String, Arc<BookingDay>)>> {
    let mut out = Vec::with_capacity(booked.len());
    let mut missing: Vec<(&str, Option<i64>)> = Vec::new();
    for (b, token) in booked {
        match token.and_then(|t| store.day_rows.get(&b.doc_id, t)) {
            Some(d) => {
                store.day_rows.count(true);
                out.push((b.doc_id.clone(), d));
            }
            None => missing.push((b.doc_id.as_str(), *token)),
        }
    }
    for chunk in missing.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|(d, _)| *d).collect();
        let mut read: HashMap<&str, Unsorted> =
            ids.iter().map(|d| (*d, Unsorted::default())).collect();
        for r in where_in(
            store,
            "SELECT doc_id, pupil_id, device_id, at, method, counted, scan_id FROM proj_check_ins \
             WHERE doc_id IN",
            &ids,
        )
        .await?
        {
            let doc: String = r.try_get(0)?;
            if let Some(e) = read.get_mut(doc.as_str()) {
                let scan = DayScan {
                    doc_id: doc.as_str().into(),
                    pupil_id: r.try_get::<String, _>(1)?.into(),
                    device_id: r.try_get::<String, _>(2)?.into(),
                    at: r.try_get(3)?,
                    method: r.try_get::<String, _>(4)?.into(),
                    counted: r.try_get::<i64, _>(5)? != 0,
                };
                e.devices.push(scan.device_id.to_string());
                e.scans.push((scan, r.try_get(6)?));
            }
        }
        for r in where_in(
            store,
            "SELECT doc_id, pupil_id, device_id, kind, at FROM proj_anomalies WHERE doc_id IN",
            &ids,
        )
        .await?
        {
            let doc: String = r.try_get(0)?;
            if let Some(e) = read.get_mut(doc.as_str()) {
                e.anomalies.push(DayAnomaly {
                    doc_id: doc.as_str().into(),
                    pupil_id: r.try_get::<String, _>(1)?.into(),
                    device_id: r.try_get::<String, _>(2)?.into(),
                    kind: r.try_get::<String, _>(3)?.into(),
                    at: r.try_get(4)?,
                });
            }
        }
        for r in where_in(
            store,
            "SELECT DISTINCT doc_id, device_id FROM proj_check_outs WHERE doc_id IN",
            &ids,
        )
        .await?
        {
            let doc: String = r.try_get(0)?;
            if let Some(e) = read.get_mut(doc.as_str()) {
                e.devices.push(r.try_get(1)?);
            }
        }
        // Rows are kept under their token only if it is still the stored one after they
        // were read: a token that changed (or came back, after a database lost its last
        // commit) names other rows. Nothing is kept for a venue no one watches.
        let watched = store.day_rows.watched(venue);
        let still: HashMap<String, i64> = if !watched {
            HashMap::new()
        } else {
            where_in(
                store,
                "SELECT doc_id, token FROM records_writes WHERE doc_id IN",
                &ids,
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?
        };
        for (doc, token) in chunk {
            let day = Arc::new(BookingDay::sorted(read.remove(doc).unwrap_or_default()));
            store.day_rows.count(false);
            if let Some(t) = token
                && still.get(*doc) == Some(t)
            {
                store.day_rows.keep(doc, venue, *t, Arc::clone(&day));
            }
            out.push(((*doc).to_owned(), day));
        }
    }
    Ok(out)
}

/// Runs `sql` (ending in `WHERE … IN`) for the ids `ids`.
async fn where_in(store: &Store, sql: &str, ids: &[&str]) -> Result<Vec<AnyRow>> {
    let sql = format!("{sql} ({})", numbered(1, ids.len()));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.fetch_all(&store.pool).await?)
}

fn device_row(r: &AnyRow) -> Result<DayDevice> {
    Ok(DayDevice {
        device_id: r.try_get(0)?,
        role: r.try_get(1)?,
        last_sync_at: r.try_get(2)?,
        revoked: r.try_get::<Option<i64>, _>(3)?.is_some(),
        relevant: true,
        connected: false,
    })
}

/// The devices relevant to the day: the venue's staff's, the booked schools' teachers'
/// and those that scanned at the venue that day for a booking of another day, by id.
async fn day_devices(store: &Store, venue: &str, day: (i64, i64)) -> Result<Vec<DayDevice>> {
    // One indexed lookup per kind of relevance, not a scan of every device.
    let mut devices = day_query(store, concat!(
        device_columns!(),
        " WHERE d.id IN ( \
           SELECT ds.id FROM users us JOIN devices ds ON ds.user_id = us.id \
             WHERE us.role = 'venue_staff' AND us.venue_id = $1 \
           UNION SELECT dt.id FROM users ut JOIN devices dt ON dt.user_id = ut.id \
             WHERE ut.role = 'teacher' AND ut.school_id IN (SELECT bs.school_id FROM proj_bookings bs WHERE bs.doc_id IN (",
        day_bookings!(),
        ")) \
           UNION SELECT cv.device_id FROM proj_check_ins cv JOIN proj_bookings bv ON bv.doc_id = cv.doc_id \
             WHERE bv.venue_id = $1 AND cv.at >= $2 AND cv.at < $3 AND bv.doc_id NOT IN (",
        day_bookings!(),
        "))"
    ), venue, day, device_row)
    .await?;
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    Ok(devices)
}
