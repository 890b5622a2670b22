//! Accounts and devices: roles, enrollment codes, bearer tokens, authentication,
//! revocation, pupil import and erasure. [`Accounts`] is the service the HTTP API and the
//! admin CLI call; [`Authenticator`] is what the sync endpoint calls at the upgrade.

mod authenticator;
mod device_token;
mod enrollment;
mod enrollment_code;
mod erasure;
mod pupil_import;
mod role;
mod web_login;

pub use authenticator::{AuthError, Authenticator, DeviceIdentity, bearer_token};
pub use device_token::DeviceToken;
pub use enrollment::{DEFAULT_CODE_TTL_DAYS, Enrollment, IssuedCode};
pub use enrollment_code::EnrollmentCode;
pub use pupil_import::{ImportReport, PupilRow, RowError, parse_pupils_csv};
pub use role::{Role, UnknownRole};
pub use web_login::{
    ADDRESS_LOCKOUT_MS, LOCKOUT_MS, MAX_FAILED_ATTEMPTS, MIN_PASSWORD_CHARS, NewSession,
    SESSION_TTL_MS, check_login_name,
};

use crate::store::Store;

/// Account operations over a store, announcing revocations through the authenticator.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    authenticator: Authenticator,
    throttle: web_login::LoginThrottle,
}

impl Accounts {
    /// The service over `store`, with its own [`Authenticator`] and the default limits.
    #[must_use]
    pub fn new(store: Store) -> Self {
        Self::with_limits(store, &crate::config::ConnectionLimits::default())
    }

    /// The service over `store` with the login limits of `limits`.
    #[must_use]
    pub fn with_limits(store: Store, limits: &crate::config::ConnectionLimits) -> Self {
        let authenticator = Authenticator::new(store.clone());
        Self {
            store,
            authenticator,
            throttle: web_login::LoginThrottle::new(limits),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The authenticator (shares the revocation channel with this service).
    #[must_use]
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }
}
