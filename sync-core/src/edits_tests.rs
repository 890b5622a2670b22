//! What each edit writes, read back through the schema's read views (what every replica
//! and the server's records see) and, where the layout itself matters, key by key.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ROOT, ReadDoc};
use uuid::Uuid;

use super::{Edit, EditError, apply_unchecked, check_applies};
use crate::doc_read as r;
use crate::ids::{DeviceId, PupilId};
use crate::schema::activity_log::{ActivityLog, Confirmation};
use crate::schema::booking::{Booking, Scan, ScanMethod, Status};
use crate::schema::school_log::{Entry, SchoolLog};
use crate::schema::venue::{Instrument, Slot, Venue};
use crate::schema::{self, DocKind, revocations};
use crate::test_writers::{
    NOW, SCHOOL, SLOT, VENUE, pupil, server, staff, teacher, volunteer, writer,
};
use crate::writer::{Role, Writer};

const LATER: i64 = NOW + 60_000;

fn created(by: &Writer, edit: &Edit) -> Automerge {
    let mut doc = Automerge::new();
    apply_unchecked(&mut doc, by, NOW, edit).expect("creation applies");
    doc
}

fn then(doc: &mut Automerge, by: &Writer, at: i64, edit: &Edit) {
    apply_unchecked(doc, by, at, edit).expect("edit applies");
}

fn new_booking() -> Automerge {
    crate::test_writers::booking_for(vec![pupil(1), pupil(2)])
}

fn new_venue() -> Automerge {
    created(&server(), &Edit::CreateVenue { venue: VENUE })
}

fn new_activity_log() -> Automerge {
    created(
        &volunteer(),
        &Edit::CreateActivityLog {
            volunteer: volunteer().user,
            school: Some(SCHOOL),
        },
    )
}

fn new_school_log() -> Automerge {
    created(
        &server(),
        &Edit::CreateSchoolLog {
            school: SCHOOL,
            year: 2026,
        },
    )
}

fn booking(doc: &Automerge) -> Booking {
    Booking::read(doc).expect("a well-formed booking")
}

/// The root keys of a document, sorted.
fn root_keys(doc: &Automerge) -> Vec<String> {
    r::keys(doc, &ROOT)
}

fn log_activity(id: &str, minutes: u32) -> Edit {
    Edit::LogActivity {
        activity_id: id.to_owned(),
        venue: VENUE,
        activity_kind: "guided_tour".into(),
        start: NOW - 3_600_000,
        minutes,
        description: "机器人展区讲解".into(),
    }
}

#[test]
fn create_venue_writes_the_skeleton_and_the_venue_id() {
    let doc = new_venue();
    assert_eq!(schema::kind_of(&doc), Some(DocKind::Venue));
    assert_eq!(schema::schema_of(&doc), schema::SCHEMA_VERSION);
    assert_eq!(
        root_keys(&doc),
        [
            "gates",
            "instruments",
            "kind",
            "profile",
            "schema",
            "slots",
            "venue"
        ]
    );
    let v = Venue::read(&doc).unwrap();
    assert_eq!(v.venue, VENUE);
    assert!(v.profile.is_empty() && v.slots.is_empty() && v.gates.is_empty());
    assert!(v.instruments.is_empty());
}

#[test]
fn create_booking_writes_the_request_its_author_and_the_roster() {
    let doc = new_booking();
    assert_eq!(
        root_keys(&doc),
        [
            "check_in_records",
            "check_ins",
            "check_ins_by_device",
            "check_out_records",
            "check_outs",
            "check_outs_by_device",
            "kind",
            "notes",
            "party_size",
            "requested_at",
            "requested_by",
            "roster",
            "schema",
            "school",
            "slot",
            "venue"
        ],
        "no status until the server decides"
    );
    let b = booking(&doc);
    assert_eq!((b.venue, b.slot, b.school), (VENUE, SLOT, SCHOOL));
    assert_eq!(b.party_size, 2);
    assert_eq!(b.requested_by, Some(teacher().user));
    assert_eq!(b.requested_at, NOW);
    assert_eq!(b.status, Status::Requested);
    assert_eq!(b.wait_position, None);
    assert_eq!(b.roster, BTreeMap::from([(pupil(1), NOW), (pupil(2), NOW)]));
    assert!(b.check_ins.is_empty() && b.check_outs.is_empty() && b.notes.is_empty());
}

#[test]
fn create_activity_log_names_the_volunteer_and_their_school_if_any() {
    let log = ActivityLog::read(&new_activity_log()).unwrap();
    assert_eq!(log.volunteer, volunteer().user);
    assert_eq!(log.school, Some(SCHOOL));
    assert!(log.activities.is_empty() && log.confirmations.is_empty());

    let without = created(
        &volunteer(),
        &Edit::CreateActivityLog {
            volunteer: volunteer().user,
            school: None,
        },
    );
    assert!(!root_keys(&without).contains(&"school".to_owned()));
    assert_eq!(ActivityLog::read(&without).unwrap().school, None);
}

#[test]
fn create_school_log_writes_the_school_and_the_year() {
    let doc = new_school_log();
    assert_eq!(
        root_keys(&doc),
        [
            "kind",
            "lectures",
            "schema",
            "school",
            "sessions",
            "tour_attendance",
            "tour_stops",
            "year"
        ]
    );
    let log = SchoolLog::read(&doc).unwrap();
    assert_eq!((log.school, log.year), (SCHOOL, 2026));
}

#[test]
fn create_revocations_writes_an_empty_pass_list() {
    let doc = created(&server(), &Edit::CreateRevocations);
    assert_eq!(schema::kind_of(&doc), Some(DocKind::Revocations));
    assert_eq!(root_keys(&doc), ["kind", "passes", "schema"]);
    assert!(revocations::read(&doc).is_empty());
}

#[test]
fn add_to_roster_stamps_each_pupil_with_the_time_and_keeps_the_others() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &teacher(),
        LATER,
        &Edit::AddToRoster {
            pupils: vec![pupil(3), pupil(4)],
        },
    );
    assert_eq!(
        booking(&doc).roster,
        BTreeMap::from([
            (pupil(1), NOW),
            (pupil(2), NOW),
            (pupil(3), LATER),
            (pupil(4), LATER)
        ])
    );
    assert_eq!(booking(&doc).party_size, 2, "the places asked for stay");
}

#[test]
fn remove_from_roster_removes_only_that_pupil() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &teacher(),
        LATER,
        &Edit::RemoveFromRoster { pupil: pupil(1) },
    );
    assert_eq!(booking(&doc).roster, BTreeMap::from([(pupil(2), NOW)]));
}

#[test]
fn check_in_records_a_scan_under_the_writers_device_and_user() {
    let mut doc = new_booking();
    let gate = staff();
    then(
        &mut doc,
        &gate,
        LATER,
        &Edit::CheckIn {
            pupil: pupil(1),
            scan_id: "s-1".into(),
            method: ScanMethod::PassScan,
            proof: Some("PASS-TEXT".into()),
        },
    );
    then(
        &mut doc,
        &teacher(),
        LATER + 1,
        &Edit::CheckIn {
            pupil: pupil(2),
            scan_id: "s-2".into(),
            method: ScanMethod::Manual,
            proof: None,
        },
    );
    let b = booking(&doc);
    assert_eq!(
        b.check_ins,
        [
            Scan {
                pupil: pupil(1),
                device: gate.device,
                scan_id: "s-1".into(),
                at: LATER,
                method: ScanMethod::PassScan,
                proof: Some("PASS-TEXT".into()),
                by: Some(gate.user),
            },
            Scan {
                pupil: pupil(2),
                device: teacher().device,
                scan_id: "s-2".into(),
                at: LATER + 1,
                method: ScanMethod::Manual,
                proof: None,
                by: Some(teacher().user),
            },
        ]
    );
    assert!(b.check_outs.is_empty());
    // Each device's scans in a map of its own, which only that device creates, each scan
    // one value at "<pupil>/<scan id>" (schema 4, ADR 0205): merging a scan walks that
    // device's map and makes no object.
    let records = r::map(&doc, &ROOT, "check_in_records").unwrap();
    let mut devices = [gate.device.to_string(), teacher().device.to_string()];
    devices.sort();
    assert_eq!(r::keys(&doc, &records), devices);
    let gates = r::map(&doc, &records, &gate.device.to_string()).unwrap();
    let key = format!("{}/s-1", pupil(1));
    assert_eq!(r::keys(&doc, &gates), std::slice::from_ref(&key));
    let text = r::string(&doc, &gates, &key).expect("a scan is one text value");
    let fields: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({
            "at": LATER,
            "method": "pass_scan",
            "by": gate.user.to_string(),
            "proof": "PASS-TEXT",
        })
    );
    for older in ["check_ins", "check_ins_by_device"] {
        let c = r::map(&doc, &ROOT, older).unwrap();
        assert!(r::keys(&doc, &c).is_empty(), "nothing written in {older}");
    }
}

#[test]
fn a_devices_check_in_after_its_first_is_one_operation() {
    let mut doc = new_booking();
    let gate = staff();
    let mut ops = Vec::new();
    for (n, id) in [(1, "s-1"), (2, "s-2"), (1, "s-3")] {
        let before = doc.get_heads();
        then(
            &mut doc,
            &gate,
            LATER + n,
            &Edit::CheckIn {
                pupil: pupil(n as u128),
                scan_id: id.into(),
                method: ScanMethod::Manual,
                proof: None,
            },
        );
        let changes = doc.get_changes(&before);
        ops.push(changes[0].len());
    }
    // The first makes the device's map; each one after writes one value, whoever the
    // pupil and however many scans the pupil already has.
    assert_eq!(ops, [2, 1, 1]);
    assert_eq!(booking(&doc).check_ins.len(), 3);
    assert!(crate::schema::booking::has_check_in(&doc, pupil(1)));
    assert!(crate::schema::booking::has_check_in(&doc, pupil(2)));
    assert!(!crate::schema::booking::has_check_in(&doc, pupil(3)));
}

/// A booking of pupils 1 and 2 made by a version-2 engine: no per-device containers.
fn booking_of_version_2() -> Automerge {
    let mut doc = Automerge::new();
    let create = Edit::CreateBooking {
        venue: VENUE,
        slot: SLOT,
        school: SCHOOL,
        party_size: 2,
        roster: vec![pupil(1), pupil(2)],
    };
    crate::edits::apply_unchecked_as_schema(&mut doc, &teacher(), NOW, &create, 2).unwrap();
    doc
}

#[test]
fn a_booking_of_version_2_keeps_its_layout_and_both_layouts_are_read_together() {
    use crate::edits::apply_unchecked_as_schema;
    let gate = writer(5, Role::VenueStaff);
    let scan = |n: u128, id: &str| Edit::CheckIn {
        pupil: pupil(n),
        scan_id: id.into(),
        method: ScanMethod::Manual,
        proof: None,
    };
    // A booking made by a version-2 engine: no per-device containers, so today's gate
    // writes where version 2 does ("<pupil>/<device>"), and a version-2 device reads it.
    let mut old = booking_of_version_2();
    assert!(r::map(&old, &ROOT, "check_ins_by_device").is_none());
    then(&mut old, &gate, LATER, &scan(1, "s-1"));
    let ins = r::map(&old, &ROOT, "check_ins").unwrap();
    assert_eq!(
        r::keys(&old, &ins),
        [format!("{}/{}", pupil(1), gate.device)]
    );
    assert_eq!(booking(&old).check_ins.len(), 1);
    // Today's booking takes a version-2 device's scan where that device writes it, and
    // reads it with today's scans, in (pupil, device, scan id) order either way.
    let mut doc = new_booking();
    then(&mut doc, &gate, LATER, &scan(2, "s-2"));
    apply_unchecked_as_schema(&mut doc, &teacher(), LATER + 1, &scan(2, "s-3"), 2).unwrap();
    apply_unchecked_as_schema(&mut doc, &teacher(), LATER + 2, &scan(1, "s-4"), 2).unwrap();
    let ins = r::map(&doc, &ROOT, "check_ins").unwrap();
    assert_eq!(r::keys(&doc, &ins).len(), 2, "the version-2 writes");
    let read: Vec<(PupilId, DeviceId, String)> = booking(&doc)
        .check_ins
        .into_iter()
        .map(|s| (s.pupil, s.device, s.scan_id))
        .collect();
    let mut expected = vec![
        (pupil(2), gate.device, "s-2".to_owned()),
        (pupil(2), teacher().device, "s-3".to_owned()),
        (pupil(1), teacher().device, "s-4".to_owned()),
    ];
    expected.sort();
    assert_eq!(read, expected);
    assert!(crate::schema::booking::has_check_in(&doc, pupil(1)));
    assert!(crate::schema::booking::has_check_in(&doc, pupil(2)));
    assert!(!crate::schema::booking::has_check_in(&doc, pupil(3)));
}

#[test]
fn a_scan_under_a_pupil_spelt_in_capitals_is_already_counted_as_it_is_read() {
    use automerge::transaction::Transactable;
    // A version-2 booking: its scans are kept under "<pupil>/<device>", and validation
    // takes any spelling of the ids there (they parse), so a device may have written
    // the pupil's id in capitals. The phone's "already counted?" must answer as the
    // booking's read counts.
    let mut doc = booking_of_version_2();
    let gate = staff();
    let shouted = format!("{}/{}", pupil(1).to_string().to_uppercase(), gate.device);
    let mut tx = doc.transaction();
    let ins = r::map(&tx, &ROOT, "check_ins").unwrap();
    let mine = tx
        .put_object(&ins, &shouted, automerge::ObjType::Map)
        .unwrap();
    let record = tx
        .put_object(&mine, "s-1", automerge::ObjType::Map)
        .unwrap();
    tx.put(&record, "at", LATER).unwrap();
    tx.put(&record, "method", "manual").unwrap();
    tx.commit();
    let counted: Vec<PupilId> = booking(&doc).check_ins.iter().map(|s| s.pupil).collect();
    assert_eq!(counted, [pupil(1)]);
    assert!(crate::schema::booking::has_check_in(&doc, pupil(1)));
    assert!(!crate::schema::booking::has_check_in(&doc, pupil(2)));
}

#[test]
fn a_gate_code_that_does_not_decode_is_kept_as_it_was_scanned() {
    let mut doc = new_booking();
    let p = writer(1, Role::Pupil);
    then(
        &mut doc,
        &p,
        LATER,
        &Edit::CheckIn {
            pupil: pupil(1),
            scan_id: "s-1".into(),
            method: ScanMethod::GateCode,
            proof: Some("not-a-gate-code".into()),
        },
    );
    let scan = &booking(&doc).check_ins[0];
    assert_eq!(scan.proof.as_deref(), Some("not-a-gate-code"));
    assert_eq!((scan.device, scan.method), (p.device, ScanMethod::GateCode));
}

#[test]
fn check_out_records_a_scan_without_a_proof() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::CheckOut {
            pupil: pupil(2),
            scan_id: "o-1".into(),
            method: ScanMethod::PassScan,
        },
    );
    let b = booking(&doc);
    assert!(b.check_ins.is_empty());
    assert_eq!(
        b.check_outs,
        [Scan {
            pupil: pupil(2),
            device: staff().device,
            scan_id: "o-1".into(),
            at: LATER,
            method: ScanMethod::PassScan,
            proof: None,
            by: Some(staff().user),
        }]
    );
}

#[test]
fn add_note_records_time_author_role_and_code() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::AddNote {
            note_id: "n-1".into(),
            text: "bus_delayed".into(),
        },
    );
    let note = &booking(&doc).notes[0];
    assert_eq!(note.id, "n-1");
    assert_eq!(note.at, LATER);
    assert_eq!(note.by, Some(staff().user));
    assert_eq!(note.role, "venue_staff");
    assert_eq!(note.text, "bus_delayed");
}

#[test]
fn cancel_booking_records_when_and_who_and_wins_over_a_decision() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &server(),
        LATER,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    then(&mut doc, &teacher(), LATER + 5, &Edit::CancelBooking);
    let b = booking(&doc);
    assert_eq!(b.status, Status::Cancelled);
    assert_eq!(b.cancelled_at, Some(LATER + 5));
    assert_eq!(
        r::string(&doc, &ROOT, "cancelled_by"),
        Some(teacher().user.to_string())
    );
    assert_eq!(
        Booking::decided_status(&doc),
        Status::Confirmed,
        "the server's decision is kept beside the cancellation"
    );
}

#[test]
fn decide_writes_status_time_and_wait_position_and_clears_the_position_when_confirmed() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &server(),
        LATER,
        &Edit::Decide {
            status: Status::Waitlisted,
            wait_position: Some(3),
        },
    );
    let b = booking(&doc);
    assert_eq!((b.status, b.wait_position), (Status::Waitlisted, Some(3)));
    assert_eq!(r::int(&doc, &ROOT, "decided_at"), Some(LATER));

    then(
        &mut doc,
        &server(),
        LATER + 1,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    let b = booking(&doc);
    assert_eq!((b.status, b.wait_position), (Status::Confirmed, None));
    assert!(!root_keys(&doc).contains(&"wait_position".to_owned()));
    assert_eq!(r::int(&doc, &ROOT, "decided_at"), Some(LATER + 1));
}

#[test]
fn set_guide_writes_the_label() {
    let mut doc = new_booking();
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::SetGuide {
            guide: "蓝队".into(),
        },
    );
    assert_eq!(booking(&doc).guide.as_deref(), Some("蓝队"));
}

#[test]
fn set_profile_writes_fields_location_after_school_and_the_time() {
    let mut doc = new_venue();
    let fields = BTreeMap::from([
        ("name".to_owned(), "湖南省科技馆".to_owned()),
        ("phone".to_owned(), "0731-00000000".to_owned()),
    ]);
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::SetProfile {
            fields: fields.clone(),
            location: Some((28.2, 112.9)),
            after_school: Some(true),
        },
    );
    let v = Venue::read(&doc).unwrap();
    assert_eq!(v.profile, fields);
    assert_eq!(v.location, Some((28.2, 112.9)));
    assert_eq!(v.after_school, Some(true));
    assert_eq!(v.updated_at, Some(LATER));

    // A later edit without a location or hours leaves them as they were.
    then(
        &mut doc,
        &staff(),
        LATER + 1,
        &Edit::SetProfile {
            fields: BTreeMap::from([("name".to_owned(), "科技馆".to_owned())]),
            location: None,
            after_school: None,
        },
    );
    let v = Venue::read(&doc).unwrap();
    assert_eq!(v.profile["name"], "科技馆");
    assert_eq!(v.profile["phone"], "0731-00000000");
    assert_eq!(
        (v.location, v.after_school),
        (Some((28.2, 112.9)), Some(true))
    );
    assert_eq!(v.updated_at, Some(LATER + 1));
}

#[test]
fn put_slot_creates_a_slot_and_a_second_put_updates_it_in_place() {
    let mut doc = new_venue();
    let put = |capacity, label: &str| Edit::PutSlot {
        slot: SLOT,
        start: NOW,
        end: NOW + 7_200_000,
        capacity,
        label: label.to_owned(),
    };
    then(&mut doc, &staff(), LATER, &put(40, "上午场"));
    then(&mut doc, &staff(), LATER + 1, &put(35, "上午场（改）"));
    assert_eq!(
        Venue::read(&doc).unwrap().slots,
        [Slot {
            id: SLOT,
            start: NOW,
            end: NOW + 7_200_000,
            capacity: 35,
            label: "上午场（改）".into(),
        }]
    );
}

#[test]
fn put_gate_registers_a_key_per_device() {
    let mut doc = new_venue();
    let gate = DeviceId(Uuid::from_u128(77));
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::PutGate {
            device: gate,
            key: "a2V5".into(),
        },
    );
    assert_eq!(
        Venue::read(&doc).unwrap().gates,
        BTreeMap::from([(gate, "a2V5".to_owned())])
    );
}

#[test]
fn put_instrument_writes_name_value_and_whether_it_is_bookable() {
    let mut doc = new_venue();
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::PutInstrument {
            id: "i-1".into(),
            name: "天文望远镜".into(),
            value_yuan: 120_000,
            bookable: true,
        },
    );
    assert_eq!(
        Venue::read(&doc).unwrap().instruments,
        [Instrument {
            id: "i-1".into(),
            name: "天文望远镜".into(),
            value_yuan: 120_000,
            bookable: true,
        }]
    );
}

#[test]
fn log_activity_writes_the_claim() {
    let mut doc = new_activity_log();
    then(&mut doc, &volunteer(), LATER, &log_activity("a-1", 45));
    let a = &ActivityLog::read(&doc).unwrap().activities[0];
    assert_eq!(a.id, "a-1");
    assert_eq!(a.venue, VENUE);
    assert_eq!(a.activity_kind, "guided_tour");
    assert_eq!(a.start, NOW - 3_600_000);
    assert_eq!(a.minutes, 45);
    assert_eq!(a.description, "机器人展区讲解");
}

#[test]
fn confirm_activity_records_one_decision_per_device_with_the_minutes_it_approves() {
    let mut doc = new_activity_log();
    then(&mut doc, &volunteer(), NOW, &log_activity("a-1", 45));
    then(&mut doc, &volunteer(), NOW, &log_activity("a-2", 30));
    let other = writer(4, Role::VenueStaff);
    // Approving without a figure approves what the device sees claimed, written down.
    then(
        &mut doc,
        &staff(),
        LATER,
        &Edit::ConfirmActivity {
            activity_id: "a-1".into(),
            approved: true,
            minutes: None,
        },
    );
    then(
        &mut doc,
        &other,
        LATER + 1,
        &Edit::ConfirmActivity {
            activity_id: "a-1".into(),
            approved: true,
            minutes: Some(20),
        },
    );
    // Declining writes no minutes.
    then(
        &mut doc,
        &staff(),
        LATER + 2,
        &Edit::ConfirmActivity {
            activity_id: "a-2".into(),
            approved: false,
            minutes: None,
        },
    );
    let got: BTreeSet<_> = ActivityLog::read(&doc)
        .unwrap()
        .confirmations
        .into_iter()
        .map(|c: Confirmation| (c.activity, c.device, c.by, c.at, c.approved, c.minutes))
        .collect();
    let want = BTreeSet::from([
        (
            "a-1".to_owned(),
            staff().device,
            Some(staff().user),
            LATER,
            true,
            Some(45),
        ),
        (
            "a-1".to_owned(),
            other.device,
            Some(other.user),
            LATER + 1,
            true,
            Some(20),
        ),
        (
            "a-2".to_owned(),
            staff().device,
            Some(staff().user),
            LATER + 2,
            false,
            None,
        ),
    ]);
    assert_eq!(got, want);
    let c = r::map(&doc, &ROOT, "confirmations").unwrap();
    assert!(r::keys(&doc, &c).contains(&format!("a-1/{}", other.device)));
}

#[test]
fn log_session_and_log_lecture_write_dated_entries_by_the_teacher() {
    let mut doc = new_school_log();
    then(
        &mut doc,
        &teacher(),
        LATER,
        &Edit::LogSession {
            id: "e-1".into(),
            at: NOW,
            topic: "电路".into(),
            minutes: 40,
        },
    );
    then(
        &mut doc,
        &teacher(),
        LATER,
        &Edit::LogLecture {
            id: "e-2".into(),
            at: NOW + 1,
            topic: "航天".into(),
            minutes: 90,
        },
    );
    let log = SchoolLog::read(&doc).unwrap();
    let entry = |id: &str, at, title: &str, amount| Entry {
        id: id.to_owned(),
        at,
        title: title.to_owned(),
        amount,
        by: Some(teacher().user),
    };
    assert_eq!(log.sessions, [entry("e-1", NOW, "电路", 40)]);
    assert_eq!(log.lectures, [entry("e-2", NOW + 1, "航天", 90)]);
    assert!(log.tour_stops.is_empty());
}

#[test]
fn add_tour_stop_and_tour_attendance_record_the_stop_and_who_attended() {
    let mut doc = new_school_log();
    let tablet = staff();
    then(
        &mut doc,
        &tablet,
        LATER,
        &Edit::AddTourStop {
            id: "t-1".into(),
            at: NOW,
            location: "操场".into(),
            days: 2,
        },
    );
    then(
        &mut doc,
        &tablet,
        LATER + 1,
        &Edit::TourAttendance {
            stop: "t-1".into(),
            pupil: pupil(1),
        },
    );
    let log = SchoolLog::read(&doc).unwrap();
    assert_eq!(
        log.tour_stops,
        [Entry {
            id: "t-1".into(),
            at: NOW,
            title: "操场".into(),
            amount: 2,
            by: Some(tablet.user),
        }]
    );
    assert_eq!(
        log.tour_attendance,
        BTreeMap::from([("t-1".to_owned(), BTreeSet::from([pupil(1)]))])
    );
    let att = r::map(&doc, &ROOT, "tour_attendance").unwrap();
    let key = format!("t-1/{}/{}", pupil(1), tablet.device);
    assert_eq!(r::int(&doc, &att, &key), Some(LATER + 1));
}

#[test]
fn revoke_pass_records_the_pass_and_when() {
    let mut doc = created(&server(), &Edit::CreateRevocations);
    then(
        &mut doc,
        &server(),
        LATER,
        &Edit::RevokePass {
            pupil: pupil(1),
            serial: 2,
        },
    );
    assert_eq!(
        revocations::read_with_times(&doc),
        BTreeMap::from([((pupil(1), 2), LATER)])
    );
}

#[test]
fn every_edit_is_one_change_named_after_it_at_the_given_time() {
    let mut doc = new_booking();
    let hash = apply_unchecked(&mut doc, &staff(), LATER, &Edit::CancelBooking)
        .unwrap()
        .expect("a change");
    let change = doc.get_change_by_hash(&hash).unwrap();
    assert_eq!(change.message(), Some("cancel_booking"));
    assert_eq!(change.timestamp(), LATER / 1000);
    assert_eq!(doc.get_changes(&[]).len(), 2);
}

#[test]
fn an_edit_that_does_not_fit_the_document_is_refused_before_writing() {
    let doc = new_booking();
    assert_eq!(
        check_applies(&doc, &Edit::CreateRevocations),
        Err(EditError::AlreadyExists)
    );
    assert_eq!(
        check_applies(
            &doc,
            &Edit::PutGate {
                device: staff().device,
                key: "k".into()
            }
        ),
        Err(EditError::WrongKind {
            edit: "put_gate",
            kind: "booking"
        })
    );
    let mut empty = Automerge::new();
    assert_eq!(
        apply_unchecked(&mut empty, &teacher(), NOW, &Edit::CancelBooking),
        Err(EditError::WrongKind {
            edit: "cancel_booking",
            kind: "empty"
        })
    );
    assert!(empty.get_heads().is_empty(), "nothing was written");
    let mut other = new_school_log();
    let before = other.get_heads();
    assert!(apply_unchecked(&mut other, &teacher(), NOW, &Edit::CancelBooking).is_err());
    assert_eq!(other.get_heads(), before);
}
