//! What the tests that compare kepu's sync functions with automerge's share: a seeded
//! random source, one edit, and the document every conversation starts from.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};

/// A number below `m`, from a xorshift sequence started at `seed` (never 0): the same
/// seed gives the same conversation.
pub(crate) fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut rng = seed;
    move |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    }
}

/// One change that puts `n` at `key` of the root.
pub(crate) fn edit(doc: &mut Automerge, key: &str, n: i64) {
    let mut tx = doc.transaction();
    tx.put(ROOT, key, n).expect("put");
    tx.commit();
}

/// The document the conversations start from: one change by a creator.
pub(crate) fn created() -> Automerge {
    let mut d = Automerge::new().with_actor(ActorId::from(vec![0xAA; 16]));
    edit(&mut d, "created", 1);
    d
}
