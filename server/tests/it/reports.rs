//! Programme reports end to end, on SQLite and PostgreSQL: devices sync school logs,
//! bookings with check-ins and volunteer activities over the websocket; the reports count
//! what a person would count by hand.

use std::time::Duration;

use kepu_server::accounts::Role;
use kepu_server::ids::new_id;
use kepu_server::reports::{UTC_OFFSET_MS, days_from_civil};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{PupilId, SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::booking::ScanMethod;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{TestServer, error_code, user};
use crate::sync_client::Device;
use crate::world::{Enroller, new_doc, scan_id};

crate::support::on_both_databases!(multi_thread server: reports_count_what_devices_synced);

/// Noon China time of a date, unix ms.
fn cn_noon(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d) * 86_400_000 - UTC_OFFSET_MS + 12 * 3_600_000
}

const DAY: i64 = 86_400_000;
/// The report window: 2026 up to 30 September (day 273, weeks 1–39 all completed).
const QUERY: &str = "year=2026&as_of=2026-09-30";

struct Province {
    city_a: Uuid,
    county_a: Uuid,
    city_b: Uuid,
    county_b: Uuid,
    s1: Uuid,
    s2: Uuid,
    s3: Uuid,
    venue: Uuid,
}

async fn province(server: &TestServer) -> Province {
    let store = &server.db.store;
    let city_a = store.create_city(new_id(), "长沙市").await.unwrap().id;
    let county_a = store
        .create_county(new_id(), city_a, "岳麓区")
        .await
        .unwrap()
        .id;
    let city_b = store.create_city(new_id(), "株洲市").await.unwrap().id;
    let county_b = store
        .create_county(new_id(), city_b, "天元区")
        .await
        .unwrap()
        .id;
    let s1 = store
        .create_school(new_id(), county_a, "博才小学")
        .await
        .unwrap()
        .id;
    let s2 = store
        .create_school(new_id(), county_a, "麓山小学")
        .await
        .unwrap()
        .id;
    let s3 = store
        .create_school(new_id(), county_b, "天元实验中学")
        .await
        .unwrap()
        .id;
    let venue = store
        .create_venue(new_id(), county_a, "湖南省科技馆", "science_museum")
        .await
        .unwrap()
        .id;
    Province {
        city_a,
        county_a,
        city_b,
        county_b,
        s1,
        s2,
        s3,
        venue,
    }
}

async fn get(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    server
        .http
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &TestServer, path: &str, token: &str) -> Value {
    let r = get(server, path, token).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn row<'a>(report: &'a Value, key: &str, id: Uuid) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == id.to_string())
        .unwrap_or_else(|| panic!("no row {id} in {report}"))
}

fn misses(row: &Value) -> Vec<&str> {
    row["misses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

/// How long a device waits, on one connection, for the server to acknowledge its changes.
const ACK_WAIT: Duration = Duration::from_secs(15);

/// Syncs `doc` until the server acknowledges every change of it (the heads it sends cover
/// them), on one connection: a reconnect would hide a lost acknowledgement.
async fn sync_until_stored(device: &mut Device, server: &TestServer, doc: DocumentId) {
    if !device.online() {
        device.connect(server.addr).await;
    }
    let deadline = std::time::Instant::now() + ACK_WAIT;
    while std::time::Instant::now() < deadline {
        device.pump(Duration::from_millis(200)).await;
        assert!(
            device.online(),
            "the server closed the connection while {doc} waited for its acknowledgement"
        );
        if device.server_has_all(&doc) {
            return;
        }
    }
    let trouble: Vec<&kepu_sync_core::engine::Event> = device
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                kepu_sync_core::engine::Event::Refused { .. }
                    | kepu_sync_core::engine::Event::ProtocolError { .. }
            )
        })
        .collect();
    panic!(
        "the server did not acknowledge every change of {doc} within {ACK_WAIT:?} on an open \
         connection (a lost acknowledgement); refusals and protocol errors: {trouble:?}"
    );
}

/// The school's 2026 log, the one document every device computes the id of. The server
/// creates it for the current year (within seconds for a new school); in a later year the
/// teacher creates it.
async fn school_log(teacher: &mut Device, server: &TestServer, school: Uuid) -> DocumentId {
    let log = DocumentId::school_log(SchoolId(school), 2026);
    let now = kepu_server::clock::now_ms();
    if kepu_sync_core::calendar::china_year(now) != 2026 {
        // The server creates the current year's logs only: store the 2026 log as the
        // server wrote it then (devices may not create it).
        let mut doc = automerge::Automerge::new();
        let server_writer =
            kepu_sync_core::writer::Writer::server(kepu_sync_core::ids::DeviceId(Uuid::nil()));
        let edit = Edit::CreateSchoolLog {
            school: SchoolId(school),
            year: 2026,
        };
        kepu_sync_core::edits::apply_unchecked(&mut doc, &server_writer, now, &edit).unwrap();
        let changes = doc
            .get_changes(&[])
            .into_iter()
            .map(|c| kepu_sync_core::engine::StoredChange {
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .collect();
        let append = kepu_sync_core::engine::StorageTask::Append {
            doc: log,
            kind: Some(kepu_sync_core::schema::DocKind::SchoolLog),
            changes,
            heads: doc.get_heads(),
            owners: Vec::new(),
        };
        server
            .db
            .store
            .run_document_tasks(&[&append], now)
            .await
            .unwrap();
    }
    crate::world::await_server_doc(teacher, server.addr, log).await;
    log
}

#[allow(clippy::too_many_lines)]
async fn reports_count_what_devices_synced(server: &TestServer) {
    let p = province(server).await;
    let store = &server.db.store;
    let enroller = Enroller::new(store, server.addr);
    let admin = server.admin_token().await;

    // Pupils: four at 博才小学, two at 麓山小学, one at 天元实验中学.
    let mut s1_pupils = Vec::new();
    for _ in 0..4 {
        s1_pupils.push(PupilId(
            user(store, Role::Pupil, Some(p.s1), None, None).await,
        ));
    }
    for _ in 0..2 {
        user(store, Role::Pupil, Some(p.s2), None, None).await;
    }
    user(store, Role::Pupil, Some(p.s3), None, None).await;

    // The venue publishes a slot in March 2026 and one in 2025 (outside the year).
    let mut staff = enroller
        .device(Role::VenueStaff, None, Some(p.venue), 11)
        .await;
    let venue = VenueId(p.venue);
    let venue_doc = DocumentId::from_bytes(*venue.as_bytes());
    // The server creates the venue's document within seconds.
    crate::world::await_server_doc(&mut staff, server.addr, venue_doc).await;
    let slot_2026 = SlotId(Uuid::from_u128(2026));
    let slot_2025 = SlotId(Uuid::from_u128(2025));
    for (slot, start) in [
        (slot_2026, cn_noon(2026, 3, 10)),
        (slot_2025, cn_noon(2025, 6, 1)),
    ] {
        staff.edit(
            venue_doc,
            Edit::PutSlot {
                slot,
                start,
                end: start + 2 * 3_600_000,
                capacity: 60,
                label: "课后".into(),
            },
        );
    }
    sync_until_stored(&mut staff, server, venue_doc).await;

    // 博才小学 visits in March 2026 (two of three pupils arrive) and in 2025.
    let mut t1 = enroller.device(Role::Teacher, Some(p.s1), None, 21).await;
    let visit = new_doc();
    let old_visit = new_doc();
    for (doc, slot) in [(visit, slot_2026), (old_visit, slot_2025)] {
        t1.edit(
            doc,
            Edit::CreateBooking {
                venue,
                slot,
                school: SchoolId(p.s1),
                party_size: 3,
                roster: s1_pupils[..3].to_vec(),
            },
        );
    }
    for (doc, n) in [(visit, 2), (old_visit, 1)] {
        for pupil in &s1_pupils[..n] {
            t1.edit(
                doc,
                Edit::CheckIn {
                    pupil: *pupil,
                    scan_id: scan_id(),
                    method: ScanMethod::Manual,
                    proof: None,
                },
            );
        }
    }
    // 麓山小学 books the same slot but nobody arrives: not a visit.
    let mut t2 = enroller.device(Role::Teacher, Some(p.s2), None, 22).await;
    let no_show = new_doc();
    t2.edit(
        no_show,
        Edit::CreateBooking {
            venue,
            slot: slot_2026,
            school: SchoolId(p.s2),
            party_size: 2,
            roster: vec![PupilId(new_id())],
        },
    );

    // School logs. 博才小学: a session every week 1–39 (two in week 1), one expert
    // lecture, a tour stop that three of its four pupils attend (recorded by the teacher
    // and by the tour's staff, the same pupil twice).
    let log1 = school_log(&mut t1, server, p.s1).await;
    let jan1 = cn_noon(2026, 1, 1);
    for week in 0..39 {
        t1.edit(
            log1,
            Edit::LogSession {
                id: format!("w{week}"),
                at: jan1 + week * 7 * DAY,
                topic: "科学小实验".into(),
                minutes: 40,
            },
        );
    }
    t1.edit(
        log1,
        Edit::LogSession {
            id: "w0b".into(),
            at: jan1 + 2 * DAY,
            topic: "观察植物".into(),
            minutes: 30,
        },
    );
    // A session after the as-of date does not count.
    t1.edit(
        log1,
        Edit::LogSession {
            id: "late".into(),
            at: cn_noon(2026, 10, 20),
            topic: "later".into(),
            minutes: 40,
        },
    );
    t1.edit(
        log1,
        Edit::LogLecture {
            id: "lecture-1".into(),
            at: cn_noon(2026, 5, 12),
            topic: "院士进校园".into(),
            minutes: 90,
        },
    );
    t1.edit(
        log1,
        Edit::AddTourStop {
            id: "stop-1".into(),
            at: cn_noon(2026, 4, 20),
            location: "操场".into(),
            days: 2,
        },
    );
    for pupil in &s1_pupils[..2] {
        t1.edit(
            log1,
            Edit::TourAttendance {
                stop: "stop-1".into(),
                pupil: *pupil,
            },
        );
    }
    sync_until_stored(&mut t1, server, visit).await;
    sync_until_stored(&mut t1, server, old_visit).await;
    sync_until_stored(&mut t1, server, log1).await;
    staff.want(log1);
    staff.sync(server.addr).await;
    assert!(staff.doc(&log1).is_some(), "tour staff read the school log");
    for pupil in &s1_pupils[1..3] {
        staff.edit(
            log1,
            Edit::TourAttendance {
                stop: "stop-1".into(),
                pupil: *pupil,
            },
        );
    }
    sync_until_stored(&mut staff, server, log1).await;

    // 麓山小学: sessions in weeks 1 and 2 only, no lecture, no tour stop.
    let log2 = school_log(&mut t2, server, p.s2).await;
    for week in 0..2 {
        t2.edit(
            log2,
            Edit::LogSession {
                id: format!("w{week}"),
                at: jan1 + week * 7 * DAY,
                topic: "科学".into(),
                minutes: 45,
            },
        );
    }
    sync_until_stored(&mut t2, server, no_show).await;
    sync_until_stored(&mut t2, server, log2).await;

    // A volunteer of 博才小学: 120 minutes confirmed, 60 confirmed as 30, 45 confirmed
    // but in 2025, 30 never confirmed: 150 minutes count.
    let mut volunteer = enroller.device(Role::Volunteer, Some(p.s1), None, 31).await;
    let hours_doc = new_doc();
    volunteer.edit(
        hours_doc,
        Edit::CreateActivityLog {
            volunteer: volunteer.engine.config().writer.user,
            school: Some(SchoolId(p.s1)),
        },
    );
    for (id, start, minutes) in [
        ("a", cn_noon(2026, 4, 1), 120),
        ("b", cn_noon(2026, 5, 1), 60),
        ("c", cn_noon(2025, 12, 1), 45),
        ("d", cn_noon(2026, 6, 1), 30),
    ] {
        volunteer.edit(
            hours_doc,
            Edit::LogActivity {
                activity_id: id.into(),
                venue,
                activity_kind: "讲解".into(),
                start,
                minutes,
                description: "展厅讲解".into(),
            },
        );
    }
    sync_until_stored(&mut volunteer, server, hours_doc).await;
    staff.want(hours_doc);
    staff.sync(server.addr).await;
    for (id, minutes) in [("a", None), ("b", Some(30)), ("c", None)] {
        staff.edit(
            hours_doc,
            Edit::ConfirmActivity {
                activity_id: id.into(),
                approved: true,
                minutes,
            },
        );
    }
    sync_until_stored(&mut staff, server, hours_doc).await;

    // An attending pupil of 博才小学 asks to be erased: still counted, anonymously.
    server
        .accounts
        .erase_pupil(s1_pupils[0])
        .await
        .expect("erase pupil");

    let path = format!("/api/reports/schools?{QUERY}");
    let mut report = Value::Null;
    for _ in 0..100 {
        report = get_json(server, &path, &admin).await;
        let r = row(&report, "school_id", p.s1);
        if r["sessions"] == 40
            && r["pupils_reached"] == 3
            && r["venue_visits"] == 1
            && r["volunteer_minutes"] == 150
            && row(&report, "school_id", p.s2)["sessions"] == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["year"], 2026);
    assert_eq!(report["as_of"], "2026-09-30");
    assert_eq!(report["rows"].as_array().unwrap().len(), 3);

    let r1 = row(&report, "school_id", p.s1);
    assert_eq!(r1["school"], "博才小学");
    assert_eq!(r1["county"], "岳麓区");
    assert_eq!(r1["city"], "长沙市");
    assert_eq!(
        r1["venue_visits"], 1,
        "the 2025 visit is not this year's: {r1}"
    );
    assert_eq!(
        r1["sessions"], 40,
        "39 weekly sessions and a second in week 1"
    );
    assert_eq!(r1["session_minutes"], 39 * 40 + 30);
    assert_eq!(r1["weeks_elapsed"], 39);
    assert_eq!(r1["weeks_with_session"], 39);
    assert_eq!(r1["weeks_missed"], 0);
    assert_eq!(r1["week_sessions"][0], 2);
    assert_eq!(r1["lectures"], 1);
    assert_eq!(r1["tour_stops"], 1);
    assert_eq!(r1["tour_days"], 2);
    assert_eq!(r1["pupils"], 4, "the erased pupil still counts: {r1}");
    assert_eq!(r1["pupils_reached"], 3, "three pupils, one recorded twice");
    assert_eq!(r1["tour_coverage"], 0.75);
    assert_eq!(r1["volunteer_minutes"], 150);
    assert_eq!(r1["volunteer_hours"], 2.5);
    assert_eq!(misses(r1), vec!["tour_coverage_incomplete"]);

    let r2 = row(&report, "school_id", p.s2);
    assert_eq!(
        r2["venue_visits"], 0,
        "a booking nobody arrived at is no visit"
    );
    assert_eq!(r2["sessions"], 2);
    assert_eq!(r2["weeks_with_session"], 2);
    assert_eq!(r2["weeks_missed"], 37);
    assert_eq!(r2["lectures"], 0);
    assert_eq!(r2["tour_stops"], 0);
    assert_eq!(r2["pupils"], 2);
    assert_eq!(r2["pupils_reached"], 0);
    assert_eq!(
        misses(r2),
        vec![
            "no_venue_visit",
            "weeks_without_session",
            "no_expert_lecture",
            "tour_coverage_incomplete"
        ]
    );
    let r3 = row(&report, "school_id", p.s3);
    assert_eq!(r3["sessions"], 0);
    assert_eq!(r3["weeks_missed"], 39);
    assert_eq!(r3["pupils"], 1);

    // Rebuilding the projections gives the same report.
    kepu_server::records::rebuild(store).await.unwrap();
    let rebuilt = get_json(server, &path, &admin).await;
    assert_eq!(rebuilt, report, "rebuild reproduces the records");

    // Before 1 July only the weekly target can be missed.
    let spring = get_json(
        server,
        "/api/reports/schools?year=2026&as_of=2026-03-31",
        &admin,
    )
    .await;
    assert_eq!(misses(row(&spring, "school_id", p.s1)), Vec::<&str>::new());
    assert_eq!(
        misses(row(&spring, "school_id", p.s2)),
        vec!["weeks_without_session"]
    );

    // Counties and cities are the sums of their schools.
    let counties = get_json(server, &format!("/api/reports/counties?{QUERY}"), &admin).await;
    let ca = row(&counties, "id", p.county_a);
    let schools: Vec<&Value> = [p.s1, p.s2]
        .iter()
        .map(|s| row(&report, "school_id", *s))
        .collect();
    for key in [
        "venue_visits",
        "sessions",
        "weeks_missed",
        "lectures",
        "tour_stops",
        "tour_days",
        "pupils",
        "pupils_reached",
        "volunteer_minutes",
    ] {
        let sum: i64 = schools.iter().map(|r| r[key].as_i64().unwrap()).sum();
        assert_eq!(ca[key].as_i64(), Some(sum), "county {key}");
    }
    assert_eq!(ca["schools"], 2);
    assert_eq!(ca["coverage_rate"], 0.5, "3 of 6 pupils");
    assert_eq!(ca["schools_meeting"]["venue_visit"], 1);
    assert_eq!(ca["schools_meeting"]["weekly_sessions"], 1);
    assert_eq!(ca["schools_meeting"]["expert_lecture"], 1);
    assert_eq!(ca["schools_meeting"]["tour_coverage"], 0);
    assert_eq!(ca["schools_with_misses"], 2);
    assert_eq!(row(&counties, "id", p.county_b)["schools"], 1);
    let cities = get_json(server, &format!("/api/reports/cities?{QUERY}"), &admin).await;
    assert_eq!(cities["rows"].as_array().unwrap().len(), 2);
    let city_a = row(&cities, "id", p.city_a);
    for key in ["sessions", "pupils", "pupils_reached", "venue_visits"] {
        assert_eq!(city_a[key], ca[key], "city {key}");
    }
    assert_eq!(row(&cities, "id", p.city_b)["pupils"], 1);
    // Filters: one city, one county.
    let only_b = get_json(
        server,
        &format!("/api/reports/schools?{QUERY}&city={}", p.city_b),
        &admin,
    )
    .await;
    assert_eq!(only_b["rows"].as_array().unwrap().len(), 1);
    let only_a = get_json(
        server,
        &format!("/api/reports/schools?{QUERY}&county={}", p.county_a),
        &admin,
    )
    .await;
    assert_eq!(only_a["rows"].as_array().unwrap().len(), 2);

    // CSV: a BOM, a header row, the same numbers.
    for path in [
        format!("/api/reports/schools?{QUERY}&format=csv"),
        format!("/api/reports/schools.csv?{QUERY}"),
    ] {
        let r = get(server, &path, &admin).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "UTF-8 BOM first");
        let mut csv = csv::Reader::from_reader(&bytes[3..]);
        let headers = csv.headers().unwrap().clone();
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        for rec in &records {
            let json = row(&report, "school_id", rec[col("school_id")].parse().unwrap());
            assert_eq!(rec[col("school")], *json["school"].as_str().unwrap());
            for key in [
                "venue_visits",
                "sessions",
                "weeks_missed",
                "lectures",
                "pupils",
                "pupils_reached",
                "volunteer_minutes",
            ] {
                assert_eq!(
                    rec[col(key)].parse::<i64>().unwrap(),
                    json[key].as_i64().unwrap(),
                    "csv {key}"
                );
            }
            assert_eq!(rec[col("misses")], misses(json).join(";"));
        }
    }
    let r = get(
        server,
        &format!("/api/reports/counties.csv?{QUERY}"),
        &admin,
    )
    .await;
    let bytes = r.bytes().await.unwrap();
    let mut csv = csv::Reader::from_reader(&bytes[3..]);
    assert_eq!(&csv.headers().unwrap()[1], "county");
    let headers = csv.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let county_rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let a = county_rows
        .iter()
        .find(|r| r[0] == p.county_a.to_string())
        .unwrap();
    assert_eq!(&a[1], "岳麓区");
    assert_eq!(&a[col("city")], "长沙市");
    for key in ["schools", "sessions", "pupils", "pupils_reached"] {
        assert_eq!(
            a[col(key)].parse::<i64>().unwrap(),
            ca[key].as_i64().unwrap(),
            "county csv {key}"
        );
    }
    assert_eq!(&a[col("coverage_rate")], "0.5");
    assert_eq!(&a[col("schools_with_full_tour_coverage")], "0");

    // A bureau administrator signed in with a browser session reads the page too.
    let boss = user(store, Role::BureauAdmin, None, None, None).await;
    server
        .accounts
        .set_web_login(boss, "report-reader", "a long enough password")
        .await
        .unwrap();
    let r = server
        .http
        .post(server.url("/api/session"))
        .json(&serde_json::json!({"login": "report-reader", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = server
        .http
        .get(server.url(&format!("/reports?level=cities&{QUERY}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<svg") && html.contains("株洲市"));
    let r = server
        .http
        .get(server.url(&format!("/api/reports/cities?{QUERY}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The printable page: charts drawn as SVG, school names, misses highlighted.
    let r = get(server, &format!("/reports?level=schools&{QUERY}"), &admin).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.matches("<svg").count() >= 3, "three charts");
    for name in ["博才小学", "麓山小学", "天元实验中学", "流动科技馆未全覆盖"]
    {
        assert!(html.contains(name), "page shows {name}");
    }
    assert!(html.contains("class=\"num miss\""), "misses highlighted");
    assert!(
        html.contains("class=\"w0 miss\""),
        "weeks without a session are red in the heat strip"
    );
    assert!(html.contains("@media print"));
    let html = get(
        server,
        &format!("/reports?level=counties&lang=en&{QUERY}"),
        &admin,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(html.contains("<svg") && html.contains("岳麓区") && html.contains("Tour coverage"));

    // Who may read: a teacher sees their own school's row only.
    let teacher = enroller
        .enroll(user(store, Role::Teacher, Some(p.s2), None, None).await)
        .await
        .1;
    let own = get_json(server, &format!("/api/reports/schools?{QUERY}"), &teacher).await;
    let rows = own["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["school_id"], p.s2.to_string());
    let r = get(server, &format!("/api/reports/counties?{QUERY}"), &teacher).await;
    assert_eq!(error_code(r, 403).await, "forbidden");
    let html = get(server, &format!("/reports?{QUERY}"), &teacher)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("麓山小学") && !html.contains("博才小学"));
    for role in [Role::Pupil, Role::Volunteer, Role::VenueStaff] {
        let (school, venue) = match role {
            Role::VenueStaff => (None, Some(p.venue)),
            _ => (Some(p.s1), None),
        };
        let token = enroller
            .enroll(user(store, role, school, venue, None).await)
            .await
            .1;
        let r = get(server, &format!("/api/reports/schools?{QUERY}"), &token).await;
        assert_eq!(error_code(r, 403).await, "forbidden", "{role:?}");
    }
    let r = server
        .http
        .get(server.url("/api/reports/schools"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = get(server, "/api/reports/schools", "not-a-token").await;
    assert_eq!(r.status(), 401);
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(server.url("/reports?level=cities"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the page sends people to log in");
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login?next=")
    );

    // Bad query values: 400 with a clear message.
    for bad in [
        "/api/reports/schools?year=99999",
        "/api/reports/schools?year=twenty",
        "/api/reports/planets?year=2026",
        "/api/reports/schools?year=2026&as_of=2025-12-31",
        "/api/reports/schools?year=2026&as_of=2026-02-30",
        "/api/reports/schools?year=2026&format=xml",
        "/api/reports/schools?as_of=2099-01-01",
        "/api/reports/schools?city=not-an-id",
        "/reports?level=planets",
        "/reports?lang=fr",
        "/reports?year=1066",
    ] {
        let r = get(server, bad, &admin).await;
        assert_eq!(error_code(r, 400).await, "invalid_input", "{bad}");
    }
    let r = get(
        server,
        "/api/reports/schools?year=2026&as_of=2025-12-31",
        &admin,
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the start of 2026"),
        "{body}"
    );
}
