//! kepu sync core.
pub mod ids;
pub mod doc_id;
pub mod wire;
pub mod proof;
pub mod doc_read;
pub mod edits;
pub mod schema;
pub mod validate;
pub mod writer;
pub mod rules;
