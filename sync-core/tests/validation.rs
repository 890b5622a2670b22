//! Validation rules, one writer and one edit at a time, on plain documents.

use automerge::Automerge;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::{ScanMethod, Status};
use kepu_sync_core::validate::{RefusalCode, can_read, validate};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const NOW: i64 = 1_767_225_600_000;

fn who(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(100 + n)),
        user: UserId(Uuid::from_u128(200 + n)),
        role,
        school: Some(SchoolId(Uuid::from_u128(1))),
        venue: Some(VenueId(Uuid::from_u128(2))),
        pupil: (role == Role::Pupil).then_some(PupilId(Uuid::from_u128(300 + n))),
    }
}

fn teacher() -> Writer {
    Writer {
        venue: None,
        ..who(1, Role::Teacher)
    }
}

fn create() -> Edit {
    Edit::CreateBooking {
        venue: VenueId(Uuid::from_u128(2)),
        slot: SlotId(Uuid::from_u128(3)),
        school: SchoolId(Uuid::from_u128(1)),
        party_size: 10,
        roster: vec![PupilId(Uuid::from_u128(305))],
    }
}

fn booking() -> Automerge {
    let mut d = Automerge::new();
    apply_unchecked(&mut d, &teacher(), NOW, &create()).unwrap();
    d
}

/// Applies `edit` as `writer` and validates it.
fn try_edit(doc: &Automerge, writer: &Writer, edit: &Edit) -> Result<(), RefusalCode> {
    let mut d = doc.clone();
    let before = d.get_heads();
    apply_unchecked(&mut d, writer, NOW + 1000, edit).unwrap();
    validate(&d, &before, writer).map_err(|r| r.code)
}

fn scan(pupil: u128) -> Edit {
    Edit::CheckIn {
        pupil: PupilId(Uuid::from_u128(pupil)),
        scan_id: "s1".into(),
        method: ScanMethod::Manual,
        proof: None,
    }
}

#[test]
fn a_teacher_creates_bookings_only_for_their_own_school() {
    let mut other = teacher();
    other.school = Some(SchoolId(Uuid::from_u128(99)));
    let mut d = Automerge::new();
    let before = d.get_heads();
    let edit = Edit::CreateBooking {
        venue: VenueId(Uuid::from_u128(2)),
        slot: SlotId(Uuid::from_u128(3)),
        school: SchoolId(Uuid::from_u128(1)),
        party_size: 10,
        roster: vec![],
    };
    apply_unchecked(&mut d, &other, NOW, &edit).unwrap();
    assert_eq!(
        validate(&d, &before, &other).unwrap_err().code,
        RefusalCode::MayNotCreate
    );
}

#[test]
fn only_the_server_sets_a_booking_status() {
    let d = booking();
    let decide = Edit::Decide {
        status: Status::Confirmed,
        wait_position: None,
    };
    for role in [Role::Teacher, Role::VenueStaff, Role::Pupil] {
        assert_eq!(
            try_edit(&d, &who(1, role), &decide),
            Err(RefusalCode::StatusIsServerOnly),
            "{role:?}"
        );
    }
    assert_eq!(
        try_edit(&d, &Writer::server(DeviceId(Uuid::from_u128(9))), &decide),
        Ok(())
    );
}

#[test]
fn a_pupil_checks_in_only_themselves_and_only_on_the_roster() {
    let d = booking();
    let on_roster = who(5, Role::Pupil); // pupil 305 is on the roster
    assert_eq!(try_edit(&d, &on_roster, &scan(305)), Ok(()));
    assert_eq!(
        try_edit(&d, &on_roster, &scan(306)),
        Err(RefusalCode::NotOwnPupil)
    );
    let off_roster = who(6, Role::Pupil);
    assert_eq!(
        try_edit(&d, &off_roster, &scan(306)),
        Err(RefusalCode::NotOnRoster)
    );
}

#[test]
fn venue_staff_of_another_venue_and_volunteers_cannot_touch_a_booking() {
    let d = booking();
    let mut stranger = who(7, Role::VenueStaff);
    stranger.venue = Some(VenueId(Uuid::from_u128(77)));
    assert_eq!(
        try_edit(&d, &stranger, &scan(305)),
        Err(RefusalCode::OtherVenue)
    );
    assert_eq!(
        try_edit(&d, &who(8, Role::Volunteer), &scan(305)),
        Err(RefusalCode::RoleMayNotWrite)
    );
    assert!(!can_read(&stranger, &d));
    assert!(can_read(&who(9, Role::VenueStaff), &d));
}

#[test]
fn nobody_deletes_or_rewrites_a_check_in() {
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    let server = Writer::server(DeviceId(Uuid::from_u128(9)));
    // Today's layout (ADR 0205): the teacher's device's map of one-value records. A
    // record is never deleted, by its device or the server.
    let mut d = booking();
    apply_unchecked(&mut d, &teacher(), NOW, &scan(305)).unwrap();
    for writer in [teacher(), server.clone()] {
        let mut e = d.clone();
        let before = e.get_heads();
        let records =
            kepu_sync_core::doc_read::map(&e, &automerge::ROOT, "check_in_records").unwrap();
        let device = e.keys(&records).next().unwrap();
        let mine = kepu_sync_core::doc_read::map(&e, &records, &device).unwrap();
        let key = e.keys(&mine).next().unwrap();
        assert!(key.ends_with("/s1"), "{key}");
        let mut tx = e.transaction();
        tx.delete(&mine, key.as_str()).unwrap();
        tx.commit();
        let code = validate(&e, &before, &writer).unwrap_err().code;
        assert_eq!(code, RefusalCode::NoDelete, "{:?}", writer.role);
    }
    // A booking of schema 3: the device's map, then the pupil's (ADR 0203); a record's
    // field is written once.
    let mut d = Automerge::new();
    kepu_sync_core::edits::apply_unchecked_as_schema(&mut d, &teacher(), NOW, &create(), 3)
        .unwrap();
    apply_unchecked(&mut d, &teacher(), NOW, &scan(305)).unwrap();
    for (writer, rewrite) in [(teacher(), false), (teacher(), true), (server, false)] {
        let mut e = d.clone();
        let before = e.get_heads();
        let ins =
            kepu_sync_core::doc_read::map(&e, &automerge::ROOT, "check_ins_by_device").unwrap();
        let key = e.keys(&ins).next().unwrap();
        let mut tx = e.transaction();
        if rewrite {
            let mine = kepu_sync_core::doc_read::map(&tx, &ins, &key).unwrap();
            let pupil = tx.keys(&mine).next().unwrap();
            let per = kepu_sync_core::doc_read::map(&tx, &mine, &pupil).unwrap();
            let rec = kepu_sync_core::doc_read::map(&tx, &per, "s1").unwrap();
            tx.put(&rec, "at", automerge::ScalarValue::Timestamp(NOW - 1))
                .unwrap();
        } else {
            tx.delete(&ins, key.as_str()).unwrap();
        }
        tx.commit();
        let code = validate(&e, &before, &writer).unwrap_err().code;
        let want = if rewrite {
            RefusalCode::ScanImmutable
        } else {
            RefusalCode::NoDelete
        };
        assert_eq!(code, want, "{:?} rewrite={rewrite}", writer.role);
    }
}

#[test]
fn unknown_fields_and_identity_fields_are_refused() {
    use automerge::transaction::Transactable;
    let d = booking();
    for (key, value, code) in [
        ("hacked", "x", RefusalCode::UnknownField),
        ("school", "x", RefusalCode::ImmutableField),
        ("kind", "venue", RefusalCode::ImmutableField),
        ("kind", "x", RefusalCode::UnknownKind),
    ] {
        let mut e = d.clone();
        let before = e.get_heads();
        let mut tx = e.transaction();
        tx.put(automerge::ROOT, key, value).unwrap();
        tx.commit();
        assert_eq!(
            validate(&e, &before, &teacher()).unwrap_err().code,
            code,
            "{key}"
        );
    }
}

#[test]
fn staff_confirm_only_activities_at_their_own_venue() {
    let volunteer = Writer {
        venue: None,
        ..who(3, Role::Volunteer)
    };
    let mut log = Automerge::new();
    apply_unchecked(
        &mut log,
        &volunteer,
        NOW,
        &Edit::CreateActivityLog {
            volunteer: volunteer.user,
            school: volunteer.school,
        },
    )
    .unwrap();
    let log_at = |venue: u128| Edit::LogActivity {
        activity_id: format!("a{venue}"),
        venue: VenueId(Uuid::from_u128(venue)),
        activity_kind: "demo".into(),
        start: NOW,
        minutes: 30,
        description: String::new(),
    };
    apply_unchecked(&mut log, &volunteer, NOW, &log_at(2)).unwrap();
    apply_unchecked(&mut log, &volunteer, NOW, &log_at(77)).unwrap();
    let staff = who(4, Role::VenueStaff);
    let confirm = |a: &str| Edit::ConfirmActivity {
        activity_id: a.into(),
        approved: true,
        minutes: None,
    };
    assert_eq!(try_edit(&log, &staff, &confirm("a2")), Ok(()));
    assert_eq!(
        try_edit(&log, &staff, &confirm("a77")),
        Err(RefusalCode::OtherVenue)
    );
    let other_volunteer = Writer {
        venue: None,
        ..who(5, Role::Volunteer)
    };
    assert_eq!(
        try_edit(&log, &other_volunteer, &log_at(2)),
        Err(RefusalCode::NotOwner)
    );
}
