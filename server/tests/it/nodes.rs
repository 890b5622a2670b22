//! Several server nodes on one PostgreSQL database (ADR 0120): each test starts two or
//! three servers in this process over the same fresh database, with devices on
//! different nodes. SQLite has one node only, so these cases run on PostgreSQL alone; the
//! single-node behaviour on SQLite is what every other test in this binary checks.

use std::net::SocketAddr;
use std::time::Duration;

use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::booking::{Booking, Status};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{Db, TestDb, place};
use crate::sync_client::Device;
use crate::world::{Enroller, check_in, create_booking, new_doc, publish_slot, pupils, scan_ids};

/// One server process's worth: `kepu_server::run` on its own listener over a shared
/// database.
struct Node {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kepu_server::Result<()>>>,
}

impl Node {
    async fn start(db: &TestDb) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kepu_server::run(db.config(), listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the node (its devices' connections close, its leadership is released).
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("node task").expect("node ran cleanly");
        }
    }
}

/// Pumps `device` until `check` holds (at most 10 s).
async fn until(device: &mut Device, what: &str, check: impl Fn(&Device) -> bool) {
    for _ in 0..200 {
        if check(device) {
            return;
        }
        device.pump(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

fn scans(device: &Device, doc: &DocumentId) -> usize {
    device.doc(doc).map_or(0, |d| scan_ids(d).len())
}

fn status(device: &Device, doc: &DocumentId) -> Option<Status> {
    device.doc(doc).and_then(Booking::read).map(|b| b.status)
}

struct Cast {
    venue: VenueId,
    school: SchoolId,
    slot: SlotId,
}

/// A venue whose staff (on `node`) published a slot of `capacity`.
async fn venue_with_slot(db: &TestDb, node: SocketAddr, capacity: u32) -> (Cast, Device, Enroller) {
    let p = place(&db.store).await;
    let enroller = Enroller::new(&db.store, node);
    let mut staff = enroller
        .device(Role::VenueStaff, None, Some(p.venue), 200)
        .await;
    let venue = VenueId(p.venue);
    let slot = publish_slot(&mut staff, node, venue, capacity).await;
    (
        Cast {
            venue,
            school: SchoolId(p.school),
            slot,
        },
        staff,
        enroller,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_check_in_on_one_node_reaches_a_device_on_another_and_back() {
    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let (c, mut gate, enroller) = venue_with_slot(&db, a.addr, 60).await;
    let mut teacher = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    let roster = pupils(900, 2);
    let booking = new_doc();
    teacher.edit(
        booking,
        create_booking(c.venue, c.slot, c.school, roster.clone()),
    );
    teacher.sync(a.addr).await;
    // The gate is on node B, which loads the booking from the database.
    gate.disconnect();
    gate.want(booking);
    gate.sync(b.addr).await;
    assert!(
        gate.doc(&booking).is_some(),
        "node B serves the booking node A stored"
    );
    // Both stay connected: what one node stores reaches the other's device live.
    let (edit, _) = check_in(roster[0]);
    teacher.edit(booking, edit);
    teacher.pump(Duration::from_millis(100)).await;
    until(
        &mut gate,
        "the check-in through A reaching the gate on B",
        |g| scans(g, &booking) == 1,
    )
    .await;
    let (edit, _) = check_in(roster[1]);
    gate.edit(booking, edit);
    gate.pump(Duration::from_millis(100)).await;
    until(
        &mut teacher,
        "the check-in through B reaching the teacher on A",
        |t| scans(t, &booking) == 2,
    )
    .await;
    until(
        &mut gate,
        "the gate hearing its own scan acknowledged",
        |g| g.server_has_all(&booking),
    )
    .await;
    let t = Booking::read(teacher.doc(&booking).unwrap()).unwrap();
    let g = Booking::read(gate.doc(&booking).unwrap()).unwrap();
    assert_eq!(t, g, "both devices hold the same booking");
    teacher.disconnect();
    gate.disconnect();
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

impl Node {
    async fn leads(&self) -> bool {
        let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["leader"] == true
    }
}

/// Waits until exactly one of `nodes` leads; returns its index.
async fn leader_of(nodes: &[&Node]) -> usize {
    for _ in 0..100 {
        let mut leading = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.leads().await {
                leading.push(i);
            }
        }
        if leading.len() == 1 {
            return leading[0];
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no single leader among the nodes");
}

/// The booking's status in the records one node serves.
async fn recorded_status(
    enroller: &Enroller,
    node: SocketAddr,
    token: &str,
    doc: &DocumentId,
) -> String {
    let on_node = Enroller {
        http: enroller.http.clone(),
        addr: node,
        store: enroller.store.clone(),
    };
    let v = on_node
        .get_json(&format!("/api/bookings/{doc}/attendance"), token)
        .await;
    v["booking"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_teachers_on_two_nodes_book_the_last_places_and_the_next_leader_decides() {
    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let (c, _staff, enroller) = venue_with_slot(&db, a.addr, 4).await;
    let mut t1 = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    let mut t2 = enroller
        .device(Role::Teacher, Some(c.school.0), None, 2)
        .await;
    let (b1, b2) = (new_doc(), new_doc());
    // Three of the four places are left for each: only one of them fits.
    t1.edit(
        b1,
        create_booking(c.venue, c.slot, c.school, pupils(100, 3)),
    );
    t2.edit(
        b2,
        create_booking(c.venue, c.slot, c.school, pupils(200, 3)),
    );
    tokio::join!(t1.sync(a.addr), t2.sync(b.addr));
    let decided = |d: &Device, doc: &DocumentId| {
        matches!(status(d, doc), Some(Status::Confirmed | Status::Waitlisted))
    };
    until(&mut t1, "the first booking decided", |d| decided(d, &b1)).await;
    until(&mut t2, "the second booking decided", |d| decided(d, &b2)).await;
    let mut got = [status(&t1, &b1).unwrap(), status(&t2, &b2).unwrap()];
    got.sort_by_key(|s| s.as_str());
    assert_eq!(
        got,
        [Status::Confirmed, Status::Waitlisted],
        "one booking fits, the other waits"
    );
    // Every node's records say the same.
    let admin = enroller.admin_token().await;
    for doc in [&b1, &b2] {
        let on_a = recorded_status(&enroller, a.addr, &admin, doc).await;
        for _ in 0..100 {
            if on_a != "requested" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let on_a = recorded_status(&enroller, a.addr, &admin, doc).await;
        let on_b = recorded_status(&enroller, b.addr, &admin, doc).await;
        assert_eq!(on_a, on_b, "both nodes show the same decision");
        assert_ne!(on_a, "requested");
    }
    // The leader dies; the other node takes over and decides the next booking.
    t1.disconnect();
    t2.disconnect();
    let leading = leader_of(&[&a, &b]).await;
    let (survivor, gone) = if leading == 0 { (b, a) } else { (a, b) };
    gone.stop().await;
    assert_eq!(leader_of(&[&survivor]).await, 0, "the surviving node leads");
    let b3 = new_doc();
    let mut t3 = Enroller::new(&db.store, survivor.addr)
        .device(Role::Teacher, Some(c.school.0), None, 3)
        .await;
    t3.edit(
        b3,
        create_booking(c.venue, c.slot, c.school, pupils(300, 1)),
    );
    t3.sync(survivor.addr).await;
    until(&mut t3, "the booking after the takeover decided", |d| {
        status(d, &b3) == Some(Status::Confirmed)
    })
    .await;
    t3.disconnect();
    survivor.stop().await;
    db.finish().await;
}

/// The `kepu_session=…` pair a login response sets.
fn session_pair(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("kepu_session=") && !v.starts_with("kepu_session=;"))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

async fn log_in(node: SocketAddr, login: &str, password: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{node}/login"))
        .form(&[("login", login), ("password", password), ("next", "")])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dashboard_on_one_node_shows_a_check_in_synced_through_another() {
    use kepu_sync_core::ids::PupilId;

    use crate::live::{EventReader, Scene};

    let db = TestDb::new(Db::Postgres).await;
    let first = Node::start(&db).await;
    let second = Node::start(&db).await;
    // Devices on node A, the leader (which decides the booking, so holds it); the
    // dashboard on node B, which holds no document of the venue: only the other node's
    // notification can tell its dashboard.
    let (a, b) = if leader_of(&[&first, &second]).await == 0 {
        (first, second)
    } else {
        (second, first)
    };
    // Devices on node A: the gate staff, a teacher whose booking is confirmed.
    let mut scene = Scene::new(&db.store, a.addr).await;
    scene.staff.want(scene.booking);
    scene.staff.sync(a.addr).await;
    // The gate staff log in to the web on node A; the browser then reaches node B.
    let staff_user = scene.staff.engine.config().writer.user.0;
    kepu_server::accounts::Accounts::new(db.store.clone())
        .set_web_login(staff_user, "gate.a", "gate-keeper-2026")
        .await
        .unwrap();
    let cookie = session_pair(&log_in(a.addr, "gate.a", "gate-keeper-2026").await)
        .expect("a session from node A");
    let http = reqwest::Client::new();
    let session = http
        .get(format!("http://{}/api/session", b.addr))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        session.status(),
        200,
        "node B knows the session node A made"
    );
    let path = format!("/api/venues/{}/live/events?day={}", scene.venue, scene.day);
    let response = http
        .get(format!("http://{}{path}", b.addr))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let (_, data, _) = events
        .next(Duration::from_secs(5))
        .await
        .expect("a snapshot at connect");
    let first: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(first["totals"]["arrived"], 0);
    // A pupil is scanned at the gate, synced through node A.
    scene
        .staff
        .edit(scene.booking, check_in(PupilId(scene.pupils[0])).0);
    let reader = tokio::spawn(async move {
        loop {
            let (name, data, _) = events.next(Duration::from_secs(5)).await?;
            let v: serde_json::Value = serde_json::from_str(&data).ok()?;
            if name == "snapshot" && v["totals"]["arrived"] == 1 {
                return Some(v);
            }
        }
    });
    scene.staff.sync(a.addr).await;
    let seen = reader.await.unwrap();
    assert!(
        seen.is_some(),
        "node B's dashboard shows the check-in node A stored"
    );
    scene.staff.disconnect();
    scene.teacher.disconnect();
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_login_name_locked_on_one_node_is_locked_on_every_node() {
    use kepu_server::accounts::MAX_FAILED_ATTEMPTS;

    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let p = place(&db.store).await;
    let staff = crate::support::user(&db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    kepu_server::accounts::Accounts::new(db.store.clone())
        .set_web_login(staff, "gate.b", "gate-keeper-2026")
        .await
        .unwrap();
    // Guesses spread over both nodes, as a load balancer would.
    for i in 0..MAX_FAILED_ATTEMPTS {
        let node = if i % 2 == 0 { a.addr } else { b.addr };
        assert_eq!(log_in(node, "gate.b", "a wrong guess").await.status(), 401);
    }
    for node in [a.addr, b.addr] {
        let locked = log_in(node, "gate.b", "gate-keeper-2026").await;
        assert_eq!(locked.status(), 429, "the name is locked on every node");
        assert!(session_pair(&locked).is_none());
    }
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_devices_spread_over_three_nodes_converge_and_every_node_counts_the_same() {
    let db = TestDb::new(Db::Postgres).await;
    let nodes = [
        Node::start(&db).await,
        Node::start(&db).await,
        Node::start(&db).await,
    ];
    let (c, mut staff, enroller) = venue_with_slot(&db, nodes[0].addr, 60).await;
    staff.disconnect();
    let roster = pupils(700, 12);
    let booking = new_doc();
    let mut teacher = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    teacher.edit(
        booking,
        create_booking(c.venue, c.slot, c.school, roster.clone()),
    );
    teacher.sync(nodes[0].addr).await;
    // Three gates, one per node, each holding the booking and staying connected.
    let mut gates = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut gate = enroller
            .device(
                Role::VenueStaff,
                None,
                Some(c.venue.0),
                10 + u8::try_from(i).unwrap(),
            )
            .await;
        gate.want(booking);
        gate.sync(node.addr).await;
        assert!(gate.doc(&booking).is_some());
        gates.push(gate);
    }
    // Each gate scans its share of the pupils, and pupil 0 is scanned at every gate.
    for (i, gate) in gates.iter_mut().enumerate() {
        for p in roster.iter().skip(i).step_by(3) {
            gate.edit(booking, check_in(*p).0);
        }
        if i != 0 {
            gate.edit(booking, check_in(roster[0]).0);
        }
    }
    let expected = roster.len() + 2;
    for gate in &mut gates {
        gate.pump(Duration::from_millis(20)).await;
    }
    for gate in &mut gates {
        until(gate, "every gate holding every scan", |g| {
            scans(g, &booking) == expected && g.server_has_all(&booking)
        })
        .await;
    }
    let merged: Vec<Booking> = gates
        .iter()
        .map(|g| Booking::read(g.doc(&booking).unwrap()).unwrap())
        .collect();
    assert!(
        merged.windows(2).all(|w| w[0] == w[1]),
        "the gates converge"
    );
    // Every node's records count each pupil once.
    let admin = enroller.admin_token().await;
    for node in &nodes {
        let on_node = Enroller::new(&db.store, node.addr);
        let path = format!("/api/bookings/{booking}/attendance");
        let mut v = on_node.get_json(&path, &admin).await;
        for _ in 0..100 {
            if v["booking"]["arrived"] == roster.len()
                && v["scans"].as_array().map(Vec::len) == Some(expected)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            v = on_node.get_json(&path, &admin).await;
        }
        assert_eq!(v["booking"]["arrived"], roster.len(), "{v}");
        assert_eq!(v["scans"].as_array().map(Vec::len), Some(expected));
    }
    for gate in &mut gates {
        gate.disconnect();
    }
    teacher.disconnect();
    for node in nodes {
        node.stop().await;
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_both_nodes_compact_a_busy_booking_and_the_database_keeps_every_scan() {
    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let (c, mut staff, enroller) = venue_with_slot(&db, a.addr, 200).await;
    staff.disconnect();
    let roster = pupils(5_000, 90);
    let booking = new_doc();
    let mut teacher = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    teacher.edit(
        booking,
        create_booking(c.venue, c.slot, c.school, roster.clone()),
    );
    teacher.sync(a.addr).await;
    teacher.disconnect();
    let mut gates = Vec::new();
    for (i, node) in [a.addr, b.addr].into_iter().enumerate() {
        let mut gate = enroller
            .device(
                Role::VenueStaff,
                None,
                Some(c.venue.0),
                20 + u8::try_from(i).unwrap(),
            )
            .await;
        gate.want(booking);
        gate.sync(node).await;
        gates.push(gate);
    }
    // More change rows than a compaction waits for (64), written through both nodes in
    // turns, so that both hold the booking and both compact it.
    for (round, chunk) in roster.chunks(5).enumerate() {
        let gate = &mut gates[round % 2];
        for p in chunk {
            gate.edit(booking, check_in(*p).0);
        }
        gate.pump(Duration::from_millis(30)).await;
    }
    for gate in &mut gates {
        until(gate, "every scan on both gates", |g| {
            scans(g, &booking) == roster.len() && g.server_has_all(&booking)
        })
        .await;
    }
    for gate in &mut gates {
        gate.disconnect();
    }
    b.stop().await;
    a.stop().await;
    let stored = db.store.load_document(booking).await.unwrap();
    assert!(stored.snapshot.is_some(), "the booking was compacted");
    let restored = kepu_sync_core::stored::restore(stored.snapshot.as_deref(), stored.changes);
    assert!(restored.problems.is_empty());
    assert_eq!(
        scan_ids(&restored.doc).len(),
        roster.len(),
        "the database holds every scan"
    );
    db.finish().await;
}

/// A booking made by a teacher on `a` whose roster holds a pupil's device, and that pupil
/// reading it on `b`.
struct Trip {
    teacher: Device,
    pupil: Device,
    booking: DocumentId,
    roster: Vec<kepu_sync_core::ids::PupilId>,
}

async fn trip(db: &TestDb, a: SocketAddr, b: SocketAddr) -> Trip {
    let (c, _staff, enroller) = venue_with_slot(db, a, 60).await;
    let mut teacher = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    let mut pupil = enroller
        .device(Role::Pupil, Some(c.school.0), None, 2)
        .await;
    let mut roster = pupils(900, 3);
    roster.push(pupil.engine.config().writer.pupil.expect("a pupil"));
    let booking = new_doc();
    teacher.edit(
        booking,
        create_booking(c.venue, c.slot, c.school, roster.clone()),
    );
    teacher.sync(a).await;
    assert!(teacher.server_has_all(&booking));
    pupil.want(booking);
    pupil.sync(b).await;
    assert!(
        pupil
            .doc(&booking)
            .is_some_and(|d| !d.get_heads().is_empty()),
        "the pupil reads the booking"
    );
    Trip {
        teacher,
        pupil,
        booking,
        roster,
    }
}

/// An empty change under `actor`, on top of what `device` holds of `doc`, as a sync
/// message (a tampered app's forgery).
fn forged_under(device: &Device, doc: &DocumentId, actor: &automerge::ActorId) -> Vec<u8> {
    use automerge::ReadDoc as _;
    let mut forged = device.doc(doc).unwrap().fork();
    forged.set_actor(actor.clone());
    let hash = forged.empty_commit(automerge::transaction::CommitOptions::default());
    let change = forged
        .get_change_by_hash(&hash)
        .unwrap()
        .raw_bytes()
        .to_vec();
    kepu_sync_core::engine::guard::hostile::sync_message(forged.get_heads(), vec![change])
}

/// The stored changes of `doc` written under `actor`.
async fn stored_under(db: &TestDb, doc: DocumentId, actor: &automerge::ActorId) -> usize {
    let loaded = db.store.load_document(doc).await.unwrap();
    let restored = kepu_sync_core::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
    restored
        .doc
        .get_changes(&[])
        .iter()
        .filter(|c| c.actor_id() == actor)
        .count()
}

/// Known gap 6, the `foreign-actor` attack across nodes: the teacher's device wrote on
/// node A, which learned its actor id; a pupil's tampered app on node B takes that actor
/// id from the booking's history and writes under it. B refuses it (`foreign-actor`), as
/// A would, and the teacher's later offline check-ins land on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_device_on_node_b_cannot_write_under_an_actor_id_node_a_learned() {
    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let Trip {
        mut teacher,
        mut pupil,
        booking,
        roster,
    } = trip(&db, a.addr, b.addr).await;
    teacher.disconnect();
    let mut scans = Vec::new();
    for p in &roster[..2] {
        let (edit, id) = check_in(*p);
        teacher.edit(booking, edit);
        scans.push(id);
    }
    let teacher_actor = teacher.doc(&booking).unwrap().get_actor().clone();
    let attack = forged_under(&pupil, &booking, &teacher_actor);
    let mut raw = crate::hostile_payloads::Raw::join(b.addr, &pupil.token).await;
    raw.sync(booking, attack.clone()).await;
    assert_eq!(raw.refusal().await.as_deref(), Some("foreign-actor"));
    assert_eq!(
        stored_under(&db, booking, &teacher_actor).await,
        1,
        "only the teacher's"
    );

    teacher.sync(a.addr).await;
    assert!(
        teacher.server_has_all(&booking),
        "the offline check-ins are stored"
    );
    until(
        &mut pupil,
        "the teacher's check-ins reaching the pupil on B",
        |p| {
            let seen = p.doc(&booking).map(scan_ids).unwrap_or_default();
            scans.iter().all(|s| seen.contains(s))
        },
    )
    .await;
    // Node A refuses it too, and so does B again.
    for node in [a.addr, b.addr] {
        let mut raw = crate::hostile_payloads::Raw::join(node, &pupil.token).await;
        raw.sync(booking, attack.clone()).await;
        assert_eq!(raw.refusal().await.as_deref(), Some("foreign-actor"));
    }
    teacher.disconnect();
    pupil.disconnect();
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

/// The window the notification leaves: node A claimed an actor id for the teacher's
/// device and node B never heard of it (its notification was lost; here the claim is
/// written behind B's back). A pupil's tampered app writes under it on B: B admits it,
/// but its append is refused by the claim table in the same transaction, nothing is
/// stored, B learns the owner and closes the connection; the app's next try is refused
/// `foreign-actor`. Honest devices go on syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_claim_node_b_never_heard_of_still_stops_the_forged_change() {
    let db = TestDb::new(Db::Postgres).await;
    let b = Node::start(&db).await;
    let Trip {
        mut teacher,
        mut pupil,
        booking,
        roster,
    } = trip(&db, b.addr, b.addr).await;
    let ghost = automerge::ActorId::random();
    sqlx::query("INSERT INTO device_actors (actor, device_id, first_seen) VALUES ($1, $2, 0)")
        .bind(ghost.to_bytes().to_vec())
        .bind(teacher.engine.config().writer.device.to_string())
        .execute(db.store.pool())
        .await
        .unwrap();
    let attack = forged_under(&pupil, &booking, &ghost);
    let mut raw = crate::hostile_payloads::Raw::join(b.addr, &pupil.token).await;
    raw.sync(booking, attack.clone()).await;
    assert_eq!(
        raw.refusal().await.as_deref(),
        Some("storage-unavailable"),
        "the append is refused and the connection closed"
    );
    assert_eq!(
        stored_under(&db, booking, &ghost).await,
        0,
        "nothing stored"
    );
    let mut raw = crate::hostile_payloads::Raw::join(b.addr, &pupil.token).await;
    raw.sync(booking, attack).await;
    assert_eq!(raw.refusal().await.as_deref(), Some("foreign-actor"));
    assert_eq!(stored_under(&db, booking, &ghost).await, 0);

    // Devices connected to the booking on B were closed with the forger's (their
    // unacknowledged changes were dropped with B's copy); they reconnect.
    pupil.disconnect();
    teacher.disconnect();
    let (edit, scan) = check_in(roster[0]);
    teacher.edit(booking, edit);
    teacher.sync(b.addr).await;
    assert!(
        teacher.server_has_all(&booking),
        "honest check-ins are stored"
    );
    pupil.sync(b.addr).await;
    assert!(scan_ids(pupil.doc(&booking).unwrap()).contains(&scan));
    teacher.disconnect();
    pupil.disconnect();
    b.stop().await;
    db.finish().await;
}

/// The session holding the leader's lock in this test's database, by backend pid.
async fn leader_session(db: &TestDb) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND classid::bigint = $1 AND objid::bigint = $2 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(kepu_server::cluster::LEADER_LOCK >> 32)
    .bind(kepu_server::cluster::LEADER_LOCK & 0xffff_ffff)
    .fetch_optional(db.store.pool())
    .await
    .unwrap()
}

/// Known gap 6, leader overlap: the leader's session is terminated in PostgreSQL (as a
/// failover or a broken network would end it). The node stops leading at once, before
/// its own 500 ms check notices (`/readyz` asks PostgreSQL, as every piece of once-only
/// work does), and one node leads again soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leader_whose_session_is_terminated_stops_leading_at_once() {
    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let nodes = [&a, &b];
    let leader = leader_of(&nodes).await;
    let pid = leader_session(&db).await.expect("the leader's session");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(ended);
    // `pg_terminate_backend` only signals the backend: its locks are held until it has
    // exited, a moment later on a loaded machine. Once it is gone, the node stops leading
    // at once, without waiting for its own 500 ms check.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leader_session(&db).await == Some(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the terminated session ends"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !nodes[leader].leads().await,
        "the node whose session ended no longer leads"
    );
    let next = leader_of(&nodes).await;
    assert_ne!(leader_session(&db).await, Some(pid));
    assert!(nodes[next].leads().await);
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

/// Known gap 6, per-node state: the teacher's device is connected to node A and has not
/// synced for 14 minutes; the venue's dashboard read on node B counts it as connected
/// (it cannot hold back scans), not as a stale device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dashboard_on_node_b_shows_a_device_connected_to_node_a_as_connected() {
    use crate::live::{Scene, set_last_sync};

    let db = TestDb::new(Db::Postgres).await;
    let a = Node::start(&db).await;
    let b = Node::start(&db).await;
    let mut scene = Scene::new(&db.store, a.addr).await;
    scene.scan_first_arrivals(a.addr).await;
    scene.teacher.sync(a.addr).await;
    assert!(scene.teacher.online() && scene.staff.online());
    let teacher_id = scene.teacher.engine.config().writer.device.to_string();
    let staff_id = scene.staff.engine.config().writer.device.to_string();
    let on_b = Enroller::new(&db.store, b.addr);
    let mut band = serde_json::Value::Null;
    for _ in 0..100 {
        let old = kepu_server::clock::now_ms() - 14 * 60_000;
        set_last_sync(&db.store, &teacher_id, old).await;
        set_last_sync(&db.store, &staff_id, old).await;
        band = on_b.get_json(&scene.path(), &scene.staff.token).await["band"].clone();
        if band["connected_devices"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(band["connected_devices"], 2, "{band}");
    assert_eq!(band["stale"].as_array().map(Vec::len), Some(0), "{band}");
    assert_eq!(band["counts_are_lower_bounds"], false, "{band}");
    // Once the teacher leaves node A, node B shows it as stale.
    scene.teacher.disconnect();
    for _ in 0..100 {
        set_last_sync(
            &db.store,
            &teacher_id,
            kepu_server::clock::now_ms() - 14 * 60_000,
        )
        .await;
        band = on_b.get_json(&scene.path(), &scene.staff.token).await["band"].clone();
        // Node A writes the teacher's last sync time as it leaves, which may land after
        // the old time this loop sets: wait for both.
        if band["connected_devices"] == 1 && band["stale"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(band["connected_devices"], 1, "{band}");
    assert_eq!(band["stale"].as_array().map(Vec::len), Some(1), "{band}");
    scene.staff.disconnect();
    b.stop().await;
    a.stop().await;
    db.finish().await;
}

/// End of day on three real `kepu-server` processes: six gates, two per node, scanned
/// offline and reconnect; one node is SIGKILLed while they sync. Its gates reconnect to
/// another node; nothing acknowledged is lost, and every node (the killed one restarted
/// too) counts each pupil once and every scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_node_sigkilled_during_end_of_day_loses_nothing_and_every_node_counts_the_same()
{
    use crate::kill9::ServerProcess;

    let db = TestDb::new(Db::Postgres).await;
    let mut nodes = vec![
        ServerProcess::start(&db).await,
        ServerProcess::start(&db).await,
        ServerProcess::start(&db).await,
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (c, mut staff, enroller) = venue_with_slot(&db, addrs[0], 120).await;
    staff.disconnect();
    let roster = pupils(600, 60);
    let booking = new_doc();
    let mut teacher = enroller
        .device(Role::Teacher, Some(c.school.0), None, 1)
        .await;
    teacher.edit(
        booking,
        create_booking(c.venue, c.slot, c.school, roster.clone()),
    );
    teacher.sync(addrs[0]).await;
    assert!(teacher.server_has_all(&booking));
    teacher.disconnect();
    let mut gates = Vec::new();
    for i in 0..6u8 {
        let mut gate = enroller
            .device(Role::VenueStaff, None, Some(c.venue.0), 20 + i)
            .await;
        gate.want(booking);
        gate.sync(addrs[usize::from(i) % 3]).await;
        assert!(gate.doc(&booking).is_some());
        gate.disconnect();
        gates.push(gate);
    }
    // Offline: each gate scans its tenth of the pupils, and every gate scans pupil 0.
    for (i, gate) in gates.iter_mut().enumerate() {
        for p in roster.iter().skip(i).step_by(6) {
            gate.edit(booking, check_in(*p).0);
        }
        if i != 0 {
            gate.edit(booking, check_in(roster[0]).0);
        }
    }
    let expected = roster.len() + 5;
    // They reconnect; node 1 is killed while its gates' frames are on the way.
    for (i, gate) in gates.iter_mut().enumerate() {
        gate.connect(addrs[i % 3]).await;
    }
    for gate in &mut gates {
        gate.pump(Duration::from_millis(5)).await;
    }
    let acknowledged: Vec<bool> = gates.iter().map(|g| g.server_has_all(&booking)).collect();
    nodes[1].kill9();
    // Gates of the killed node go to the next one; the others stay.
    for (i, gate) in gates.iter_mut().enumerate() {
        if i % 3 == 1 {
            gate.disconnect();
            gate.connect(addrs[2]).await;
        }
    }
    // All gates are pumped in turn: each needs the others' scans through its node.
    let done = |g: &Device| scans(g, &booking) == expected && g.server_has_all(&booking);
    for _ in 0..200 {
        if gates.iter().all(done) {
            break;
        }
        for gate in &mut gates {
            gate.pump(Duration::from_millis(20)).await;
        }
    }
    let held: Vec<usize> = gates.iter().map(|g| scans(g, &booking)).collect();
    assert!(
        gates.iter().all(done),
        "every gate holds every scan, acknowledged: {held:?} of {expected}"
    );
    let merged: Vec<Booking> = gates
        .iter()
        .map(|g| Booking::read(g.doc(&booking).unwrap()).unwrap())
        .collect();
    assert!(
        merged.windows(2).all(|w| w[0] == w[1]),
        "the gates converge"
    );
    let loaded = db.store.load_document(booking).await.unwrap();
    let stored = kepu_sync_core::stored::restore(loaded.snapshot.as_deref(), loaded.changes);
    assert_eq!(
        scan_ids(&stored.doc).len(),
        expected,
        "the database holds every scan (acknowledged before the kill: {acknowledged:?})"
    );
    nodes[1] = ServerProcess::start(&db).await;
    let admin = enroller.admin_token().await;
    for node in &nodes {
        let on_node = Enroller::new(&db.store, node.addr);
        let path = format!("/api/bookings/{booking}/attendance");
        let mut v = on_node.get_json(&path, &admin).await;
        for _ in 0..100 {
            if v["booking"]["arrived"] == roster.len()
                && v["scans"].as_array().map(Vec::len) == Some(expected)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            v = on_node.get_json(&path, &admin).await;
        }
        assert_eq!(v["booking"]["arrived"], roster.len(), "{v}");
        assert_eq!(v["scans"].as_array().map(Vec::len), Some(expected));
    }
    for gate in &mut gates {
        gate.disconnect();
    }
    drop(nodes);
    db.finish().await;
}
