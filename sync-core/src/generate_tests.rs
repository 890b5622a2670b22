//! The server's answers through automerge's `generate_sync_message` and through
//! [`generate_sync_message`], compared message by message on the same conversations.

use automerge::{ActorId, Change, PatchLog};

use super::*;
use crate::test_conversations::{created, edit, seeded};

/// The server twice, one side answering through automerge, the other through ours.
struct Server {
    stock: Automerge,
    ours: Automerge,
    stock_states: Vec<sync::State>,
    our_states: Vec<sync::State>,
    last: Replies,
    whole: usize,
    deferred_with_a_queue: usize,
}

impl Server {
    fn receive(&mut self, p: usize, bytes: &[u8]) {
        let m = || sync::Message::decode(bytes).expect("decode");
        self.stock
            .receive_sync_message(&mut self.stock_states[p], m())
            .expect("stock");
        crate::receive::receive_sync_message(
            &mut self.ours,
            &mut self.our_states[p],
            m(),
            &mut PatchLog::inactive(),
        )
        .expect("ours");
        assert_eq!(self.stock_states[p], self.our_states[p]);
    }

    /// Both sides answer peer `p`; they must say the same and end in the same state.
    fn answer(&mut self, p: usize, context: &str) -> Option<sync::Message> {
        let queued = !self.ours.get_missing_deps(&[]).is_empty();
        let before = self.last.saves() + self.last.reused();
        let a = self.stock.generate_sync_message(&mut self.stock_states[p]);
        let b = generate_sync_message(&self.ours, &mut self.our_states[p], &mut self.last);
        assert_eq!(
            a.clone().map(sync::Message::encode),
            b.map(sync::Message::encode),
            "{context}: the same message"
        );
        assert_eq!(
            self.stock_states[p], self.our_states[p],
            "{context}: the same state"
        );
        if self.last.saves() + self.last.reused() > before {
            self.whole += 1;
        }
        if queued && a.is_some() {
            self.deferred_with_a_queue += 1;
        }
        a
    }
}

/// Devices (some starting with nothing) edit offline, some a day's burst at a time,
/// and sync through the server; now and then a device loses its document or its sync
/// state, a message is lost, the server's side turns read-only for a message, or the
/// server holds a change waiting for its dependency.
fn converse(peers: usize, rounds: usize, seed: u64) -> (usize, u64, usize, u64) {
    let mut next = seeded(seed);
    let base = created();
    let server_actor = ActorId::from(vec![0xAB; 16]);
    let mut server = Server {
        stock: base.fork().with_actor(server_actor.clone()),
        ours: base.fork().with_actor(server_actor),
        stock_states: vec![sync::State::new(); peers],
        our_states: vec![sync::State::new(); peers],
        last: Replies::default(),
        whole: 0,
        deferred_with_a_queue: 0,
    };
    // A device that lost its document starts again under a new actor.
    let mut lives = 0u8;
    let mut device = |p: usize, from: &Automerge, fresh: bool| {
        lives = lives.wrapping_add(1);
        let mut actor = vec![u8::try_from(p + 1).unwrap_or(0xFF); 16];
        actor[0] = lives;
        let actor = ActorId::from(actor);
        if fresh {
            Automerge::new().with_actor(actor)
        } else {
            from.fork().with_actor(actor)
        }
    };
    let mut devices: Vec<(Automerge, sync::State)> = (0..peers)
        .map(|p| (device(p, &base, p % 3 == 0), sync::State::new()))
        .collect();
    // A change whose dependency the server receives only later.
    let (held_back, orphan): (Change, Change) = {
        let mut d = base.fork().with_actor(ActorId::from(vec![0xEE; 16]));
        edit(&mut d, "first", 1);
        let first = d.get_last_local_change().expect("first");
        edit(&mut d, "second", 2);
        (first, d.get_last_local_change().expect("second"))
    };
    for round in 0..rounds {
        if round == rounds / 3 {
            for doc in [&mut server.stock, &mut server.ours] {
                doc.apply_changes([orphan.clone()]).expect("orphan");
            }
        }
        if round == rounds / 3 + 3 {
            for doc in [&mut server.stock, &mut server.ours] {
                doc.apply_changes([held_back.clone()]).expect("dependency");
            }
            let missing = server.ours.get_missing_deps(&[]);
            assert!(
                !missing.contains(&held_back.hash()),
                "the orphan is applied"
            );
        }
        for p in 0..peers {
            if next(4) == 0 {
                continue;
            }
            if next(12) == 0 {
                devices[p] = (device(p, &base, true), sync::State::new());
            } else if next(10) == 0 {
                devices[p].1 = sync::State::new();
            }
            let burst = if next(5) == 0 { 20 + next(30) } else { next(3) };
            for k in 0..burst {
                edit(
                    &mut devices[p].0,
                    &format!("p{p}-{round}-{k}"),
                    i64::try_from(k).unwrap_or(0),
                );
            }
            if next(6) == 0 {
                let key = format!("server-{round}-{p}");
                edit(&mut server.stock, &key, 7);
                edit(&mut server.ours, &key, 7);
            }
            for step in 0..4 {
                let (doc, state) = &mut devices[p];
                let Some(msg) = doc.generate_sync_message(state) else {
                    break;
                };
                // The server's side turns read-only or back now and then: back, it
                // asks the device to start over (a sync reset in its next message).
                if next(9) == 0 {
                    let read_only = next(2) == 0;
                    server.stock_states[p].set_read_only(read_only);
                    server.our_states[p].set_read_only(read_only);
                }
                server.receive(p, &msg.encode());
                let context = format!("seed {seed}, round {round}, peer {p}, step {step}");
                // The writer's answer, then the others' news (fan-out).
                for q in std::iter::once(p).chain((0..peers).filter(|q| *q != p)) {
                    let Some(reply) = server.answer(q, &context) else {
                        continue;
                    };
                    if next(6) == 0 {
                        continue;
                    }
                    let (doc, state) = &mut devices[q];
                    doc.receive_sync_message(state, reply).expect("device");
                }
            }
        }
    }
    assert_eq!(server.ours.get_heads(), server.stock.get_heads());
    (
        server.whole,
        server.last.reused(),
        server.deferred_with_a_queue,
        server.last.changes_reused(),
    )
}

#[test]
fn the_server_answers_as_automerge_does_on_every_message() {
    let (mut whole, mut reused, mut queued, mut changes) = (0, 0, 0, 0);
    for seed in [1, 2, 3, 0x9E37_79B9, 0xDEAD_BEEF, 0x5EED] {
        let (w, r, q, c) = converse(6, 24, seed);
        whole += w;
        reused += r;
        queued += q;
        changes += c;
    }
    assert!(
        changes > 50,
        "changes sent as built for an earlier answer: {changes}"
    );
    assert!(whole > 20, "whole documents sent: {whole}");
    assert!(reused > 5, "saves shared between peers: {reused}");
    assert!(
        queued > 0,
        "answers with a change waiting for its dependency: {queued}"
    );
}

#[test]
fn the_peers_of_a_document_missing_most_of_it_share_one_save() {
    let mut server = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
    edit(&mut server, "created", 1);
    let mut peers: Vec<(Automerge, sync::State, sync::State)> = (2..12u8)
        .map(|a| {
            let d = server.fork().with_actor(ActorId::from(vec![a; 16]));
            (d, sync::State::new(), sync::State::new())
        })
        .collect();
    let mut last = Replies::default();
    // Everyone in sync on the created document.
    for _ in 0..3 {
        for (doc, mine, theirs) in &mut peers {
            if let Some(m) = doc.generate_sync_message(mine) {
                crate::receive::receive_sync_message(
                    &mut server,
                    theirs,
                    m,
                    &mut PatchLog::inactive(),
                )
                .expect("server");
            }
            if let Some(m) = generate_sync_message(&server, theirs, &mut last) {
                doc.receive_sync_message(mine, m).expect("device");
            }
        }
    }
    // One device comes back with a day of check-ins.
    for n in 0..250 {
        edit(&mut peers[0].0, &format!("scan-{n}"), n);
    }
    let (doc, mine, theirs) = &mut peers[0];
    let m = doc.generate_sync_message(mine).expect("the day");
    crate::receive::receive_sync_message(&mut server, theirs, m, &mut PatchLog::inactive())
        .expect("server");
    let (saves, reused) = (last.saves(), last.reused());
    let mut sizes = Vec::new();
    for (doc, mine, theirs) in peers.iter_mut().skip(1) {
        let m = generate_sync_message(&server, theirs, &mut last).expect("news");
        sizes.push(m.changes.iter().map(<[u8]>::len).sum::<usize>());
        doc.receive_sync_message(mine, m).expect("device");
        assert_eq!(doc.get_heads(), server.get_heads(), "the whole day arrived");
    }
    assert_eq!(last.saves() - saves, 1, "one save for nine devices");
    assert_eq!(last.reused() - reused, 8);
    assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    assert!(last.held() > sizes[0]);
}

#[test]
fn the_peers_of_a_document_share_the_changes_built_for_the_first() {
    // A booking well into its day: ten gates in sync. One gate sends twenty check-ins;
    // each other gate is sent those twenty, built once from the document, and every
    // answer is automerge's, byte for byte.
    let mut server = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
    for n in 0..100 {
        edit(&mut server, &format!("earlier-{n}"), n);
    }
    let mut peers: Vec<(Automerge, sync::State, sync::State)> = (2..12u8)
        .map(|a| {
            let d = server.fork().with_actor(ActorId::from(vec![a; 16]));
            (d, sync::State::new(), sync::State::new())
        })
        .collect();
    let mut replies = Replies::default();
    let exchange = |peers: &mut Vec<(Automerge, sync::State, sync::State)>,
                    server: &mut Automerge,
                    replies: &mut Replies| {
        for (doc, mine, theirs) in peers.iter_mut() {
            if let Some(m) = doc.generate_sync_message(mine) {
                crate::receive::receive_sync_message(server, theirs, m, &mut PatchLog::inactive())
                    .expect("server");
            }
            let mut stock = theirs.clone();
            let expected = server.generate_sync_message(&mut stock);
            let m = generate_sync_message(server, theirs, replies);
            assert_eq!(
                expected.map(sync::Message::encode),
                m.clone().map(sync::Message::encode)
            );
            assert_eq!(&stock, theirs);
            if let Some(m) = m {
                doc.receive_sync_message(mine, m).expect("device");
            }
        }
    };
    for _ in 0..3 {
        exchange(&mut peers, &mut server, &mut replies);
    }
    for n in 0..20 {
        edit(&mut peers[0].0, &format!("scan-{n}"), n);
    }
    let before = replies.changes_reused();
    exchange(&mut peers, &mut server, &mut replies);
    exchange(&mut peers, &mut server, &mut replies);
    for (doc, _, _) in &peers {
        assert_eq!(
            doc.get_heads(),
            server.get_heads(),
            "every gate has the news"
        );
    }
    assert_eq!(
        replies.changes_reused() - before,
        8 * 20,
        "the twenty changes built for the first of nine gates, sent as built to the others"
    );
}

/// automerge's answer and ours to a peer in `state`, compared.
fn same_answer(doc: &Automerge, state: &sync::State) -> Option<sync::Message> {
    let (mut a, mut b) = (state.clone(), state.clone());
    let stock = doc.generate_sync_message(&mut a);
    let ours = generate_sync_message(doc, &mut b, &mut Replies::default());
    assert_eq!(
        stock.clone().map(sync::Message::encode),
        ours.map(sync::Message::encode)
    );
    assert_eq!(a, b);
    stock
}

fn a_peer_with(have: Vec<Have>, heads: Vec<ChangeHash>) -> sync::State {
    let mut state = sync::State::new();
    state.their_capabilities = Some(vec![Capability::MessageV2, Capability::SyncReset]);
    state.their_heads = Some(heads);
    state.their_need = Some(Vec::new());
    state.their_have = Some(have);
    state
}

#[test]
fn a_peer_whose_last_sync_we_never_had_is_told_to_start_over() {
    let mut doc = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
    for n in 0..30 {
        edit(&mut doc, &format!("k{n}"), n);
    }
    let unknown = ChangeHash([7; 32]);
    let have = vec![Have {
        last_sync: vec![unknown],
        bloom: BloomFilter::from_hashes(std::iter::empty::<ChangeHash>()),
    }];
    let reply = same_answer(&doc, &a_peer_with(have, vec![unknown])).expect("a reply");
    assert!(reply.changes.is_empty(), "a reset, not the document");
    assert_eq!(reply.have, vec![Have::default()]);
}

#[test]
fn a_change_after_one_the_peer_lacks_is_counted_as_sent() {
    // The peer's filter claims `later` (a false positive, or a filter it got wrong) but
    // not `earlier`, which `later` depends on: both are to be sent.
    let mut doc = Automerge::new().with_actor(ActorId::from(vec![1; 16]));
    edit(&mut doc, "base", 0);
    let base = doc.get_heads();
    edit(&mut doc, "earlier", 1);
    let earlier = doc.get_heads()[0];
    edit(&mut doc, "later", 2);
    let later = doc.get_heads()[0];
    let have = vec![Have {
        last_sync: base,
        bloom: BloomFilter::from_hashes([later].iter()),
    }];
    assert_eq!(
        hashes_to_send(&doc, &doc.get_heads(), &have, &[], &mut Replies::default()),
        vec![earlier, later]
    );
    // Two of three changes: more than a third, so the whole document, as automerge sends.
    let reply = same_answer(&doc, &a_peer_with(have, vec![later])).expect("a reply");
    assert!(!reply.changes.is_empty());
}
