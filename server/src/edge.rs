//! Edge boxes at venues (ADR 0150): a small machine at a venue without a dependable
//! internet link serves the venue's phones and gates on the local network, with the same
//! `/sync` endpoint and validation as the province's server, and syncs the venue's
//! documents with that server (the upstream) whenever it can reach it.
//!
//! - [`upstream`]: the upstream's side. Edge users (`admin create-edge`), the roster of
//!   a venue an edge fetches (`GET /api/edge/roster`), the actor ids it reports for its
//!   devices (`POST /api/edge/actors`), and the relay roster set in the engine shards'
//!   [`Shared`](kepu_sync_core::engine::shared::Shared) state: an edge's changes are
//!   accepted only under actor ids of its roster's devices and validated as theirs.
//! - [`link`]: the edge's side. Enrollment, the roster written into the edge's own
//!   tables (so that devices' upstream tokens work there), and the link: a client-mode
//!   engine over the edge's own database that syncs the venue's documents upstream.
//! - [`relay`]: the relay roster of an edge set in the engine shards when it connects.
//! - [`state`]: how long the edge has been cut off (the banner on the live page), and
//!   whether its enrollment was revoked; [`status`]: its route (`GET /api/edge/status`)
//!   and an edge that was revoked refusing to serve.

pub mod link;
pub mod relay;
pub mod state;
pub mod status;
pub mod upstream;

pub use upstream::create;
