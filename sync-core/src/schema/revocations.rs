//! The server's list of revoked pupil passes, synced to every gate and teacher device so
//! that a revoked pass is refused offline.
//!
//! ```text
//! { kind: "revocations", schema, passes: { "<pupil>/<serial>": <revoked_at> } }
//! ```

use std::collections::BTreeSet;

use automerge::{ROOT, ReadDoc};

use crate::doc_read as r;
use crate::ids::PupilId;

/// Root key of the revoked passes.
pub const PASSES: &str = "passes";

/// The revoked passes with the time each was revoked (unix ms).
pub fn read_with_times<D: ReadDoc>(doc: &D) -> std::collections::BTreeMap<(PupilId, u32), i64> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(obj) = r::map(doc, &ROOT, PASSES) {
        for k in r::keys(doc, &obj) {
            if let Some((p, s)) = k.split_once('/')
                && let (Ok(p), Ok(s)) = (p.parse(), s.parse())
            {
                out.insert((p, s), r::int(doc, &obj, &k).unwrap_or(i64::MIN));
            }
        }
    }
    out
}

/// The revoked passes as (pupil, serial) pairs.
pub fn read<D: ReadDoc>(doc: &D) -> BTreeSet<(PupilId, u32)> {
    let mut out = BTreeSet::new();
    if let Some(obj) = r::map(doc, &ROOT, PASSES) {
        for k in r::keys(doc, &obj) {
            if let Some((p, s)) = k.split_once('/')
                && let (Ok(p), Ok(s)) = (p.parse(), s.parse())
            {
                out.insert((p, s));
            }
        }
    }
    out
}
