//! Rebuilding the records from the stored documents (`kepu-server admin
//! rebuild-projections`): venues first (bookings read their slots), then the rest; and,
//! at start, recomputing the records a crash left behind their documents.

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;

use super::project::{Projection, project};
use super::write::write;
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::Store;

/// Loads a stored document into memory.
///
/// # Errors
/// A database failure.
pub async fn load(store: &Store, doc: DocumentId) -> Result<Automerge> {
    let loaded = store.load_document(doc).await?;
    let restored = kepu_sync_core::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
    for problem in &restored.problems {
        tracing::error!(doc = %doc, problem = %problem, "stored document partly unreadable");
    }
    Ok(restored.doc)
}

/// Recomputes every projection. Returns the number of documents projected.
///
/// # Errors
/// A database failure.
pub async fn rebuild(store: &Store) -> Result<usize> {
    let docs = store.document_ids().await?;
    store.clear_records().await?;
    let mut n = 0;
    for pass in ["venue", "other"] {
        for (doc, kind) in &docs {
            if (kind == "venue") != (pass == "venue") {
                continue;
            }
            let d = load(store, *doc).await?;
            let p = project(*doc, &d);
            if p != Projection::Nothing {
                n += 1;
            }
            write(store, *doc, &p, Some(&d.get_heads()), now_ms()).await?;
        }
    }
    Ok(n)
}

/// Recomputes the records of the documents whose stored changes are newer than their
/// records: after a crash between storing changes (and acknowledging them) and writing
/// the records. Run at start, before serving. Returns the number of documents.
///
/// # Errors
/// A database failure.
pub async fn reproject_stale(store: &Store) -> Result<usize> {
    let stale = store.stale_projections().await?;
    for doc in &stale {
        let d = load(store, *doc).await?;
        let p = project(*doc, &d);
        write(store, *doc, &p, Some(&d.get_heads()), now_ms()).await?;
    }
    Ok(stale.len())
}
