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
