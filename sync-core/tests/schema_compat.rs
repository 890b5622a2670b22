//! Documents written by every released schema version, read by today's engine (ADR
//! 0170), and the schema-change rule (`docs/conflict-rules.md`, "Changing the schema")
//! enforced on them.
//!
//! The fixtures under `tests/fixtures/schema-v<N>/` were recorded once, by the engine of
//! their version, and are never recorded again. Each holds every kind of document saved
//! (`<name>.automerge`), its stored change rows with their writers and what that
//! version's engine read from it (`<name>.json`), and the field inventory of the version
//! (`inventory.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use automerge::Automerge;
use automerge::transaction::Transactable;
use kepu_sync_core::edits::{Edit, apply_unchecked, apply_unchecked_as_schema};
use kepu_sync_core::engine::StoredChange;
use kepu_sync_core::golden::{self, RELEASED};
use kepu_sync_core::refusal::RefusalCode;
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::schema::venue::Venue;
use kepu_sync_core::schema::{self, DocKind, SCHEMA_VERSION};
use kepu_sync_core::stored::restore;
use kepu_sync_core::validate::validate;
use kepu_sync_core::writer::Role;
use serde::Deserialize;

/// The golden documents of every version (names of `golden::documents`).
const NAMES: &[&str] = &[
    "venue",
    "booking",
    "cancelled_booking",
    "activity_log",
    "school_log",
    "revocations",
];

type Inventory = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Deserialize)]
struct DocFixture {
    kind: DocKind,
    schema: i64,
    read: serde_json::Value,
    rows: Vec<golden::Row>,
}

fn dir(version: i64) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(format!("schema-v{version}"))
}

fn fixture(version: i64, name: &str) -> (DocFixture, Automerge) {
    let d = dir(version);
    let text = std::fs::read_to_string(d.join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("schema {version}, {name}.json: {e}"));
    let f: DocFixture = serde_json::from_str(&text).expect("fixture parses");
    let saved = std::fs::read(d.join(format!("{name}.automerge"))).expect("saved document");
    let doc = Automerge::load(&saved).expect("today's automerge loads the saved document");
    (f, doc)
}

fn inventory_file(version: i64) -> Inventory {
    let text = std::fs::read_to_string(dir(version).join("inventory.json"))
        .unwrap_or_else(|e| panic!("schema {version}, inventory.json: {e}"));
    serde_json::from_str(&text).expect("inventory parses")
}

fn rows(f: &DocFixture) -> Vec<StoredChange> {
    f.rows
        .iter()
        .map(|r| StoredChange {
            hash: golden::row_hash(r),
            bytes: hex::decode(&r.bytes).expect("hex row"),
        })
        .collect()
}

fn inventory_of(docs: impl IntoIterator<Item = (DocKind, Automerge)>) -> Inventory {
    let mut out = Inventory::new();
    for (kind, doc) in docs {
        out.entry(kind.as_str().to_owned())
            .or_default()
            .extend(golden::inventory(&doc, kind));
    }
    out
}

#[test]
fn the_current_version_is_released_with_its_fixtures() {
    assert_eq!(
        RELEASED.last(),
        Some(&SCHEMA_VERSION),
        "a new SCHEMA_VERSION is released with its fixtures (tests/fixtures/README.md)"
    );
    for &v in RELEASED {
        for name in NAMES {
            assert!(
                dir(v).join(format!("{name}.automerge")).exists(),
                "schema {v} has no recorded {name}"
            );
        }
        assert!(dir(v).join("exchange.json").exists(), "schema {v} exchange");
    }
}

#[test]
fn documents_of_every_released_version_load_and_read_as_they_did() {
    for &v in RELEASED {
        for name in NAMES {
            let (f, doc) = fixture(v, name);
            assert_eq!(f.schema, v);
            assert_eq!(schema::kind_of(&doc), Some(f.kind), "schema {v} {name}");
            assert_eq!(schema::schema_of(&doc), v, "schema {v} {name}: its stamp");
            assert_eq!(
                golden::read_json(&doc, f.kind),
                f.read,
                "schema {v} {name}: today's engine reads it as its own engine did"
            );
            assert!(!f.read.is_null(), "schema {v} {name} reads as something");
        }
    }
}

#[test]
fn the_stored_rows_of_every_version_rebuild_the_saved_document() {
    for &v in RELEASED {
        for name in NAMES {
            let (f, doc) = fixture(v, name);
            let forward = restore(None, rows(&f));
            assert!(forward.problems.is_empty(), "{:?}", forward.problems);
            assert_eq!(
                forward.doc.get_heads(),
                doc.get_heads(),
                "schema {v} {name}"
            );
            // Rows come back from storage in any order.
            let backward = restore(None, rows(&f).into_iter().rev());
            assert!(backward.problems.is_empty(), "{:?}", backward.problems);
            assert_eq!(backward.doc.get_heads(), doc.get_heads());
            // A snapshot of an old document plus nothing loads too.
            let snap = restore(Some(&doc.save()), Vec::new());
            assert_eq!(golden::read_json(&snap.doc, f.kind), f.read);
        }
    }
}

#[test]
fn every_stored_change_of_every_version_passes_todays_validation_as_its_writer() {
    for &v in RELEASED {
        for name in NAMES {
            let (f, _) = fixture(v, name);
            let mut doc = Automerge::new();
            for (row, change) in f.rows.iter().zip(rows(&f)) {
                let before = doc.get_heads();
                let change = automerge::Change::from_bytes(change.bytes).expect("a change");
                doc.apply_changes([change]).expect("applies");
                validate(&doc, &before, &row.writer).unwrap_or_else(|r| {
                    panic!(
                        "schema {v} {name}: today's rules refuse a change of {:?}: {r:?}",
                        row.writer.role
                    )
                });
            }
        }
    }
}

/// Both directions of a merge: today's device edits an old document and the old
/// device's copy takes the edit; the old device edits concurrently and today's copy takes
/// that. Both copies validate each other's changes and converge.
#[test]
fn old_documents_merge_with_todays_edits_both_ways() {
    let gate = golden::writer(2, Role::VenueStaff);
    let teacher = golden::writer(1, Role::Teacher);
    for &v in &RELEASED[..RELEASED.len() - 1] {
        let (_, old_copy) = fixture(v, "booking");
        let mut old = old_copy
            .fork()
            .with_actor(automerge::ActorId::from([1_u8; 16]));
        let mut today = old_copy
            .fork()
            .with_actor(automerge::ActorId::from([2_u8; 16]));
        // Today's gate names a guide (a version-2 field) on the old booking.
        let before = today.get_heads();
        apply_unchecked(
            &mut today,
            &gate,
            golden::T,
            &Edit::SetGuide {
                guide: "A组".into(),
            },
        )
        .unwrap();
        validate(&today, &before, &gate).expect("a v2 field on a v1 booking is allowed");
        // The old teacher's device checks a pupil in at the same time.
        let before_old = old.get_heads();
        apply_unchecked(
            &mut old,
            &teacher,
            golden::T,
            &Edit::CheckIn {
                pupil: golden::pupil(3),
                scan_id: "scan-old".into(),
                method: ScanMethod::Manual,
                proof: None,
            },
        )
        .unwrap();
        validate(&old, &before_old, &teacher).expect("the old device's check-in is valid");
        let mut merged_today = today.fork();
        merged_today.merge(&mut old.fork()).unwrap();
        let mut merged_old = old.fork();
        merged_old.merge(&mut today.fork()).unwrap();
        assert_eq!(merged_today.get_heads(), merged_old.get_heads());
        let b = Booking::read(&merged_today).unwrap();
        assert_eq!(b, Booking::read(&merged_old).unwrap());
        assert_eq!(b.schema, v, "the document keeps the stamp of its creator");
        assert_eq!(b.guide.as_deref(), Some("A组"));
        assert!(b.check_ins.iter().any(|s| s.scan_id == "scan-old"));
        // The old venue takes today's after-school flag.
        let (_, venue) = fixture(v, "venue");
        let mut venue = venue.fork();
        let staff = golden::writer(2, Role::VenueStaff);
        let before = venue.get_heads();
        apply_unchecked(
            &mut venue,
            &staff,
            golden::T,
            &Edit::SetProfile {
                fields: BTreeMap::new(),
                location: None,
                after_school: Some(true),
            },
        )
        .unwrap();
        validate(&venue, &before, &staff).expect("after_school on a v1 venue");
        assert_eq!(Venue::read(&venue).unwrap().after_school, Some(true));
    }
}

#[test]
fn each_released_inventory_is_what_its_fixtures_hold() {
    for &v in RELEASED {
        let held = inventory_of(NAMES.iter().map(|n| {
            let (f, doc) = fixture(v, n);
            (f.kind, doc)
        }));
        assert_eq!(held, inventory_file(v), "schema {v}: inventory.json");
    }
}

/// The rule: a later version may add fields, but never remove, rename or retype one of
/// a released version.
#[test]
fn no_field_of_a_released_version_is_removed_renamed_or_retyped() {
    let current = inventory_file(SCHEMA_VERSION);
    for &v in RELEASED {
        for (kind, fields) in inventory_file(v) {
            let now = current
                .get(&kind)
                .unwrap_or_else(|| panic!("the kind {kind} of schema {v} was removed"));
            for (path, ty) in fields {
                match now.get(&path) {
                    None => panic!("{kind}.{path} of schema {v} is gone (removed or renamed)"),
                    Some(t) => assert_eq!(t, &ty, "{kind}.{path} of schema {v} changed type"),
                }
            }
        }
    }
}

/// Today's writer writes exactly the current version's inventory and reads its own
/// fixtures as recorded: a field renamed in `edits.rs` or a reader changed in `schema/`
/// fails here before it reaches a phone.
#[test]
fn todays_writer_writes_the_current_inventory_and_reads_it_back() {
    let written = golden::documents(SCHEMA_VERSION);
    let inv = inventory_of(written.iter().map(|g| (g.kind, g.doc.fork())));
    assert_eq!(
        inv,
        inventory_file(SCHEMA_VERSION),
        "today's edits write another layout than the released schema {SCHEMA_VERSION}: \
         additive changes need a new schema version and its fixtures, anything else is \
         not allowed (docs/conflict-rules.md)"
    );
    for g in &written {
        let (f, _) = fixture(SCHEMA_VERSION, g.name);
        assert_eq!(golden::read_json(&g.doc, g.kind), f.read, "{}", g.name);
    }
}

#[test]
fn a_document_stamped_with_a_newer_schema_is_refused_with_its_own_code() {
    let teacher = golden::writer(1, Role::Teacher);
    let mut doc = Automerge::new();
    apply_unchecked_as_schema(
        &mut doc,
        &teacher,
        golden::T,
        &golden::create_booking(),
        SCHEMA_VERSION + 1,
    )
    .unwrap();
    let refusal = validate(&doc, &[], &teacher).expect_err("a newer schema is refused");
    assert_eq!(refusal.code, RefusalCode::SchemaTooNew);
    assert_eq!(refusal.path, "schema");
    assert!(
        refusal.code.is_rule(),
        "kept aside on the device, not dropped"
    );
    // The same booking at today's version is taken.
    let mut ok = Automerge::new();
    apply_unchecked_as_schema(
        &mut ok,
        &teacher,
        golden::T,
        &golden::create_booking(),
        SCHEMA_VERSION,
    )
    .unwrap();
    validate(&ok, &[], &teacher).expect("today's version is taken");
    // And a stamp below 1 is malformed.
    let mut zero = Automerge::new();
    apply_unchecked_as_schema(&mut zero, &teacher, golden::T, &golden::create_booking(), 0)
        .unwrap();
    assert_eq!(
        validate(&zero, &[], &teacher).unwrap_err().code,
        RefusalCode::MalformedValue
    );
}

#[test]
fn a_newer_documents_later_stamp_by_a_device_is_still_immutable() {
    // Only the creating change stamps the version; a device cannot restamp later.
    let teacher = golden::writer(1, Role::Teacher);
    let (_, doc) = fixture(1, "booking");
    let mut doc = doc.fork();
    let before = doc.get_heads();
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, schema::SCHEMA, SCHEMA_VERSION)
        .unwrap();
    tx.commit();
    assert_eq!(
        validate(&doc, &before, &teacher).unwrap_err().code,
        RefusalCode::ImmutableField
    );
}

/// The version-1 writer is today's writer without what version 2 added (the version
/// history in `schema.rs`): its inventory is version 2's minus exactly those fields.
#[test]
fn version_1_differs_from_version_2_only_by_the_fields_version_2_added() {
    let v1 = inventory_file(1);
    let mut v2 = inventory_file(2);
    let added = [("booking", "guide"), ("venue", "profile/after_school")];
    for (kind, path) in added {
        assert!(
            v2.get_mut(kind).and_then(|f| f.remove(path)).is_some(),
            "version 2 added {kind}.{path}"
        );
    }
    assert_eq!(v1, v2);
}

/// The golden venue sets every profile field the rules know, so that none of them can be
/// dropped from a later version unnoticed.
#[test]
fn the_inventory_holds_every_venue_profile_field() {
    let inv = inventory_file(SCHEMA_VERSION);
    for field in kepu_sync_core::schema::venue::PROFILE_TEXT_FIELDS {
        assert!(
            inv["venue"].contains_key(&format!("profile/{field}")),
            "profile/{field}"
        );
    }
}

/// Version 3 is version 2 plus the bookings' per-device containers of scans (ADR 0203),
/// and a gate still on version 2 writes into a version-3 booking where it always did.
#[test]
fn version_3_differs_from_version_2_only_by_the_per_device_containers() {
    let v2 = inventory_file(2);
    let v3 = inventory_file(3);
    for (kind, fields) in &v3 {
        for path in fields.keys() {
            let before = v2.get(kind).is_some_and(|f| f.contains_key(path));
            let added = kind == "booking"
                && (path.starts_with("check_ins_by_device")
                    || path.starts_with("check_outs_by_device"));
            assert!(before || added, "{kind}.{path} is new in version 3");
        }
    }
    let booking = &v3["booking"];
    for (path, ty) in [
        ("check_ins_by_device/*/*/*/at", "timestamp"),
        ("check_ins_by_device/*/*/*/method", "str"),
        ("check_outs_by_device/*/*/*/at", "timestamp"),
        // The version-2 gate's scan in the version-3 booking.
        ("check_ins/*/*/at", "timestamp"),
    ] {
        assert_eq!(booking.get(path).map(String::as_str), Some(ty), "{path}");
    }
    let (f, doc) = fixture(3, "booking");
    let read = Booking::read(&doc).expect("a booking");
    assert_eq!(f.schema, 3);
    let old_gate = golden::old_gate().device;
    assert!(read.check_ins.iter().any(|s| s.device == old_gate));
    assert!(read.check_ins.iter().any(|s| s.device != old_gate));
    assert!(read.check_outs.iter().any(|s| s.device == old_gate));
}

/// Version 4 is version 3 plus the bookings' containers of one-value scan records (ADR
/// 0205), and gates still on versions 2 and 3 write into a version-4 booking where they
/// always did.
#[test]
fn version_4_differs_from_version_3_only_by_the_containers_of_records() {
    let v3 = inventory_file(3);
    let v4 = inventory_file(4);
    for (kind, fields) in &v4 {
        for path in fields.keys() {
            let before = v3.get(kind).is_some_and(|f| f.contains_key(path));
            let added = kind == "booking"
                && (path.starts_with("check_in_records") || path.starts_with("check_out_records"));
            assert!(before || added, "{kind}.{path} is new in version 4");
        }
    }
    let booking = &v4["booking"];
    for (path, ty) in [
        ("check_in_records/*/*", "str"),
        ("check_out_records/*/*", "str"),
        // The version-3 gate's scans and the version-2 gate's in the version-4 booking.
        ("check_ins_by_device/*/*/*/at", "timestamp"),
        ("check_outs_by_device/*/*/*/method", "str"),
        ("check_ins/*/*/at", "timestamp"),
    ] {
        assert_eq!(booking.get(path).map(String::as_str), Some(ty), "{path}");
    }
    let (f, doc) = fixture(4, "booking");
    let read = Booking::read(&doc).expect("a booking");
    assert_eq!(f.schema, 4);
    let (v2, v3) = (golden::old_gate().device, golden::v3_gate().device);
    for gate in [v2, v3] {
        assert!(read.check_ins.iter().any(|s| s.device == gate));
        assert!(read.check_outs.iter().any(|s| s.device == gate));
    }
    let today: Vec<_> = read
        .check_ins
        .iter()
        .filter(|s| s.device != v2 && s.device != v3)
        .collect();
    assert_eq!(
        today.len(),
        3,
        "the scans of today's devices, one value each"
    );
    assert!(today.iter().all(|s| s.by.is_some() && s.at > golden::T));
}
