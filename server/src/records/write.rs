//! Writing a document's records: each kind through its own store call, one transaction
//! per document.

use automerge::ChangeHash;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::SlotId;

use super::project::Projection;
use crate::error::Result;
use crate::store::Store;

/// Replaces the records of one document, and with `at`, notes in the same transaction
/// the heads they were computed at (`Store::mark_projected`). Returns the slot of a
/// booking whose capacity decision the caller should run again: when what the decision
/// reads of the booking changed, or this process does not know (ADR 0188).
///
/// # Errors
/// A database failure.
pub async fn write(
    store: &Store,
    doc: DocumentId,
    projection: &Projection,
    at: Option<&[ChangeHash]>,
    now: i64,
) -> Result<Option<SlotId>> {
    match projection {
        Projection::Nothing => {
            if let Some(heads) = at {
                store.mark_projected(doc, heads).await?;
            }
            return Ok(None);
        }
        Projection::Venue(v) => store.write_venue_records(doc, v, now, at).await?,
        Projection::Booking(b) => {
            let due = store.write_booking_records(doc, b, now, at).await?;
            return Ok(due.then_some(b.slot));
        }
        Projection::ActivityLog(log) => store.write_activity_records(doc, log, at).await?,
        Projection::SchoolLog(log) => store.write_school_log_records(doc, log, at).await?,
    }
    Ok(None)
}
