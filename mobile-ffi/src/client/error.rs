//! The client core's rich error. [`crate::api::ApiError`] is its small public face,
//! converted in one place.

/// What went wrong inside the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another storage failure (file system, a task the engine reported as failed).
    #[error("storage: {0}")]
    Storage(String),
    /// The server could not be reached or the connection broke.
    #[error("network: {0}")]
    Network(String),
    /// The server refused (enrollment code, revoked device, refused changes).
    #[error("refused: {0}")]
    Rejected(String),
    /// The caller passed something unusable (a forged or expired code, a bad id).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The device is not enrolled yet (or was wiped).
    #[error("device is not enrolled")]
    NotEnrolled,
    /// The server did not accept this device's credentials but did not say the device is
    /// revoked (a missing or unknown token: a proxy that drops the header, a server
    /// restored from an older backup). Nothing local is touched; the reason is the
    /// server's code (`missing_token`, `invalid_token`) or `http-<status>`.
    #[error("not accepted by the server: {0}")]
    Auth(String),
    /// The server refused to sync with this app version: it is below the minimum the
    /// server set for the device's role (`app-too-old`). Nothing local is touched; the
    /// work waits until the app is updated to `minimum` or later.
    #[error("this app is too old; update it to version {minimum} or later")]
    AppTooOld {
        /// The lowest version the server accepts for this device's role.
        minimum: String,
    },
    /// Another client (in this process or another one) has this store open.
    #[error("the store is in use by another client")]
    StoreInUse,
    /// The device was revoked; its local data has been wiped.
    #[error("device revoked; local data wiped")]
    Revoked,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
