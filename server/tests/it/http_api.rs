//! HTTP behaviour over real sockets, against SQLite and PostgreSQL.

use kepu_server::accounts::Role;
use serde_json::{Value, json};

use crate::support::{TestServer, error_code, place, user};

crate::support::on_both_databases!(
    server:
    health_ready_and_metrics_answer,
    enrollment_code_works_once,
    bad_token_is_401_in_the_json_shape,
    malformed_requests_get_the_json_shape,
    revoked_device_is_refused,
    rotation_kills_the_old_token,
    admin_routes_need_a_bureau_admin,
    admin_builds_a_province_and_issues_codes,
    csv_import_reports_bad_rows_and_keeps_good_ones,
    erasure_keeps_the_school_count,
    venues_are_public,
);

async fn health_ready_and_metrics_answer(s: &TestServer) {
    let health = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = s
        .http
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["leader"], true, "a single node leads");
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for name in [
        "kepu_ws_connections",
        "kepu_merge_seconds",
        "kepu_docs_in_memory",
        "kepu_batch_size",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

async fn enrollment_code_works_once(s: &TestServer) {
    let p = place(&s.db.store).await;
    let pupil = user(
        &s.db.store,
        Role::Pupil,
        Some(p.school),
        None,
        Some("张小明"),
    )
    .await;
    let code = s.accounts.issue_enrollment_code(pupil, 7).await.unwrap();
    let body = json!({ "code": code.code.expose().to_lowercase() });
    let first = s
        .http
        .post(s.url("/api/enroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let enrolled: Value = first.json().await.unwrap();
    assert_eq!(enrolled["user_id"], pupil.to_string());
    assert_eq!(enrolled["pupil_id"], pupil.to_string());
    assert_eq!(enrolled["role"], "pupil");
    assert_eq!(enrolled["school_id"], p.school.to_string());
    assert_eq!(enrolled["token"].as_str().unwrap().len(), 43);
    assert!(!enrolled.to_string().contains("张小明"));

    let second = s
        .http
        .post(s.url("/api/enroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(second, 400).await, "invalid_enrollment_code");
}

async fn bad_token_is_401_in_the_json_shape(s: &TestServer) {
    let device = "0191f3a0-0000-7000-8000-000000000000";
    let rotate = s.url(&format!("/api/devices/{device}/rotate"));
    let missing = s.http.post(&rotate).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(missing, 401).await, "missing_token");
    let bad = s
        .http
        .post(&rotate)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad, 401).await, "invalid_token");
    let unknown = kepu_server::accounts::DeviceToken::generate();
    let response = s
        .http
        .get(s.url("/api/admin/devices"))
        .bearer_auth(unknown.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "invalid_token");
}

async fn malformed_requests_get_the_json_shape(s: &TestServer) {
    let not_json = s
        .http
        .post(s.url("/api/enroll"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(not_json, 400).await, "bad_json");
    let wrong_shape = s
        .http
        .post(s.url("/api/enroll"))
        .json(&json!({ "code": 12345 }))
        .send()
        .await
        .unwrap();
    let code = wrong_shape.status();
    let body = wrong_shape.text().await.unwrap();
    assert_eq!(code, 400);
    assert!(!body.contains("12345"), "the value is not echoed: {body}");
    let no_type = s
        .http
        .post(s.url("/api/enroll"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(no_type, 415).await, "unsupported_media_type");
    let unknown = s.http.get(s.url("/api/nothing-here")).send().await.unwrap();
    assert_eq!(error_code(unknown, 404).await, "not_found");
    let wrong_method = s.http.get(s.url("/api/enroll")).send().await.unwrap();
    assert_eq!(error_code(wrong_method, 405).await, "method_not_allowed");
}

async fn revoked_device_is_refused(s: &TestServer) {
    let admin = s.admin_token().await;
    let p = place(&s.db.store).await;
    let teacher = user(&s.db.store, Role::Teacher, Some(p.school), None, None).await;
    let (device, token) = s.enroll(teacher).await;
    let revoke = s
        .http
        .post(s.url(&format!("/api/admin/devices/{device}/revoke")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let body: Value = revoke.json().await.unwrap();
    assert_eq!(body["revoked"], true);
    let after = s
        .http
        .post(s.url(&format!("/api/devices/{device}/rotate")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(after, 401).await, "device_revoked");
    let listed: Value = s
        .http
        .get(s.url(&format!("/api/admin/devices?user_id={teacher}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["devices"][0]["revoked_at"].is_i64());
}

async fn rotation_kills_the_old_token(s: &TestServer) {
    let p = place(&s.db.store).await;
    let staff = user(&s.db.store, Role::VenueStaff, None, Some(p.venue), None).await;
    let (device, old) = s.enroll(staff).await;
    let rotate = s.url(&format!("/api/devices/{device}/rotate"));
    let response = s.http.post(&rotate).bearer_auth(&old).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let new: Value = response.json().await.unwrap();
    let new = new["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let with_old = s.http.post(&rotate).bearer_auth(&old).send().await.unwrap();
    assert_eq!(error_code(with_old, 401).await, "invalid_token");
    let with_new = s.http.post(&rotate).bearer_auth(&new).send().await.unwrap();
    assert_eq!(with_new.status(), 200);
    // Another device cannot rotate this one.
    let (_, other) = s.enroll(staff).await;
    let foreign = s
        .http
        .post(&rotate)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(foreign, 403).await, "forbidden");
}

async fn admin_routes_need_a_bureau_admin(s: &TestServer) {
    let p = place(&s.db.store).await;
    let teacher = user(&s.db.store, Role::Teacher, Some(p.school), None, None).await;
    let (_, token) = s.enroll(teacher).await;
    let response = s
        .http
        .post(s.url("/api/admin/cities"))
        .bearer_auth(&token)
        .json(&json!({ "name": "岳阳市" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 403).await, "forbidden");
}

async fn post_admin(s: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let response = s
        .http
        .post(s.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn admin_builds_a_province_and_issues_codes(s: &TestServer) {
    let admin = s.admin_token().await;
    let city = post_admin(s, &admin, "/api/admin/cities", json!({ "name": "衡阳市" })).await;
    let county = post_admin(
        s,
        &admin,
        "/api/admin/counties",
        json!({ "city_id": city["id"], "name": "南岳区" }),
    )
    .await;
    let school = post_admin(
        s,
        &admin,
        "/api/admin/schools",
        json!({ "county_id": county["id"], "name": "南岳区实验小学" }),
    )
    .await;
    post_admin(
        s,
        &admin,
        "/api/admin/venues",
        json!({ "county_id": county["id"], "name": "南岳科普馆", "kind": "education_base" }),
    )
    .await;
    let teacher = post_admin(
        s,
        &admin,
        "/api/admin/users",
        json!({ "role": "teacher", "school_id": school["id"], "display_name": "刘老师" }),
    )
    .await;
    let code = post_admin(
        s,
        &admin,
        &format!(
            "/api/admin/users/{}/enrollment-codes",
            teacher["id"].as_str().unwrap()
        ),
        json!({ "days": 2 }),
    )
    .await;
    let enrolled = post_admin(s, "", "/api/enroll", json!({ "code": code["code"] })).await;
    assert_eq!(enrolled["role"], "teacher");
    assert_eq!(enrolled["school_id"], school["id"]);

    let duplicate = s
        .http
        .post(s.url("/api/admin/schools"))
        .bearer_auth(&admin)
        .json(&json!({ "county_id": county["id"], "name": "南岳区实验小学" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(duplicate, 409).await, "conflict");
}

async fn csv_import_reports_bad_rows_and_keeps_good_ones(s: &TestServer) {
    let admin = s.admin_token().await;
    let p = place(&s.db.store).await;
    let csv = "display_name,external_ref\n张三,A1\n,A2\n李四,A3\n王五,A1\n赵六\n";
    let response = s
        .http
        .post(s.url(&format!("/api/admin/schools/{}/pupils/import", p.school)))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["imported"], 3);
    let lines: Vec<i64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 5]);
    assert!(
        !report.to_string().contains("王五"),
        "no names in the report"
    );
    assert_eq!(s.db.store.anonymous_pupil_count(p.school).await.unwrap(), 3);

    let no_header = s
        .http
        .post(s.url(&format!("/api/admin/schools/{}/pupils/import", p.school)))
        .bearer_auth(&admin)
        .body("name\nx\n")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(no_header, 400).await, "invalid_input");
}

async fn erasure_keeps_the_school_count(s: &TestServer) {
    let admin = s.admin_token().await;
    let p = place(&s.db.store).await;
    let pupil = user(
        &s.db.store,
        Role::Pupil,
        Some(p.school),
        None,
        Some("陈小雨"),
    )
    .await;
    user(
        &s.db.store,
        Role::Pupil,
        Some(p.school),
        None,
        Some("周小可"),
    )
    .await;
    let (_, pupil_token) = s.enroll(pupil).await;
    let count_url = s.url(&format!("/api/admin/schools/{}/pupil-count", p.school));
    let count = |url: String| async {
        let body: Value = s
            .http
            .get(url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["pupils"].as_i64().unwrap()
    };
    assert_eq!(count(count_url.clone()).await, 2);
    let erased = post_admin(
        s,
        &admin,
        &format!("/api/admin/pupils/{pupil}/erase"),
        json!({}),
    )
    .await;
    assert_eq!(erased["erased"], true);
    assert_eq!(erased["revoked_devices"], 1);
    assert_eq!(count(count_url).await, 2);
    let stored = s.db.store.user(pupil).await.unwrap().unwrap();
    assert_eq!(stored.display_name, None);
    assert_eq!(stored.school_id, None);
    let refused = s
        .http
        .get(s.url("/api/admin/devices"))
        .bearer_auth(&pupil_token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refused, 401).await, "device_revoked");
}

async fn venues_are_public(s: &TestServer) {
    place(&s.db.store).await;
    let venues: Value = s
        .http
        .get(s.url("/api/venues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(venues["venues"][0]["name"], "湖南省科技馆");
    assert_eq!(venues["venues"][0]["kind"], "science_museum");
}
