//! The way back after a rotation from the fleet page (known gap 29, ADR 0172): an
//! administrator makes a reconnect code for the device, the device redeems it under its
//! own device id, gets a new token, and the work it did while locked out syncs — under
//! the actor ids the server already knows as this device's, so nothing is refused.

use kepu_server::accounts::Role;
use kepu_server::ids::new_id;
use kepu_sync_core::engine::Event;
use kepu_sync_core::ids::{SchoolId, SlotId, VenueId};
use uuid::Uuid;

use crate::fleet::{PASSWORD, form_token, log_in, page, post};
use crate::support::{TestServer, on_both_databases, place, user};
use crate::sync_client::open_socket;
use crate::world::{Enroller, check_in, create_booking, new_doc, pupils, scan_ids};

/// `POST /api/enroll` with this body: (status, JSON body).
async fn enroll(s: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = s
        .http
        .post(s.url("/api/enroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Confirms `action` for `device` on the fleet page as `cookie`; returns the answer.
async fn act(s: &TestServer, cookie: &str, device: Uuid, action: &str) -> reqwest::Response {
    let path = format!("/fleet/devices/{device}/{action}");
    let html = page(s, cookie, &format!("{path}?lang=en")).await;
    let token = form_token(&html);
    post(
        s,
        cookie,
        &path,
        &[("form_token", &token), ("lang", "en")],
        None,
    )
    .await
}

async fn a_rotated_device_comes_back_with_a_reconnect_code_and_its_unsynced_work(s: &TestServer) {
    let store = &s.db.store;
    let p = place(store).await;
    let admin = user(store, Role::BureauAdmin, None, None, None).await;
    s.accounts
        .set_web_login(admin, "bureau.admin", PASSWORD)
        .await
        .unwrap();
    let cookie = log_in(s, "bureau.admin").await;
    let enroller = Enroller::new(store, s.addr);
    let mut teacher = enroller
        .device(Role::Teacher, Some(p.school), None, 11)
        .await;
    let device = teacher.engine.config().writer.device;
    // A booking synced while the token worked: the server knows the device's actor id.
    let b = new_doc();
    let roster = pupils(0x77_0000, 3);
    teacher.edit(
        b,
        create_booking(
            VenueId(p.venue),
            SlotId(Uuid::from_u128(9)),
            SchoolId(p.school),
            roster.clone(),
        ),
    );
    teacher.sync(s.addr).await;
    assert!(teacher.server_has_all(&b));
    teacher.disconnect();
    // Rotated from the page: the token stops working.
    let rotated = act(s, &cookie, device.0, "rotate").await;
    assert_eq!(rotated.status(), 303);
    assert!(open_socket(s.addr, &teacher.token).await.is_err());
    // Locked out, the teacher goes on working on the phone.
    let mut made = Vec::new();
    for p in &roster[..2] {
        let (edit, id) = check_in(*p);
        teacher.edit(b, edit);
        made.push(id);
    }
    // The administrator makes a reconnect code; the page shows it once.
    let answer = act(s, &cookie, device.0, "reconnect").await;
    assert_eq!(answer.status(), 200);
    let html = answer.text().await.unwrap();
    assert!(html.contains("Reconnect code made."), "{html}");
    let marker = "<code id=\"reconnect-code\">";
    let start = html.find(marker).expect("the code") + marker.len();
    let code = html[start..].split('<').next().unwrap().to_owned();
    // The code enrolls no new device, and no other device.
    let (status, body) = enroll(s, serde_json::json!({ "code": code })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_enrollment_code")),
        "{body}"
    );
    let other = Uuid::from_bytes(new_id().into_bytes());
    let (status, _) = enroll(s, serde_json::json!({ "code": code, "device_id": other })).await;
    assert_eq!(status, 400);
    // Redeemed by its device: the same device id, a new token.
    let (status, body) = enroll(
        s,
        serde_json::json!({ "code": code, "device_id": device.to_string(), "app_version": "1.3.0" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], device.to_string());
    teacher.token = body["token"].as_str().unwrap().to_owned();
    // Used once only.
    let (status, _) = enroll(
        s,
        serde_json::json!({ "code": code, "device_id": device.to_string() }),
    )
    .await;
    assert_eq!(status, 400);
    // The work done while locked out syncs, and nothing is refused.
    teacher.sync(s.addr).await;
    assert!(teacher.server_has_all(&b));
    assert!(
        !teacher
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { .. } | Event::ProtocolError { .. })),
        "{:?}",
        teacher.events
    );
    let stored = store.load_document(b).await.unwrap();
    let on_server = kepu_sync_core::stored::restore(stored.snapshot.as_deref(), stored.changes);
    let scans = scan_ids(&on_server.doc);
    for id in &made {
        assert!(
            scans.contains(id),
            "the locked-out check-in {id} reached the server"
        );
    }
    let record = store.device(device.0).await.unwrap().unwrap();
    assert_eq!(record.revoked_at, None);
    assert_eq!(record.app_version.as_deref(), Some("1.3.0"));
}

async fn a_revoked_device_gets_no_reconnect_code(s: &TestServer) {
    let store = &s.db.store;
    let p = place(store).await;
    let admin = user(store, Role::BureauAdmin, None, None, None).await;
    s.accounts
        .set_web_login(admin, "bureau.admin", PASSWORD)
        .await
        .unwrap();
    let cookie = log_in(s, "bureau.admin").await;
    let teacher = user(store, Role::Teacher, Some(p.school), None, None).await;
    let (id, _) = s.enroll(teacher).await;
    let device: Uuid = id.parse().unwrap();
    let code = s
        .accounts
        .issue_device_code(kepu_sync_core::ids::DeviceId(device), 7)
        .await
        .unwrap();
    assert_eq!(act(s, &cookie, device, "revoke").await.status(), 303);
    // Neither a new code, nor one issued before the revocation, brings it back.
    let html = page(
        s,
        &cookie,
        &format!("/fleet/devices/{device}/reconnect?lang=en"),
    )
    .await;
    assert!(html.contains("This device is already revoked."));
    let (status, _) = enroll(
        s,
        serde_json::json!({ "code": code.code.expose(), "device_id": id }),
    )
    .await;
    assert_eq!(status, 400);
}

on_both_databases!(multi_thread server:
    a_rotated_device_comes_back_with_a_reconnect_code_and_its_unsynced_work,
    a_revoked_device_gets_no_reconnect_code,
);
