//! The client core against the in-process server over real local websockets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kepu_mobile_ffi::client::core::{Core, DocListener, SyncListener, random};
use kepu_mobile_ffi::client::error::Error;
use kepu_mobile_ffi::client::net::{Until, connect_and_sync};
use kepu_mobile_ffi::client::store::Store;
use kepu_mobile_ffi::test_server::{self, TestServer};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::schema::booking::Status as BookingStatus;
use kepu_sync_core::writer::Role;
use tempfile::TempDir;

struct Device {
    core: Arc<Core>,
    _dir: Option<TempDir>,
}

async fn device(server: &TestServer, role: Role, pupil: Option<PupilId>) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let core = open(server, dir.path());
    let code = server.shared.issue_code(role, pupil);
    core.enroll(&code).await.unwrap();
    Device {
        core,
        _dir: Some(dir),
    }
}

fn open(server: &TestServer, dir: &std::path::Path) -> Arc<Core> {
    let w = server.shared.world();
    Arc::new(Core::open(dir, &w.url, Some(&w.server_public_key)).unwrap())
}

async fn sync(core: &Arc<Core>) -> kepu_mobile_ffi::client::net::Report {
    connect_and_sync(core, Until::Synced, None).await.unwrap()
}

fn booking_doc(server: &TestServer) -> DocumentId {
    server.shared.world().booking_doc.parse().unwrap()
}

fn pupils(server: &TestServer) -> Vec<PupilId> {
    server
        .shared
        .world()
        .pupils
        .iter()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A teacher's device that holds the seeded booking.
async fn teacher_with_booking(server: &TestServer) -> Device {
    let t = device(server, Role::Teacher, None).await;
    t.core.want(booking_doc(server)).unwrap();
    sync(&t.core).await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_fetches_the_booking_over_a_real_websocket() {
    let server = test_server::start().await.unwrap();
    let t = teacher_with_booking(&server).await;
    let b = t.core.booking(&booking_doc(&server)).unwrap();
    assert_eq!(b.status, BookingStatus::Confirmed);
    assert_eq!(b.roster.len(), 4);
    assert!(t.core.status().unwrap().last_sync_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_and_a_gate_scan_offline_and_every_device_counts_each_pupil_once() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let a = teacher_with_booking(&server).await;
    let b = teacher_with_booking(&server).await;
    let gate = device(&server, Role::VenueStaff, None).await;
    gate.core.want(doc).unwrap();
    sync(&gate.core).await;

    // Offline: overlapping scans.
    for (dev, which) in [(&a, [0, 1]), (&b, [1, 2]), (&gate, [2, 3])] {
        for i in which {
            dev.core.scan_pupil_pass(doc, &passes[i]).unwrap();
        }
    }
    assert!(a.core.status().unwrap().pending_changes > 0);

    for _ in 0..2 {
        for dev in [&a, &b, &gate] {
            sync(&dev.core).await;
        }
    }
    let expected = a.core.roster(&doc).unwrap().1;
    assert_eq!(expected.arrived, 4, "each pupil counted once");
    assert!(expected.missing.is_empty());
    let dups: usize = expected.pupils.iter().map(|p| p.duplicates.len()).sum();
    assert_eq!(dups, 2, "second scans are kept as duplicates");
    for dev in [&b, &gate] {
        assert_eq!(dev.core.roster(&doc).unwrap().1, expected);
        assert_eq!(dev.core.status().unwrap().pending_changes, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_survive_closing_and_reopening_the_store() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let dir = tempfile::tempdir().unwrap();
    {
        let core = open(&server, dir.path());
        core.enroll(&server.shared.issue_code(Role::Teacher, None))
            .await
            .unwrap();
        core.want(doc).unwrap();
        sync(&core).await;
        core.scan_pupil_pass(doc, &passes[0]).unwrap();
        core.scan_pupil_pass(doc, &passes[1]).unwrap();
    }
    let core = open(&server, dir.path());
    assert_eq!(core.identity().unwrap().unwrap().role, Role::Teacher);
    let (_, a) = core.roster(&doc).unwrap();
    assert_eq!(a.arrived, 2);
    assert_eq!(core.status().unwrap().pending_changes, 2);
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
}

/// Child half of the kill test: writes check-ins forever, printing each one that returned.
#[test]
#[ignore = "run by a_killed_app_loses_nothing_it_returned_from"]
fn kill_test_child() {
    let Ok(dir) = std::env::var("KEPU_KILL_DIR") else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let core = Core::with_store(store, "http://127.0.0.1:9", None).unwrap();
    let doc: DocumentId = std::env::var("KEPU_KILL_DOC").unwrap().parse().unwrap();
    let mut n = 0u128;
    loop {
        n += 1;
        let pupil = PupilId(uuid::Uuid::from_u128(n));
        core.edit(
            doc,
            Edit::AddToRoster {
                pupils: vec![pupil],
            },
        )
        .unwrap();
        println!("OK {pupil}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_app_loses_nothing_it_returned_from() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    {
        let core = open(&server, dir.path());
        core.enroll(&server.shared.issue_code(Role::Teacher, None))
            .await
            .unwrap();
        core.want(doc).unwrap();
        sync(&core).await;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_test_child", "--ignored", "--nocapture"])
        .env("KEPU_KILL_DIR", dir.path())
        .env("KEPU_KILL_DOC", doc.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut returned = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    while returned.len() < 40 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(p) = line.strip_prefix("OK ") {
                    returned.push(p.parse::<PupilId>().unwrap());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        returned.len() >= 10,
        "the child wrote only {}",
        returned.len()
    );
    let core = open(&server, dir.path());
    let roster = core.booking(&doc).unwrap().roster;
    for p in &returned {
        assert!(roster.contains_key(p), "a returned write was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pupil_checks_in_with_the_gate_code_and_the_teacher_sees_it() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let p0 = pupils(&server)[0];
    let pupil = device(&server, Role::Pupil, Some(p0)).await;
    pupil.core.want(doc).unwrap();
    sync(&pupil.core).await;
    let receipt = pupil
        .core
        .check_in_with_gate_code(doc, &server.shared.gate_code())
        .unwrap();
    assert_eq!(receipt.pupil, p0);
    assert!(!receipt.already_counted);
    let again = pupil
        .core
        .check_in_with_gate_code(doc, &server.shared.gate_code())
        .unwrap();
    assert!(again.already_counted, "the second scan is a duplicate");
    let visits = pupil.core.my_visits().unwrap();
    assert_eq!(visits.len(), 1);
    sync(&pupil.core).await;
    let t = teacher_with_booking(&server).await;
    let (_, a) = t.core.roster(&doc).unwrap();
    assert_eq!(a.arrived, 1);
    assert_eq!(a.inside_now, 1);
    assert_eq!(a.missing.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_gate_code_is_refused_and_nothing_is_written() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let pupil = device(&server, Role::Pupil, Some(pupils(&server)[0])).await;
    pupil.core.want(doc).unwrap();
    sync(&pupil.core).await;
    let mut code = server.shared.gate_code();
    code.replace_range(40..41, if &code[40..41] == "A" { "B" } else { "A" });
    let err = pupil.core.check_in_with_gate_code(doc, &code).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(!err.to_string().contains(&code[5..20]), "no code in errors");
    let err = pupil
        .core
        .check_in_with_gate_code(doc, "not a code")
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert_eq!(pupil.core.roster(&doc).unwrap().1.arrived, 0);
    assert_eq!(pupil.core.status().unwrap().pending_changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pupil_may_not_scan_another_pupils_pass() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let pupil = device(&server, Role::Pupil, Some(pupils(&server)[0])).await;
    pupil.core.want(doc).unwrap();
    sync(&pupil.core).await;
    let other = &server.shared.world().passes[1];
    let err = pupil.core.scan_pupil_pass(doc, other).unwrap_err();
    assert!(
        matches!(&err, Error::Refused { code, path }
            if code.as_str() == "not-own-pupil" && path.starts_with("check_in_records/")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_requested_offline_stays_requested_until_the_server_decides() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let t = device(&server, Role::Teacher, None).await;
    let doc = t
        .core
        .request_booking(&w.venue_id, &w.slot_id, 20, &w.pupils[..2])
        .unwrap();
    assert_eq!(
        t.core.booking(&doc).unwrap().status,
        BookingStatus::Requested
    );
    sync(&t.core).await;
    assert!(server.shared.has_doc(&doc), "the server stored the request");
    server.shared.server_edit(
        doc,
        Edit::Decide {
            status: BookingStatus::Waitlisted,
            wait_position: Some(1),
        },
    );
    sync(&t.core).await;
    let b = t.core.booking(&doc).unwrap();
    assert_eq!(
        (b.status, b.wait_position),
        (BookingStatus::Waitlisted, Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_logs_offline_staff_confirm_and_minutes_add_up() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let v = device(&server, Role::Volunteer, None).await;
    let a1 = v
        .core
        .log_activity(&w.venue_id, "guided_tour", 1, 45, "恐龙展厅讲解")
        .unwrap();
    v.core
        .log_activity(&w.venue_id, "demonstration", 2, 30, "静电演示")
        .unwrap();
    let (_, m) = v.core.volunteer_minutes(None).unwrap();
    assert_eq!((m.unconfirmed, m.activities), (75, 2));
    sync(&v.core).await;
    let log = v.core.own_activity_log().unwrap();
    let staff = device(&server, Role::VenueStaff, None).await;
    staff.core.want(log).unwrap();
    sync(&staff.core).await;
    staff
        .core
        .confirm_activity(log, &a1, true, Some(40))
        .unwrap();
    sync(&staff.core).await;
    sync(&v.core).await;
    let (_, m) = v.core.volunteer_minutes(None).unwrap();
    assert_eq!((m.confirmed, m.unconfirmed), (40, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_wiped_when_it_next_connects() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    let core = open(&server, dir.path());
    let me = core
        .enroll(&server.shared.issue_code(Role::Teacher, None))
        .await
        .unwrap();
    core.want(doc).unwrap();
    sync(&core).await;
    server.shared.revoke(me.device);
    let err = connect_and_sync(&core, Until::Synced, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Revoked), "{err:?}");
    assert!(core.identity().unwrap().is_none());
    assert!(core.status().unwrap().revoked);
    for table in ["documents", "changes", "meta", "sync_states"] {
        assert_eq!(core.store_count(table).unwrap(), 0, "{table} wiped");
    }
    drop(core);
    let reopened = open(&server, dir.path());
    assert!(reopened.identity().unwrap().is_none());
    assert!(matches!(reopened.documents(), Err(Error::NotEnrolled)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_connected_is_wiped_at_once() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let t = teacher_with_booking(&server).await;
    let me = t.core.identity().unwrap().unwrap();
    let core = Arc::clone(&t.core);
    let live = tokio::spawn(async move { connect_and_sync(&core, Until::Stopped, None).await });
    let started = Instant::now();
    while !t.core.connected() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shared.revoke(me.device);
    let result = tokio::time::timeout(Duration::from_secs(10), live)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::Revoked)), "{result:?}");
    assert_eq!(t.core.store_count("changes").unwrap(), 0);
    assert!(t.core.booking(&doc).is_err());
}

/// The status an app shows never has a revoked device connected: the wipe ends the
/// session's connections at once, before their tasks have noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_not_shown_connected_while_its_connection_closes() {
    let server = test_server::start().await.unwrap();
    let t = teacher_with_booking(&server).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_conn, _) = t.core.attach(tx).unwrap();
    assert!(t.core.status().unwrap().connected);
    t.core.wipe_revoked().unwrap();
    let status = t.core.status().unwrap();
    assert!(status.revoked);
    assert!(!status.enrolled, "identity forgotten");
    assert!(!status.connected, "a revoked device is not shown connected");
    assert!(!t.core.connected());
    // The join frame went out first; then the connection is told to close.
    let mut closed = false;
    while let Some(out) = rx.recv().await {
        if matches!(out, kepu_mobile_ffi::client::core::Outbound::Close) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the open connection is told to close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pupil_removed_from_the_roster_drops_the_booking() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let p0 = pupils(&server)[0];
    let pupil = device(&server, Role::Pupil, Some(p0)).await;
    // The revocation list arrives first; its rows stay.
    sync(&pupil.core).await;
    let other_rows = pupil.core.store_count("changes").unwrap();
    pupil.core.want(doc).unwrap();
    sync(&pupil.core).await;
    assert_eq!(pupil.core.my_visits().unwrap().len(), 1);
    assert!(pupil.core.store_count("changes").unwrap() > other_rows);
    server
        .shared
        .server_edit(doc, Edit::RemoveFromRoster { pupil: p0 });
    sync(&pupil.core).await;
    assert!(pupil.core.my_visits().unwrap().is_empty());
    assert_eq!(pupil.core.store_count("changes").unwrap(), other_rows);
}

struct Counter(AtomicU32);

impl DocListener for Counter {
    fn changed(&self, _doc: DocumentId, kind: Option<DocKind>) {
        if kind == Some(DocKind::Booking) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl SyncListener for Counter {
    fn changed(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_hear_changes_until_cancelled() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let t = teacher_with_booking(&server).await;
    let docs = Arc::new(Counter(AtomicU32::new(0)));
    let syncs = Arc::new(Counter(AtomicU32::new(0)));
    let d = t.core.add_doc_listener(docs.clone());
    t.core.add_sync_listener(syncs.clone());
    t.core.scan_pupil_pass(doc, &passes[0]).unwrap();
    assert_eq!(docs.0.load(Ordering::SeqCst), 1);
    assert!(syncs.0.load(Ordering::SeqCst) >= 1);
    t.core.remove_listener(d);
    t.core.scan_pupil_pass(doc, &passes[1]).unwrap();
    assert_eq!(docs.0.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_network_error_and_writes_still_work_offline() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let t = teacher_with_booking(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let key = server.shared.world().server_public_key;
    drop(t.core);
    drop(server);
    let core = Arc::new(Core::open(dir.path(), "http://127.0.0.1:9", Some(&key)).unwrap());
    let err = core.enroll("KEPU-0000").await.unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err:?}");
    let _ = (doc, passes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_key_comes_from_enrollment_and_a_different_pinned_key_is_refused() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    {
        let core = Arc::new(Core::open(dir.path(), &w.url, None).unwrap());
        assert!(core.server_key().is_none());
        core.enroll(&server.shared.issue_code(Role::Teacher, None))
            .await
            .unwrap();
        assert_eq!(core.server_key().unwrap().to_base64(), w.server_public_key);
    }
    // Reopened without a key: the stored one verifies passes.
    let core = Arc::new(Core::open(dir.path(), &w.url, None).unwrap());
    core.want(doc).unwrap();
    sync(&core).await;
    core.scan_pupil_pass(doc, &w.passes[0]).unwrap();

    let other = kepu_sync_core::proof::ServerSigner::from_seed([9; 32]).public();
    let dir = tempfile::tempdir().unwrap();
    let pinned = Core::open(dir.path(), &w.url, Some(&other.to_base64())).unwrap();
    let err = pinned
        .enroll(&server.shared.issue_code(Role::Teacher, None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rejected(ref r) if r == "server_public_key_mismatch"));
    assert!(pinned.identity().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_year_is_logged_offline_by_two_teachers_and_tour_staff_and_merges() {
    use kepu_sync_core::calendar::{china_day_start, china_year, days_from_civil};
    const DAY: i64 = 86_400_000;
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let t1 = device(&server, Role::Teacher, None).await;
    let t2 = device(&server, Role::Teacher, None).await;
    let tour = device(&server, Role::VenueStaff, None).await;
    let pupil = device(&server, Role::Pupil, Some(pupils(&server)[0])).await;
    let now = kepu_mobile_ffi::client::core::now_ms();
    let new_year = china_day_start(days_from_civil(china_year(now), 1, 1));

    // Before its first sync the year's log is not on the phone: a clear error.
    let early = t1
        .core
        .log_science_session("磁铁的秘密", 40, now)
        .unwrap_err();
    assert!(matches!(early, Error::NotSynced("school log")), "{early}");
    // Every device finds the same log without being told its id.
    let doc = t1.core.school_log_doc(None, None).unwrap();
    assert_eq!(t2.core.school_log_doc(None, None).unwrap(), doc);
    assert_eq!(
        tour.core.school_log_doc(Some(&w.school_id), None).unwrap(),
        doc
    );
    assert!(
        tour.core.school_log_doc(None, None).is_err(),
        "tour staff name the school"
    );
    for d in [&t1, &t2, &tour] {
        sync(&d.core).await;
    }

    // Offline from here: two teachers log sessions in weeks 1 and 2 (one each) and a
    // lecture; the tour staff add a stop and scan passes, one pupil twice.
    t1.core
        .log_science_session("磁铁的秘密", 40, new_year + DAY)
        .unwrap();
    t2.core
        .log_science_session("水的循环", 45, new_year + 2 * DAY)
        .unwrap();
    t2.core
        .log_science_session("植物的向光性", 45, new_year + 8 * DAY)
        .unwrap();
    t2.core
        .log_expert_lecture("院士讲航天", 90, new_year + 9 * DAY)
        .unwrap();
    let stop = tour
        .core
        .add_tour_stop(Some(&w.school_id), "学校操场", 3, now)
        .unwrap();
    assert!(
        !tour
            .core
            .record_tour_attendance(Some(&w.school_id), &stop, &w.passes[0])
            .unwrap()
    );
    assert!(
        tour.core
            .record_tour_attendance(Some(&w.school_id), &stop, &w.passes[0])
            .unwrap(),
        "the second scan of a pupil is reported as already recorded"
    );
    tour.core
        .record_tour_attendance(Some(&w.school_id), &stop, &w.passes[1])
        .unwrap();

    // Bad input: refused with a reason, nothing written.
    let mut forged = w.passes[2].clone();
    forged.replace_range(forged.len() - 3.., "AAA");
    assert!(
        tour.core
            .record_tour_attendance(Some(&w.school_id), &stop, &forged)
            .is_err()
    );
    assert!(
        tour.core
            .record_tour_attendance(Some(&w.school_id), "no-such-stop", &w.passes[2])
            .is_err()
    );
    assert!(t1.core.log_science_session("", 40, now).is_err());
    assert!(t1.core.log_science_session("x", 0, now).is_err());
    assert!(tour.core.log_science_session("x", 40, now).is_err());
    assert!(pupil.core.add_tour_stop(None, "教室", 1, now).is_err());

    for d in [&t1, &t2, &tour, &t1, &t2] {
        sync(&d.core).await;
    }
    for d in [&t1, &t2] {
        let y = d.core.school_year(None, None).unwrap();
        assert_eq!(y.doc, doc);
        assert_eq!(
            (
                y.sessions,
                y.weeks_with_session,
                y.lectures,
                y.tour_stops,
                y.pupils_reached
            ),
            (3, 2, 1, 1, 2),
            "{y:?}"
        );
        assert!(y.weeks_so_far >= 1);
    }
}

/// A TCP proxy in front of `upstream` that drops the `Authorization` header from the
/// first request of every connection (a misconfigured reverse proxy) and passes the rest
/// through unchanged.
async fn header_stripping_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let stripped: String = text
                    .split_inclusive("\r\n")
                    .filter(|line| !line.to_ascii_lowercase().starts_with("authorization:"))
                    .collect();
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                if server.write_all(stripped.as_bytes()).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

/// A teacher's phone that holds the booking and has scanned `n` passes offline.
async fn teacher_with_offline_scans(server: &TestServer, dir: &std::path::Path, n: usize) {
    let doc = booking_doc(server);
    let passes = server.shared.world().passes;
    let core = open(server, dir);
    core.enroll(&server.shared.issue_code(Role::Teacher, None))
        .await
        .unwrap();
    core.want(doc).unwrap();
    sync(&core).await;
    for pass in &passes[..n] {
        core.scan_pupil_pass(doc, pass).unwrap();
    }
    assert_eq!(core.status().unwrap().pending_changes, n as u64);
}

/// The phone's data after an auth failure: identity, check-ins and pending changes.
fn assert_kept(core: &Core, doc: DocumentId, scans: usize) {
    assert!(core.identity().unwrap().is_some(), "the identity is kept");
    assert!(!core.status().unwrap().revoked);
    assert_eq!(core.roster(&doc).unwrap().1.arrived, scans);
    assert_eq!(core.status().unwrap().pending_changes, scans as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_drops_the_token_is_an_auth_error_and_every_check_in_stays() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    teacher_with_offline_scans(&server, dir.path(), 3).await;
    let proxy = header_stripping_proxy(server.addr).await;
    let w = server.shared.world();
    let core = Arc::new(
        Core::open(
            dir.path(),
            &format!("http://{proxy}"),
            Some(&w.server_public_key),
        )
        .unwrap(),
    );
    for _ in 0..2 {
        let err = connect_and_sync(&core, Until::Synced, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Auth(code) if code == "missing_token"),
            "{err:?}"
        );
        assert_kept(&core, doc, 3);
    }
    // Background sync reports it and keeps retrying; nothing is wiped.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let bg = tokio::spawn(kepu_mobile_ffi::client::net::background(
        Arc::clone(&core),
        stopped,
    ));
    let started = Instant::now();
    while core.status().unwrap().last_error.is_none() && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = core.status().unwrap();
    assert!(status.last_error.unwrap().contains("missing_token"));
    stop.send(true).unwrap();
    bg.await.unwrap();
    assert_kept(&core, doc, 3);
    // The same store through the real address syncs everything.
    drop(core);
    let core = open(&server, dir.path());
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
    let t = teacher_with_booking(&server).await;
    assert_eq!(t.core.roster(&doc).unwrap().1.arrived, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_know_the_token_is_an_auth_error_and_every_check_in_stays() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    teacher_with_offline_scans(&server, dir.path(), 2).await;
    // Another server (as one restored from a backup older than this enrollment).
    let other = test_server::start().await.unwrap();
    let core = Arc::new(
        Core::open(
            dir.path(),
            &other.shared.world().url,
            Some(&server.shared.world().server_public_key),
        )
        .unwrap(),
    );
    let err = connect_and_sync(&core, Until::Synced, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Auth(code) if code == "invalid_token"),
        "{err:?}"
    );
    assert_kept(&core, doc, 2);
    drop(core);
    let core = open(&server, dir.path());
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
}

/// Child half of the cross-process lock test: opens the store in `KEPU_LOCK_DIR`, prints
/// `IN-USE` or `OPENED`, and (when opened) holds it until stdin closes.
#[test]
#[ignore = "run by the store lock tests"]
fn store_lock_child() {
    let Ok(dir) = std::env::var("KEPU_LOCK_DIR") else {
        return;
    };
    match Core::open(std::path::Path::new(&dir), "http://127.0.0.1:9", None) {
        Err(Error::StoreInUse) => println!("IN-USE"),
        Err(e) => println!("ERROR {e}"),
        Ok(core) => {
            println!("OPENED");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(core);
        }
    }
}

fn lock_child(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store_lock_child", "--ignored", "--nocapture"])
        .env("KEPU_LOCK_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let answer = lines
        .by_ref()
        .map_while(std::result::Result::ok)
        .find(|l| l == "IN-USE" || l == "OPENED" || l.starts_with("ERROR"))
        .unwrap_or_default();
    (child, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_store_in_the_same_process_is_refused() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let dir = tempfile::tempdir().unwrap();
    teacher_with_offline_scans(&server, dir.path(), 1).await;
    let first = open(&server, dir.path());
    let w = server.shared.world();
    let second = Core::open(dir.path(), &w.url, None);
    assert!(matches!(second, Err(Error::StoreInUse)), "{second:?}");
    assert!(matches!(Store::open(dir.path()), Err(Error::StoreInUse)));
    // The first client is untouched and keeps writing.
    first.scan_pupil_pass(doc, &passes[1]).unwrap();
    drop(first);
    let again = open(&server, dir.path());
    assert_eq!(again.roster(&doc).unwrap().1.arrived, 2);
}

#[test]
fn a_store_let_go_while_another_open_waits_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let held = Store::open(dir.path()).unwrap();
    // The holder lets go a moment later (a dropped client whose last task is ending).
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let started = Instant::now();
    let opened = Store::open(dir.path());
    holder.join().unwrap();
    assert!(opened.is_ok(), "{opened:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Held for good: refused once the wait is over, not before.
    let _kept = opened.unwrap();
    let started = Instant::now();
    assert!(matches!(Store::open(dir.path()), Err(Error::StoreInUse)));
    assert!(started.elapsed() >= kepu_mobile_ffi::client::store::OPEN_WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_open_in_another_process_is_refused_until_that_process_ends() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    teacher_with_offline_scans(&server, dir.path(), 2).await;

    // This process holds it: the other one is refused.
    let core = open(&server, dir.path());
    let (mut child, answer) = lock_child(dir.path());
    assert_eq!(answer, "IN-USE");
    let _ = child.wait();
    drop(core);

    // The other process holds it: this one is refused, until it is killed.
    let (mut child, answer) = lock_child(dir.path());
    assert_eq!(answer, "OPENED");
    let w = server.shared.world();
    let refused = Core::open(dir.path(), &w.url, None);
    assert!(matches!(refused, Err(Error::StoreInUse)), "{refused:?}");
    child.kill().unwrap();
    let _ = child.wait();
    let core = open(&server, dir.path());
    assert_eq!(core.roster(&doc).unwrap().1.arrived, 2);
}

/// Copies the store files of `from` into a new directory (a backup restored elsewhere).
pub fn copy_store(from: &std::path::Path) -> TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("kepu.sqlite3") && !name.ends_with(".lock") {
            std::fs::copy(entry.path(), to.path().join(&name)).unwrap();
        }
    }
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_one_store_both_scan_offline_and_every_check_in_reaches_the_server() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let dir_a = tempfile::tempdir().unwrap();
    // One scan synced before the copy, so both copies continue the same history.
    teacher_with_offline_scans(&server, dir_a.path(), 1).await;
    sync(&open(&server, dir_a.path())).await;
    let dir_b = copy_store(dir_a.path());
    let a = open(&server, dir_a.path());
    let b = open(&server, dir_b.path());
    a.scan_pupil_pass(doc, &passes[1]).unwrap();
    b.scan_pupil_pass(doc, &passes[2]).unwrap();
    b.scan_pupil_pass(doc, &passes[3]).unwrap();
    for _ in 0..2 {
        sync(&a).await;
        sync(&b).await;
    }
    for core in [&a, &b] {
        let status = core.status().unwrap();
        assert_eq!(status.pending_changes, 0, "{status:?}");
        assert!(status.refusals.is_empty(), "{:?}", status.refusals);
        assert_eq!(core.roster(&doc).unwrap().1.arrived, 4);
    }
    let t = teacher_with_booking(&server).await;
    assert_eq!(
        t.core.roster(&doc).unwrap().1.arrived,
        4,
        "the server has all four"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_made_before_a_reopen_is_kept_aside_when_access_is_lost() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let p0 = pupils(&server)[0];
    let dir = tempfile::tempdir().unwrap();
    {
        let core = open(&server, dir.path());
        core.enroll(&server.shared.issue_code(Role::Pupil, Some(p0)))
            .await
            .unwrap();
        core.want(doc).unwrap();
        sync(&core).await;
        core.check_in_with_gate_code(doc, &server.shared.gate_code())
            .unwrap();
    }
    // Reopened (a new actor id), then removed from the roster before it syncs.
    let core = open(&server, dir.path());
    server
        .shared
        .server_edit(doc, Edit::RemoveFromRoster { pupil: p0 });
    sync(&core).await;
    assert!(core.my_visits().unwrap().is_empty());
    let status = core.status().unwrap();
    assert_eq!(status.pending_changes, 0);
    assert_eq!(status.refusals.len(), 1, "{:?}", status.refusals);
    assert_eq!(
        (status.refusals[0].code.as_str(), status.refusals[0].changes),
        ("access-lost", 1),
        "the check-in is kept aside, not dropped"
    );
}

#[test]
fn a_lost_document_keeps_unacknowledged_changes_aside_even_after_compaction() {
    use kepu_sync_core::engine::{StorageTask, StoredChange};
    let mut store = Store::in_memory().unwrap();
    let doc = DocumentId::from_uuid(uuid::Uuid::from_u128(7));
    let mut d = automerge::AutoCommit::new();
    let mut changes = Vec::new();
    for i in 0..3_i64 {
        automerge::transaction::Transactable::put(&mut d, automerge::ROOT, "n", i).unwrap();
        let c = d.get_last_local_change().unwrap().clone();
        changes.push(StoredChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        });
    }
    let heads = d.get_heads();
    let append = StorageTask::Append {
        doc,
        kind: None,
        changes: changes.clone(),
        heads: heads.clone(),
        owners: Vec::new(),
    };
    assert!(matches!(
        store.run(&append, true, 1),
        kepu_sync_core::engine::IoResult::Done
    ));
    // Two of the three rows are folded into a snapshot.
    let compact = StorageTask::Compact {
        doc,
        snapshot: d.save(),
        heads,
        delete: changes[..2].iter().map(|c| c.hash).collect(),
        replaces: None,
    };
    store.run(&compact, false, 2);
    assert_eq!(store.pending_changes().unwrap(), 3);
    store.run(&StorageTask::Forget { doc }, false, 3);
    assert_eq!(store.pending_changes().unwrap(), 0);
    let refusals = store.refusals().unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!(
        (refusals[0].code.as_str(), refusals[0].changes),
        ("access-lost", 3)
    );
    assert_eq!(store.count("changes").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_revoked_on_the_server_is_refused_once_the_list_has_synced() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let passes = server.shared.world().passes;
    let t = teacher_with_booking(&server).await;
    // The list is read (and kept) by the first scan.
    t.core.scan_pupil_pass(doc, &passes[0]).unwrap();
    server.shared.revoke_pass(pupils(&server)[1], 1);
    // Offline, the phone cannot know yet.
    t.core.scan_pupil_pass(doc, &passes[2]).unwrap();
    sync(&t.core).await;
    let err = t.core.scan_pupil_pass(doc, &passes[1]).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    // Other passes still scan.
    assert!(t.core.scan_pupil_pass(doc, &passes[3]).is_ok());
    let (_, a) = t.core.roster(&doc).unwrap();
    assert_eq!(a.arrived, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_compacted_while_idle_survive_a_reopen() {
    let server = test_server::start().await.unwrap();
    let doc = booking_doc(&server);
    let dir = tempfile::tempdir().unwrap();
    let n: u64 = 100;
    {
        let core = open(&server, dir.path());
        core.enroll(&server.shared.issue_code(Role::Teacher, None))
            .await
            .unwrap();
        core.want(doc).unwrap();
        sync(&core).await;
        let rows_before = core.store_count("changes").unwrap();
        for _ in 0..n {
            let pass = server
                .shared
                .pass_for(PupilId(uuid::Uuid::from_bytes(random())));
            core.scan_pupil_pass(doc, &pass).unwrap();
        }
        // Each check-in is its own row: no scan waited for a compaction.
        assert_eq!(core.store_count("changes").unwrap(), rows_before + n);
        core.maintain().unwrap();
        assert!(
            core.store_count("changes").unwrap() < 5,
            "compacted when idle"
        );
    }
    let core = open(&server, dir.path());
    assert_eq!(
        core.booking(&doc).unwrap().check_ins.len(),
        usize::try_from(n).unwrap()
    );
    assert_eq!(core.status().unwrap().pending_changes, n);
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
}
