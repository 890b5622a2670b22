//! What `--demo` looks up before it writes the sample activity: the sample schools and
//! venues and volunteers (by the mark in their names), a school's pupils and whether its log already
//! holds sessions.

use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;

impl Store {
    /// Schools whose name ends with `mark`, by name.
    ///
    /// # Errors
    /// A database failure.
    pub async fn schools_marked(&self, mark: &str) -> Result<Vec<Uuid>> {
        self.uuids(
            "SELECT id FROM schools WHERE name LIKE $1 ORDER BY name",
            &format!("%{mark}"),
        )
        .await
    }

    /// Venues whose name ends with `mark`, by name.
    ///
    /// # Errors
    /// A database failure.
    pub async fn venues_marked(&self, mark: &str) -> Result<Vec<Uuid>> {
        self.uuids(
            "SELECT id FROM venues WHERE name LIKE $1 ORDER BY name",
            &format!("%{mark}"),
        )
        .await
    }

    /// The pupils of a school (erased ones included), by id.
    ///
    /// # Errors
    /// A database failure.
    pub async fn pupils_of_school(&self, school: Uuid) -> Result<Vec<Uuid>> {
        self.uuids(
            "SELECT id FROM users WHERE role = 'pupil' AND school_id = $1 ORDER BY id",
            &school.to_string(),
        )
        .await
    }

    /// The pupils of a school whose data is not erased, by id.
    ///
    /// # Errors
    /// A database failure.
    pub async fn current_pupils_of_school(&self, school: Uuid) -> Result<Vec<Uuid>> {
        self.uuids(
            "SELECT id FROM users WHERE role = 'pupil' AND school_id = $1 \
             AND erased_at IS NULL ORDER BY id",
            &school.to_string(),
        )
        .await
    }

    /// Volunteers whose display name ends with `mark`, by id.
    ///
    /// # Errors
    /// A database failure.
    pub async fn volunteers_marked(&self, mark: &str) -> Result<Vec<Uuid>> {
        self.uuids(
            "SELECT id FROM users WHERE role = 'volunteer' AND display_name LIKE $1 ORDER BY id",
            &format!("%{mark}"),
        )
        .await
    }

    /// How many in-school sessions the records hold for a school (any year).
    ///
    /// # Errors
    /// A database failure.
    pub async fn school_session_count(&self, school: Uuid) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM proj_school_sessions WHERE school_id = $1",
        )
        .bind(school.to_string())
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?)
    }

    /// The uuids in the first column of `sql` with `$1` = `bind`; text that is not a uuid
    /// is skipped.
    async fn uuids(&self, sql: &'static str, bind: &str) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(sql).bind(bind).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter_map(|s| Uuid::parse_str(&s).ok())
            .collect())
    }
}
