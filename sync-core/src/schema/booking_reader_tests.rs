//! A reader that reads only what changed must give what a whole read gives, after every
//! kind of change a booking can see: merges of other devices' scans in any grouping,
//! roster and note edits, raw writes no edit makes, conflicts, and a rolled-back document.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ROOT, ReadDoc};

use super::{BookingReader, ReadKind};
use crate::edits::{Edit, apply_unchecked, apply_unchecked_as_schema};
use crate::ids::UserId;
use crate::schema::booking::{Booking, ScanMethod, key, scan_key};
use crate::test_writers::{NOW, VENUE, pupil, teacher, writer};
use crate::writer::{Role, Writer};

const PUPILS: u128 = 12;

fn booking() -> Automerge {
    crate::test_writers::booking_for((0..PUPILS).map(pupil).collect())
}

/// The same booking made by an engine of schema `version`.
fn booking_of_schema(version: i64) -> Automerge {
    let mut doc = Automerge::new();
    let edit = Edit::CreateBooking {
        venue: VENUE,
        slot: crate::test_writers::SLOT,
        school: crate::test_writers::SCHOOL,
        party_size: 12,
        roster: (0..PUPILS).map(pupil).collect(),
    };
    apply_unchecked_as_schema(&mut doc, &teacher(), NOW, &edit, version).expect("created");
    doc
}

/// The same booking made by an engine of schema 2: no per-device containers, so every
/// scan goes under `"<pupil>/<device>"` (ADR 0203).
fn old_booking() -> Automerge {
    let doc = booking_of_schema(2);
    assert!(doc.get(ROOT, key::CHECK_INS_BY_DEVICE).unwrap().is_none());
    doc
}

/// The same booking made by an engine of schema 3: a record object per scan in the
/// device's own map (ADR 0203).
fn v3_booking() -> Automerge {
    let doc = booking_of_schema(3);
    assert!(doc.get(ROOT, key::CHECK_IN_RECORDS).unwrap().is_none());
    doc
}

/// The map holding `gate`'s scans of pupil `n`, in whichever layout holds them (the
/// device's map of one-value records in schema 4).
fn scans_map(d: &Automerge, gate: &Writer, n: u128) -> automerge::ObjId {
    let at = |obj: &automerge::ObjId, k: &str| d.get(obj, k).unwrap().map(|(_, id)| id);
    if let Some(records) = at(&ROOT, key::CHECK_IN_RECORDS)
        && let Some(mine) = at(&records, &gate.device.to_string())
    {
        return mine;
    }
    if let Some(by_device) = at(&ROOT, key::CHECK_INS_BY_DEVICE)
        && let Some(mine) = at(&by_device, &gate.device.to_string())
        && let Some(scans) = at(&mine, &pupil(n).to_string())
    {
        return scans;
    }
    let c = at(&ROOT, key::CHECK_INS).expect("check_ins");
    at(&c, &scan_key(pupil(n), gate.device)).expect("the pupil's scans")
}

fn gate(n: u128) -> Writer {
    writer(10 + n, Role::VenueStaff)
}

fn scan_id(n: u64) -> String {
    format!("0190aaaa-0000-7000-8000-{n:012}")
}

/// `gate` checks pupil `n` in by hand, as scan `scan`.
fn check_in(doc: &mut Automerge, gate: &Writer, n: u128, scan: u64) {
    let edit = Edit::CheckIn {
        pupil: pupil(n),
        scan_id: scan_id(scan),
        method: ScanMethod::Manual,
        proof: None,
    };
    apply_unchecked(doc, gate, NOW, &edit).expect("scan");
}

/// Asserts the reader gives what a whole read gives, and how it read.
fn same(reader: &mut BookingReader, doc: &Automerge) -> ReadKind {
    let (read, kind) = reader.read(doc);
    let whole = Booking::read(doc);
    assert!(whole.is_some(), "a well-formed booking");
    assert_eq!(read, whole, "the reader's booking is the whole read's");
    // The whole read walks the scans in one pass; each map read by itself gives the same.
    let whole = whole.as_ref().expect("a booking");
    for (ins, walked) in [(true, &whole.check_ins), (false, &whole.check_outs)] {
        let by_key = crate::schema::booking::read_scans_by_key(doc, ins);
        assert_eq!(
            walked, &by_key,
            "check-ins {ins}: walked as read map by map"
        );
    }
    // Every place the reader keeps, many of them taken from the operation that made the
    // object, is where the document puts that object.
    for (id, place) in &reader.places {
        let obj = doc
            .import_obj(&format!("{}@{}", id.counter(), id.actor()))
            .unwrap_or_else(|e| panic!("a place is kept for {id:?}, which is no object: {e}"));
        assert!(doc.object_type(&obj).is_ok(), "{id:?} is an object");
        if let Some(found) = super::place_of(doc, id) {
            assert_eq!(&found, place, "the place kept for object {id:?}");
        }
    }
    kind
}

/// A small deterministic sequence, so that a failure repeats.
struct Steps(u64);

impl Steps {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn a_day_of_gates_merged_in_any_grouping_reads_as_a_whole_read() {
    // Today's booking and gates (each gate's scans one value each in its own map).
    a_day_of_gates(booking(), |_| 4);
    // Today's booking, gates still on schema 2 and 3 (every layout in one booking).
    a_day_of_gates(booking(), |g| [2, 3, 4, 4][g]);
    // A booking of schema 3 (each gate's scans in its own map), today's gates.
    a_day_of_gates(v3_booking(), |g| if g < 2 { 3 } else { 4 });
    // A booking of schema 2: every scan under "<pupil>/<device>".
    a_day_of_gates(old_booking(), |_| 3);
}

/// Four gates, each an engine of `version(gate)`, scan into copies of `server` and are
/// merged in uneven bursts; the reader reads as a whole read after each.
fn a_day_of_gates(mut server: Automerge, version: impl Fn(usize) -> i64) {
    let mut reader = BookingReader::new();
    assert_eq!(same(&mut reader, &server), ReadKind::Whole);
    // The second read keeps the scans; from then on only what changed is read.
    assert_eq!(same(&mut reader, &server), ReadKind::Whole);
    // Four gates scanning offline on their own copies, merged in uneven bursts.
    let mut gates: Vec<Automerge> = (0..4u8)
        .map(|g| server.fork().with_actor(ActorId::from(vec![g + 1; 16])))
        .collect();
    let mut steps = Steps(7);
    let mut next_scan = 0;
    for round in 0..40u32 {
        for (g, doc) in gates.iter_mut().enumerate() {
            for _ in 0..steps.next(4) {
                next_scan += 1;
                let p = pupil(u128::from(steps.next(PUPILS as u64)));
                let edit = if steps.next(5) == 0 {
                    Edit::CheckOut {
                        pupil: p,
                        scan_id: scan_id(next_scan),
                        method: ScanMethod::Manual,
                    }
                } else {
                    Edit::CheckIn {
                        pupil: p,
                        scan_id: scan_id(next_scan),
                        method: ScanMethod::Manual,
                        proof: None,
                    }
                };
                let at = NOW + i64::from(round) * 1_000 + i64::try_from(next_scan).expect("small");
                apply_unchecked_as_schema(doc, &gate(g as u128), at, &edit, version(g))
                    .expect("scan");
            }
        }
        // Some gates reach the server this round, in a varying order.
        for g in 0..gates.len() {
            let g = (g + round as usize) % gates.len();
            if steps.next(3) == 0 {
                continue;
            }
            server.merge(&mut gates[g]).expect("merge");
            if steps.next(2) == 0 {
                assert_eq!(same(&mut reader, &server), ReadKind::Changed);
            }
        }
        // The teacher edits the roster and notes now and then.
        if round % 7 == 3 {
            let p = pupil(100 + u128::from(round));
            apply_unchecked(
                &mut server,
                &teacher(),
                NOW,
                &Edit::AddToRoster { pupils: vec![p] },
            )
            .expect("roster");
            apply_unchecked(
                &mut server,
                &teacher(),
                NOW,
                &Edit::AddNote {
                    note_id: scan_id(90_000 + u64::from(round)),
                    text: "arrived_late".into(),
                },
            )
            .expect("note");
        }
        if round % 11 == 5 {
            apply_unchecked(
                &mut server,
                &teacher(),
                NOW,
                &Edit::RemoveFromRoster { pupil: pupil(1) },
            )
            .expect("removed");
        }
        assert_eq!(same(&mut reader, &server), ReadKind::Changed);
        // The gates hear of each other's scans, so later scans depend on them.
        for doc in &mut gates {
            doc.merge(&mut server.clone()).expect("merge back");
        }
    }
    let (read, _) = reader.read(&server);
    let read = read.expect("read");
    assert!(
        read.check_ins.len() > 100,
        "{} check-ins",
        read.check_ins.len()
    );
    assert!(!read.check_outs.is_empty());
    assert_eq!(
        reader.scans_kept(),
        read.check_ins.len() + read.check_outs.len()
    );
}

/// A write straight through automerge.
type RawEdit = dyn Fn(&mut Automerge);

/// Writes no edit makes, each on a copy that the reader read before.
#[test]
fn raw_writes_and_conflicts_under_the_scan_keys_read_as_a_whole_read() {
    let mut doc = old_booking();
    let g = gate(1);
    for n in 0..3 {
        check_in(&mut doc, &g, n, n as u64);
    }
    let mut reader = BookingReader::new();
    same(&mut reader, &doc);
    same(&mut reader, &doc);
    let check_ins = |d: &Automerge| d.get(ROOT, key::CHECK_INS).unwrap().unwrap().1;
    let k0 = scan_key(pupil(0), g.device);
    let k1 = scan_key(pupil(1), g.device);
    let k2 = scan_key(pupil(2), g.device);
    let edits: Vec<Box<RawEdit>> = vec![
        // A record's time rewritten, then removed (the scan stops being listed).
        Box::new(move |d| {
            let c = check_ins(d);
            let per = d.get(&c, &k0).unwrap().unwrap().1;
            let rec = d.get(&per, scan_id(0)).unwrap().unwrap().1;
            let mut tx = d.transaction();
            tx.put(&rec, "at", 5_i64).unwrap();
            tx.commit();
            let mut tx = d.transaction();
            tx.delete(&rec, "at").unwrap();
            tx.commit();
        }),
        // A scalar where a device's map was, and a key that is no scan key.
        Box::new(move |d| {
            let c = check_ins(d);
            let mut tx = d.transaction();
            tx.put(&c, &k1, "not a map").unwrap();
            let m = tx.put_object(&c, "no-scan-key", ObjType::Map).unwrap();
            let rec = tx.put_object(&m, scan_id(9), ObjType::Map).unwrap();
            tx.put(&rec, "at", NOW).unwrap();
            tx.put(&rec, "method", "manual").unwrap();
            tx.commit();
        }),
        // A device's map deleted; a new one for another pupil, filled in a later change.
        Box::new(move |d| {
            let c = check_ins(d);
            let mut tx = d.transaction();
            tx.delete(&c, &k2).unwrap();
            let m = tx
                .put_object(&c, scan_key(pupil(5), g.device), ObjType::Map)
                .unwrap();
            tx.commit();
            let mut tx = d.transaction();
            let rec = tx.put_object(&m, scan_id(50), ObjType::Map).unwrap();
            tx.put(&rec, "at", NOW + 50).unwrap();
            tx.put(&rec, "method", "pass_scan").unwrap();
            tx.put(&rec, "by", UserId(uuid::Uuid::from_u128(7)).to_string())
                .unwrap();
            tx.commit();
        }),
        // Two copies create the same device's map for one pupil concurrently: the
        // winner's scans are the ones listed, and the loser's later writes change nothing.
        Box::new(move |d| {
            let key = scan_key(pupil(6), g.device);
            let mut a = d.fork().with_actor(ActorId::from(vec![0x0a; 16]));
            let mut b = d.fork().with_actor(ActorId::from(vec![0xfb; 16]));
            for (copy, n) in [(&mut a, 60), (&mut b, 61)] {
                let c = check_ins(copy);
                let mut tx = copy.transaction();
                let m = tx.put_object(&c, &key, ObjType::Map).unwrap();
                let rec = tx.put_object(&m, scan_id(n), ObjType::Map).unwrap();
                tx.put(&rec, "at", NOW + i64::try_from(n).unwrap()).unwrap();
                tx.put(&rec, "method", "manual").unwrap();
                tx.commit();
            }
            d.merge(&mut a).unwrap();
            d.merge(&mut b).unwrap();
        }),
        // Two pupils scanned, then both of their device maps deleted in one change: two
        // operations on the container itself, each naming its own key.
        Box::new({
            let g = g.clone();
            move |d| {
                for n in [8, 9] {
                    check_in(d, &g, n, 80 + n as u64);
                }
            }
        }),
        Box::new(move |d| {
            let c = check_ins(d);
            let mut tx = d.transaction();
            tx.delete(&c, scan_key(pupil(8), g.device)).unwrap();
            tx.delete(&c, scan_key(pupil(9), g.device)).unwrap();
            tx.commit();
        }),
        // One key's scans written out of scan id order, an object where a field was, a
        // list where a record was, and two copies setting one record's time at once.
        Box::new({
            let g = g.clone();
            move |d| {
                for scan in [33, 31, 32] {
                    check_in(d, &g, 3, scan);
                }
                let c = check_ins(d);
                let per = d.get(&c, scan_key(pupil(3), g.device)).unwrap().unwrap().1;
                let rec = d.get(&per, scan_id(31)).unwrap().unwrap().1;
                let mut tx = d.transaction();
                tx.put_object(&rec, "proof", ObjType::Map).unwrap();
                tx.put_object(&per, scan_id(30), ObjType::List).unwrap();
                tx.commit();
                let rec = d.get(&per, scan_id(32)).unwrap().unwrap().1;
                let mut a = d.fork().with_actor(ActorId::from(vec![0x0c; 16]));
                let mut b = d.fork().with_actor(ActorId::from(vec![0xfc; 16]));
                for (copy, at) in [(&mut a, NOW + 1), (&mut b, NOW + 2)] {
                    let mut tx = copy.transaction();
                    tx.put(&rec, "at", at).unwrap();
                    tx.commit();
                }
                d.merge(&mut a).unwrap();
                d.merge(&mut b).unwrap();
            }
        }),
    ];
    for edit in &edits {
        edit(&mut doc);
        assert_eq!(same(&mut reader, &doc), ReadKind::Changed);
    }
    // The check-ins container replaced at the root: everything is read again.
    let mut tx = doc.transaction();
    let c = tx.put_object(ROOT, key::CHECK_INS, ObjType::Map).unwrap();
    tx.put_object(&c, scan_key(pupil(7), g.device), ObjType::Map)
        .unwrap();
    tx.commit();
    assert_eq!(same(&mut reader, &doc), ReadKind::Whole);
}

#[test]
fn a_rolled_back_or_other_document_is_read_whole() {
    let mut doc = booking();
    let before = doc.get_heads();
    check_in(&mut doc, &gate(1), 1, 1);
    let mut reader = BookingReader::new();
    same(&mut reader, &doc);
    // The server rolls a refused change back: the reader's heads are gone.
    let rolled = doc.fork_at(&before).expect("fork");
    assert_eq!(same(&mut reader, &rolled), ReadKind::Whole);
    assert!(reader.read(&rolled).0.expect("read").check_ins.is_empty());
    // Another booking altogether.
    let other = booking();
    assert_eq!(same(&mut reader, &other), ReadKind::Whole);
    // Read again at the same heads, it keeps the scans; then reads nothing.
    assert_eq!(same(&mut reader, &other), ReadKind::Whole);
    assert_eq!(same(&mut reader, &other), ReadKind::Changed);
}

#[test]
fn a_large_burst_is_read_whole_and_nothing_is_kept() {
    let mut doc = booking();
    let mut reader = BookingReader::new();
    same(&mut reader, &doc);
    same(&mut reader, &doc);
    for n in 0..=super::MAX_CHANGES as u64 {
        check_in(&mut doc, &gate(1), u128::from(n % 10), n);
    }
    assert_eq!(same(&mut reader, &doc), ReadKind::Whole);
    assert_eq!(
        reader.scans_kept(),
        0,
        "a booking taking large bursts costs no memory"
    );
    // A small step after it: kept again, then read by what changed.
    assert_eq!(same(&mut reader, &doc), ReadKind::Whole);
    assert_eq!(reader.scans_kept(), super::MAX_CHANGES + 1);
    let edit = Edit::CheckOut {
        pupil: pupil(3),
        scan_id: scan_id(999),
        method: ScanMethod::Manual,
    };
    apply_unchecked(&mut doc, &gate(1), NOW, &edit).expect("scan");
    assert_eq!(same(&mut reader, &doc), ReadKind::Changed);
}

#[test]
fn a_document_that_is_not_a_booking_reads_as_none() {
    let mut reader = BookingReader::new();
    assert_eq!(reader.read(&Automerge::new()).0, None);
    let mut venue = Automerge::new();
    let w = Writer::server(crate::ids::DeviceId(uuid::Uuid::from_u128(9)));
    apply_unchecked(&mut venue, &w, NOW, &Edit::CreateVenue { venue: VENUE }).expect("venue");
    assert_eq!(reader.read(&venue).0, None);
}

/// A change that makes many objects (a hostile device's) leaves no more places kept than
/// the reader's bound: a few a scan it keeps.
#[test]
fn the_places_kept_stay_within_their_bound_after_a_change_of_many_objects() {
    for doc in [booking(), v3_booking(), old_booking()] {
        places_kept_within_bound(doc);
    }
}

fn places_kept_within_bound(mut doc: Automerge) {
    let g = gate(1);
    check_in(&mut doc, &g, 0, 1);
    let mut reader = BookingReader::new();
    same(&mut reader, &doc);
    same(&mut reader, &doc);
    let per = scans_map(&doc, &g, 0);
    let mut tx = doc.transaction();
    let outside = tx.put_object(ROOT, "x", ObjType::Map).unwrap();
    for n in 0..5_000 {
        tx.put_object(&outside, format!("k{n}"), ObjType::Map)
            .unwrap();
        tx.put_object(&per, format!("junk-{n}"), ObjType::Map)
            .unwrap();
    }
    tx.commit();
    assert_eq!(same(&mut reader, &doc), ReadKind::Changed);
    let bound = super::MAX_PLACES_PER_SCAN * reader.scans_kept() + super::MIN_PLACES;
    assert!(
        reader.places.len() <= bound,
        "{} places kept, bound {bound}",
        reader.places.len()
    );
}

/// Writes no edit makes in the per-device layout (ADR 0203), each on a copy that the
/// reader read before: conflicts over a device's map and a pupil's, deletions, keys
/// spelt otherwise than kepu spells ids.
#[test]
fn raw_writes_and_conflicts_in_the_devices_maps_read_as_a_whole_read() {
    let mut doc = v3_booking();
    let (g, h, mut reader) = two_gates_read(&mut doc);
    fn container(d: &Automerge) -> automerge::ObjId {
        d.get(ROOT, key::CHECK_INS_BY_DEVICE).unwrap().unwrap().1
    }
    fn devices_map(d: &Automerge, w: &Writer) -> automerge::ObjId {
        device_map_in(d, &container(d), w)
    }
    let edits: Vec<Box<RawEdit>> = vec![
        // A record's time rewritten, then removed.
        Box::new({
            let g = g.clone();
            move |d| {
                let rec = d.get(scans_map(d, &g, 0), scan_id(0)).unwrap().unwrap().1;
                let mut tx = d.transaction();
                tx.put(&rec, "at", 5_i64).unwrap();
                tx.commit();
                let mut tx = d.transaction();
                tx.delete(&rec, "at").unwrap();
                tx.commit();
            }
        }),
        // A pupil's map replaced by a scalar, a key that is no pupil id, and the same
        // pupil spelt in upper case.
        Box::new({
            let g = g.clone();
            move |d| {
                let mine = devices_map(d, &g);
                let mut tx = d.transaction();
                tx.put(&mine, pupil(1).to_string(), "not a map").unwrap();
                for k in [
                    "no-pupil".to_owned(),
                    pupil(10).to_string().to_uppercase() + "Z",
                ] {
                    let m = tx.put_object(&mine, k.as_str(), ObjType::Map).unwrap();
                    put_manual_scan(&mut tx, &m, 9);
                }
                tx.commit();
            }
        }),
        // A device's whole map deleted, then made again and filled in a later change.
        Box::new({
            move |d| {
                let mine = device_map_made_again(d, &container(d), &h);
                let mut tx = d.transaction();
                let scans = tx
                    .put_object(&mine, pupil(5).to_string(), ObjType::Map)
                    .unwrap();
                let rec = tx.put_object(&scans, scan_id(50), ObjType::Map).unwrap();
                tx.put(&rec, "at", NOW + 50).unwrap();
                tx.put(&rec, "method", "pass_scan").unwrap();
                tx.commit();
            }
        }),
        // Two copies create the same new device's map concurrently.
        Box::new(newcomers_map_made_twice),
        // Two copies create one device's map for the same pupil concurrently.
        Box::new({
            let g = g.clone();
            move |d| {
                let mut a = d.fork().with_actor(ActorId::from(vec![0x0b; 16]));
                let mut b = d.fork().with_actor(ActorId::from(vec![0xfa; 16]));
                for (copy, n) in [(&mut a, 80), (&mut b, 81)] {
                    check_in(copy, &g, 8, n);
                }
                d.merge(&mut a).unwrap();
                d.merge(&mut b).unwrap();
            }
        }),
        // A device's map spelt in upper case beside the real one, with a scan in it.
        Box::new(move |d| {
            let c = container(d);
            let lettered = crate::ids::DeviceId(uuid::Uuid::from_u128(0xabcd_ef01));
            let mut tx = d.transaction();
            let m = tx
                .put_object(&c, lettered.to_string().to_uppercase(), ObjType::Map)
                .unwrap();
            let scans = tx
                .put_object(&m, pupil(2).to_string(), ObjType::Map)
                .unwrap();
            put_manual_scan(&mut tx, &scans, 70);
            tx.commit();
        }),
        // A pupil's map deleted from a device's map.
        Box::new({
            move |d| {
                let mine = devices_map(d, &g);
                let mut tx = d.transaction();
                tx.delete(&mine, pupil(2).to_string()).unwrap();
                tx.commit();
            }
        }),
    ];
    for edit in &edits {
        edit(&mut doc);
        assert_eq!(same(&mut reader, &doc), ReadKind::Changed);
    }
    let read = reader.read(&doc).0.expect("a booking");
    assert!(
        read.check_ins.iter().any(|s| s.scan_id == scan_id(62)),
        "the newcomer's scan after the conflict over its map"
    );
    assert!(!read.check_ins.iter().any(|s| s.scan_id == scan_id(70)));
    // The per-device container replaced at the root: everything is read again.
    let mut tx = doc.transaction();
    tx.put_object(ROOT, key::CHECK_INS_BY_DEVICE, ObjType::Map)
        .unwrap();
    tx.commit();
    assert_eq!(same(&mut reader, &doc), ReadKind::Whole);
    assert!(reader.read(&doc).0.expect("a booking").check_ins.len() < read.check_ins.len());
}

/// Writes no edit makes in the devices' maps of one-value records (schema 4, ADR 0205),
/// each on a copy that the reader read before: records rewritten, replaced by what is no
/// record or by an object, deleted; keys that name no pupil; conflicts over a device's
/// map and over one record; a device's map deleted and made again.
#[test]
fn raw_writes_and_conflicts_in_the_devices_records_read_as_a_whole_read() {
    let mut doc = booking();
    let (g, h, mut reader) = two_gates_read(&mut doc);
    fn container(d: &Automerge) -> automerge::ObjId {
        d.get(ROOT, key::CHECK_IN_RECORDS).unwrap().unwrap().1
    }
    fn devices_map(d: &Automerge, w: &Writer) -> automerge::ObjId {
        device_map_in(d, &container(d), w)
    }
    let record = |at: i64| format!(r#"{{"at":{at},"method":"manual"}}"#);
    let edits: Vec<Box<RawEdit>> = vec![
        // A record rewritten, then replaced by text that is no record, then deleted.
        Box::new({
            let g = g.clone();
            move |d| {
                let mine = devices_map(d, &g);
                let k = format!("{}/{}", pupil(0), scan_id(0));
                for value in [record(5), "not a record".to_owned()] {
                    let mut tx = d.transaction();
                    tx.put(&mine, k.as_str(), value).unwrap();
                    tx.commit();
                }
                let mut tx = d.transaction();
                tx.delete(&mine, k.as_str()).unwrap();
                tx.commit();
            }
        }),
        // An object at a record's key; keys that name no pupil, or a pupil spelt in upper
        // case; a record of a pupil beside the device's map of the older layout.
        Box::new({
            let g = g.clone();
            move |d| {
                let mine = devices_map(d, &g);
                let mut tx = d.transaction();
                let k = format!("{}/{}", pupil(1), scan_id(1));
                let m = tx.put_object(&mine, k.as_str(), ObjType::Map).unwrap();
                tx.put(&m, "at", NOW).unwrap();
                for k in [
                    "no-pupil/s".to_owned(),
                    format!("{}/{}", pupil(4).to_string().to_uppercase(), scan_id(40)),
                    format!("{}/", pupil(4)),
                    pupil(4).to_string(),
                ] {
                    tx.put(&mine, k.as_str(), record(NOW)).unwrap();
                }
                tx.put(&mine, format!("{}/{}", pupil(4), scan_id(41)), record(NOW))
                    .unwrap();
                tx.commit();
            }
        }),
        // A device's whole map deleted, then made again and filled in a later change.
        Box::new({
            move |d| {
                let mine = device_map_made_again(d, &container(d), &h);
                let mut tx = d.transaction();
                tx.put(
                    &mine,
                    format!("{}/{}", pupil(5), scan_id(50)),
                    record(NOW + 50),
                )
                .unwrap();
                tx.commit();
            }
        }),
        // Two copies create the same new device's map concurrently.
        Box::new(newcomers_map_made_twice),
        // Two copies write one record concurrently: one value wins.
        Box::new({
            move |d| {
                let mine = devices_map(d, &g);
                let k = format!("{}/{}", pupil(8), scan_id(80));
                let mut a = d.fork().with_actor(ActorId::from(vec![0x0b; 16]));
                let mut b = d.fork().with_actor(ActorId::from(vec![0xfa; 16]));
                for (copy, at) in [(&mut a, NOW + 1), (&mut b, NOW + 2)] {
                    let mut tx = copy.transaction();
                    tx.put(&mine, k.as_str(), record(at)).unwrap();
                    tx.commit();
                }
                d.merge(&mut a).unwrap();
                d.merge(&mut b).unwrap();
            }
        }),
        // A device's map spelt in upper case beside the real one, with a record in it.
        Box::new(move |d| {
            let c = container(d);
            let lettered = crate::ids::DeviceId(uuid::Uuid::from_u128(0xabcd_ef01));
            let mut tx = d.transaction();
            let m = tx
                .put_object(&c, lettered.to_string().to_uppercase(), ObjType::Map)
                .unwrap();
            tx.put(&m, format!("{}/{}", pupil(2), scan_id(70)), record(NOW))
                .unwrap();
            tx.commit();
        }),
    ];
    for edit in &edits {
        edit(&mut doc);
        assert_eq!(same(&mut reader, &doc), ReadKind::Changed);
    }
    let read = reader.read(&doc).0.expect("a booking");
    assert!(
        read.check_ins.iter().any(|s| s.scan_id == scan_id(62)),
        "the newcomer's scan after the conflict over its map"
    );
    assert!(read.check_ins.iter().any(|s| s.scan_id == scan_id(41)));
    assert!(!read.check_ins.iter().any(|s| s.scan_id == scan_id(70)));
    assert!(!read.check_ins.iter().any(|s| s.scan_id == scan_id(0)));
    assert_eq!(
        read.check_ins
            .iter()
            .filter(|s| s.scan_id == scan_id(80))
            .count(),
        1
    );
    // The container replaced at the root: everything is read again.
    let mut tx = doc.transaction();
    tx.put_object(ROOT, key::CHECK_IN_RECORDS, ObjType::Map)
        .unwrap();
    tx.commit();
    assert_eq!(same(&mut reader, &doc), ReadKind::Whole);
    assert!(reader.read(&doc).0.expect("a booking").check_ins.len() < read.check_ins.len());
}

/// Gates 1 and 2 scan pupils 0 to 2 into `doc` (scans 0-2 and 10-12), and a reader
/// reads it twice, keeping its scans.
fn two_gates_read(doc: &mut Automerge) -> (Writer, Writer, BookingReader) {
    let (g, h) = (gate(1), gate(2));
    for n in 0..3 {
        check_in(doc, &g, n, n as u64);
        check_in(doc, &h, n, 10 + n as u64);
    }
    let mut reader = BookingReader::new();
    same(&mut reader, doc);
    same(&mut reader, doc);
    (g, h, reader)
}

/// `w`'s device's map in the container `c` deleted, then made again (empty) in a change
/// of its own.
fn device_map_made_again(d: &mut Automerge, c: &automerge::ObjId, w: &Writer) -> automerge::ObjId {
    let mut tx = d.transaction();
    tx.delete(c, w.device.to_string()).unwrap();
    tx.commit();
    let mut tx = d.transaction();
    let mine = tx
        .put_object(c, w.device.to_string(), ObjType::Map)
        .unwrap();
    tx.commit();
    mine
}

/// The map of `w`'s device in the container `c`.
fn device_map_in(d: &Automerge, c: &automerge::ObjId, w: &Writer) -> automerge::ObjId {
    d.get(c, w.device.to_string()).unwrap().unwrap().1
}

/// Two copies create the same new device's map concurrently: the winner's scans are
/// listed; then the device scans again on the merged copy (scans 60 to 62).
fn newcomers_map_made_twice(d: &mut Automerge) {
    let newcomer = gate(3);
    let mut a = d.fork().with_actor(ActorId::from(vec![0x0a; 16]));
    let mut b = d.fork().with_actor(ActorId::from(vec![0xfb; 16]));
    for (copy, n) in [(&mut a, 60), (&mut b, 61)] {
        check_in(copy, &newcomer, 6, n);
    }
    d.merge(&mut a).unwrap();
    d.merge(&mut b).unwrap();
    check_in(d, &newcomer, 7, 62);
}

/// A raw scan record `scan` (by hand, at [`NOW`]) in the map `scans`.
fn put_manual_scan(
    tx: &mut automerge::transaction::Transaction<'_>,
    scans: &automerge::ObjId,
    scan: u64,
) {
    let rec = tx.put_object(scans, scan_id(scan), ObjType::Map).unwrap();
    tx.put(&rec, "at", NOW).unwrap();
    tx.put(&rec, "method", "manual").unwrap();
}
