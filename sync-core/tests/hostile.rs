//! Hostile sync payloads sent straight to a server engine: each gets an `error` with a
//! refusal code, nothing else of the connection is lost, and the server keeps serving.

use automerge::sync;
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::guard::hostile;
use kepu_sync_core::engine::{Config, ConnId, Engine, Input, Mode, StorageTask};
use kepu_sync_core::ids::{DeviceId, SchoolId, UserId, VenueId};
use kepu_sync_core::mem_store::MemStore;
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::{Role, Writer};

const NOW: i64 = 1_767_225_600_000;
const SERVER_ACTOR: [u8; 16] = [0xee; 16];

struct Server {
    engine: Engine,
    store: MemStore,
    /// Frames sent, per connection.
    sent: Vec<(ConnId, Vec<u8>)>,
    /// The number of changes of each append the engine asked for.
    appends: Vec<usize>,
}

fn teacher(n: u128) -> Writer {
    Writer {
        device: DeviceId(uuid::Uuid::from_u128(1000 + n)),
        user: UserId(uuid::Uuid::from_u128(2000 + n)),
        role: Role::Teacher,
        school: Some(SchoolId(uuid::Uuid::from_u128(10))),
        venue: None,
        pupil: None,
    }
}

impl Server {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(
            Mode::Server,
            "server".into(),
            "server-storage".into(),
            SERVER_ACTOR,
            Writer::server(DeviceId(uuid::Uuid::from_u128(1))),
        );
        adjust(&mut config);
        Self {
            engine: Engine::new(config),
            store: MemStore::default(),
            sent: Vec::new(),
            appends: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let fx = self.engine.handle(NOW, input);
            self.sent.extend(fx.sends);
            for (task, t) in fx.tasks {
                if let StorageTask::Append { changes, .. } = &t {
                    self.appends.push(changes.len());
                }
                let result = self.store.run(&t);
                inputs.push(Input::IoDone { task, result });
            }
        }
    }

    /// Connects and joins a device; returns its connection.
    fn join(&mut self, n: u64, writer: Writer) -> ConnId {
        let conn = ConnId(n);
        self.feed(Input::Connected {
            conn,
            writer: Some(writer),
        });
        self.frame(
            conn,
            &Message::Join {
                sender_id: format!("device-{n}"),
                peer_metadata: None,
                supported_protocol_versions: vec!["1".into()],
            },
        );
        conn
    }

    fn frame(&mut self, conn: ConnId, msg: &Message) {
        self.feed(Input::Received {
            conn,
            bytes: msg.encode(),
        });
    }

    fn sync(&mut self, conn: ConnId, doc: DocumentId, data: Vec<u8>) {
        self.frame(
            conn,
            &Message::Sync {
                sender_id: format!("device-{}", conn.0),
                target_id: "server".into(),
                document_id: doc,
                data,
            },
        );
    }

    /// Sync messages read together, as the server's hub hands them over.
    fn read_together(&mut self, doc: DocumentId, msgs: Vec<(ConnId, Vec<u8>)>) {
        let msgs = msgs
            .into_iter()
            .map(|(conn, data)| {
                let msg = Message::Sync {
                    sender_id: format!("device-{}", conn.0),
                    target_id: "server".into(),
                    document_id: doc,
                    data,
                };
                (conn, Box::new(msg))
            })
            .collect();
        self.feed(Input::Messages { msgs });
    }

    /// The heads of each sync message sent to `conn`.
    fn replies(&self, conn: ConnId) -> Vec<Vec<ChangeHash>> {
        let mut heads = Vec::new();
        for (c, bytes) in &self.sent {
            if *c != conn {
                continue;
            }
            if let Ok(Message::Sync { data, .. }) = wire::decode(bytes) {
                heads.push(automerge::sync::Message::decode(&data).unwrap().heads);
            }
        }
        heads
    }

    /// The refusal codes sent to `conn` since the last call.
    fn errors(&mut self, conn: ConnId) -> Vec<String> {
        let mut codes = Vec::new();
        self.sent.retain(|(c, bytes)| {
            if *c != conn {
                return true;
            }
            if let Ok(Message::Error {
                refusal: Some(r), ..
            }) = wire::decode(bytes)
            {
                codes.push(r.code.to_string());
            }
            false
        });
        codes
    }
}

/// A server holding a venue document the server wrote (so it exists and has heads).
fn server_with_doc() -> (Server, DocumentId, Vec<ChangeHash>) {
    let mut s = Server::new();
    let doc = DocumentId::from_bytes([3; 16]);
    s.feed(Input::Edit {
        doc,
        edit: Edit::CreateVenue {
            venue: VenueId(uuid::Uuid::from_u128(20)),
        },
    });
    let heads = s.engine.doc(&doc).unwrap().get_heads();
    (s, doc, heads)
}

/// After a refusal the same connection still syncs normally: a fresh peer asking for the
/// document gets it.
fn still_serves(s: &mut Server, conn: ConnId, doc: DocumentId) {
    s.sent.clear();
    let mut fresh = Automerge::new();
    let mut state = automerge::sync::State::new();
    let msg = automerge::sync::SyncDoc::generate_sync_message(&fresh, &mut state).unwrap();
    s.sync(conn, doc, msg.encode());
    let mut got = false;
    for (c, bytes) in std::mem::take(&mut s.sent) {
        if c != conn {
            continue;
        }
        if let Ok(Message::Sync { data, .. }) = wire::decode(&bytes) {
            let m = automerge::sync::Message::decode(&data).unwrap();
            automerge::sync::SyncDoc::receive_sync_message(&mut fresh, &mut state, m).unwrap();
            got = true;
        }
    }
    assert!(got, "the server answered");
    assert_eq!(
        fresh.get_heads(),
        s.engine.doc(&doc).unwrap().get_heads(),
        "the device got the document"
    );
}

#[test]
fn a_compressed_change_that_inflates_to_64_mib_is_refused_and_the_connection_carries_on() {
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    let bomb = hostile::compressed_change_bomb(&[5; 16], 1, &heads, 64 << 20);
    assert!(bomb.len() < 1 << 20, "a small frame: {} bytes", bomb.len());
    s.sync(conn, doc, hostile::sync_message(heads.clone(), vec![bomb]));
    assert_eq!(s.errors(conn), vec!["payload-too-large"]);
    assert_eq!(
        s.engine.doc(&doc).unwrap().get_heads(),
        heads,
        "nothing merged"
    );
    still_serves(&mut s, conn, doc);
}

#[test]
fn a_change_declaring_more_operations_than_allowed_is_refused() {
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    let bomb = hostile::operation_bomb(&[5; 16], 1, &heads, 1_000_000);
    assert!(bomb.len() < 100);
    s.sync(conn, doc, hostile::sync_message(heads, vec![bomb]));
    assert_eq!(s.errors(conn), vec!["too-many-operations"]);
    still_serves(&mut s, conn, doc);
}

#[test]
fn a_bloom_filter_with_entries_and_no_bits_is_refused_instead_of_crashing_the_server() {
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    // automerge tests the server's changes against this filter when it answers, and
    // divides by zero: the hub (every device's sync) would stop.
    s.sync(conn, doc, hostile::broken_bloom_message(&[]));
    assert_eq!(s.errors(conn), vec!["malformed-sync"]);
    let _ = heads;
    still_serves(&mut s, conn, doc);
}

#[test]
fn changes_waiting_for_dependencies_that_never_come_are_bounded() {
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    // Each change depends on a change nobody has: automerge keeps it in memory, waiting.
    let missing = ChangeHash([0xab; 32]);
    let mut codes = Vec::new();
    for seq in 1..=12u64 {
        let change = hostile::compressed_change_bomb(&[5; 16], seq, &[missing], 1 << 20);
        s.sync(
            conn,
            doc,
            hostile::sync_message(heads.clone(), vec![change]),
        );
        codes.extend(s.errors(conn));
    }
    assert!(
        codes.iter().any(|c| c == "dependency-queue-full"),
        "refused once the queue is full: {codes:?}"
    );
    let d = s.engine.doc(&doc).unwrap();
    assert!(
        d.get_missing_deps(&[]).len() <= 1,
        "the queue was emptied when it overflowed"
    );
    assert_eq!(d.get_heads(), heads);
    still_serves(&mut s, conn, doc);
}

#[test]
fn a_document_chunk_within_bounds_from_a_device_is_accepted() {
    // A device that creates a document offline sends it whole (what `save()` writes).
    let mut s = Server::new();
    let conn = s.join(7, teacher(1));
    let doc = DocumentId::from_bytes([4; 16]);
    let mut device = Automerge::new().with_actor(ActorId::from([9u8; 16].as_slice()));
    kepu_sync_core::edits::apply_unchecked(
        &mut device,
        &Writer::server(DeviceId(uuid::Uuid::from_u128(1))),
        NOW,
        &Edit::CreateVenue {
            venue: VenueId(uuid::Uuid::from_u128(20)),
        },
    )
    .unwrap();
    let heads = device.get_heads();
    let saved = device.save();
    s.sync(conn, doc, hostile::sync_message(heads, vec![saved]));
    let errors = s.errors(conn);
    assert!(
        !errors.iter().any(|c| c == "payload-too-large"
            || c == "chunk-type-refused"
            || c == "too-many-operations"),
        "{errors:?}"
    );
}

/// Makes `conn` a peer of `doc` (it asks for the document and gets it).
fn fetch(s: &mut Server, conn: ConnId, doc: DocumentId) {
    still_serves(s, conn, doc);
}

fn ephemeral(sender: &str, doc: DocumentId, data: Vec<u8>) -> Message {
    Message::Ephemeral {
        sender_id: sender.into(),
        target_id: "server".into(),
        document_id: doc,
        session_id: "session".into(),
        count: 1,
        data,
    }
}

/// The ephemeral messages `conn` received: (sender id, data).
fn received(s: &mut Server, conn: ConnId) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    s.sent.retain(|(c, bytes)| {
        if *c != conn {
            return true;
        }
        if let Ok(Message::Ephemeral {
            sender_id, data, ..
        }) = wire::decode(bytes)
        {
            out.push((sender_id, data));
        }
        false
    });
    out
}

#[test]
fn ephemeral_messages_are_bounded_and_relayed_as_their_real_sender_only_to_readers_of_the_document()
{
    let (mut s, doc, _) = server_with_doc();
    let a = s.join(7, teacher(1));
    let b = s.join(8, teacher(2));
    let c = s.join(9, teacher(3));
    fetch(&mut s, a, doc);
    fetch(&mut s, b, doc);
    s.sent.clear();
    // A claims to be someone else: B sees the id A joined with.
    s.frame(a, &ephemeral("the-teacher", doc, vec![1, 2, 3]));
    assert_eq!(
        received(&mut s, b),
        vec![("device-7".to_owned(), vec![1, 2, 3])]
    );
    assert!(
        received(&mut s, c).is_empty(),
        "C does not share the document"
    );
    assert!(received(&mut s, a).is_empty(), "nothing echoes back");
    // C, not a peer of the document, cannot reach its peers.
    s.frame(c, &ephemeral("device-9", doc, vec![4]));
    assert!(received(&mut s, a).is_empty() && received(&mut s, b).is_empty());
    // Too large.
    s.frame(a, &ephemeral("device-7", doc, vec![0; 16 * 1024 + 1]));
    assert_eq!(s.errors(a), vec!["payload-too-large"]);
    assert!(received(&mut s, b).is_empty());
    // Too many in one second: 20 pass (one went out above), one refusal, the rest are
    // dropped.
    for _ in 0..100 {
        s.frame(a, &ephemeral("device-7", doc, vec![5]));
    }
    assert_eq!(received(&mut s, b).len(), 19);
    assert_eq!(s.errors(a), vec!["rate-limited"]);
}

/// An empty change under `actor` on top of the server's copy of `doc`.
fn empty_change(s: &Server, doc: DocumentId, actor: &[u8]) -> (ChangeHash, Vec<u8>) {
    let mut forged = s.engine.doc(&doc).unwrap().fork();
    forged.set_actor(ActorId::from(actor));
    let hash = forged.empty_commit(automerge::transaction::CommitOptions::default());
    let bytes = forged
        .get_change_by_hash(&hash)
        .unwrap()
        .raw_bytes()
        .to_vec();
    (hash, bytes)
}

#[test]
fn a_device_writing_under_the_servers_actor_id_is_refused() {
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    let (hash, change) = empty_change(&s, doc, &SERVER_ACTOR);
    s.sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    assert_eq!(s.errors(conn), vec!["foreign-actor"]);
    assert_eq!(s.engine.doc(&doc).unwrap().get_heads(), heads);
    assert_eq!(
        s.engine.actor_owner(&SERVER_ACTOR),
        Some(DeviceId(uuid::Uuid::from_u128(1))),
        "the server's own first write claimed its actor id"
    );
    assert_eq!(s.store.actor_claims.len(), 1, "and the claim is stored");
}

#[test]
fn a_device_may_own_only_so_many_actor_ids() {
    let mut s = Server::with(|c| c.limits.actors_per_device = 3);
    let doc = DocumentId::from_bytes([3; 16]);
    s.feed(Input::Edit {
        doc,
        edit: Edit::CreateVenue {
            venue: VenueId(uuid::Uuid::from_u128(20)),
        },
    });
    let conn = s.join(7, teacher(1));
    for n in 1..=4u8 {
        let (hash, change) = empty_change(&s, doc, &[n; 16]);
        s.sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    }
    let errors = s.errors(conn);
    assert!(errors.iter().any(|c| c == "too-many-actors"), "{errors:?}");
    let owned = (1..=4u8)
        .filter(|n| s.engine.actor_owner(&[*n; 16]).is_some())
        .count();
    assert_eq!(owned, 3);
}

#[test]
fn a_whole_document_carrying_a_forged_change_loses_only_that_change() {
    // A device that sends more than a third of a document sends it whole (`save()`): the
    // forged change inside it is refused, the device's own changes land, and are stored
    // as the document was split, without a walk of the server's history.
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    let server_copy = s.engine.doc(&doc).unwrap().clone();
    let mut own = server_copy.fork();
    own.set_actor(ActorId::from([0x77u8; 16].as_slice()));
    let own_hash = own.empty_commit(automerge::transaction::CommitOptions::default());
    let own_next = own.empty_commit(automerge::transaction::CommitOptions::default());
    let mut forged = server_copy.fork();
    forged.set_actor(ActorId::from(SERVER_ACTOR.as_slice()));
    let forged_hash = forged.empty_commit(automerge::transaction::CommitOptions::default());
    own.merge(&mut forged).unwrap();
    let whole = own.save();
    s.sync(
        conn,
        doc,
        hostile::sync_message(own.get_heads(), vec![whole]),
    );
    assert_eq!(s.errors(conn), vec!["foreign-actor"]);
    assert_eq!(
        s.appends.last(),
        Some(&2),
        "the own changes stored by themselves"
    );
    assert_eq!(
        s.engine.work().history_walks,
        0,
        "stored from the changes the document was split into, not by walking its history"
    );
    let d = s.engine.doc(&doc).unwrap();
    assert!(
        [own_hash, own_next]
            .iter()
            .all(|h| d.get_change_by_hash(h).is_some()),
        "the own changes landed"
    );
    assert!(
        d.get_change_by_hash(&forged_hash).is_none(),
        "the forged one did not"
    );
    assert!(heads.iter().all(|h| d.get_change_by_hash(h).is_some()));
    assert_eq!(
        s.engine.actor_owner(&[0x77; 16]),
        Some(teacher(1).device),
        "the device's new actor id is its own now"
    );
}

#[test]
fn two_engine_shards_never_give_one_actor_id_to_two_devices() {
    // A server's shards merge different documents in parallel, but share their claims.
    let shared = kepu_sync_core::engine::shared::Shared::new();
    let mut shards: Vec<Server> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            Server::with(move |c| c.shared = shared)
        })
        .collect();
    let docs = [
        DocumentId::from_bytes([3; 16]),
        DocumentId::from_bytes([4; 16]),
    ];
    for (s, doc) in shards.iter_mut().zip(docs) {
        s.feed(Input::Edit {
            doc,
            edit: Edit::CreateVenue {
                venue: VenueId(uuid::Uuid::from_u128(20)),
            },
        });
    }
    let stolen = [9u8; 16];
    // The first device writes under its new actor id in a document of the first shard.
    let first = shards[0].join(7, teacher(1));
    let (hash, change) = empty_change(&shards[0], docs[0], &stolen);
    shards[0].sync(
        first,
        docs[0],
        hostile::sync_message(vec![hash], vec![change]),
    );
    assert!(shards[0].errors(first).is_empty());
    // Another device uses that actor id in a document of the second shard.
    let second = shards[1].join(8, teacher(2));
    let before = shards[1].engine.doc(&docs[1]).unwrap().get_heads();
    let (hash, change) = empty_change(&shards[1], docs[1], &stolen);
    shards[1].sync(
        second,
        docs[1],
        hostile::sync_message(vec![hash], vec![change]),
    );
    assert_eq!(shards[1].errors(second), vec!["foreign-actor"]);
    assert_eq!(shards[1].engine.doc(&docs[1]).unwrap().get_heads(), before);
    assert_eq!(
        shards[1].engine.actor_owner(&stolen),
        Some(teacher(1).device),
        "the claim is the first device's in every shard"
    );
}

#[test]
fn a_pass_revoked_in_one_shard_is_refused_in_a_booking_of_another() {
    use kepu_sync_core::edits::apply_unchecked;
    use kepu_sync_core::ids::{PupilId, SlotId};
    use kepu_sync_core::proof::ServerSigner;
    use kepu_sync_core::schema::booking::ScanMethod;

    let signer = ServerSigner::from_seed([9; 32]);
    let revocations = DocumentId::from_bytes([5; 16]);
    let booking = DocumentId::from_bytes([6; 16]);
    let shared = kepu_sync_core::engine::shared::Shared::new();
    let mut shards: Vec<Server> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            let key = signer.public();
            Server::with(move |c| {
                c.shared = shared;
                c.proof_key = Some(key);
                c.revocations_doc = Some(revocations);
            })
        })
        .collect();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let school = SchoolId(uuid::Uuid::from_u128(10));
    let (kept, revoked) = (
        PupilId(uuid::Uuid::from_u128(31)),
        PupilId(uuid::Uuid::from_u128(32)),
    );
    // The first shard holds the revocation list; the second the booking.
    shards[0].feed(Input::Edit {
        doc: revocations,
        edit: Edit::CreateRevocations,
    });
    shards[0].feed(Input::Edit {
        doc: revocations,
        edit: Edit::RevokePass {
            pupil: revoked,
            serial: 1,
        },
    });
    shards[1].feed(Input::Edit {
        doc: booking,
        edit: Edit::CreateBooking {
            venue,
            slot: SlotId(uuid::Uuid::from_u128(40)),
            school,
            party_size: 2,
            roster: vec![kept, revoked],
        },
    });
    let gate = Writer {
        device: DeviceId(uuid::Uuid::from_u128(3000)),
        user: UserId(uuid::Uuid::from_u128(3001)),
        role: Role::VenueStaff,
        school: None,
        venue: Some(venue),
        pupil: None,
    };
    let conn = shards[1].join(9, gate.clone());
    let mut copy = shards[1].engine.doc(&booking).unwrap().fork();
    copy.set_actor(ActorId::from([0x42; 16].as_slice()));
    let scan = |s: &mut Server, copy: &mut Automerge, pupil: PupilId, n: u8| {
        let heads = copy.get_heads();
        let edit = Edit::CheckIn {
            pupil,
            scan_id: format!("0190f000-0000-7000-8000-00000000000{n}"),
            method: ScanMethod::PassScan,
            proof: Some(signer.issue_pass(pupil, school, 1, NOW + 86_400_000)),
        };
        let hash = apply_unchecked(copy, &gate, NOW, &edit).unwrap().unwrap();
        let change = copy.get_change_by_hash(&hash).unwrap().raw_bytes().to_vec();
        s.sync(conn, booking, hostile::sync_message(heads, vec![change]));
        s.errors(conn)
    };
    assert!(
        scan(&mut shards[1], &mut copy, kept, 1).is_empty(),
        "a valid pass counts"
    );
    assert_eq!(
        scan(&mut shards[1], &mut copy, revoked, 2),
        vec!["bad-proof"],
        "the revoked pass is refused although the list is in another shard"
    );
}

/// A change under `actor` that writes `edit` into `doc` as `as_writer` would.
fn written_change(
    s: &Server,
    doc: DocumentId,
    actor: &[u8],
    as_writer: &Writer,
    edit: &Edit,
) -> (ChangeHash, Vec<u8>) {
    let mut copy = s.engine.doc(&doc).unwrap().fork();
    copy.set_actor(ActorId::from(actor));
    let hash = kepu_sync_core::edits::apply_unchecked(&mut copy, as_writer, NOW, edit)
        .unwrap()
        .unwrap();
    let bytes = copy.get_change_by_hash(&hash).unwrap().raw_bytes().to_vec();
    (hash, bytes)
}

#[test]
fn an_edge_box_relays_only_its_rosters_actor_ids_in_every_shard_each_as_its_author() {
    // ADR 0150: what the shards share includes each edge's relay roster.
    let shared = kepu_sync_core::engine::shared::Shared::new();
    let mut shards: Vec<Server> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            Server::with(move |c| c.shared = shared)
        })
        .collect();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let doc = DocumentId::from_bytes([4; 16]);
    shards[1].feed(Input::Edit {
        doc,
        edit: Edit::CreateVenue { venue },
    });
    let edge = Writer {
        device: DeviceId(uuid::Uuid::from_u128(500)),
        user: UserId(uuid::Uuid::from_u128(501)),
        role: Role::VenueStaff,
        school: None,
        venue: Some(venue),
        pupil: None,
    };
    let staff = Writer {
        device: DeviceId(uuid::Uuid::from_u128(600)),
        user: UserId(uuid::Uuid::from_u128(601)),
        ..edge
    };
    let roster: kepu_sync_core::engine::shared::Roster = [
        (teacher(1).device, teacher(1)),
        (staff.device, staff.clone()),
    ]
    .into_iter()
    .collect();
    shared.set_relay(edge.device, roster);
    assert!(shared.claim_for(&[5; 16], teacher(1).device));
    assert!(shared.claim_for(&[6; 16], staff.device));
    assert!(shared.claim_for(&[7; 16], teacher(2).device));
    // Set once in what the shards share: the shard of the document is told nothing more.
    let conn = shards[1].join(9, edge);
    let before = shards[1].engine.doc(&doc).unwrap().get_heads();

    // Its own new actor id: an edge writes nothing of its own, and claims nothing.
    let (hash, change) = empty_change(&shards[1], doc, &[8; 16]);
    shards[1].sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    assert_eq!(shards[1].errors(conn), vec!["foreign-actor"]);
    assert_eq!(shared.actor_owner(&[8; 16]), None);
    // A device off its roster.
    let (hash, change) = empty_change(&shards[1], doc, &[7; 16]);
    shards[1].sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    assert_eq!(shards[1].errors(conn), vec!["foreign-actor"]);
    assert_eq!(shards[1].engine.doc(&doc).unwrap().get_heads(), before);

    // A slot written under the roster teacher's actor id: refused as the teacher's,
    // although the edge's own role (venue staff) could write it.
    let slot = Edit::PutSlot {
        slot: kepu_sync_core::ids::SlotId(uuid::Uuid::from_u128(77)),
        start: NOW + 3_600_000,
        end: NOW + 7_200_000,
        capacity: 30,
        label: "relayed".into(),
    };
    let (hash, change) = written_change(&shards[1], doc, &[5; 16], &staff, &slot);
    shards[1].sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    let errors = shards[1].errors(conn);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_ne!(
        errors[0], "foreign-actor",
        "validated, not refused as foreign"
    );
    assert_eq!(shards[1].engine.doc(&doc).unwrap().get_heads(), before);
    // The same slot under the roster staff device's actor id: accepted as theirs.
    let (hash, change) = written_change(&shards[1], doc, &[6; 16], &staff, &slot);
    shards[1].sync(conn, doc, hostile::sync_message(vec![hash], vec![change]));
    assert!(shards[1].errors(conn).is_empty());
    assert!(
        shards[1]
            .engine
            .doc(&doc)
            .unwrap()
            .get_change_by_hash(&hash)
            .is_some(),
        "the staff device's relayed slot is merged"
    );
    // Any other device is unaffected: the roster is the edge's alone.
    let other = shards[1].join(10, teacher(1));
    let (hash, change) = empty_change(&shards[1], doc, &[5; 16]);
    shards[1].sync(other, doc, hostile::sync_message(vec![hash], vec![change]));
    assert!(
        shards[1].errors(other).is_empty(),
        "the teacher's own actor id"
    );
}

fn staff(n: u128, venue: VenueId) -> Writer {
    Writer {
        device: DeviceId(uuid::Uuid::from_u128(600 + n)),
        user: UserId(uuid::Uuid::from_u128(700 + n)),
        role: Role::VenueStaff,
        school: None,
        venue: Some(venue),
        pupil: None,
    }
}

fn slot(n: u128) -> Edit {
    Edit::PutSlot {
        slot: kepu_sync_core::ids::SlotId(uuid::Uuid::from_u128(80 + n)),
        start: NOW + 3_600_000,
        end: NOW + 7_200_000,
        capacity: 30,
        label: format!("slot {n}"),
    }
}

#[test]
fn messages_of_several_devices_read_together_are_merged_in_one_append_and_each_acknowledged() {
    // ADR 0191: a burst of one document's messages is merged with one apply and stored
    // with one append; each device still hears back with its own change acknowledged.
    let (mut s, doc, _) = server_with_doc();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let (a, b) = (s.join(7, staff(1, venue)), s.join(8, staff(2, venue)));
    let (ha, ca) = written_change(&s, doc, &[5; 16], &staff(1, venue), &slot(1));
    let (hb, cb) = written_change(&s, doc, &[6; 16], &staff(2, venue), &slot(2));
    s.sent.clear();
    s.appends.clear();
    s.read_together(
        doc,
        vec![
            (a, hostile::sync_message(vec![ha], vec![ca])),
            (b, hostile::sync_message(vec![hb], vec![cb])),
        ],
    );
    assert_eq!(s.appends, vec![2], "one append holds both devices' changes");
    let d = s.engine.doc(&doc).unwrap();
    assert!(d.get_change_by_hash(&ha).is_some() && d.get_change_by_hash(&hb).is_some());
    let heads = d.get_heads();
    for conn in [a, b] {
        assert!(
            s.replies(conn).contains(&heads),
            "each device hears the server hold both changes"
        );
        assert!(s.errors(conn).is_empty());
    }
    assert_eq!(s.engine.actor_owner(&[5; 16]), Some(staff(1, venue).device));
    assert_eq!(s.engine.actor_owner(&[6; 16]), Some(staff(2, venue).device));
}

/// Two staff devices and a teacher joined to a venue document, and a slot change of
/// each: the staff's their own, the teacher's refused (a teacher may not write a venue's
/// slots, even as a venue's staff would).
#[allow(clippy::type_complexity)]
fn two_staff_and_a_teacher() -> (Server, DocumentId, [ConnId; 3], [(ChangeHash, Vec<u8>); 3]) {
    let (mut s, doc, _) = server_with_doc();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let conns = [
        s.join(7, staff(1, venue)),
        s.join(9, teacher(1)),
        s.join(8, staff(2, venue)),
    ];
    let changes = [
        written_change(&s, doc, &[5; 16], &staff(1, venue), &slot(1)),
        written_change(&s, doc, &[9; 16], &staff(1, venue), &slot(3)),
        written_change(&s, doc, &[6; 16], &staff(2, venue), &slot(2)),
    ];
    (s, doc, conns, changes)
}

#[test]
fn a_refused_device_in_messages_read_together_loses_only_its_own_change() {
    let (mut s, doc, [a, t, b], [(ha, ca), (ht, ct), (hb, cb)]) = two_staff_and_a_teacher();
    s.sent.clear();
    s.read_together(
        doc,
        vec![
            (a, hostile::sync_message(vec![ha], vec![ca])),
            (t, hostile::sync_message(vec![ht], vec![ct])),
            (b, hostile::sync_message(vec![hb], vec![cb])),
        ],
    );
    let errors = s.errors(t);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_ne!(errors[0], "foreign-actor", "validated as the teacher's");
    assert!(s.errors(a).is_empty() && s.errors(b).is_empty());
    let d = s.engine.doc(&doc).unwrap();
    assert!(d.get_change_by_hash(&ha).is_some(), "staff 1's slot landed");
    assert!(d.get_change_by_hash(&hb).is_some(), "staff 2's slot landed");
    assert!(d.get_change_by_hash(&ht).is_none(), "the teacher's did not");
    let stored = &s.store.docs[&doc].changes;
    assert!(
        stored.contains_key(&ha) && stored.contains_key(&hb),
        "both slots stored"
    );
    assert!(!stored.contains_key(&ht), "the refused one is not");
}

#[test]
fn one_devices_messages_read_together_keep_their_order() {
    // The second message depends on the first: merged after it, nothing refused.
    let (mut s, doc, _) = server_with_doc();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let (a, b) = (s.join(7, staff(1, venue)), s.join(8, staff(2, venue)));
    let mut copy = s.engine.doc(&doc).unwrap().fork();
    copy.set_actor(ActorId::from([5u8; 16].as_slice()));
    let mut sent = Vec::new();
    for n in 1..=2 {
        let hash =
            kepu_sync_core::edits::apply_unchecked(&mut copy, &staff(1, venue), NOW, &slot(n))
                .unwrap()
                .unwrap();
        let bytes = copy.get_change_by_hash(&hash).unwrap().raw_bytes().to_vec();
        sent.push((a, hostile::sync_message(vec![hash], vec![bytes])));
    }
    let (hb, cb) = written_change(&s, doc, &[6; 16], &staff(2, venue), &slot(5));
    sent.insert(1, (b, hostile::sync_message(vec![hb], vec![cb])));
    s.sent.clear();
    s.read_together(doc, sent);
    assert!(s.errors(a).is_empty() && s.errors(b).is_empty());
    let d = s.engine.doc(&doc).unwrap();
    for h in copy.get_heads().iter().chain([&hb]) {
        assert!(d.get_change_by_hash(h).is_some());
    }
}

/// A device's whole saved document: the server's copy of `doc` and slot `n` written
/// under `actor` as `writer`; the slot's change and the sync message carrying it.
fn saved_with_slot(
    s: &Server,
    doc: DocumentId,
    actor: u8,
    writer: &Writer,
    n: u128,
) -> (ChangeHash, Vec<u8>) {
    let mut own = s.engine.doc(&doc).unwrap().fork();
    own.set_actor(ActorId::from([actor; 16].as_slice()));
    let hash = kepu_sync_core::edits::apply_unchecked(&mut own, writer, NOW, &slot(n))
        .unwrap()
        .unwrap();
    (
        hash,
        hostile::sync_message(own.get_heads(), vec![own.save()]),
    )
}

#[test]
fn a_peer_asking_for_one_change_twice_gets_it_once() {
    // automerge builds the changes a peer asks for by hash; asked for one change twice it
    // fails to build them and panics. A device's need is read once per hash.
    let (mut s, doc, heads) = server_with_doc();
    let conn = s.join(7, teacher(1));
    for version in [sync::MessageVersion::V1, sync::MessageVersion::V2] {
        s.sent.clear();
        let ask = sync::Message {
            heads: Vec::new(),
            need: vec![heads[0], heads[0], heads[0]],
            have: Vec::new(),
            changes: sync::ChunkList::from(Vec::<Vec<u8>>::new()),
            flags: None,
            version,
        };
        s.sync(conn, doc, ask.encode());
        let mut got = Vec::new();
        for (c, bytes) in std::mem::take(&mut s.sent) {
            if let (true, Ok(Message::Sync { data, .. })) = (c == conn, wire::decode(&bytes)) {
                let m = sync::Message::decode(&data).unwrap();
                got.extend(m.changes.iter().map(<[u8]>::to_vec));
            }
        }
        let mut fresh = Automerge::new();
        for chunk in got {
            fresh.load_incremental(&chunk).unwrap();
        }
        assert_eq!(fresh.get_heads(), heads, "the change, once");
        assert_eq!(fresh.get_changes(&[]).len(), 1);
    }
    still_serves(&mut s, conn, doc);
}

#[test]
fn a_whole_document_is_rebuilt_only_in_the_changes_the_server_lacks() {
    // At the end of day a gate sends its whole copy: the document as it had it when it
    // went offline and its own new change, while the server has merged another gate's
    // since. Only the gate's own change is rebuilt from the copy; sent again, the copy
    // brings nothing and is not even loaded.
    let (mut s, doc, heads) = server_with_doc();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let (a, b) = (s.join(7, staff(1, venue)), s.join(8, staff(2, venue)));
    for n in 1..=3 {
        let (_, m) = saved_with_slot(&s, doc, 6, &staff(2, venue), 10 + n);
        s.sync(b, doc, m);
    }
    let (ha, ma) = saved_with_slot(&s, doc, 5, &staff(1, venue), 1);
    let (_, mb) = saved_with_slot(&s, doc, 6, &staff(2, venue), 2);
    s.sync(b, doc, mb);
    let before = s.engine.work();
    s.appends.clear();
    s.sync(a, doc, ma.clone());
    assert!(s.errors(a).is_empty() && s.errors(b).is_empty());
    assert_eq!(s.appends, vec![1], "the gate's one change stored");
    let d = s.engine.doc(&doc).unwrap();
    assert!(d.get_change_by_hash(&ha).is_some());
    assert!(heads.iter().all(|h| d.get_change_by_hash(h).is_some()));
    let after = s.engine.work();
    assert_eq!(after.documents_split - before.documents_split, 1);
    assert_eq!(
        after.changes_rebuilt - before.changes_rebuilt,
        1,
        "the server's change and the other gate's were not rebuilt"
    );

    s.appends.clear();
    s.sync(a, doc, ma);
    assert!(s.errors(a).is_empty());
    assert!(s.appends.is_empty(), "nothing new to store");
    assert_eq!(
        s.engine.work().documents_split,
        after.documents_split,
        "a copy whose heads the server holds is not loaded"
    );
}

#[test]
fn whole_documents_of_several_devices_read_together_are_merged_in_one_append() {
    // A device far behind sends its whole saved document: what is new in it is merged
    // together with the other devices' news, each validated as its sender's.
    let (mut s, doc, _) = server_with_doc();
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let (a, b, t) = (
        s.join(7, staff(1, venue)),
        s.join(8, staff(2, venue)),
        s.join(9, teacher(1)),
    );
    let saved = |actor, writer: &Writer, n| saved_with_slot(&s, doc, actor, writer, n);
    let (ha, ma) = saved(5, &staff(1, venue), 1);
    let (hb, mb) = saved(6, &staff(2, venue), 2);
    s.appends.clear();
    s.read_together(doc, vec![(a, ma), (b, mb)]);
    assert_eq!(s.appends, vec![2], "one append holds both devices' news");
    let d = s.engine.doc(&doc).unwrap();
    assert!(d.get_change_by_hash(&ha).is_some() && d.get_change_by_hash(&hb).is_some());
    assert!(s.errors(a).is_empty() && s.errors(b).is_empty());

    // A teacher's document carrying a slot among two staff documents: refused alone.
    let saved = |actor, writer: &Writer, n| saved_with_slot(&s, doc, actor, writer, n);
    let (ha, ma) = saved(5, &staff(1, venue), 3);
    let (ht, mt) = saved(9, &staff(1, venue), 4);
    let (hb, mb) = saved(6, &staff(2, venue), 5);
    s.read_together(doc, vec![(a, ma), (t, mt), (b, mb)]);
    let d = s.engine.doc(&doc).unwrap();
    assert!(d.get_change_by_hash(&ha).is_some() && d.get_change_by_hash(&hb).is_some());
    assert!(
        d.get_change_by_hash(&ht).is_none(),
        "the teacher's slot is refused"
    );
    assert_eq!(s.errors(t).len(), 1);
    assert!(s.errors(a).is_empty() && s.errors(b).is_empty());
}

#[test]
fn a_refused_change_echoed_by_another_device_in_the_same_read_stays_refused() {
    // Merged one by one, the teacher's slot is refused before the staff device's echo of
    // it is admitted, which is then someone else's change: the same when read together.
    let (mut s, doc, [a, t, b], [(ha, ca), (ht, ct), (hb, cb)]) = two_staff_and_a_teacher();
    let mut b_heads = vec![hb, ht];
    b_heads.sort();
    s.sent.clear();
    s.read_together(
        doc,
        vec![
            (a, hostile::sync_message(vec![ha], vec![ca])),
            (t, hostile::sync_message(vec![ht], vec![ct.clone()])),
            (b, hostile::sync_message(b_heads, vec![ct, cb])),
        ],
    );
    let d = s.engine.doc(&doc).unwrap();
    assert!(
        d.get_change_by_hash(&ht).is_none(),
        "the teacher's slot stays out"
    );
    assert!(d.get_change_by_hash(&ha).is_some() && d.get_change_by_hash(&hb).is_some());
    assert_eq!(s.errors(b), vec!["foreign-actor"]);
}

#[test]
fn a_gate_writing_its_scan_again_is_refused_and_the_other_gates_scan_read_with_it_lands() {
    // ADR 0206: a scan, once taken, is not written again, also when the rewrite comes in
    // a burst the server reads together with another device's messages.
    use automerge::transaction::Transactable;
    use kepu_sync_core::edits::apply_unchecked;
    use kepu_sync_core::ids::{PupilId, SlotId};
    use kepu_sync_core::schema::booking::{Booking, ScanMethod};
    let mut s = Server::new();
    let doc = DocumentId::from_bytes([9; 16]);
    let venue = VenueId(uuid::Uuid::from_u128(20));
    let pupil = PupilId(uuid::Uuid::from_u128(31));
    s.feed(Input::Edit {
        doc,
        edit: Edit::CreateBooking {
            venue,
            slot: SlotId(uuid::Uuid::from_u128(40)),
            school: SchoolId(uuid::Uuid::from_u128(10)),
            party_size: 1,
            roster: vec![pupil],
        },
    });
    let (a, b) = (s.join(7, staff(1, venue)), s.join(8, staff(2, venue)));
    let scan = |id: &str| Edit::CheckIn {
        pupil,
        scan_id: id.into(),
        method: ScanMethod::Manual,
        proof: None,
    };
    let mut gate = s.engine.doc(&doc).unwrap().fork();
    gate.set_actor(ActorId::from([5u8; 16].as_slice()));
    let first = apply_unchecked(&mut gate, &staff(1, venue), NOW, &scan("s-1"))
        .unwrap()
        .unwrap();
    let bytes = gate
        .get_change_by_hash(&first)
        .unwrap()
        .raw_bytes()
        .to_vec();
    s.sync(a, doc, hostile::sync_message(vec![first], vec![bytes]));
    assert!(s.errors(a).is_empty(), "the first scan is taken");
    let taken = Booking::read(s.engine.doc(&doc).unwrap())
        .unwrap()
        .check_ins;
    assert_eq!(taken.len(), 1);
    // The same gate writes its record again, an hour earlier.
    let key = format!("{pupil}/s-1");
    let earlier = format!(r#"{{"at":{},"method":"manual"}}"#, NOW - 3_600_000);
    let mut tx = gate.transaction();
    let records = tx
        .get(automerge::ROOT, "check_in_records")
        .unwrap()
        .unwrap()
        .1;
    let mine = tx
        .get(&records, staff(1, venue).device.to_string())
        .unwrap()
        .unwrap()
        .1;
    tx.put(&mine, key.as_str(), earlier).unwrap();
    let again = tx.commit().0.unwrap();
    let again_bytes = gate
        .get_change_by_hash(&again)
        .unwrap()
        .raw_bytes()
        .to_vec();
    let (other, other_bytes) = written_change(&s, doc, &[6; 16], &staff(2, venue), &scan("s-9"));
    s.sent.clear();
    s.read_together(
        doc,
        vec![
            (a, hostile::sync_message(vec![again], vec![again_bytes])),
            (b, hostile::sync_message(vec![other], vec![other_bytes])),
        ],
    );
    assert_eq!(s.errors(a), vec!["scan-immutable"]);
    assert!(s.errors(b).is_empty());
    let d = s.engine.doc(&doc).unwrap();
    assert!(
        d.get_change_by_hash(&again).is_none(),
        "the rewrite is not merged"
    );
    assert!(
        d.get_change_by_hash(&other).is_some(),
        "the other gate's scan is"
    );
    let now = Booking::read(d).unwrap().check_ins;
    assert_eq!(now.len(), 2);
    assert!(now.contains(&taken[0]), "the first scan is as it was taken");
    assert!(
        !s.store.docs[&doc].changes.contains_key(&again),
        "nor stored"
    );
}
