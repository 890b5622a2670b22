//! Edge boxes at venues (ADR 0150). Upstream: which users are edge boxes, and the roster
//! of a venue an edge serves. On the edge: the roster written into its own tables (so that
//! the devices' upstream tokens authenticate there) and the edge's own state.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

/// Everything an edge box needs to serve its venue's devices while cut off: the places
/// its users belong to, the users (no names), their devices with token hashes, and the
/// venue's booking documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The venue.
    pub venue: Uuid,
    /// (id, name) of the cities of the counties below.
    pub cities: Vec<(Uuid, String)>,
    /// (id, city, name) of the venue's county and of the schools' counties.
    pub counties: Vec<(Uuid, Uuid, String)>,
    /// (id, county, name) of the schools whose people may come.
    pub schools: Vec<(Uuid, Uuid, String)>,
    /// (id, county, name, kind) of the venue.
    pub venues: Vec<(Uuid, Uuid, String, String)>,
    /// The users.
    pub users: Vec<RosterUser>,
    /// Their devices.
    pub devices: Vec<RosterDevice>,
    /// Booking documents at the venue.
    pub docs: Vec<String>,
}

/// A user on an edge's roster (no display name: the edge shows pseudonyms only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterUser {
    /// The user.
    pub id: Uuid,
    /// `Role::as_str`.
    pub role: String,
    /// School of a pupil, teacher or volunteer.
    pub school: Option<Uuid>,
    /// Venue of venue staff.
    pub venue: Option<Uuid>,
    /// When the user was erased.
    pub erased_at: Option<i64>,
}

/// A device on an edge's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterDevice {
    /// The device.
    pub id: Uuid,
    /// Its user.
    pub user: Uuid,
    /// SHA-256 of its token, hex (the token itself never leaves the phone).
    pub token_hash: String,
    /// Enrollment time.
    pub created_at: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
}

/// The schools whose pupils, teachers and volunteers an edge serves: those with a booking
/// at the venue, and those in the venue's county (a teacher may request a first visit).
const SCHOOLS: &str = "SELECT id FROM schools WHERE county_id = $2 \
     OR id IN (SELECT school_id FROM proj_bookings WHERE venue_id = $1)";

impl Store {
    /// Marks `user` as the edge box of `venue`.
    ///
    /// # Errors
    /// Unknown user or venue, or a database failure.
    pub async fn mark_edge_user(&self, user: Uuid, venue: Uuid, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO edge_users (user_id, venue_id, created_at) VALUES ($1, $2, $3)")
            .bind(user.to_string())
            .bind(venue.to_string())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The venue whose edge box `user` is, if it is one.
    ///
    /// # Errors
    /// A database failure.
    pub async fn edge_venue(&self, user: Uuid) -> Result<Option<Uuid>> {
        let row = sqlx::query("SELECT venue_id FROM edge_users WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::uuid(&r, "venue_id", "edge_users"))
            .transpose()
    }

    /// The roster of `venue` for its edge box: the venue's staff (not its edge boxes) and
    /// the pupils, teachers and volunteers of [`SCHOOLS`], with their devices.
    ///
    /// # Errors
    /// Unknown venue, or a database failure.
    pub async fn edge_roster(&self, venue: Uuid) -> Result<Roster> {
        let v = sqlx::query("SELECT id, county_id, name, kind FROM venues WHERE id = $1")
            .bind(venue.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("venue", venue))?;
        let county = rows::uuid(&v, "county_id", "venues")?;
        let (vid, cid) = (venue.to_string(), county.to_string());
        let mut out = Roster {
            venue,
            venues: vec![(venue, county, v.try_get("name")?, v.try_get("kind")?)],
            ..Roster::default()
        };
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, county_id, name FROM schools WHERE id IN ({SCHOOLS})"
        )))
        .bind(&vid)
        .bind(&cid)
        .fetch_all(&self.pool)
        .await?
        {
            out.schools.push((
                rows::uuid(&r, "id", "schools")?,
                rows::uuid(&r, "county_id", "schools")?,
                r.try_get("name")?,
            ));
        }
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, city_id, name FROM counties WHERE id = $2 \
             OR id IN (SELECT county_id FROM schools WHERE id IN ({SCHOOLS}))"
        )))
        .bind(&vid)
        .bind(&cid)
        .fetch_all(&self.pool)
        .await?
        {
            out.counties.push((
                rows::uuid(&r, "id", "counties")?,
                rows::uuid(&r, "city_id", "counties")?,
                r.try_get("name")?,
            ));
        }
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, name FROM cities WHERE id IN (SELECT city_id FROM counties \
             WHERE id = $2 OR id IN (SELECT county_id FROM schools WHERE id IN ({SCHOOLS})))"
        )))
        .bind(&vid)
        .bind(&cid)
        .fetch_all(&self.pool)
        .await?
        {
            out.cities
                .push((rows::uuid(&r, "id", "cities")?, r.try_get("name")?));
        }
        let users = format!(
            "SELECT id FROM users WHERE (role = 'venue_staff' AND venue_id = $1 \
             AND id NOT IN (SELECT user_id FROM edge_users)) \
             OR (role IN ('pupil', 'teacher', 'volunteer') AND school_id IN ({SCHOOLS}))"
        );
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, role, school_id, venue_id, erased_at FROM users WHERE id IN ({users})"
        )))
        .bind(&vid)
        .bind(&cid)
        .fetch_all(&self.pool)
        .await?
        {
            out.users.push(RosterUser {
                id: rows::uuid(&r, "id", "users")?,
                role: r.try_get("role")?,
                school: rows::opt_uuid(&r, "school_id", "users")?,
                venue: rows::opt_uuid(&r, "venue_id", "users")?,
                erased_at: r.try_get("erased_at")?,
            });
        }
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, user_id, token_hash, created_at, revoked_at FROM devices \
             WHERE user_id IN ({users})"
        )))
        .bind(&vid)
        .bind(&cid)
        .fetch_all(&self.pool)
        .await?
        {
            let hash: Vec<u8> = r.try_get("token_hash")?;
            out.devices.push(RosterDevice {
                id: rows::uuid(&r, "id", "devices")?,
                user: rows::uuid(&r, "user_id", "devices")?,
                token_hash: hex::encode(hash),
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            });
        }
        for r in sqlx::query("SELECT doc_id FROM proj_bookings WHERE venue_id = $1")
            .bind(&vid)
            .fetch_all(&self.pool)
            .await?
        {
            out.docs.push(r.try_get("doc_id")?);
        }
        Ok(out)
    }

    /// On an edge box: writes the roster fetched from the upstream into the edge's own
    /// tables, in one transaction. Places and users are added; devices are added or
    /// updated (a revocation learned now counts from `now`, so that open connections of
    /// the device are closed by the revocation sweep).
    ///
    /// # Errors
    /// A malformed token hash, or a database failure (then nothing changed).
    pub async fn apply_edge_roster(&self, roster: &Roster, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (id, name) in &roster.cities {
            sqlx::query(
                "INSERT INTO cities (id, name, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (id, city, name) in &roster.counties {
            sqlx::query(
                "INSERT INTO counties (id, city_id, name, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(city.to_string())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (id, county, name) in &roster.schools {
            sqlx::query(
                "INSERT INTO schools (id, county_id, name, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(county.to_string())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (id, county, name, kind) in &roster.venues {
            sqlx::query(
                "INSERT INTO venues (id, county_id, name, kind, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(county.to_string())
            .bind(name)
            .bind(kind)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for u in &roster.users {
            kepu_sync_core::writer::Role::parse_user(&u.role)
                .map_err(|_| Error::InvalidInput("a roster user with an unknown role".into()))?;
            sqlx::query(
                "INSERT INTO users (id, role, school_id, venue_id, created_at, erased_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET erased_at = excluded.erased_at",
            )
            .bind(u.id.to_string())
            .bind(&u.role)
            .bind(u.school.map(|s| s.to_string()))
            .bind(u.venue.map(|v| v.to_string()))
            .bind(now)
            .bind(u.erased_at)
            .execute(&mut *tx)
            .await?;
        }
        for d in &roster.devices {
            let hash = hex::decode(&d.token_hash)
                .map_err(|_| Error::InvalidInput("a roster device with a bad token hash".into()))?;
            sqlx::query(
                "INSERT INTO devices (id, user_id, token_hash, created_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, CASE WHEN $5 = 1 THEN $6 ELSE NULL END) \
                 ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash, \
                 revoked_at = CASE WHEN $5 = 0 THEN NULL \
                 ELSE COALESCE(devices.revoked_at, $6) END",
            )
            .bind(d.id.to_string())
            .bind(d.user.to_string())
            .bind(hash)
            .bind(d.created_at)
            .bind(i64::from(d.revoked_at.is_some()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// On an edge box: one value of its state.
    ///
    /// # Errors
    /// A database failure.
    pub async fn edge_state(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM edge_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// On an edge box: sets one value of its state.
    ///
    /// # Errors
    /// A database failure.
    pub async fn set_edge_state(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO edge_state (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
