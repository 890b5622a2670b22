//! The fleet page's reads (every device with its place, version, sync and refusals) and
//! the minimum app version per role.

use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::writer::Role;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

/// Which devices a fleet read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetQuery {
    /// Only the venue staff devices of this venue (a venue's own staff); `None`: all.
    pub venue: Option<Uuid>,
    /// Only devices that never synced or last synced before this time (unix ms).
    pub synced_before: Option<i64>,
    /// Only devices with a refusal recorded at or after this time (unix ms).
    pub refused_since: Option<i64>,
    /// At most this many devices, those silent longest first.
    pub limit: i64,
}

/// One device as the fleet page shows it: no user names, only its role and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDevice {
    /// The device.
    pub id: Uuid,
    /// Its user's role.
    pub role: Role,
    /// The user's school's name.
    pub school: Option<String>,
    /// The user's venue.
    pub venue_id: Option<Uuid>,
    /// The venue's name.
    pub venue: Option<String>,
    /// The app version it last reported.
    pub app_version: Option<String>,
    /// Enrollment time (unix ms).
    pub created_at: i64,
    /// Revocation time (unix ms), if revoked (or its user erased).
    pub revoked_at: Option<i64>,
    /// Last sync (unix ms), if it ever synced.
    pub last_sync_at: Option<i64>,
    /// Refusals the device has not acknowledged.
    pub pending_refusals: i64,
    /// Local changes the device said were waiting when it last connected.
    pub pending_changes: Option<i64>,
}

/// How often a device was refused with one code since a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalTally {
    /// The device.
    pub device_id: Uuid,
    /// The code.
    pub code: RefusalCode,
    /// How many refusals.
    pub count: i64,
    /// The latest (unix ms).
    pub last_at: i64,
}

/// The columns of [`FleetDevice`] and the tables they come from.
macro_rules! fleet_columns {
    () => {
        "SELECT d.id, u.role, s.name AS school_name, u.venue_id, \
     v.name AS venue_name, d.app_version, d.created_at, \
     COALESCE(d.revoked_at, u.erased_at) AS revoked_at, d.last_sync_at, d.pending_refusals, \
     d.pending_changes FROM devices d JOIN users u ON u.id = d.user_id \
     LEFT JOIN schools s ON s.id = u.school_id LEFT JOIN venues v ON v.id = u.venue_id"
    };
}

fn fleet_device(row: &AnyRow) -> Result<FleetDevice> {
    let role: String = row.try_get("role")?;
    Ok(FleetDevice {
        id: rows::uuid(row, "id", "devices")?,
        role: Role::parse_user(&role).map_err(|_| Error::Corrupt("users"))?,
        school: row.try_get("school_name")?,
        venue_id: rows::opt_uuid(row, "venue_id", "users")?,
        venue: row.try_get("venue_name")?,
        app_version: row.try_get("app_version")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_sync_at: row.try_get("last_sync_at")?,
        pending_refusals: row.try_get("pending_refusals")?,
        pending_changes: row.try_get("pending_changes")?,
    })
}

impl Store {
    /// The devices `query` selects, those silent longest first (never synced before
    /// all), then by id.
    ///
    /// # Errors
    /// A database failure.
    pub async fn fleet_devices(&self, query: &FleetQuery) -> Result<Vec<FleetDevice>> {
        let rows = sqlx::query(concat!(
            fleet_columns!(),
            " WHERE ($1 IS NULL OR (u.role = 'venue_staff' AND u.venue_id = $1)) \
             AND ($2 IS NULL OR d.last_sync_at IS NULL OR d.last_sync_at < $2) \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM refusals r \
             WHERE r.device_id = d.id AND r.at >= $3)) \
             ORDER BY COALESCE(d.last_sync_at, -1), d.id LIMIT $4"
        ))
        .bind(query.venue.map(|v| v.to_string()))
        .bind(query.synced_before)
        .bind(query.refused_since)
        .bind(query.limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(fleet_device).collect()
    }

    /// One device as the fleet page shows it.
    ///
    /// # Errors
    /// A database failure.
    pub async fn fleet_device(&self, device_id: Uuid) -> Result<Option<FleetDevice>> {
        let row = sqlx::query(concat!(fleet_columns!(), " WHERE d.id = $1"))
            .bind(device_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(fleet_device).transpose()
    }

    /// Refusals since `since` (unix ms), counted per device and code; of one venue's
    /// staff devices only if `venue` is given.
    ///
    /// # Errors
    /// A database failure.
    pub async fn fleet_refusals(
        &self,
        venue: Option<Uuid>,
        since: i64,
    ) -> Result<Vec<RefusalTally>> {
        let rows = sqlx::query(
            "SELECT r.device_id, r.code, COUNT(*) AS n, MAX(r.at) AS last_at FROM refusals r \
             JOIN devices d ON d.id = r.device_id JOIN users u ON u.id = d.user_id \
             WHERE ($1 IS NULL OR (u.role = 'venue_staff' AND u.venue_id = $1)) \
             AND r.at >= $2 GROUP BY r.device_id, r.code",
        )
        .bind(venue.map(|v| v.to_string()))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RefusalTally {
                    device_id: rows::uuid(row, "device_id", "refusals")?,
                    code: RefusalCode::parse(row.try_get("code")?),
                    count: row.try_get("n")?,
                    last_at: row.try_get("last_at")?,
                })
            })
            .collect()
    }

    /// The minimum app version of every role that has one.
    ///
    /// # Errors
    /// A database failure, or a role the server does not know.
    pub async fn min_app_versions(&self) -> Result<Vec<(Role, String)>> {
        let rows = sqlx::query("SELECT role, version FROM min_app_versions ORDER BY role")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get("role")?;
                Ok((
                    Role::parse_user(&role).map_err(|_| Error::Corrupt("min_app_versions"))?,
                    row.try_get("version")?,
                ))
            })
            .collect()
    }

    /// Sets (or with `None` clears) a role's minimum app version. The caller checked
    /// the version's form.
    ///
    /// # Errors
    /// A database failure.
    pub async fn set_min_app_version(
        &self,
        role: Role,
        version: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM min_app_versions WHERE role = $1")
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        if let Some(version) = version {
            sqlx::query("INSERT INTO min_app_versions (role, version, set_at) VALUES ($1, $2, $3)")
                .bind(role.as_str())
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records what a device reported when it connected: its app version and how many
    /// local changes were waiting on it (each kept as it was when not reported).
    ///
    /// # Errors
    /// A database failure.
    pub async fn record_device_report(
        &self,
        device_id: Uuid,
        app_version: Option<&str>,
        pending_changes: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET app_version = COALESCE($2, app_version), \
             pending_changes = COALESCE($3, pending_changes) WHERE id = $1",
        )
        .bind(device_id.to_string())
        .bind(app_version)
        .bind(pending_changes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
