//! Compatibility you can prove (issue 15, ADR 0170): devices of every released schema
//! version against today's server.
//!
//! `record_golden_fixtures` is the recorder of `tests/fixtures/schema-v<N>/` (ignored;
//! run it by hand, see `tests/fixtures/README.md`). It writes, for each released version
//! that has no fixtures yet, the golden documents (`kepu_sync_core::golden`), their stored
//! change rows, their field inventory and one recorded sync exchange: a teacher's device
//! of that version sending the booking it requested offline and a check-in to a real
//! kepu-server, every frame both ways.
//!
//! The other cases replay those recorded frames, byte for byte, against today's server on
//! SQLite and PostgreSQL, and load the stored rows an old server wrote into today's store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kepu_server::Store;
use kepu_server::accounts::{Accounts, DeviceToken, EnrollmentCode, Role};
use kepu_server::ids::new_id;
use kepu_server::store::NewUser;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked_as_schema};
use kepu_sync_core::engine::{Event, StorageTask, StoredChange};
use kepu_sync_core::golden::{self, RELEASED};
use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::schema::{DocKind, SCHEMA_VERSION};
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::support::{Db, TestServer, on_both_databases};
use crate::sync_client::{Device, open_socket};

/// The booking of a version's recorded exchange (a fixed id per version, so that the
/// replays of every version can share one server).
fn exchange_doc(version: i64) -> DocumentId {
    let n = 0xb00c_0000_u128 + u128::try_from(version).expect("a positive version");
    DocumentId::from_bytes(n.to_be_bytes())
}

/// `tests/fixtures/schema-v<version>` at the repository root.
fn fixture_dir(version: i64) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(format!("schema-v{version}"))
}

/// One golden document's file: what today's engine must read from it, and its rows.
#[derive(Debug, Serialize, Deserialize)]
pub struct DocFixture {
    pub kind: DocKind,
    pub schema: i64,
    pub read: serde_json::Value,
    pub rows: Vec<golden::Row>,
}

/// One frame of a recorded exchange.
#[derive(Debug, Serialize, Deserialize)]
struct Frame {
    /// Sent by the device (`true`) or received from the server.
    sent: bool,
    /// The websocket frame, hex (one CBOR message).
    cbor: String,
}

/// A recorded sync exchange.
#[derive(Debug, Serialize, Deserialize)]
struct Exchange {
    schema: i64,
    /// What happened, in words.
    story: String,
    /// The booking synced.
    doc: String,
    /// The device (its user, school and device id must exist on a replaying server).
    device: Writer,
    frames: Vec<Frame>,
    /// The device's heads at the end, hex: the server must hold exactly these.
    heads: Vec<String>,
    /// The booking as the device read it at the end.
    read: serde_json::Value,
}

/// Writes the fixtures of every released version that has none (or of every version
/// with `KEPU_RECORD_OVERWRITE=1`, which breaks the promise of golden fixtures: only for
/// a version not yet released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the recorder of tests/fixtures; run by hand (tests/fixtures/README.md)"]
async fn record_golden_fixtures() {
    let overwrite = std::env::var("KEPU_RECORD_OVERWRITE").is_ok_and(|v| v == "1");
    for &version in RELEASED {
        let dir = fixture_dir(version);
        if dir.exists() && !overwrite {
            eprintln!("schema {version}: fixtures exist, left as they are");
            continue;
        }
        std::fs::create_dir_all(&dir).expect("fixture directory");
        let mut inventory: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for g in golden::documents(version) {
            std::fs::write(dir.join(format!("{}.automerge", g.name)), g.doc.save())
                .expect("write saved document");
            let fixture = DocFixture {
                kind: g.kind,
                schema: version,
                read: golden::read_json(&g.doc, g.kind),
                rows: g.rows,
            };
            write_json(&dir.join(format!("{}.json", g.name)), &fixture);
            inventory
                .entry(g.kind.as_str().to_owned())
                .or_default()
                .extend(golden::inventory(&g.doc, g.kind));
        }
        write_json(&dir.join("inventory.json"), &inventory);
        let exchange = record_exchange(version).await;
        write_json(&dir.join("exchange.json"), &exchange);
        eprintln!("schema {version}: fixtures written to {}", dir.display());
    }
}

fn write_json(path: &std::path::Path, value: &impl Serialize) {
    let mut text = serde_json::to_string_pretty(value).expect("fixture serializes");
    text.push('\n');
    std::fs::write(path, text).expect("write fixture");
}

/// The school, venue and teacher of the golden documents, at their fixed ids, and the
/// teacher's device enrolled under its fixed device id; returns its token.
async fn golden_world(store: &Store) -> String {
    let city = store.create_city(new_id(), "长沙市").await.unwrap().id;
    let county = store
        .create_county(new_id(), city, "岳麓区")
        .await
        .unwrap()
        .id;
    store
        .create_school(golden::SCHOOL.0, county, "博才小学")
        .await
        .unwrap();
    store
        .create_venue(golden::VENUE.0, county, "湖南省科技馆", "science_museum")
        .await
        .unwrap();
    let teacher = golden::writer(1, Role::Teacher);
    store
        .create_user(
            &NewUser {
                id: teacher.user.0,
                role: Role::Teacher,
                school_id: Some(golden::SCHOOL.0),
                venue_id: None,
                display_name: None,
                external_ref: None,
            },
            kepu_server::clock::now_ms(),
        )
        .await
        .unwrap();
    // The store's own enrollment step, with the device id the fixtures were written
    // under instead of a fresh one.
    let code = Accounts::new(store.clone())
        .issue_enrollment_code(teacher.user.0, 1)
        .await
        .unwrap();
    let token = DeviceToken::generate();
    let enrolled = store
        .redeem_enrollment_code(
            &EnrollmentCode::hash_presented(code.code.expose()).unwrap(),
            teacher.device.0,
            &token.hash(),
            Some("golden/1"),
            kepu_server::clock::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(enrolled, Some(teacher.user.0));
    token.into_string()
}

/// A teacher's device of schema `version` whose store holds the booking it requested
/// offline (the golden creation change) syncs it, then checks a pupil in and syncs again.
async fn record_exchange(version: i64) -> Exchange {
    let server = TestServer::start(Db::Sqlite).await;
    let token = golden_world(&server.db.store).await;
    let teacher = golden::writer(1, Role::Teacher);
    let doc = exchange_doc(version);
    let creation = golden::documents(version)
        .into_iter()
        .find(|g| g.name == "booking")
        .expect("a golden booking")
        .rows
        .remove(0);
    let mut device = Device::new(teacher.clone(), token, 1);
    device.store.docs.entry(doc).or_default().changes.insert(
        golden::row_hash(&creation),
        hex::decode(&creation.bytes).unwrap(),
    );
    device.tape = Some(Vec::new());
    device.want(doc);
    device.sync(server.addr).await;
    device.edit(
        doc,
        Edit::CheckIn {
            pupil: golden::pupil(1),
            scan_id: "scan-exchange-1".into(),
            method: ScanMethod::Manual,
            proof: None,
        },
    );
    device.pump(Duration::from_millis(500)).await;
    assert!(device.server_has_all(&doc), "the server took everything");
    assert!(
        !device
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { .. } | Event::ProtocolError { .. })),
        "{:?}",
        device.events
    );
    device.disconnect();
    let held = device.doc(&doc).expect("the device holds the booking");
    let exchange = Exchange {
        schema: version,
        story: format!(
            "A teacher's device of schema {version} connects with the booking it requested \
             offline (its store holds the creating change), syncs it, checks a pupil in by \
             hand and syncs again."
        ),
        doc: doc.to_string(),
        device: teacher,
        heads: held.get_heads().iter().map(|h| hex::encode(h.0)).collect(),
        read: golden::read_json(held, DocKind::Booking),
        frames: device
            .tape
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(sent, bytes)| Frame {
                sent,
                cbor: hex::encode(bytes),
            })
            .collect(),
    };
    server.finish().await;
    exchange
}

fn read_fixture<T: for<'de> Deserialize<'de>>(version: i64, name: &str) -> T {
    let path = fixture_dir(version).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record it, tests/fixtures/README.md)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("fixture parses")
}

/// Sends every frame the old device sent, in its order, each after the server has
/// answered the one before; returns every frame the server sent back.
async fn replay(server: &TestServer, token: &str, exchange: &Exchange) -> Vec<Message> {
    let mut socket = open_socket(server.addr, token).await.expect("upgrade");
    let mut answers = Vec::new();
    for frame in exchange.frames.iter().filter(|f| f.sent) {
        let bytes = hex::decode(&frame.cbor).expect("hex frame");
        socket.send(Ws::Binary(bytes.into())).await.expect("send");
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(400), socket.next()).await
        {
            if let Ws::Binary(b) = msg {
                answers.push(wire::decode(&b).expect("the server's frame decodes"));
            }
        }
    }
    answers
}

/// The heads of an encoded automerge sync message.
fn sync_heads(data: &[u8]) -> Vec<String> {
    automerge::sync::Message::decode(data)
        .expect("an automerge sync message")
        .heads
        .iter()
        .map(|h| hex::encode(h.0))
        .collect()
}

async fn an_old_device_replays_its_recorded_sync_with_todays_server(server: &TestServer) {
    let token = golden_world(&server.db.store).await;
    let admin = server.admin_token().await;
    for &version in RELEASED {
        let exchange: Exchange = read_fixture(version, "exchange.json");
        let doc: DocumentId = exchange.doc.parse().expect("document id");
        let answers = replay(server, &token, &exchange).await;
        // Accepted: no error, no refusal.
        for a in &answers {
            assert!(
                !matches!(a, Message::Error { .. }),
                "schema {version}: the server refused an old device: {a:?}"
            );
        }
        // Answered: the server's last word on the booking acknowledges every change.
        let last = answers
            .iter()
            .rev()
            .find_map(|a| match a {
                Message::Sync {
                    document_id, data, ..
                } if *document_id == doc => Some(sync_heads(data)),
                _ => None,
            })
            .expect("the server answered the booking");
        let mut want = exchange.heads.clone();
        want.sort();
        let mut got = last;
        got.sort();
        assert_eq!(
            got, want,
            "schema {version}: the answer holds the device's heads"
        );
        // Merged and stored: what the server keeps reads as the device read it.
        let loaded = server.db.store.load_document(doc).await.unwrap();
        let restored = kepu_sync_core::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
        assert!(restored.problems.is_empty(), "{:?}", restored.problems);
        assert_eq!(
            golden::read_json(&restored.doc, DocKind::Booking),
            exchange.read,
            "schema {version}: the stored booking reads as the old device's"
        );
        let booking = Booking::read(&restored.doc).expect("a booking");
        assert_eq!(booking.schema, version);
        // Projected: the records show the check-in.
        let path = format!("/api/bookings/{doc}/attendance");
        let mut arrived = serde_json::Value::Null;
        for _ in 0..100 {
            let r = server
                .http
                .get(server.url(&path))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.unwrap();
                arrived = v["booking"]["arrived"].clone();
                if arrived == 1 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            arrived, 1,
            "schema {version}: the records count the check-in"
        );
    }
}

async fn todays_server_serves_the_rows_an_old_server_stored(server: &TestServer) {
    let token = golden_world(&server.db.store).await;
    for &version in RELEASED {
        let fixture: DocFixture = read_fixture(version, "booking.json");
        // A fresh id per version: the rows as an old server stored them, written through
        // today's storage path, then read by a device of today.
        let doc = DocumentId::from_bytes(new_id().into_bytes());
        let changes: Vec<StoredChange> = fixture
            .rows
            .iter()
            .map(|r| StoredChange {
                hash: golden::row_hash(r),
                bytes: hex::decode(&r.bytes).unwrap(),
            })
            .collect();
        let heads = kepu_sync_core::stored::restore(None, changes.clone())
            .doc
            .get_heads();
        // No actor owners: rows stored before the claim table (gap 25) carry none.
        let task = StorageTask::Append {
            doc,
            kind: Some(DocKind::Booking),
            changes,
            heads,
            owners: Vec::new(),
        };
        server
            .db
            .store
            .run_document_tasks(&[&task], kepu_server::clock::now_ms())
            .await
            .unwrap();
        let mut today = Device::new(golden::writer(1, Role::Teacher), token.clone(), 7);
        today.want(doc);
        today.sync(server.addr).await;
        let held = today
            .doc(&doc)
            .expect("today's device fetched the old booking");
        assert_eq!(
            golden::read_json(held, DocKind::Booking),
            fixture.read,
            "schema {version}: today's device reads the old server's booking as recorded"
        );
        today.disconnect();
    }
}

/// A booking created by a device of a schema version newer than the server's (ADR 0171):
/// refused with `schema-too-new`, recorded by the server, nothing of it stored there, and
/// the change kept aside on the device with its bytes.
async fn a_newer_devices_booking_is_refused_and_kept_aside(server: &TestServer) {
    use automerge::ReadDoc as _;
    let token = golden_world(&server.db.store).await;
    let teacher = golden::writer(1, Role::Teacher);
    let doc = DocumentId::from_bytes(new_id().into_bytes());
    let mut newer = automerge::Automerge::new();
    newer.set_actor(automerge::ActorId::from(
        teacher.device.as_bytes().as_slice(),
    ));
    let hash = apply_unchecked_as_schema(
        &mut newer,
        &teacher,
        kepu_server::clock::now_ms(),
        &golden::create_booking(),
        SCHEMA_VERSION + 1,
    )
    .unwrap()
    .unwrap();
    let bytes = newer
        .get_change_by_hash(&hash)
        .unwrap()
        .raw_bytes()
        .to_vec();
    let mut device = Device::new(teacher.clone(), token, 3);
    device
        .store
        .docs
        .entry(doc)
        .or_default()
        .changes
        .insert(hash, bytes.clone());
    device.want(doc);
    device.sync(server.addr).await;
    assert!(
        device.events.iter().any(|e| matches!(
            e,
            Event::Refused { refusal, .. } if refusal.code == RefusalCode::SchemaTooNew
        )),
        "{:?}",
        device.events
    );
    assert!(
        device.store.refused.iter().any(|(d, c, code)| *d == doc
            && c.hash == hash
            && c.bytes == bytes
            && code == "schema-too-new"),
        "the device keeps the refused change aside, intact"
    );
    let mut recorded = Vec::new();
    for _ in 0..100 {
        recorded = server
            .db
            .store
            .refusals_of_device(teacher.device.0)
            .await
            .unwrap();
        if !recorded.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recorded
            .iter()
            .any(|r| r.code == RefusalCode::SchemaTooNew && r.doc_id == doc.to_string()),
        "{recorded:?}"
    );
    let stored = server.db.store.load_document(doc).await.unwrap();
    assert!(stored.changes.is_empty() && stored.snapshot.is_none());
}

on_both_databases!(multi_thread server:
    an_old_device_replays_its_recorded_sync_with_todays_server,
    todays_server_serves_the_rows_an_old_server_stored,
    a_newer_devices_booking_is_refused_and_kept_aside,
);
