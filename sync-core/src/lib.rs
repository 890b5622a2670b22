//! kepu sync core.
pub mod calendar;
pub mod doc_id;
pub mod doc_read;
pub mod edits;
pub mod engine;
pub mod generate;
#[cfg(feature = "testing")]
pub mod golden;
pub mod ids;
#[cfg(feature = "testing")]
pub mod mem_store;
pub mod proof;
pub mod receive;
pub mod refusal;
pub mod rules;
pub mod schema;
#[cfg(feature = "testing")]
pub mod sim;
pub mod stored;
#[cfg(test)]
mod test_conversations;
#[cfg(test)]
mod test_writers;
pub mod validate;
pub mod wire;
pub mod writer;
