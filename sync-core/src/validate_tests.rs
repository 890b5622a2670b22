//! Each refusal `validate` can give, on a minimal document: the code a device is shown and
//! the path it names. (`depends-on-refused`, `access-lost` and `foreign-actor` come from
//! the engine, not from these rules, and are tested there.)

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ROOT};
use uuid::Uuid;

use super::{MAX_TEXT_CHARS, ProofCheck, Refusal, RefusalCode, validate, validate_patches_with};
use crate::edits::{Edit, apply_unchecked};
use crate::ids::{DeviceId, PupilId, SchoolId, VenueId};
use crate::schema::booking::ScanMethod;
use crate::test_writers::{
    NOW, SCHOOL, SLOT, VENUE, pupil, server, staff, teacher, volunteer, writer,
};
use crate::writer::{Role, Writer};

/// A booking for pupils 1 and 2, made by the teacher.
fn booking() -> Automerge {
    crate::test_writers::booking_for(vec![pupil(1), pupil(2)])
}

fn activity_log() -> Automerge {
    let mut doc = Automerge::new();
    let create = Edit::CreateActivityLog {
        volunteer: volunteer().user,
        school: Some(SCHOOL),
    };
    apply_unchecked(&mut doc, &volunteer(), NOW, &create).unwrap();
    let log = Edit::LogActivity {
        activity_id: "a-1".into(),
        venue: VENUE,
        activity_kind: "guided_tour".into(),
        start: NOW,
        minutes: 45,
        description: "讲解".into(),
    };
    apply_unchecked(&mut doc, &volunteer(), NOW, &log).unwrap();
    doc
}

fn venue() -> Automerge {
    let mut doc = Automerge::new();
    apply_unchecked(
        &mut doc,
        &server(),
        NOW,
        &Edit::CreateVenue { venue: VENUE },
    )
    .unwrap();
    doc
}

/// `edit` by `by` on a copy of `doc`, as the server would validate it.
fn edit(doc: &Automerge, by: &Writer, edit: &Edit) -> Result<(), Refusal> {
    let mut d = doc.fork();
    let before = d.get_heads();
    apply_unchecked(&mut d, by, NOW + 1000, edit).unwrap();
    validate(&d, &before, by)
}

/// Raw automerge writes by `by` on a copy of `doc` (what a tampered or foreign client
/// could send), as the server would validate them.
fn raw(doc: &Automerge, by: &Writer, f: impl FnOnce(&mut Transaction<'_>)) -> Result<(), Refusal> {
    let mut d = doc.fork();
    let before = d.get_heads();
    let mut tx = d.transaction();
    f(&mut tx);
    tx.commit();
    validate(&d, &before, by)
}

fn map(tx: &Transaction<'_>, parent: &ObjId, key: &str) -> ObjId {
    crate::doc_read::map(tx, parent, key).expect("map exists")
}

fn refused(result: Result<(), Refusal>, code: RefusalCode, path: &str) {
    let refusal = result.expect_err("the change is refused");
    assert_eq!((refusal.code, refusal.path.as_str()), (code, path));
}

fn check_in(pupil: PupilId, method: ScanMethod, proof: Option<&str>) -> Edit {
    Edit::CheckIn {
        pupil,
        scan_id: "s-1".into(),
        method,
        proof: proof.map(str::to_owned),
    }
}

#[test]
fn the_same_edits_by_the_right_writers_pass() {
    let doc = booking();
    assert_eq!(
        edit(
            &doc,
            &staff(),
            &check_in(pupil(1), ScanMethod::Manual, None)
        ),
        Ok(())
    );
    assert_eq!(
        edit(
            &doc,
            &teacher(),
            &Edit::AddToRoster {
                pupils: vec![pupil(3)]
            }
        ),
        Ok(())
    );
    let decide = Edit::Decide {
        status: crate::schema::booking::Status::Confirmed,
        wait_position: None,
    };
    assert_eq!(edit(&doc, &server(), &decide), Ok(()));
}

#[test]
fn role_may_not_write_venue_staff_change_a_roster() {
    let result = edit(
        &booking(),
        &staff(),
        &Edit::AddToRoster {
            pupils: vec![pupil(3)],
        },
    );
    refused(
        result,
        RefusalCode::RoleMayNotWrite,
        &format!("roster/{}", pupil(3)),
    );
}

#[test]
fn status_is_server_only_a_teacher_cannot_confirm_their_own_booking() {
    let decide = Edit::Decide {
        status: crate::schema::booking::Status::Confirmed,
        wait_position: None,
    };
    refused(
        edit(&booking(), &teacher(), &decide),
        RefusalCode::StatusIsServerOnly,
        "decided_at",
    );
}

#[test]
fn not_own_device_a_scan_under_another_devices_key() {
    let other = DeviceId(Uuid::from_u128(555));
    let result = raw(&booking(), &staff(), |tx| {
        let ins = map(tx, &ROOT, "check_ins");
        tx.put_object(&ins, format!("{}/{other}", pupil(1)), ObjType::Map)
            .unwrap();
    });
    refused(
        result,
        RefusalCode::NotOwnDevice,
        &format!("check_ins/{}/{other}", pupil(1)),
    );
}

#[test]
fn not_own_pupil_a_pupil_checks_in_a_classmate() {
    let phone = writer(1, Role::Pupil);
    let result = edit(
        &booking(),
        &phone,
        &check_in(pupil(2), ScanMethod::GateCode, None),
    );
    refused(
        result,
        RefusalCode::NotOwnPupil,
        &format!("check_in_records/{}/{}/s-1", phone.device, pupil(2)),
    );
}

#[test]
fn not_on_roster_a_pupil_checks_in_on_someone_elses_visit() {
    let phone = writer(3, Role::Pupil);
    let result = edit(
        &booking(),
        &phone,
        &check_in(pupil(3), ScanMethod::GateCode, None),
    );
    refused(
        result,
        RefusalCode::NotOnRoster,
        &format!("check_in_records/{}/{}/s-1", phone.device, pupil(3)),
    );
}

#[test]
fn other_venue_staff_of_another_venue_cancel_a_booking() {
    let elsewhere = Writer {
        venue: Some(VenueId(Uuid::from_u128(99))),
        ..staff()
    };
    refused(
        edit(&booking(), &elsewhere, &Edit::CancelBooking),
        RefusalCode::OtherVenue,
        "cancelled_at",
    );
}

#[test]
fn other_school_a_teacher_of_another_school_adds_a_note() {
    let elsewhere = Writer {
        school: Some(SchoolId(Uuid::from_u128(99))),
        ..teacher()
    };
    let note = Edit::AddNote {
        note_id: "n-1".into(),
        text: "weather".into(),
    };
    refused(
        edit(&booking(), &elsewhere, &note),
        RefusalCode::OtherSchool,
        "notes/n-1",
    );
}

#[test]
fn not_owner_a_volunteer_logs_into_someone_elses_log() {
    let other = writer(4, Role::Volunteer);
    let log = Edit::LogActivity {
        activity_id: "a-2".into(),
        venue: VENUE,
        activity_kind: "guided_tour".into(),
        start: NOW,
        minutes: 600,
        description: "x".into(),
    };
    refused(
        edit(&activity_log(), &other, &log),
        RefusalCode::NotOwner,
        "activities/a-2",
    );
}

/// `gate`'s check-in of pupil 1 as scan `s-1`, written by an engine of `version`: in its
/// device's own map (schema 3, ADR 0203) or, by a version-2 device, under
/// `"<pupil>/<device>"`. Returns the booking and the path of the scan record.
fn checked_in(gate: &Writer, version: i64) -> (Automerge, Vec<String>) {
    let mut doc = booking();
    crate::edits::apply_unchecked_as_schema(
        &mut doc,
        gate,
        NOW,
        &check_in(pupil(1), ScanMethod::Manual, None),
        version,
    )
    .unwrap();
    let path = if version >= 3 {
        vec![
            "check_ins_by_device".to_owned(),
            gate.device.to_string(),
            pupil(1).to_string(),
        ]
    } else {
        vec![
            "check_ins".to_owned(),
            format!("{}/{}", pupil(1), gate.device),
        ]
    };
    (doc, path)
}

fn map_at(tx: &Transaction<'_>, path: &[String]) -> ObjId {
    path.iter().fold(ROOT, |obj, key| map(tx, &obj, key))
}

#[test]
fn scan_immutable_a_recorded_scan_time_is_rewritten() {
    let gate = staff();
    for version in [2, 3] {
        let (doc, path) = checked_in(&gate, version);
        let result = raw(&doc, &gate, |tx| {
            let scan = map(tx, &map_at(tx, &path), "s-1");
            tx.put(
                &scan,
                "at",
                automerge::ScalarValue::Timestamp(NOW - 3_600_000),
            )
            .unwrap();
        });
        refused(
            result,
            RefusalCode::ScanImmutable,
            &format!("{}/s-1/at", path.join("/")),
        );
    }
}

/// A device's scans are written once in every layout: its record written again at its
/// key would replace a scan already taken, and a map of its scans made again would hide
/// them (ARCHITECTURE gap 77). A new scan beside them is still taken.
#[test]
fn a_device_writes_one_of_its_scans_or_their_maps_again() {
    let gate = staff();
    let good = |at: i64| format!(r#"{{"at":{at},"method":"manual"}}"#);
    for out in [false, true] {
        for version in [2, 3, 4] {
            let mut doc = booking();
            let scan = if out {
                Edit::CheckOut {
                    pupil: pupil(1),
                    scan_id: "s-1".into(),
                    method: ScanMethod::Manual,
                }
            } else {
                check_in(pupil(1), ScanMethod::Manual, None)
            };
            crate::edits::apply_unchecked_as_schema(&mut doc, &gate, NOW, &scan, version).unwrap();
            let (ins, by_device, records) = if out {
                ("check_outs", "check_outs_by_device", "check_out_records")
            } else {
                ("check_ins", "check_ins_by_device", "check_in_records")
            };
            let device = gate.device.to_string();
            let p1 = pupil(1).to_string();
            // The maps that hold the scan, each made again over the old one.
            let maps: Vec<Vec<String>> = match version {
                2 => vec![vec![ins.into(), format!("{p1}/{device}")]],
                3 => vec![
                    vec![by_device.into(), device.clone()],
                    vec![by_device.into(), device.clone(), p1.clone()],
                ],
                _ => vec![vec![records.into(), device.clone()]],
            };
            for path in &maps {
                let (parent, key) = path.split_at(path.len() - 1);
                let result = raw(&doc, &gate, |tx| {
                    let parent = map_at(tx, parent);
                    tx.put_object(&parent, key[0].as_str(), ObjType::Map)
                        .unwrap();
                });
                refused(result, RefusalCode::NoDelete, &path.join("/"));
            }
            // The scan record written again, with a time of its own.
            let holder = maps.last().unwrap().clone();
            let again = |key: &str| {
                raw(&doc, &gate, |tx| {
                    let parent = map_at(tx, &holder);
                    if version == 4 {
                        tx.put(&parent, format!("{p1}/{key}"), good(NOW - 60_000))
                            .unwrap();
                    } else {
                        let rec = tx.put_object(&parent, key, ObjType::Map).unwrap();
                        tx.put(&rec, "at", NOW - 60_000).unwrap();
                        tx.put(&rec, "method", "manual").unwrap();
                    }
                })
            };
            let record = if version == 4 {
                format!("{}/{p1}/s-1", holder.join("/"))
            } else {
                format!("{}/s-1", holder.join("/"))
            };
            refused(again("s-1"), RefusalCode::ScanImmutable, &record);
            assert_eq!(again("s-2"), Ok(()), "{ins} version {version}: a new scan");
        }
    }
}

/// A scan written at the same key concurrently, by a copy of the booking that already
/// held the device's map but not yet the scan, is refused whether its value wins the
/// key or loses it.
#[test]
fn a_device_writes_one_of_its_scans_again_concurrently() {
    let gate = staff();
    let (doc, _) = checked_in(&gate, 4);
    let key = format!("{}/s-9", pupil(1));
    let mut codes = Vec::new();
    for actor in [[0x01u8; 16], [0xfe; 16]] {
        let mut taken = doc.fork();
        taken.set_actor(automerge::ActorId::from([0x80u8; 16].as_slice()));
        let mut other = doc.fork();
        other.set_actor(automerge::ActorId::from(actor.as_slice()));
        for (copy, at) in [(&mut taken, NOW), (&mut other, NOW - 60_000)] {
            let mut tx = copy.transaction();
            let mine = map_at(
                &tx,
                &["check_in_records".to_owned(), gate.device.to_string()],
            );
            tx.put(
                &mine,
                key.as_str(),
                format!(r#"{{"at":{at},"method":"manual"}}"#),
            )
            .unwrap();
            tx.commit();
        }
        let before = taken.get_heads();
        taken.merge(&mut other).unwrap();
        let refusal = validate(&taken, &before, &gate).expect_err("refused");
        assert_eq!(
            refusal.path,
            format!("check_in_records/{}/{key}", gate.device)
        );
        codes.push(refusal.code);
    }
    // The actor ids order the two writes: one copy's value wins, the other's loses.
    codes.sort_by_key(|c| c.to_string());
    assert_eq!(
        codes,
        [RefusalCode::MalformedValue, RefusalCode::ScanImmutable],
        "a losing write, then a winning one"
    );
}

/// A scan id names one scan of its device (ARCHITECTURE gap 78): the server's rows of
/// scans are keyed by device and scan id, so a second pupil recorded under an id the
/// device already used, in any layout, would be missing from them.
#[test]
fn scan_immutable_a_device_reuses_a_scan_id_for_another_pupil() {
    let gate = staff();
    let second = |doc: &Automerge, version: i64, edit: &Edit| {
        let mut d = doc.fork();
        let before = d.get_heads();
        crate::edits::apply_unchecked_as_schema(&mut d, &gate, NOW + 1, edit, version).unwrap();
        validate(&d, &before, &gate)
    };
    let scan = |n: u128, id: &str| Edit::CheckIn {
        pupil: pupil(n),
        scan_id: id.into(),
        method: ScanMethod::Manual,
        proof: None,
    };
    let device = gate.device;
    for version in [2, 3, 4] {
        let (doc, _) = checked_in(&gate, version);
        // The same id again, for pupil 2, in each layout the booking takes.
        for (layout, path) in [
            (2, format!("check_ins/{}/{device}/s-1", pupil(2))),
            (3, format!("check_ins_by_device/{device}/{}/s-1", pupil(2))),
            (4, format!("check_in_records/{device}/{}/s-1", pupil(2))),
        ] {
            if layout > version {
                continue;
            }
            refused(
                second(&doc, layout, &scan(2, "s-1")),
                RefusalCode::ScanImmutable,
                &path,
            );
        }
        assert_eq!(second(&doc, version, &scan(2, "s-2")), Ok(()), "a new id");
        let out = Edit::CheckOut {
            pupil: pupil(2),
            scan_id: "s-1".into(),
            method: ScanMethod::Manual,
        };
        assert_eq!(
            second(&doc, version, &out),
            Ok(()),
            "check-outs have ids of their own"
        );
    }
    // Two pupils under one new id in one merge: in the device's map made by the merge,
    // and in the map it already had.
    let record = format!(r#"{{"at":{NOW},"method":"manual"}}"#);
    let (had, _) = checked_in(&gate, 4);
    for doc in [booking(), had] {
        let result = raw(&doc, &gate, |tx| {
            let c = map(tx, &ROOT, "check_in_records");
            let mine = match crate::doc_read::map(tx, &c, &device.to_string()) {
                Some(m) => m,
                None => tx.put_object(&c, device.to_string(), ObjType::Map).unwrap(),
            };
            for n in [1, 2] {
                tx.put(&mine, format!("{}/s-7", pupil(n)), record.as_str())
                    .unwrap();
            }
        });
        let refusal = result.expect_err("one id, two pupils");
        assert_eq!(refusal.code, RefusalCode::ScanImmutable);
    }
}

#[test]
fn no_delete_a_check_in_is_removed() {
    let gate = staff();
    // Schema 4 keeps a scan as one value at "<pupil>/<scan id>" in the device's map.
    let mut doc = booking();
    apply_unchecked(
        &mut doc,
        &gate,
        NOW,
        &check_in(pupil(1), ScanMethod::Manual, None),
    )
    .unwrap();
    let result = raw(&doc, &gate, |tx| {
        let c = map(tx, &ROOT, "check_in_records");
        let mine = map(tx, &c, &gate.device.to_string());
        tx.delete(&mine, format!("{}/s-1", pupil(1))).unwrap();
    });
    refused(
        result,
        RefusalCode::NoDelete,
        &format!("check_in_records/{}/{}/s-1", gate.device, pupil(1)),
    );
    for version in [2, 3] {
        let (doc, path) = checked_in(&gate, version);
        let result = raw(&doc, &gate, |tx| {
            tx.delete(map_at(tx, &path), "s-1").unwrap();
        });
        refused(
            result,
            RefusalCode::NoDelete,
            &format!("{}/s-1", path.join("/")),
        );
    }
    // Nor a device's whole map, nor the pupil's map in it.
    let (doc, path) = checked_in(&gate, 3);
    let result = raw(&doc, &gate, |tx| {
        tx.delete(map_at(tx, &path[..2]), path[2].as_str()).unwrap();
    });
    refused(result, RefusalCode::NoDelete, &path.join("/"));
    let result = raw(&doc, &gate, |tx| {
        tx.delete(map_at(tx, &path[..1]), path[1].as_str()).unwrap();
    });
    refused(result, RefusalCode::NoDelete, &path[..2].join("/"));
}

#[test]
fn a_devices_map_of_scans_is_its_own_and_named_as_ids_are_written() {
    let gate = staff();
    let other = DeviceId(Uuid::from_u128(555));
    // Another device's map.
    let result = raw(&booking(), &gate, |tx| {
        let c = map(tx, &ROOT, "check_ins_by_device");
        tx.put_object(&c, other.to_string(), ObjType::Map).unwrap();
    });
    refused(
        result,
        RefusalCode::NotOwnDevice,
        &format!("check_ins_by_device/{other}"),
    );
    // Its own device's id written another way (upper case): one device, one map.
    let lettered = Writer {
        device: DeviceId(Uuid::from_u128(0xabcd)),
        ..staff()
    };
    let upper = lettered.device.to_string().to_uppercase();
    let result = raw(&booking(), &lettered, |tx| {
        let c = map(tx, &ROOT, "check_ins_by_device");
        tx.put_object(&c, upper.as_str(), ObjType::Map).unwrap();
    });
    refused(
        result,
        RefusalCode::MalformedValue,
        &format!("check_ins_by_device/{upper}"),
    );
    // A pupil key that is no pupil id, and a scalar where the pupil's map goes.
    let result = raw(&booking(), &gate, |tx| {
        let c = map(tx, &ROOT, "check_ins_by_device");
        let mine = tx
            .put_object(&c, gate.device.to_string(), ObjType::Map)
            .unwrap();
        tx.put_object(&mine, "someone", ObjType::Map).unwrap();
    });
    refused(
        result,
        RefusalCode::MalformedValue,
        &format!("check_ins_by_device/{}/someone", gate.device),
    );
    let result = raw(&booking(), &gate, |tx| {
        let c = map(tx, &ROOT, "check_outs_by_device");
        let mine = tx
            .put_object(&c, gate.device.to_string(), ObjType::Map)
            .unwrap();
        tx.put(&mine, pupil(1).to_string(), 1).unwrap();
    });
    refused(
        result,
        RefusalCode::MalformedValue,
        &format!("check_outs_by_device/{}/{}", gate.device, pupil(1)),
    );
    // The containers come with the booking, never later.
    let result = raw(&booking(), &gate, |tx| {
        tx.put_object(ROOT, "check_ins_by_device", ObjType::Map)
            .unwrap();
    });
    refused(result, RefusalCode::ImmutableField, "check_ins_by_device");
}

/// A device's map in a per-device container is made once: made again over the old one,
/// it would hide every scan the device recorded there, so it is refused as a delete.
#[test]
fn no_delete_a_device_makes_its_map_again_over_its_scans() {
    let gate = staff();
    for (container, version) in [("check_in_records", 4), ("check_ins_by_device", 3)] {
        let mut doc = booking();
        crate::edits::apply_unchecked_as_schema(
            &mut doc,
            &gate,
            NOW,
            &check_in(pupil(1), ScanMethod::Manual, None),
            version,
        )
        .unwrap();
        let result = raw(&doc, &gate, |tx| {
            let c = map(tx, &ROOT, container);
            tx.put_object(&c, gate.device.to_string(), ObjType::Map)
                .unwrap();
        });
        refused(
            result,
            RefusalCode::NoDelete,
            &format!("{container}/{}", gate.device),
        );
        // Made the first time, it is taken.
        let result = raw(&booking(), &gate, |tx| {
            let c = map(tx, &ROOT, container);
            tx.put_object(&c, gate.device.to_string(), ObjType::Map)
                .unwrap();
        });
        assert_eq!(result, Ok(()), "{container}");
    }
}

/// A scan kept as one value (schema 4, ADR 0205) is taken only as a record every reader
/// reads: the text of a JSON object with a time, a known method and nothing else unknown,
/// in the device's own map, at `"<pupil>/<scan id>"` with the pupil spelt as ids are.
#[test]
fn a_scan_kept_as_one_value_is_a_well_formed_record_in_its_devices_map() {
    let gate = staff();
    let key = format!("{}/s-1", pupil(1));
    let put = |device: DeviceId, key: &str, value: automerge::ScalarValue| {
        let key = key.to_owned();
        raw(&booking(), &gate, move |tx| {
            let c = map(tx, &ROOT, "check_in_records");
            let mine = tx.put_object(&c, device.to_string(), ObjType::Map).unwrap();
            tx.put(&mine, key.as_str(), value).unwrap();
        })
    };
    let text = |t: &str| automerge::ScalarValue::Str(t.into());
    let good =
        r#"{"at":1772413200000,"method":"manual","by":"00000000-0000-0000-0000-000000000001"}"#;
    assert_eq!(put(gate.device, &key, text(good)), Ok(()));
    let path = format!("check_in_records/{}/{key}", gate.device);
    for bad in [
        "",
        "not json",
        "[1,2]",
        r#"{"method":"manual"}"#,
        r#"{"at":"1772413200000","method":"manual"}"#,
        r#"{"at":1772413200000.5,"method":"manual"}"#,
        r#"{"at":1772413200000,"method":"wave"}"#,
        r#"{"at":1772413200000,"method":"manual","seat":"3A"}"#,
        r#"{"at":1772413200000,"method":"manual","at":1}"#,
        r#"{"at":1772413200000,"method":"manual","by":7}"#,
    ] {
        refused(
            put(gate.device, &key, text(bad)),
            RefusalCode::MalformedValue,
            &path,
        );
    }
    // Not text at all, or an object where the value goes.
    refused(
        put(gate.device, &key, automerge::ScalarValue::Int(1)),
        RefusalCode::MalformedValue,
        &path,
    );
    let result = raw(&booking(), &gate, |tx| {
        let c = map(tx, &ROOT, "check_in_records");
        let mine = tx
            .put_object(&c, gate.device.to_string(), ObjType::Map)
            .unwrap();
        tx.put_object(&mine, key.as_str(), ObjType::Map).unwrap();
    });
    refused(result, RefusalCode::MalformedValue, &path);
    // A proof longer than any proof, inside a record short enough for the key's limit.
    let long = format!(
        r#"{{"at":1772413200000,"method":"pass_scan","proof":"{}"}}"#,
        "p".repeat(super::MAX_PROOF_CHARS + 1)
    );
    refused(
        put(gate.device, &key, text(&long)),
        RefusalCode::MalformedValue,
        &path,
    );
    let longer = format!(
        r#"{{"at":1772413200000,"method":"pass_scan","proof":"{}"}}"#,
        "p".repeat(super::MAX_RECORD_CHARS)
    );
    refused(
        put(gate.device, &key, text(&longer)),
        RefusalCode::TooLong,
        &path,
    );
    // Keys that name no pupil and scan: upper case, no scan id, no pupil.
    let upper = format!("{}/s-1", pupil(1).to_string().to_uppercase());
    for k in [
        upper.as_str(),
        &format!("{}/", pupil(1)),
        "s-1",
        &pupil(1).to_string(),
    ] {
        refused(
            put(gate.device, k, text(good)),
            RefusalCode::MalformedValue,
            &format!("check_in_records/{}/{k}", gate.device),
        );
    }
    // Another device's map.
    let other = DeviceId(Uuid::from_u128(555));
    refused(
        put(other, &key, text(good)),
        RefusalCode::NotOwnDevice,
        &format!("check_in_records/{other}"),
    );
    // The containers come with the booking, never later.
    let result = raw(&booking(), &gate, |tx| {
        tx.put_object(ROOT, "check_out_records", ObjType::Map)
            .unwrap();
    });
    refused(result, RefusalCode::ImmutableField, "check_out_records");
}

#[test]
fn unknown_field_a_field_the_schema_does_not_have() {
    let result = raw(&booking(), &teacher(), |tx| {
        tx.put(ROOT, "colour", "blue").unwrap();
    });
    refused(result, RefusalCode::UnknownField, "colour");
}

#[test]
fn immutable_field_a_booking_moves_to_another_school() {
    let result = raw(&booking(), &teacher(), |tx| {
        tx.put(ROOT, "school", Uuid::from_u128(99).to_string())
            .unwrap();
    });
    refused(result, RefusalCode::ImmutableField, "school");
}

#[test]
fn may_not_create_venue_staff_create_a_booking() {
    let mut doc = Automerge::new();
    let create = Edit::CreateBooking {
        venue: VENUE,
        slot: SLOT,
        school: SCHOOL,
        party_size: 2,
        roster: vec![],
    };
    apply_unchecked(&mut doc, &staff(), NOW, &create).unwrap();
    refused(
        validate(&doc, &[], &staff()),
        RefusalCode::MayNotCreate,
        "booking",
    );
}

#[test]
fn malformed_value_a_note_that_is_not_one_of_the_codes() {
    let note = Edit::AddNote {
        note_id: "n-1".into(),
        text: "王小明 was late".into(),
    };
    refused(
        edit(&booking(), &teacher(), &note),
        RefusalCode::MalformedValue,
        "notes/n-1/text",
    );
}

#[test]
fn unknown_kind_a_document_without_a_kind() {
    let doc = Automerge::new();
    let result = raw(&doc, &teacher(), |tx| {
        tx.put(ROOT, "anything", 1).unwrap();
    });
    refused(result, RefusalCode::UnknownKind, "");
}

#[test]
fn bad_proof_a_gate_code_check_in_whose_proof_does_not_verify() {
    let phone = writer(1, Role::Pupil);
    let mut doc = booking();
    let before = doc.get_heads();
    apply_unchecked(
        &mut doc,
        &phone,
        NOW + 1000,
        &check_in(pupil(1), ScanMethod::GateCode, Some("KPE1.forged")),
    )
    .unwrap();
    let patches = doc.diff(&before, &doc.get_heads());
    let checks = ProofCheck {
        server_key: Some(crate::proof::ServerSigner::from_seed([7; 32]).public()),
        ..ProofCheck::default()
    };
    assert_eq!(
        validate(&doc, &before, &phone),
        Ok(()),
        "without the server's key the phone trusts its own scan"
    );
    refused(
        validate_patches_with(&doc, &before, &patches, &phone, &checks),
        RefusalCode::BadProof,
        &format!("check_in_records/{}/{}/s-1", phone.device, pupil(1)),
    );
}

#[test]
fn too_long_a_slot_label_longer_than_a_text_field_allows() {
    let put = Edit::PutSlot {
        slot: SLOT,
        start: NOW,
        end: NOW + 3_600_000,
        capacity: 40,
        label: "长".repeat(MAX_TEXT_CHARS + 1),
    };
    refused(
        edit(&venue(), &staff(), &put),
        RefusalCode::TooLong,
        &format!("slots/{SLOT}/label"),
    );
}

#[test]
fn activity_confirmed_a_claim_is_raised_after_staff_confirmed_it() {
    let mut doc = activity_log();
    let confirm = Edit::ConfirmActivity {
        activity_id: "a-1".into(),
        approved: true,
        minutes: None,
    };
    apply_unchecked(&mut doc, &staff(), NOW, &confirm).unwrap();
    let result = raw(&doc, &volunteer(), |tx| {
        let acts = map(tx, &ROOT, "activities");
        let a = map(tx, &acts, "a-1");
        tx.put(&a, "minutes", 600).unwrap();
    });
    refused(
        result,
        RefusalCode::ActivityConfirmed,
        "activities/a-1/minutes",
    );
}

/// What the JavaScript automerge library writes for `entry.description = "讲解"`: a text
/// object holding the characters, not a string.
fn put_text(tx: &mut Transaction<'_>, parent: &ObjId, key: &str, text: &str) {
    let t = tx.put_object(parent, key, ObjType::Text).unwrap();
    tx.splice_text(&t, 0, 0, text).unwrap();
}

#[test]
fn text_not_scalar_a_description_written_as_a_text_object() {
    let result = raw(&activity_log(), &volunteer(), |tx| {
        let acts = map(tx, &ROOT, "activities");
        let a = tx.put_object(&acts, "a-2", ObjType::Map).unwrap();
        tx.put(&a, "venue", VENUE.to_string()).unwrap();
        tx.put(&a, "activity_kind", "guided_tour").unwrap();
        tx.put(&a, "start", NOW).unwrap();
        tx.put(&a, "minutes", 30).unwrap();
        put_text(tx, &a, "description", "讲解");
    });
    refused(
        result,
        RefusalCode::TextNotScalar,
        "activities/a-2/description",
    );
}

#[test]
fn text_not_scalar_only_where_the_string_itself_would_be_accepted() {
    // A note's text as a text object, holding one of the note codes: the code is right,
    // only its form is wrong.
    let note = |text: &'static str| {
        move |tx: &mut Transaction<'_>| {
            let notes = map(tx, &ROOT, "notes");
            let n = tx.put_object(&notes, "n-1", ObjType::Map).unwrap();
            tx.put(&n, "at", NOW).unwrap();
            tx.put(&n, "by", teacher().user.to_string()).unwrap();
            tx.put(&n, "role", "teacher").unwrap();
            put_text(tx, &n, "text", text);
        }
    };
    let code = crate::schema::booking::NOTE_CODES[0];
    refused(
        raw(&booking(), &teacher(), note(code)),
        RefusalCode::TextNotScalar,
        "notes/n-1/text",
    );
    // Free text is still refused for what it says, whatever its form.
    refused(
        raw(&booking(), &teacher(), note("Wang Fang is ill")),
        RefusalCode::MalformedValue,
        "notes/n-1/text",
    );
    // A text object where a number belongs is a wrong value, not a wrong form.
    let result = raw(&activity_log(), &volunteer(), |tx| {
        let acts = map(tx, &ROOT, "activities");
        let a = map(tx, &acts, "a-1");
        put_text(tx, &a, "minutes", "45");
    });
    refused(
        result,
        RefusalCode::MalformedValue,
        "activities/a-1/minutes",
    );
    // The writer's rights come first: a pupil may not name the guide at all.
    let result = raw(&booking(), &writer(1, Role::Pupil), |tx| {
        put_text(tx, &ROOT, "guide", "老师");
    });
    refused(result, RefusalCode::RoleMayNotWrite, "guide");
}

#[test]
fn text_not_scalar_a_document_whose_kind_is_a_text_object() {
    let mut doc = Automerge::new();
    let before = doc.get_heads();
    let mut tx = doc.transaction();
    put_text(&mut tx, &ROOT, "kind", "booking");
    tx.commit();
    refused(
        validate(&doc, &before, &teacher()),
        RefusalCode::TextNotScalar,
        "kind",
    );
}
