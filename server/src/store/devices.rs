//! Enrolled devices: token hashes, revocation, last sync and pending refusals.

use kepu_sync_core::writer::Role;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

/// What authentication needs about a device, read in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthRecord {
    /// The device.
    pub device_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// The user's school.
    pub school_id: Option<Uuid>,
    /// The user's venue.
    pub venue_id: Option<Uuid>,
    /// When the device was revoked.
    pub revoked_at: Option<i64>,
    /// When the user was erased.
    pub user_erased_at: Option<i64>,
    /// What a sync connect needs besides, read in the same query (ADR 0187).
    pub connect: ConnectFacts,
}

/// What admitting a sync connection reads besides the identity: the app version the device
/// last reported, its role's minimum app version and, for an edge box, its venue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectFacts {
    /// The app version the device last reported (enrollment or an earlier connect).
    pub app_version: Option<String>,
    /// The minimum app version of the user's role, if one is set.
    pub min_app_version: Option<String>,
    /// The venue whose edge box the user is, if it is one.
    pub edge_venue: Option<Uuid>,
}

/// A device as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// The device.
    pub id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// Enrollment time (unix ms).
    pub created_at: i64,
    /// Revocation time (unix ms), if revoked.
    pub revoked_at: Option<i64>,
    /// Last sync (unix ms), if it ever synced.
    pub last_sync_at: Option<i64>,
    /// The app version it reported.
    pub app_version: Option<String>,
    /// Refusals the device has not yet acknowledged.
    pub pending_refusals: i64,
}

fn device_record(row: &AnyRow) -> Result<DeviceRecord> {
    let role: String = row.try_get("role")?;
    Ok(DeviceRecord {
        id: rows::uuid(row, "id", "devices")?,
        user_id: rows::uuid(row, "user_id", "devices")?,
        role: Role::parse_user(&role).map_err(|_| Error::Corrupt("users"))?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_sync_at: row.try_get("last_sync_at")?,
        app_version: row.try_get("app_version")?,
        pending_refusals: row.try_get("pending_refusals")?,
    })
}

impl Store {
    /// The device holding this token hash, with its user's role and affiliations.
    ///
    /// # Errors
    /// A database failure.
    pub async fn device_by_token_hash(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<DeviceAuthRecord>> {
        // One statement for everything a connect checks: a reconnect storm is one read
        // per device, not four (ADR 0187).
        let row = sqlx::query(
            "SELECT d.id, d.user_id, d.revoked_at, d.app_version, u.role, u.school_id, \
             u.venue_id, u.erased_at, m.version AS min_app_version, e.venue_id AS edge_venue \
             FROM devices d JOIN users u ON u.id = d.user_id \
             LEFT JOIN min_app_versions m ON m.role = u.role \
             LEFT JOIN edge_users e ON e.user_id = u.id \
             WHERE d.token_hash = $1",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(DeviceAuthRecord {
            device_id: rows::uuid(&row, "id", "devices")?,
            user_id: rows::uuid(&row, "user_id", "devices")?,
            role: Role::parse_user(&role).map_err(|_| Error::Corrupt("users"))?,
            school_id: rows::opt_uuid(&row, "school_id", "users")?,
            venue_id: rows::opt_uuid(&row, "venue_id", "users")?,
            revoked_at: row.try_get("revoked_at")?,
            user_erased_at: row.try_get("erased_at")?,
            connect: ConnectFacts {
                app_version: row.try_get("app_version")?,
                min_app_version: row.try_get("min_app_version")?,
                edge_venue: rows::opt_uuid(&row, "edge_venue", "edge_users")?,
            },
        }))
    }

    /// Replaces the token hash of a live device. Returns false if the device is unknown or
    /// revoked.
    ///
    /// # Errors
    /// A database failure.
    pub async fn replace_token_hash(&self, device_id: Uuid, new_hash: &[u8]) -> Result<bool> {
        let done =
            sqlx::query("UPDATE devices SET token_hash = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(device_id.to_string())
                .bind(new_hash.to_vec())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a device. Returns false if it was unknown or already revoked.
    ///
    /// # Errors
    /// A database failure.
    pub async fn revoke_device(&self, device_id: Uuid, now: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(device_id.to_string())
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Devices revoked at or after `since` (unix ms), erased users' devices included.
    /// Reads the whole devices table; the revocation broadcast calls it only when it has
    /// missed announcements.
    ///
    /// # Errors
    /// A database failure.
    pub async fn devices_revoked_since(&self, since: i64) -> Result<Vec<Uuid>> {
        let rows = sqlx::query("SELECT id FROM devices WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| rows::uuid(row, "id", "devices"))
            .collect()
    }

    /// One device.
    ///
    /// # Errors
    /// A database failure.
    pub async fn device(&self, device_id: Uuid) -> Result<Option<DeviceRecord>> {
        let row = sqlx::query(
            "SELECT d.id, d.user_id, u.role, d.created_at, d.revoked_at, d.last_sync_at, \
             d.app_version, d.pending_refusals FROM devices d JOIN users u ON u.id = d.user_id \
             WHERE d.id = $1",
        )
        .bind(device_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_record).transpose()
    }

    /// Devices, newest first, optionally of one user.
    ///
    /// # Errors
    /// A database failure.
    pub async fn list_devices(&self, user_id: Option<Uuid>) -> Result<Vec<DeviceRecord>> {
        let rows = sqlx::query(
            "SELECT d.id, d.user_id, u.role, d.created_at, d.revoked_at, d.last_sync_at, \
             d.app_version, d.pending_refusals FROM devices d JOIN users u ON u.id = d.user_id \
             WHERE ($1 IS NULL OR d.user_id = $1) ORDER BY d.created_at DESC, d.id",
        )
        .bind(user_id.map(|id| id.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_record).collect()
    }

    /// Records that devices synced, each at its time (the latest where a device comes
    /// more than once), [`rows::ROWS_PER_INSERT`] devices a statement, in one write
    /// transaction whose commit does not wait for the disk (ADR 0186): a last sync time
    /// lost to a power cut is written again at the device's next connection. Unknown
    /// devices are skipped.
    ///
    /// # Errors
    /// A database failure; then none of them is written.
    pub async fn touch_devices_synced(&self, touches: &[(Uuid, i64)]) -> Result<()> {
        let mut latest: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
        for (device, at) in touches {
            let t = latest.entry(*device).or_insert(*at);
            *t = (*t).max(*at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, i64)> = latest
            .into_iter()
            .map(|(d, t)| (d.to_string(), t))
            .collect();
        let mut tx = self.begin_records_tx().await?;
        for chunk in rows.chunks(rows::ROWS_PER_INSERT) {
            // The VALUES list's columns are `column1`, `column2` in both databases.
            let sql = format!(
                "UPDATE devices SET last_sync_at = v.column2 FROM (VALUES {}) AS v \
                 WHERE devices.id = v.column1",
                rows::placeholders(&tx, chunk.len(), 2)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (device, at) in chunk {
                q = q.bind(device.clone()).bind(*at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that a device synced (and the app version it reports, if any).
    ///
    /// # Errors
    /// A database failure.
    pub async fn touch_device_sync(
        &self,
        device_id: Uuid,
        now: i64,
        app_version: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET last_sync_at = $2, app_version = COALESCE($3, app_version) \
             WHERE id = $1",
        )
        .bind(device_id.to_string())
        .bind(now)
        .bind(app_version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
