//! Edge boxes at venues (ADR 0150): a real upstream server and a real edge server (both
//! `kepu_server::run` on their own listeners and databases), the edge reaching the
//! upstream through a TCP relay the test can cut, and devices on real websockets. The
//! upstream runs on SQLite and on PostgreSQL; the edge box keeps its own SQLite file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kepu_server::accounts::{Accounts, Role};
use kepu_server::clock::now_ms;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::Event;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::schema::booking::{Booking, Status};
use kepu_sync_core::writer::Writer;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::support::{Db, TestDb, place, user};
use crate::sync_client::Device;
use crate::world::{Enroller, check_in, create_booking, new_doc, publish_slot, pupils, scan_ids};

crate::support::on_both_databases!(multi_thread kind:
    a_day_cut_off_at_the_edge_converges_when_the_upstream_returns,
    a_device_at_the_edge_cannot_write_under_another_devices_actor_id,
    a_hostile_edge_relaying_an_actor_id_off_its_roster_is_refused_upstream,
    a_revoked_edge_stops_serving_and_keeps_its_unsynced_work,
    a_cut_off_edge_checks_gate_codes_and_leaves_bookings_to_the_upstream,
);

/// `kepu_server::run` on its own listener.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kepu_server::Result<()>>>,
}

impl Server {
    async fn start(config: kepu_server::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kepu_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

/// A TCP relay to the upstream that the test can cut (every connection drops, new ones
/// are refused) and restore: the venue's internet link.
struct Link {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Link {
    async fn to(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = watch::Sender::new(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The edge box of a venue, enrolled with a fresh code through `link`.
struct EdgeBox {
    server: Server,
    dir: tempfile::TempDir,
}

impl EdgeBox {
    /// An edge created with the admin command (`admin create-edge`).
    async fn start(db: &TestDb, venue: uuid::Uuid, link: &Link) -> Self {
        let mut out = Vec::new();
        kepu_server::admin_cli::execute_with(
            &Accounts::new(db.store.clone()),
            kepu_server::config::AdminCommand::CreateEdge {
                venue: venue.to_string(),
                days: 7,
            },
            &mut out,
        )
        .await
        .expect("admin create-edge");
        let out = String::from_utf8(out).unwrap();
        let code = out
            .lines()
            .find_map(|l| l.strip_prefix("enrollment code "))
            .expect("the command prints the code");
        Self::start_with_code(code, link).await
    }

    async fn start_with_code(code: &str, link: &Link) -> Self {
        let dir = tempfile::tempdir().expect("edge data dir");
        let server = Self::run(dir.path(), &link.url(), Some(code.to_owned())).await;
        Self { server, dir }
    }

    async fn run(dir: &std::path::Path, upstream: &str, code: Option<String>) -> Server {
        let mut config = kepu_server::Config::with_data_dir(dir.to_path_buf());
        config.edge = true;
        config.upstream = Some(upstream.to_owned());
        config.edge_code = code;
        config.engine_shards = Some(3);
        Server::start(config).await
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    async fn status(&self, token: &str) -> Value {
        get(self.addr(), "/api/edge/status", token).await.1
    }

    /// Waits until the edge's status satisfies `check`.
    async fn until(&self, token: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..300 {
            let (code, v) = get(self.addr(), "/api/edge/status", token).await;
            if code == 200 && check(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the edge never reached: {what}");
    }
}

async fn get(addr: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Pumps `device` until `check` holds (at most 15 s).
async fn until(device: &mut Device, addr: SocketAddr, what: &str, check: impl Fn(&Device) -> bool) {
    for _ in 0..150 {
        if check(device) {
            return;
        }
        if !device.online() {
            device.connect(addr).await;
        }
        device.pump(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

fn scans(device: &Device, doc: &DocumentId) -> usize {
    device.doc(doc).map_or(0, |d| scan_ids(d).len())
}

fn status(device: &Device, doc: &DocumentId) -> Option<Status> {
    device.doc(doc).and_then(Booking::read).map(|b| b.status)
}

/// (scan id, counted) of a booking's attendance records on a server.
async fn recorded(addr: SocketAddr, token: &str, doc: &DocumentId) -> Vec<(String, bool)> {
    let (code, v) = get(addr, &format!("/api/bookings/{doc}/attendance"), token).await;
    if code != 200 {
        return Vec::new();
    }
    let mut out: Vec<(String, bool)> = v["scans"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["scan_id"].as_str().unwrap_or_default().to_owned(),
                        s["counted"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A new user of `role` with one enrolled device, and the device's id.
async fn device_with_id(
    enroller: &Enroller,
    role: Role,
    school: Option<uuid::Uuid>,
    venue: Option<uuid::Uuid>,
    seed: u8,
) -> (Device, DeviceId) {
    let (d, id, _) = device_with_user(enroller, role, school, venue, seed).await;
    (d, id)
}

/// As [`device_with_id`], with the user's id too.
async fn device_with_user(
    enroller: &Enroller,
    role: Role,
    school: Option<uuid::Uuid>,
    venue: Option<uuid::Uuid>,
    seed: u8,
) -> (Device, DeviceId, uuid::Uuid) {
    let u = user(&enroller.store, role, school, venue, None).await;
    let (device, token) = enroller.enroll(u).await;
    let id = device.parse::<DeviceId>().expect("device id");
    let writer = Writer {
        device: id,
        user: UserId(u),
        role,
        school: school.map(SchoolId),
        venue: venue.map(VenueId),
        pupil: (role == Role::Pupil).then_some(PupilId(u)),
    };
    (Device::new(writer, token, seed), id, u)
}

/// A venue with a slot, a confirmed booking of `n` pupils made upstream, and the gate.
struct Venue {
    venue: VenueId,
    school: SchoolId,
    booking: DocumentId,
    roster: Vec<PupilId>,
    gate: Device,
    gate_id: DeviceId,
    teacher: Device,
    teacher_id: DeviceId,
    teacher_user: uuid::Uuid,
    enroller: Enroller,
}

async fn venue_upstream(db: &TestDb, upstream: SocketAddr, n: usize) -> Venue {
    let p = place(&db.store).await;
    let enroller = Enroller::new(&db.store, upstream);
    let (mut gate, gate_id) =
        device_with_id(&enroller, Role::VenueStaff, None, Some(p.venue), 201).await;
    let venue = VenueId(p.venue);
    let slot = publish_slot(&mut gate, upstream, venue, 60).await;
    let school = SchoolId(p.school);
    let (mut teacher, teacher_id, teacher_user) =
        device_with_user(&enroller, Role::Teacher, Some(p.school), None, 202).await;
    let roster = pupils(7_000, n);
    let booking = new_doc();
    teacher.edit(booking, create_booking(venue, slot, school, roster.clone()));
    teacher.sync(upstream).await;
    until(
        &mut teacher,
        upstream,
        "the booking confirmed upstream",
        |t| status(t, &booking) == Some(Status::Confirmed),
    )
    .await;
    Venue {
        venue,
        school,
        booking,
        roster,
        gate,
        gate_id,
        teacher,
        teacher_id,
        teacher_user,
        enroller,
    }
}

/// Moves `device` to the edge and waits until it holds `doc` there.
async fn onto_edge(device: &mut Device, edge: SocketAddr, doc: DocumentId) {
    device.disconnect();
    for _ in 0..100 {
        device.want(doc);
        device.sync(edge).await;
        if device.doc(&doc).is_some_and(|d| !d.get_heads().is_empty()) && device.online() {
            return;
        }
        device.disconnect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the edge never served {doc}");
}

async fn a_day_cut_off_at_the_edge_converges_when_the_upstream_returns(kind: Db) {
    let db = TestDb::new(kind).await;
    let upstream = Server::start(db.config()).await;
    let mut v = venue_upstream(&db, upstream.addr, 8).await;
    let staff_token = v.gate.token.clone();
    let admin = v.enroller.admin_token().await;
    let link = Link::to(upstream.addr).await;
    let edge = EdgeBox::start(&db, v.venue.0, &link).await;
    edge.until(&staff_token, "the upstream connected", |s| {
        s["upstream_connected"] == true && s["unsynced_documents"] == 0
    })
    .await;
    // The gate and the teacher work at the venue, on the edge, with their upstream tokens.
    onto_edge(&mut v.gate, edge.addr(), v.booking).await;
    onto_edge(&mut v.teacher, edge.addr(), v.booking).await;

    // The internet goes for the day.
    link.cut();
    let cut = edge
        .until(&staff_token, "the cut-off noticed", |s| {
            s["upstream_connected"] == false
        })
        .await;
    assert!(cut["cut_off_since"].as_i64().is_some(), "{cut}");
    let mut scan_at_edge = Vec::new();
    for (i, pupil) in v.roster.iter().take(6).enumerate() {
        let (edit, id) = check_in(*pupil);
        // Two writers at the edge: the gate and the teacher.
        let d = if i % 2 == 0 {
            &mut v.gate
        } else {
            &mut v.teacher
        };
        d.edit(v.booking, edit);
        d.pump(Duration::from_millis(50)).await;
        scan_at_edge.push(id);
    }
    // The gate scans one pupil a second time: kept, counted once.
    let (again, again_id) = check_in(v.roster[0]);
    v.gate.edit(v.booking, again);
    scan_at_edge.push(again_id);
    until(
        &mut v.gate,
        edge.addr(),
        "the gate's scans stored at the edge",
        |g| g.server_has_all(&v.booking),
    )
    .await;
    until(
        &mut v.teacher,
        edge.addr(),
        "the teacher's scans stored at the edge",
        |t| t.server_has_all(&v.booking),
    )
    .await;
    // Meanwhile a gate at another entrance syncs straight upstream (its own link).
    let mut other_gate = v
        .enroller
        .device(Role::VenueStaff, None, Some(v.venue.0), 203)
        .await;
    other_gate.want(v.booking);
    other_gate.sync(upstream.addr).await;
    let (edit, upstream_scan) = check_in(v.roster[7]);
    other_gate.edit(v.booking, edit);
    until(
        &mut other_gate,
        upstream.addr,
        "the upstream scan stored",
        |g| g.server_has_all(&v.booking),
    )
    .await;

    // The edge's own dashboard is live while cut off and says since when.
    let live = format!("/api/venues/{}/live", v.venue);
    let mut arrived = 0;
    for _ in 0..100 {
        let (code, snap) = get(edge.addr(), &live, &staff_token).await;
        assert_eq!(code, 200, "{snap}");
        arrived = snap["totals"]["arrived"].as_i64().unwrap_or(0);
        if arrived == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        arrived, 6,
        "the edge's dashboard counts the day's arrivals once each"
    );
    let status = edge.status(&staff_token).await;
    assert_eq!(status["upstream_connected"], false);
    assert_eq!(status["cut_off_minutes"], 0, "{status}");
    assert!(
        status["banner"]
            .as_str()
            .is_some_and(|b| b.contains("上游已断开") && b.contains("upstream unreachable")),
        "{status}"
    );
    let page = reqwest::Client::new()
        .get(format!("http://{}/venues/{}/live", edge.addr(), v.venue))
        .bearer_auth(&staff_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("上游已断开"),
        "the live page shows the banner"
    );
    assert!(
        recorded(upstream.addr, &admin, &v.booking).await.len() == 1,
        "only the upstream's own scan is there while the edge is cut off"
    );

    // The link returns: everything converges, nothing counted twice.
    link.restore();
    edge.until(&staff_token, "back in step with the upstream", |s| {
        s["upstream_connected"] == true && s["unsynced_documents"] == 0
    })
    .await;
    let mut on_upstream = Vec::new();
    let mut on_edge = Vec::new();
    for _ in 0..150 {
        on_upstream = recorded(upstream.addr, &admin, &v.booking).await;
        on_edge = recorded(edge.addr(), &staff_token, &v.booking).await;
        if on_upstream.len() == 8 && on_edge == on_upstream {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on_upstream.len(), 8, "7 scans at the edge and 1 upstream");
    assert_eq!(
        on_edge, on_upstream,
        "the edge's records equal the upstream's"
    );
    assert_eq!(
        on_upstream.iter().filter(|(_, counted)| *counted).count(),
        7,
        "7 pupils arrived, the scanned-twice one counted once"
    );
    let ids: std::collections::BTreeSet<String> =
        on_upstream.iter().map(|(id, _)| id.clone()).collect();
    assert!(scan_at_edge.iter().all(|id| ids.contains(id)));
    assert!(ids.contains(&upstream_scan));
    let (_, booking) = get(
        upstream.addr,
        &format!("/api/bookings/{}/attendance", v.booking),
        &admin,
    )
    .await;
    assert_eq!(booking["booking"]["arrived"], 7, "{booking}");
    // The upstream's device hears the edge's scans; the edge's gate hears the upstream's.
    until(
        &mut other_gate,
        upstream.addr,
        "the edge's scans upstream",
        |g| scans(g, &v.booking) == 8,
    )
    .await;
    until(
        &mut v.gate,
        edge.addr(),
        "the upstream's scan at the edge",
        |g| scans(g, &v.booking) == 8,
    )
    .await;
    v.gate.disconnect();
    v.teacher.disconnect();
    other_gate.disconnect();
    edge.server.stop().await;
    drop(edge.dir);
    upstream.stop().await;
    db.finish().await;
}

fn refused_foreign(device: &Device) -> bool {
    device.events.iter().any(|e| {
        matches!(e, Event::Refused { refusal, .. } if refusal.code == RefusalCode::ForeignActor)
            || matches!(e, Event::ServerRefused { code, .. } if *code == RefusalCode::ForeignActor)
    })
}

async fn a_device_at_the_edge_cannot_write_under_another_devices_actor_id(kind: Db) {
    let db = TestDb::new(kind).await;
    let upstream = Server::start(db.config()).await;
    let mut v = venue_upstream(&db, upstream.addr, 4).await;
    let admin = v.enroller.admin_token().await;
    let staff_token = v.gate.token.clone();
    // A second device of the venue's staff, that will write under the gate's actor id
    // (201).
    let (mut hostile, _) =
        device_with_id(&v.enroller, Role::VenueStaff, None, Some(v.venue.0), 201).await;
    // A third, that will write under the teacher's actor id (202), which the teacher
    // used upstream only and never at the edge.
    let (mut hostile2, _) =
        device_with_id(&v.enroller, Role::VenueStaff, None, Some(v.venue.0), 202).await;
    let link = Link::to(upstream.addr).await;
    let edge = EdgeBox::start(&db, v.venue.0, &link).await;
    edge.until(&staff_token, "the upstream connected", |s| {
        s["upstream_connected"] == true
    })
    .await;
    onto_edge(&mut v.gate, edge.addr(), v.booking).await;
    let (edit, honest) = check_in(v.roster[0]);
    v.gate.edit(v.booking, edit);
    until(&mut v.gate, edge.addr(), "the honest scan stored", |g| {
        g.server_has_all(&v.booking)
    })
    .await;
    for _ in 0..100 {
        hostile.want(v.booking);
        hostile.sync(edge.addr()).await;
        if hostile.doc(&v.booking).is_some() {
            break;
        }
        hostile.disconnect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (edit, forged) = check_in(v.roster[1]);
    hostile.edit(v.booking, edit);
    until(
        &mut hostile,
        edge.addr(),
        "the edge refusing the forged change",
        refused_foreign,
    )
    .await;
    onto_edge(&mut hostile2, edge.addr(), v.booking).await;
    let (edit, forged2) = check_in(v.roster[2]);
    hostile2.edit(v.booking, edit);
    until(
        &mut hostile2,
        edge.addr(),
        "the edge refusing a change under an actor id owned upstream",
        refused_foreign,
    )
    .await;
    // Neither the edge nor, later, the upstream holds it; the honest scan reaches both.
    let at_edge = recorded(edge.addr(), &staff_token, &v.booking).await;
    assert!(
        at_edge
            .iter()
            .all(|(id, _)| *id != forged && *id != forged2),
        "{at_edge:?}"
    );
    let mut up = Vec::new();
    for _ in 0..100 {
        up = recorded(upstream.addr, &admin, &v.booking).await;
        if up.iter().any(|(id, _)| *id == honest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up.iter().any(|(id, _)| *id == honest), "{up:?}");
    assert!(
        up.iter().all(|(id, _)| *id != forged && *id != forged2),
        "{up:?}"
    );
    hostile2.disconnect();
    v.gate.disconnect();
    hostile.disconnect();
    edge.server.stop().await;
    upstream.stop().await;
    db.finish().await;
}

async fn claim(upstream: SocketAddr, token: &str, actor: [u8; 16], device: DeviceId) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://{upstream}/api/edge/actors"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "claims": [{ "actor": hex::encode(actor), "device": device.0 }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn a_hostile_edge_relaying_an_actor_id_off_its_roster_is_refused_upstream(kind: Db) {
    let db = TestDb::new(kind).await;
    let upstream = Server::start(db.config()).await;
    let mut v = venue_upstream(&db, upstream.addr, 4).await;
    let admin = v.enroller.admin_token().await;
    // An edge box of the venue, speaking the protocol itself instead of relaying.
    let edge_user = kepu_server::edge::create(&db.store, v.venue.0, now_ms())
        .await
        .unwrap();
    let (edge_device, edge_token) = v.enroller.enroll(edge_user).await;
    let edge_writer = |seed: u8| {
        Device::new(
            Writer {
                device: edge_device.parse::<DeviceId>().unwrap(),
                user: UserId(edge_user),
                role: Role::VenueStaff,
                school: None,
                venue: Some(v.venue),
                pupil: None,
            },
            edge_token.clone(),
            seed,
        )
    };
    // A teacher of a school in another county: not on this venue's roster.
    let city = v
        .enroller
        .store
        .create_city(kepu_server::ids::new_id(), "株洲市")
        .await
        .unwrap()
        .id;
    let county = v
        .enroller
        .store
        .create_county(kepu_server::ids::new_id(), city, "荷塘区")
        .await
        .unwrap()
        .id;
    let far_school = v
        .enroller
        .store
        .create_school(kepu_server::ids::new_id(), county, "远方小学")
        .await
        .unwrap()
        .id;
    let (_far_teacher, far_teacher_id) =
        device_with_id(&v.enroller, Role::Teacher, Some(far_school), None, 210).await;
    let roster_teacher = v.teacher_id;

    // Only an edge box reads a roster or reports actor ids.
    let (code, _) = get(upstream.addr, "/api/edge/roster", &v.teacher.token).await;
    assert_eq!(code, 403);
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/edge/actors", upstream.addr))
        .bearer_auth(&v.gate.token)
        .json(&serde_json::json!({ "claims": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (code, roster) = get(upstream.addr, "/api/edge/roster", &edge_token).await;
    assert_eq!(code, 200);
    assert!(
        !roster.to_string().contains(&v.teacher.token),
        "the roster carries token hashes, never tokens"
    );

    // 1. Under its own, unclaimed actor id: an edge writes nothing of its own.
    let mut own = edge_writer(220);
    own.want(v.booking);
    own.sync(upstream.addr).await;
    let (edit, own_scan) = check_in(v.roster[0]);
    own.edit(v.booking, edit);
    until(
        &mut own,
        upstream.addr,
        "its own actor id refused",
        refused_foreign,
    )
    .await;
    own.disconnect();

    // 2. An actor id claimed for a device off the roster: the claim and the change refused.
    let verdict = claim(upstream.addr, &edge_token, [221; 16], far_teacher_id).await;
    assert_eq!(verdict["accepted"], 0, "{verdict}");
    assert_eq!(
        verdict["refused"].as_array().map(Vec::len),
        Some(1),
        "{verdict}"
    );
    let mut off = edge_writer(221);
    off.want(v.booking);
    off.sync(upstream.addr).await;
    let (edit, off_scan) = check_in(v.roster[1]);
    off.edit(v.booking, edit);
    until(
        &mut off,
        upstream.addr,
        "an off-roster actor id refused",
        refused_foreign,
    )
    .await;
    off.disconnect();

    // 3. The actor id of the roster's teacher (202) is someone's already: the edge may
    //    not give it to another device.
    let verdict = claim(upstream.addr, &edge_token, [202; 16], v.gate_id).await;
    assert_eq!(
        verdict["accepted"], 0,
        "the teacher's actor id is not the gate's: {verdict}"
    );
    // 4. Relayed as the roster's teacher: accepted, and validated with the teacher's
    //    rules. (The test writes the teacher's changes itself, over the edge's token.)
    let teacher_writer = Writer {
        device: v.teacher_id,
        user: UserId(v.teacher_user),
        role: Role::Teacher,
        school: Some(v.school),
        venue: None,
        pupil: None,
    };
    let verdict = claim(upstream.addr, &edge_token, [223; 16], roster_teacher).await;
    assert_eq!(verdict["accepted"], 1, "{verdict}");
    let mut relay = Device::new(teacher_writer, edge_token.clone(), 223);
    relay.want(v.booking);
    relay.sync(upstream.addr).await;
    let (edit, relayed_scan) = check_in(v.roster[2]);
    relay.edit(v.booking, edit);
    until(&mut relay, upstream.addr, "the relayed scan stored", |d| {
        d.server_has_all(&v.booking)
    })
    .await;
    assert!(!refused_foreign(&relay), "{:?}", relay.events);
    relay.disconnect();
    // A change the edge's own role could make (a slot in the venue document), under an
    // actor id of the teacher: refused, since a teacher may not write the venue.
    let verdict = claim(upstream.addr, &edge_token, [224; 16], roster_teacher).await;
    assert_eq!(verdict["accepted"], 1, "{verdict}");
    let mut as_staff = edge_writer(224);
    let venue_doc = DocumentId::from_bytes(*v.venue.0.as_bytes());
    as_staff.want(venue_doc);
    as_staff.sync(upstream.addr).await;
    let start = now_ms() + 86_400_000;
    as_staff.edit(
        venue_doc,
        Edit::PutSlot {
            slot: SlotId(uuid::Uuid::from_u128(4242)),
            start,
            end: start + 3_600_000,
            capacity: 10,
            label: "relayed".into(),
        },
    );
    until(
        &mut as_staff,
        upstream.addr,
        "the slot refused as the teacher's",
        |d| {
            d.events.iter().any(|e| {
            matches!(e, Event::Refused { refusal, .. } if refusal.code != RefusalCode::ForeignActor)
        })
        },
    )
    .await;
    as_staff.disconnect();
    let mut up = Vec::new();
    for _ in 0..100 {
        up = recorded(upstream.addr, &admin, &v.booking).await;
        if up.iter().any(|(id, _)| *id == relayed_scan) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up.iter().any(|(id, _)| *id == relayed_scan), "{up:?}");
    assert!(
        up.iter().all(|(id, _)| *id != own_scan && *id != off_scan),
        "{up:?}"
    );
    until(
        &mut v.teacher,
        upstream.addr,
        "the booking still confirmed",
        |t| {
            t.doc(&v.booking)
                .and_then(Booking::read)
                .is_some_and(|b| b.status == Status::Confirmed && b.check_ins.len() == 1)
        },
    )
    .await;
    v.teacher.disconnect();
    upstream.stop().await;
    db.finish().await;
}

async fn a_revoked_edge_stops_serving_and_keeps_its_unsynced_work(kind: Db) {
    let db = TestDb::new(kind).await;
    let upstream = Server::start(db.config()).await;
    let mut v = venue_upstream(&db, upstream.addr, 4).await;
    let admin = v.enroller.admin_token().await;
    let staff_token = v.gate.token.clone();
    // The bureau creates the venue's edge box through the admin API (its staff may not).
    let edges = format!(
        "http://{}/api/admin/venues/{}/edges",
        upstream.addr, v.venue
    );
    let http = reqwest::Client::new();
    let r = http
        .post(&edges)
        .bearer_auth(&staff_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!(
            "http://{}/api/admin/venues/{}/edges",
            upstream.addr,
            uuid::Uuid::from_u128(1)
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an unknown venue");
    let r = http.post(&edges).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let link = Link::to(upstream.addr).await;
    let edge = EdgeBox::start_with_code(created["code"].as_str().unwrap(), &link).await;
    edge.until(&staff_token, "the upstream connected", |s| {
        s["upstream_connected"] == true
    })
    .await;
    onto_edge(&mut v.gate, edge.addr(), v.booking).await;
    link.cut();
    edge.until(&staff_token, "the cut-off noticed", |s| {
        s["upstream_connected"] == false
    })
    .await;
    let mut kept = Vec::new();
    for pupil in v.roster.iter().take(2) {
        let (edit, id) = check_in(*pupil);
        v.gate.edit(v.booking, edit);
        kept.push(id);
    }
    until(
        &mut v.gate,
        edge.addr(),
        "the scans stored at the edge",
        |g| g.server_has_all(&v.booking),
    )
    .await;
    // The bureau revokes the edge box while it is cut off.
    let edge_device: String = db
        .store
        .list_devices(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| {
            d.app_version
                .as_deref()
                .is_some_and(|a| a.starts_with("kepu-edge/"))
        })
        .map(|d| d.id.to_string())
        .next()
        .expect("the edge's device upstream");
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/api/admin/devices/{edge_device}/revoke",
            upstream.addr
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    link.restore();
    let s = edge
        .until(&staff_token, "the edge revoked", |s| s["revoked"] == true)
        .await;
    assert!(
        s["banner"].as_str().is_some_and(|b| b.contains("revoked")),
        "{s}"
    );
    // It serves nothing: the gate's connection ends and it cannot come back.
    for _ in 0..50 {
        if !v.gate.online() {
            break;
        }
        v.gate.pump(Duration::from_millis(100)).await;
    }
    assert!(!v.gate.online(), "the gate's session was closed");
    assert!(
        crate::sync_client::open_socket(edge.addr(), &staff_token)
            .await
            .is_err(),
        "a revoked edge refuses sync connections"
    );
    let (code, _) = get(
        edge.addr(),
        &format!("/api/venues/{}/live", v.venue),
        &staff_token,
    )
    .await;
    assert_eq!(code, 503);
    // Nothing of its unsynced work reached the upstream, and the edge still has it.
    assert!(recorded(upstream.addr, &admin, &v.booking).await.is_empty());
    let dir = edge.dir.path().to_path_buf();
    edge.server.stop().await;
    let store = kepu_server::Store::open(
        &format!("sqlite://{}?mode=rwc", dir.join("kepu.db").display()),
        None,
    )
    .await
    .expect("the edge's database");
    let doc = kepu_server::records::load(&store, v.booking).await.unwrap();
    let held = scan_ids(&doc);
    assert!(
        kept.iter().all(|id| held.contains(id)),
        "the unsynced scans are kept"
    );
    store.close().await;
    // A restart does not serve either.
    let again = EdgeBox::run(&dir, &link.url(), None).await;
    let (code, _) = get(again.addr, "/api/edge/status", &staff_token).await;
    assert_eq!(code, 200);
    assert!(
        crate::sync_client::open_socket(again.addr, &staff_token)
            .await
            .is_err(),
        "a restarted revoked edge refuses sync connections"
    );
    again.stop().await;
    drop(edge.dir);
    v.gate.disconnect();
    upstream.stop().await;
    db.finish().await;
}

/// A gate key certified by the upstream for today, and the upstream's public key.
async fn certified_gate(
    upstream: SocketAddr,
    gate_token: &str,
) -> (
    kepu_sync_core::proof::GateSigner,
    kepu_sync_core::proof::ServerPublicKey,
) {
    use kepu_sync_core::proof::{GateSigner, ServerPublicKey, SignedGateCert, gate_public_key};
    let seed = [7u8; 32];
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        gate_public_key(&seed),
    );
    let r = reqwest::Client::new()
        .post(format!("http://{upstream}/api/gates/day-cert"))
        .bearer_auth(gate_token)
        .json(&serde_json::json!({ "gate_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let cert = SignedGateCert::decode(body["cert"].as_str().unwrap()).unwrap();
    let server_key =
        ServerPublicKey::from_base64(body["server_public_key"].as_str().unwrap()).unwrap();
    (GateSigner::new(seed, cert).unwrap(), server_key)
}

async fn a_cut_off_edge_checks_gate_codes_and_leaves_bookings_to_the_upstream(kind: Db) {
    use kepu_sync_core::proof::{
        GateDayCert, GateSigner, ServerSigner, gate_public_key, utc_day, verify_gate_code,
    };
    use kepu_sync_core::schema::booking::ScanMethod;
    let db = TestDb::new(kind).await;
    let upstream = Server::start(db.config()).await;
    let mut v = venue_upstream(&db, upstream.addr, 1).await;
    let admin = v.enroller.admin_token().await;
    let staff_token = v.gate.token.clone();
    let school = Some(v.school.0);
    let (mut honest, _, honest_user) =
        device_with_user(&v.enroller, Role::Pupil, school, None, 230).await;
    let (mut forger, _, forger_user) =
        device_with_user(&v.enroller, Role::Pupil, school, None, 231).await;
    let (me, other) = (PupilId(honest_user), PupilId(forger_user));
    // Their class's visit, booked and confirmed upstream.
    let visit = new_doc();
    let slot = Booking::read(v.teacher.doc(&v.booking).unwrap())
        .unwrap()
        .slot;
    v.teacher.edit(
        visit,
        create_booking(v.venue, slot, v.school, vec![me, other]),
    );
    until(&mut v.teacher, upstream.addr, "the visit confirmed", |t| {
        status(t, &visit) == Some(Status::Confirmed)
    })
    .await;
    let (gate_signer, server_key) = certified_gate(upstream.addr, &staff_token).await;
    let link = Link::to(upstream.addr).await;
    let edge = EdgeBox::start(&db, v.venue.0, &link).await;
    edge.until(&staff_token, "the upstream connected", |s| {
        s["upstream_connected"] == true
    })
    .await;
    onto_edge(&mut honest, edge.addr(), visit).await;
    onto_edge(&mut forger, edge.addr(), visit).await;
    onto_edge(&mut v.teacher, edge.addr(), visit).await;
    link.cut();
    edge.until(&staff_token, "the cut-off noticed", |s| {
        s["upstream_connected"] == false
    })
    .await;

    // The gate shows its code; the pupil's phone checks in with it at the edge.
    let now = now_ms();
    let proof = verify_gate_code(&gate_signer.code_at(now), &server_key, now, Some(v.venue))
        .expect("a valid gate code");
    honest.edit(
        visit,
        Edit::CheckIn {
            pupil: me,
            scan_id: crate::world::scan_id(),
            method: ScanMethod::GateCode,
            proof: Some(proof.encode()),
        },
    );
    until(
        &mut honest,
        edge.addr(),
        "the gate code accepted at the edge",
        |d| d.server_has_all(&visit),
    )
    .await;
    // A code from a gate certified by another key (a forged certificate) is refused by
    // the edge, offline.
    let forged_server = ServerSigner::from_seed([9u8; 32]);
    let forged_seed = [8u8; 32];
    let day = utc_day(now).unwrap();
    let forged_cert = forged_server.certify_gate(GateDayCert {
        venue: v.venue,
        day,
        gate_key: gate_public_key(&forged_seed),
        expires_ms: (i64::from(day) + 1) * 86_400_000,
    });
    let forged_gate = GateSigner::new(forged_seed, forged_cert).unwrap();
    let forged = verify_gate_code(
        &forged_gate.code_at(now),
        &forged_server.public(),
        now,
        Some(v.venue),
    )
    .expect("valid under the forger's own key");
    forger.edit(
        visit,
        Edit::CheckIn {
            pupil: other,
            scan_id: crate::world::scan_id(),
            method: ScanMethod::GateCode,
            proof: Some(forged.encode()),
        },
    );
    until(
        &mut forger,
        edge.addr(),
        "the forged code refused at the edge",
        |d| {
            d.events.iter().any(|e| {
            matches!(e, Event::Refused { refusal, .. } if refusal.code == RefusalCode::BadProof)
        })
        },
    )
    .await;

    // A booking requested at the cut-off edge stays requested: only the upstream decides.
    let request = new_doc();
    v.teacher.edit(
        request,
        create_booking(v.venue, slot, v.school, pupils(8_000, 3)),
    );
    until(
        &mut v.teacher,
        edge.addr(),
        "the request stored at the edge",
        |t| t.server_has_all(&request),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    v.teacher.pump(Duration::from_millis(200)).await;
    assert_eq!(status(&v.teacher, &request), Some(Status::Requested));
    let (code, at_edge) = get(
        edge.addr(),
        &format!("/api/bookings/{request}/attendance"),
        &staff_token,
    )
    .await;
    assert_eq!(code, 200, "{at_edge}");
    assert_eq!(at_edge["booking"]["status"], "requested", "{at_edge}");

    // Back online: the upstream decides, checks the gate code again, and both agree.
    link.restore();
    until(
        &mut v.teacher,
        edge.addr(),
        "the upstream's decision back at the edge",
        |t| status(t, &request) == Some(Status::Confirmed),
    )
    .await;
    let mut up = Value::Null;
    for _ in 0..150 {
        up = get(
            upstream.addr,
            &format!("/api/bookings/{visit}/attendance"),
            &admin,
        )
        .await
        .1;
        if up["booking"]["arrived"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up["booking"]["arrived"], 1, "{up}");
    assert_eq!(up["scans"][0]["method"], "gate_code", "{up}");
    assert_eq!(up["scans"][0]["pupil_id"], me.0.to_string(), "{up}");
    assert_eq!(
        recorded(edge.addr(), &staff_token, &visit).await,
        recorded(upstream.addr, &admin, &visit).await
    );
    honest.disconnect();
    forger.disconnect();
    v.teacher.disconnect();
    edge.server.stop().await;
    upstream.stop().await;
    db.finish().await;
}
