//! Enrolling a device with a one-time code, issuing codes, and rotating tokens.

use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};
use serde::Serialize;
use uuid::Uuid;

use crate::accounts::{Accounts, AuthError, DeviceIdentity, DeviceToken, EnrollmentCode, Role};
use crate::clock::{DAY_MS, now_ms};
use crate::error::{Error, Result};

/// How long a code lives unless told otherwise.
pub const DEFAULT_CODE_TTL_DAYS: u32 = 7;

/// A code issued for a user, to be shown once.
#[derive(Debug, Clone)]
pub struct IssuedCode {
    /// The code (secret until used).
    pub code: EnrollmentCode,
    /// The user it enrolls.
    pub user_id: Uuid,
    /// Expiry (unix ms).
    pub expires_at: i64,
}

/// The answer to a successful enrollment. `Debug` does not show the token.
#[derive(Clone, Serialize)]
pub struct Enrollment {
    /// The new device.
    pub device_id: DeviceId,
    /// Its bearer token (shown once).
    pub token: String,
    /// The user.
    pub user_id: UserId,
    /// The user's role.
    pub role: Role,
    /// The user's school.
    pub school_id: Option<SchoolId>,
    /// The user's venue.
    pub venue_id: Option<VenueId>,
    /// For pupils, their pseudonymous pupil id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pupil_id: Option<PupilId>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

const MAX_APP_VERSION_LEN: usize = 64;

impl Accounts {
    /// Issues a one-time code for a user, valid for `ttl_days` days (1 to 365).
    ///
    /// # Errors
    /// Bad lifetime, unknown or erased user, or a database failure.
    pub async fn issue_enrollment_code(&self, user_id: Uuid, ttl_days: u32) -> Result<IssuedCode> {
        if !(1..=365).contains(&ttl_days) {
            return Err(Error::InvalidInput(
                "code lifetime must be 1 to 365 days".into(),
            ));
        }
        let now = now_ms();
        let expires_at = now + i64::from(ttl_days) * DAY_MS;
        let code = EnrollmentCode::generate();
        self.store
            .insert_enrollment_code(&code.hash(), user_id, now, expires_at)
            .await?;
        tracing::info!(user = %user_id, "enrollment code issued");
        Ok(IssuedCode {
            code,
            user_id,
            expires_at,
        })
    }

    /// Enrolls a new device with a one-time code.
    ///
    /// # Errors
    /// [`Error::EnrollmentCodeRejected`] if the code is malformed, unknown, used or expired; bad app
    /// version; a database failure.
    pub async fn enroll(&self, code: &str, app_version: Option<&str>) -> Result<Enrollment> {
        let app_version = checked_app_version(app_version)?;
        let code_hash =
            EnrollmentCode::hash_presented(code).ok_or(Error::EnrollmentCodeRejected)?;
        let device_id = DeviceId(crate::ids::new_id());
        let token = DeviceToken::generate();
        let user_id = self
            .store
            .redeem_enrollment_code(
                &code_hash,
                device_id.0,
                &token.hash(),
                app_version,
                now_ms(),
            )
            .await?
            .ok_or(Error::EnrollmentCodeRejected)?;
        let enrollment = self.enrollment(device_id, token, user_id).await?;
        tracing::info!(device = %device_id, user = %user_id, role = %enrollment.role, "device enrolled");
        Ok(enrollment)
    }

    /// Issues a one-time reconnect code for an enrolled device, valid for `ttl_days` days
    /// (ADR 0172): the device redeems it with [`Accounts::reenroll`] and gets a new token
    /// under its own device id, so that its unsynced work, written under actor ids the
    /// server knows as this device's, still syncs. The way back after a rotation from the
    /// fleet page. The device's current token, if any, works until the code is used.
    ///
    /// # Errors
    /// Bad lifetime, unknown or revoked device, or a database failure.
    pub async fn issue_device_code(
        &self,
        device_id: DeviceId,
        ttl_days: u32,
    ) -> Result<IssuedCode> {
        if !(1..=365).contains(&ttl_days) {
            return Err(Error::InvalidInput(
                "code lifetime must be 1 to 365 days".into(),
            ));
        }
        let now = now_ms();
        let expires_at = now + i64::from(ttl_days) * DAY_MS;
        let code = EnrollmentCode::generate();
        let user_id = self
            .store
            .insert_device_code(&code.hash(), device_id.0, now, expires_at)
            .await?;
        tracing::info!(device = %device_id, "reconnect code issued");
        Ok(IssuedCode {
            code,
            user_id,
            expires_at,
        })
    }

    /// Redeems a reconnect code for `device_id` (the device the code was issued for):
    /// the device keeps its id and gets a new token; the previous token stops working.
    ///
    /// # Errors
    /// [`Error::EnrollmentCodeRejected`] if the code is malformed, unknown, used, expired
    /// or bound to another device, or the device is revoked; bad app version; a database
    /// failure.
    pub async fn reenroll(
        &self,
        code: &str,
        device_id: DeviceId,
        app_version: Option<&str>,
    ) -> Result<Enrollment> {
        let app_version = checked_app_version(app_version)?;
        let code_hash =
            EnrollmentCode::hash_presented(code).ok_or(Error::EnrollmentCodeRejected)?;
        let token = DeviceToken::generate();
        let user_id = self
            .store
            .redeem_device_code(
                &code_hash,
                device_id.0,
                &token.hash(),
                app_version,
                now_ms(),
            )
            .await?
            .ok_or(Error::EnrollmentCodeRejected)?;
        let enrollment = self.enrollment(device_id, token, user_id).await?;
        tracing::info!(device = %device_id, user = %user_id, "device reconnected with a code");
        Ok(enrollment)
    }

    /// What a device learns when a code is redeemed: its id and new token, and its user.
    async fn enrollment(
        &self,
        device_id: DeviceId,
        token: DeviceToken,
        user_id: Uuid,
    ) -> Result<Enrollment> {
        let user = self
            .store
            .user(user_id)
            .await?
            .ok_or_else(|| Error::not_found("user", user_id))?;
        Ok(Enrollment {
            device_id,
            token: token.into_string(),
            user_id: UserId(user_id),
            role: user.role,
            school_id: user.school_id.map(SchoolId),
            venue_id: user.venue_id.map(VenueId),
            pupil_id: (user.role == Role::Pupil).then_some(PupilId(user_id)),
        })
    }

    /// Gives the calling device a new token; the old one stops working at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless `caller` is `device_id` itself; a database failure.
    pub async fn rotate_token(
        &self,
        caller: &DeviceIdentity,
        device_id: DeviceId,
    ) -> Result<DeviceToken> {
        if caller.writer.device != device_id {
            return Err(Error::Forbidden("a device can only rotate its own token"));
        }
        let token = DeviceToken::generate();
        if !self
            .store
            .replace_token_hash(device_id.0, &token.hash())
            .await?
        {
            return Err(AuthError::Revoked.into());
        }
        tracing::info!(device = %device_id, "device token rotated");
        Ok(token)
    }

    /// Rotates a device's token from the fleet page: the token it holds stops working at
    /// once and the new one is thrown away, so nobody holds it. The device is not revoked
    /// and wipes nothing (its connects fail with `invalid_token` and its unsynced work
    /// stays on it); it syncs again once enrolled anew. Returns false if the device is
    /// unknown or revoked.
    ///
    /// # Errors
    /// A database failure.
    pub async fn rotate_token_away(&self, device_id: DeviceId) -> Result<bool> {
        let token = DeviceToken::generate();
        let replaced = self
            .store
            .replace_token_hash(device_id.0, &token.hash())
            .await?;
        drop(token);
        if replaced {
            tracing::info!(device = %device_id, "device token rotated from the fleet page");
        }
        Ok(replaced)
    }
}

/// An app version as a device reports it: trimmed, `None` if empty; refused if too long
/// or holding control characters.
fn checked_app_version(app_version: Option<&str>) -> Result<Option<&str>> {
    let app_version = app_version.map(str::trim).filter(|v| !v.is_empty());
    if app_version.is_some_and(|v| v.len() > MAX_APP_VERSION_LEN || v.chars().any(char::is_control))
    {
        return Err(Error::InvalidInput(format!(
            "app_version must have at most {MAX_APP_VERSION_LEN} bytes"
        )));
    }
    Ok(app_version)
}
