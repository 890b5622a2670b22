//! The records pipeline: what the relational records hold for each document, and how
//! they follow the documents.
//!
//! - [`project`] (pure): a merged document's records, computed by the same sync-core
//!   rules every device runs.
//! - [`write`]: writing them through the store (all SQL lives in `store/`, these
//!   queries in `store/records.rs`), one transaction per document: a booking's row, its
//!   roster, scans and anomalies together.
//! - [`capacity`]: after a booking's records are written, the server's capacity decision
//!   for its slot as the edits to write back into the bookings (the rule itself is
//!   `kepu_sync_core::rules::capacity::edits`, which the simulator's scenarios use too).
//! - [`rebuild`]: every document's records again from the stored documents (`kepu-server
//!   admin rebuild-projections`), and, at start, those a crash left behind.

pub mod capacity;
pub mod project;
pub mod rebuild;
pub mod write;

pub use project::{Projection, Projector, project};
pub use rebuild::{load, rebuild, reproject_stale};
pub use write::write;
