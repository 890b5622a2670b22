//! Web logins for the browser pages: a login name and an Argon2id password per user
//! (pupils have none), sessions carried by an HttpOnly cookie whose token is stored only as
//! its SHA-256, and a throttle that slows down guessing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use uuid::Uuid;

use super::{Accounts, DeviceToken, Role};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::SessionRecord;

/// How long a browser session lasts: one working day.
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// Failed attempts on one login name before it is locked for [`LOCKOUT_MS`].
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
/// How long a login name stays locked after too many failed attempts.
pub const LOCKOUT_MS: i64 = 60 * 1000;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// A new session: the cookie token (shown once) and when it ends.
#[derive(Clone)]
pub struct NewSession {
    /// The token to put in the cookie.
    pub token: DeviceToken,
    /// Who logged in.
    pub user: SessionRecord,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: i64,
}

/// Failed attempts per login name, in memory (a restart forgets them, which only helps
/// someone who can restart the server).
#[derive(Debug, Default, Clone)]
pub(crate) struct LoginThrottle(Arc<Mutex<HashMap<String, Failures>>>);

impl LoginThrottle {
    fn check(&self, login: &str, now: i64) -> Result<()> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(login) {
            Some(f) if f.locked_until > now => Err(Error::TooManyAttempts),
            _ => Ok(()),
        }
    }

    fn failed(&self, login: &str, now: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, f| f.locked_until > now);
        }
        let f = map.entry(login.to_owned()).or_default();
        f.count += 1;
        if f.count >= MAX_FAILED_ATTEMPTS {
            f.locked_until = now + LOCKOUT_MS;
            f.count = 0;
        }
    }

    fn succeeded(&self, login: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(login);
    }
}

/// Checks a login name: 3–64 characters of `a-z 0-9 . _ -`, lower case.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn check_login_name(login: &str) -> Result<()> {
    let ok_chars = login
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !(3..=64).contains(&login.len()) || !ok_chars {
        return Err(Error::InvalidInput(
            "a login name has 3 to 64 characters: lower-case letters, digits, '.', '_' or '-'"
                .into(),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt_bytes = [0u8; 16];
    rand::fill(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|_| Error::InvalidInput("this password cannot be hashed".into()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::InvalidInput("this password cannot be hashed".into()))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash to verify against when the login name is unknown, so that an unknown name
/// costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never valid").unwrap_or_default())
}

impl Accounts {
    /// Gives a user (not a pupil) a web login, or changes its name or password. Ends the
    /// user's sessions.
    ///
    /// # Errors
    /// Unknown or erased user, a pupil, a bad login name, a password shorter than
    /// [`MIN_PASSWORD_CHARS`], a login name taken by someone else, a database failure.
    pub async fn set_web_login(&self, user_id: Uuid, login: &str, password: &str) -> Result<()> {
        let login = login.trim();
        check_login_name(login)?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(Error::InvalidInput(format!(
                "a password has at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        let user = self
            .store
            .user(user_id)
            .await?
            .filter(|u| u.erased_at.is_none())
            .ok_or_else(|| Error::not_found("user", user_id))?;
        if user.role == Role::Pupil {
            return Err(Error::InvalidInput("pupils have no web login".into()));
        }
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| Error::Unavailable("password hashing stopped"))??;
        self.store
            .set_web_login(user_id, login, &hash, now_ms())
            .await?;
        tracing::info!(user = %user_id, "web login set");
        Ok(())
    }

    /// Logs in with a login name and password; the same error whether the name is
    /// unknown or the password wrong. After [`MAX_FAILED_ATTEMPTS`] failures the name is
    /// locked for [`LOCKOUT_MS`].
    ///
    /// # Errors
    /// [`Error::LoginFailed`], [`Error::TooManyAttempts`], a database failure.
    pub async fn log_in(&self, login: &str, password: &str) -> Result<NewSession> {
        let login = login.trim().to_owned();
        let now = now_ms();
        self.throttle.check(&login, now)?;
        let record = if login.len() <= 64 && password.len() <= 1024 {
            self.store.web_login(&login).await?
        } else {
            None
        };
        let stored = record
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |r| r.password_hash.clone());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .map_err(|_| Error::Unavailable("password check stopped"))?;
        let Some(record) = record.filter(|_| matches) else {
            self.throttle.failed(&login, now);
            return Err(Error::LoginFailed);
        };
        self.throttle.succeeded(&login);
        let token = DeviceToken::generate();
        let expires_at = now + SESSION_TTL_MS;
        self.store
            .insert_web_session(&token.hash(), record.user_id, now, expires_at)
            .await?;
        let user = self
            .store
            .web_session(&token.hash(), now)
            .await?
            .ok_or(Error::LoginFailed)?;
        tracing::info!(user = %record.user_id, "web session started");
        Ok(NewSession { token, user })
    }

    /// The user of a presented session token, if the session is live.
    ///
    /// # Errors
    /// A database failure.
    pub async fn session(&self, token: &str) -> Result<Option<SessionRecord>> {
        let Some(hash) = DeviceToken::hash_presented(token) else {
            return Ok(None);
        };
        self.store.web_session(&hash, now_ms()).await
    }

    /// Ends a session (logout). Unknown tokens are ignored.
    ///
    /// # Errors
    /// A database failure.
    pub async fn log_out(&self, token: &str) -> Result<()> {
        if let Some(hash) = DeviceToken::hash_presented(token) {
            self.store.delete_web_session(&hash).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_checked() {
        assert!(check_login_name("staff.changsha-1").is_ok());
        assert!(check_login_name("ab").is_err());
        assert!(check_login_name("Staff").is_err());
        assert!(check_login_name("名字").is_err());
        assert!(check_login_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn throttle_locks_after_repeated_failures_and_forgets_on_success() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILED_ATTEMPTS - 1 {
            t.failed("x", 0);
        }
        assert!(t.check("x", 1).is_ok());
        t.failed("x", 1);
        assert!(matches!(t.check("x", 2), Err(Error::TooManyAttempts)));
        assert!(t.check("x", 1 + LOCKOUT_MS).is_ok());
        assert!(t.check("other", 2).is_ok());
        t.failed("y", 0);
        t.succeeded("y");
        assert!(t.check("y", 0).is_ok());
    }
}
