//! kepu sync core.
pub mod ids;
