//! Web login for the browser pages: login form, session cookie, logout, throttling, and
//! the JSON session API, against SQLite and PostgreSQL.

use kepu_server::accounts::{MAX_FAILED_ATTEMPTS, Role};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::support::{TestServer, error_code, place, user};

crate::support::on_both_databases!(
    server:
    staff_log_in_with_the_form_and_land_on_their_dashboard,
    wrong_passwords_are_refused_alike_and_then_throttled,
    logout_ends_the_session,
    pages_redirect_to_login_and_apis_answer_401,
    logins_are_checked_when_set,
    a_new_password_ends_old_sessions,
    device_tokens_work_where_sessions_do,
);

const PASSWORD: &str = "gate-keeper-2026";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `kepu_session=…` pair of a response's Set-Cookie header.
fn session_pair(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("kepu_session=") && !v.starts_with("kepu_session=;"))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

async fn staff(s: &TestServer) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    let p = place(&s.db.store).await;
    let staff = user(&s.db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    s.accounts
        .set_web_login(staff, "gate.staff", PASSWORD)
        .await
        .unwrap();
    (staff, p.venue, p.school)
}

async fn log_in(s: &TestServer, login: &str, password: &str) -> reqwest::Response {
    no_redirects()
        .post(s.url("/login"))
        .form(&[("login", login), ("password", password), ("next", "")])
        .send()
        .await
        .unwrap()
}

async fn staff_log_in_with_the_form_and_land_on_their_dashboard(s: &TestServer) {
    let (staff, venue, _) = staff(s).await;
    let page = s.http.get(s.url("/login?lang=en")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in") && html.contains("name=\"password\""));
    let zh = s
        .http
        .get(s.url("/login?lang=zh"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(zh.contains("登录名"));

    let response = log_in(s, " gate.staff ", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        format!("/venues/{venue}/live")
    );
    let cookie_header = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Lax"));
    let cookie = session_pair(&response).expect("a session cookie");

    let me: Value = s
        .http
        .get(s.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], staff.to_string());
    assert_eq!(me["role"], "venue_staff");
    assert_eq!(me["venue_id"], venue.to_string());

    // A `next` on this server is followed; one elsewhere is not.
    let next = no_redirects()
        .post(s.url("/login"))
        .form(&[
            ("login", "gate.staff"),
            ("password", PASSWORD),
            ("next", "/api/venues"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(next.headers()["location"], "/api/venues");
    let away = no_redirects()
        .post(s.url("/login"))
        .form(&[
            ("login", "gate.staff"),
            ("password", PASSWORD),
            ("next", "//evil.example/x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(away.headers()["location"], "/");
}

async fn wrong_passwords_are_refused_alike_and_then_throttled(s: &TestServer) {
    staff(s).await;
    let wrong = log_in(s, "gate.staff", "not the password").await;
    assert_eq!(wrong.status(), 401);
    assert!(session_pair(&wrong).is_none());
    let wrong_text = wrong.text().await.unwrap();
    let unknown = log_in(s, "nobody.here", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    // The same answer whether the name exists or not.
    assert_eq!(wrong_text, unknown.text().await.unwrap());

    let json_wrong = s
        .http
        .post(s.url("/api/session"))
        .json(&json!({ "login": "gate.staff", "password": "still wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(json_wrong, 401).await, "login_failed");

    for _ in 2..MAX_FAILED_ATTEMPTS {
        assert_eq!(log_in(s, "gate.staff", "guess").await.status(), 401);
    }
    // Locked now, even with the right password.
    let locked = log_in(s, "gate.staff", PASSWORD).await;
    assert_eq!(locked.status(), 429);
    assert!(session_pair(&locked).is_none());
    // Other names are not locked.
    assert_eq!(log_in(s, "nobody.else", "x").await.status(), 401);
}

async fn logout_ends_the_session(s: &TestServer) {
    staff(s).await;
    let cookie = session_pair(&log_in(s, "gate.staff", PASSWORD).await).unwrap();
    let out = no_redirects()
        .post(s.url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = s
        .http
        .get(s.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(after, 401).await, "not_logged_in");
}

async fn pages_redirect_to_login_and_apis_answer_401(s: &TestServer) {
    let home = no_redirects().get(s.url("/?x=1")).send().await.unwrap();
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/login?next=/%3Fx%3D1");
    let api = s.http.get(s.url("/api/session")).send().await.unwrap();
    assert_eq!(api.status(), 401);
    // A forged or garbage cookie is no session.
    let forged = s
        .http
        .get(s.url("/api/session"))
        .header(
            "cookie",
            "kepu_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let garbage = s
        .http
        .get(s.url("/api/session"))
        .header("cookie", "kepu_session=<script>")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    // A malformed login form is a clear 4xx, not a crash.
    let bad = no_redirects()
        .post(s.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("login=only")
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
}

async fn logins_are_checked_when_set(s: &TestServer) {
    let (staff, venue, school) = staff(s).await;
    let short = s.accounts.set_web_login(staff, "gate.staff", "short").await;
    assert!(short.unwrap_err().to_string().contains("at least 10"));
    let bad_name = s
        .accounts
        .set_web_login(staff, "Gate Staff", PASSWORD)
        .await;
    assert!(bad_name.is_err());
    let other = user(&s.db.store, Role::VenueStaff, None, Some(venue), None).await;
    let taken = s
        .accounts
        .set_web_login(other, "gate.staff", PASSWORD)
        .await;
    assert!(taken.unwrap_err().to_string().contains("taken"));
    let pupil = user(&s.db.store, Role::Pupil, Some(school), None, Some("小明")).await;
    let pupil_login = s.accounts.set_web_login(pupil, "xiaoming", PASSWORD).await;
    assert!(pupil_login.unwrap_err().to_string().contains("pupils"));
    // The first staff member can still log in: failed attempts to set changed nothing.
    assert_eq!(log_in(s, "gate.staff", PASSWORD).await.status(), 303);
}

async fn a_new_password_ends_old_sessions(s: &TestServer) {
    let (staff, _, _) = staff(s).await;
    let cookie = session_pair(&log_in(s, "gate.staff", PASSWORD).await).unwrap();
    s.accounts
        .set_web_login(staff, "gate.staff", "a brand new password")
        .await
        .unwrap();
    let old = s
        .http
        .get(s.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    assert_eq!(log_in(s, "gate.staff", PASSWORD).await.status(), 401);
    assert_eq!(
        log_in(s, "gate.staff", "a brand new password")
            .await
            .status(),
        303
    );
}

async fn device_tokens_work_where_sessions_do(s: &TestServer) {
    let (staff, _, _) = staff(s).await;
    let (_, token) = s.enroll(staff).await;
    let me: Value = s
        .http
        .get(s.url("/api/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], staff.to_string());
    let bad = s
        .http
        .get(s.url("/api/session"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}
