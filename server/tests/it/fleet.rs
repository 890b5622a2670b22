//! The fleet page (`/fleet`) against a real server on SQLite and PostgreSQL: who may see
//! which devices, the filters, and revoking and rotating a device from the page, each
//! behind a confirmation and the login's form token.

use kepu_server::accounts::Role;
use kepu_server::clock::{DAY_MS, now_ms};
use kepu_server::ids::new_id;
use kepu_server::store::Refusal;
use kepu_sync_core::refusal::RefusalCode;
use reqwest::redirect::Policy;
use uuid::Uuid;

use crate::support::{TestServer, error_code, place, user};

crate::support::on_both_databases!(
    server:
    admins_see_every_device_and_venue_staff_only_their_gate_devices,
    the_filters_narrow_the_fleet,
    revoking_from_the_page_asks_first_and_needs_the_form_token,
    rotating_from_the_page_stops_the_token_and_wipes_nothing,
    admins_set_a_minimum_app_version_per_role,
    a_device_below_its_roles_minimum_is_refused_at_connect_and_let_in_once_updated,
);

pub const PASSWORD: &str = "fleet-keeper-2026";
/// A pupil's name, which the fleet page must never show.
const PUPIL_NAME: &str = "李测试";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A logged-in browser: its session cookie.
pub async fn log_in(s: &TestServer, login: &str) -> String {
    let response = browser()
        .post(s.url("/login"))
        .form(&[("login", login), ("password", PASSWORD), ("next", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "login of {login}");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("kepu_session=") && !v.starts_with("kepu_session=;"))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a session cookie")
}

/// Devices of two venues, a teacher and a pupil, with their people's logins.
pub struct Fleet {
    pub venue: Uuid,
    pub other_venue: Uuid,
    /// Venue staff devices of `venue`: up to date, and old and silent for 20 days.
    pub gate: (Uuid, String),
    pub old_gate: (Uuid, String),
    /// A venue staff device of `other_venue`.
    pub other_gate: (Uuid, String),
    pub teacher: (Uuid, String),
    /// Never synced, with refusals.
    pub pupil: (Uuid, String),
}

async fn device(s: &TestServer, user: Uuid) -> (Uuid, String) {
    let (id, token) = s.enroll(user).await;
    (id.parse().unwrap(), token)
}

impl Fleet {
    pub async fn new(s: &TestServer) -> Self {
        let store = &s.db.store;
        let p = place(store).await;
        let other_venue = store
            .create_venue(new_id(), p.county, "岳麓山科普基地", "science_base")
            .await
            .unwrap()
            .id;
        let admin = user(store, Role::BureauAdmin, None, None, None).await;
        let staff = user(store, Role::VenueStaff, None, Some(p.venue), None).await;
        let other_staff = user(store, Role::VenueStaff, None, Some(other_venue), None).await;
        let teacher = user(store, Role::Teacher, Some(p.school), None, None).await;
        let pupil = user(store, Role::Pupil, Some(p.school), None, Some(PUPIL_NAME)).await;
        for (who, login) in [
            (admin, "bureau.admin"),
            (staff, "gate.staff"),
            (other_staff, "other.staff"),
            (teacher, "class.teacher"),
        ] {
            s.accounts
                .set_web_login(who, login, PASSWORD)
                .await
                .unwrap();
        }
        let now = now_ms();
        let gate = device(s, staff).await;
        store
            .touch_device_sync(gate.0, now - 60_000, Some("1.2.0"))
            .await
            .unwrap();
        let old_gate = device(s, staff).await;
        store
            .touch_device_sync(old_gate.0, now - 20 * DAY_MS, Some("1.0.0"))
            .await
            .unwrap();
        let other_gate = device(s, other_staff).await;
        store
            .touch_device_sync(other_gate.0, now - 3_600_000, Some("1.0.0"))
            .await
            .unwrap();
        let teacher = device(s, teacher).await;
        store
            .touch_device_sync(teacher.0, now - 2 * DAY_MS, Some("1.2.0"))
            .await
            .unwrap();
        let pupil = device(s, pupil).await;
        for _ in 0..2 {
            store
                .record_refusal(&Refusal {
                    id: new_id(),
                    device_id: pupil.0,
                    doc_id: "doc".into(),
                    code: RefusalCode::NotOnRoster,
                    detail: "checkIns".into(),
                    at: now - 3_600_000,
                })
                .await
                .unwrap();
        }
        Self {
            venue: p.venue,
            other_venue,
            gate,
            old_gate,
            other_gate,
            teacher,
            pupil,
        }
    }
}

async fn get(s: &TestServer, cookie: &str, path: &str) -> reqwest::Response {
    browser()
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

pub async fn page(s: &TestServer, cookie: &str, path: &str) -> String {
    let response = get(s, cookie, path).await;
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    response.text().await.unwrap()
}

/// The devices listed on a fleet page, in order.
fn listed(html: &str) -> Vec<Uuid> {
    html.split("<tr data-device=\"")
        .skip(1)
        .map(|rest| rest[..36].parse().unwrap())
        .collect()
}

async fn admins_see_every_device_and_venue_staff_only_their_gate_devices(s: &TestServer) {
    let f = Fleet::new(s).await;
    let admin = log_in(s, "bureau.admin").await;
    let html = page(s, &admin, "/fleet").await;
    let all = listed(&html);
    for d in [&f.gate, &f.old_gate, &f.other_gate, &f.teacher, &f.pupil] {
        assert!(all.contains(&d.0), "the admin sees {}", d.0);
    }
    // Silent longest first: the pupil's phone never synced.
    assert_eq!(all[0], f.pupil.0);
    assert!(html.contains("<html lang=\"zh-CN\">") && html.contains("设备管理"));
    assert!(html.contains("博才小学") && html.contains("湖南省科技馆"));
    assert!(
        !html.contains(PUPIL_NAME),
        "no pupil's name on the fleet page"
    );
    let english = page(s, &admin, "/fleet?lang=en").await;
    assert!(english.contains("<html lang=\"en\">") && english.contains("Changes waiting"));
    assert!(english.contains("Last sync") && english.contains("Revoke"));

    let staff = log_in(s, "gate.staff").await;
    let mut theirs = listed(&page(s, &staff, "/fleet").await);
    theirs.sort();
    let mut expected = vec![f.gate.0, f.old_gate.0];
    expected.sort();
    assert_eq!(
        theirs, expected,
        "a venue's staff see their gate devices only"
    );
    let other = log_in(s, "other.staff").await;
    assert_eq!(
        listed(&page(s, &other, "/fleet").await),
        vec![f.other_gate.0]
    );
    // Nor can they open another venue's device.
    let response = get(s, &other, &format!("/fleet/devices/{}/revoke", f.gate.0)).await;
    assert_eq!(error_code(response, 403).await, "forbidden");

    let teacher = log_in(s, "class.teacher").await;
    assert_eq!(
        error_code(get(s, &teacher, "/fleet").await, 403).await,
        "forbidden"
    );
    let response = get(
        s,
        &teacher,
        &format!("/fleet/devices/{}/rotate", f.teacher.0),
    )
    .await;
    assert_eq!(error_code(response, 403).await, "forbidden");
    // Without a login: to the login form, which comes back here.
    let response = browser().get(s.url("/fleet?stale=7")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/login?next=/fleet%3Fstale%3D7"
    );
    // A device's bearer token is a login too: a gate device sees its venue's fleet.
    let response = s
        .http
        .get(s.url("/fleet"))
        .bearer_auth(&f.gate.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = f.venue;
    let _ = f.other_venue;
}

async fn the_filters_narrow_the_fleet(s: &TestServer) {
    let f = Fleet::new(s).await;
    let admin = log_in(s, "bureau.admin").await;
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    // Not synced for a week: the old gate tablet and the pupil's phone that never synced.
    let stale = listed(&page(s, &admin, "/fleet?stale=7").await);
    assert_eq!(sorted(stale), sorted(vec![f.old_gate.0, f.pupil.0]));
    let day = listed(&page(s, &admin, "/fleet?stale=1").await);
    assert_eq!(
        sorted(day),
        sorted(vec![f.old_gate.0, f.pupil.0, f.teacher.0])
    );
    // Below the minimum: none until one is set; then the venue staff devices below it.
    assert!(listed(&page(s, &admin, "/fleet?below=1").await).is_empty());
    kepu_server::fleet::set_minimum(&s.db.store, Role::VenueStaff, Some("1.1"), now_ms())
        .await
        .unwrap();
    let html = page(s, &admin, "/fleet?below=1&lang=en").await;
    assert_eq!(
        sorted(listed(&html)),
        sorted(vec![f.old_gate.0, f.other_gate.0])
    );
    assert!(html.contains("Venue staff 1.1") && html.contains("too old"));
    // The filters combine, and a venue's staff see only theirs.
    assert_eq!(
        listed(&page(s, &admin, "/fleet?below=1&stale=7").await),
        vec![f.old_gate.0]
    );
    let staff = log_in(s, "gate.staff").await;
    assert_eq!(
        listed(&page(s, &staff, "/fleet?below=1").await),
        vec![f.old_gate.0]
    );
    // Has refusals: the pupil's phone, with its code and count.
    let html = page(s, &admin, "/fleet?refusals=1").await;
    assert_eq!(listed(&html), vec![f.pupil.0]);
    assert!(html.contains("<code>not-on-roster</code> ×2"), "{html}");
    assert!(listed(&page(s, &staff, "/fleet?refusals=1").await).is_empty());
    // The form keeps the filters, and the language switch too.
    let html = page(s, &admin, "/fleet?stale=7&refusals=on").await;
    assert!(html.contains("name=\"stale\" min=\"1\" max=\"3650\" value=\"7\""));
    assert!(html.contains("href=\"?lang=en&amp;stale=7&amp;refusals=1\""));
    // A filter that is not one is refused, not guessed.
    for bad in ["0", "x", "-3", "99999999999999"] {
        let response = get(s, &admin, &format!("/fleet?stale={bad}")).await;
        assert_eq!(error_code(response, 400).await, "invalid_input", "{bad}");
    }
}

pub fn form_token(html: &str) -> String {
    let start = html
        .find("name=\"form_token\" value=\"")
        .expect("a form token")
        + 25;
    html[start..start + 64].to_owned()
}

pub async fn post(
    s: &TestServer,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = browser()
        .post(s.url(path))
        .header("cookie", cookie)
        .form(form);
    if let Some(o) = origin {
        request = request.header("origin", o);
    }
    request.send().await.unwrap()
}

async fn revoking_from_the_page_asks_first_and_needs_the_form_token(s: &TestServer) {
    let f = Fleet::new(s).await;
    let staff = log_in(s, "gate.staff").await;
    let path = format!("/fleet/devices/{}/revoke", f.old_gate.0);
    let html = page(s, &staff, &format!("{path}?lang=en")).await;
    assert!(html.contains("Revoke this device?") && html.contains("cannot be undone"));
    let token = form_token(&html);
    let revoked = |id: Uuid| async move {
        s.db.store
            .device(id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    };
    assert!(!revoked(f.old_gate.0).await, "asking revokes nothing");
    // A form without this login's token, or from another site, is refused.
    for (form, origin) in [
        (vec![("lang", "en")], None),
        (
            vec![("form_token", "0".repeat(64).as_str()), ("lang", "en")],
            None,
        ),
        (
            vec![("form_token", token.as_str()), ("lang", "en")],
            Some("http://evil.example"),
        ),
    ] {
        let response = post(s, &staff, &path, &form, origin).await;
        assert!(
            [400, 403].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
        assert!(!revoked(f.old_gate.0).await);
    }
    // Another login's token is not this one's.
    let other = log_in(s, "other.staff").await;
    let response = post(s, &other, &path, &[("form_token", &token)], None).await;
    assert_eq!(error_code(response, 403).await, "forbidden");
    // Staff may not revoke another venue's device, even with their own token.
    let other_path = format!("/fleet/devices/{}/revoke", f.other_gate.0);
    let response = post(s, &staff, &other_path, &[("form_token", &token)], None).await;
    assert_eq!(error_code(response, 403).await, "forbidden");
    assert!(!revoked(f.other_gate.0).await);

    // The confirmed form, from this server: revoked, back on the fleet page.
    let origin = format!("http://{}", s.addr);
    let response = post(
        s,
        &staff,
        &path,
        &[("form_token", &token), ("lang", "en")],
        Some(&origin),
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/fleet?lang=en&done=revoked"
    );
    assert!(revoked(f.old_gate.0).await);
    let html = page(s, &staff, "/fleet?lang=en&done=revoked").await;
    assert!(html.contains("Device revoked."));
    assert!(html.contains(&format!(
        "<tr data-device=\"{}\" data-revoked=\"true\">",
        f.old_gate.0
    )));
    // The device is told it is revoked (so it wipes itself).
    let response = s
        .http
        .get(s.url("/api/session"))
        .bearer_auth(&f.old_gate.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-kepu-error"], "device-revoked");
    assert_eq!(error_code(response, 401).await, "device_revoked");
    // Its other gate device is untouched.
    assert!(!revoked(f.gate.0).await);
}

async fn rotating_from_the_page_stops_the_token_and_wipes_nothing(s: &TestServer) {
    let f = Fleet::new(s).await;
    let admin = log_in(s, "bureau.admin").await;
    let path = format!("/fleet/devices/{}/rotate", f.teacher.0);
    // Asked from a filtered page, the confirmation leads back to it.
    let html = page(s, &admin, &format!("{path}?stale=1&refusals=1")).await;
    assert!(html.contains("轮换这台设备的令牌？"));
    assert!(html.contains("<input type=\"hidden\" name=\"stale\" value=\"1\">"));
    assert!(html.contains("href=\"/fleet?lang=zh&amp;stale=1&amp;refusals=1\""));
    let token = form_token(&html);
    let form = [
        ("form_token", token.as_str()),
        ("lang", "zh"),
        ("stale", "1"),
        ("refusals", "1"),
    ];
    let response = post(s, &admin, &path, &form, None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/fleet?lang=zh&stale=1&refusals=1&done=rotated"
    );
    // The old token no longer works, but the device is not told it is revoked.
    let response = s
        .http
        .get(s.url("/api/session"))
        .bearer_auth(&f.teacher.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-kepu-error"], "unauthenticated");
    assert_eq!(error_code(response, 401).await, "invalid_token");
    let stored = s.db.store.device(f.teacher.0).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, None);
    // The pupil's phone still works.
    let response = s
        .http
        .get(s.url("/api/session"))
        .bearer_auth(&f.pupil.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Opens `/sync` as a device with these extra headers: `Ok(())` when the upgrade
/// succeeded, else the refused answer's status, `X-Kepu-Error`, `X-Kepu-Min-Version` and
/// JSON error code.
async fn connect(
    s: &TestServer,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<(), (u16, String, String, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/sync", s.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            ws.close(None).await.ok();
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let header = |n: &str| {
                response
                    .headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let code = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Err((
                response.status().as_u16(),
                header("x-kepu-error"),
                header("x-kepu-min-version"),
                code,
            ))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

async fn put_minimum(
    s: &TestServer,
    token: &str,
    role: &str,
    version: serde_json::Value,
) -> reqwest::Response {
    s.http
        .put(s.url(&format!("/api/admin/min-app-versions/{role}")))
        .bearer_auth(token)
        .json(&serde_json::json!({ "version": version }))
        .send()
        .await
        .unwrap()
}

async fn admins_set_a_minimum_app_version_per_role(s: &TestServer) {
    let f = Fleet::new(s).await;
    let admin = s.admin_token().await;
    let response = put_minimum(s, &admin, "teacher", "1.4".into()).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "role": "teacher", "version": "1.4" })
    );
    assert_eq!(
        put_minimum(s, &admin, "venue-staff", " 2.0.0-rc.1 ".into())
            .await
            .status(),
        200
    );
    let table: serde_json::Value = s
        .http
        .get(s.url("/api/admin/min-app-versions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        table["minimums"],
        serde_json::json!({ "teacher": "1.4", "venue_staff": "2.0.0-rc.1" })
    );
    // Only admins; only versions; only users' roles.
    let response = put_minimum(s, &f.teacher.1, "teacher", "0.1".into()).await;
    assert_eq!(error_code(response, 403).await, "forbidden");
    for (role, version) in [
        ("teacher", "abc"),
        ("teacher", "1.2.3.4.5"),
        ("teacher", "<script>"),
        ("server", "1.0"),
        ("nobody", "1.0"),
    ] {
        let response = put_minimum(s, &admin, role, version.into()).await;
        assert_eq!(
            error_code(response, 400).await,
            "invalid_input",
            "{role} {version}"
        );
    }
    let long = "9".repeat(100_000);
    let response = put_minimum(s, &admin, "teacher", long.into()).await;
    assert!(response.status().is_client_error());
    // Cleared with null; the CLI sets and prints the same table.
    assert_eq!(
        put_minimum(s, &admin, "teacher", serde_json::Value::Null)
            .await
            .status(),
        200
    );
    let mut out = Vec::new();
    kepu_server::admin_cli::execute_with(
        &s.accounts,
        kepu_server::config::AdminCommand::MinAppVersion {
            role: "pupil".into(),
            version: Some("1.1.0".into()),
            clear: false,
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "pupil\t1.1.0\nvenue_staff\t2.0.0-rc.1\n"
    );
    let bad = kepu_server::admin_cli::execute_with(
        &s.accounts,
        kepu_server::config::AdminCommand::MinAppVersion {
            role: "teacher".into(),
            version: Some("one".into()),
            clear: false,
        },
        &mut Vec::new(),
    )
    .await;
    assert!(bad.is_err());
    // The fleet page shows the minimums and who is below them.
    let cookie = log_in(s, "bureau.admin").await;
    let html = page(s, &cookie, "/fleet?below=1&lang=en").await;
    assert!(
        html.contains("Pupil 1.1.0 · Venue staff 2.0.0-rc.1"),
        "{html}"
    );
    let mut below = listed(&html);
    below.sort();
    let mut expected = vec![f.gate.0, f.old_gate.0, f.other_gate.0, f.pupil.0];
    expected.sort();
    assert_eq!(below, expected);
}

async fn a_device_below_its_roles_minimum_is_refused_at_connect_and_let_in_once_updated(
    s: &TestServer,
) {
    let f = Fleet::new(s).await;
    let admin = s.admin_token().await;
    // No minimum: every device connects, whatever it reports.
    assert_eq!(connect(s, &f.teacher.1, &[]).await, Ok(()));
    assert_eq!(
        put_minimum(s, &admin, "teacher", "1.4".into())
            .await
            .status(),
        200
    );
    // The teacher's phone reported 1.2.0 last: refused, told the minimum, not revoked.
    let refused = Err((
        403,
        "app-too-old".to_owned(),
        "1.4".to_owned(),
        "app_too_old".to_owned(),
    ));
    assert_eq!(connect(s, &f.teacher.1, &[]).await, refused);
    assert_eq!(
        connect(
            s,
            &f.teacher.1,
            &[
                ("x-kepu-app-version", "1.3.9"),
                ("x-kepu-pending-changes", "7")
            ]
        )
        .await,
        refused
    );
    let stored = s.db.store.device(f.teacher.0).await.unwrap().unwrap();
    assert_eq!(stored.app_version.as_deref(), Some("1.3.9"));
    assert_eq!(stored.revoked_at, None, "an old app is not revoked");
    // The fleet shows what it reported: its version and the changes waiting on it.
    let cookie = log_in(s, "bureau.admin").await;
    let html = page(s, &cookie, "/fleet?below=1&lang=en").await;
    assert_eq!(listed(&html), vec![f.teacher.0]);
    let row = html
        .split(&format!("<tr data-device=\"{}\"", f.teacher.0))
        .nth(1)
        .unwrap();
    assert!(
        row.contains("1.3.9 <span class=\"badge\">too old</span>"),
        "{row}"
    );
    assert!(
        row.contains("<td data-label=\"Changes waiting\">7</td>"),
        "{row}"
    );
    // Hostile reports are ignored, not stored: the last good version still counts.
    let huge = "1".repeat(10_000);
    for (name, value) in [
        ("x-kepu-app-version", huge.as_str()),
        ("x-kepu-pending-changes", "-1"),
        ("x-kepu-pending-changes", "99999999999999999999"),
        ("x-kepu-pending-changes", "1e3"),
    ] {
        assert_eq!(connect(s, &f.teacher.1, &[(name, value)]).await, refused);
    }
    let stored = s.db.store.device(f.teacher.0).await.unwrap().unwrap();
    assert_eq!(stored.app_version.as_deref(), Some("1.3.9"));
    // Other roles are not held back by the teachers' minimum.
    assert_eq!(connect(s, &f.gate.1, &[]).await, Ok(()));
    // Updated: let in, and the new version is kept for the next connect.
    assert_eq!(
        connect(
            s,
            &f.teacher.1,
            &[
                ("x-kepu-app-version", "1.4.0"),
                ("x-kepu-pending-changes", "0")
            ]
        )
        .await,
        Ok(())
    );
    assert_eq!(connect(s, &f.teacher.1, &[]).await, Ok(()));
    let stored = s.db.store.device(f.teacher.0).await.unwrap().unwrap();
    assert_eq!(stored.app_version.as_deref(), Some("1.4.0"));
    // A browser reports its version on the URL.
    assert_eq!(
        put_minimum(s, &admin, "teacher", "1.5".into())
            .await
            .status(),
        200
    );
    let url = format!(
        "ws://{}/sync?token={}&app_version=1.5.1",
        s.addr, f.teacher.1
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("let in");
    ws.close(None).await.ok();
}
