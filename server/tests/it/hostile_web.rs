//! Hostile browsers and clients against the web and account routes and the connection
//! limits: password guessing (in parallel, across names, with huge names), open
//! redirects after login, enrollment-code guessing, spreadsheet formulas in CSV exports,
//! `/metrics`, too many sync connections or event streams, too many bytes per second,
//! slow headers, and a mass revocation.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kepu_server::accounts::{DeviceToken, MAX_FAILED_ATTEMPTS, Role};
use kepu_server::clock::now_ms;
use kepu_server::ids::new_id;
use kepu_sync_core::wire::Message;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::support::{Db, TestServer, error_code, place, user};
use crate::sync_client::open_socket;

crate::support::on_both_databases!(
    kind:
    parallel_guesses_on_one_name_stop_at_the_lock,
    one_address_cannot_guess_across_many_names,
    enrollment_guesses_are_limited_per_address,
    a_mass_revocation_closes_every_revoked_device,
);

const PASSWORD: &str = "gate-keeper-2026";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn log_in(s: &TestServer, login: &str, password: &str, next: &str) -> reqwest::Response {
    no_redirects()
        .post(s.url("/login"))
        .form(&[("login", login), ("password", password), ("next", next)])
        .send()
        .await
        .unwrap()
}

async fn staff_with_login(s: &TestServer) -> uuid::Uuid {
    let p = place(&s.db.store).await;
    let staff = user(&s.db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    s.accounts
        .set_web_login(staff, "gate.staff", PASSWORD)
        .await
        .unwrap();
    p.venue
}

async fn parallel_guesses_on_one_name_stop_at_the_lock(db: Db) {
    let s = TestServer::start(db).await;
    staff_with_login(&s).await;
    let guesses = (0..20).map(|i| {
        let s = &s;
        async move { log_in(s, "gate.staff", &format!("guess number {i}"), "").await }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers.iter().filter(|r| r.status() == 401).count();
    let refused = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!(checked + refused, 20);
    assert!(
        checked <= MAX_FAILED_ATTEMPTS as usize,
        "{checked} parallel guesses were checked; the lock allows {MAX_FAILED_ATTEMPTS}"
    );
    // The name is locked now, even for the right password.
    assert_eq!(log_in(&s, "gate.staff", PASSWORD, "").await.status(), 429);
    s.finish().await;
}

async fn one_address_cannot_guess_across_many_names(db: Db) {
    let s = TestServer::start_with(db, |c| c.limits.login_failures_per_address = 12).await;
    staff_with_login(&s).await;
    // One guess on each of many names: no name reaches its own lock.
    for i in 0..12 {
        let r = log_in(&s, &format!("teacher.{i}"), "password1234", "").await;
        assert_eq!(r.status(), 401);
    }
    // The address is locked now: even the right password of another name waits.
    let r = log_in(&s, "gate.staff", PASSWORD, "").await;
    assert_eq!(r.status(), 429);
    let json = s
        .http
        .post(s.url("/api/session"))
        .json(&json!({ "login": "gate.staff", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(json, 429).await, "too_many_attempts");
    s.finish().await;
}

#[tokio::test]
async fn login_names_that_cannot_exist_are_not_remembered() {
    let s = TestServer::start(Db::Sqlite).await;
    staff_with_login(&s).await;
    let client = no_redirects();
    // A name of 64 KiB (the form allows 2 MB): before it was checked, the throttle kept
    // every such name, up to 10,000 of them, 20 GB in all.
    let huge = "a".repeat(64 * 1024);
    for _ in 0..2 * MAX_FAILED_ATTEMPTS {
        let r = client
            .post(s.url("/login"))
            .form(&[("login", huge.as_str()), ("password", "x")])
            .send()
            .await
            .unwrap();
        // The answer of any wrong login, and never a lock: the name was not kept.
        assert_eq!(r.status(), 401);
    }
    for bad in ["Gate.Staff", "ga", "gate staff", "门卫"] {
        for _ in 0..MAX_FAILED_ATTEMPTS + 1 {
            assert_eq!(log_in(&s, bad, "x", "").await.status(), 401, "{bad:?}");
        }
    }
    // The real login still works from the same address.
    assert_eq!(log_in(&s, "gate.staff", PASSWORD, "").await.status(), 303);
    s.finish().await;
}

/// The value of a gauge in `/metrics`, if present.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn password_checks_run_a_few_at_a_time() {
    let s = TestServer::start(Db::Sqlite).await;
    staff_with_login(&s).await;
    let attempts = futures_util::future::join_all((0..16).map(|i| {
        let s = &s;
        async move { log_in(s, &format!("guess.{i}"), "password1234", "").await }
    }));
    let watch = async {
        let mut peak = 0.0_f64;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let text = s
                .http
                .get(s.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let running = gauge(&text, "kepu_password_checks_running")
                .expect("kepu_password_checks_running is exported");
            peak = peak.max(running);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    };
    let (answers, peak) = tokio::join!(attempts, watch);
    // Every attempt got its answer; none was dropped as busy.
    assert!(answers.iter().all(|r| r.status() == 401));
    assert!(peak >= 1.0, "the watch saw no password check at all");
    assert!(
        peak <= 2.0,
        "{peak} Argon2 checks (19 MiB each) ran at once; the default cap is 2"
    );
    s.finish().await;
}

#[tokio::test]
async fn after_login_next_never_leaves_the_server() {
    let s = TestServer::start(Db::Sqlite).await;
    staff_with_login(&s).await;
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/\\evil.example",
        "/\t\\evil.example",
        "//evil.example",
        "https://evil.example/",
        "/ /evil.example",
        "/\u{0b}/evil.example",
    ] {
        let r = log_in(&s, "gate.staff", PASSWORD, next).await;
        assert_eq!(r.status(), 303, "{next:?}");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        // What a browser does with it: drop tabs and newlines, read `\` as `/`.
        let browser: String = location
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| if c == '\\' { '/' } else { c })
            .collect();
        assert!(
            browser.starts_with('/') && !browser.starts_with("//"),
            "{next:?} led to {location:?}"
        );
        assert_eq!(location, "/", "{next:?}");
    }
    // A clean path on this server is still followed.
    let r = log_in(&s, "gate.staff", PASSWORD, "/reports?year=2026").await;
    assert_eq!(r.headers()["location"], "/reports?year=2026");
    s.finish().await;
}

async fn enroll(s: &TestServer, code: &str) -> reqwest::Response {
    s.http
        .post(s.url("/api/enroll"))
        .json(&json!({ "code": code, "app_version": "test/1" }))
        .send()
        .await
        .unwrap()
}

async fn enrollment_guesses_are_limited_per_address(db: Db) {
    let s = TestServer::start_with(db, |c| c.limits.enroll_failures_per_address = 10).await;
    let p = place(&s.db.store).await;
    let pupil = user(&s.db.store, Role::Pupil, Some(p.school), None, Some("小明")).await;
    let real = s.accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    // A code that works does not count against the address.
    let own = s.accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    assert_eq!(enroll(&s, own.code.expose()).await.status(), 200);
    // Guesses in parallel: no more are looked up than the limit allows.
    let guesses = futures_util::future::join_all((0..30).map(|i| {
        let s = &s;
        async move { enroll(s, &format!("{:010}", 1_000_000 + i)).await }
    }))
    .await;
    let looked_up = guesses.iter().filter(|r| r.status() == 400).count();
    let refused = guesses.iter().filter(|r| r.status() == 429).count();
    assert_eq!(looked_up + refused, 30);
    assert_eq!(looked_up, 10, "guesses looked up");
    // The address waits now, even with a real code, which stays usable afterwards.
    let r = enroll(&s, real.code.expose()).await;
    assert_eq!(error_code(r, 429).await, "too_many_attempts");
    s.finish().await;
}

#[tokio::test]
async fn a_wrong_enrollment_code_is_answered_while_a_writer_holds_the_database() {
    let s = TestServer::start(Db::Sqlite).await;
    // Serving (the server's own start-up writes are done).
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let mut writer = sqlx::AnyConnection::connect(&s.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), enroll(&s, "0000000000"))
        .await
        .expect("a guess does not wait for the write lock");
    assert_eq!(error_code(r, 400).await, "invalid_enrollment_code");
    assert!(started.elapsed() < Duration::from_secs(2));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    writer.close().await.unwrap();
    s.finish().await;
}

#[tokio::test]
async fn csv_cells_that_spreadsheets_would_run_are_text() {
    let s = TestServer::start(Db::Sqlite).await;
    let store = &s.db.store;
    let city = store
        .create_city(new_id(), "@SUM(1+1)*cmd|' /C calc'!A0")
        .await
        .unwrap()
        .id;
    let county = store
        .create_county(new_id(), city, "+1+2")
        .await
        .unwrap()
        .id;
    store
        .create_school(
            new_id(),
            county,
            "=HYPERLINK(\"http://evil.example\",\"点此\")",
        )
        .await
        .unwrap();
    store.create_school(new_id(), county, "-2+3").await.unwrap();
    let admin = s.admin_token().await;
    let bytes = s
        .http
        .get(s.url("/api/reports/schools.csv?year=2026&as_of=2026-09-30"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut csv = csv::Reader::from_reader(&bytes[3..]);
    let headers = csv.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut schools = Vec::new();
    for record in csv.records() {
        let record = record.unwrap();
        for cell in &record {
            let formula = cell.starts_with(['=', '+', '@', '\t', '\r'])
                || (cell.starts_with('-') && cell.parse::<f64>().is_err());
            assert!(!formula, "a spreadsheet would run {cell:?}");
        }
        schools.push(record[column("school")].to_owned());
        assert_eq!(&record[column("county")], "'+1+2");
        assert_eq!(&record[column("city")], "'@SUM(1+1)*cmd|' /C calc'!A0");
    }
    schools.sort();
    assert_eq!(
        schools,
        ["'-2+3", "'=HYPERLINK(\"http://evil.example\",\"点此\")"]
    );
    s.finish().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let s = TestServer::start_with(Db::Sqlite, |c| {
        c.metrics_token = Some("scrape-secret-2026".into());
    })
    .await;
    let anonymous = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(error_code(anonymous, 401).await, "missing_token");
    let wrong = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("scrape-secret-2025")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(wrong, 401).await, "invalid_token");
    let right = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("scrape-secret-2026")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("kepu_ws_connections"));
    s.finish().await;
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = spare.local_addr().unwrap();
    drop(spare);
    let s = TestServer::start_with(Db::Sqlite, |c| c.metrics_addr = Some(metrics_addr)).await;
    // The main port no longer serves them.
    let main = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(error_code(main, 404).await, "not_found");
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(r) = s
            .http
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
        {
            text = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("kepu_ws_connections"), "{text}");
    // Only metrics there.
    let other = s
        .http
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    s.finish().await;
}

#[tokio::test]
async fn one_device_gets_a_bounded_number_of_sync_connections() {
    let s = TestServer::start(Db::Sqlite).await;
    let p = place(&s.db.store).await;
    let pupil = user(&s.db.store, Role::Pupil, Some(p.school), None, None).await;
    let (_, token) = s.enroll(pupil).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(open_socket(s.addr, &token).await.expect("within the limit"));
    }
    match open_socket(s.addr, &token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        Err(other) => panic!("refused with {other}"),
        Ok(_) => panic!("a ninth connection of one device was accepted"),
    }
    // Another device of the same school is not affected.
    let other = user(&s.db.store, Role::Pupil, Some(p.school), None, None).await;
    let (_, other_token) = s.enroll(other).await;
    assert!(open_socket(s.addr, &other_token).await.is_ok());
    // A closed connection gives its place back.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut reopened = false;
    for _ in 0..40 {
        if open_socket(s.addr, &token).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened);
    drop(open);
    s.finish().await;
}

#[tokio::test]
async fn one_login_gets_a_bounded_number_of_event_streams() {
    let s = TestServer::start(Db::Sqlite).await;
    let venue = staff_with_login(&s).await;
    let cookie = {
        let r = log_in(&s, "gate.staff", PASSWORD, "").await;
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    };
    let stream = || {
        s.http
            .get(s.url(&format!("/api/venues/{venue}/live/events")))
            .header("cookie", &cookie)
            .send()
    };
    let mut open = Vec::new();
    for _ in 0..8 {
        let r = stream().await.unwrap();
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let ninth = stream().await.unwrap();
    assert_eq!(error_code(ninth, 429).await, "too_many_connections");
    drop(open.pop());
    let mut reopened = false;
    for _ in 0..40 {
        if stream().await.unwrap().status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "a closed stream gives its place back");
    drop(open);
    s.finish().await;
}

#[tokio::test]
async fn a_connection_sending_too_many_bytes_is_told_and_closed() {
    let s = TestServer::start(Db::Sqlite).await;
    let p = place(&s.db.store).await;
    let pupil = user(&s.db.store, Role::Pupil, Some(p.school), None, None).await;
    let (_, token) = s.enroll(pupil).await;
    let mut socket = open_socket(s.addr, &token).await.unwrap();
    // 16 MiB in 16 frames, far fewer frames than the frame-rate limit allows.
    let frame = vec![0xffu8; 1024 * 1024];
    let started = Instant::now();
    for _ in 0..16 {
        if socket.send(Ws::Binary(frame.clone().into())).await.is_err() {
            break;
        }
    }
    let mut told = false;
    let mut closed_with = None;
    let until = started + Duration::from_secs(10);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), socket.next()).await {
        match msg {
            Ws::Binary(bytes) => {
                if let Ok(Message::Error {
                    refusal: Some(r), ..
                }) = kepu_sync_core::wire::decode(&bytes)
                {
                    told |= r.code == kepu_sync_core::refusal::RefusalCode::RateLimited;
                }
            }
            Ws::Close(frame) => {
                closed_with = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(told, "an error with code rate-limited comes first");
    assert_eq!(closed_with, Some(1008));
    s.finish().await;
}

/// Sends `at_once`, then `head` one byte every `every`, and returns how long the server
/// kept the connection open, up to `give_up`.
async fn drip(
    s: &TestServer,
    at_once: &[u8],
    head: &[u8],
    every: Duration,
    give_up: Duration,
) -> Duration {
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let (at_once, head) = (at_once.to_vec(), head.to_vec());
    let started = Instant::now();
    let dripping = tokio::spawn(async move {
        if write.write_all(&at_once).await.is_err() {
            return;
        }
        for byte in head {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Keep the write half open.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(give_up, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    dripping.abort();
    if ended.is_err() {
        return give_up;
    }
    started.elapsed()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s = TestServer::start_with(Db::Sqlite, |c| c.limits.header_read_timeout_secs = 2).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: kepu\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (dripped, silent) = tokio::join!(
        drip(
            &s,
            b"",
            head,
            Duration::from_millis(400),
            Duration::from_secs(8)
        ),
        drip(
            &s,
            b"",
            b"",
            Duration::from_millis(400),
            Duration::from_secs(8)
        ),
    );
    assert!(
        dripped < Duration::from_secs(4),
        "dripping client kept for {dripped:?}"
    );
    assert!(
        silent < Duration::from_secs(4),
        "silent client kept for {silent:?}"
    );
    // A normal request is unaffected.
    let ok = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    s.finish().await;
}

#[tokio::test]
async fn slow_bodies_are_cut_off() {
    let s = TestServer::start_with(Db::Sqlite, |c| c.limits.body_read_timeout_secs = 2).await;
    let body = br#"{"code": "0000000000", "app_version": "slow/1"}"#;
    let head = format!(
        "POST /api/enroll HTTP/1.1\r\nHost: kepu\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let kept = drip(
        &s,
        head.as_bytes(),
        body,
        Duration::from_millis(400),
        Duration::from_secs(10),
    )
    .await;
    assert!(kept < Duration::from_secs(4), "slow body kept for {kept:?}");
    // A body sent at normal speed is unaffected.
    let r = enroll(&s, "0000000000").await;
    assert_eq!(error_code(r, 400).await, "invalid_enrollment_code");
    s.finish().await;
}

async fn a_mass_revocation_closes_every_revoked_device(db: Db) {
    const DEVICES: usize = 1_100;
    let s = TestServer::start(db).await;
    let p = place(&s.db.store).await;
    let pupil = user(&s.db.store, Role::Pupil, Some(p.school), None, None).await;
    // More devices than the revocation broadcast buffers (1,024), written directly.
    let mut tokens = Vec::new();
    let mut conn = sqlx::AnyConnection::connect(&s.db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let now = now_ms();
    for i in 0..DEVICES {
        let token = DeviceToken::generate();
        sqlx::query(
            "INSERT INTO devices (id, user_id, token_hash, created_at, pending_refusals) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(new_id().to_string())
        .bind(pupil.to_string())
        .bind(token.hash().to_vec())
        .bind(now + i64::try_from(i).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
        tokens.push(token.into_string());
    }
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
    // Devices at both ends of the list are connected, whatever order they are revoked in.
    let mut sockets = Vec::new();
    for token in tokens[..8].iter().chain(&tokens[DEVICES - 8..]) {
        sockets.push(open_socket(s.addr, token).await.unwrap());
    }
    let admin = s.admin_token().await;
    let erased = s
        .http
        .post(s.url(&format!("/api/admin/pupils/{pupil}/erase")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut still_open = 0;
    for socket in &mut sockets {
        let mut told = false;
        let mut closed = false;
        while let Ok(next) = tokio::time::timeout_at(until, socket.next()).await {
            match next {
                Some(Ok(Ws::Binary(bytes))) => {
                    if let Ok(Message::Error {
                        refusal: Some(r), ..
                    }) = kepu_sync_core::wire::decode(&bytes)
                    {
                        told |= r.code == kepu_sync_core::refusal::RefusalCode::DeviceRevoked;
                    }
                }
                Some(Ok(Ws::Close(_)) | Err(_)) | None => {
                    closed = true;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        if !(told && closed) {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "revoked devices not told `device-revoked` and closed"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_device_revoked_by_another_process_is_closed_within_seconds() {
    let s = TestServer::start(Db::Sqlite).await;
    let p = place(&s.db.store).await;
    let pupil = user(&s.db.store, Role::Pupil, Some(p.school), None, None).await;
    let (device, token) = s.enroll(pupil).await;
    let mut socket = open_socket(s.addr, &token).await.unwrap();
    // The test's own accounts service stands for `kepu-server admin revoke-device`: it
    // writes the same database, and the server's broadcast never hears of it.
    let device = kepu_sync_core::ids::DeviceId(device.parse().unwrap());
    assert!(s.accounts.authenticator().revoke(device).await.unwrap());
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    let (mut told, mut closed) = (false, false);
    while let Ok(next) = tokio::time::timeout_at(until, socket.next()).await {
        match next {
            Some(Ok(Ws::Binary(bytes))) => {
                if let Ok(Message::Error {
                    refusal: Some(r), ..
                }) = kepu_sync_core::wire::decode(&bytes)
                {
                    told |= r.code == kepu_sync_core::refusal::RefusalCode::DeviceRevoked;
                }
            }
            Some(Ok(Ws::Close(_)) | Err(_)) | None => {
                closed = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    assert!(told && closed, "told {told}, closed {closed}");
    s.finish().await;
}
