//! Web logins (login name, password hash) and browser sessions (cookie token hashes).

use kepu_sync_core::writer::Role;
use sqlx::Row;
use uuid::Uuid;

use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

/// A stored web login.
#[derive(Clone, PartialEq, Eq)]
pub struct WebLoginRecord {
    /// Its user.
    pub user_id: Uuid,
    /// The PHC string of the password hash. Never log it.
    pub password_hash: String,
}

impl std::fmt::Debug for WebLoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebLoginRecord")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Who a live session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user.
    pub user_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// The user's school.
    pub school_id: Option<Uuid>,
    /// The user's venue.
    pub venue_id: Option<Uuid>,
    /// When the session ends (unix ms).
    pub expires_at: i64,
}

impl Store {
    /// Sets (or replaces) the login name and password hash of a user. Its sessions are
    /// ended, so a changed password logs every browser out.
    ///
    /// # Errors
    /// [`Error::Conflict`] if another user has this login name; a database failure.
    pub async fn set_web_login(
        &self,
        user_id: Uuid,
        login: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO web_logins (user_id, login, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (user_id) DO UPDATE SET login = excluded.login, \
             password_hash = excluded.password_hash, updated_at = excluded.updated_at",
        )
        .bind(user_id.to_string())
        .bind(login)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::from(e).conflict_if_unique("this login name is taken"))?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The login of this name whose user is not erased.
    ///
    /// # Errors
    /// A database failure.
    pub async fn web_login(&self, login: &str) -> Result<Option<WebLoginRecord>> {
        let row = sqlx::query(
            "SELECT w.user_id, w.password_hash FROM web_logins w JOIN users u ON u.id = w.user_id \
             WHERE w.login = $1 AND u.erased_at IS NULL",
        )
        .bind(login)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(WebLoginRecord {
                user_id: rows::uuid(&row, "user_id", "web_logins")?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    /// Stores a new session (its token hash) and removes sessions that have expired.
    ///
    /// # Errors
    /// A database failure.
    pub async fn insert_web_session(
        &self,
        token_hash: &[u8],
        user_id: Uuid,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash.to_vec())
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user of a session that has not expired and whose user is not erased.
    ///
    /// # Errors
    /// A database failure.
    pub async fn web_session(&self, token_hash: &[u8], now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.user_id, s.expires_at, u.role, u.school_id, u.venue_id \
             FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.erased_at IS NULL",
        )
        .bind(token_hash.to_vec())
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(SessionRecord {
            user_id: rows::uuid(&row, "user_id", "web_sessions")?,
            role: Role::parse_user(&role).map_err(|_| Error::Corrupt("users"))?,
            school_id: rows::opt_uuid(&row, "school_id", "users")?,
            venue_id: rows::opt_uuid(&row, "venue_id", "users")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Ends one session. Returns false if it did not exist.
    ///
    /// # Errors
    /// A database failure.
    pub async fn delete_web_session(&self, token_hash: &[u8]) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash.to_vec())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Counts an attempt to log in as `login` before its password is checked, in the
    /// database, so that every node sees the same count: up to `max` attempts, then the
    /// name is locked for `lock_ms`; failures are forgotten `forget_ms` after the last.
    /// Returns whether this attempt may go on. One statement, so two nodes counting at
    /// once never both get the last attempt.
    ///
    /// # Errors
    /// A database failure.
    pub async fn count_login_attempt(
        &self,
        login: &str,
        now: i64,
        max: u32,
        lock_ms: i64,
        forget_ms: i64,
    ) -> Result<bool> {
        sqlx::query(
            "INSERT INTO login_failures (login, failures, locked_until, last_at) \
             VALUES ($1, 0, 0, $2) ON CONFLICT (login) DO NOTHING",
        )
        .bind(login)
        .bind(now)
        .execute(&self.pool)
        .await?;
        // Every SET expression reads the row as it was: locked → unchanged; a lock that
        // ran out or failures forgotten → this is the first attempt; attempts used up →
        // locked now; otherwise one more.
        let locked_until: i64 = sqlx::query(
            "UPDATE login_failures SET \
             failures = CASE WHEN locked_until > $2 THEN failures \
                 WHEN locked_until <> 0 OR last_at + $5 <= $2 THEN 1 \
                 WHEN failures >= $3 THEN failures ELSE failures + 1 END, \
             locked_until = CASE WHEN locked_until > $2 THEN locked_until \
                 WHEN locked_until <> 0 OR last_at + $5 <= $2 THEN 0 \
                 WHEN failures >= $3 THEN $2 + $4 ELSE 0 END, \
             last_at = CASE WHEN locked_until > $2 THEN last_at ELSE $2 END \
             WHERE login = $1 RETURNING locked_until",
        )
        .bind(login)
        .bind(now)
        .bind(i64::from(max))
        .bind(lock_ms)
        .bind(forget_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        if locked_until <= now && rand::random::<u8>() == 0 {
            // Now and then, names not tried for a while are forgotten.
            sqlx::query(
                "DELETE FROM login_failures WHERE last_at + $2 <= $1 AND locked_until <= $1",
            )
            .bind(now)
            .bind(forget_ms)
            .execute(&self.pool)
            .await?;
        }
        Ok(locked_until <= now)
    }

    /// The attempt counted for `login` was not a guess after all (the check could not
    /// run): it does not count.
    ///
    /// # Errors
    /// A database failure.
    pub async fn uncount_login_attempt(&self, login: &str) -> Result<()> {
        sqlx::query(
            "UPDATE login_failures SET failures = failures - 1 WHERE login = $1 AND failures > 0",
        )
        .bind(login)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A correct password: the name's failures are forgotten.
    ///
    /// # Errors
    /// A database failure.
    pub async fn clear_login_failures(&self, login: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE login = $1")
            .bind(login)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
