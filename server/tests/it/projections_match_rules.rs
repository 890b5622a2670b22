//! Property: after random offline histories played through real websockets (teachers and
//! gates creating bookings, checking pupils in and out, cancelling; a volunteer logging
//! activities and staff confirming them; devices going on- and offline in any order, some
//! with a clock that runs late), the records equal a plain recount of what the test did,
//! and `rebuild-projections` reproduces the same rows. On SQLite and PostgreSQL.
//!
//! The recount is written here from the operations themselves and calls none of
//! sync-core's rules: each pupil counts once per booking by their earliest check-in, a
//! pupil is inside when their last check-in is later than their last check-out, places go
//! first come first served in the order the server received the bookings, a volunteer's
//! minutes count once the latest decision on them approves them. The one thing it takes
//! from the server is that order of arrival (which of two offline phones reached it
//! first), and for cancellations, which may reach the server at any time after their
//! booking, it accepts any outcome one of those timings gives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kepu_server::accounts::Role;
use kepu_server::store::{AnomalyRow, BookingRow, ScanRow, VolunteerHours};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::support::{Db, TestServer, place};
use crate::sync_client::Device;
use crate::world::{Enroller, await_server_doc, create_booking, new_doc, pupils, scan_id};

crate::support::on_both_databases!(
    blocking kind: records_equal_a_recount_of_random_offline_histories
);

/// Histories per database: about 4 s each on SQLite and 7 s on PostgreSQL on a busy
/// 2-core machine (30 s and 58 s in all).
const CASES: u32 = 8;

/// Devices: 0, 1 teachers; 2, 3 venue staff (gates, confirmers); 4 the volunteer.
const TEACHERS: usize = 2;
const SCANNERS: usize = 4;
const DEVICES: usize = 5;
const VOLUNTEER: usize = 4;
const PUPILS: usize = 8;
/// Small: some bookings end on the wait list.
const CAPACITY: u32 = 8;
const PUMP: Duration = Duration::from_millis(40);
const MINUTE: i64 = 60_000;
/// Clocks a few seconds late (its scans sort before ones made earlier on other devices)
/// and 90 minutes late (its check-ins fall before the slot's window opens).
const LATE_CLOCKS: [i64; 2] = [-5_000, -90 * MINUTE];
/// The slot's window: check-ins count from an hour before it starts to half an hour
/// after it ends (the programme's rule, stated here again on purpose).
const EARLY_ARRIVAL: i64 = 60 * MINUTE;
const LATE_ARRIVAL: i64 = 30 * MINUTE;

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
    /// Another device scans the pupil last checked in, on the same booking.
    ScanAgain {
        dev: usize,
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
        6 => (0..SCANNERS, 0..8usize, some_pupil())
            .prop_map(|(dev, booking, pupil)| Op::CheckIn { dev, booking, pupil }),
        2 => (0..SCANNERS, 0..8usize, some_pupil())
            .prop_map(|(dev, booking, pupil)| Op::CheckOut { dev, booking, pupil }),
        2 => (0..SCANNERS).prop_map(|dev| Op::ScanAgain { dev }),
        1 => (0..TEACHERS, 0..8usize).prop_map(|(teacher, booking)| Op::Cancel { teacher, booking }),
        1 => (10..120u32).prop_map(|minutes| Op::Log { minutes }),
        2 => (2..4usize, 0..8usize, any::<bool>(), proptest::option::of(5..100u32))
            .prop_map(|(staff, activity, approved, minutes)| Op::Confirm { staff, activity, approved, minutes }),
        4 => (0..DEVICES).prop_map(|dev| Op::Toggle { dev }),
    ]
}

/// How late each device's clock is, and what happens: a few bookings first, then
/// anything.
fn history_strategy() -> impl Strategy<Value = (Vec<i64>, Vec<Op>)> {
    let book = (0..TEACHERS, 1..=6usize).prop_map(|(teacher, roster)| Op::Book { teacher, roster });
    (
        proptest::collection::vec(
            prop_oneof![2 => Just(0), 1 => Just(LATE_CLOCKS[0]), 1 => Just(LATE_CLOCKS[1])],
            DEVICES,
        ),
        proptest::collection::vec(book, 1..4),
        proptest::collection::vec(op(), 8..24),
    )
        .prop_map(|(clocks, mut ops, more)| {
            ops.extend(more);
            (clocks, ops)
        })
}

/// A pupil, more often one of the first three (so that pupils are scanned twice).
fn some_pupil() -> impl Strategy<Value = usize> {
    prop_oneof![0..3usize, 0..PUPILS]
}

fn records_equal_a_recount_of_random_offline_histories(db: Db) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&history_strategy(), |(clocks, ops)| {
        rt.block_on(history(db, &clocks, ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// What the test did, as the recount needs it.
#[derive(Default)]
struct Done {
    /// Bookings written, in the order they were made.
    bookings: Vec<Made>,
    /// Activities logged: id → minutes claimed.
    activities: BTreeMap<String, u32>,
    /// Staff decisions, one per activity and device (a device's later decision on the
    /// same activity replaces its earlier one).
    decisions: BTreeMap<(String, DeviceId), StaffDecision>,
}

struct Made {
    doc: DocumentId,
    roster: BTreeSet<PupilId>,
    party: u32,
    cancelled: bool,
    check_ins: Vec<ScanDone>,
    check_outs: Vec<ScanDone>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ScanDone {
    // Field order is the tie-break order: time, then device, then scan id.
    at: i64,
    device: DeviceId,
    id: String,
    pupil: PupilId,
    /// When the test made it (its place among all the test's scans).
    made: usize,
}

#[derive(Debug, Clone, Copy)]
struct StaffDecision {
    at: i64,
    approved: bool,
    /// The minutes written with it: the figure given, or when approving without one
    /// the minutes claimed.
    minutes: Option<u32>,
}

struct World {
    devices: Vec<Device>,
    bookings: Vec<DocumentId>,
    log: DocumentId,
    activities: Vec<String>,
    venue: VenueId,
    school: SchoolId,
    slot: SlotId,
    slot_window: (i64, i64),
    roster_pool: Vec<PupilId>,
    done: Done,
    scans_made: usize,
}

impl World {
    async fn settle(&mut self, dev: usize) {
        if self.devices[dev].online() {
            self.devices[dev].pump(PUMP).await;
        }
    }

    fn device_id(&self, dev: usize) -> DeviceId {
        self.devices[dev].engine.config().writer.device
    }
}

async fn history(db: Db, clocks: &[i64], ops: Vec<Op>) {
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
    // The slot starts in an hour and lasts two.
    let venue_doc = DocumentId::from_bytes(*venue.as_bytes());
    await_server_doc(&mut devices[2], server.addr, venue_doc).await;
    let start = kepu_server::clock::now_ms() + 60 * MINUTE;
    let slot_window = (start, start + 120 * MINUTE);
    let slot = SlotId(kepu_sync_core::ids::uuid_v7(start, rand::random()));
    devices[2].edit(
        venue_doc,
        Edit::PutSlot {
            slot,
            start: slot_window.0,
            end: slot_window.1,
            capacity: CAPACITY,
            label: "课后".into(),
        },
    );
    devices[2].pump(Duration::from_millis(150)).await;
    for (d, offset) in devices.iter_mut().zip(clocks) {
        d.clock_offset = *offset;
    }
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
        activities: vec![first.clone()],
        venue,
        school,
        slot,
        slot_window,
        roster_pool: pupils(40_000, PUPILS),
        done: Done::default(),
        scans_made: 0,
    };
    w.done.activities.insert(first, 45);
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
        "records differ from the recount: {mismatch}"
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

#[allow(clippy::too_many_lines)]
async fn play(w: &mut World, op: Op) {
    match op {
        Op::Book { teacher, roster } => {
            let b = new_doc();
            let roster = w.roster_pool[..roster].to_vec();
            let edit = create_booking(w.venue, w.slot, w.school, roster.clone());
            let Edit::CreateBooking { party_size, .. } = edit else {
                unreachable!()
            };
            if w.devices[teacher].try_edit(b, edit) {
                w.bookings.push(b);
                w.done.bookings.push(Made {
                    doc: b,
                    roster: roster.into_iter().collect(),
                    party: party_size,
                    cancelled: false,
                    check_ins: Vec::new(),
                    check_outs: Vec::new(),
                });
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
            let Some(i) = pick(w.bookings.len(), booking) else {
                return;
            };
            let b = w.bookings[i];
            // An online device has synced what it follows.
            w.settle(dev).await;
            if w.devices[dev].doc(&b).and_then(Booking::read).is_none() {
                return;
            }
            let pupil = w.roster_pool[pupil];
            let id = scan_id();
            let check_in = matches!(op, Op::CheckIn { .. });
            let edit = if check_in {
                Edit::CheckIn {
                    pupil,
                    scan_id: id.clone(),
                    method: ScanMethod::Manual,
                    proof: None,
                }
            } else {
                Edit::CheckOut {
                    pupil,
                    scan_id: id.clone(),
                    method: ScanMethod::Manual,
                }
            };
            if w.devices[dev].try_edit(b, edit) {
                w.scans_made += 1;
                let scan = ScanDone {
                    at: w.devices[dev].last_time(),
                    device: w.device_id(dev),
                    id,
                    pupil,
                    made: w.scans_made,
                };
                let made = &mut w.done.bookings[i];
                if check_in {
                    made.check_ins.push(scan);
                } else {
                    made.check_outs.push(scan);
                }
            }
            w.settle(dev).await;
        }
        Op::ScanAgain { dev } => {
            let last = w
                .done
                .bookings
                .iter()
                .enumerate()
                .flat_map(|(i, m)| m.check_ins.iter().map(move |s| (i, s)))
                .max_by_key(|(_, s)| s.made)
                .map(|(i, s)| (i, s.pupil));
            if let Some((booking, pupil)) = last {
                let pupil = w.roster_pool.iter().position(|p| *p == pupil).unwrap();
                Box::pin(play(
                    w,
                    Op::CheckIn {
                        dev,
                        booking,
                        pupil,
                    },
                ))
                .await;
            }
        }
        Op::Cancel { teacher, booking } => {
            let Some(i) = pick(w.bookings.len(), booking) else {
                return;
            };
            let b = w.bookings[i];
            if w.devices[teacher].doc(&b).and_then(Booking::read).is_some() {
                if w.devices[teacher].try_edit(b, Edit::CancelBooking) {
                    w.done.bookings[i].cancelled = true;
                }
                w.settle(teacher).await;
            }
        }
        Op::Log { minutes } => {
            let id = format!("a{}", w.activities.len());
            if w.devices[VOLUNTEER].try_edit(w.log, log_activity(&id, w.venue, minutes)) {
                w.done.activities.insert(id.clone(), minutes);
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
            let Some(a) = pick(w.activities.len(), activity).map(|i| w.activities[i].clone())
            else {
                return;
            };
            let known = w.devices[staff]
                .doc(&w.log)
                .and_then(ActivityLog::read)
                .is_some_and(|l| l.activities.iter().any(|x| x.id == a));
            if known {
                let edit = Edit::ConfirmActivity {
                    activity_id: a.clone(),
                    approved,
                    minutes,
                };
                if w.devices[staff].try_edit(w.log, edit) {
                    let claimed = w.done.activities[&a];
                    let decision = StaffDecision {
                        at: w.devices[staff].last_time(),
                        approved,
                        minutes: minutes.or(approved.then_some(claimed)),
                    };
                    let device = w.device_id(staff);
                    w.done.decisions.insert((a, device), decision);
                }
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

fn pick(len: usize, i: usize) -> Option<usize> {
    (len > 0).then(|| i % len)
}

/// A booking's status and wait-list place as the records show them.
type Placed = (String, Option<i64>);

/// Every outcome first come first served can give: the bookings reach the server in
/// `arrived` order (indices into `made`), and each cancellation reaches it at some time
/// after its booking. After each arrival or cancellation the server hands out places: a
/// confirmed booking keeps its places until it is cancelled; every other booking still
/// waiting gets places if they fit in what is left, in order of arrival, or else the
/// next place on the wait list. A cancelled booking's status is `cancelled`, whatever
/// place it had.
fn first_come_first_served(made: &[Made], arrived: &[usize]) -> BTreeSet<Vec<Placed>> {
    #[derive(Clone)]
    struct State {
        next: usize,
        cancelled: BTreeSet<usize>,
        confirmed: BTreeSet<usize>,
        waiting: BTreeMap<usize, i64>,
    }
    fn hand_out(made: &[Made], arrived: &[usize], s: &mut State) {
        let used: u32 = s
            .confirmed
            .iter()
            .filter(|i| !s.cancelled.contains(i))
            .map(|&i| made[i].party)
            .sum();
        let mut left = CAPACITY - used.min(CAPACITY);
        let mut place = 0;
        s.waiting.clear();
        for &i in &arrived[..s.next] {
            if s.cancelled.contains(&i) || s.confirmed.contains(&i) {
                continue;
            }
            if made[i].party <= left {
                left -= made[i].party;
                s.confirmed.insert(i);
            } else {
                place += 1;
                s.waiting.insert(i, place);
            }
        }
    }
    fn walk(made: &[Made], arrived: &[usize], s: &State, out: &mut BTreeSet<Vec<Placed>>) {
        let pending: Vec<usize> = arrived[..s.next]
            .iter()
            .copied()
            .filter(|&i| made[i].cancelled && !s.cancelled.contains(&i))
            .collect();
        if s.next == arrived.len() && pending.is_empty() {
            out.insert(
                (0..made.len())
                    .map(|i| {
                        if s.cancelled.contains(&i) {
                            ("cancelled".to_owned(), None)
                        } else if s.confirmed.contains(&i) {
                            ("confirmed".to_owned(), None)
                        } else if let Some(p) = s.waiting.get(&i) {
                            ("waitlisted".to_owned(), Some(*p))
                        } else {
                            ("requested".to_owned(), None)
                        }
                    })
                    .collect(),
            );
            return;
        }
        if s.next < arrived.len() {
            let mut t = s.clone();
            t.next += 1;
            hand_out(made, arrived, &mut t);
            walk(made, arrived, &t, out);
        }
        for i in pending {
            let mut t = s.clone();
            t.cancelled.insert(i);
            hand_out(made, arrived, &mut t);
            walk(made, arrived, &t, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(
        made,
        arrived,
        &State {
            next: 0,
            cancelled: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            waiting: BTreeMap::new(),
        },
        &mut out,
    );
    out
}

/// One booking's attendance, recounted: (arrived, inside now, scan rows, anomaly rows).
type Recounted = (
    i64,
    i64,
    BTreeSet<(String, String, String, i64, String, bool)>,
    BTreeSet<(String, String, String, i64)>,
);

fn recount_attendance(made: &Made, status: &str, window: (i64, i64)) -> Recounted {
    let mut ins: BTreeMap<PupilId, Vec<&ScanDone>> = BTreeMap::new();
    for s in &made.check_ins {
        ins.entry(s.pupil).or_default().push(s);
    }
    let (mut arrived, mut inside_now) = (0, 0);
    let mut scans = BTreeSet::new();
    let mut anomalies = BTreeSet::new();
    for (pupil, mut mine) in ins {
        mine.sort();
        let first = mine[0];
        let last_in = mine[mine.len() - 1];
        let last_out = made.check_outs.iter().filter(|s| s.pupil == pupil).max();
        arrived += 1;
        if last_out.is_none_or(|o| last_in.at > o.at) {
            inside_now += 1;
        }
        for s in &mine {
            scans.insert((
                pupil.to_string(),
                s.device.to_string(),
                s.id.clone(),
                s.at,
                "manual".to_owned(),
                std::ptr::eq(*s, first),
            ));
        }
        let mut flag = |kind: &str| {
            anomalies.insert((
                pupil.to_string(),
                first.device.to_string(),
                kind.to_owned(),
                first.at,
            ));
        };
        if !made.roster.contains(&pupil) {
            flag("walk_in");
        }
        match status {
            "cancelled" => flag("cancelled_booking"),
            "confirmed" => {}
            _ => flag("unconfirmed_booking"),
        }
        if first.at < window.0 - EARLY_ARRIVAL || first.at > window.1 + LATE_ARRIVAL {
            flag("outside_slot");
        }
    }
    (arrived, inside_now, scans, anomalies)
}

/// A volunteer's minutes, recounted: (confirmed, not yet decided, activities).
fn recount_minutes(done: &Done) -> (i64, i64, i64) {
    let (mut confirmed, mut unconfirmed) = (0, 0);
    for (id, &claimed) in &done.activities {
        let latest = done
            .decisions
            .iter()
            .filter(|((a, _), _)| a == id)
            .max_by_key(|((_, device), d)| (d.at, *device))
            .map(|(_, d)| *d);
        match latest {
            None => unconfirmed += i64::from(claimed),
            Some(d) if d.approved => {
                confirmed += i64::from(d.minutes.unwrap_or(claimed).min(claimed));
            }
            Some(_) => {}
        }
    }
    (confirmed, unconfirmed, done.activities.len() as i64)
}

/// The recount against what the records hold; empty when they agree.
async fn compare(server: &TestServer, w: &World) -> String {
    let store = &server.db.store;
    let mut out = String::new();
    let rows = store.bookings(None, None).await.unwrap();
    let made = &w.done.bookings;
    // The order the server received the bookings in.
    let (capacity, received) = store
        .slot_bookings(w.slot)
        .await
        .unwrap()
        .expect("the slot is in the records");
    assert_eq!(capacity, CAPACITY);
    let arrived: Vec<usize> = received
        .iter()
        .filter_map(|r| made.iter().position(|m| m.doc == r.doc))
        .collect();
    if arrived.len() != made.len() || rows.len() != made.len() {
        return format!(
            "{} bookings made, {} received, {} records; ",
            made.len(),
            arrived.len(),
            rows.len()
        );
    }
    let row = |m: &Made| {
        rows.iter()
            .find(|r| r.doc_id == m.doc.to_string())
            .expect("a record per booking")
    };
    let placed: Vec<Placed> = made
        .iter()
        .map(|m| {
            let r = row(m);
            let place = if r.status == "cancelled" {
                None
            } else {
                r.wait_position
            };
            (r.status.clone(), place)
        })
        .collect();
    let outcomes = first_come_first_served(made, &arrived);
    if !outcomes.contains(&placed) {
        out.push_str(&format!(
            "places {placed:?} (arrived {arrived:?}) are none of {outcomes:?}; "
        ));
    }
    for m in made {
        let r = row(m);
        let (arrived, inside_now, want_scans, want_anomalies) =
            recount_attendance(m, &r.status, w.slot_window);
        let want = (
            i64::from(m.party),
            m.roster.len() as i64,
            arrived,
            inside_now,
        );
        let got = (r.party_size, r.expected, r.arrived, r.inside_now);
        if want != got {
            out.push_str(&format!(
                "{}: (party, expected, arrived, inside) {got:?} != recount {want:?}; ",
                m.doc
            ));
        }
        let got_scans: BTreeSet<_> = store
            .booking_scans(&m.doc.to_string())
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
                "{}: scans {got_scans:?} != recount {want_scans:?}; ",
                m.doc
            ));
        }
        let got_anomalies: BTreeSet<_> = store
            .booking_anomalies(&m.doc.to_string())
            .await
            .unwrap()
            .into_iter()
            .map(|x: AnomalyRow| (x.pupil_id, x.device_id, x.kind, x.at))
            .collect();
        if want_anomalies != got_anomalies {
            out.push_str(&format!(
                "{}: anomalies {got_anomalies:?} != recount {want_anomalies:?}; ",
                m.doc
            ));
        }
    }
    let volunteer = w.devices[VOLUNTEER].engine.config().writer.user;
    let got = store
        .volunteer_hours(None)
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.volunteer_id == volunteer.to_string())
        .map(|h: VolunteerHours| (h.confirmed_minutes, h.unconfirmed_minutes, h.activities));
    let want = recount_minutes(&w.done);
    if got != Some(want) {
        out.push_str(&format!(
            "volunteer (confirmed, unconfirmed, activities) {got:?} != recount {want:?}; "
        ));
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
