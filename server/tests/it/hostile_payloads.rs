//! Hostile sync payloads against the real `kepu-server` binary (a child process, so its
//! memory can be read from `/proc`), sent over a websocket with an enrolled device's
//! token: each is refused with an `error` whose code the device can show, the server's
//! memory does not grow by more than 64 MiB, and it goes on serving honest devices.

use std::net::SocketAddr;
use std::time::Duration;

use automerge::ReadDoc;
use futures_util::{SinkExt, StreamExt};
use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::guard::hostile;
use kepu_sync_core::ids::{PupilId, SchoolId, VenueId};
use kepu_sync_core::wire::{self, Message};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::kill9::ServerProcess;
use crate::support::{Db, TestDb, place};
use crate::sync_client::{Device, open_socket};
use crate::world::{Enroller, check_in, create_booking, new_doc, publish_slot, pupils, scan_ids};

// The bombs run on both databases too: what the server does with a hostile frame must not
// depend on where it stores documents.
crate::support::on_both_databases!(
    multi_thread kind:
    frames_that_inflate_to_gigabytes_are_refused_and_the_server_stays_small,
    a_pupil_cannot_write_under_the_teachers_actor_and_the_teachers_offline_check_ins_land,
);

const MIB: u64 = 1024 * 1024;

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A tampered app: speaks the protocol itself with a real device token.
pub(crate) struct Raw {
    socket: Socket,
}

impl Raw {
    pub(crate) async fn join(addr: SocketAddr, token: &str) -> Self {
        let mut socket = open_socket(addr, token).await.expect("websocket opens");
        let join = Message::Join {
            sender_id: "tampered".into(),
            peer_metadata: None,
            supported_protocol_versions: vec!["1".into()],
        };
        socket.send(Ws::Binary(join.encode().into())).await.unwrap();
        let mut raw = Self { socket };
        assert!(
            matches!(raw.next().await, Some(Message::Peer { .. })),
            "the server answers join"
        );
        raw
    }

    async fn send(&mut self, msg: &Message) {
        self.socket
            .send(Ws::Binary(msg.encode().into()))
            .await
            .expect("frame sent");
    }

    pub(crate) async fn sync(&mut self, doc: DocumentId, data: Vec<u8>) {
        self.send(&Message::Sync {
            sender_id: "tampered".into(),
            target_id: "server".into(),
            document_id: doc,
            data,
        })
        .await;
    }

    async fn next(&mut self) -> Option<Message> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.socket.next()).await {
                Ok(Some(Ok(Ws::Binary(b)))) => return wire::decode(&b).ok(),
                Ok(Some(Ok(Ws::Close(_)) | Err(_)) | None) | Err(_) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The refusal code of the next `error` (other frames skipped); `None` if the
    /// connection closes or stays silent.
    pub(crate) async fn refusal(&mut self) -> Option<String> {
        loop {
            if let Message::Error {
                refusal, message, ..
            } = self.next().await?
            {
                return Some(refusal.map_or(message, |r| r.code.to_string()));
            }
        }
    }
}

/// A booking with `roster` made by `teacher` and synced, on a running server.
struct Stage {
    enroller: Enroller,
    teacher: Device,
    pupil: Device,
    booking: DocumentId,
    roster: Vec<PupilId>,
}

async fn stage(db: &TestDb, server: &ServerProcess) -> Stage {
    let p = place(&db.store).await;
    let enroller = Enroller::new(&db.store, server.addr);
    let mut staff = enroller
        .device(Role::VenueStaff, None, Some(p.venue), 200)
        .await;
    let slot = publish_slot(&mut staff, server.addr, VenueId(p.venue), 60).await;
    let mut teacher = enroller
        .device(Role::Teacher, Some(p.school), None, 1)
        .await;
    let mut pupil = enroller.device(Role::Pupil, Some(p.school), None, 2).await;
    let mut roster = pupils(5_000, 3);
    roster.push(pupil.engine.config().writer.pupil.expect("a pupil"));
    let booking = new_doc();
    teacher.edit(
        booking,
        create_booking(VenueId(p.venue), slot, SchoolId(p.school), roster.clone()),
    );
    teacher.sync_until_stored(server.addr, &booking).await;
    assert!(teacher.server_has_all(&booking));
    pupil.want(booking);
    pupil.sync(server.addr).await;
    assert!(
        pupil
            .doc(&booking)
            .is_some_and(|d| !d.get_heads().is_empty()),
        "the pupil reads the booking"
    );
    Stage {
        enroller,
        teacher,
        pupil,
        booking,
        roster,
    }
}

async fn frames_that_inflate_to_gigabytes_are_refused_and_the_server_stays_small(db_kind: Db) {
    let db = TestDb::new(db_kind).await;
    let server = ServerProcess::start(&db).await;
    let pid = server.child.id();
    let Stage {
        mut teacher,
        mut pupil,
        booking,
        roster,
        ..
    } = stage(&db, &server).await;
    let heads = pupil.doc(&booking).unwrap().get_heads();

    // Built before measuring: a well-formed compressed change that inflates to 1 GiB, and
    // a document whose one compressed column inflates to 1 GiB.
    let change_bomb = hostile::compressed_change_bomb(&[0x66; 16], 1, &heads, 1 << 30);
    let document_bomb = hostile::document_bomb(&[0x66; 16], 1 << 30);
    for bomb in [&change_bomb, &document_bomb] {
        assert!(bomb.len() < 4 << 20, "frames under the 8 MiB limit");
    }
    let rss_before = status_kib(pid, "VmRSS:");
    let peak_before = status_kib(pid, "VmHWM:");

    let mut raw = Raw::join(server.addr, &pupil.token).await;
    for _ in 0..3 {
        raw.sync(
            booking,
            hostile::sync_message(heads.clone(), vec![change_bomb.clone()]),
        )
        .await;
        assert_eq!(raw.refusal().await.as_deref(), Some("payload-too-large"));
    }
    raw.sync(
        booking,
        hostile::sync_message(heads.clone(), vec![document_bomb.clone()]),
    )
    .await;
    assert_eq!(raw.refusal().await.as_deref(), Some("payload-too-large"));
    // A change of fifty bytes declaring a trillion operations.
    raw.sync(
        booking,
        hostile::sync_message(
            heads.clone(),
            vec![hostile::operation_bomb(&[0x66; 16], 1, &heads, 1 << 40)],
        ),
    )
    .await;
    assert_eq!(raw.refusal().await.as_deref(), Some("too-many-operations"));
    // A Bloom filter that made automerge divide by zero, stopping every device's sync.
    raw.sync(booking, hostile::broken_bloom_message(&heads))
        .await;
    assert_eq!(raw.refusal().await.as_deref(), Some("malformed-sync"));
    // A peer id of a megabyte.
    raw.send(&Message::Sync {
        sender_id: "x".repeat(1 << 20),
        target_id: "server".into(),
        document_id: booking,
        data: hostile::sync_message(heads.clone(), Vec::new()),
    })
    .await;
    assert_eq!(raw.refusal().await.as_deref(), Some("malformed-message"));

    let rss_after = status_kib(pid, "VmRSS:");
    let peak_after = status_kib(pid, "VmHWM:");
    eprintln!(
        "server memory: resident {rss_before} -> {rss_after} KiB, peak {peak_before} -> {peak_after} KiB"
    );
    assert!(
        peak_after.saturating_sub(peak_before) * 1024 < 64 * MIB,
        "the server's peak memory grew by {} KiB",
        peak_after - peak_before
    );
    assert!(
        rss_after.saturating_sub(rss_before) * 1024 < 64 * MIB,
        "the server's memory grew by {} KiB",
        rss_after - rss_before
    );

    // The same connection is still served, and honest devices still sync.
    raw.send(&Message::Request {
        sender_id: "tampered".into(),
        target_id: "server".into(),
        document_id: booking,
        data: hostile::sync_message(Vec::new(), Vec::new()),
    })
    .await;
    let mut answered = false;
    while let Some(m) = raw.next().await {
        if matches!(m, Message::Sync { .. }) {
            answered = true;
            break;
        }
    }
    assert!(answered, "the tampered connection still gets the booking");
    let (edit, scan) = check_in(roster[0]);
    teacher.edit(booking, edit);
    teacher.sync_until_stored(server.addr, &booking).await;
    assert!(teacher.server_has_all(&booking), "the check-in is stored");
    pupil.sync(server.addr).await;
    assert!(scan_ids(pupil.doc(&booking).unwrap()).contains(&scan));
    drop(server);
    db.finish().await;
}

async fn a_pupil_cannot_write_under_the_teachers_actor_and_the_teachers_offline_check_ins_land(
    db_kind: Db,
) {
    let db = TestDb::new(db_kind).await;
    let server = ServerProcess::start(&db).await;
    let Stage {
        enroller,
        mut teacher,
        mut pupil,
        booking,
        roster,
    } = stage(&db, &server).await;

    // The teacher is offline on a school trip and ticks two pupils off.
    teacher.disconnect();
    let mut scans = Vec::new();
    for p in &roster[..2] {
        let (edit, id) = check_in(*p);
        teacher.edit(booking, edit);
        scans.push(id);
    }

    // The pupil's tampered app takes the teacher's actor id from the booking's history and
    // writes an empty change under it, with the teacher's next sequence number.
    let teacher_actor = teacher.doc(&booking).unwrap().get_actor().clone();
    let mut forged = pupil.doc(&booking).unwrap().fork();
    forged.set_actor(teacher_actor.clone());
    let hash = forged.empty_commit(automerge::transaction::CommitOptions::default());
    let change = forged
        .get_change_by_hash(&hash)
        .unwrap()
        .raw_bytes()
        .to_vec();
    let attack = hostile::sync_message(forged.get_heads(), vec![change]);
    let mut raw = Raw::join(server.addr, &pupil.token).await;
    raw.sync(booking, attack.clone()).await;
    assert_eq!(raw.refusal().await.as_deref(), Some("foreign-actor"));

    // The teacher comes back online: the check-ins land and every reader sees them.
    teacher.sync_until_stored(server.addr, &booking).await;
    assert!(
        teacher.server_has_all(&booking),
        "the offline check-ins are stored"
    );
    pupil.sync(server.addr).await;
    let seen = scan_ids(pupil.doc(&booking).unwrap());
    for s in &scans {
        assert!(
            seen.contains(s),
            "the pupil's copy has the teacher's check-in"
        );
    }
    let claims = db.store.actor_claims().await.unwrap();
    assert!(
        claims
            .iter()
            .any(|(a, d)| a == teacher_actor.to_bytes()
                && *d == teacher.engine.config().writer.device),
        "the teacher's device owns its actor id"
    );

    // After a restart the server still knows whose actor id it is.
    server.stop_gracefully().await;
    let server = ServerProcess::start(&db).await;
    let mut raw = Raw::join(server.addr, &pupil.token).await;
    raw.sync(booking, attack).await;
    assert_eq!(raw.refusal().await.as_deref(), Some("foreign-actor"));
    let (edit, id) = check_in(roster[2]);
    teacher.disconnect();
    teacher.edit(booking, edit);
    teacher.sync_until_stored(server.addr, &booking).await;
    assert!(teacher.server_has_all(&booking));
    let _ = (enroller, id);
    drop(server);
    db.finish().await;
}
