//! Writes and reads the records projected from documents (see `crate::records`).

use std::hash::Hash;
use std::sync::Arc;

use automerge::ChangeHash;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::SlotId;
use kepu_sync_core::rules::attendance::{Attendance, attendance};
use kepu_sync_core::rules::volunteer;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{Booking, Scan, Status};
use kepu_sync_core::schema::school_log::SchoolLog;
use kepu_sync_core::schema::venue::{Slot, Venue};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::day_rows::BookingDay;
use crate::store::documents::mark_projected_in;
use crate::store::written::{Pending, Table, TableRows, hash_of};

/// A booking request in a slot, as the capacity decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBooking {
    /// Booking document.
    pub doc: DocumentId,
    /// Places.
    pub party_size: u32,
    /// Current status.
    pub status: Status,
    /// Current wait-list position.
    pub wait_position: Option<u32>,
}

/// A booking row for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingRow {
    /// Document id (bs58check).
    pub doc_id: String,
    /// Venue.
    pub venue_id: String,
    /// Slot.
    pub slot_id: String,
    /// School.
    pub school_id: String,
    /// Places.
    pub party_size: i64,
    /// Status.
    pub status: String,
    /// Wait-list position.
    pub wait_position: Option<i64>,
    /// Roster size.
    pub expected: i64,
    /// Pupils arrived (each once).
    pub arrived: i64,
    /// Pupils inside now.
    pub inside_now: i64,
    /// Slot start (unix ms), if the slot is known.
    pub slot_start: Option<i64>,
}

/// One scan row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanRow {
    /// Pupil (pseudonymous).
    pub pupil_id: String,
    /// Device.
    pub device_id: String,
    /// Scan id.
    pub scan_id: String,
    /// Time.
    pub at: i64,
    /// Method.
    pub method: String,
    /// The scan that counts for this pupil.
    pub counted: bool,
}

/// One anomaly row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnomalyRow {
    /// Pupil.
    pub pupil_id: String,
    /// Device.
    pub device_id: String,
    /// Kind.
    pub kind: String,
    /// Time.
    pub at: i64,
}

/// One booking's attendance as the records hold it: its row, every check-in scan and its
/// anomalies, all from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingAttendance {
    /// The booking's row (counts included).
    pub booking: BookingRow,
    /// Every check-in scan, the one that counts marked.
    pub scans: Vec<ScanRow>,
    /// Anomalies.
    pub anomalies: Vec<AnomalyRow>,
}

/// One booking's records to write with others in one transaction
/// ([`Store::write_bookings_records`]).
#[derive(Debug, Clone, Copy)]
pub struct BookingWrite<'a> {
    /// The booking document.
    pub doc: DocumentId,
    /// Its records.
    pub booking: &'a Booking,
    /// The heads they were computed at, noted with them (`Store::mark_projected`).
    pub at: Option<&'a [ChangeHash]>,
}

/// Volunteer minutes for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolunteerHours {
    /// Volunteer user id.
    pub volunteer_id: String,
    /// Confirmed minutes.
    pub confirmed_minutes: i64,
    /// Minutes waiting for confirmation.
    pub unconfirmed_minutes: i64,
    /// Activities logged.
    pub activities: i64,
}

fn i(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Store {
    /// Replaces the records of a venue: its directory profile and its slots.
    ///
    /// # Errors
    /// A database failure.
    pub async fn write_venue_records(
        &self,
        doc: DocumentId,
        v: &Venue,
        now: i64,
        at: Option<&[ChangeHash]>,
    ) -> Result<()> {
        let id = doc.to_string();
        let mut tx = self.begin_records_write(&id).await?;
        let venue = v.venue.to_string();
        let profile = serde_json::json!({
            "profile": v.profile, "location": v.location, "after_school": v.after_school,
            "instruments": v.instruments, "updated_at": v.updated_at,
        });
        sqlx::query(
            "INSERT INTO proj_venues (venue_id, doc_id, profile_json, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (venue_id) DO UPDATE SET doc_id = excluded.doc_id, profile_json = excluded.profile_json, updated_at = excluded.updated_at",
        )
        .bind(&venue)
        .bind(&id)
        .bind(profile.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM proj_slots WHERE venue_id = $1")
            .bind(&venue)
            .execute(&mut *tx)
            .await?;
        for s in &v.slots {
            sqlx::query("INSERT INTO proj_slots (slot_id, venue_id, start_ms, end_ms, capacity, label) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(s.id.to_string())
                .bind(&venue)
                .bind(s.start)
                .bind(s.end)
                .bind(i64::from(s.capacity))
                .bind(&s.label)
                .execute(&mut *tx)
                .await?;
        }
        mark_projected_in(tx.tx(), &id, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the records of a booking in one transaction: its row (keeping the arrival
    /// number it got when first written), roster, check-in and check-out scans and
    /// anomalies, with the attendance computed against its slot as recorded. True when
    /// what its slot's capacity decision reads of it (slot, party size, status, place on
    /// the wait list) changed since this process last wrote it, or it does not know: the
    /// decision is due again (ADR 0188). Check-ins alone change none of it.
    ///
    /// # Errors
    /// A database failure.
    pub async fn write_booking_records(
        &self,
        doc: DocumentId,
        b: &Booking,
        now: i64,
        at: Option<&[ChangeHash]>,
    ) -> Result<bool> {
        let due = self
            .write_bookings_records(
                &[BookingWrite {
                    doc,
                    booking: b,
                    at,
                }],
                now,
            )
            .await?;
        Ok(due.first().copied().unwrap_or(true))
    }

    /// Replaces the records of several bookings in one transaction (ADR 0190), each as
    /// [`Store::write_booking_records`] does; one answer per booking, in their order.
    /// When it fails nothing of it is written, and what this process remembers of those
    /// bookings is forgotten (their next write replaces every row).
    ///
    /// # Errors
    /// A database failure.
    pub async fn write_bookings_records(
        &self,
        writes: &[BookingWrite<'_>],
        now: i64,
    ) -> Result<Vec<bool>> {
        let ids: Vec<String> = writes.iter().map(|w| w.doc.to_string()).collect();
        let locks: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut tx = self.begin_records_write_many(&locks).await?;
        let mut pending = Vec::with_capacity(writes.len());
        for (w, id) in writes.iter().zip(&ids) {
            pending.push(
                self.booking_records_in(&mut tx, id, w.booking, now, w.at)
                    .await?,
            );
        }
        // The dashboard's rows are kept before the commit, with the token it stores: a
        // dashboard that reads the token once it is committed finds them, and one that
        // reads the token before finds the rows kept with it (ADR 0193).
        let mut pending_only = Vec::with_capacity(pending.len());
        for ((p, day), (w, id)) in pending.into_iter().zip(writes.iter().zip(&ids)) {
            if let Some(day) = day {
                let venue = w.booking.venue.to_string();
                self.day_rows.keep(id, &venue, p.token(), day);
            }
            pending_only.push(p);
        }
        tx.commit().await?;
        Ok(pending_only
            .into_iter()
            .map(|p| {
                let due = p.decision_due;
                p.committed();
                due
            })
            .collect())
    }

    /// Writes one booking's records in `tx`; what it wrote is remembered once the
    /// transaction commits, with the dashboard's rows of it when its venue is watched
    /// (ADR 0193).
    async fn booking_records_in(
        &self,
        tx: &mut super::WriteTx,
        id: &str,
        b: &Booking,
        now: i64,
        at: Option<&[ChangeHash]>,
    ) -> Result<(Pending<'_>, Option<Arc<BookingDay>>)> {
        let slot = slot_of(tx.tx(), b.slot).await?;
        let a = attendance(b, slot.as_ref());
        // A booking already numbered keeps its arrival number: its row is updated in
        // place, one statement (it was a read, a delete and an insert for every write).
        let updated = bind_booking(
            sqlx::query(
                "UPDATE proj_bookings SET venue_id = $2, slot_id = $3, school_id = $4, party_size = $5, \
                 status = $6, wait_position = $7, requested_at = $8, expected = $9, arrived = $10, \
                 inside_now = $11, updated_at = $12, roster_key = $13 WHERE doc_id = $1",
            ),
            id,
            b,
            &a,
            now,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated == 0 {
            if self.backend == super::Backend::Postgres {
                // Nodes number arrivals one at a time: the next number is read once
                // the other node's numbered booking is committed.
                sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
                    .bind(crate::cluster::ARRIVAL_LOCK_SPACE)
                    .execute(&mut **tx)
                    .await?;
            }
            let seq = sqlx::query("SELECT COALESCE(MAX(received_seq), 0) + 1 FROM proj_bookings")
                .fetch_one(&mut **tx)
                .await?
                .try_get::<i64, _>(0)?;
            bind_booking(
                sqlx::query(
                    "INSERT INTO proj_bookings (doc_id, venue_id, slot_id, school_id, party_size, status, \
                     wait_position, requested_at, expected, arrived, inside_now, updated_at, roster_key, \
                     received_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                ),
                id,
                b,
                &a,
                now,
            )
            .bind(seq)
            .execute(&mut **tx)
            .await?;
        }
        let tables = booking_tables(id, b, &a);
        let day = self
            .day_rows
            .watched(&b.venue.to_string())
            .then(|| Arc::new(BookingDay::of(id, b, &a)));
        let decided_on = hash_of(|h| {
            (b.slot.0, b.party_size, b.status.as_str(), b.wait_position).hash(h);
        });
        let pending = self.written.write(tx, id, tables, decided_on).await?;
        mark_projected_in(tx.tx(), id, at).await?;
        Ok((pending, day))
    }

    /// Forgets what this process wrote of a booking's records: its next write replaces
    /// every row and asks for its slot's decision again (a decision that failed).
    pub fn forget_written(&self, doc: DocumentId) {
        self.written.forget(&doc.to_string());
    }

    /// Replaces the per-activity records of a volunteer's log.
    ///
    /// # Errors
    /// A database failure.
    pub async fn write_activity_records(
        &self,
        doc: DocumentId,
        log: &ActivityLog,
        at: Option<&[ChangeHash]>,
    ) -> Result<()> {
        let id = doc.to_string();
        let mut tx = self.begin_records_write(&id).await?;
        sqlx::query("DELETE FROM proj_activities WHERE doc_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        for a in &log.activities {
            let outcome = volunteer::outcome(log, a);
            sqlx::query(
                "INSERT INTO proj_activities (doc_id, activity_id, volunteer_id, school_id, venue_id, activity_kind, \
                 start_ms, minutes, status, confirmed_minutes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&id)
            .bind(&a.id)
            .bind(log.volunteer.to_string())
            .bind(log.school.map(|s| s.to_string()))
            .bind(a.venue.to_string())
            .bind(&a.activity_kind)
            .bind(a.start)
            .bind(i64::from(a.minutes))
            .bind(outcome.as_str())
            .bind(i(outcome.confirmed_minutes()))
            .execute(&mut *tx)
            .await?;
        }
        mark_projected_in(tx.tx(), &id, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the records of a school's year.
    ///
    /// # Errors
    /// A database failure.
    pub async fn write_school_log_records(
        &self,
        doc: DocumentId,
        log: &SchoolLog,
        at: Option<&[ChangeHash]>,
    ) -> Result<()> {
        let id = doc.to_string();
        let mut tx = self.begin_records_write(&id).await?;
        write_school_log(tx.tx(), &id, log).await?;
        mark_projected_in(tx.tx(), &id, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Slots with bookings still requested or wait-listed: those a node that has just
    /// become the leader decides (what was reported while no node led is not lost).
    ///
    /// # Errors
    /// A database failure.
    pub async fn slots_to_decide(&self) -> Result<Vec<SlotId>> {
        Ok(sqlx::query(
            "SELECT DISTINCT slot_id FROM proj_bookings WHERE status IN ('requested', 'waitlisted')",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok()?.parse().ok().map(SlotId))
        .collect())
    }

    /// A slot's capacity and its bookings in the order the server received them.
    ///
    /// # Errors
    /// A database failure.
    pub async fn slot_bookings(&self, slot: SlotId) -> Result<Option<(u32, Vec<SlotBooking>)>> {
        let cap: Option<i64> = sqlx::query("SELECT capacity FROM proj_slots WHERE slot_id = $1")
            .bind(slot.to_string())
            .fetch_optional(&self.pool)
            .await?
            .and_then(|r| r.try_get(0).ok());
        let Some(cap) = cap else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT doc_id, party_size, status, wait_position FROM proj_bookings WHERE slot_id = $1 ORDER BY received_seq")
            .bind(slot.to_string())
            .fetch_all(&self.pool)
            .await?;
        let bookings = rows
            .into_iter()
            .filter_map(|r| {
                Some(SlotBooking {
                    doc: r.try_get::<String, _>(0).ok()?.parse().ok()?,
                    party_size: u32::try_from(r.try_get::<i64, _>(1).ok()?).ok()?,
                    status: Status::parse(&r.try_get::<String, _>(2).ok()?)?,
                    wait_position: r
                        .try_get::<Option<i64>, _>(3)
                        .ok()
                        .flatten()
                        .and_then(|w| u32::try_from(w).ok()),
                })
            })
            .collect();
        Ok(Some((u32::try_from(cap).unwrap_or(0), bookings)))
    }

    /// Bookings, optionally of one school and/or venue, in the order the server received
    /// them.
    ///
    /// # Errors
    /// A database failure.
    pub async fn bookings(
        &self,
        school: Option<&str>,
        venue: Option<&str>,
    ) -> Result<Vec<BookingRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{BOOKING_COLUMNS} WHERE ($1 = '' OR b.school_id = $1) AND ($2 = '' OR b.venue_id = $2) ORDER BY b.received_seq"
        )))
        .bind(school.unwrap_or(""))
        .bind(venue.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(booking_row).collect()
    }

    /// The pupils on a booking's roster (pseudonymous ids), in id order; empty for an
    /// unknown booking.
    ///
    /// # Errors
    /// A database failure, or a stored id that is not a uuid.
    pub async fn booking_roster(&self, doc: &str) -> Result<Vec<Uuid>> {
        let mut pupils = sqlx::query("SELECT pupil_id FROM proj_rosters WHERE doc_id = $1")
            .bind(doc)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                r.try_get::<String, _>(0)?
                    .parse()
                    .map_err(|_| Error::Corrupt("proj_rosters"))
            })
            .collect::<Result<Vec<Uuid>>>()?;
        // The order of the ids, not of the database's text collation.
        pupils.sort_unstable();
        Ok(pupils)
    }

    /// One booking's row, scans and anomalies, read from one snapshot of the database, so
    /// that the counts in the row always agree with the scans beside them even while the
    /// booking's records are being rewritten. `None` for an unknown booking.
    ///
    /// # Errors
    /// A database failure.
    pub async fn booking_attendance(&self, doc: &str) -> Result<Option<BookingAttendance>> {
        let mut tx = self.begin_read().await?;
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{BOOKING_COLUMNS} WHERE b.doc_id = $1"
        )))
        .bind(doc)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let booking = booking_row(&row)?;
        let scans = sqlx::query(SCAN_QUERY)
            .bind(doc)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(scan_row)
            .collect::<Result<_>>()?;
        let anomalies = sqlx::query(ANOMALY_QUERY)
            .bind(doc)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(anomaly_row)
            .collect::<Result<_>>()?;
        tx.commit().await?;
        Ok(Some(BookingAttendance {
            booking,
            scans,
            anomalies,
        }))
    }

    /// Every check-in scan of a booking, the one that counts marked.
    ///
    /// # Errors
    /// A database failure.
    pub async fn booking_scans(&self, doc: &str) -> Result<Vec<ScanRow>> {
        let rows = sqlx::query(SCAN_QUERY)
            .bind(doc)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(scan_row).collect()
    }

    /// Anomalies of a booking.
    ///
    /// # Errors
    /// A database failure.
    pub async fn booking_anomalies(&self, doc: &str) -> Result<Vec<AnomalyRow>> {
        let rows = sqlx::query(ANOMALY_QUERY)
            .bind(doc)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(anomaly_row).collect()
    }

    /// Confirmed and unconfirmed minutes per volunteer, optionally of one school.
    ///
    /// # Errors
    /// A database failure.
    pub async fn volunteer_hours(&self, school: Option<&str>) -> Result<Vec<VolunteerHours>> {
        self.volunteer_hours_at(school, None).await
    }

    /// Confirmed and unconfirmed minutes per volunteer, counting only activities of one
    /// school and/or logged at one venue.
    ///
    /// # Errors
    /// A database failure.
    pub async fn volunteer_hours_at(
        &self,
        school: Option<&str>,
        venue: Option<&str>,
    ) -> Result<Vec<VolunteerHours>> {
        let rows = sqlx::query(
            // SUM of BIGINT is NUMERIC on PostgreSQL, which the `Any` driver cannot decode.
            "SELECT volunteer_id, \
             CAST(COALESCE(SUM(confirmed_minutes), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'unconfirmed' THEN minutes ELSE 0 END), 0) AS BIGINT), \
             CAST(COUNT(*) AS BIGINT) \
             FROM proj_activities WHERE ($1 = '' OR school_id = $1) AND ($2 = '' OR venue_id = $2) \
             GROUP BY volunteer_id ORDER BY volunteer_id",
        )
        .bind(school.unwrap_or(""))
        .bind(venue.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(VolunteerHours {
                    volunteer_id: r.try_get(0)?,
                    confirmed_minutes: r.try_get(1)?,
                    unconfirmed_minutes: r.try_get(2)?,
                    activities: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Removes every record row (before a rebuild).
    ///
    /// # Errors
    /// A database failure.
    pub async fn clear_records(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for t in [
            "proj_venues",
            "proj_slots",
            "proj_bookings",
            "proj_rosters",
            "proj_check_ins",
            "proj_check_outs",
            "proj_anomalies",
            "proj_activities",
            "proj_school_logs",
            "proj_school_sessions",
            "proj_lectures",
            "proj_tour_stops",
            "proj_tour_attendance",
            "records_writes",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.written.forget_all();
        Ok(())
    }
}

/// Replaces the rows of one school-log document: the log itself, its sessions, lectures,
/// tour stops and the pupils who attended each stop (once per pupil, whatever devices
/// recorded them).
async fn write_school_log(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    log: &SchoolLog,
) -> Result<()> {
    for t in [
        "proj_school_logs",
        "proj_school_sessions",
        "proj_lectures",
        "proj_tour_stops",
        "proj_tour_attendance",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {t} WHERE doc_id = $1"
        )))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    let school = log.school.to_string();
    sqlx::query("INSERT INTO proj_school_logs (doc_id, school_id, year) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&school)
        .bind(log.year)
        .execute(&mut **tx)
        .await?;
    for (table, entries) in [
        ("proj_school_sessions", &log.sessions),
        ("proj_lectures", &log.lectures),
    ] {
        for e in entries {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (doc_id, entry_id, school_id, at, minutes, topic) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
            )))
            .bind(id)
            .bind(&e.id)
            .bind(&school)
            .bind(e.at)
            .bind(i64::from(e.amount))
            .bind(&e.title)
            .execute(&mut **tx)
            .await?;
        }
    }
    for e in &log.tour_stops {
        sqlx::query(
            "INSERT INTO proj_tour_stops (doc_id, stop_id, school_id, at, days, title) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(&e.id)
        .bind(&school)
        .bind(e.at)
        .bind(i64::from(e.amount))
        .bind(&e.title)
        .execute(&mut **tx)
        .await?;
    }
    for (stop, pupils) in &log.tour_attendance {
        for pupil in pupils {
            sqlx::query(
                "INSERT INTO proj_tour_attendance (doc_id, stop_id, pupil_id) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(stop)
            .bind(pupil.to_string())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Binds a booking's row of `proj_bookings` as `$1` to `$13`: `doc_id`, venue, slot,
/// school, party size, status, wait-list place, requested at, expected, arrived, inside
/// now, updated at, roster key.
fn bind_booking<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    id: &str,
    b: &Booking,
    a: &Attendance,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(id.to_owned())
        .bind(b.venue.to_string())
        .bind(b.slot.to_string())
        .bind(b.school.to_string())
        .bind(i64::from(b.party_size))
        .bind(b.status.as_str())
        .bind(b.wait_position.map(i64::from))
        .bind(b.requested_at)
        .bind(i(a.expected))
        .bind(i(a.arrived))
        .bind(i(a.inside_now))
        .bind(now)
        .bind(roster_key(b))
}

async fn slot_of(tx: &mut sqlx::Transaction<'_, sqlx::Any>, slot: SlotId) -> Result<Option<Slot>> {
    let row =
        sqlx::query("SELECT start_ms, end_ms, capacity, label FROM proj_slots WHERE slot_id = $1")
            .bind(slot.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.and_then(|r| {
        Some(Slot {
            id: slot,
            start: r.try_get(0).ok()?,
            end: r.try_get(1).ok()?,
            capacity: u32::try_from(r.try_get::<i64, _>(2).ok()?).ok()?,
            label: r.try_get(3).ok()?,
        })
    }))
}

/// A key of the pupils on a booking's roster (ADR 0185): the same on every node and in
/// every version for the same pupils, different (but for a 2⁻⁶⁴ chance) when one is
/// added, removed or swapped for another. When they were added does not count: the
/// dashboard shows only who.
fn roster_key(b: &Booking) -> i64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for pupil in b.roster.keys() {
        hash.update(pupil.0.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// The columns of a [`BookingRow`], with its slot's start.
const BOOKING_COLUMNS: &str = "SELECT b.doc_id, b.venue_id, b.slot_id, b.school_id, b.party_size, b.status, b.wait_position, \
     b.expected, b.arrived, b.inside_now, s.start_ms FROM proj_bookings b LEFT JOIN proj_slots s ON s.slot_id = b.slot_id";

/// A booking's check-in scans, as [`ScanRow`]s.
const SCAN_QUERY: &str = "SELECT pupil_id, device_id, scan_id, at, method, counted FROM proj_check_ins WHERE doc_id = $1 ORDER BY pupil_id, at, device_id, scan_id";

/// A booking's anomalies, as [`AnomalyRow`]s.
const ANOMALY_QUERY: &str = "SELECT pupil_id, device_id, kind, at FROM proj_anomalies WHERE doc_id = $1 ORDER BY at, pupil_id, kind";

fn booking_row(r: &sqlx::any::AnyRow) -> Result<BookingRow> {
    Ok(BookingRow {
        doc_id: r.try_get(0)?,
        venue_id: r.try_get(1)?,
        slot_id: r.try_get(2)?,
        school_id: r.try_get(3)?,
        party_size: r.try_get(4)?,
        status: r.try_get(5)?,
        wait_position: r.try_get(6)?,
        expected: r.try_get(7)?,
        arrived: r.try_get(8)?,
        inside_now: r.try_get(9)?,
        slot_start: r.try_get(10)?,
    })
}

fn scan_row(r: &sqlx::any::AnyRow) -> Result<ScanRow> {
    Ok(ScanRow {
        pupil_id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        scan_id: r.try_get(2)?,
        at: r.try_get(3)?,
        method: r.try_get(4)?,
        counted: r.try_get::<i64, _>(5)? != 0,
    })
}

fn anomaly_row(r: &sqlx::any::AnyRow) -> Result<AnomalyRow> {
    Ok(AnomalyRow {
        pupil_id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        at: r.try_get(3)?,
    })
}

static ROSTERS: Table = Table {
    insert: "INSERT INTO proj_rosters (doc_id, pupil_id, added_at) VALUES",
    tail: "",
    delete_all: "DELETE FROM proj_rosters WHERE doc_id = $1",
    delete_one: "DELETE FROM proj_rosters WHERE doc_id = $1 AND pupil_id = $2",
    width: 3,
    key: &[1],
};

static CHECK_INS: Table = Table {
    insert: "INSERT INTO proj_check_ins (doc_id, pupil_id, device_id, scan_id, at, method, counted) VALUES",
    tail: "",
    delete_all: "DELETE FROM proj_check_ins WHERE doc_id = $1",
    delete_one: "DELETE FROM proj_check_ins WHERE doc_id = $1 AND device_id = $2 AND scan_id = $3",
    width: 7,
    key: &[2, 3],
};

static CHECK_OUTS: Table = Table {
    insert: "INSERT INTO proj_check_outs (doc_id, pupil_id, device_id, scan_id, at) VALUES",
    tail: "",
    delete_all: "DELETE FROM proj_check_outs WHERE doc_id = $1",
    delete_one: "DELETE FROM proj_check_outs WHERE doc_id = $1 AND device_id = $2 AND scan_id = $3",
    width: 5,
    key: &[2, 3],
};

static ANOMALIES: Table = Table {
    insert: "INSERT INTO proj_anomalies (doc_id, pupil_id, device_id, kind, at) VALUES",
    tail: "",
    delete_all: "DELETE FROM proj_anomalies WHERE doc_id = $1",
    delete_one: "DELETE FROM proj_anomalies WHERE doc_id = $1 AND pupil_id = $2 AND kind = $3",
    width: 5,
    key: &[1, 3],
};

/// A booking's roster, check-in and check-out scans and anomalies as rows, in the order
/// [`crate::store::written`] remembers them. Each row is hashed from its typed values; its
/// column values are built only if it is written (ADR 0195).
fn booking_tables<'a>(
    id: &'a str,
    b: &'a Booking,
    a: &'a kepu_sync_core::rules::attendance::Attendance,
) -> Vec<TableRows<'a>> {
    let roster = TableRows::of(
        &ROSTERS,
        b.roster.iter().collect(),
        |(pupil, _)| hash_of(|h| pupil.hash(h)),
        |row| hash_of(|h| row.hash(h)),
        move |(pupil, added_at), out| {
            out.extend([id.into(), pupil.to_string().into(), (**added_at).into()]);
        },
    );
    let scans: Vec<(&Scan, i64)> = a
        .pupils
        .iter()
        .flat_map(|p| {
            p.counted
                .iter()
                .map(|s| (s, 1i64))
                .chain(p.duplicates.iter().map(|s| (s, 0i64)))
        })
        .collect();
    let check_ins = TableRows::of(
        &CHECK_INS,
        scans,
        |(s, _)| hash_of(|h| (s.device, &s.scan_id).hash(h)),
        |(s, counted)| {
            let method = s.method.as_str();
            hash_of(|h| (s.pupil, s.device, &s.scan_id, s.at, method, counted).hash(h))
        },
        move |(s, counted), out| {
            out.extend([
                id.into(),
                s.pupil.to_string().into(),
                s.device.to_string().into(),
                s.scan_id.as_str().into(),
                s.at.into(),
                s.method.as_str().into(),
                (*counted).into(),
            ]);
        },
    );
    let check_outs = TableRows::of(
        &CHECK_OUTS,
        b.check_outs.iter().collect(),
        |s| hash_of(|h| (s.device, &s.scan_id).hash(h)),
        |s| hash_of(|h| (s.pupil, s.device, &s.scan_id, s.at).hash(h)),
        move |s, out| {
            out.extend([
                id.into(),
                s.pupil.to_string().into(),
                s.device.to_string().into(),
                s.scan_id.as_str().into(),
                s.at.into(),
            ]);
        },
    );
    let anomalies = TableRows::of(
        &ANOMALIES,
        a.anomalies.iter().collect(),
        |an| hash_of(|h| (an.pupil, an.kind.as_str()).hash(h)),
        |an| hash_of(|h| (an.pupil, an.device, an.kind.as_str(), an.at).hash(h)),
        move |an, out| {
            out.extend([
                id.into(),
                an.pupil.to_string().into(),
                an.device.to_string().into(),
                an.kind.as_str().into(),
                an.at.into(),
            ]);
        },
    );
    vec![roster, check_ins, check_outs, anomalies]
}
