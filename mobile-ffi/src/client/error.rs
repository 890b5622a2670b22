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
    /// The server refused (enrollment code, a pinned key that does not match).
    #[error("refused: {0}")]
    Rejected(String),
    /// The document rules refused an edit (this device's own validation, the same the
    /// server runs): the machine-readable code and where in the document.
    #[error("refused: {code} at {path}")]
    Refused {
        /// Why.
        code: kepu_sync_core::refusal::RefusalCode,
        /// Where (`check_in_records/<device>/<pupil>/<scan id>`), never a value.
        path: String,
    },
    /// The device's clock is off: a code valid at the gate's time is outside its window
    /// at the device's. `offset_ms` is what to add to the device's clock (about).
    #[error("the device clock is off by {0} ms")]
    ClockSkew(i64),
    /// Something this call needs has not reached the device yet (sync first): what.
    #[error("not synced yet: {0}")]
    NotSynced(&'static str),
    /// The device is full: nothing was written.
    #[error("storage full")]
    StorageFull,
    /// This install is already enrolled.
    #[error("this device is already enrolled")]
    AlreadyEnrolled,
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
    /// `sign_out` found this many local changes the server has not acknowledged;
    /// nothing was touched.
    #[error("{0} local changes are not synced yet")]
    UnsyncedWork(u64),
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
