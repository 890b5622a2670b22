//! Figures for `docs/performance.md`. Run: `cargo bench -p kepu-sync-core --bench together`.
//!
//! What merging one booking's sync messages together saves the server's engine (ADR
//! 0191): a server engine with a 300-pupil booking and ten gates, each gate's messages
//! handed over one at a time (`Input::Message`) or the ten gates' messages of a moment as
//! one `Input::Messages`, every storage task answered at once by the in-memory store.
//! Two shapes: the live day (each message one check-in, 50 rounds of ten gates) and the
//! end of day (each gate's 250 offline check-ins in one message, as changes or as the
//! gate's whole document, which admission splits: it lists the teacher's actor id).
//! Prints µs per check-in through the engine, best of three, how many messages were
//! merged together, and the bytes a check-in takes in the gates' sync messages (ADR 0202:
//! a gate now sends its day as changes).

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::time::Instant;

use automerge::{ActorId, Automerge};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::engine::guard::hostile;
use kepu_sync_core::engine::{Config, ConnId, Engine, Event, Input, Mode};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::mem_store::MemStore;
use kepu_sync_core::schema::booking::ScanMethod;
use kepu_sync_core::wire::Message;
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const PUPILS: u128 = 300;
const GATES: usize = 10;
const T0: i64 = 1_767_225_600_000;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(id(10_000 + n)),
        user: UserId(id(20_000 + n)),
        role,
        school: (role == Role::Teacher).then_some(SchoolId(id(3))),
        venue: (role == Role::VenueStaff).then_some(VenueId(id(4))),
        pupil: None,
    }
}

struct Server {
    engine: Engine,
    store: MemStore,
    together: usize,
}

impl Server {
    fn feed(&mut self, input: Input) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let fx = self.engine.handle(T0, input);
            for e in &fx.events {
                if let Event::MergedTogether { messages, .. } = e {
                    self.together += messages;
                }
            }
            for (task, t) in fx.tasks {
                let result = self.store.run(&t);
                inputs.push(Input::IoDone { task, result });
            }
        }
    }
}

fn sync(conn: ConnId, doc: DocumentId, data: Vec<u8>) -> Box<Message> {
    Box::new(Message::Sync {
        sender_id: format!("gate-{}", conn.0),
        target_id: "server".into(),
        document_id: doc,
        data,
    })
}

/// A server holding the booking, the ten gates joined; the booking as the gates have it.
fn server(doc: DocumentId) -> (Server, Automerge) {
    let config = Config::new(
        Mode::Server,
        "server".into(),
        "server-storage".into(),
        [0xee; 16],
        Writer::server(DeviceId(id(1))),
    );
    let mut s = Server {
        engine: Engine::new(config),
        store: MemStore::default(),
        together: 0,
    };
    for n in 0..=GATES as u64 {
        let w = if n == 0 {
            writer(0, Role::Teacher)
        } else {
            writer(u128::from(n), Role::VenueStaff)
        };
        s.feed(Input::Connected {
            conn: ConnId(n),
            writer: Some(w),
        });
        s.feed(Input::Message {
            conn: ConnId(n),
            msg: Box::new(Message::Join {
                sender_id: format!("gate-{n}"),
                peer_metadata: None,
                supported_protocol_versions: vec!["1".into()],
            }),
        });
    }
    let mut booking = Automerge::new().with_actor(ActorId::from([0x70u8; 16].as_slice()));
    let roster: Vec<PupilId> = (0..PUPILS).map(|i| PupilId(id(1_000 + i))).collect();
    let create = Edit::CreateBooking {
        venue: VenueId(id(4)),
        slot: SlotId(id(5)),
        school: SchoolId(id(3)),
        party_size: PUPILS as u32,
        roster,
    };
    apply_unchecked(&mut booking, &writer(0, Role::Teacher), T0, &create).expect("create");
    let chunks = booking
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    s.feed(Input::Message {
        conn: ConnId(0),
        msg: sync(
            ConnId(0),
            doc,
            hostile::sync_message(booking.get_heads(), chunks),
        ),
    });
    assert_eq!(
        s.engine.doc(&doc).map(Automerge::get_heads),
        Some(booking.get_heads())
    );
    (s, booking)
}

/// Each gate's messages: `per_message` check-ins each, `messages` of them, in rounds; with
/// `whole`, each message carries the gate's whole document, as automerge on a device sends
/// it when most of its copy is new to the server (the end of day).
fn messages(
    booking: &Automerge,
    per_message: usize,
    messages: usize,
    whole: bool,
) -> Vec<Vec<Vec<u8>>> {
    let mut rounds: Vec<Vec<Vec<u8>>> = vec![Vec::new(); messages];
    for g in 0..GATES {
        let mut doc = booking
            .fork()
            .with_actor(ActorId::from(vec![g as u8 + 1; 16]));
        let w = writer(1 + g as u128, Role::VenueStaff);
        for (r, round) in rounds.iter_mut().enumerate() {
            let heads = doc.get_heads();
            for k in 0..per_message {
                let n = (r * per_message + k) * GATES + g;
                let edit = Edit::CheckIn {
                    pupil: PupilId(id(1_000 + (n as u128 % PUPILS))),
                    scan_id: id(0x0190_0000_0000_7000_8000_0000_0000_0000 + n as u128).to_string(),
                    method: ScanMethod::Manual,
                    proof: None,
                };
                apply_unchecked(&mut doc, &w, T0 + 3_600_000 + n as i64, &edit).expect("scan");
            }
            let chunks = if whole {
                vec![doc.save()]
            } else {
                doc.get_changes(&heads)
                    .iter()
                    .map(|c| c.raw_bytes().to_vec())
                    .collect()
            };
            round.push(hostile::sync_message(doc.get_heads(), chunks));
        }
    }
    rounds
}

/// Seconds to hand every round to a fresh server, one message at a time or a round at
/// once; the messages merged together; the bytes of the gates' sync messages.
fn run(per_message: usize, rounds: usize, whole: bool, together: bool) -> (f64, usize, usize) {
    let doc = DocumentId::from_bytes([9; 16]);
    let (mut s, booking) = server(doc);
    let rounds = messages(&booking, per_message, rounds, whole);
    let bytes = rounds.iter().flatten().map(Vec::len).sum();
    let t = Instant::now();
    for round in rounds {
        let msgs: Vec<(ConnId, Box<Message>)> = round
            .into_iter()
            .enumerate()
            .map(|(g, data)| {
                let conn = ConnId(g as u64 + 1);
                (conn, sync(conn, doc, data))
            })
            .collect();
        if together {
            s.feed(Input::Messages { msgs });
        } else {
            for (conn, msg) in msgs {
                s.feed(Input::Message { conn, msg });
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let heads = s
        .engine
        .doc(&doc)
        .map(Automerge::get_heads)
        .unwrap_or_default();
    assert_eq!(heads.len(), GATES, "every gate's check-ins merged");
    (secs, s.together, bytes)
}

fn main() {
    println!(
        "{GATES} gates, a {PUPILS}-pupil booking; µs per check-in through the engine, best of 3"
    );
    println!(
        "{:>34} {:>14} {:>14} {:>18} {:>16}",
        "shape", "one by one", "together", "merged together", "bytes/check-in"
    );
    for (name, per_message, rounds, whole) in [
        ("live day: 1 check-in a message", 1, 50, false),
        ("end of day: 250 in one message", 250, 1, false),
        ("end of day: the gate's whole doc", 250, 1, true),
    ] {
        let total = (per_message * rounds * GATES) as f64;
        let best = |together| {
            (0..3)
                .map(|_| run(per_message, rounds, whole, together))
                .fold((f64::MAX, 0, 0), |a, b| (a.0.min(b.0), b.1, b.2))
        };
        let (alone, _, bytes) = best(false);
        let (with, merged, _) = best(true);
        println!(
            "{name:>34} {:>14.1} {:>14.1} {:>11} of {:>4} {:>16.0}",
            alone * 1e6 / total,
            with * 1e6 / total,
            merged,
            rounds * GATES,
            bytes as f64 / total
        );
    }
}
