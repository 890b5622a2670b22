//! Generating a sync message: automerge's `generate_sync_message`, except that a whole
//! document sent to a peer is saved once for every peer that needs it at the same heads
//! (ADR 0196).
//!
//! automerge 0.12 sends a peer the whole document, saved and compressed, when the peer has
//! nothing or is missing more than a third of the document's changes. It saves the
//! document for each such message. At the end of day every device of a booking comes back
//! with a day of check-ins: after each device's day is merged, each of the booking's other
//! devices misses most of the document, and the server saved the same document at the
//! same heads once per device (a tenth of its CPU, 210 of 327 saves repeated in one run).
//!
//! Here the message automerge would send is recognised before it is built, following
//! automerge 0.12 step by step (the changes the peer lacks, counted as automerge counts
//! them), and built from [`LastSave`]: the document saved at its current heads, kept from
//! the last such message. Every other message is automerge's own. `tests` compares both
//! on the same conversations, byte for byte and state for state.

use std::collections::HashSet;

use automerge::sync::{self, BloomFilter, Capability, Have, MessageFlags, MessageVersion, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};

/// The document last saved for a peer: its heads, the saved bytes and the hashes of every
/// change they hold. One is kept (per engine): the saves worth sharing are those of the
/// peers of one document answered one after the other.
#[derive(Debug, Default)]
pub struct LastSave {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    hashes: Vec<ChangeHash>,
    saves: u64,
    reused: u64,
}

impl LastSave {
    /// Whole documents saved for peers so far.
    #[must_use]
    pub fn saves(&self) -> u64 {
        self.saves
    }

    /// Whole documents sent from an earlier save at the same heads.
    #[must_use]
    pub fn reused(&self) -> u64 {
        self.reused
    }

    /// Bytes held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.bytes.capacity() + self.hashes.capacity() * std::mem::size_of::<ChangeHash>()
    }

    fn of(&mut self, doc: &Automerge, heads: &[ChangeHash]) -> (&[u8], &[ChangeHash]) {
        if self.heads == heads && !self.bytes.is_empty() {
            self.reused += 1;
        } else {
            self.saves += 1;
            self.bytes = doc.save();
            self.hashes = doc
                .get_changes_meta(&[])
                .into_iter()
                .map(|m| m.hash)
                .collect();
            self.heads = heads.to_vec();
        }
        (&self.bytes, &self.hashes)
    }
}

/// Our next sync message for the peer of `state`, as automerge's `generate_sync_message`
/// makes it; a whole document comes from `last` when it was saved at `doc`'s heads.
pub fn generate_sync_message(
    doc: &Automerge,
    state: &mut sync::State,
    last: &mut LastSave,
) -> Option<sync::Message> {
    let Some(plan) = whole_document(doc, state) else {
        return doc.generate_sync_message(state);
    };
    let Whole { heads, need, have } = plan?;
    let (bytes, hashes) = last.of(doc, &heads);
    let changes = bytes.to_vec();
    state.have_responded = true;
    state.last_sent_heads.clone_from(&heads);
    state.sent_hashes.extend(hashes.iter().copied());
    let mut flags = MessageFlags::new();
    flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
    if state.read_only {
        flags.set(MessageFlags::READ_ONLY);
    }
    let heads = if state.needs_reset {
        state.needs_reset = false;
        if has_capability(state, &Capability::SyncReset) {
            flags.set(MessageFlags::SYNC_RESET);
            heads
        } else {
            Vec::new()
        }
    } else {
        heads
    };
    state.in_flight = true;
    Some(sync::Message {
        heads,
        need,
        have,
        changes: vec![changes].into(),
        flags: Some(flags),
        version: MessageVersion::V2,
    })
}

/// The parts of a whole-document message besides the document.
struct Whole {
    heads: Vec<ChangeHash>,
    need: Vec<ChangeHash>,
    have: Vec<Have>,
}

/// `None`: automerge's own message (not a whole document, or a case this does not
/// follow). `Some(None)`: automerge would save the whole document and then send nothing
/// (a message is in flight and our heads have not moved). `Some(Some(_))`: it would send
/// the whole document with these heads, need and have.
fn whole_document(doc: &Automerge, state: &sync::State) -> Option<Option<Whole>> {
    let heads = doc.get_heads();
    if heads.is_empty() || state.is_peer_read_only() {
        return None;
    }
    let (Some(their_have), Some(their_need)) = (&state.their_have, &state.their_need) else {
        return None;
    };
    if !has_capability(state, &Capability::MessageV2) {
        return None;
    }
    // Changes waiting for their dependencies change what we need; automerge's own answer.
    if !doc.get_missing_deps(&[]).is_empty() {
        return None;
    }
    // A peer naming a last sync we do not hold gets automerge's reset message.
    if let Some(first) = their_have.first()
        && !first.last_sync.iter().all(|h| holds(doc, h))
    {
        return None;
    }
    let send_doc = state.their_heads.as_deref() == Some(&[]);
    if !send_doc {
        let sent = &state.sent_hashes;
        let to_send = hashes_to_send(doc, their_have, their_need)
            .into_iter()
            .filter(|h| !sent.contains(h))
            .count();
        let changes = usize::try_from(doc.stats().num_changes).unwrap_or(usize::MAX);
        if to_send <= changes / 3 {
            return None;
        }
    }
    if state.last_sent_heads == heads && state.have_responded && state.in_flight {
        return Some(None);
    }
    let need = if state.read_only {
        Vec::new()
    } else {
        doc.get_missing_deps(state.their_heads.as_deref().unwrap_or(&[]))
    };
    let theirs: HashSet<&ChangeHash> = state.their_heads.iter().flatten().collect();
    let have = if need.iter().all(|h| theirs.contains(h)) {
        let known = doc.get_changes_meta(&state.shared_heads);
        vec![Have {
            last_sync: state.shared_heads.clone(),
            bloom: BloomFilter::from_hashes(known.iter().map(|m| m.hash)),
        }]
    } else {
        Vec::new()
    };
    Some(Some(Whole { heads, need, have }))
}

/// The changes automerge would send a peer with this have and need, before it leaves out
/// those already sent: what it asked for that we hold, and every change since its last
/// sync that its bloom filters do not hold, with the changes that depend on them.
///
/// automerge finds the dependents by a map from each change to those depending on it and
/// a walk from the changes the filters lack. The changes since the last sync come in the
/// order they were applied (`get_changes_meta` lists them so), each after its
/// dependencies, so one pass in that order marks the same changes: a change is sent when
/// the filters lack it or when a change it depends on is sent.
fn hashes_to_send(doc: &Automerge, have: &[Have], need: &[ChangeHash]) -> Vec<ChangeHash> {
    let need: Vec<ChangeHash> = need.iter().filter(|h| holds(doc, h)).copied().collect();
    if have.is_empty() {
        return need;
    }
    let last_sync: Vec<ChangeHash> = have
        .iter()
        .flat_map(|h| h.last_sync.iter().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let since = doc.get_changes_meta(&last_sync);
    let mut send: HashSet<ChangeHash> = HashSet::with_capacity(since.len());
    let mut out: Vec<ChangeHash> = Vec::new();
    for m in &since {
        let lacked = have.iter().all(|h| !h.bloom.contains_hash(&m.hash));
        if lacked || m.deps.iter().any(|d| send.contains(d)) {
            send.insert(m.hash);
            out.push(m.hash);
        }
    }
    let mut all: Vec<ChangeHash> = need.into_iter().filter(|h| !send.contains(h)).collect();
    all.append(&mut out);
    all
}

/// Is `hash` a change applied to `doc`?
fn holds(doc: &Automerge, hash: &ChangeHash) -> bool {
    doc.get_change_meta_by_hash(hash).is_some()
}

fn has_capability(state: &sync::State, cap: &Capability) -> bool {
    state
        .their_capabilities
        .as_ref()
        .is_some_and(|caps| caps.contains(cap))
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;
