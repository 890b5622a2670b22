//! One-time enrollment codes and the devices they enroll.

use sqlx::Row;
use uuid::Uuid;

use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

impl Store {
    /// Stores the hash of a fresh enrollment code for a user.
    ///
    /// # Errors
    /// Unknown or erased user, or a database failure.
    pub async fn insert_enrollment_code(
        &self,
        code_hash: &[u8],
        user_id: Uuid,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let user = self
            .user(user_id)
            .await?
            .ok_or_else(|| Error::not_found("user", user_id))?;
        if user.erased_at.is_some() {
            return Err(Error::InvalidInput(
                "an erased user cannot enroll devices".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO enrollment_codes (code_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(code_hash.to_vec())
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Redeems a code and enrolls a device in one transaction: the code must be unused
    /// and unexpired, and its user not erased. Returns the user, or `None` if the code
    /// cannot be used (unknown, used, expired: deliberately not told apart).
    ///
    /// # Errors
    /// A database failure.
    pub async fn redeem_enrollment_code(
        &self,
        code_hash: &[u8],
        device_id: Uuid,
        token_hash: &[u8],
        app_version: Option<&str>,
        now: i64,
    ) -> Result<Option<Uuid>> {
        // A guess is answered by a read: the write lock (SQLite) or transaction is taken
        // only for a code that can be used.
        let usable = sqlx::query(
            "SELECT 1 AS ok FROM enrollment_codes WHERE code_hash = $1 AND used_at IS NULL \
             AND expires_at > $2 AND device_id IS NULL",
        )
        .bind(code_hash.to_vec())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if usable.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE enrollment_codes SET used_at = $2, device_id = $3 \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             AND device_id IS NULL \
             AND user_id IN (SELECT id FROM users WHERE erased_at IS NULL) \
             RETURNING user_id",
        )
        .bind(code_hash.to_vec())
        .bind(now)
        .bind(device_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user_id = rows::uuid(&row, "user_id", "enrollment_codes")?;
        sqlx::query(
            "INSERT INTO devices (id, user_id, token_hash, created_at, app_version, pending_refusals) \
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(device_id.to_string())
        .bind(user_id.to_string())
        .bind(token_hash.to_vec())
        .bind(now)
        .bind(app_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    /// Stores a one-time code bound to an enrolled device (a reconnect code, ADR 0172):
    /// redeemed only by [`Store::redeem_device_code`] for that device, never as a new
    /// enrollment. An unused code's `device_id` is otherwise empty, so the column tells
    /// the two apart.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown device, [`Error::Conflict`] for a revoked one;
    /// a database failure.
    pub async fn insert_device_code(
        &self,
        code_hash: &[u8],
        device_id: Uuid,
        now: i64,
        expires_at: i64,
    ) -> Result<Uuid> {
        let device = self
            .device(device_id)
            .await?
            .ok_or_else(|| Error::not_found("device", device_id))?;
        if device.revoked_at.is_some() {
            return Err(Error::Conflict("the device is revoked".into()));
        }
        sqlx::query(
            "INSERT INTO enrollment_codes (code_hash, user_id, created_at, expires_at, device_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(code_hash.to_vec())
        .bind(device.user_id.to_string())
        .bind(now)
        .bind(expires_at)
        .bind(device_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(device.user_id)
    }

    /// Redeems a code bound to `device_id` and gives that device `token_hash`, in one
    /// transaction: the code must be unused, unexpired and bound to this device, the
    /// device not revoked and its user not erased. Returns the user, or `None` if the code
    /// cannot be used this way (nothing changes then).
    ///
    /// # Errors
    /// A database failure.
    pub async fn redeem_device_code(
        &self,
        code_hash: &[u8],
        device_id: Uuid,
        token_hash: &[u8],
        app_version: Option<&str>,
        now: i64,
    ) -> Result<Option<Uuid>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE enrollment_codes SET used_at = $2 \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 AND device_id = $3 \
             AND user_id IN (SELECT id FROM users WHERE erased_at IS NULL) \
             RETURNING user_id",
        )
        .bind(code_hash.to_vec())
        .bind(now)
        .bind(device_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user_id = rows::uuid(&row, "user_id", "enrollment_codes")?;
        let done = sqlx::query(
            "UPDATE devices SET token_hash = $3, app_version = COALESCE($4, app_version) \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .bind(device_id.to_string())
        .bind(user_id.to_string())
        .bind(token_hash.to_vec())
        .bind(app_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(user_id))
    }

    /// Deletes codes that expired before `now`; returns how many.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge_expired_enrollment_codes(&self, now: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM enrollment_codes WHERE used_at IS NULL AND expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// How many unused, unexpired codes a user has.
    ///
    /// # Errors
    /// A database failure.
    pub async fn open_enrollment_codes(&self, user_id: Uuid, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM enrollment_codes \
             WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(user_id.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
