//! The engine as a phone runs it (ADR 0125): compaction waits for a tick instead of
//! following the append a person waits for, the active booking stays pinned in memory,
//! a local edit is validated and persisted from its own change, and "already counted"
//! is answered by key lookup with the same answer as reading the whole booking.

use std::collections::VecDeque;

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{self, Edit, EditError};
use kepu_sync_core::engine::{
    Config, Engine, Event, IDLE_COMPACT_FACTOR, Input, Mode, StorageTask,
};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::mem_store::MemStore;
use kepu_sync_core::schema::booking::{self, Booking, ScanMethod};
use kepu_sync_core::writer::{Role, Writer};

const SCHOOL: SchoolId = SchoolId::from_bytes([0x5c; 16]);
const VENUE: VenueId = VenueId::from_bytes([0x7e; 16]);

fn teacher() -> Writer {
    Writer {
        device: DeviceId(uuid::Uuid::from_u128(0x0d)),
        user: UserId(uuid::Uuid::from_u128(0x7e)),
        role: Role::Teacher,
        school: Some(SCHOOL),
        venue: None,
        pupil: None,
    }
}

fn pupil(n: u128) -> PupilId {
    PupilId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

/// A phone's engine over a store in memory, running every task to completion.
struct Phone {
    engine: Engine,
    store: MemStore,
    now: i64,
    /// Every task issued, in order.
    tasks: Vec<StorageTask>,
}

impl Phone {
    fn new(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(
            Mode::Client,
            "phone".into(),
            "phone-storage".into(),
            [7; 16],
            teacher(),
        );
        config.compact_when_idle = true;
        config.compact_after = 8;
        adjust(&mut config);
        Self {
            engine: Engine::new(config),
            store: MemStore::default(),
            now: 1_757_000_000_000,
            tasks: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Event> {
        let mut queue = VecDeque::from([input]);
        let mut events = Vec::new();
        while let Some(input) = queue.pop_front() {
            self.now += 10;
            let fx = self.engine.handle(self.now, input);
            for (task, t) in fx.tasks {
                let result = self.store.run(&t);
                self.tasks.push(t);
                queue.push_back(Input::IoDone { task, result });
            }
            events.extend(fx.events);
        }
        events
    }

    fn edit(&mut self, doc: DocumentId, edit: Edit) -> Vec<Event> {
        let events = self.feed(Input::Edit { doc, edit });
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::EditApplied { doc: d } if *d == doc)),
            "{events:?}"
        );
        events
    }

    fn compactions(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| matches!(t, StorageTask::Compact { .. }))
            .count()
    }

    fn rows(&self, doc: &DocumentId) -> usize {
        self.store.docs.get(doc).map_or(0, |d| d.changes.len())
    }

    /// The document as the store would give it back after a restart.
    fn stored(&self, doc: &DocumentId) -> Automerge {
        let d = &self.store.docs[doc];
        let rows = d
            .changes
            .iter()
            .map(|(hash, bytes)| kepu_sync_core::engine::StoredChange {
                hash: *hash,
                bytes: bytes.clone(),
            });
        kepu_sync_core::stored::restore(d.snapshot.as_deref(), rows.collect::<Vec<_>>()).doc
    }
}

fn create_booking(phone: &mut Phone, roster: Vec<PupilId>) -> DocumentId {
    let doc = DocumentId::from_bytes([0xb0; 16]);
    phone.edit(
        doc,
        Edit::CreateBooking {
            venue: VENUE,
            slot: SlotId(uuid::Uuid::from_u128(0x51)),
            school: SCHOOL,
            party_size: 30,
            roster,
        },
    );
    doc
}

fn check_in(n: u128, scan: u32) -> Edit {
    Edit::CheckIn {
        pupil: pupil(n),
        scan_id: format!("scan-{n}-{scan}"),
        method: ScanMethod::PassScan,
        proof: None,
    }
}

#[test]
fn appends_leave_compaction_to_the_next_tick_and_lose_nothing() {
    let mut phone = Phone::new(|_| {});
    let doc = create_booking(&mut phone, (0..4).map(pupil).collect());
    for i in 0..40u32 {
        phone.edit(doc, check_in(u128::from(i % 4), i));
    }
    assert_eq!(phone.compactions(), 0, "no write waited for a compaction");
    assert_eq!(
        phone.rows(&doc),
        41,
        "every change is its own row until idle"
    );

    phone.feed(Input::Tick);
    assert_eq!(phone.compactions(), 1, "the tick compacts the due document");
    assert_eq!(phone.rows(&doc), 0);
    let held = phone.engine.doc(&doc).expect("loaded").get_heads();
    assert_eq!(
        phone.stored(&doc).get_heads(),
        held,
        "the snapshot holds it all"
    );

    phone.feed(Input::Tick);
    assert_eq!(phone.compactions(), 1, "nothing is due twice");
}

#[test]
fn a_phone_that_never_idles_still_compacts_at_the_bound() {
    let mut phone = Phone::new(|_| {});
    let doc = create_booking(&mut phone, vec![pupil(1)]);
    let bound = 8 * IDLE_COMPACT_FACTOR;
    for i in 0..bound {
        phone.edit(doc, check_in(1, u32::try_from(i).unwrap()));
    }
    assert_eq!(phone.compactions(), 1, "rows stay bounded without a tick");
    assert!(phone.rows(&doc) < bound, "{}", phone.rows(&doc));
    let held = phone.engine.doc(&doc).expect("loaded").get_heads();
    assert_eq!(phone.stored(&doc).get_heads(), held);
}

#[test]
fn a_local_edit_persists_exactly_its_own_change() {
    let mut phone = Phone::new(|_| {});
    let doc = create_booking(&mut phone, vec![pupil(1)]);
    let before = phone.engine.doc(&doc).unwrap().get_heads();
    let appends_before = phone.tasks.len();
    phone.edit(doc, check_in(1, 1));
    let d = phone.engine.doc(&doc).unwrap();
    let new = d.get_changes(&before);
    assert_eq!(new.len(), 1);
    let appended: Vec<_> = phone.tasks[appends_before..]
        .iter()
        .filter_map(|t| match t {
            StorageTask::Append { changes, .. } => Some(changes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].hash, new[0].hash());
    assert_eq!(appended[0].bytes, new[0].raw_bytes());
}

#[test]
fn a_refused_local_edit_is_rolled_back_and_not_stored() {
    let mut phone = Phone::new(|_| {});
    let doc = create_booking(&mut phone, vec![pupil(1)]);
    let heads = phone.engine.doc(&doc).unwrap().get_heads();
    let rows = phone.rows(&doc);
    // A teacher may not decide a booking: validated from the transaction's patches.
    let events = phone.feed(Input::Edit {
        doc,
        edit: Edit::Decide {
            status: booking::Status::Confirmed,
            wait_position: None,
        },
    });
    let refused = events.iter().find_map(|e| match e {
        Event::EditFailed {
            error: EditError::Refused(r),
            ..
        } => Some(r.clone()),
        _ => None,
    });
    let refusal = refused.expect("refused");
    assert_eq!(refusal.path, "status");
    assert_eq!(phone.engine.doc(&doc).unwrap().get_heads(), heads);
    assert_eq!(phone.rows(&doc), rows);
}

#[test]
fn a_pinned_booking_stays_in_memory_while_idle() {
    let mut phone = Phone::new(|c| c.idle_evict_ms = 1_000);
    let doc = create_booking(&mut phone, vec![pupil(1)]);
    let other = DocumentId::from_bytes([0xb1; 16]);
    phone.edit(
        other,
        Edit::CreateBooking {
            venue: VENUE,
            slot: SlotId(uuid::Uuid::from_u128(0x52)),
            school: SCHOOL,
            party_size: 3,
            roster: vec![],
        },
    );
    phone.engine.pin(doc, true);
    phone.now += 60_000;
    phone.feed(Input::Tick);
    assert!(
        phone.engine.doc(&doc).is_some(),
        "the pinned booking stayed"
    );
    assert!(phone.engine.doc(&other).is_none(), "an idle one left");

    phone.engine.pin(doc, false);
    phone.now += 60_000;
    phone.feed(Input::Tick);
    assert!(
        phone.engine.doc(&doc).is_none(),
        "unpinned, it goes when idle"
    );
}

#[test]
fn a_pinned_document_still_goes_when_memory_is_over_the_bound() {
    let mut phone = Phone::new(|c| c.max_docs_in_memory = 1);
    let doc = create_booking(&mut phone, vec![pupil(1)]);
    phone.engine.pin(doc, true);
    let other = DocumentId::from_bytes([0xb1; 16]);
    phone.edit(
        other,
        Edit::CreateBooking {
            venue: VENUE,
            slot: SlotId(uuid::Uuid::from_u128(0x52)),
            school: SCHOOL,
            party_size: 3,
            roster: vec![],
        },
    );
    phone.feed(Input::Tick);
    assert!(phone.engine.docs_in_memory() <= 1);
}

#[test]
fn already_counted_by_key_lookup_agrees_with_the_whole_booking() {
    let mut doc = Automerge::new();
    let t = teacher();
    let roster: Vec<PupilId> = (0..6).map(pupil).collect();
    edits::apply_unchecked(
        &mut doc,
        &t,
        1,
        &Edit::CreateBooking {
            venue: VENUE,
            slot: SlotId(uuid::Uuid::from_u128(0x51)),
            school: SCHOOL,
            party_size: 6,
            roster,
        },
    )
    .unwrap();
    // Pupils 1 and 3 checked in (3 twice, by two devices); 2 only checked out.
    edits::apply_unchecked(&mut doc, &t, 2, &check_in(1, 1)).unwrap();
    edits::apply_unchecked(&mut doc, &t, 3, &check_in(3, 1)).unwrap();
    let other_device = Writer {
        device: DeviceId(uuid::Uuid::from_u128(0x0e)),
        ..teacher()
    };
    edits::apply_unchecked(&mut doc, &other_device, 4, &check_in(3, 2)).unwrap();
    edits::apply_unchecked(
        &mut doc,
        &t,
        5,
        &Edit::CheckOut {
            pupil: pupil(2),
            scan_id: "out".into(),
            method: ScanMethod::Manual,
        },
    )
    .unwrap();
    let whole = Booking::read(&doc).unwrap();
    for n in 0..8 {
        let p = pupil(n);
        let expected = whole.check_ins.iter().any(|s| s.pupil == p);
        assert_eq!(booking::has_check_in(&doc, p), expected, "pupil {n}");
    }
    assert!(booking::has_check_in(&doc, pupil(1)));
    assert!(!booking::has_check_in(&doc, pupil(2)));
    assert_eq!(booking::venue_of(&doc), Some(VENUE));
    assert_eq!(booking::venue_of(&Automerge::new()), None);
}
