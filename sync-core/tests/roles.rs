//! Who may read and write what, bounded values and documents at derived ids: the rules
//! of `docs/security.md` ("Roles, proofs and documents"), one hostile case at a time.

use std::collections::HashSet;
use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::rules::volunteer::minutes;
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::ScanMethod;
use kepu_sync_core::validate::{
    DerivedIds, MAX_PATH_CHARS, ProofCheck, RefusalCode, can_read, validate, validate_patches_with,
};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const NOW: i64 = 1_767_225_600_000;
const SCHOOL: u128 = 1;
const VENUE: u128 = 2;

fn who(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(100 + n)),
        user: UserId(Uuid::from_u128(200 + n)),
        role,
        school: matches!(role, Role::Teacher | Role::Pupil | Role::Volunteer)
            .then_some(SchoolId(Uuid::from_u128(SCHOOL))),
        venue: (role == Role::VenueStaff).then_some(VenueId(Uuid::from_u128(VENUE))),
        pupil: (role == Role::Pupil).then_some(PupilId(Uuid::from_u128(300 + n))),
    }
}

fn server() -> Writer {
    Writer::server(DeviceId(Uuid::from_u128(9)))
}

/// A new document written by `writer` (no validation).
fn made(writer: &Writer, edit: &Edit) -> Automerge {
    let mut d = Automerge::new();
    apply_unchecked(&mut d, writer, NOW, edit).unwrap();
    d
}

/// Applies `edit` as `writer` on a copy of `doc` and validates it.
fn try_edit(doc: &Automerge, writer: &Writer, edit: &Edit) -> Result<(), RefusalCode> {
    let mut d = doc.clone();
    let before = d.get_heads();
    apply_unchecked(&mut d, writer, NOW + 1000, edit).unwrap();
    validate(&d, &before, writer).map_err(|r| r.code)
}

/// Creates a document as `writer` and validates the creation.
fn try_create(writer: &Writer, edit: &Edit) -> Result<(), RefusalCode> {
    let d = made(writer, edit);
    validate(&d, &[], writer).map_err(|r| r.code)
}

fn school_log() -> Automerge {
    made(
        &server(),
        &Edit::CreateSchoolLog {
            school: SchoolId(Uuid::from_u128(SCHOOL)),
            year: 2026,
        },
    )
}

fn booking() -> Automerge {
    made(
        &who(1, Role::Teacher),
        &Edit::CreateBooking {
            venue: VenueId(Uuid::from_u128(VENUE)),
            slot: SlotId(Uuid::from_u128(3)),
            school: SchoolId(Uuid::from_u128(SCHOOL)),
            party_size: 10,
            roster: vec![PupilId(Uuid::from_u128(305))],
        },
    )
}

fn activity_log(volunteer: &Writer) -> Automerge {
    made(
        volunteer,
        &Edit::CreateActivityLog {
            volunteer: volunteer.user,
            school: volunteer.school,
        },
    )
}

fn log_activity(minutes: u32) -> Edit {
    described(minutes, String::new())
}

fn described(minutes: u32, description: String) -> Edit {
    Edit::LogActivity {
        activity_id: "a1".into(),
        venue: VenueId(Uuid::from_u128(VENUE)),
        activity_kind: "guided_tour".into(),
        start: NOW,
        minutes,
        description,
    }
}

#[test]
fn venue_staff_write_only_tour_records_into_a_school_log_in_their_own_name() {
    let log = school_log();
    let staff = who(4, Role::VenueStaff);
    // A tour tablet holds the school's log offline (documented in docs/security.md).
    assert!(can_read(&staff, &log));
    let mut other_teacher = who(5, Role::Teacher);
    other_teacher.school = Some(SchoolId(Uuid::from_u128(99)));
    assert!(!can_read(&other_teacher, &log));
    assert!(!can_read(&who(7, Role::Volunteer), &log));
    assert!(!can_read(&who(8, Role::Pupil), &log));

    let session = Edit::LogSession {
        id: "s1".into(),
        at: NOW,
        topic: "magnets".into(),
        minutes: 40,
    };
    assert_eq!(
        try_edit(&log, &staff, &session),
        Err(RefusalCode::RoleMayNotWrite)
    );
    let stop = Edit::AddTourStop {
        id: "stop-1".into(),
        at: NOW,
        location: "playground".into(),
        days: 1,
    };
    assert_eq!(try_edit(&log, &staff, &stop), Ok(()));
    let mut with_stop = log.clone();
    apply_unchecked(&mut with_stop, &staff, NOW, &stop).unwrap();
    let attendance = |stop: &str| Edit::TourAttendance {
        stop: stop.into(),
        pupil: PupilId(Uuid::from_u128(305)),
    };
    assert_eq!(try_edit(&with_stop, &staff, &attendance("stop-1")), Ok(()));
    assert_eq!(
        try_edit(&with_stop, &staff, &attendance("no-such-stop")),
        Err(RefusalCode::MalformedValue)
    );

    // A tour stop in a teacher's name, or with a field the layout lacks, is refused.
    let raw = |field: &str, value: String| {
        let mut d = log.fork();
        let before = d.get_heads();
        let mut tx = d.transaction();
        let stops = tx.get(ROOT, "tour_stops").unwrap().unwrap().1;
        let rec = tx
            .put_object(&stops, "stop-2", automerge::ObjType::Map)
            .unwrap();
        tx.put(&rec, "at", automerge::ScalarValue::Timestamp(NOW))
            .unwrap();
        tx.put(&rec, field, value).unwrap();
        tx.commit();
        validate(&d, &before, &staff).map_err(|r| r.code)
    };
    assert_eq!(
        raw("by", who(1, Role::Teacher).user.to_string()),
        Err(RefusalCode::NotOwner)
    );
    assert_eq!(raw("by", staff.user.to_string()), Ok(()));
    assert_eq!(
        raw("pupil_names", "王小明".into()),
        Err(RefusalCode::UnknownField)
    );
}

#[test]
fn a_volunteer_opens_a_log_only_for_their_own_school() {
    let volunteer = who(3, Role::Volunteer);
    let own = Edit::CreateActivityLog {
        volunteer: volunteer.user,
        school: volunteer.school,
    };
    assert_eq!(try_create(&volunteer, &own), Ok(()));
    for school in [Some(SchoolId(Uuid::from_u128(99))), None] {
        let chosen = Edit::CreateActivityLog {
            volunteer: volunteer.user,
            school,
        };
        assert_eq!(
            try_create(&volunteer, &chosen),
            Err(RefusalCode::MayNotCreate),
            "{school:?}"
        );
    }
}

#[test]
fn a_confirmed_activity_cannot_be_raised_by_its_volunteer() {
    let volunteer = who(3, Role::Volunteer);
    let mut log = activity_log(&volunteer);
    apply_unchecked(&mut log, &volunteer, NOW, &log_activity(30)).unwrap();
    // Before staff decide, the volunteer may correct the claim.
    assert_eq!(try_edit(&log, &volunteer, &log_activity(45)), Ok(()));
    let staff = who(4, Role::VenueStaff);
    apply_unchecked(
        &mut log,
        &staff,
        NOW,
        &Edit::ConfirmActivity {
            activity_id: "a1".into(),
            approved: true,
            minutes: None,
        },
    )
    .unwrap();
    assert_eq!(
        try_edit(&log, &volunteer, &log_activity(600)),
        Err(RefusalCode::ActivityConfirmed)
    );
    // A raw write of one field is refused the same way.
    let mut raw = log.clone();
    let before = raw.get_heads();
    let mut tx = raw.transaction();
    let acts = tx.get(ROOT, "activities").unwrap().unwrap().1;
    let a1 = tx.get(&acts, "a1").unwrap().unwrap().1;
    tx.put(&a1, "minutes", 600_i64).unwrap();
    tx.commit();
    assert_eq!(
        validate(&raw, &before, &volunteer).unwrap_err().code,
        RefusalCode::ActivityConfirmed
    );
}

#[test]
fn approving_without_minutes_approves_only_the_minutes_seen() {
    let volunteer = who(3, Role::Volunteer);
    let mut log = activity_log(&volunteer);
    apply_unchecked(&mut log, &volunteer, NOW, &log_activity(30)).unwrap();
    let mut on_staff_device = log.fork();
    // Offline, the volunteer raises the claim while staff approve the 30 minutes they see.
    apply_unchecked(&mut log, &volunteer, NOW + 1, &log_activity(300)).unwrap();
    apply_unchecked(
        &mut on_staff_device,
        &who(4, Role::VenueStaff),
        NOW + 2,
        &Edit::ConfirmActivity {
            activity_id: "a1".into(),
            approved: true,
            minutes: None,
        },
    )
    .unwrap();
    log.merge(&mut on_staff_device).unwrap();
    let m = minutes(&ActivityLog::read(&log).unwrap());
    assert_eq!(
        m.confirmed, 30,
        "the raise is not approved by the old approval"
    );
}

#[test]
fn devices_create_no_venue_document_school_log_or_revocation_list() {
    let staff = who(4, Role::VenueStaff);
    assert_eq!(
        try_create(
            &staff,
            &Edit::CreateVenue {
                venue: VenueId(Uuid::from_u128(VENUE))
            }
        ),
        Err(RefusalCode::MayNotCreate)
    );
    assert_eq!(
        try_create(
            &who(6, Role::BureauAdmin),
            &Edit::CreateVenue {
                venue: VenueId(Uuid::from_u128(VENUE))
            }
        ),
        Err(RefusalCode::MayNotCreate)
    );
    assert_eq!(
        try_create(
            &who(1, Role::Teacher),
            &Edit::CreateSchoolLog {
                school: SchoolId(Uuid::from_u128(SCHOOL)),
                year: 2027
            }
        ),
        Err(RefusalCode::MayNotCreate)
    );
    assert_eq!(
        try_create(&who(1, Role::Teacher), &Edit::CreateRevocations),
        Err(RefusalCode::MayNotCreate)
    );
}

#[derive(Debug)]
struct Derived(HashSet<DocumentId>);

impl DerivedIds for Derived {
    fn kind_at(&self, doc: &DocumentId) -> Option<DocKind> {
        self.0.contains(doc).then_some(DocKind::SchoolLog)
    }
}

#[test]
fn a_booking_at_another_schools_log_id_is_refused() {
    // A teacher of school 1 creates a booking at the id of school 7's log for next year,
    // which would block that log.
    let target = DocumentId::school_log(SchoolId(Uuid::from_u128(7)), 2027);
    let checks = |doc: DocumentId| ProofCheck {
        doc: Some(doc),
        derived: Some(Arc::new(Derived([target].into_iter().collect()))),
        ..ProofCheck::default()
    };
    let d = booking();
    let patches = d.diff(&[], &d.get_heads());
    let teacher = who(1, Role::Teacher);
    assert_eq!(
        validate_patches_with(&d, &[], &patches, &teacher, &checks(target))
            .unwrap_err()
            .code,
        RefusalCode::MayNotCreate
    );
    let random = DocumentId::from_bytes([5; 16]);
    assert_eq!(
        validate_patches_with(&d, &[], &patches, &teacher, &checks(random)),
        Ok(())
    );
    // The server itself creates there.
    assert_eq!(
        validate_patches_with(&d, &[], &patches, &server(), &checks(target)),
        Ok(())
    );
}

#[test]
fn booking_notes_are_codes_and_hold_no_free_text() {
    let d = booking();
    let teacher = who(1, Role::Teacher);
    let note = |text: &str| Edit::AddNote {
        note_id: "n1".into(),
        text: text.into(),
    };
    assert_eq!(try_edit(&d, &teacher, &note("bus_delayed")), Ok(()));
    for text in ["王小明 arrived late", "", "bus_delayed "] {
        assert_eq!(
            try_edit(&d, &teacher, &note(text)),
            Err(RefusalCode::MalformedValue),
            "{text:?}"
        );
    }
    // No field beside the note's four.
    let mut raw = d;
    let before = raw.get_heads();
    let mut tx = raw.transaction();
    let notes = tx.get(ROOT, "notes").unwrap().unwrap().1;
    let n = tx
        .put_object(&notes, "n2", automerge::ObjType::Map)
        .unwrap();
    tx.put(&n, "text", "other").unwrap();
    tx.put(&n, "pupil_name", "王小明").unwrap();
    tx.commit();
    assert_eq!(
        validate(&raw, &before, &teacher).unwrap_err().code,
        RefusalCode::UnknownField
    );
}

#[test]
fn long_values_and_keys_are_refused_as_too_long() {
    let volunteer = who(3, Role::Volunteer);
    let log = activity_log(&volunteer);
    let long_description = described(30, "长".repeat(501));
    assert_eq!(
        try_edit(&log, &volunteer, &long_description),
        Err(RefusalCode::TooLong)
    );
    let fits = described(30, "长".repeat(500));
    assert_eq!(try_edit(&log, &volunteer, &fits), Ok(()));

    let teacher = who(1, Role::Teacher);
    let topic = Edit::LogSession {
        id: "s1".into(),
        at: NOW,
        topic: "x".repeat(10_000),
        minutes: 40,
    };
    assert_eq!(
        try_edit(&school_log(), &teacher, &topic),
        Err(RefusalCode::TooLong)
    );

    // A manual check-in by a teacher with a 100 KB "proof", and one with a 1 MB scan id.
    let d = booking();
    let long_proof = Edit::CheckIn {
        pupil: PupilId(Uuid::from_u128(305)),
        scan_id: "s1".into(),
        method: ScanMethod::Manual,
        proof: Some("p".repeat(100_000)),
    };
    assert_eq!(
        try_edit(&d, &teacher, &long_proof),
        Err(RefusalCode::TooLong)
    );
    let long_key = Edit::CheckIn {
        pupil: PupilId(Uuid::from_u128(305)),
        scan_id: "k".repeat(1 << 20),
        method: ScanMethod::Manual,
        proof: None,
    };
    let mut copy = d.clone();
    let before = copy.get_heads();
    apply_unchecked(&mut copy, &teacher, NOW, &long_key).unwrap();
    let refusal = validate(&copy, &before, &teacher).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::TooLong);
    assert!(
        refusal.path.chars().count() <= MAX_PATH_CHARS,
        "the refusal does not echo a 1 MB key"
    );

    // A 65-character `by`, written raw into a new scan record.
    let mut raw = d;
    let before = raw.get_heads();
    let mut tx = raw.transaction();
    let ins = tx.get(ROOT, "check_ins").unwrap().unwrap().1;
    let key = format!("{}/{}", Uuid::from_u128(305), teacher.device);
    let per = tx
        .put_object(&ins, key.as_str(), automerge::ObjType::Map)
        .unwrap();
    let rec = tx.put_object(&per, "s9", automerge::ObjType::Map).unwrap();
    tx.put(&rec, "at", automerge::ScalarValue::Timestamp(NOW))
        .unwrap();
    tx.put(&rec, "method", "manual").unwrap();
    tx.put(&rec, "by", "b".repeat(65)).unwrap();
    tx.commit();
    assert_eq!(
        validate(&raw, &before, &teacher).unwrap_err().code,
        RefusalCode::TooLong
    );
}
