//! Generating a sync message: automerge's `generate_sync_message`, except that what one
//! peer's answer needed is built once for every peer that needs the same (ADR 0196, 0201).
//!
//! automerge 0.12 sends a peer the whole document, saved and compressed, when the peer has
//! nothing or is missing more than a third of the document's changes. It saves the
//! document for each such message. At the end of day every device of a booking comes back
//! with a day of check-ins: after each device's day is merged, each of the booking's other
//! devices misses most of the document, and the server saved the same document at the
//! same heads once per device (a tenth of its CPU, 210 of 327 saves repeated in one run).
//! Later in the same end of day the other devices miss less than a third, and automerge
//! builds the same new changes from the document once per device (`get_changes_by_hashes`,
//! a tenth of the server's CPU in the sixteenth session's profile), and lists the changes
//! since the peer's last sync twice per answer (once for its bloom filter, once for what to
//! send).
//!
//! Here the message automerge would send is recognised before it is built, following
//! automerge 0.12 step by step (the changes the peer lacks, counted as automerge counts
//! them), and built from [`Replies`]: the document saved at its current heads, kept from
//! the last such message; the changes automerge built for earlier answers, kept by hash
//! (a change's bytes are the same whoever they are sent to); and the last bloom filter of
//! our changes since a peer's last sync, at the document's heads. When a change the answer
//! needs was not built yet, or the answer is of a kind this does not follow, it is
//! automerge's own, and the changes in it are kept. `tests` compares both on the same
//! conversations, byte for byte and state for state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use automerge::sync::{self, BloomFilter, Capability, Have, MessageFlags, MessageVersion, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};

/// At most so many bytes of built changes are kept, per engine: a booking's day from one
/// gate is about 75 KB, and the changes worth sharing are those of the answers to one
/// document's peers, given one after the other.
const BUILT_BUDGET: usize = 2 << 20;

/// Lists of the changes since some heads kept, and the longest kept: a peer's answer
/// lists the changes since its last sync (what it lacks) and since our shared heads (our
/// bloom filter), most often the same heads, and a booking's gates often share both;
/// receiving a peer's message lists the changes its heads lack, which are our shared
/// heads when its answer is made. Kept for a few peers' messages and answers of one
/// merge: at most [`SINCE_KEPT`] lists of [`SINCE_LONGEST`] changes.
const SINCE_KEPT: usize = 8;
const SINCE_LONGEST: usize = 10_000;

/// The changes since some heads, in the document's order: each hash with its dependencies.
type Since = Arc<Vec<(ChangeHash, Vec<ChangeHash>)>>;

/// What the server's answers share between peers (per engine): the document last saved
/// for a peer, with its heads and the hashes of every change it holds; changes built for
/// earlier answers; the last bloom filter made.
#[derive(Debug, Default)]
pub struct Replies {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    hashes: Vec<ChangeHash>,
    saves: u64,
    reused: u64,
    built: Built,
    /// The document's heads, the peer's shared heads and the filter of our changes since.
    bloom: Option<(Vec<ChangeHash>, Vec<ChangeHash>, BloomFilter)>,
    /// The document's heads, some heads (sorted) and the changes since them.
    since: VecDeque<(Vec<ChangeHash>, Vec<ChangeHash>, Since)>,
}

/// Changes as automerge built them for an answer, by hash, oldest dropped first beyond
/// [`BUILT_BUDGET`].
#[derive(Debug, Default)]
struct Built {
    bytes: HashMap<ChangeHash, Vec<u8>>,
    order: VecDeque<ChangeHash>,
    held: usize,
    reused: u64,
}

impl Built {
    fn keep(&mut self, hash: ChangeHash, bytes: &[u8]) {
        if bytes.len() > BUILT_BUDGET || self.bytes.contains_key(&hash) {
            return;
        }
        self.bytes.insert(hash, bytes.to_vec());
        self.order.push_back(hash);
        self.held += bytes.len();
        while self.held > BUILT_BUDGET {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.bytes.remove(&old) {
                self.held -= b.len();
            }
        }
    }

    /// The changes of an answer automerge made, kept for the next ones. Only plain change
    /// chunks are kept, each under the hash of its own bytes.
    fn keep_message(&mut self, message: &sync::Message) {
        if message.version != MessageVersion::V2 {
            return;
        }
        for element in message.changes.iter() {
            let Some(chunks) = crate::engine::guard::change_chunks(element) else {
                continue;
            };
            for (hash, range) in chunks {
                self.keep(hash, &element[range]);
            }
        }
    }

    /// The bytes of `hashes` one after the other, if every one is kept.
    fn join(&mut self, hashes: &[ChangeHash]) -> Option<Vec<u8>> {
        let mut size = 0;
        for h in hashes {
            size += self.bytes.get(h)?.len();
        }
        let mut out = Vec::with_capacity(size);
        for h in hashes {
            out.extend_from_slice(&self.bytes[h]);
        }
        self.reused += hashes.len() as u64;
        Some(out)
    }
}

impl Replies {
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

    /// Changes sent as built for an earlier answer.
    #[must_use]
    pub fn changes_reused(&self) -> u64 {
        self.built.reused
    }

    /// Bytes held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.bytes.capacity()
            + self.hashes.capacity() * std::mem::size_of::<ChangeHash>()
            + self.built.held
            + self
                .since
                .iter()
                .map(|(_, _, list)| {
                    list.len() * std::mem::size_of::<(ChangeHash, Vec<ChangeHash>)>()
                        + list
                            .iter()
                            .map(|(_, deps)| deps.len() * std::mem::size_of::<ChangeHash>())
                            .sum::<usize>()
                })
                .sum::<usize>()
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

    /// The changes of `doc` (at `heads`) since `from`, as `get_changes_meta` lists them.
    pub(crate) fn since(
        &mut self,
        doc: &Automerge,
        heads: &[ChangeHash],
        from: &[ChangeHash],
    ) -> Since {
        let mut from = from.to_vec();
        from.sort_unstable();
        from.dedup();
        if let Some((_, _, since)) = self.since.iter().find(|(h, f, _)| h == heads && *f == from) {
            return since.clone();
        }
        let since: Since = Arc::new(
            doc.get_changes_meta(&from)
                .into_iter()
                .map(|m| (m.hash, m.deps))
                .collect(),
        );
        if since.len() <= SINCE_LONGEST {
            if self.since.len() == SINCE_KEPT {
                self.since.pop_front();
            }
            self.since.push_back((heads.to_vec(), from, since.clone()));
        }
        since
    }

    /// The filter of our changes since `shared` (a peer's shared heads), as automerge
    /// makes it, kept for the next peer with the same shared heads at the same heads.
    fn bloom(&mut self, doc: &Automerge, heads: &[ChangeHash], shared: &[ChangeHash]) -> Have {
        if let Some((h, s, bloom)) = &self.bloom
            && h == heads
            && s == shared
        {
            return Have {
                last_sync: shared.to_vec(),
                bloom: bloom.clone(),
            };
        }
        let known = self.since(doc, heads, shared);
        let bloom = BloomFilter::from_hashes(known.iter().map(|(h, _)| h));
        self.bloom = Some((heads.to_vec(), shared.to_vec(), bloom.clone()));
        Have {
            last_sync: shared.to_vec(),
            bloom,
        }
    }
}

/// Our next sync message for the peer of `state`, as automerge's `generate_sync_message`
/// makes it; what `replies` holds from earlier answers is not built again.
pub fn generate_sync_message(
    doc: &Automerge,
    state: &mut sync::State,
    replies: &mut Replies,
) -> Option<sync::Message> {
    let plan = match plan(doc, state, replies) {
        Plan::Automerge => {
            let message = doc.generate_sync_message(state);
            if let Some(m) = &message {
                replies.built.keep_message(m);
            }
            return message;
        }
        Plan::Nothing => return None,
        Plan::Send(plan) => plan,
    };
    let Answer {
        heads,
        need,
        have,
        hashes,
        changes,
    } = plan;
    state.have_responded = true;
    state.last_sent_heads.clone_from(&heads);
    state.sent_hashes.extend(hashes);
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
        changes: if changes.is_empty() {
            Vec::<Vec<u8>>::new().into()
        } else {
            vec![changes].into()
        },
        flags: Some(flags),
        version: MessageVersion::V2,
    })
}

/// Our next sync message for the server, from a device: as automerge makes it, except
/// that the changes the server lacks go as changes, never as the whole document (ADR
/// 0202). When the server (with these `limits`, its defaults) would refuse so many in one
/// message, the message carries the longest run of them from the start that it takes, and
/// the server asks for the rest in the next round. When the server is not known to read
/// whole documents, or not even the first change fits, the message is
/// [`generate_sync_message`]'s.
///
/// The server checks every change's author; a whole document that lists another's actor
/// id it must load on the side and split into the changes it lacks (ADR 0200), which cost
/// it more than the merge of those changes at the end of day. The device asks automerge
/// for its answer as to a peer that does not read whole documents: the same changes, each
/// its own chunk of a message that still carries our flags.
pub fn generate_as_changes(
    doc: &Automerge,
    state: &mut sync::State,
    replies: &mut Replies,
    limits: &crate::engine::guard::Limits,
) -> Option<sync::Message> {
    let Some(caps) = state.their_capabilities.clone() else {
        return generate_sync_message(doc, state, replies);
    };
    if !caps.contains(&Capability::MessageV2) {
        return generate_sync_message(doc, state, replies);
    }
    let before = state.clone();
    state.their_capabilities = Some(
        caps.iter()
            .filter(|c| **c != Capability::MessageV2)
            .cloned()
            .collect(),
    );
    let message = doc.generate_sync_message(state);
    state.their_capabilities = Some(caps);
    let mut message = message?;
    if crate::engine::guard::scan(&message, limits).is_ok() {
        return Some(message);
    }
    // Too much for one message: the longest run from the start that the server takes
    // (automerge lists the changes after those they depend on); the others are taken out
    // of those sent, so that the next round sends them.
    let chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
    let fits = |n: usize, message: &mut sync::Message| {
        message.changes = chunks[..n].to_vec().into();
        crate::engine::guard::scan(message, limits).is_ok()
    };
    let (mut ok, mut too_many) = (0, chunks.len());
    while too_many - ok > 1 {
        let mid = ok + (too_many - ok) / 2;
        if fits(mid, &mut message) {
            ok = mid;
        } else {
            too_many = mid;
        }
    }
    let left_out: Option<Vec<ChangeHash>> = chunks[ok..]
        .iter()
        .map(
            |c| match crate::engine::guard::change_chunks(c)?.as_slice() {
                [(hash, _)] => Some(*hash),
                _ => None,
            },
        )
        .collect();
    match left_out {
        Some(hashes) if ok > 0 && fits(ok, &mut message) => {
            for h in hashes {
                state.sent_hashes.remove(&h);
            }
            Some(message)
        }
        _ => {
            *state = before;
            generate_sync_message(doc, state, replies)
        }
    }
}

/// What to answer.
enum Plan {
    /// automerge's own answer (a kind of answer this does not follow, or changes not yet
    /// built).
    Automerge,
    /// automerge would send nothing (a message is in flight and our heads have not moved).
    Nothing,
    /// automerge would send this.
    Send(Answer),
}

/// An answer's parts: our heads, need and have, the hashes of the changes it carries (all
/// of the document's for a whole document) and their bytes.
struct Answer {
    heads: Vec<ChangeHash>,
    need: Vec<ChangeHash>,
    have: Vec<Have>,
    hashes: Vec<ChangeHash>,
    changes: Vec<u8>,
}

/// The answer automerge 0.12 would give the peer of `state`, step by step, where it can
/// be made from what `replies` holds or from a save it may keep.
fn plan(doc: &Automerge, state: &sync::State, replies: &mut Replies) -> Plan {
    let heads = doc.get_heads();
    if heads.is_empty() || state.is_peer_read_only() {
        return Plan::Automerge;
    }
    let (Some(their_have), Some(their_need)) = (&state.their_have, &state.their_need) else {
        return Plan::Automerge;
    };
    if !has_capability(state, &Capability::MessageV2) {
        return Plan::Automerge;
    }
    // Changes waiting for their dependencies change what we need; automerge's own answer.
    if !doc.get_missing_deps(&[]).is_empty() {
        return Plan::Automerge;
    }
    // A peer naming a last sync we do not hold gets automerge's reset message.
    if let Some(first) = their_have.first()
        && !first
            .last_sync
            .iter()
            .all(|h| crate::receive::applied(doc, h))
    {
        return Plan::Automerge;
    }
    let send_doc = state.their_heads.as_deref() == Some(&[]);
    let mut to_send = Vec::new();
    let whole = send_doc || {
        let sent = &state.sent_hashes;
        to_send = hashes_to_send(doc, &heads, their_have, their_need, replies);
        to_send.retain(|h| !sent.contains(h));
        let changes = usize::try_from(doc.stats().num_changes).unwrap_or(usize::MAX);
        to_send.len() > changes / 3
    };
    if state.last_sent_heads == heads && state.have_responded {
        let heads_equal = state.their_heads.as_deref() == Some(&heads[..]);
        let empty = !whole && to_send.is_empty();
        if ((heads_equal || state.read_only) && empty) || state.in_flight {
            return Plan::Nothing;
        }
    }
    let (hashes, changes) = if whole {
        let (bytes, hashes) = replies.of(doc, &heads);
        (hashes.to_vec(), bytes.to_vec())
    } else {
        let Some(changes) = replies.built.join(&to_send) else {
            return Plan::Automerge;
        };
        (to_send, changes)
    };
    let need = if state.read_only {
        Vec::new()
    } else {
        doc.get_missing_deps(state.their_heads.as_deref().unwrap_or(&[]))
    };
    let theirs: HashSet<&ChangeHash> = state.their_heads.iter().flatten().collect();
    let have = if need.iter().all(|h| theirs.contains(h)) {
        vec![replies.bloom(doc, &heads, &state.shared_heads)]
    } else {
        Vec::new()
    };
    Plan::Send(Answer {
        heads,
        need,
        have,
        hashes,
        changes,
    })
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
fn hashes_to_send(
    doc: &Automerge,
    heads: &[ChangeHash],
    have: &[Have],
    need: &[ChangeHash],
    replies: &mut Replies,
) -> Vec<ChangeHash> {
    let need: Vec<ChangeHash> = need
        .iter()
        .filter(|h| crate::receive::applied(doc, h))
        .copied()
        .collect();
    if have.is_empty() {
        return need;
    }
    let last_sync: Vec<ChangeHash> = have
        .iter()
        .flat_map(|h| h.last_sync.iter().copied())
        .collect();
    let since = replies.since(doc, heads, &last_sync);
    let mut send: HashSet<ChangeHash> = HashSet::with_capacity(since.len());
    let mut out: Vec<ChangeHash> = Vec::new();
    for (hash, deps) in since.iter() {
        let lacked = have.iter().all(|h| !h.bloom.contains_hash(hash));
        if lacked || deps.iter().any(|d| send.contains(d)) {
            send.insert(*hash);
            out.push(*hash);
        }
    }
    let mut all: Vec<ChangeHash> = need.into_iter().filter(|h| !send.contains(h)).collect();
    all.append(&mut out);
    all
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
