//! Property: after random offline histories played through real websockets (teachers and
//! gates creating bookings, checking pupils in and out, cancelling; a volunteer logging
//! activities and staff confirming them; devices going on- and offline in any order), the
//! records equal what the sync-core rules compute from the stored documents, and
//! `rebuild-projections` reproduces the same rows. On SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use kepu_server::accounts::Role;
use kepu_server::store::{AnomalyRow, BookingRow, ScanRow, VolunteerHours};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{PupilId, SchoolId, SlotId, VenueId};
use kepu_sync_core::rules::{attendance::attendance, volunteer};
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::schema::venue::Venue;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::support::{Db, TestServer, place};
use crate::sync_client::Device;
use crate::world::{Enroller, check_in, create_booking, new_doc, pupils, scan_id};

#[test]
fn sqlite_records_equal_the_rules_after_random_offline_histories() {
    run_property(Db::Sqlite);
}

#[test]
fn postgres_records_equal_the_rules_after_random_offline_histories() {
    run_property(Db::Postgres);
}

/// Devices: 0, 1 teachers; 2, 3 venue staff (gates, confirmers); 4 the volunteer.
const TEACHERS: usize = 2;
const SCANNERS: usize = 4;
const DEVICES: usize = 5;
const VOLUNTEER: usize = 4;
const PUPILS: usize = 8;
const PUMP: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
enum Op {
    Book {
        teacher: usize,
        roster: usize,
    },
    CheckIn {
        dev: usize,
        booking: usize,
        pupil: usize,
    },
    CheckOut {
        dev: usize,
        booking: usize,
        pupil: usize,
    },
    Cancel {
        teacher: usize,
        booking: usize,
    },
    Log {
        minutes: u32,
    },
    Confirm {
        staff: usize,
        activity: usize,
        approved: bool,
        minutes: Option<u32>,
    },
    Toggle {
        dev: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..TEACHERS, 1..=6usize).prop_map(|(teacher, roster)| Op::Book { teacher, roster }),
        6 => (0..SCANNERS, 0..8usize, 0..PUPILS)
            .prop_map(|(dev, booking, pupil)| Op::CheckIn { dev, booking, pupil }),
        2 => (0..SCANNERS, 0..8usize, 0..PUPILS)
            .prop_map(|(dev, booking, pupil)| Op::CheckOut { dev, booking, pupil }),
        1 => (0..TEACHERS, 0..8usize).prop_map(|(teacher, booking)| Op::Cancel { teacher, booking }),
        1 => (10..120u32).prop_map(|minutes| Op::Log { minutes }),
        2 => (2..4usize, 0..8usize, any::<bool>(), proptest::option::of(5..100u32))
            .prop_map(|(staff, activity, approved, minutes)| Op::Confirm { staff, activity, approved, minutes }),
        4 => (0..DEVICES).prop_map(|dev| Op::Toggle { dev }),
    ]
}

fn run_property(db: Db) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 5,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 6..18), |ops| {
        rt.block_on(history(db, ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

struct World {
    devices: Vec<Device>,
    bookings: Vec<DocumentId>,
    log: DocumentId,
    activities: Vec<String>,
    venue: VenueId,
    school: SchoolId,
    slot: SlotId,
    roster_pool: Vec<PupilId>,
}

impl World {
    async fn settle(&mut self, dev: usize) {
        if self.devices[dev].online() {
            self.devices[dev].pump(PUMP).await;
        }
    }
}

async fn history(db: Db, ops: Vec<Op>) {
    let server = TestServer::start(db).await;
    let p = place(&server.db.store).await;
    let enroller = Enroller::new(&server.db.store, server.addr);
    let (venue, school) = (VenueId(p.venue), SchoolId(p.school));
    let mut devices = Vec::new();
    for seed in 0..TEACHERS {
        devices.push(
            enroller
                .device(Role::Teacher, Some(p.school), None, seed as u8 + 1)
                .await,
        );
    }
    for seed in 0..2u8 {
        devices.push(
            enroller
                .device(Role::VenueStaff, None, Some(p.venue), seed + 20)
                .await,
        );
    }
    devices.push(
        enroller
            .device(Role::Volunteer, Some(p.school), None, 30)
            .await,
    );
    // Small capacity: some bookings end on the wait list.
    let slot = crate::world::publish_slot(&mut devices[2], server.addr, venue, 8).await;
    let log = new_doc();
    let volunteer = devices[VOLUNTEER].engine.config().writer.user;
    devices[VOLUNTEER].edit(
        log,
        Edit::CreateActivityLog {
            volunteer,
            school: Some(school),
        },
    );
    let first = "a0".to_owned();
    devices[VOLUNTEER].edit(log, log_activity(&first, venue, 45));
    devices[VOLUNTEER].connect(server.addr).await;
    devices[VOLUNTEER].pump(Duration::from_millis(150)).await;
    for d in &mut devices[2..4] {
        d.want(log);
    }
    for d in &mut devices {
        if !d.online() {
            d.connect(server.addr).await;
        }
        d.pump(Duration::from_millis(100)).await;
    }
    let mut w = World {
        devices,
        bookings: Vec::new(),
        log,
        activities: vec![first],
        venue,
        school,
        slot,
        roster_pool: pupils(40_000, PUPILS),
    };
    for op in ops {
        play(&mut w, op).await;
    }
    // Everyone back online until quiet.
    for d in &mut w.devices {
        if !d.online() {
            d.connect(server.addr).await;
        }
    }
    for _ in 0..3 {
        for d in &mut w.devices {
            d.pump(Duration::from_millis(80)).await;
        }
    }
    let mut mismatch = String::new();
    for _ in 0..40 {
        mismatch = compare(&server, &w).await;
        if mismatch.is_empty() {
            break;
        }
        for d in &mut w.devices {
            d.pump(Duration::from_millis(30)).await;
        }
    }
    assert!(
        mismatch.is_empty(),
        "records differ from the rules: {mismatch}"
    );
    let before = snapshot(&server, &w).await;
    let n = kepu_server::records::rebuild(&server.db.store)
        .await
        .expect("rebuild");
    assert!(
        n >= before.0.len() + 2,
        "every stored booking, the venue and the log were projected"
    );
    let after = snapshot(&server, &w).await;
    assert_eq!(
        before, after,
        "rebuild-projections reproduces the same rows"
    );
    for d in &mut w.devices {
        d.disconnect();
    }
    server.finish().await;
}

fn log_activity(id: &str, venue: VenueId, minutes: u32) -> Edit {
    Edit::LogActivity {
        activity_id: id.to_owned(),
        venue,
        activity_kind: "讲解".into(),
        start: kepu_server::clock::now_ms() - 7_200_000,
        minutes,
        description: "科普讲解".into(),
    }
}

async fn play(w: &mut World, op: Op) {
    match op {
        Op::Book { teacher, roster } => {
            let b = new_doc();
            let roster = w.roster_pool[..roster].to_vec();
            if w.devices[teacher].try_edit(b, create_booking(w.venue, w.slot, w.school, roster)) {
                w.bookings.push(b);
                for (i, d) in w.devices.iter_mut().enumerate() {
                    if i != teacher && i < SCANNERS {
                        d.want(b);
                    }
                }
                w.settle(teacher).await;
            }
        }
        Op::CheckIn {
            dev,
            booking,
            pupil,
        }
        | Op::CheckOut {
            dev,
            booking,
            pupil,
        } => {
            let Some(&b) = pick(&w.bookings, booking) else {
                return;
            };
            if w.devices[dev].doc(&b).and_then(Booking::read).is_none() {
                return;
            }
            let pupil = w.roster_pool[pupil];
            let edit = if matches!(op, Op::CheckIn { .. }) {
                check_in(pupil).0
            } else {
                Edit::CheckOut {
                    pupil,
                    scan_id: scan_id(),
                    method: ScanMethod::Manual,
                }
            };
            w.devices[dev].try_edit(b, edit);
            w.settle(dev).await;
        }
        Op::Cancel { teacher, booking } => {
            let Some(&b) = pick(&w.bookings, booking) else {
                return;
            };
            if w.devices[teacher].doc(&b).and_then(Booking::read).is_some() {
                w.devices[teacher].try_edit(b, Edit::CancelBooking);
                w.settle(teacher).await;
            }
        }
        Op::Log { minutes } => {
            let id = format!("a{}", w.activities.len());
            if w.devices[VOLUNTEER].try_edit(w.log, log_activity(&id, w.venue, minutes)) {
                w.activities.push(id);
            }
            w.settle(VOLUNTEER).await;
        }
        Op::Confirm {
            staff,
            activity,
            approved,
            minutes,
        } => {
            let Some(a) = pick(&w.activities, activity).cloned() else {
                return;
            };
            let known = w.devices[staff]
                .doc(&w.log)
                .and_then(ActivityLog::read)
                .is_some_and(|l| l.activities.iter().any(|x| x.id == a));
            if known {
                w.devices[staff].try_edit(
                    w.log,
                    Edit::ConfirmActivity {
                        activity_id: a,
                        approved,
                        minutes,
                    },
                );
                w.settle(staff).await;
            }
        }
        Op::Toggle { dev } => {
            if w.devices[dev].online() {
                w.devices[dev].disconnect();
            } else {
                let addr = w.devices[dev].last_addr().expect("was online once");
                w.devices[dev].connect(addr).await;
                w.devices[dev].pump(PUMP).await;
            }
        }
    }
}

fn pick<T>(items: &[T], i: usize) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(i % items.len())
    }
}

/// What the rules say, from the stored documents, against what the records hold.
async fn compare(server: &TestServer, w: &World) -> String {
    let store = &server.db.store;
    let mut out = String::new();
    let venue_doc = DocumentId::from_bytes(*w.venue.as_bytes());
    let venue = Venue::read(&kepu_server::records::load(store, venue_doc).await.unwrap());
    let rows = store.bookings(None, None).await.unwrap();
    for b in &w.bookings {
        let doc = kepu_server::records::load(store, *b).await.unwrap();
        let Some(booking) = Booking::read(&doc) else {
            // Never reached the server (created offline, device never back): no record.
            if rows.iter().any(|r| r.doc_id == b.to_string()) {
                out.push_str(&format!("{b}: a record without a stored booking; "));
            }
            continue;
        };
        let slot = venue.as_ref().and_then(|v| v.slot(booking.slot));
        let a = attendance(&booking, slot);
        let Some(row) = rows.iter().find(|r| r.doc_id == b.to_string()) else {
            out.push_str(&format!("{b}: no booking record; "));
            continue;
        };
        let want = (
            booking.status.as_str().to_owned(),
            booking.wait_position.map(i64::from),
            i64::from(booking.party_size),
            a.expected as i64,
            a.arrived as i64,
            a.inside_now as i64,
        );
        let got = (
            row.status.clone(),
            row.wait_position,
            row.party_size,
            row.expected,
            row.arrived,
            row.inside_now,
        );
        if want != got {
            out.push_str(&format!("{b}: booking {got:?} != rules {want:?}; "));
        }
        let want_scans: BTreeSet<(String, String, String, i64, String, bool)> = a
            .pupils
            .iter()
            .flat_map(|p| {
                p.counted
                    .iter()
                    .map(|s| (s, true))
                    .chain(p.duplicates.iter().map(|s| (s, false)))
            })
            .map(|(s, c)| {
                (
                    s.pupil.to_string(),
                    s.device.to_string(),
                    s.scan_id.clone(),
                    s.at,
                    s.method.as_str().to_owned(),
                    c,
                )
            })
            .collect();
        let got_scans: BTreeSet<_> = store
            .booking_scans(&b.to_string())
            .await
            .unwrap()
            .into_iter()
            .map(|s: ScanRow| {
                (
                    s.pupil_id,
                    s.device_id,
                    s.scan_id,
                    s.at,
                    s.method,
                    s.counted,
                )
            })
            .collect();
        if want_scans != got_scans {
            out.push_str(&format!(
                "{b}: scans {got_scans:?} != rules {want_scans:?}; "
            ));
        }
        let want_anomalies: BTreeSet<(String, String, String, i64)> = a
            .anomalies
            .iter()
            .map(|x| {
                (
                    x.pupil.to_string(),
                    x.device.to_string(),
                    x.kind.as_str().to_owned(),
                    x.at,
                )
            })
            .collect();
        let got_anomalies: BTreeSet<_> = store
            .booking_anomalies(&b.to_string())
            .await
            .unwrap()
            .into_iter()
            .map(|x: AnomalyRow| (x.pupil_id, x.device_id, x.kind, x.at))
            .collect();
        if want_anomalies != got_anomalies {
            out.push_str(&format!(
                "{b}: anomalies {got_anomalies:?} != rules {want_anomalies:?}; "
            ));
        }
    }
    let log = ActivityLog::read(&kepu_server::records::load(store, w.log).await.unwrap());
    let hours = store.volunteer_hours(None).await.unwrap();
    if let Some(log) = log {
        let m = volunteer::minutes(&log);
        let want = (
            m.confirmed as i64,
            m.unconfirmed as i64,
            m.activities as i64,
        );
        let got = hours
            .iter()
            .find(|h| h.volunteer_id == log.volunteer.to_string())
            .map(|h: &VolunteerHours| (h.confirmed_minutes, h.unconfirmed_minutes, h.activities));
        if got != Some(want) {
            out.push_str(&format!("volunteer hours {got:?} != rules {want:?}; "));
        }
    }
    out
}

/// Every record row the API serves, in an order that does not depend on arrival.
async fn snapshot(
    server: &TestServer,
    w: &World,
) -> (
    Vec<BookingRow>,
    Vec<Vec<ScanRow>>,
    Vec<Vec<AnomalyRow>>,
    Vec<VolunteerHours>,
) {
    let store = &server.db.store;
    let mut bookings = store.bookings(None, None).await.unwrap();
    bookings.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    let mut scans = Vec::new();
    let mut anomalies = Vec::new();
    for b in &w.bookings {
        scans.push(store.booking_scans(&b.to_string()).await.unwrap());
        anomalies.push(store.booking_anomalies(&b.to_string()).await.unwrap());
    }
    (
        bookings,
        scans,
        anomalies,
        store.volunteer_hours(None).await.unwrap(),
    )
}
