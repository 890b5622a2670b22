//! The library as an app lives with it, through the `KepuClient` the bindings wrap:
//! observers (an initial value, coalesced, on their own thread), a cancelled sync that
//! stops, signing out without losing work, the app's log sink, a store written by the
//! previous version of the library, an app killed while enrolling.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kepu_mobile_ffi::api::{
    ApiError, DocumentKind, DocumentObserver, KepuClient, SyncObserver, SyncStatus,
};
use kepu_mobile_ffi::client::core::random;
use kepu_mobile_ffi::logging::{LogLevel, LogSink, set_log_sink};
use kepu_mobile_ffi::test_server::{self, TestServer};
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::writer::Role as CoreRole;
use tempfile::TempDir;

struct Phone {
    client: Arc<KepuClient>,
    dir: TempDir,
}

fn open_at(server: &TestServer, dir: &std::path::Path) -> Arc<KepuClient> {
    let w = server.shared.world();
    KepuClient::open(
        dir.to_string_lossy().into_owned(),
        w.url,
        Some(w.server_public_key),
    )
    .unwrap()
}

async fn teacher_with_booking(server: &TestServer) -> Phone {
    let dir = tempfile::tempdir().unwrap();
    let client = open_at(server, dir.path());
    client
        .enroll(server.shared.issue_code(CoreRole::Teacher, None))
        .await
        .unwrap();
    client
        .add_document(server.shared.world().booking_doc)
        .unwrap();
    client.sync_now().await.unwrap();
    Phone { client, dir }
}

/// A pass of a pupil not on the roster (a walk-in: counted, shown as an anomaly).
fn walk_in(server: &TestServer) -> String {
    server
        .shared
        .pass_for(PupilId(uuid::Uuid::from_bytes(random())))
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an observer heard, and on which thread.
#[derive(Default)]
struct Heard {
    statuses: Mutex<Vec<SyncStatus>>,
    docs: Mutex<Vec<(String, Option<DocumentKind>)>>,
    threads: Mutex<Vec<String>>,
}

impl Heard {
    fn thread(&self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.threads.lock().unwrap().push(name);
    }
    fn statuses(&self) -> Vec<SyncStatus> {
        self.statuses.lock().unwrap().clone()
    }
    fn docs(&self) -> Vec<(String, Option<DocumentKind>)> {
        self.docs.lock().unwrap().clone()
    }
}

impl SyncObserver for Heard {
    fn on_sync_status(&self, status: SyncStatus) -> Result<(), ApiError> {
        self.thread();
        self.statuses.lock().unwrap().push(status);
        Ok(())
    }
}

impl DocumentObserver for Heard {
    fn on_document_changed(
        &self,
        doc_id: String,
        kind: Option<DocumentKind>,
    ) -> Result<(), ApiError> {
        self.thread();
        self.docs.lock().unwrap().push((doc_id, kind));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_get_the_current_value_then_coalesced_changes_on_their_own_thread() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    let heard = Arc::new(Heard::default());
    let sync = teacher.client.observe_sync(heard.clone()).unwrap();
    let docs = teacher.client.observe_documents(heard.clone()).unwrap();

    // The initial value: the status as it is, every document held.
    until("the initial status", || !heard.statuses().is_empty()).await;
    let first = &heard.statuses()[0];
    assert!(first.enrolled && first.last_sync_ms.is_some() && first.pending_changes == 0);
    until("the held documents", || heard.docs().len() >= 2).await;
    let held: Vec<String> = heard.docs().into_iter().map(|(d, _)| d).collect();
    assert!(held.contains(&w.booking_doc), "{held:?}");
    assert!(held.contains(&w.revocations_doc), "{held:?}");

    // A burst of scans: each call carries the latest, far fewer calls than scans.
    let (statuses_before, docs_before) = (heard.statuses().len(), heard.docs().len());
    let scans = 60;
    let started = Instant::now();
    for _ in 0..scans {
        teacher
            .client
            .scan_pupil_pass(w.booking_doc.clone(), walk_in(&server))
            .unwrap();
    }
    let took_ms = u128::max(started.elapsed().as_millis(), 1);
    until("the status after the burst", || {
        heard
            .statuses()
            .last()
            .is_some_and(|s| s.pending_changes == scans)
    })
    .await;
    let status_calls = heard.statuses().len() - statuses_before;
    let doc_calls = heard.docs().len() - docs_before;
    // At most one call per 50 ms (and one for what came after the last scan).
    let bound = usize::try_from(took_ms / 50 + 3).unwrap();
    assert!(
        status_calls <= bound && status_calls < 60,
        "{status_calls} status calls for {scans} scans in {took_ms} ms"
    );
    assert!(
        (1..=bound).contains(&doc_calls) && doc_calls < 60,
        "{doc_calls} document calls for {scans} scans in {took_ms} ms"
    );
    // Never on the caller's thread: on the library's observer threads.
    let threads = heard.threads.lock().unwrap().clone();
    assert!(threads.iter().all(|t| t == "kepu-observer"), "{threads:?}");

    // Cancelled: nothing more.
    sync.cancel();
    docs.cancel();
    let (s, d) = (heard.statuses().len(), heard.docs().len());
    teacher
        .client
        .scan_pupil_pass(w.booking_doc.clone(), walk_in(&server))
        .unwrap();
    teacher.client.sync_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((heard.statuses().len(), heard.docs().len()), (s, d));
}

/// An observer whose callback blocks until the test opens its gate.
struct Stuck {
    gate: Mutex<bool>,
    opened: Condvar,
    calls: Mutex<u32>,
}

impl SyncObserver for Stuck {
    fn on_sync_status(&self, _status: SyncStatus) -> Result<(), ApiError> {
        *self.calls.lock().unwrap() += 1;
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_stuck_in_its_callback_holds_up_no_check_in() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    let stuck = Arc::new(Stuck {
        gate: Mutex::new(false),
        opened: Condvar::new(),
        calls: Mutex::new(0),
    });
    let handle = teacher.client.observe_sync(stuck.clone()).unwrap();
    until("the callback to start", || {
        *stuck.calls.lock().unwrap() == 1
    })
    .await;
    // The app's callback hangs; check-ins and reads go on.
    for _ in 0..5 {
        teacher
            .client
            .scan_pupil_pass(w.booking_doc.clone(), walk_in(&server))
            .unwrap();
    }
    assert_eq!(teacher.client.sync_status().unwrap().pending_changes, 5);
    *stuck.gate.lock().unwrap() = true;
    stuck.opened.notify_all();
    // The five scans arrive as one more call at most... and then some: coalesced.
    until("the callback after the gate opened", || {
        *stuck.calls.lock().unwrap() == 2
    })
    .await;
    handle.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sync_closes_its_connection() {
    let server = test_server::start().await.unwrap();
    let teacher = teacher_with_booking(&server).await;
    let dir = teacher.dir;
    drop(teacher.client);

    // A server that takes the websocket and then says nothing (a stalled link).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                // Read (never answer) until the phone goes.
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                }
                let _ = closed_tx.send(());
            });
        }
    });
    let client = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        format!("http://{addr}"),
        None,
    )
    .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), client.sync_now()).await;
    assert!(cancelled.is_err(), "the stalled sync was cut short");
    // The phone closes the connection at once, not after its 15 s quiet limit.
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the cancelled sync kept its connection open")
        .unwrap();
    until("the status to show no connection", || {
        !client.sync_status().unwrap().connected
    })
    .await;

    // Cancelled while still connecting (the server accepts TCP and never answers).
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = black_hole.local_addr().unwrap();
    drop(client);
    // The cancelled sync's task holds the store until it has seen the cancel and ended, a
    // moment after the drop on a loaded machine: the reopen waits for it.
    let client = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        format!("http://{hole_addr}"),
        None,
    )
    .expect("reopening the store right after dropping its client");
    // Cancelled once its connection is open and waiting for the server's answer (a
    // timeout alone could cancel it before it connects, on a loaded machine, and leave
    // nothing to accept).
    let hole = tokio::task::spawn_blocking(move || black_hole.accept().map(|(s, _)| s));
    let mut sync = Box::pin(client.sync_now());
    let mut socket = tokio::select! {
        r = &mut sync => panic!("the sync to a silent server ended: {r:?}"),
        s = tokio::time::timeout(Duration::from_secs(10), hole) => {
            s.expect("the phone never connected").unwrap().unwrap()
        }
    };
    drop(sync);
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    // EOF (the phone dropped the attempt) before the read timeout.
    socket
        .read_to_end(&mut buf)
        .expect("the cancelled connect was not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_keeps_unsynced_check_ins_and_clears_the_store_once_synced() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    teacher.client.start_background_sync().unwrap();
    teacher.client.stop_background_sync();
    for pass in &w.passes[..2] {
        teacher
            .client
            .scan_pupil_pass(w.booking_doc.clone(), pass.clone())
            .unwrap();
    }
    // Not synced: refused, nothing touched.
    let err = teacher.client.sign_out().await.unwrap_err();
    assert!(
        matches!(err, ApiError::UnsyncedWork { pending: 2 }),
        "{err:?}"
    );
    assert!(teacher.client.identity().is_some());
    assert_eq!(
        teacher
            .client
            .roster(w.booking_doc.clone())
            .unwrap()
            .arrived,
        2
    );
    assert_eq!(teacher.client.sync_status().unwrap().pending_changes, 2);

    // Synced: the store is emptied and the next user enrolls on the same install.
    teacher.client.sync_now().await.unwrap();
    teacher.client.sign_out().await.unwrap();
    assert!(teacher.client.identity().is_none());
    assert!(matches!(
        teacher.client.documents(),
        Err(ApiError::NotEnrolled)
    ));
    let core = teacher.client.core();
    for table in ["documents", "changes", "pending", "meta", "sync_states"] {
        assert_eq!(core.store_count(table).unwrap(), 0, "{table} left behind");
    }
    let status = teacher.client.sync_status().unwrap();
    assert!(!status.enrolled && !status.revoked);
    assert!(matches!(
        teacher.client.sign_out().await,
        Err(ApiError::NotEnrolled)
    ));

    // The server has both check-ins: another teacher's phone sees them.
    let other = teacher_with_booking(&server).await;
    assert_eq!(
        other.client.roster(w.booking_doc.clone()).unwrap().arrived,
        2
    );

    // Switch user: a pupil enrolls on the signed-out install and syncs.
    let pupil: PupilId = w.pupils[0].parse().unwrap();
    let me = teacher
        .client
        .enroll(server.shared.issue_code(CoreRole::Pupil, Some(pupil)))
        .await
        .unwrap();
    assert_eq!(me.pupil_id, Some(w.pupils[0].clone()));
    teacher.client.add_document(w.booking_doc.clone()).unwrap();
    teacher.client.sync_now().await.unwrap();
    assert_eq!(teacher.client.my_visits().unwrap().len(), 1);
}

/// Lines the app's sink got, with the thread they came on.
#[derive(Default)]
struct Lines(Mutex<Vec<(LogLevel, String, String, String)>>);

impl LogSink for Lines {
    fn log(&self, level: LogLevel, target: String, message: String) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .lock()
            .unwrap()
            .push((level, target, message, thread));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_the_apps_sink_on_the_log_thread_without_personal_data() {
    let lines = Arc::new(Lines::default());
    set_log_sink(Some(lines.clone()), LogLevel::Debug).unwrap();
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    let token = teacher.client.core().require_identity().unwrap().token;
    for pass in &w.passes {
        teacher
            .client
            .scan_pupil_pass(w.booking_doc.clone(), pass.clone())
            .unwrap();
    }
    teacher.client.sync_now().await.unwrap();
    teacher.client.sign_out().await.unwrap();
    // A revoked device logs its wipe.
    let revoked = teacher_with_booking(&server).await;
    let device = revoked.client.core().require_identity().unwrap().device;
    server.shared.revoke(device);
    let _ = revoked.client.sync_now().await;
    until("the sign-out and the revocation in the log", || {
        let l = lines.0.lock().unwrap();
        l.iter().any(|(_, _, m, _)| m.contains("signed out"))
            && l.iter()
                .any(|(level, _, m, _)| *level == LogLevel::Warn && m.contains("revoked"))
    })
    .await;
    let got = lines.0.lock().unwrap().clone();
    for (level, target, message, thread) in &got {
        assert_eq!(thread, "kepu-log", "{message}");
        // Other libraries' lines only when they warn.
        assert!(
            target.starts_with("kepu_") || *level <= LogLevel::Warn,
            "{target} {message}"
        );
        let text = format!("{target} {message}");
        assert!(!text.contains(&token), "a token in the log: {text}");
        for secret in w.pupils.iter().chain(&w.passes) {
            assert!(
                !text.contains(secret.as_str()),
                "a pupil in the log: {text}"
            );
        }
    }
    // Below the level: nothing; no sink: nothing.
    set_log_sink(Some(lines.clone()), LogLevel::Error).unwrap();
    let before = lines.0.lock().unwrap().len();
    let again = teacher_with_booking(&server).await;
    again.client.sign_out().await.unwrap();
    set_log_sink(None, LogLevel::Trace).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = lines.0.lock().unwrap().clone();
    assert!(
        after[before..].iter().all(|(l, ..)| *l == LogLevel::Error),
        "{:?}",
        &after[before..]
    );
}

/// Where the store written by the previous version of the library is kept.
fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// Writes the fixture: a teacher's store holding the booking with three check-ins, two
/// of them never synced. Run once by hand on the version whose store it records:
/// `cargo test -p kepu-mobile-ffi --test app -- --ignored write_store_fixture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures/store-v1; run by hand when a store version ships"]
async fn write_store_fixture() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    teacher
        .client
        .scan_pupil_pass(w.booking_doc.clone(), w.passes[0].clone())
        .unwrap();
    teacher.client.sync_now().await.unwrap();
    for pass in &w.passes[1..3] {
        teacher
            .client
            .scan_pupil_pass(w.booking_doc.clone(), pass.clone())
            .unwrap();
    }
    let dir = teacher.dir;
    drop(teacher.client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = fixture_dir();
    std::fs::create_dir_all(&out).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("kepu.sqlite3")).unwrap();
    conn.execute_batch("VACUUM;").unwrap();
    let _ = std::fs::remove_file(out.join("kepu.sqlite3"));
    conn.execute(
        "VACUUM INTO ?1",
        [out.join("kepu.sqlite3").to_string_lossy().as_ref()],
    )
    .unwrap();
    std::fs::write(
        out.join("booking.txt"),
        format!("{}\n{}\n", w.booking_doc, w.pupils[3]),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_the_previous_version_opens_with_its_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("kepu.sqlite3"),
        dir.path().join("kepu.sqlite3"),
    )
    .unwrap();
    let facts = std::fs::read_to_string(fixture_dir().join("booking.txt")).unwrap();
    let mut facts = facts.lines();
    let (booking, absent) = (facts.next().unwrap(), facts.next().unwrap());
    // Its server is gone: open for a server that is not there, with the stored key.
    let client = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        "http://127.0.0.1:9".into(),
        None,
    )
    .unwrap();
    assert_eq!(
        client
            .core()
            .meta("server_public_key")
            .unwrap()
            .map(|k| k.len()),
        Some(43)
    );
    let me = client.identity().expect("the enrolled identity is kept");
    assert_eq!(me.role, kepu_mobile_ffi::api::Role::Teacher);
    let roster = client.roster(booking.to_owned()).unwrap();
    assert_eq!((roster.expected, roster.arrived), (4, 3));
    assert!(roster.missing.contains(&absent.to_owned()));
    assert_eq!(client.sync_status().unwrap().pending_changes, 2);
    // It writes on: a check-out, offline.
    client
        .check_out(booking.to_owned(), Some(roster.pupils[0].pupil_id.clone()))
        .unwrap();
    assert_eq!(client.sync_status().unwrap().pending_changes, 3);
    assert_eq!(client.roster(booking.to_owned()).unwrap().left, 1);
    drop(client);
    let store = kepu_mobile_ffi::client::store::Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
}

/// Child half of the enrollment kill test: opens the store and enrolls, saying when the
/// request goes out and when it came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_app_killed_while_enrolling_is_enrolled_whole_or_not_at_all"]
async fn enroll_child() {
    let (Ok(dir), Ok(url), Ok(code)) = (
        std::env::var("KEPU_ENROLL_DIR"),
        std::env::var("KEPU_ENROLL_URL"),
        std::env::var("KEPU_ENROLL_CODE"),
    ) else {
        return;
    };
    let client = KepuClient::open(dir, url, None).unwrap();
    println!("SENDING");
    client.enroll(code).await.unwrap();
    println!("ENROLLED");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn enroll_and_kill(server: &TestServer, dir: &std::path::Path, after: &str) -> String {
    let code = server.shared.issue_code(CoreRole::Teacher, None);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "enroll_child", "--ignored", "--nocapture"])
        .env("KEPU_ENROLL_DIR", dir)
        .env("KEPU_ENROLL_URL", server.shared.world().url)
        .env("KEPU_ENROLL_CODE", &code)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.trim() == after => break,
            Some(Ok(_)) => {}
            other => panic!("the child ended early: {other:?}"),
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_killed_while_enrolling_is_enrolled_whole_or_not_at_all() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    // Killed while the server is answering: not enrolled, nothing half written; a new
    // code enrolls.
    server.shared.set_enroll_delay(1_000);
    let dir = tempfile::tempdir().unwrap();
    enroll_and_kill(&server, dir.path(), "SENDING");
    let client = open_at(&server, dir.path());
    assert!(client.identity().is_none());
    for table in ["documents", "meta", "pending", "changes"] {
        assert_eq!(client.core().store_count(table).unwrap(), 0, "{table}");
    }
    server.shared.set_enroll_delay(0);
    client
        .enroll(server.shared.issue_code(CoreRole::Teacher, None))
        .await
        .unwrap();
    drop(client);

    // Killed once enrollment returned: enrolled with all of it.
    let dir = tempfile::tempdir().unwrap();
    enroll_and_kill(&server, dir.path(), "ENROLLED");
    let client = open_at(&server, dir.path());
    assert_eq!(
        client.identity().map(|i| i.role),
        Some(kepu_mobile_ffi::api::Role::Teacher)
    );
    let held: Vec<String> = client
        .documents()
        .unwrap()
        .into_iter()
        .map(|d| d.doc_id)
        .collect();
    assert!(held.contains(&w.revocations_doc), "{held:?}");
    client.add_document(w.booking_doc.clone()).unwrap();
    client.sync_now().await.unwrap();
    assert_eq!(client.roster(w.booking_doc).unwrap().expected, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kepu.sqlite3");
    std::fs::copy(fixture_dir().join("kepu.sqlite3"), &file).unwrap();
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        "http://127.0.0.1:9".into(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ApiError::Storage { reason } if reason.contains("newer")),
        "{err:?}"
    );
    // Nothing migrated or dropped: the newer app still finds its version and its work.
    let conn = rusqlite::Connection::open(&file).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let pending: i64 = conn
        .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
        .unwrap();
    assert_eq!((version, pending), (99, 2));
}

/// An observer that cancels itself from inside its first callback.
struct CancelsItself {
    handle: Mutex<Option<Arc<kepu_mobile_ffi::api::ObserverHandle>>>,
    calls: Mutex<u32>,
}

impl SyncObserver for CancelsItself {
    fn on_sync_status(&self, _status: SyncStatus) -> Result<(), ApiError> {
        *self.calls.lock().unwrap() += 1;
        if let Some(h) = self.handle.lock().unwrap().as_ref() {
            h.cancel();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_may_cancel_itself_from_its_callback() {
    let server = test_server::start().await.unwrap();
    let w = server.shared.world();
    let teacher = teacher_with_booking(&server).await;
    let observer = Arc::new(CancelsItself {
        handle: Mutex::new(None),
        calls: Mutex::new(0),
    });
    // Hold the first delivery until the handle is in place.
    let handle = {
        let mut slot = observer.handle.lock().unwrap();
        let handle = teacher.client.observe_sync(observer.clone()).unwrap();
        *slot = Some(handle.clone());
        handle
    };
    until("the first call", || *observer.calls.lock().unwrap() == 1).await;
    teacher
        .client
        .scan_pupil_pass(w.booking_doc.clone(), walk_in(&server))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *observer.calls.lock().unwrap(),
        1,
        "called after cancelling"
    );
    // Cancelling again, from outside, is harmless.
    handle.cancel();
}
