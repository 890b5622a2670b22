//! The server's one error type. Messages name their data but never personal data
//! (names, tokens, codes); the HTTP mapping lives in `http/error_response.rs`.

/// Everything that can go wrong in the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed (connection, constraint, query).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file or socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration cannot be used.
    #[error("configuration error: {0}")]
    Config(String),
    /// A referenced record does not exist.
    #[error("unknown {kind} {id}")]
    NotFound {
        /// What was looked up (`school`, `device`, …).
        kind: &'static str,
        /// Its id (never a name).
        id: String,
    },
    /// The request is malformed or breaks a rule.
    #[error("{0}")]
    InvalidInput(String),
    /// The record already exists (e.g. a name taken within its county).
    #[error("{0}")]
    Conflict(String),
    /// An enrollment code is malformed, unknown, used or expired (not told apart).
    #[error("enrollment code is invalid, used or expired")]
    EnrollmentCodeRejected,
    /// The caller could not be authenticated.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A web login failed: unknown name or wrong password (not told apart).
    #[error("login name or password is wrong")]
    LoginFailed,
    /// Too many failed attempts on one login name or from one client address; try again
    /// later.
    #[error("too many failed attempts; try again later")]
    TooManyAttempts,
    /// The caller already holds as many open connections (or streams) of this kind as it
    /// may; the text says which.
    #[error("too many open connections: {0}")]
    TooManyConnections(&'static str),
    /// A page or API call needs a logged-in user (session cookie or bearer token).
    #[error("log in first")]
    NotLoggedIn,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The caller is authenticated but may not do this.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The service cannot take the request now (limits, shutdown).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// The device's app is older than its role's minimum version (the minimum is named:
    /// it is what the device must be updated to).
    #[error("this app is too old; update it to version {minimum} or later")]
    AppTooOld {
        /// The role's minimum version.
        minimum: String,
    },
    /// A stored value does not parse (corrupt or foreign data).
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// Changes were to be stored under actor ids that the shared claim table gives to
    /// other devices (another node claimed them first); nothing was stored. Carries the
    /// table's owners of those actor ids, for the engine to learn.
    #[error("an actor id of these changes belongs to another device")]
    ActorClaimed(Vec<(Vec<u8>, kepu_sync_core::ids::DeviceId)>),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A not-found error for the given kind and id.
    pub fn not_found(kind: &'static str, id: impl std::fmt::Display) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// Maps unique-constraint violations to [`Error::Conflict`] with the given message.
    #[must_use]
    pub fn conflict_if_unique(self, message: &str) -> Self {
        match &self {
            Self::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Self::Conflict(message.to_owned())
            }
            _ => self,
        }
    }
}

/// Why a request or connection is not authenticated. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed or unknown.
    #[error("invalid token")]
    Invalid,
    /// The device was revoked (or its user erased).
    #[error("device revoked")]
    Revoked,
    /// The store failed while checking.
    #[error("authentication store failure: {0}")]
    Store(Box<Error>),
}
