//! The dashboard's reads: one venue-day from the records, the devices around it and the
//! rosters of its bookings. The same SQL runs on SQLite and PostgreSQL.

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::schema::booking::Booking;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::{AnomalyRow, BookingRow, Day, DeviceRow, Rows, ScanRow, SlotRow};
use crate::error::{Error, Result};
use crate::store::Store;

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
    day: Day,
    row: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Vec<T>> {
    let (start, end) = day.bounds();
    sqlx::query(sql)
        .bind(venue)
        .bind(start)
        .bind(end)
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(row)
        .collect()
}

/// The venue's name, `None` if there is no such venue.
pub(super) async fn venue_name(store: &Store, venue: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT name FROM venues WHERE id = $1")
        .bind(venue.to_string())
        .fetch_optional(store.pool())
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// Everything but the rosters and the venue name.
pub(super) async fn day_rows(store: &Store, venue: Uuid, day: Day, names: bool) -> Result<Rows> {
    let v = venue.to_string();

    let slots = day_query(
        store,
        "SELECT slot_id, start_ms, end_ms, capacity, label FROM proj_slots \
         WHERE venue_id = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY start_ms, slot_id",
        &v,
        day,
        |r| {
            Ok(SlotRow {
                slot_id: r.try_get(0)?,
                start: r.try_get(1)?,
                end: r.try_get(2)?,
                capacity: r.try_get(3)?,
                label: r.try_get(4)?,
            })
        },
    )
    .await?;

    let bookings = day_query(store,
        "SELECT b.doc_id, b.slot_id, b.school_id, sc.name, b.party_size, b.status, b.wait_position, \
         b.expected, b.arrived, b.inside_now, b.updated_at \
         FROM proj_bookings b JOIN proj_slots s ON s.slot_id = b.slot_id AND s.venue_id = b.venue_id \
         LEFT JOIN schools sc ON sc.id = b.school_id \
         WHERE b.venue_id = $1 AND s.start_ms >= $2 AND s.start_ms < $3 \
         ORDER BY s.start_ms, b.received_seq", &v, day, |r| {
        Ok(BookingRow {
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
        })
    })
    .await?;

    let scans = day_query(store, concat!(
        "SELECT c.doc_id, c.pupil_id, c.device_id, c.at, c.method, c.counted FROM proj_check_ins c \
         WHERE c.doc_id IN (",
        day_bookings!(),
        ") ORDER BY c.doc_id, c.pupil_id, c.at, c.device_id, c.scan_id"
    ), &v, day, |r| {
        Ok(ScanRow {
            doc_id: r.try_get(0)?,
            pupil_id: r.try_get(1)?,
            device_id: r.try_get(2)?,
            at: r.try_get(3)?,
            method: r.try_get(4)?,
            counted: r.try_get::<i64, _>(5)? != 0,
        })
    })
    .await?;

    let anomalies = day_query(
        store,
        concat!(
            "SELECT a.doc_id, a.pupil_id, a.device_id, a.kind, a.at FROM proj_anomalies a \
         WHERE a.doc_id IN (",
            day_bookings!(),
            ") ORDER BY a.at, a.pupil_id, a.kind"
        ),
        &v,
        day,
        |r| {
            Ok(AnomalyRow {
                doc_id: r.try_get(0)?,
                pupil_id: r.try_get(1)?,
                device_id: r.try_get(2)?,
                kind: r.try_get(3)?,
                at: r.try_get(4)?,
            })
        },
    )
    .await?;

    // Relevant: the venue's staff, teachers of the schools booked that day, and every
    // device that scanned (in or out) for the day's bookings or at the venue that day.
    // One indexed lookup per kind of relevance, not a scan of every device.
    let devices = day_query(store, concat!(
        "SELECT d.id, u.role, d.last_sync_at, d.revoked_at FROM devices d JOIN users u ON u.id = d.user_id \
         WHERE d.id IN ( \
           SELECT ds.id FROM users us JOIN devices ds ON ds.user_id = us.id \
             WHERE us.role = 'venue_staff' AND us.venue_id = $1 \
           UNION SELECT dt.id FROM users ut JOIN devices dt ON dt.user_id = ut.id \
             WHERE ut.role = 'teacher' AND ut.school_id IN (SELECT bs.school_id FROM proj_bookings bs WHERE bs.doc_id IN (",
        day_bookings!(),
        ")) \
           UNION SELECT c.device_id FROM proj_check_ins c WHERE c.doc_id IN (",
        day_bookings!(),
        ") \
           UNION SELECT o.device_id FROM proj_check_outs o WHERE o.doc_id IN (",
        day_bookings!(),
        ") \
           UNION SELECT cv.device_id FROM proj_check_ins cv JOIN proj_bookings bv ON bv.doc_id = cv.doc_id \
             WHERE bv.venue_id = $1 AND cv.at >= $2 AND cv.at < $3) \
         ORDER BY d.id"
    ), &v, day, |r| {
        Ok(DeviceRow {
            device_id: r.try_get(0)?,
            role: r.try_get(1)?,
            last_sync_at: r.try_get(2)?,
            revoked: r.try_get::<Option<i64>, _>(3)?.is_some(),
            relevant: true,
            connected: false,
        })
    })
    .await?;

    let mut names_by_pupil = std::collections::HashMap::new();
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

    Ok(Rows {
        venue_name: String::new(),
        slots,
        bookings,
        rosters: std::collections::HashMap::new(),
        scans,
        anomalies,
        devices,
        names: names_by_pupil,
    })
}

/// The pupils on a booking's roster, read from its stored document.
pub(super) async fn roster(store: &Store, doc: &str) -> Result<Vec<Uuid>> {
    let id: DocumentId = doc.parse().map_err(|_| Error::Corrupt("proj_bookings"))?;
    let merged = crate::records::load(store, id).await?;
    Ok(Booking::read(&merged)
        .map(|b| b.roster.keys().map(|p| p.0).collect())
        .unwrap_or_default())
}
