//! The capacity decision for a slot, first come first served, over its bookings' records
//! in the order the server received them.

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::SlotId;
use kepu_sync_core::rules::capacity::{SlotRequest, edits};

use crate::error::Result;
use crate::store::Store;

/// The `Edit::Decide`s the server writes, as its own change, into the bookings of `slot`
/// whose status or place on the wait list the decision changes. Nothing when the slot is
/// unknown (its venue's records are not written yet).
///
/// # Errors
/// A database failure.
pub async fn slot_edits(store: &Store, slot: SlotId) -> Result<Vec<(DocumentId, Edit)>> {
    let Some((capacity, bookings)) = store.slot_bookings(slot).await? else {
        return Ok(Vec::new());
    };
    let requests: Vec<SlotRequest<DocumentId>> = bookings
        .iter()
        .map(|b| SlotRequest {
            booking: b.doc,
            party_size: b.party_size,
            status: b.status,
            wait_position: b.wait_position,
        })
        .collect();
    Ok(edits(capacity, &requests))
}
