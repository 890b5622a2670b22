//! Websocket sync: the hub that drives the sync-core engine for every connected device,
//! the storage worker that runs its tasks in batched transactions and keeps the
//! projections and booking decisions up to date, and the `/sync` endpoint.
//!
//! - [`hub`]: one task owns the [`Engine`](kepu_sync_core::engine::Engine); connections
//!   talk to it through channels, so the engine never waits on a socket or the database.
//! - [`worker`]: runs storage tasks (many devices' appends in one transaction), answers
//!   the engine, projects changed documents and decides bookings.
//! - [`inbox`]: the messages the hub takes and the handle ([`SyncHub`]) sessions, the
//!   worker and the server's documents use to reach it without depending on the hub.
//! - [`ws`]: authentication at the upgrade, limits, keepalive, graceful close.
//! - [`socket`]: the websocket upgrade, and large messages sent in pieces (ADR 0192).
//! - [`derived`]: the ids at which the server creates documents itself.
//! - [`documents`]: documents the server itself creates (venues, the revocation list).
//! - `touches`: devices' last sync times, written many at a time (ADR 0186).

pub mod derived;
pub mod documents;
pub mod hub;
pub mod inbox;
pub mod socket;
pub(crate) mod touches;
pub mod worker;
pub mod ws;

pub use hub::{HubConfig, SyncHub};
