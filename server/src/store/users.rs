//! Users, pupils' anonymous counts and erasure.

use kepu_sync_core::writer::Role;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::geo::require_row;
use super::rows;
use crate::error::{Error, Result};
use crate::store::Store;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its id (a pupil's id is their pseudonymous pupil id).
    pub id: Uuid,
    /// Its role.
    pub role: Role,
    /// School of a pupil, teacher or volunteer.
    pub school_id: Option<Uuid>,
    /// Venue of venue staff.
    pub venue_id: Option<Uuid>,
    /// A display name (for pupils, the name the school chooses). Personal data.
    pub display_name: Option<String>,
    /// The school's own reference for a pupil (e.g. a roll number). Personal data.
    pub external_ref: Option<String>,
}

/// A stored user. `Debug` leaves out the personal fields.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: Uuid,
    /// Its role.
    pub role: Role,
    /// Its school, if any (none once a pupil is erased).
    pub school_id: Option<Uuid>,
    /// Its venue, if any.
    pub venue_id: Option<Uuid>,
    /// Display name (personal data; none once erased).
    pub display_name: Option<String>,
    /// The school's reference (personal data; none once erased).
    pub external_ref: Option<String>,
    /// Serial of the pupil's current pass (none once erased).
    pub pupil_pass_serial: Option<i64>,
    /// When the user's personal data was erased.
    pub erased_at: Option<i64>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("school_id", &self.school_id)
            .field("venue_id", &self.venue_id)
            .field("erased_at", &self.erased_at)
            .finish_non_exhaustive()
    }
}

/// What erasing a pupil did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedPupil {
    /// The pupil.
    pub pupil_id: Uuid,
    /// The pass serial that is now revoked, if the pupil had a pass.
    pub revoked_pass_serial: Option<i64>,
    /// The pupil's devices that were revoked.
    pub revoked_devices: Vec<Uuid>,
    /// False if the pupil had been erased before (nothing changed).
    pub changed: bool,
}

const MAX_NAME_CHARS: usize = 100;

fn check_text(value: Option<&str>, what: &str) -> Result<Option<String>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} must have at most {MAX_NAME_CHARS} characters and no control characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

impl Store {
    /// Creates a user (a no-op if `id` exists already). Pupils, teachers need a school;
    /// venue staff need a venue; pupils get pass serial 1.
    ///
    /// # Errors
    /// Missing or unknown school or venue, over-long names, or a database failure.
    pub async fn create_user(&self, user: &NewUser, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_user(tx.tx(), user, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates many users in one transaction.
    ///
    /// # Errors
    /// As [`Store::create_user`]; nothing is stored if one fails.
    pub async fn create_users(&self, users: &[NewUser], now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for user in users {
            insert_user(tx.tx(), user, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Looks a user up.
    ///
    /// # Errors
    /// A database failure.
    pub async fn user(&self, id: Uuid) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, role, school_id, venue_id, display_name, external_ref, \
             pupil_pass_serial, erased_at FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(User {
            id: rows::uuid(&row, "id", "users")?,
            role: Role::parse_user(&role).map_err(|_| Error::Corrupt("users"))?,
            school_id: rows::opt_uuid(&row, "school_id", "users")?,
            venue_id: rows::opt_uuid(&row, "venue_id", "users")?,
            display_name: row.try_get("display_name")?,
            external_ref: row.try_get("external_ref")?,
            pupil_pass_serial: row.try_get("pupil_pass_serial")?,
            erased_at: row.try_get("erased_at")?,
        }))
    }

    /// The number of pupils a school has had, named or erased: the count reports use.
    /// Erasing a pupil unlinks them from the school but leaves this number unchanged.
    ///
    /// # Errors
    /// A database failure.
    pub async fn anonymous_pupil_count(&self, school_id: Uuid) -> Result<i64> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users WHERE school_id = $1 AND role = 'pupil') AS named, \
             (SELECT COALESCE(MAX(erased_count), 0) FROM school_erased_pupils WHERE school_id = $1) \
             AS erased",
        )
        .bind(school_id.to_string())
        .fetch_one(&self.pool)
        .await?;
        let named: i64 = row.try_get("named")?;
        let erased: i64 = row.try_get("erased")?;
        Ok(named + erased)
    }

    /// Erases a pupil's personal data in one transaction: the display name, the school's
    /// reference and the pass serial go (the serial is revoked), the link to the school is
    /// cut (the school's anonymous count keeps the pupil), unused enrollment codes are
    /// deleted and the pupil's devices are revoked. Erasing twice changes nothing.
    ///
    /// # Errors
    /// Unknown user, a user who is not a pupil, or a database failure.
    pub async fn erase_pupil(&self, pupil_id: Uuid, now: i64) -> Result<ErasedPupil> {
        let id = pupil_id.to_string();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT role, school_id, pupil_pass_serial, erased_at FROM users WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("pupil", pupil_id))?;
        let role: String = row.try_get("role")?;
        if role != Role::Pupil.as_str() {
            return Err(Error::not_found("pupil", pupil_id));
        }
        let erased_at: Option<i64> = row.try_get("erased_at")?;
        if erased_at.is_some() {
            return Ok(ErasedPupil {
                pupil_id,
                revoked_pass_serial: None,
                revoked_devices: Vec::new(),
                changed: false,
            });
        }
        let school_id: Option<String> = row.try_get("school_id")?;
        let serial: Option<i64> = row.try_get("pupil_pass_serial")?;

        if let Some(serial) = serial {
            sqlx::query(
                "INSERT INTO pass_revocations (pupil_id, serial, revoked_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (pupil_id, serial) DO NOTHING",
            )
            .bind(&id)
            .bind(serial)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(school_id) = &school_id {
            sqlx::query(
                "INSERT INTO school_erased_pupils (school_id, erased_count) VALUES ($1, 1) \
                 ON CONFLICT (school_id) DO UPDATE \
                 SET erased_count = school_erased_pupils.erased_count + 1",
            )
            .bind(school_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE users SET display_name = NULL, external_ref = NULL, pupil_pass_serial = NULL, \
             school_id = NULL, erased_at = $2 WHERE id = $1",
        )
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM enrollment_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query(
            "UPDATE devices SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL \
             RETURNING id",
        )
        .bind(&id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let revoked_devices = revoked
            .iter()
            .map(|row| rows::uuid(row, "id", "devices"))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(ErasedPupil {
            pupil_id,
            revoked_pass_serial: serial,
            revoked_devices,
            changed: true,
        })
    }

    /// Revoked pupil pass serials, for the revocation list: `(pupil_id, serial)`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn pass_revocations(&self) -> Result<Vec<(Uuid, i64)>> {
        let rows = sqlx::query(
            "SELECT pupil_id, serial FROM pass_revocations ORDER BY revoked_at, pupil_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    rows::uuid(row, "pupil_id", "pass_revocations")?,
                    row.try_get("serial")?,
                ))
            })
            .collect()
    }
}

async fn insert_user(tx: &mut Transaction<'static, Any>, user: &NewUser, now: i64) -> Result<()> {
    let display_name = check_text(user.display_name.as_deref(), "display name")?;
    let external_ref = check_text(user.external_ref.as_deref(), "external reference")?;
    let (school_id, venue_id) =
        match user.role {
            Role::Pupil | Role::Teacher => (
                Some(user.school_id.ok_or_else(|| {
                    Error::InvalidInput(format!("a {} needs a school", user.role))
                })?),
                None,
            ),
            Role::Volunteer => (user.school_id, None),
            Role::VenueStaff => (
                None,
                Some(
                    user.venue_id
                        .ok_or_else(|| Error::InvalidInput("venue staff need a venue".into()))?,
                ),
            ),
            Role::BureauAdmin => (None, None),
            Role::Server => {
                return Err(Error::InvalidInput(
                    "a user cannot have the server's role".into(),
                ));
            }
        };
    if let Some(school_id) = school_id {
        require_row(tx, "schools", "school", school_id).await?;
    }
    if let Some(venue_id) = venue_id {
        require_row(tx, "venues", "venue", venue_id).await?;
    }
    let serial = (user.role == Role::Pupil).then_some(1_i64);
    sqlx::query(
        "INSERT INTO users (id, role, school_id, venue_id, display_name, external_ref, \
         pupil_pass_serial, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(user.id.to_string())
    .bind(user.role.as_str())
    .bind(school_id.map(|id| id.to_string()))
    .bind(venue_id.map(|id| id.to_string()))
    .bind(display_name)
    .bind(external_ref)
    .bind(serial)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
