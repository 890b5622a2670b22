//! kepu on phones and gate tablets.
//!
//! - [`client::store`]: one SQLite file (WAL, `synchronous = FULL`, versioned upgrades)
//!   that runs the sync engine's storage tasks.
//! - [`client::core`]: the store and sync-core's sans-IO engine (client mode) behind one
//!   lock; a write returns once it is on disk; listeners.
//! - [`client::net`]: the websocket client (automerge-repo protocol v1, bearer token),
//!   one-shot sync and background sync with backoff; revocation wipes the store.
//! - [`client::enroll`]: `POST /api/enroll` with the code from a QR.
//! - [`client::identity`]: the enrolled identity and this install's actor and storage ids.
//! - [`client::actions`]: check-ins (gate code, pupil pass), check-outs, rosters,
//!   booking requests, volunteer activities and minutes.
//! - [`api`]: the uniffi surface (`KepuClient`, records, `ApiError`, observers).
//! - [`logging`]: the app's log sink (`set_log_sink`): logcat / `os_log` get the
//!   library's lines on a log thread of its own.
//! - `test_server` (feature `test-server`): an in-process server for tests.

uniffi::setup_scaffolding!();

pub mod api;
pub mod client;
pub mod logging;
#[cfg(feature = "test-server")]
pub mod test_server;

pub use api::{ApiError, KepuClient};
