//! Websocket sync end to end, real sockets, against SQLite and PostgreSQL.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::Event;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::rules::attendance::attendance;
use kepu_sync_core::schema::booking::{Booking, ScanMethod, Status};
use kepu_sync_core::wire::{self, Message};
use kepu_sync_core::writer::Writer;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

use crate::support::{TestServer, place, user};
use crate::sync_client::{Device, open_socket};

crate::support::on_both_databases!(
    multi_thread server:
    offline_scans_from_two_devices_count_once_in_the_records,
    the_server_decides_bookings_first_come_first_served,
    garbage_gets_a_clear_error_and_nothing_is_stored,
    unknown_and_forbidden_documents_look_the_same,
    wrong_and_revoked_tokens_are_refused_and_a_revoked_device_is_cut_off,
    a_refused_change_is_recorded_for_admins,
    a_pupil_checks_in_with_a_gate_code_certified_by_the_server,
    the_directory_publishes_what_venue_staff_edit,
    every_school_gets_this_years_log_from_the_server,
    a_document_asked_for_before_it_exists_arrives_when_asked_again,
);

struct Cast {
    county: Uuid,
    venue: VenueId,
    school: SchoolId,
    slot: SlotId,
    venue_doc: DocumentId,
}

async fn device(
    server: &TestServer,
    role: Role,
    school: Option<Uuid>,
    venue: Option<Uuid>,
    seed: u8,
) -> Device {
    let u = user(&server.db.store, role, school, venue, None).await;
    let (device_id, token) = server.enroll(u).await;
    let writer = Writer {
        device: device_id.parse::<DeviceId>().unwrap(),
        user: UserId(u),
        role,
        school: school.map(SchoolId),
        venue: venue.map(VenueId),
        pupil: (role == Role::Pupil).then_some(PupilId(u)),
    };
    Device::new(writer, token, seed)
}

/// A venue whose staff publish a slot of `capacity` starting in an hour.
async fn venue_with_slot(server: &TestServer, capacity: u32) -> (Cast, Device) {
    let p = place(&server.db.store).await;
    let mut staff = device(server, Role::VenueStaff, None, Some(p.venue), 200).await;
    let venue = VenueId(p.venue);
    let venue_doc = DocumentId::from_bytes(*venue.as_bytes());
    let slot = SlotId(Uuid::from_u128(7));
    let start = kepu_server::clock::now_ms() + 3_600_000;
    // The server creates the venue document on its own within seconds.
    crate::world::await_server_doc(&mut staff, server.addr, venue_doc).await;
    staff.edit(
        venue_doc,
        Edit::PutSlot {
            slot,
            start,
            end: start + 7_200_000,
            capacity,
            label: "课后".into(),
        },
    );
    staff.sync(server.addr).await;
    (
        Cast {
            county: p.county,
            venue,
            school: SchoolId(p.school),
            slot,
            venue_doc,
        },
        staff,
    )
}

fn new_doc() -> DocumentId {
    DocumentId::from_bytes(rand::random())
}

fn scan_id() -> String {
    kepu_sync_core::ids::uuid_v7(kepu_server::clock::now_ms(), rand::random()).to_string()
}

async fn get_json(server: &TestServer, path: &str, token: &str) -> Value {
    let r = server
        .http
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Waits until the records show what `check` wants (projections follow merges closely).
async fn eventually(
    server: &TestServer,
    path: &str,
    token: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..100 {
        let v = get_json(server, path, token).await;
        if check(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "records never reached the expected state: {}",
        get_json(server, path, token).await
    );
}

async fn offline_scans_from_two_devices_count_once_in_the_records(server: &TestServer) {
    let (c, mut gate) = venue_with_slot(server, 60).await;
    let mut teacher = device(server, Role::Teacher, Some(c.school.0), None, 1).await;
    let pupils: Vec<PupilId> = (0..5).map(|i| PupilId(Uuid::from_u128(500 + i))).collect();
    let b = new_doc();
    teacher.edit(
        b,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 30,
            roster: pupils.clone(),
        },
    );
    teacher.sync(server.addr).await;
    gate.want(b);
    gate.sync(server.addr).await;
    assert!(gate.doc(&b).is_some(), "the venue's gate reads the booking");
    teacher.disconnect();
    gate.disconnect();
    for p in &pupils[..3] {
        teacher.edit(
            b,
            Edit::CheckIn {
                pupil: *p,
                scan_id: scan_id(),
                method: ScanMethod::Manual,
                proof: None,
            },
        );
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The gate scans the pupils' passes, signed by the server.
    let signer = kepu_sync_core::proof::ServerSigner::from_seed(*server.db.store.server_seed());
    let u = user(
        &server.db.store,
        Role::Teacher,
        Some(c.school.0),
        None,
        None,
    )
    .await;
    let code = server.accounts.issue_enrollment_code(u, 1).await.unwrap();
    let r: Value = server
        .http
        .post(server.url("/api/enroll"))
        .json(&serde_json::json!({"code": code.code.expose()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["server_public_key"].as_str(),
        Some(signer.public().to_base64().as_str()),
        "devices learn the key that signs passes"
    );
    for p in &pupils[..4] {
        let pass = signer.issue_pass(*p, c.school, 1, kepu_server::clock::now_ms() + 86_400_000);
        gate.edit(
            b,
            Edit::CheckIn {
                pupil: *p,
                scan_id: scan_id(),
                method: ScanMethod::PassScan,
                proof: Some(pass),
            },
        );
    }
    teacher.sync(server.addr).await;
    gate.sync(server.addr).await;
    teacher.sync(server.addr).await;
    let refused: Vec<&Event> = gate
        .events
        .iter()
        .filter(|e| matches!(e, Event::Refused { .. } | Event::ProtocolError { .. }))
        .collect();
    if !refused.is_empty() {
        let d = server
            .db
            .store
            .refusals_of_device(gate.engine.config().writer.device.0)
            .await
            .unwrap();
        panic!("the gate's scans were refused: {refused:?} {d:?}");
    }
    let t = Booking::read(teacher.doc(&b).unwrap()).unwrap();
    let g = Booking::read(gate.doc(&b).unwrap()).unwrap();
    assert_eq!(t, g, "both devices hold the same merged booking");
    assert_eq!(attendance(&t, None).arrived, 4);
    let admin = server.admin_token().await;
    let path = format!("/api/bookings/{b}/attendance");
    let v = eventually(server, &path, &admin, |v| v["booking"]["arrived"] == 4).await;
    let scans = v["scans"].as_array().unwrap();
    assert_eq!(scans.len(), 7, "every scan is kept");
    assert_eq!(
        scans.iter().filter(|s| s["counted"] == true).count(),
        4,
        "each pupil counted once"
    );
    assert_eq!(
        v["booking"]["status"], "confirmed",
        "the server confirmed the booking"
    );
}

async fn the_server_decides_bookings_first_come_first_served(server: &TestServer) {
    let (c, _) = venue_with_slot(server, 40).await;
    let mut t1 = device(server, Role::Teacher, Some(c.school.0), None, 1).await;
    let mut t2 = device(server, Role::Teacher, Some(c.school.0), None, 2).await;
    let (b1, b2) = (new_doc(), new_doc());
    t1.edit(
        b1,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 30,
            roster: vec![],
        },
    );
    t2.edit(
        b2,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 30,
            roster: vec![],
        },
    );
    assert_eq!(
        Booking::read(t1.doc(&b1).unwrap()).unwrap().status,
        Status::Requested
    );
    t2.sync(server.addr).await;
    t1.sync(server.addr).await;
    // Decisions are written back as the server's change; sync again to receive them.
    for _ in 0..20 {
        t1.pump(Duration::from_millis(100)).await;
        t2.pump(Duration::from_millis(100)).await;
        let s1 = Booking::read(t1.doc(&b1).unwrap()).unwrap().status;
        let s2 = Booking::read(t2.doc(&b2).unwrap()).unwrap().status;
        if s1 != Status::Requested && s2 != Status::Requested {
            break;
        }
    }
    assert_eq!(
        Booking::read(t2.doc(&b2).unwrap()).unwrap().status,
        Status::Confirmed,
        "first to reach the server"
    );
    assert_eq!(
        Booking::read(t1.doc(&b1).unwrap()).unwrap().status,
        Status::Waitlisted
    );
    let _ = c.venue_doc;
}

async fn expect_error(
    socket: &mut (impl StreamExt<Item = Result<Ws, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), socket.next()).await {
            Ok(Some(Ok(Ws::Binary(b)))) => {
                if let Ok(Message::Error {
                    refusal, message, ..
                }) = wire::decode(&b)
                {
                    return Some(refusal.map_or(message, |r| r.code.to_string()));
                }
            }
            Ok(Some(Ok(Ws::Close(_)))) | Ok(None) | Err(_) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn garbage_gets_a_clear_error_and_nothing_is_stored(server: &TestServer) {
    let p = place(&server.db.store).await;
    let t = device(server, Role::Teacher, Some(p.school), None, 1).await;
    let mut s = open_socket(server.addr, &t.token).await.unwrap();
    let join = Message::Join {
        sender_id: "raw".into(),
        peer_metadata: None,
        supported_protocol_versions: vec!["1".into()],
    };
    s.send(Ws::Binary(join.encode().into())).await.unwrap();
    assert!(
        matches!(s.next().await, Some(Ok(Ws::Binary(b))) if matches!(wire::decode(&b), Ok(Message::Peer { .. })))
    );
    let before = server.db.store.document_ids().await.unwrap().len();
    // Not CBOR at all.
    s.send(Ws::Binary(vec![0xff, 0x00, 0x13].into()))
        .await
        .unwrap();
    assert_eq!(
        expect_error(&mut s).await.as_deref(),
        Some("malformed-message")
    );
    // CBOR, but automerge bytes that are garbage.
    let doc = new_doc();
    let bad = Message::Sync {
        sender_id: "raw".into(),
        target_id: "x".into(),
        document_id: doc,
        data: vec![0x42, 1, 2, 3, 4],
    };
    s.send(Ws::Binary(bad.encode().into())).await.unwrap();
    assert_eq!(
        expect_error(&mut s).await.as_deref(),
        Some("malformed-sync")
    );
    // Text frames are not the protocol.
    s.send(Ws::Text("hello".into())).await.unwrap();
    assert_eq!(
        expect_error(&mut s).await.as_deref(),
        Some("malformed-message")
    );
    // The connection carries on: a request for an unknown document is answered.
    let req = Message::Request {
        sender_id: "raw".into(),
        target_id: "x".into(),
        document_id: doc,
        data: empty_request(),
    };
    s.send(Ws::Binary(req.encode().into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        wire::decode(&answer.into_data()),
        Ok(Message::DocUnavailable { .. })
    ));
    // An oversize frame closes the connection.
    let big = vec![0u8; 9 * 1024 * 1024];
    let _ = s.send(Ws::Binary(big.into())).await;
    assert!(
        expect_error(&mut s).await.is_none(),
        "the connection is closed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored: Vec<DocumentId> = server
        .db
        .store
        .document_ids()
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert!(!stored.contains(&doc), "nothing was stored for the garbage");
    let _ = before;
}

async fn unknown_and_forbidden_documents_look_the_same(server: &TestServer) {
    let (c, _) = venue_with_slot(server, 60).await;
    let mut teacher = device(server, Role::Teacher, Some(c.school.0), None, 1).await;
    let b = new_doc();
    teacher.edit(
        b,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 5,
            roster: vec![],
        },
    );
    teacher.sync(server.addr).await;
    let other_school = server
        .db
        .store
        .create_school(kepu_server::ids::new_id(), c.county, "另一所小学")
        .await
        .unwrap()
        .id;
    let mut stranger = device(server, Role::Teacher, Some(other_school), None, 3).await;
    stranger.want(b);
    stranger.want(new_doc());
    stranger.sync(server.addr).await;
    let unavailable = stranger
        .events
        .iter()
        .filter(|e| matches!(e, Event::Unavailable { .. }))
        .count();
    assert_eq!(
        unavailable, 2,
        "a forbidden booking and a missing one get the same answer"
    );
    assert!(stranger.doc(&b).is_none_or(|d| d.get_heads().is_empty()));
}

async fn wrong_and_revoked_tokens_are_refused_and_a_revoked_device_is_cut_off(server: &TestServer) {
    let p = place(&server.db.store).await;
    // A phone must tell "who are you?" (keep the data, retry) from "you are revoked"
    // (wipe): the upgrade says which, in a header and in the JSON code.
    assert_eq!(
        upgrade_refusal(server.addr, Some("not-a-token")).await,
        (401, "unauthenticated".into(), "invalid_token".into()),
        "a wrong token is refused at the upgrade"
    );
    assert_eq!(
        upgrade_refusal(server.addr, None).await,
        (401, "unauthenticated".into(), "missing_token".into()),
    );
    let mut t = device(server, Role::Teacher, Some(p.school), None, 1).await;
    // Opened as a plain page, or with the wrong method, `/sync` answers what it wants.
    for (method, status, code) in [
        (reqwest::Method::GET, 426, "not_a_websocket_upgrade"),
        (reqwest::Method::POST, 405, "method_not_allowed"),
    ] {
        let plain = server
            .http
            .request(method, server.url("/sync"))
            .bearer_auth(&t.token)
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), status);
        let body: serde_json::Value = plain.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    t.connect(server.addr).await;
    t.pump(Duration::from_millis(200)).await;
    let device_id = t.engine.config().writer.device;
    let admin = server.admin_token().await;
    let r = server
        .http
        .post(server.url(&format!("/api/devices/{device_id}/revoke")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.pump(Duration::from_secs(2)).await;
    assert!(
        t.events.iter().any(|e| matches!(
            e,
            Event::ServerRefused {
                code: kepu_sync_core::refusal::RefusalCode::DeviceRevoked,
                ..
            }
        )),
        "{:?}",
        t.events
    );
    assert_eq!(
        upgrade_refusal(server.addr, Some(&t.token)).await,
        (401, "device-revoked".into(), "device_revoked".into()),
        "a revoked token is refused afterwards, saying so"
    );
}

/// The status, `X-Kepu-Error` header and JSON error code of a refused `/sync` upgrade.
async fn upgrade_refusal(addr: std::net::SocketAddr, token: Option<&str>) -> (u16, String, String) {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let mut request = format!("ws://{addr}/sync").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let header = response
                .headers()
                .get("x-kepu-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or_default();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (response.status().as_u16(), header, code)
        }
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

async fn a_refused_change_is_recorded_for_admins(server: &TestServer) {
    let (c, _) = venue_with_slot(server, 60).await;
    let mut teacher = device(server, Role::Teacher, Some(c.school.0), None, 1).await;
    let b = new_doc();
    teacher.edit(
        b,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 5,
            roster: vec![],
        },
    );
    teacher.sync(server.addr).await;
    let now = kepu_server::clock::now_ms();
    let fx = teacher.engine.edit_unchecked(
        now,
        b,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: Some(0),
        },
    );
    assert!(!fx.tasks.is_empty());
    for (task, t) in fx.tasks {
        let result = teacher.store.run(&t);
        teacher.feed(kepu_sync_core::engine::Input::IoDone { task, result });
    }
    teacher.want(b);
    teacher.sync(server.addr).await;
    let refusal = teacher
        .events
        .iter()
        .find_map(|e| match e {
            Event::Refused { refusal, .. } => Some(refusal.clone()),
            _ => None,
        })
        .expect("the device is told its change was refused");
    assert_eq!(refusal.code, RefusalCode::StatusIsServerOnly);
    // The device learns where, not only why: the field it may not write.
    assert!(
        ["status", "decided_at", "wait_position"].contains(&refusal.path.as_str()),
        "{refusal:?}"
    );
    let admin = server.admin_token().await;
    let devices = get_json(server, "/api/admin/devices", &admin).await;
    let mine = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"].as_str() == Some(&teacher.engine.config().writer.device.to_string()))
        .cloned()
        .unwrap();
    assert!(mine["pending_refusals"].as_i64().unwrap() >= 1, "{mine}");
}

fn empty_request() -> Vec<u8> {
    use automerge::sync::SyncDoc;
    automerge::Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("a first message")
        .encode()
}

async fn a_pupil_checks_in_with_a_gate_code_certified_by_the_server(server: &TestServer) {
    use kepu_sync_core::proof::{
        GateSigner, ServerPublicKey, SignedGateCert, gate_public_key, verify_gate_code, verify_pass,
    };
    let (c, mut gate) = venue_with_slot(server, 60).await;
    let mut teacher = device(server, Role::Teacher, Some(c.school.0), None, 1).await;
    let mut pupil = device(server, Role::Pupil, Some(c.school.0), None, 2).await;
    let me = pupil.engine.config().writer.pupil.unwrap();
    let b = new_doc();
    teacher.edit(
        b,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 30,
            roster: vec![me],
        },
    );
    teacher.sync(server.addr).await;
    // The gate gets today's key certified.
    let seed = [7u8; 32];
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        gate_public_key(&seed),
    );
    let r = server
        .http
        .post(server.url("/api/gates/day-cert"))
        .bearer_auth(&gate.token)
        .json(&serde_json::json!({ "gate_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let cert = SignedGateCert::decode(body["cert"].as_str().unwrap()).unwrap();
    let server_key =
        ServerPublicKey::from_base64(body["server_public_key"].as_str().unwrap()).unwrap();
    let signer = GateSigner::new(seed, cert).unwrap();
    // The same key for the coming UTC day, which starts at 08:00 Beijing time: a gate
    // certified before the venue opens goes on showing genuine codes after 08:00.
    let day = body["day"].as_u64().unwrap();
    assert_eq!(body["next"]["day"].as_u64(), Some(day + 1));
    let next = SignedGateCert::decode(body["next"]["cert"].as_str().unwrap()).unwrap();
    next.verify(&server_key)
        .expect("the server signed the coming day");
    assert_eq!(next.cert().venue, c.venue);
    assert_eq!(
        body["next"]["expires_ms"].as_i64(),
        Some(next.cert().expires_ms)
    );
    let tomorrow = i64::try_from(day + 1).unwrap() * 86_400_000 + 60_000;
    assert!(next.cert().expires_ms > tomorrow + 86_300_000);
    let next_gate = GateSigner::new(seed, next).unwrap();
    assert!(
        !signer.covers(tomorrow),
        "today's certificate ends with its day"
    );
    assert!(next_gate.covers(tomorrow));
    verify_gate_code(
        &next_gate.code_at(tomorrow),
        &server_key,
        tomorrow,
        Some(c.venue),
    )
    .expect("tomorrow's code verifies tomorrow");
    // A teacher may not certify gates.
    let r = server
        .http
        .post(server.url("/api/gates/day-cert"))
        .bearer_auth(&teacher.token)
        .json(&serde_json::json!({ "gate_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Offline, the pupil's phone scans the code and verifies it against the server's key.
    pupil.want(b);
    pupil.sync(server.addr).await;
    pupil.disconnect();
    let now = kepu_server::clock::now_ms();
    let proof = verify_gate_code(&signer.code_at(now), &server_key, now, Some(c.venue))
        .expect("a valid gate code");
    pupil.edit(
        b,
        Edit::CheckIn {
            pupil: me,
            scan_id: scan_id(),
            method: ScanMethod::GateCode,
            proof: Some(proof.encode()),
        },
    );
    pupil.sync(server.addr).await;
    let admin = server.admin_token().await;
    let path = format!("/api/bookings/{b}/attendance");
    let v = eventually(server, &path, &admin, |v| v["booking"]["arrived"] == 1).await;
    assert_eq!(v["scans"][0]["method"], "gate_code");
    // The pupil's own pass, verifiable offline; another pupil's pass is not theirs to see.
    let r = server
        .http
        .get(server.url(&format!("/api/pupils/{me}/pass")))
        .bearer_auth(&pupil.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pass: Value = r.json().await.unwrap();
    let p = verify_pass(pass["pass"].as_str().unwrap(), &server_key, now, &|_, _| {
        false
    })
    .unwrap();
    assert_eq!(p.pupil, me);
    let other = device(server, Role::Pupil, Some(c.school.0), None, 3).await;
    let r = server
        .http
        .get(server.url(&format!("/api/pupils/{me}/pass")))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = &mut gate;
}

async fn the_directory_publishes_what_venue_staff_edit(server: &TestServer) {
    let (c, mut staff) = venue_with_slot(server, 45).await;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("address".to_owned(), "长沙市岳麓区示例路1号".to_owned());
    fields.insert("phone".to_owned(), "0731-00000000".to_owned());
    staff.edit(
        c.venue_doc,
        Edit::SetProfile {
            fields,
            location: Some((28.2, 112.9)),
            after_school: Some(true),
        },
    );
    staff.sync(server.addr).await;
    let mut found = Value::Null;
    for _ in 0..100 {
        let r = server
            .http
            .get(server.url("/api/directory.geojson"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "open to anyone");
        let v: Value = r.json().await.unwrap();
        if let Some(f) = v["features"].as_array().unwrap().iter().find(|f| {
            f["properties"]["venue_id"] == c.venue.to_string()
                && f["properties"]["phone"] == "0731-00000000"
        }) {
            assert!(v["last_updated_ms"].as_i64().unwrap() > 0);
            found = f.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        found["geometry"]["coordinates"],
        serde_json::json!([112.9, 28.2]),
        "{found}"
    );
    assert_eq!(found["properties"]["bookable_slots"][0]["capacity"], 45);
    let v: Value = server
        .http
        .get(server.url("/api/directory.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["venues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["address"] == "长沙市岳麓区示例路1号")
    );
}

/// A teacher's phone asks for a booking a colleague has not synced yet (or a log the
/// server has not created yet): the server says it has none. Once it exists, the next ask
/// on the same connection must fetch it.
async fn a_document_asked_for_before_it_exists_arrives_when_asked_again(server: &TestServer) {
    let (c, _) = venue_with_slot(server, 60).await;
    let mut asks = device(server, Role::Teacher, Some(c.school.0), None, 61).await;
    let mut makes = device(server, Role::Teacher, Some(c.school.0), None, 62).await;
    let b = new_doc();
    asks.want(b);
    asks.sync(server.addr).await;
    assert!(
        asks.events
            .iter()
            .any(|e| matches!(e, Event::Unavailable { doc } if *doc == b)),
        "the server has no such document yet: {:?}",
        asks.events
    );
    makes.edit(
        b,
        Edit::CreateBooking {
            venue: c.venue,
            slot: c.slot,
            school: c.school,
            party_size: 3,
            roster: vec![],
        },
    );
    makes.sync(server.addr).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        asks.want(b);
        asks.sync(server.addr).await;
        if asks.doc(&b).and_then(Booking::read).is_some() {
            break;
        }
    }
    let booking = asks
        .doc(&b)
        .and_then(Booking::read)
        .expect("asked again on the same connection, the phone gets the booking");
    assert_eq!(booking.party_size, 3);
}

async fn every_school_gets_this_years_log_from_the_server(server: &TestServer) {
    use kepu_sync_core::calendar::china_year;
    use kepu_sync_core::schema::school_log::SchoolLog;
    // A school created while the server runs gets its log within seconds.
    let p = place(&server.db.store).await;
    let school = SchoolId(p.school);
    let year = china_year(kepu_server::clock::now_ms());
    let log = DocumentId::school_log(school, year);
    let mut teacher = device(server, Role::Teacher, Some(p.school), None, 41).await;
    let mut found = None;
    // The server's loop runs every 2 s; a loaded machine may take several rounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        teacher.want(log);
        teacher.sync(server.addr).await;
        found = teacher.doc(&log).and_then(SchoolLog::read);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = found.expect("the server creates the school's log for this year");
    assert_eq!((found.school, found.year), (school, year));
    // The teacher writes into it; a teacher of another school cannot read it.
    teacher.edit(
        log,
        Edit::LogSession {
            id: scan_id(),
            at: kepu_server::clock::now_ms(),
            topic: "磁铁的秘密".into(),
            minutes: 40,
        },
    );
    teacher.sync(server.addr).await;
    assert!(teacher.server_has_all(&log));
    let other = server
        .db
        .store
        .create_school(kepu_server::ids::new_id(), p.county, "另一所小学")
        .await
        .unwrap()
        .id;
    let mut stranger = device(server, Role::Teacher, Some(other), None, 42).await;
    stranger.want(log);
    stranger.sync(server.addr).await;
    assert!(
        stranger.doc(&log).is_none_or(|d| d.get_heads().is_empty()),
        "another school's log stays unavailable"
    );
}
