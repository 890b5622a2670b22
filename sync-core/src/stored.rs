//! One way to rebuild a document from what storage holds: its latest snapshot (after a
//! compaction) and its change rows. The engine, the server's records and the phone
//! library all load documents through [`restore`]. A snapshot or change row that does
//! not parse is reported in [`Restored::problems`] for the caller to log and count; the
//! rest of the document is loaded.

use automerge::{Automerge, Change, ChangeHash};

use crate::engine::StoredChange;

/// Why part of a stored document could not be read. Names change hashes and automerge's
/// error, never document content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadProblem {
    /// The snapshot does not load: the document is rebuilt from its change rows alone.
    #[error("stored snapshot does not load: {0}")]
    Snapshot(String),
    /// A change row does not parse as an automerge change: it is left out.
    #[error("stored change row {} does not parse: {error}", hex::encode(hash.0))]
    Row {
        /// The hash the row is stored under.
        hash: ChangeHash,
        /// automerge's reason.
        error: String,
    },
    /// automerge refused to apply the rows that parsed.
    #[error("stored changes do not apply: {0}")]
    Apply(String),
}

/// A document rebuilt from storage.
#[derive(Debug)]
pub struct Restored {
    /// The document (empty when nothing could be read).
    pub doc: Automerge,
    /// The stored hashes of the change rows that parsed, in the order given.
    pub rows: Vec<ChangeHash>,
    /// What could not be read; empty when everything loaded.
    pub problems: Vec<LoadProblem>,
}

/// Rebuilds a document from its `snapshot` (if any) and its change `rows` (in any
/// order; rows the snapshot already holds are harmless).
#[must_use]
pub fn restore(snapshot: Option<&[u8]>, rows: impl IntoIterator<Item = StoredChange>) -> Restored {
    let mut problems = Vec::new();
    let mut doc = match snapshot.map(Automerge::load) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(LoadProblem::Snapshot(e.to_string()));
            Automerge::new()
        }
        None => Automerge::new(),
    };
    let mut hashes = Vec::new();
    let mut changes = Vec::new();
    for row in rows {
        match Change::from_bytes(row.bytes) {
            Ok(c) => {
                hashes.push(row.hash);
                changes.push(c);
            }
            Err(e) => problems.push(LoadProblem::Row {
                hash: row.hash,
                error: e.to_string(),
            }),
        }
    }
    if let Err(e) = doc.apply_changes(changes) {
        problems.push(LoadProblem::Apply(e.to_string()));
    }
    Restored {
        doc,
        rows: hashes,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    use super::*;

    fn rows(doc: &Automerge) -> Vec<StoredChange> {
        doc.get_changes(&[])
            .into_iter()
            .map(|c| StoredChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .collect()
    }

    fn two_fields() -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "topic", "optics").unwrap();
        tx.commit();
        let mut tx = doc.transaction();
        tx.put(ROOT, "room", "hall 2").unwrap();
        tx.commit();
        doc
    }

    #[test]
    fn a_corrupted_change_row_is_reported_and_the_good_ones_load() {
        let original = two_fields();
        let mut stored = rows(&original);
        let bad = ChangeHash([7; 32]);
        stored.insert(
            1,
            StoredChange {
                hash: bad,
                bytes: b"not an automerge change".to_vec(),
            },
        );
        let r = restore(None, stored);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(matches!(&r.problems[0], LoadProblem::Row { hash, .. } if *hash == bad));
        assert!(r.problems[0].to_string().contains(&hex::encode(bad.0)));
        assert_eq!(r.rows.len(), 2);
        assert!(!r.rows.contains(&bad));
        assert_eq!(r.doc.get_heads(), original.get_heads());
        assert!(r.doc.get(ROOT, "room").unwrap().is_some());
    }

    #[test]
    fn a_corrupted_snapshot_is_reported_and_the_rows_still_load() {
        let original = two_fields();
        let r = restore(Some(b"garbage snapshot".as_slice()), rows(&original));
        assert!(matches!(r.problems.as_slice(), [LoadProblem::Snapshot(_)]));
        assert_eq!(r.doc.get_heads(), original.get_heads());
    }

    #[test]
    fn a_snapshot_and_its_later_rows_load_without_problems() {
        let mut doc = two_fields();
        let snapshot = doc.save();
        let before = doc.get_heads();
        let mut tx = doc.transaction();
        tx.put(ROOT, "seats", 30_i64).unwrap();
        tx.commit();
        let later: Vec<StoredChange> = doc
            .get_changes(&before)
            .into_iter()
            .map(|c| StoredChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .collect();
        let r = restore(Some(&snapshot), later);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.doc.get_heads(), doc.get_heads());
    }
}
