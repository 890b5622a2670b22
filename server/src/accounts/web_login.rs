//! Web logins for the browser pages: a login name and an Argon2id password per user
//! (pupils have none), sessions carried by an HttpOnly cookie whose token is stored only as
//! its SHA-256, and a throttle that slows down guessing.

use std::net::IpAddr;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use prometheus::IntGauge;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{Accounts, DeviceToken, Role};
use crate::clock::now_ms;
use crate::config::ConnectionLimits;
use crate::error::{Error, Result};
use crate::limits::{AttemptLimiter, ClientAddr};
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

/// Login names tracked by the throttle at most (about 100 bytes each).
const MAX_TRACKED: usize = 100_000;
/// Failures are forgotten this long after the last one.
const FORGET_AFTER_MS: i64 = 15 * 60 * 1000;
/// How long a client address stays locked after too many failed logins.
pub const ADDRESS_LOCKOUT_MS: i64 = 5 * 60 * 1000;
/// How long a login waits for a free password check before it is refused as busy.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Guards the password checks: failed attempts per login name and per client address,
/// counted before the password is checked (so parallel attempts cannot get past the
/// lock), and a cap on Argon2 checks running at once (19 MiB each). In memory: a restart
/// forgets the failures, which only helps someone who can restart the server.
#[derive(Debug, Clone)]
pub(crate) struct LoginThrottle {
    names: AttemptLimiter<String>,
    addresses: AttemptLimiter<IpAddr>,
    checks: Arc<Semaphore>,
    running: IntGauge,
}

impl LoginThrottle {
    pub(crate) fn new(limits: &ConnectionLimits) -> Self {
        let permits = usize::try_from(limits.login_concurrency.max(1)).unwrap_or(1);
        Self {
            names: AttemptLimiter::new(
                MAX_FAILED_ATTEMPTS,
                LOCKOUT_MS,
                FORGET_AFTER_MS,
                MAX_TRACKED,
            ),
            addresses: AttemptLimiter::new(
                limits.login_failures_per_address,
                ADDRESS_LOCKOUT_MS,
                FORGET_AFTER_MS,
                MAX_TRACKED,
            ),
            checks: Arc::new(Semaphore::new(permits)),
            running: IntGauge::new(
                "kepu_password_checks_running",
                "Web login password checks (Argon2) running now",
            )
            .expect("a valid metric name"),
        }
    }

    /// Counts an attempt on `login` from `client` before its password is checked.
    fn begin(&self, login: &str, client: ClientAddr, now: i64) -> Result<()> {
        if let Some(ip) = client.0 {
            self.addresses
                .begin(&ip, now)
                .map_err(|_| Error::TooManyAttempts)?;
        }
        let name = login.to_owned();
        if self.names.begin(&name, now).is_err() {
            if let Some(ip) = client.0 {
                self.addresses.succeeded(&ip);
            }
            return Err(Error::TooManyAttempts);
        }
        Ok(())
    }

    fn succeeded(&self, login: &str, client: ClientAddr) {
        self.names.forget(&login.to_owned());
        if let Some(ip) = client.0 {
            self.addresses.succeeded(&ip);
        }
    }

    /// The attempt was not a guess after all (the check could not run): it does not count.
    fn not_counted(&self, login: &str, client: ClientAddr) {
        self.names.succeeded(&login.to_owned());
        if let Some(ip) = client.0 {
            self.addresses.succeeded(&ip);
        }
    }

    /// Runs `check` on the blocking pool once one of the few check slots is free.
    async fn check<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = tokio::time::timeout(CHECK_WAIT, Arc::clone(&self.checks).acquire_owned())
            .await
            .map_err(|_| Error::Unavailable("too many logins at once; try again"))?
            .map_err(|_| Error::Unavailable("password checks stopped"))?;
        let running = self.running.clone();
        tokio::task::spawn_blocking(move || {
            running.inc();
            let out = check();
            running.dec();
            drop(permit);
            out
        })
        .await
        .map_err(|_| Error::Unavailable("password check stopped"))
    }
}

/// Checks a login name: 3–64 characters of `a-z 0-9 . _ -`, lower case.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn check_login_name(login: &str) -> Result<()> {
    // The length first: a name of megabytes is refused without reading it.
    let ok = (3..=64).contains(&login.len())
        && login.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        });
    if !ok {
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
        let hash = self
            .throttle
            .check(move || hash_password(&password))
            .await??;
        self.store
            .set_web_login(user_id, login, &hash, now_ms())
            .await?;
        tracing::info!(user = %user_id, "web login set");
        Ok(())
    }

    /// Logs in with a login name and password from a client address; the same error
    /// whether the name is unknown or the password wrong. After [`MAX_FAILED_ATTEMPTS`]
    /// failures the name is locked for [`LOCKOUT_MS`], and after the configured number of
    /// failures from one address the address is locked for [`ADDRESS_LOCKOUT_MS`]. A
    /// name that cannot exist (see [`check_login_name`]) fails at once and is not
    /// remembered.
    ///
    /// # Errors
    /// [`Error::LoginFailed`], [`Error::TooManyAttempts`], [`Error::Unavailable`] when
    /// too many password checks are waiting, a database failure.
    pub async fn log_in(
        &self,
        login: &str,
        password: &str,
        client: ClientAddr,
    ) -> Result<NewSession> {
        let login = login.trim();
        if check_login_name(login).is_err() || password.len() > 1024 {
            return Err(Error::LoginFailed);
        }
        let now = now_ms();
        self.throttle.begin(login, client, now)?;
        // The name's attempts are counted in the database too, so that several nodes
        // behind a load balancer lock a name together (ADR 0120).
        match self
            .store
            .count_login_attempt(login, now, MAX_FAILED_ATTEMPTS, LOCKOUT_MS, FORGET_AFTER_MS)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.throttle.not_counted(login, client);
                return Err(Error::TooManyAttempts);
            }
            Err(e) => {
                self.throttle.not_counted(login, client);
                return Err(e);
            }
        }
        let record = match self.store.web_login(login).await {
            Ok(record) => record,
            Err(e) => {
                self.not_counted(login, client).await;
                return Err(e);
            }
        };
        let stored = record.as_ref().map(|r| r.password_hash.clone());
        let password = password.to_owned();
        // The decoy is hashed (once) inside the check too, off the async threads.
        let matches = match self
            .throttle
            .check(move || verify_password(&password, stored.as_deref().unwrap_or(decoy_hash())))
            .await
        {
            Ok(matches) => matches,
            Err(e) => {
                self.not_counted(login, client).await;
                return Err(e);
            }
        };
        let Some(record) = record.filter(|_| matches) else {
            return Err(Error::LoginFailed);
        };
        self.throttle.succeeded(login, client);
        self.store.clear_login_failures(login).await?;
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

    /// An attempt that was not a guess after all, given back here and in the database.
    async fn not_counted(&self, login: &str, client: ClientAddr) {
        self.throttle.not_counted(login, client);
        if let Err(e) = self.store.uncount_login_attempt(login).await {
            tracing::warn!(error = %e, "could not give back a login attempt");
        }
    }

    /// The gauge of password checks running now (`kepu_password_checks_running`).
    #[must_use]
    pub fn password_checks_running(&self) -> IntGauge {
        self.throttle.running.clone()
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

    fn address(text: &str) -> ClientAddr {
        ClientAddr::of(text.parse().expect("an address"))
    }

    #[test]
    fn throttle_locks_names_and_addresses_and_forgets_names_on_success() {
        let limits = ConnectionLimits {
            login_failures_per_address: 7,
            ..ConnectionLimits::default()
        };
        let t = LoginThrottle::new(&limits);
        let a = address("10.0.0.1");
        for _ in 0..MAX_FAILED_ATTEMPTS {
            assert!(t.begin("x", a, 1).is_ok());
        }
        assert!(matches!(t.begin("x", a, 2), Err(Error::TooManyAttempts)));
        assert!(t.begin("x", a, 2 + LOCKOUT_MS).is_ok());
        assert!(t.begin("y", a, 3).is_ok());
        t.succeeded("y", a);
        assert!(t.begin("y", a, 4).is_ok());
        // Seven failures from this address (the refused attempt did not count): locked,
        // whatever the name; another address is not.
        assert!(matches!(t.begin("z", a, 5), Err(Error::TooManyAttempts)));
        assert!(t.begin("z", address("10.0.0.2"), 5).is_ok());
    }
}
