//! Shared set-up for the scenario tests that do not use `TestServer` directly: enrolling
//! devices against any running server (in-process or a child process), a venue with a
//! slot, bookings and check-ins.

use std::net::SocketAddr;
use std::time::Duration;

use kepu_server::Store;
use kepu_server::accounts::{Accounts, Role};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::writer::Writer;
use uuid::Uuid;

use crate::support::user;
use crate::sync_client::Device;

/// Enrolls devices over HTTP against the server at `addr`, with users and codes made
/// through the store on the same database.
pub struct Enroller {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub store: Store,
}

impl Enroller {
    pub fn new(store: &Store, addr: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::new(),
            addr,
            store: store.clone(),
        }
    }

    /// A new user of `role` with one enrolled device; returns the device and its user id.
    pub async fn device(
        &self,
        role: Role,
        school: Option<Uuid>,
        venue: Option<Uuid>,
        seed: u8,
    ) -> Device {
        let u = user(&self.store, role, school, venue, None).await;
        let (device_id, token) = self.enroll(u).await;
        let writer = Writer {
            device: device_id.parse::<DeviceId>().expect("device id"),
            user: UserId(u),
            role,
            school: school.map(SchoolId),
            venue: venue.map(VenueId),
            pupil: (role == Role::Pupil).then_some(PupilId(u)),
        };
        Device::new(writer, token, seed)
    }

    /// Enrolls a device for `user` with a fresh one-time code; returns (device id, token).
    pub async fn enroll(&self, user: Uuid) -> (String, String) {
        let code = Accounts::new(self.store.clone())
            .issue_enrollment_code(user, 7)
            .await
            .expect("enrollment code");
        let response = self
            .http
            .post(format!("http://{}/api/enroll", self.addr))
            .json(&serde_json::json!({ "code": code.code.expose(), "app_version": "test/1" }))
            .send()
            .await
            .expect("enroll request");
        assert_eq!(response.status(), 200, "enrollment succeeds");
        let body: serde_json::Value = response.json().await.expect("enroll body");
        (
            body["device_id"].as_str().expect("device_id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    /// A bureau administrator's token (reads every record).
    pub async fn admin_token(&self) -> String {
        let admin = user(&self.store, Role::BureauAdmin, None, None, None).await;
        self.enroll(admin).await.1
    }

    /// `GET path` with a bearer token, as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.expect("JSON body")
    }
}

/// Waits until `device` holds `doc`, which the server creates itself (a venue's document,
/// a school's log): devices may not create documents at the ids the server derives. The
/// server creates them at start and then every 2 seconds.
pub async fn await_server_doc(device: &mut Device, addr: SocketAddr, doc: DocumentId) {
    for _ in 0..100 {
        device.want(doc);
        device.sync(addr).await;
        if device.doc(&doc).is_some_and(|d| !d.get_heads().is_empty()) {
            return;
        }
        device.disconnect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never created {doc}");
}

/// Gets the venue document (the server creates it within seconds of the venue record)
/// onto `staff`'s device and publishes a slot.
pub async fn publish_slot(
    staff: &mut Device,
    addr: SocketAddr,
    venue: VenueId,
    capacity: u32,
) -> SlotId {
    let venue_doc = DocumentId::from_bytes(*venue.as_bytes());
    await_server_doc(staff, addr, venue_doc).await;
    let slot = SlotId(kepu_sync_core::ids::uuid_v7(
        kepu_server::clock::now_ms(),
        rand::random(),
    ));
    let start = later_today(kepu_server::clock::now_ms());
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
    staff.pump(Duration::from_millis(150)).await;
    slot
}

/// An hour from `now`, or, late in the evening, a minute before the venue's midnight: a
/// slot of today at the venue, which its live dashboard shows (not tomorrow's, which it
/// does not; a test run at 23:30 in Changsha failed on that).
pub fn later_today(now: i64) -> i64 {
    use kepu_sync_core::calendar::{china_day, china_day_start};
    (now + 3_600_000).min(china_day_start(china_day(now) + 1) - 60_000)
}

pub fn new_doc() -> DocumentId {
    DocumentId::from_bytes(rand::random())
}

pub fn scan_id() -> String {
    kepu_sync_core::ids::uuid_v7(kepu_server::clock::now_ms(), rand::random()).to_string()
}

/// A booking request with `roster`.
pub fn create_booking(
    venue: VenueId,
    slot: SlotId,
    school: SchoolId,
    roster: Vec<PupilId>,
) -> Edit {
    Edit::CreateBooking {
        venue,
        slot,
        school,
        party_size: u32::try_from(roster.len()).unwrap_or(u32::MAX).max(1),
        roster,
    }
}

/// A manual check-in of `pupil` with a fresh scan id; returns the edit and the scan id.
pub fn check_in(pupil: PupilId) -> (Edit, String) {
    let id = scan_id();
    (
        Edit::CheckIn {
            pupil,
            scan_id: id.clone(),
            method: ScanMethod::Manual,
            proof: None,
        },
        id,
    )
}

/// The scan ids of every check-in in a merged booking.
pub fn scan_ids(doc: &automerge::Automerge) -> std::collections::BTreeSet<String> {
    Booking::read(doc)
        .map(|b| b.check_ins.into_iter().map(|s| s.scan_id).collect())
        .unwrap_or_default()
}

/// Pupils `0..n` of a test, as stable ids.
pub fn pupils(base: u128, n: usize) -> Vec<PupilId> {
    (0..n as u128)
        .map(|i| PupilId(Uuid::from_u128(base + i)))
        .collect()
}
