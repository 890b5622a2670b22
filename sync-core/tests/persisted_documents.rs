//! The saved form of every kind of document, as snapshots: the document itself as any
//! automerge client sees it (keys, values and the automerge type of each value), and the
//! typed view every replica and the server's records read from it. Fixed actors, ids and times, so a snapshot changes
//! only when the format does; a change of format is then a visible diff to review
//! (see CONTRIBUTING.md, "Snapshots").

use std::collections::BTreeMap;

use automerge::{ActorId, AutoSerde, Automerge, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{Booking, ScanMethod, Status};
use kepu_sync_core::schema::revocations;
use kepu_sync_core::schema::school_log::SchoolLog;
use kepu_sync_core::schema::venue::Venue;
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

/// 2026-03-02 09:00 China time.
const T: i64 = 1_772_413_200_000;
const MIN: i64 = 60_000;

const SCHOOL: SchoolId = SchoolId(Uuid::from_u128(0x5c_0001));
const VENUE: VenueId = VenueId(Uuid::from_u128(0x7e_0001));
const SLOT: SlotId = SlotId(Uuid::from_u128(0x51_0001));

fn pupil(n: u128) -> PupilId {
    PupilId(Uuid::from_u128(0x90_0000 + n))
}

fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(0xde_0000 + n)),
        user: UserId(Uuid::from_u128(0xa5_0000 + n)),
        role,
        school: matches!(role, Role::Teacher | Role::Volunteer | Role::Pupil).then_some(SCHOOL),
        venue: (role == Role::VenueStaff).then_some(VENUE),
        pupil: (role == Role::Pupil).then_some(pupil(n)),
    }
}

fn server() -> Writer {
    Writer::server(DeviceId(Uuid::from_u128(0x5e_0001)))
}

/// A document written by `edits`, each by its writer at its time, under one fixed actor
/// per writer (as every device writes under its own).
fn written(edits: &[(&Writer, i64, Edit)]) -> Automerge {
    let mut doc = Automerge::new();
    for (who, at, edit) in edits {
        doc.set_actor(ActorId::from(who.device.as_bytes().as_slice()));
        apply_unchecked(&mut doc, who, *at, edit).expect("edit applies");
    }
    doc
}

/// The document as JSON, the way any automerge client reads it.
fn as_json(doc: &Automerge) -> serde_json::Value {
    serde_json::to_value(AutoSerde::from(doc)).expect("a document serializes")
}

/// The document with the automerge type of every value (`"timestamp 1772413200000"`,
/// `"int 3"`, `"str 蓝队"`): what a client in another language must write for kepu to read
/// it, e.g. a timestamp and not an integer, a scalar string and not a text object.
fn typed(doc: &Automerge) -> serde_json::Value {
    fn walk(doc: &Automerge, obj: &ObjId) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for key in doc.keys(obj) {
            let Ok(Some((value, id))) = doc.get(obj, key.as_str()) else {
                continue;
            };
            let shown = match value {
                automerge::Value::Object(ObjType::Map) => walk(doc, &id),
                automerge::Value::Object(other) => format!("{other:?} object").into(),
                automerge::Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Str(t) => format!("str {t}"),
                    ScalarValue::Int(i) => format!("int {i}"),
                    ScalarValue::Uint(u) => format!("uint {u}"),
                    ScalarValue::F64(f) => format!("f64 {f}"),
                    ScalarValue::Timestamp(t) => format!("timestamp {t}"),
                    ScalarValue::Boolean(b) => format!("bool {b}"),
                    other => format!("{other:?}"),
                }
                .into(),
            };
            out.insert(key, shown);
        }
        out.into()
    }
    walk(doc, &ROOT)
}

/// A venue with its profile, a slot, a gate and an instrument.
pub fn venue() -> Automerge {
    let staff = writer(2, Role::VenueStaff);
    written(&[
        (&server(), T, Edit::CreateVenue { venue: VENUE }),
        (
            &staff,
            T + MIN,
            Edit::SetProfile {
                fields: BTreeMap::from([
                    ("name".to_owned(), "湖南省科学技术馆".to_owned()),
                    ("venue_kind".to_owned(), "science_museum".to_owned()),
                    ("address".to_owned(), "长沙市岳麓区".to_owned()),
                ]),
                location: Some((28.23, 112.87)),
                after_school: Some(true),
            },
        ),
        (
            &staff,
            T + 2 * MIN,
            Edit::PutSlot {
                slot: SLOT,
                start: T + 60 * MIN,
                end: T + 180 * MIN,
                capacity: 40,
                label: "课后场".into(),
            },
        ),
        (
            &staff,
            T + 3 * MIN,
            Edit::PutGate {
                device: staff.device,
                key: "Z2F0ZS1rZXk=".into(),
            },
        ),
        (
            &staff,
            T + 4 * MIN,
            Edit::PutInstrument {
                id: "inst-1".into(),
                name: "天文望远镜".into(),
                value_yuan: 120_000,
                bookable: true,
            },
        ),
    ])
}

/// A confirmed booking with check-ins (one a walk-in), a check-out, a note and a guide.
pub fn booking() -> Automerge {
    let teacher = writer(1, Role::Teacher);
    let gate = writer(2, Role::VenueStaff);
    let phone = writer(4, Role::Pupil);
    let scan = |pupil, id: &str, method| Edit::CheckIn {
        pupil,
        scan_id: id.into(),
        method,
        proof: None,
    };
    written(&[
        (
            &teacher,
            T,
            Edit::CreateBooking {
                venue: VENUE,
                slot: SLOT,
                school: SCHOOL,
                party_size: 3,
                roster: vec![pupil(1), pupil(2), pupil(4)],
            },
        ),
        (
            &server(),
            T + MIN,
            Edit::Decide {
                status: Status::Confirmed,
                wait_position: None,
            },
        ),
        (
            &gate,
            T + 50 * MIN,
            Edit::SetGuide {
                guide: "蓝队".into(),
            },
        ),
        (
            &gate,
            T + 55 * MIN,
            scan(pupil(1), "scan-1", ScanMethod::PassScan),
        ),
        (
            &teacher,
            T + 56 * MIN,
            scan(pupil(1), "scan-2", ScanMethod::Manual),
        ),
        (
            &phone,
            T + 57 * MIN,
            scan(pupil(4), "scan-3", ScanMethod::GateCode),
        ),
        (
            &gate,
            T + 58 * MIN,
            scan(pupil(9), "scan-4", ScanMethod::Manual),
        ),
        (
            &gate,
            T + 170 * MIN,
            Edit::CheckOut {
                pupil: pupil(1),
                scan_id: "scan-5".into(),
                method: ScanMethod::PassScan,
            },
        ),
        (
            &teacher,
            T + 171 * MIN,
            Edit::AddNote {
                note_id: "note-1".into(),
                text: "bus_delayed".into(),
            },
        ),
        (
            &teacher,
            T + 172 * MIN,
            Edit::AddToRoster {
                pupils: vec![pupil(3)],
            },
        ),
        (
            &teacher,
            T + 173 * MIN,
            Edit::RemoveFromRoster { pupil: pupil(2) },
        ),
    ])
}

/// A wait-listed booking that its teacher cancelled.
pub fn cancelled_booking() -> Automerge {
    let teacher = writer(1, Role::Teacher);
    written(&[
        (
            &teacher,
            T,
            Edit::CreateBooking {
                venue: VENUE,
                slot: SLOT,
                school: SCHOOL,
                party_size: 30,
                roster: vec![],
            },
        ),
        (
            &server(),
            T + MIN,
            Edit::Decide {
                status: Status::Waitlisted,
                wait_position: Some(2),
            },
        ),
        (&teacher, T + 2 * MIN, Edit::CancelBooking),
    ])
}

/// A volunteer's log: one activity approved with fewer minutes, one declined, one open.
pub fn activity_log() -> Automerge {
    let volunteer = writer(3, Role::Volunteer);
    let staff = writer(2, Role::VenueStaff);
    let log = |id: &str, minutes, start| Edit::LogActivity {
        activity_id: id.into(),
        venue: VENUE,
        activity_kind: "guided_tour".into(),
        start,
        minutes,
        description: "机器人展区讲解".into(),
    };
    let decide = |id: &str, approved, minutes| Edit::ConfirmActivity {
        activity_id: id.into(),
        approved,
        minutes,
    };
    written(&[
        (
            &volunteer,
            T,
            Edit::CreateActivityLog {
                volunteer: volunteer.user,
                school: Some(SCHOOL),
            },
        ),
        (&volunteer, T + MIN, log("act-1", 60, T - 120 * MIN)),
        (&volunteer, T + MIN, log("act-2", 45, T - 60 * MIN)),
        (&volunteer, T + MIN, log("act-3", 30, T - 30 * MIN)),
        (&staff, T + 10 * MIN, decide("act-1", true, Some(50))),
        (&staff, T + 11 * MIN, decide("act-2", false, None)),
    ])
}

/// A school's year: a session, a lecture, a tour stop with attendance.
pub fn school_log() -> Automerge {
    let teacher = writer(1, Role::Teacher);
    let tablet = writer(2, Role::VenueStaff);
    written(&[
        (
            &server(),
            T,
            Edit::CreateSchoolLog {
                school: SCHOOL,
                year: 2026,
            },
        ),
        (
            &teacher,
            T + MIN,
            Edit::LogSession {
                id: "sess-1".into(),
                at: T - 1440 * MIN,
                topic: "简单电路".into(),
                minutes: 40,
            },
        ),
        (
            &teacher,
            T + 2 * MIN,
            Edit::LogLecture {
                id: "lect-1".into(),
                at: T - 720 * MIN,
                topic: "航天".into(),
                minutes: 90,
            },
        ),
        (
            &tablet,
            T + 3 * MIN,
            Edit::AddTourStop {
                id: "stop-1".into(),
                at: T,
                location: "操场".into(),
                days: 2,
            },
        ),
        (
            &tablet,
            T + 4 * MIN,
            Edit::TourAttendance {
                stop: "stop-1".into(),
                pupil: pupil(1),
            },
        ),
    ])
}

/// The server's list of revoked passes.
pub fn revocations() -> Automerge {
    written(&[
        (&server(), T, Edit::CreateRevocations),
        (
            &server(),
            T + MIN,
            Edit::RevokePass {
                pupil: pupil(1),
                serial: 2,
            },
        ),
    ])
}

#[test]
fn a_venue_document() {
    let doc = venue();
    insta::assert_json_snapshot!("venue_document", typed(&doc));
    insta::assert_json_snapshot!("venue_read", Venue::read(&doc).unwrap());
}

#[test]
fn a_booking_document() {
    let doc = booking();
    insta::assert_json_snapshot!("booking_document", typed(&doc));
    insta::assert_json_snapshot!("booking_read", Booking::read(&doc).unwrap());
}

#[test]
fn a_cancelled_booking_document() {
    let doc = cancelled_booking();
    insta::assert_json_snapshot!("cancelled_booking_document", typed(&doc));
    insta::assert_json_snapshot!("cancelled_booking_read", Booking::read(&doc).unwrap());
}

#[test]
fn an_activity_log_document() {
    let doc = activity_log();
    insta::assert_json_snapshot!("activity_log_document", typed(&doc));
    insta::assert_json_snapshot!("activity_log_read", ActivityLog::read(&doc).unwrap());
}

#[test]
fn a_school_log_document() {
    let doc = school_log();
    insta::assert_json_snapshot!("school_log_document", typed(&doc));
    insta::assert_json_snapshot!("school_log_read", SchoolLog::read(&doc).unwrap());
}

#[test]
fn a_revocations_document() {
    let doc = revocations();
    insta::assert_json_snapshot!("revocations_document", typed(&doc));
    insta::assert_json_snapshot!(
        "revocations_read",
        revocations::read_with_times(&doc)
            .into_iter()
            .map(|((pupil, serial), at)| (format!("{pupil}/{serial}"), at))
            .collect::<BTreeMap<_, _>>()
    );
}

/// The saved bytes themselves: what the server stores and every phone keeps. A new
/// automerge version that encodes differently shows here first.
#[test]
fn the_saved_bytes_of_a_booking() {
    let bytes = booking().save();
    let again = booking().save();
    assert_eq!(bytes, again, "saving is deterministic");
    let loaded = Automerge::load(&bytes).expect("loads");
    assert_eq!(as_json(&loaded), as_json(&booking()));
    insta::assert_snapshot!("booking_saved_bytes", hex::encode(bytes));
}
