//! The errors an app sees (`ApiError`, `ApiException` in Kotlin), one per thing it does
//! differently, through the same `KepuClient` the bindings wrap.

use std::sync::Arc;

use kepu_mobile_ffi::api::{ApiError, BookingStatus, DocumentKind, KepuClient, Role};
use kepu_mobile_ffi::client::core::{now_ms, random};
use kepu_mobile_ffi::test_server::{self, TestServer};
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::writer::Role as CoreRole;
use tempfile::TempDir;

struct Phone {
    client: Arc<KepuClient>,
    _dir: TempDir,
}

fn open(server: &TestServer) -> Phone {
    let dir = tempfile::tempdir().unwrap();
    let w = server.shared.world();
    let client = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        w.url,
        Some(w.server_public_key),
    )
    .unwrap();
    Phone { client, _dir: dir }
}

async fn enrolled(server: &TestServer, role: CoreRole, pupil: Option<PupilId>) -> Phone {
    let phone = open(server);
    let identity = phone
        .client
        .enroll(server.shared.issue_code(role, pupil))
        .await
        .unwrap();
    assert_eq!(identity.role, Role::from(role));
    phone
}

async fn with_booking(server: &TestServer, role: CoreRole, pupil: Option<PupilId>) -> Phone {
    let phone = enrolled(server, role, pupil).await;
    phone
        .client
        .add_document(server.shared.world().booking_doc)
        .unwrap();
    phone.client.sync_now().await.unwrap();
    phone
}

fn first_pupil(server: &TestServer) -> PupilId {
    server.shared.world().pupils[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_statuses_and_kinds_are_enums() {
    let server = test_server::start().await.unwrap();
    let teacher = with_booking(&server, CoreRole::Teacher, None).await;
    let w = server.shared.world();
    assert_eq!(teacher.client.identity().unwrap().role, Role::Teacher);
    let booking = teacher.client.booking(w.booking_doc).unwrap();
    assert_eq!(booking.status, BookingStatus::Confirmed);
    let kinds: Vec<Option<DocumentKind>> = teacher
        .client
        .documents()
        .unwrap()
        .into_iter()
        .map(|d| d.kind)
        .collect();
    assert!(kinds.contains(&Some(DocumentKind::Booking)), "{kinds:?}");
    assert!(
        kinds.contains(&Some(DocumentKind::Revocations)),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scan_names_the_rule_and_where() {
    let server = test_server::start().await.unwrap();
    let pupil = with_booking(&server, CoreRole::Pupil, Some(first_pupil(&server))).await;
    let w = server.shared.world();
    let err = pupil
        .client
        .scan_pupil_pass(w.booking_doc.clone(), w.passes[1].clone())
        .unwrap_err();
    match err {
        ApiError::Refused { code, path } => {
            assert_eq!(code, "not-own-pupil");
            assert!(path.starts_with("check_in_records/"), "{path}");
            assert!(!path.contains(&w.passes[1][5..20]), "no pass in the path");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_whose_clock_is_ten_minutes_ahead_is_clock_skew_with_the_offset() {
    let server = test_server::start().await.unwrap();
    let pupil = with_booking(&server, CoreRole::Pupil, Some(first_pupil(&server))).await;
    let w = server.shared.world();
    let ahead = 10 * 60 * 1000;
    let code = server.shared.gate_code_at(now_ms() + ahead);
    let err = pupil
        .client
        .check_in_with_gate_code(w.booking_doc.clone(), code)
        .unwrap_err();
    match err {
        ApiError::ClockSkew { offset_ms } => {
            assert!((offset_ms - ahead).abs() <= 30_000, "{offset_ms}");
        }
        other => panic!("expected ClockSkew, got {other:?}"),
    }
    // A forged code stays invalid input, whatever its time.
    let mut forged = server.shared.gate_code_at(now_ms() + ahead);
    forged.replace_range(40..41, if &forged[40..41] == "A" { "B" } else { "A" });
    let err = pupil
        .client
        .check_in_with_gate_code(w.booking_doc, forged)
        .unwrap_err();
    assert!(matches!(err, ApiError::InvalidInput { .. }), "{err:?}");
    assert_eq!(pupil.client.sync_status().unwrap().pending_changes, 0);
}

/// A gate whose clock has passed midnight (UTC) before the phone's does shows a code of
/// tomorrow, under tomorrow's certificate: the phone tells the skew, not a forgery. (The
/// test above, run in the last minutes of a UTC day, is this case too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_clock_ahead_past_midnight_is_clock_skew_not_invalid_input() {
    const DAY_MS: i64 = 86_400_000;
    let server = test_server::start().await.unwrap();
    let pupil = with_booking(&server, CoreRole::Pupil, Some(first_pupil(&server))).await;
    let w = server.shared.world();
    let tomorrow = (now_ms() / DAY_MS + 1) * DAY_MS + 5 * 60 * 1000;
    let ahead = tomorrow - now_ms();
    let err = pupil
        .client
        .check_in_with_gate_code(w.booking_doc.clone(), server.shared.gate_code_at(tomorrow))
        .unwrap_err();
    match err {
        ApiError::ClockSkew { offset_ms } => {
            assert!(
                (offset_ms - ahead).abs() <= 30_000,
                "{offset_ms} vs {ahead}"
            );
        }
        other => panic!("expected ClockSkew, got {other:?}"),
    }
    assert_eq!(pupil.client.sync_status().unwrap().pending_changes, 0);
    let receipt = pupil
        .client
        .check_in_with_gate_code(w.booking_doc, server.shared.gate_code())
        .unwrap();
    assert!(!receipt.already_counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_added_but_not_synced_is_not_synced_yet() {
    let server = test_server::start().await.unwrap();
    let pupil = enrolled(&server, CoreRole::Pupil, Some(first_pupil(&server))).await;
    let w = server.shared.world();
    pupil.client.add_document(w.booking_doc.clone()).unwrap();
    let err = pupil
        .client
        .check_in_with_gate_code(w.booking_doc.clone(), server.shared.gate_code())
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::NotSyncedYet { what } if what == "booking"),
        "{err:?}"
    );
    // A booking never added is a wrong id, not something to wait for.
    let err = pupil.client.booking(w.venue_doc.clone()).unwrap_err();
    assert!(matches!(err, ApiError::InvalidInput { .. }), "{err:?}");
    pupil.client.sync_now().await.unwrap();
    pupil
        .client
        .check_in_with_gate_code(w.booking_doc, server.shared.gate_code())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_states_and_offline_are_their_own_errors() {
    let server = test_server::start().await.unwrap();
    let fresh = open(&server);
    assert!(matches!(
        fresh.client.documents().unwrap_err(),
        ApiError::NotEnrolled
    ));
    let phone = enrolled(&server, CoreRole::Teacher, None).await;
    let err = phone
        .client
        .enroll(server.shared.issue_code(CoreRole::Teacher, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::AlreadyEnrolled), "{err:?}");
    let err = fresh.client.enroll("KEPU-0000".into()).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Rejected { reason } if reason == "invalid_enrollment_code"),
        "{err:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let nowhere = KepuClient::open(
        dir.path().to_string_lossy().into_owned(),
        "http://127.0.0.1:9".into(),
        None,
    )
    .unwrap();
    let err = nowhere.enroll("KEPU-0000".into()).await.unwrap_err();
    assert!(matches!(err, ApiError::Offline { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_is_storage_full_and_keeps_every_check_in_it_confirmed() {
    let server = test_server::start().await.unwrap();
    let teacher = with_booking(&server, CoreRole::Teacher, None).await;
    let w = server.shared.world();
    teacher.client.core().limit_store_pages(1).unwrap();
    let mut confirmed = 0u64;
    let mut full = false;
    for _ in 0..400 {
        let pass = server
            .shared
            .pass_for(PupilId(uuid::Uuid::from_bytes(random())));
        match teacher.client.scan_pupil_pass(w.booking_doc.clone(), pass) {
            Ok(_) => confirmed += 1,
            Err(ApiError::StorageFull) => {
                full = true;
                break;
            }
            Err(other) => panic!("expected StorageFull, got {other:?}"),
        }
    }
    assert!(full, "the store filled up after {confirmed} check-ins");
    let counted = |c: &KepuClient| {
        let roster = c.roster(w.booking_doc.clone()).unwrap();
        roster.pupils.iter().filter(|p| p.arrived).count()
    };
    assert_eq!(
        counted(&teacher.client),
        usize::try_from(confirmed).unwrap()
    );
    assert_eq!(
        teacher.client.sync_status().unwrap().pending_changes,
        confirmed
    );
    // Space again: scanning resumes, nothing was lost.
    teacher.client.core().limit_store_pages(1 << 30).unwrap();
    let pass = server
        .shared
        .pass_for(PupilId(uuid::Uuid::from_bytes(random())));
    teacher
        .client
        .scan_pupil_pass(w.booking_doc.clone(), pass)
        .unwrap();
    assert_eq!(
        counted(&teacher.client),
        usize::try_from(confirmed + 1).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enroll_cancelled_after_the_code_was_spent_still_completes_whole() {
    let server = test_server::start().await.unwrap();
    let phone = open(&server);
    server.shared.set_enroll_delay(400);
    let code = server.shared.issue_code(CoreRole::Teacher, None);
    // The app gives up (a coroutine cancelled, a screen closed) while the server, which
    // has already spent the code, is still answering.
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        phone.client.enroll(code.clone()),
    )
    .await;
    assert!(cancelled.is_err(), "the call was cut short");
    assert!(!server.shared.code_unspent(&code));
    // The library finishes what the server did: the phone is enrolled with all of it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while phone.client.identity().is_none() {
        assert!(std::time::Instant::now() < deadline, "never enrolled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let w = server.shared.world();
    assert_eq!(phone.client.identity().unwrap().role, Role::Teacher);
    let held: Vec<String> = phone
        .client
        .documents()
        .unwrap()
        .into_iter()
        .map(|d| d.doc_id)
        .collect();
    assert!(held.contains(&w.revocations_doc), "{held:?}");
    assert_eq!(
        phone.client.core().meta("server_public_key").unwrap(),
        Some(w.server_public_key)
    );
    // Enrolling again says why not, and spends nothing.
    server.shared.set_enroll_delay(0);
    let again = server.shared.issue_code(CoreRole::Teacher, None);
    let err = phone.client.enroll(again.clone()).await.unwrap_err();
    assert!(matches!(err, ApiError::AlreadyEnrolled), "{err:?}");
    assert!(server.shared.code_unspent(&again));
    phone.client.sync_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_enrollments_at_once_enroll_once_and_spend_one_code() {
    let server = test_server::start().await.unwrap();
    let phone = open(&server);
    server.shared.set_enroll_delay(200);
    let (a, b) = (
        server.shared.issue_code(CoreRole::Teacher, None),
        server.shared.issue_code(CoreRole::Teacher, None),
    );
    let (ra, rb) = tokio::join!(
        phone.client.enroll(a.clone()),
        phone.client.enroll(b.clone())
    );
    let (ok, refused, unspent) = match (ra, rb) {
        (Ok(_), Err(e)) => (1, e, b),
        (Err(e), Ok(_)) => (1, e, a),
        other => panic!("expected one enrollment, got {other:?}"),
    };
    assert_eq!(ok, 1);
    assert!(matches!(refused, ApiError::AlreadyEnrolled), "{refused:?}");
    assert!(
        server.shared.code_unspent(&unspent),
        "the second code is still good"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sync_the_phone_uses_the_servers_clock_for_codes_and_scan_times() {
    let server = test_server::start().await.unwrap();
    // This phone's clock is ten minutes behind the server's and the gate's.
    let ahead = 10 * 60 * 1000;
    server.shared.set_clock_offset(ahead);
    let pupil = enrolled(&server, CoreRole::Pupil, Some(first_pupil(&server))).await;
    let w = server.shared.world();
    pupil.client.add_document(w.booking_doc.clone()).unwrap();
    pupil.client.sync_now().await.unwrap();
    let learnt = pupil.client.core().clock_offset_ms();
    assert!((learnt - ahead).abs() <= 2_000, "learnt {learnt}");
    // Offline now: the gate's code (by the server's clock) is accepted, and the scan
    // is recorded at the server's time, not the phone's.
    let receipt = pupil
        .client
        .check_in_with_gate_code(
            w.booking_doc.clone(),
            server.shared.gate_code_at(now_ms() + ahead),
        )
        .unwrap();
    assert!(
        (receipt.at_ms - (now_ms() + ahead)).abs() <= 3_000,
        "{}",
        receipt.at_ms
    );
    let roster = pupil.client.roster(w.booking_doc).unwrap();
    let counted = roster.pupils.iter().find(|p| p.arrived).unwrap();
    let recorded = counted.checked_in_at_ms.unwrap();
    assert!((recorded - receipt.at_ms).abs() < 1_000, "{recorded}");
    // Times never go back, and a resync that reads the same clock changes nothing.
    let t1 = pupil.client.core().server_now();
    pupil.client.sync_now().await.unwrap();
    assert_eq!(pupil.client.core().clock_offset_ms(), learnt);
    assert!(pupil.client.core().server_now() >= t1);
    // The offset is kept for the next open (offline, before any sync).
    assert_eq!(
        pupil.client.core().meta("clock_offset_ms").unwrap(),
        Some(learnt.to_string())
    );
}
