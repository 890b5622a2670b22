//! Receiving a sync message: what automerge's `receive_sync_message` does to the document
//! and the peer's sync state, without walking the document's whole history (ADR 0194).
//!
//! automerge 0.12 forgets the changes it sent a peer once the peer's heads show them
//! (`sent_hashes`) by visiting every ancestor of those heads: every change of the
//! document, for every message received, even when nothing was sent. In the live day a
//! booking has a change per check-in and every device's message walked all of them: half
//! of the merge's time on the server, and more on the devices. Here the same state is
//! reached from the heads' clock instead:
//!
//! - nothing was sent, or the peer named no head we hold: nothing to forget;
//! - the peer's heads are ours: it has every change we hold, so all we sent;
//! - otherwise we keep what `get_changes_meta(their heads)` lists, the changes the peer
//!   does not have, which automerge reads from a clock, not from a walk.
//!
//! A sent hash the document no longer holds (a merge rolled back) is forgotten too, where
//! automerge keeps it; it names a change that cannot be sent again either way. A hash the
//! peer needs is kept once, where automerge keeps every repeat and then panics building
//! the answer. Everything else (shared heads, the heads last sent, their heads, need and
//! have, the flags and capabilities) follows automerge 0.12 step by step; `tests`
//! compares both on the same conversations.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::sync::{self, Capability, MessageFlags};
use automerge::{Automerge, AutomergeError, ChangeHash, PatchLog};

/// Applies `message` from a peer to `doc` and `state`, as automerge's
/// `receive_sync_message_log_patches` does (see the module doc for the one difference).
///
/// # Errors
/// automerge's, when the changes cannot be loaded (some may have been applied).
pub fn receive_sync_message(
    doc: &mut Automerge,
    state: &mut sync::State,
    message: sync::Message,
    log: &mut PatchLog,
) -> Result<(), AutomergeError> {
    receive_sync_message_with(
        doc,
        state,
        message,
        log,
        &mut crate::generate::Replies::default(),
    )
}

/// [`receive_sync_message`], listing the changes the peer's heads lack through `replies`:
/// the answer to the same peer lists the same changes for its bloom filter (the peer's
/// heads are then our shared heads), and a list made for one is kept for the other.
///
/// # Errors
/// automerge's, when the changes cannot be loaded (some may have been applied).
pub fn receive_sync_message_with(
    doc: &mut Automerge,
    state: &mut sync::State,
    message: sync::Message,
    log: &mut PatchLog,
    replies: &mut crate::generate::Replies,
) -> Result<(), AutomergeError> {
    state.in_flight = false;
    let before = doc.get_heads();
    let sync::Message {
        heads,
        changes,
        need,
        have,
        flags,
        ..
    } = message;
    if let Some(flags) = flags {
        let mut caps = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            caps.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(caps);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    let brought = !changes.is_empty();
    if brought && !state.read_only {
        let mut joined = Vec::with_capacity(changes.iter().map(<[u8]>::len).sum());
        for c in changes.iter() {
            joined.extend_from_slice(c);
        }
        doc.load_incremental_log_patches(&joined, log)?;
        state.shared_heads = advance_heads(&before, &doc.get_heads(), &state.shared_heads);
    }
    // Each distinct head is looked up once: a message may name one head many times.
    let mut held: HashMap<ChangeHash, bool> = HashMap::new();
    let known: Vec<ChangeHash> = heads
        .iter()
        .copied()
        .filter(|h| *held.entry(*h).or_insert_with(|| applied(doc, h)))
        .collect();
    forget_seen(doc, &known, &mut state.sent_hashes, replies);
    if !brought && heads == before {
        state.last_sent_heads.clone_from(&heads);
    }
    if known.len() == heads.len() {
        state.shared_heads.clone_from(&heads);
        // A peer that lost everything starts over.
        if heads.is_empty() {
            state.last_sent_heads = Vec::new();
            state.sent_hashes = BTreeSet::new();
        }
    } else {
        let mut shared: Vec<ChangeHash> =
            state.shared_heads.iter().chain(&known).copied().collect();
        shared.sort_unstable();
        shared.dedup();
        state.shared_heads = shared;
    }
    state.their_have = Some(have);
    state.their_heads = Some(heads);
    // Each hash asked for once: automerge builds the changes asked for by hash and panics
    // on one asked for twice (its change collector finds no operations for the copy).
    let mut asked = HashSet::with_capacity(need.len());
    state.their_need = Some(need.into_iter().filter(|h| asked.insert(*h)).collect());
    Ok(())
}

/// Is `hash` a change applied to `doc` (not one waiting for its dependencies)?
pub(crate) fn applied(doc: &Automerge, hash: &ChangeHash) -> bool {
    doc.get_change_meta_by_hash(hash).is_some()
}

/// Forgets the sent changes that the heads `known` (all held by `doc`) include.
fn forget_seen(
    doc: &Automerge,
    known: &[ChangeHash],
    sent: &mut BTreeSet<ChangeHash>,
    replies: &mut crate::generate::Replies,
) {
    if sent.is_empty() || known.is_empty() {
        return;
    }
    let mut theirs = known.to_vec();
    theirs.sort_unstable();
    theirs.dedup();
    let heads = doc.get_heads();
    if theirs == heads {
        sent.clear();
        return;
    }
    let since = replies.since(doc, &heads, known);
    let missing: HashSet<&ChangeHash> = since.iter().map(|(h, _)| h).collect();
    sent.retain(|h| missing.contains(h));
}

/// The shared heads after applying changes: our new heads, and the shared heads that are
/// still heads.
fn advance_heads(
    before: &[ChangeHash],
    after: &[ChangeHash],
    shared: &[ChangeHash],
) -> Vec<ChangeHash> {
    let before: HashSet<&ChangeHash> = before.iter().collect();
    let after_set: HashSet<&ChangeHash> = after.iter().collect();
    let mut out: Vec<ChangeHash> = after
        .iter()
        .filter(|h| !before.contains(h))
        .chain(shared.iter().filter(|h| after_set.contains(h)))
        .copied()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;
    use automerge::sync::SyncDoc;

    use super::*;
    use crate::test_conversations::{created, edit, seeded};

    /// The server's side twice: one document and state per peer moved by automerge, the
    /// other by [`receive_sync_message`].
    struct Twins {
        stock: Automerge,
        ours: Automerge,
        stock_states: Vec<sync::State>,
        our_states: Vec<sync::State>,
    }

    /// Peers edit, sync with the server through both sides in rounds (some peers lag,
    /// one loses its state), and after every message the two sides must agree.
    fn converse(peers: usize, rounds: usize, seed: u64) {
        let mut next = seeded(seed);
        let base = created();
        let mut twins = Twins {
            stock: base.fork().with_actor(ActorId::from(vec![0xAB; 16])),
            ours: base.fork().with_actor(ActorId::from(vec![0xAB; 16])),
            stock_states: vec![sync::State::new(); peers],
            our_states: vec![sync::State::new(); peers],
        };
        let mut devices: Vec<(Automerge, sync::State)> = (0..peers)
            .map(|p| {
                let d = base.fork().with_actor(ActorId::from(vec![p as u8 + 1; 16]));
                (d, sync::State::new())
            })
            .collect();
        let mut partly = 0;
        let mut replies = crate::generate::Replies::default();
        for round in 0..rounds {
            for (p, (doc, state)) in devices.iter_mut().enumerate() {
                // Some devices sit a round out; one forgets its sync state now and then.
                if next(4) == 0 {
                    continue;
                }
                if next(10) == 0 {
                    *state = sync::State::new();
                }
                for k in 0..next(3) {
                    edit(
                        doc,
                        &format!("p{p}-{round}-{k}"),
                        i64::try_from(k).unwrap_or(0),
                    );
                }
                // The server edits too (a decision), on both sides alike.
                if next(5) == 0 {
                    let key = format!("server-{round}-{p}");
                    edit(&mut twins.stock, &key, 7);
                    edit(&mut twins.ours, &key, 7);
                }
                for _ in 0..4 {
                    let Some(msg) = doc.generate_sync_message(state) else {
                        break;
                    };
                    // Sent changes the peer has only part of: the clock path, not a
                    // shortcut.
                    if !twins.stock_states[p].sent_hashes.is_empty()
                        && msg.heads.iter().all(|h| applied(&twins.stock, h))
                        && !msg.heads.is_empty()
                        && msg.heads != twins.stock.get_heads()
                    {
                        partly += 1;
                    }
                    let bytes = msg.encode();
                    // Now and then the peer asks for a fresh sync, or says it is
                    // read-only; now and then the server's side is read-only for a message.
                    let mut flags = None;
                    if next(7) == 0 {
                        let mut f = MessageFlags::new();
                        f.set(MessageFlags::SYNC_RESET);
                        f.set(MessageFlags::SUPPORTS_SYNC_RESET);
                        flags = Some(f);
                    } else if next(9) == 0 {
                        let mut f = MessageFlags::new();
                        f.set(MessageFlags::READ_ONLY);
                        flags = Some(f);
                    }
                    let decoded = || {
                        let mut m = sync::Message::decode(&bytes).expect("decode");
                        if flags.is_some() {
                            m.flags = flags;
                        }
                        m
                    };
                    let read_only = next(11) == 0;
                    twins.stock_states[p].read_only = read_only;
                    twins.our_states[p].read_only = read_only;
                    let mut log_a = PatchLog::active();
                    let mut log_b = PatchLog::active();
                    twins
                        .stock
                        .receive_sync_message_log_patches(
                            &mut twins.stock_states[p],
                            decoded(),
                            &mut log_a,
                        )
                        .expect("stock");
                    // Our side shares what one answer listed with the next message and
                    // answer, of any peer, as the server's engine does.
                    receive_sync_message_with(
                        &mut twins.ours,
                        &mut twins.our_states[p],
                        decoded(),
                        &mut log_b,
                        &mut replies,
                    )
                    .expect("ours");
                    twins.stock_states[p].read_only = false;
                    twins.our_states[p].read_only = false;
                    assert_eq!(twins.ours.get_heads(), twins.stock.get_heads());
                    assert_eq!(
                        twins.our_states[p], twins.stock_states[p],
                        "seed {seed}, round {round}, peer {p}"
                    );
                    assert_eq!(
                        twins.ours.make_patches(&mut log_b),
                        twins.stock.make_patches(&mut log_a),
                        "the same patches"
                    );
                    let reply_a = twins
                        .stock
                        .generate_sync_message(&mut twins.stock_states[p]);
                    let reply_b = crate::generate::generate_sync_message(
                        &twins.ours,
                        &mut twins.our_states[p],
                        &mut replies,
                    );
                    assert_eq!(
                        reply_a.as_ref().map(|m| m.clone().encode()),
                        reply_b.as_ref().map(|m| m.clone().encode()),
                        "the same answer"
                    );
                    // Now and then the answer is lost on the way.
                    if let Some(reply) = reply_a
                        && next(6) != 0
                    {
                        doc.receive_sync_message(state, reply).expect("device");
                    }
                }
            }
        }
        assert!(
            twins.stock.get_changes(&[]).len() > rounds,
            "the conversation made changes"
        );
        assert!(partly > 0, "seed {seed}: no peer was ever partly behind");
    }

    #[test]
    fn the_server_side_agrees_with_automerge_on_every_message() {
        for seed in [1, 2, 3, 0x9E37_79B9, 0xDEAD_BEEF] {
            converse(4, 30, seed);
        }
    }

    #[test]
    fn a_head_named_many_times_is_looked_up_once_and_kept_as_sent() {
        let mut server = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
        edit(&mut server, "k", 1);
        let head = server.get_heads()[0];
        let mut stock = server.fork();
        let mut ours = server.fork();
        let message = |n: usize| sync::Message {
            heads: vec![head; n],
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::empty(),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        let (mut a, mut b) = (sync::State::new(), sync::State::new());
        stock
            .receive_sync_message(&mut a, message(50_000))
            .expect("stock");
        receive_sync_message(
            &mut ours,
            &mut b,
            message(50_000),
            &mut PatchLog::inactive(),
        )
        .expect("ours");
        assert_eq!(a, b);
        assert_eq!(b.their_heads.map(|h| h.len()), Some(50_000));
    }

    #[test]
    fn a_peer_with_our_heads_has_everything_we_sent() {
        let mut server = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
        for n in 0..20 {
            edit(&mut server, &format!("k{n}"), n);
        }
        let mut device = Automerge::new().with_actor(ActorId::from(vec![2; 16]));
        let (mut s_state, mut d_state) = (sync::State::new(), sync::State::new());
        for _ in 0..10 {
            let mut moved = false;
            if let Some(m) = server.generate_sync_message(&mut s_state) {
                device
                    .receive_sync_message(&mut d_state, m)
                    .expect("device");
                moved = true;
            }
            if let Some(m) = device.generate_sync_message(&mut d_state) {
                receive_sync_message(&mut server, &mut s_state, m, &mut PatchLog::inactive())
                    .expect("server");
                moved = true;
            }
            if !moved {
                break;
            }
        }
        assert_eq!(device.get_heads(), server.get_heads());
        assert!(s_state.sent_hashes.is_empty(), "{:?}", s_state.sent_hashes);
        assert_eq!(s_state.shared_heads, server.get_heads());
    }
}
