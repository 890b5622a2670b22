//! Golden documents: one document of every kind as an engine of each released schema
//! version writes it, the field inventory of a document, and its typed reading as JSON.
//!
//! The recorder (`server/tests/it/compat.rs`, `record_golden_fixtures`) saves these under
//! `tests/fixtures/schema-v<N>/` once per released version; the compatibility tests
//! (`sync-core/tests/schema_compat.rs`, `server/tests/it/compat.rs`,
//! `mobile-ffi/tests/old_documents.rs`) read the saved files back with today's engine.
//! Version 1 is written by today's edits with `schema` stamped 1 and without the
//! version-2 fields (ADR 0170): the only thing version 2 changed. Version 3 (ADR 0203)
//! adds the bookings' per-device containers; its booking also holds the scans of a gate
//! still on version 2 ([`old_gate`]), written where that gate writes them, so that the
//! layout every version reads is in the fixtures of the latest. Version 4 (ADR 0205)
//! adds the bookings' containers of one-value scan records; its booking also holds the
//! scans of a gate still on version 3 ([`v3_gate`]).
//!
//! Fixed ids, actors and times, so that recording a version again gives the same bytes.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::edits::{Edit, apply_unchecked_as_schema};
use crate::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use crate::schema::activity_log::ActivityLog;
use crate::schema::booking::{Booking, ScanMethod, Status};
use crate::schema::school_log::SchoolLog;
use crate::schema::venue::Venue;
use crate::schema::{DocKind, revocations};
use crate::writer::{Role, Writer};

/// Every schema version kepu released, oldest first. A version is added here when it is
/// released, together with its recorded fixtures; none is ever removed.
pub const RELEASED: &[i64] = &[1, 2, 3, 4];

/// 2026-03-02 09:00 China time.
pub const T: i64 = 1_772_413_200_000;
const MIN: i64 = 60_000;

/// The school of every golden document.
pub const SCHOOL: SchoolId = SchoolId(Uuid::from_u128(0x5c_0001));
/// The venue of every golden document.
pub const VENUE: VenueId = VenueId(Uuid::from_u128(0x7e_0001));
/// The venue's slot.
pub const SLOT: SlotId = SlotId(Uuid::from_u128(0x51_0001));

/// Pupil `n` of the fixtures.
#[must_use]
pub fn pupil(n: u128) -> PupilId {
    PupilId(Uuid::from_u128(0x90_0000 + n))
}

/// Device `n` of the fixtures, of a user with `role` (teacher 1, venue staff 2,
/// volunteer 3, pupil 4 by convention).
#[must_use]
pub fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(0xde_0000 + n)),
        user: UserId(Uuid::from_u128(0xa5_0000 + n)),
        role,
        school: matches!(role, Role::Teacher | Role::Volunteer | Role::Pupil).then_some(SCHOOL),
        venue: (role == Role::VenueStaff).then_some(VENUE),
        pupil: (role == Role::Pupil).then_some(pupil(n)),
    }
}

/// A gate whose app is still on schema version 2 when version 3 is released: in the
/// fixtures of version 3 its edits are written as a version-2 engine writes them.
#[must_use]
pub fn old_gate() -> Writer {
    writer(5, Role::VenueStaff)
}

/// A gate whose app is still on schema version 3 when version 4 is released: in the
/// fixtures of version 4 its edits are written as a version-3 engine writes them.
#[must_use]
pub fn v3_gate() -> Writer {
    writer(6, Role::VenueStaff)
}

/// The server of the fixtures.
#[must_use]
pub fn server() -> Writer {
    Writer::server(DeviceId(Uuid::from_u128(0x5e_0001)))
}

/// One stored change row as a server keeps it, with who wrote it (what the server knew
/// from the connection that delivered it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The change hash, hex.
    pub hash: String,
    /// The change bytes, hex.
    pub bytes: String,
    /// The writer.
    pub writer: Writer,
}

/// One golden document.
#[derive(Debug)]
pub struct Golden {
    /// File name stem (`booking`, `venue`, …).
    pub name: &'static str,
    /// Its kind.
    pub kind: DocKind,
    /// The document.
    pub doc: Automerge,
    /// Its changes in the order they were written, with their writers.
    pub rows: Vec<Row>,
}

/// The golden documents of `version`, one per kind (and a cancelled booking).
///
/// # Panics
/// If `version` is not in [`RELEASED`] or an edit does not apply (a bug here).
#[must_use]
pub fn documents(version: i64) -> Vec<Golden> {
    assert!(
        RELEASED.contains(&version),
        "schema {version} is not released"
    );
    let v2 = version >= 2;
    vec![
        written("venue", DocKind::Venue, version, &venue(v2)),
        written("booking", DocKind::Booking, version, &booking(version)),
        written(
            "cancelled_booking",
            DocKind::Booking,
            version,
            &cancelled_booking(),
        ),
        written(
            "activity_log",
            DocKind::ActivityLog,
            version,
            &activity_log(),
        ),
        written("school_log", DocKind::SchoolLog, version, &school_log()),
        written(
            "revocations",
            DocKind::Revocations,
            version,
            &revocations_list(),
        ),
    ]
}

type Script = Vec<(Writer, i64, Edit)>;

fn written(name: &'static str, kind: DocKind, version: i64, edits: &Script) -> Golden {
    let mut doc = Automerge::new();
    let mut rows = Vec::new();
    for (who, at, edit) in edits {
        doc.set_actor(ActorId::from(who.device.as_bytes().as_slice()));
        let engine = if who.device == old_gate().device {
            version.min(2)
        } else if who.device == v3_gate().device {
            version.min(3)
        } else {
            version
        };
        let hash = apply_unchecked_as_schema(&mut doc, who, *at, edit, engine)
            .expect("a golden edit applies")
            .expect("a golden edit changes something");
        let change = doc.get_change_by_hash(&hash).expect("the change just made");
        rows.push(Row {
            hash: hex::encode(hash.0),
            bytes: hex::encode(change.raw_bytes()),
            writer: who.clone(),
        });
    }
    Golden {
        name,
        kind,
        doc,
        rows,
    }
}

fn venue(v2: bool) -> Script {
    let staff = writer(2, Role::VenueStaff);
    vec![
        (server(), T, Edit::CreateVenue { venue: VENUE }),
        (
            staff.clone(),
            T + MIN,
            Edit::SetProfile {
                // Every profile field, so that the inventory holds them all.
                fields: BTreeMap::from([
                    ("name".to_owned(), "湖南省科学技术馆".to_owned()),
                    ("venue_kind".to_owned(), "science_museum".to_owned()),
                    ("address".to_owned(), "长沙市岳麓区".to_owned()),
                    ("phone".to_owned(), "0731-00000000".to_owned()),
                    ("city".to_owned(), "长沙市".to_owned()),
                    ("county".to_owned(), "岳麓区".to_owned()),
                    ("opening_hours".to_owned(), "09:00-17:00".to_owned()),
                    ("services".to_owned(), "guided_tour".to_owned()),
                    ("facilities".to_owned(), "planetarium".to_owned()),
                ]),
                location: Some((28.23, 112.87)),
                after_school: v2.then_some(true),
            },
        ),
        (
            staff.clone(),
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
            staff.clone(),
            T + 3 * MIN,
            Edit::PutGate {
                device: staff.device,
                key: "Z2F0ZS1rZXk=".into(),
            },
        ),
        (
            staff,
            T + 4 * MIN,
            Edit::PutInstrument {
                id: "inst-1".into(),
                name: "天文望远镜".into(),
                value_yuan: 120_000,
                bookable: true,
            },
        ),
    ]
}

/// The booking a teacher requests in the fixtures (also the first change of the
/// recorded sync exchange).
#[must_use]
pub fn create_booking() -> Edit {
    Edit::CreateBooking {
        venue: VENUE,
        slot: SLOT,
        school: SCHOOL,
        party_size: 3,
        roster: vec![pupil(1), pupil(2), pupil(4)],
    }
}

fn scan(pupil: PupilId, id: &str, method: ScanMethod) -> Edit {
    Edit::CheckIn {
        pupil,
        scan_id: id.into(),
        method,
        proof: None,
    }
}

fn booking(version: i64) -> Script {
    let v2 = version >= 2;
    let teacher = writer(1, Role::Teacher);
    let gate = writer(2, Role::VenueStaff);
    let phone = writer(4, Role::Pupil);
    let mut script = vec![
        (teacher.clone(), T, create_booking()),
        (
            server(),
            T + MIN,
            Edit::Decide {
                status: Status::Confirmed,
                wait_position: None,
            },
        ),
    ];
    if v2 {
        script.push((
            gate.clone(),
            T + 50 * MIN,
            Edit::SetGuide {
                guide: "蓝队".into(),
            },
        ));
    }
    script.extend([
        (
            gate.clone(),
            T + 55 * MIN,
            scan(pupil(1), "scan-1", ScanMethod::PassScan),
        ),
        (
            teacher.clone(),
            T + 56 * MIN,
            scan(pupil(1), "scan-2", ScanMethod::Manual),
        ),
        (
            phone,
            T + 57 * MIN,
            scan(pupil(4), "scan-3", ScanMethod::GateCode),
        ),
        (
            gate,
            T + 170 * MIN,
            Edit::CheckOut {
                pupil: pupil(1),
                scan_id: "scan-5".into(),
                method: ScanMethod::PassScan,
            },
        ),
        (
            teacher.clone(),
            T + 171 * MIN,
            Edit::AddNote {
                note_id: "note-1".into(),
                text: "bus_delayed".into(),
            },
        ),
        (
            teacher.clone(),
            T + 172 * MIN,
            Edit::AddToRoster {
                pupils: vec![pupil(3)],
            },
        ),
        (
            teacher,
            T + 173 * MIN,
            Edit::RemoveFromRoster { pupil: pupil(2) },
        ),
    ]);
    if version >= 3 {
        // A gate still on version 2 scans into this booking where version 2 writes
        // (`"<pupil>/<device>"`); today's engines read both layouts (ADR 0203).
        script.extend([
            (
                old_gate(),
                T + 58 * MIN,
                scan(pupil(3), "scan-6", ScanMethod::PassScan),
            ),
            (
                old_gate(),
                T + 174 * MIN,
                Edit::CheckOut {
                    pupil: pupil(3),
                    scan_id: "scan-7".into(),
                    method: ScanMethod::PassScan,
                },
            ),
        ]);
    }
    if version >= 4 {
        // A gate still on version 3 scans into this booking where version 3 writes (its
        // own map, a record object per scan); today's engines read every layout (ADR
        // 0205).
        script.extend([
            (
                v3_gate(),
                T + 59 * MIN,
                scan(pupil(3), "scan-8", ScanMethod::PassScan),
            ),
            (
                v3_gate(),
                T + 175 * MIN,
                Edit::CheckOut {
                    pupil: pupil(3),
                    scan_id: "scan-9".into(),
                    method: ScanMethod::PassScan,
                },
            ),
        ]);
    }
    script
}

fn cancelled_booking() -> Script {
    let teacher = writer(1, Role::Teacher);
    vec![
        (
            teacher.clone(),
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
            server(),
            T + MIN,
            Edit::Decide {
                status: Status::Waitlisted,
                wait_position: Some(2),
            },
        ),
        (teacher, T + 2 * MIN, Edit::CancelBooking),
    ]
}

fn activity_log() -> Script {
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
    vec![
        (
            volunteer.clone(),
            T,
            Edit::CreateActivityLog {
                volunteer: volunteer.user,
                school: Some(SCHOOL),
            },
        ),
        (volunteer.clone(), T + MIN, log("act-1", 60, T - 120 * MIN)),
        (volunteer, T + 2 * MIN, log("act-2", 45, T - 60 * MIN)),
        (staff.clone(), T + 10 * MIN, decide("act-1", true, Some(50))),
        (staff, T + 11 * MIN, decide("act-2", false, None)),
    ]
}

fn school_log() -> Script {
    let teacher = writer(1, Role::Teacher);
    let tablet = writer(2, Role::VenueStaff);
    vec![
        (
            server(),
            T,
            Edit::CreateSchoolLog {
                school: SCHOOL,
                year: 2026,
            },
        ),
        (
            teacher.clone(),
            T + MIN,
            Edit::LogSession {
                id: "sess-1".into(),
                at: T - 1440 * MIN,
                topic: "简单电路".into(),
                minutes: 40,
            },
        ),
        (
            teacher,
            T + 2 * MIN,
            Edit::LogLecture {
                id: "lect-1".into(),
                at: T - 720 * MIN,
                topic: "航天".into(),
                minutes: 90,
            },
        ),
        (
            tablet.clone(),
            T + 3 * MIN,
            Edit::AddTourStop {
                id: "stop-1".into(),
                at: T,
                location: "操场".into(),
                days: 2,
            },
        ),
        (
            tablet,
            T + 4 * MIN,
            Edit::TourAttendance {
                stop: "stop-1".into(),
                pupil: pupil(1),
            },
        ),
    ]
}

fn revocations_list() -> Script {
    vec![
        (server(), T, Edit::CreateRevocations),
        (
            server(),
            T + MIN,
            Edit::RevokePass {
                pupil: pupil(1),
                serial: 2,
            },
        ),
    ]
}

/// What today's engine reads from `doc` as `kind`, as JSON (`null` when it reads
/// nothing): the typed views devices and the server's records use.
#[must_use]
pub fn read_json(doc: &Automerge, kind: DocKind) -> serde_json::Value {
    let value = match kind {
        DocKind::Venue => serde_json::to_value(Venue::read(doc)),
        DocKind::Booking => serde_json::to_value(Booking::read(doc)),
        DocKind::ActivityLog => serde_json::to_value(ActivityLog::read(doc)),
        DocKind::SchoolLog => serde_json::to_value(SchoolLog::read(doc)),
        DocKind::Revocations => serde_json::to_value(
            revocations::read_with_times(doc)
                .into_iter()
                .map(|((pupil, serial), at)| (format!("{pupil}/{serial}"), at))
                .collect::<BTreeMap<_, _>>(),
        ),
    };
    value.expect("a typed view serializes")
}

/// The maps of a kind whose keys are entries (ids, `"<pupil>/<device>"`, …), not field
/// names: in an inventory their keys are written `*`.
#[must_use]
pub fn entry_maps(kind: DocKind) -> &'static [&'static str] {
    match kind {
        DocKind::Venue => &["instruments", "slots", "gates"],
        DocKind::Booking => &[
            "roster",
            "check_ins",
            "check_ins/*",
            "check_outs",
            "check_outs/*",
            "check_ins_by_device",
            "check_ins_by_device/*",
            "check_ins_by_device/*/*",
            "check_outs_by_device",
            "check_outs_by_device/*",
            "check_outs_by_device/*/*",
            "check_in_records",
            "check_in_records/*",
            "check_out_records",
            "check_out_records/*",
            "notes",
        ],
        DocKind::ActivityLog => &["activities", "confirmations"],
        DocKind::SchoolLog => &["sessions", "lectures", "tour_stops", "tour_attendance"],
        DocKind::Revocations => &["passes"],
    }
}

/// The field inventory of `doc`: every path (entry keys as `*`) with the automerge type
/// of its value (`map`, `str`, `int`, `timestamp`, …). A released version's inventory is
/// checked in beside its fixtures; no later version may drop or retype one of its
/// paths (`docs/conflict-rules.md`, "Changing the schema").
#[must_use]
pub fn inventory(doc: &Automerge, kind: DocKind) -> BTreeMap<String, String> {
    fn walk(
        doc: &Automerge,
        obj: &ObjId,
        prefix: &str,
        entries: &[&str],
        out: &mut BTreeMap<String, String>,
    ) {
        let is_entry_map = entries.contains(&prefix);
        for key in doc.keys(obj) {
            let Ok(Some((value, id))) = doc.get(obj, key.as_str()) else {
                continue;
            };
            let shown = if is_entry_map { "*" } else { key.as_str() };
            let path = if prefix.is_empty() {
                shown.to_owned()
            } else {
                format!("{prefix}/{shown}")
            };
            let ty = match value {
                automerge::Value::Object(ObjType::Map) => {
                    walk(doc, &id, &path, entries, out);
                    "map".to_owned()
                }
                automerge::Value::Object(other) => format!("{other:?}").to_lowercase(),
                automerge::Value::Scalar(s) => scalar_type(s.as_ref()).to_owned(),
            };
            out.insert(path, ty);
        }
    }
    let mut out = BTreeMap::new();
    walk(doc, &ROOT, "", entry_maps(kind), &mut out);
    out
}

fn scalar_type(s: &ScalarValue) -> &'static str {
    match s {
        ScalarValue::Str(_) => "str",
        ScalarValue::Int(_) => "int",
        ScalarValue::Uint(_) => "uint",
        ScalarValue::F64(_) => "f64",
        ScalarValue::Timestamp(_) => "timestamp",
        ScalarValue::Boolean(_) => "bool",
        ScalarValue::Bytes(_) => "bytes",
        ScalarValue::Counter(_) => "counter",
        ScalarValue::Null => "null",
        _ => "other",
    }
}

/// Parses a row's hex hash.
///
/// # Panics
/// On a malformed fixture.
#[must_use]
pub fn row_hash(row: &Row) -> ChangeHash {
    let bytes: [u8; 32] = hex::decode(&row.hash)
        .expect("hex hash")
        .try_into()
        .expect("32-byte hash");
    ChangeHash(bytes)
}
