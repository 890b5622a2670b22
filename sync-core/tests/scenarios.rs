//! Scenario tests on the deterministic simulator. Each reads like the product.

use automerge::ReadDoc;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::engine::Event;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::rules::attendance::{AnomalyKind, attendance};
use kepu_sync_core::rules::capacity::{SlotRequest, edits};
use kepu_sync_core::rules::volunteer::minutes;
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{Booking, ScanMethod, Status};
use kepu_sync_core::schema::venue::Venue;
use kepu_sync_core::sim::{Faults, Sim};
use kepu_sync_core::validate::RefusalCode;
use kepu_sync_core::writer::{Role, Writer};

const HOUR: i64 = 3_600_000;

struct World {
    sim: Sim,
    school: SchoolId,
    venue: VenueId,
    slot: SlotId,
    venue_doc: DocumentId,
    pupils: Vec<PupilId>,
}

impl World {
    fn new(seed: u64, capacity: u32) -> Self {
        let server = Writer::server(DeviceId(uuid::Uuid::from_u128(1)));
        let mut sim = Sim::new(seed, server);
        let school = SchoolId(uuid::Uuid::from_u128(10));
        let venue = VenueId(uuid::Uuid::from_u128(20));
        let slot = SlotId(uuid::Uuid::from_u128(30));
        let venue_doc = sim.new_doc_id();
        sim.server_edit(venue_doc, Edit::CreateVenue { venue });
        let start = sim.now + HOUR;
        sim.server_edit(
            venue_doc,
            Edit::PutSlot {
                slot,
                start,
                end: start + 2 * HOUR,
                capacity,
                label: "周三课后".into(),
            },
        );
        let pupils = (0..8)
            .map(|i| PupilId(uuid::Uuid::from_u128(100 + i)))
            .collect();
        Self {
            sim,
            school,
            venue,
            slot,
            venue_doc,
            pupils,
        }
    }

    fn writer(&self, n: u128, role: Role) -> Writer {
        Writer {
            device: DeviceId(uuid::Uuid::from_u128(1000 + n)),
            user: UserId(uuid::Uuid::from_u128(2000 + n)),
            role,
            school: matches!(role, Role::Teacher | Role::Pupil | Role::Volunteer)
                .then_some(self.school),
            venue: (role == Role::VenueStaff).then_some(self.venue),
            pupil: None,
        }
    }

    fn teacher(&mut self, n: u128) -> usize {
        let w = self.writer(n, Role::Teacher);
        self.sim.add_device(w)
    }

    fn pupil_phone(&mut self, n: u128, pupil: PupilId) -> usize {
        let mut w = self.writer(n, Role::Pupil);
        w.pupil = Some(pupil);
        self.sim.add_device(w)
    }

    fn gate(&mut self, n: u128) -> usize {
        let w = self.writer(n, Role::VenueStaff);
        self.sim.add_device(w)
    }

    fn book(&mut self, teacher: usize, party: u32, roster: Vec<PupilId>) -> DocumentId {
        let doc = self.sim.new_doc_id();
        let (venue, slot, school) = (self.venue, self.slot, self.school);
        self.sim.edit(
            teacher,
            doc,
            Edit::CreateBooking {
                venue,
                slot,
                school,
                party_size: party,
                roster,
            },
        );
        doc
    }

    /// The server's capacity decision over bookings in the order it received them, written
    /// by the same rule as the server's storage worker (`rules::capacity::edits`).
    fn server_decides(&mut self, arrival: &[DocumentId]) {
        let venue = Venue::read(self.sim.server.doc(&self.venue_doc).unwrap()).unwrap();
        let cap = venue.slot(self.slot).unwrap().capacity;
        let requests: Vec<SlotRequest<DocumentId>> = arrival
            .iter()
            .map(|d| {
                let b = Booking::read(self.sim.server.doc(d).expect("server holds the booking"))
                    .unwrap();
                SlotRequest {
                    booking: *d,
                    party_size: b.party_size,
                    status: b.status,
                    wait_position: b.wait_position,
                }
            })
            .collect();
        for (doc, edit) in edits(cap, &requests) {
            self.sim.server_edit(doc, edit);
        }
    }

    /// A teacher's booking of every pupil, synced, and a gate of the venue that has it:
    /// (teacher, gate, booking).
    fn teacher_and_gate_on_a_booking(&mut self) -> (usize, usize, DocumentId) {
        let t = self.teacher(1);
        let g = self.gate(2);
        let b = self.book(t, 30, self.pupils.clone());
        self.sim.settle();
        self.sim.want(g, b);
        self.sim.settle();
        (t, g, b)
    }

    fn check_in(&mut self, device: usize, doc: DocumentId, pupil: PupilId, method: ScanMethod) {
        let scan_id = self.sim.new_entry_id();
        self.sim.edit(
            device,
            doc,
            Edit::CheckIn {
                pupil,
                scan_id,
                method,
                proof: None,
            },
        );
    }
}

fn booking_on(sim: &Sim, node: Option<usize>, doc: &DocumentId) -> Booking {
    let d = match node {
        None => sim.server.doc(doc),
        Some(i) => sim.devices[i].doc(doc),
    };
    Booking::read(d.expect("document loaded")).expect("a booking")
}

#[test]
fn two_phones_scan_the_same_pupil_offline_and_the_pupil_counts_once() {
    let mut w = World::new(7, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let gate = w.gate(3);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.server_decides(&[b]);
    w.sim.want(phone, b);
    w.sim.want(gate, b);
    w.sim.settle();
    assert_eq!(
        booking_on(&w.sim, Some(phone), &b).status,
        Status::Confirmed
    );

    w.sim.disconnect_all();
    w.sim.advance(HOUR);
    w.check_in(phone, b, p0, ScanMethod::GateCode);
    w.sim.advance(40_000);
    w.check_in(gate, b, p0, ScanMethod::PassScan);
    w.check_in(gate, b, w.pupils[1], ScanMethod::PassScan);
    w.sim.settle();

    for node in [None, Some(t), Some(phone), Some(gate)] {
        let a = attendance(&booking_on(&w.sim, node, &b), None);
        assert_eq!(a.arrived, 2, "two pupils arrived, seen from {node:?}");
        let p = a.pupils.iter().find(|p| p.pupil == p0).unwrap();
        assert_eq!(
            p.counted.as_ref().unwrap().device,
            w.sim.device_id(phone),
            "the earliest scan counts"
        );
        assert_eq!(
            p.duplicates.len(),
            1,
            "the gate's later scan is kept as a duplicate"
        );
        assert_eq!(p.duplicates[0].device, w.sim.device_id(gate));
        assert_eq!(a.missing.len(), 6);
    }
}

#[test]
fn two_teachers_book_the_last_places_offline_and_everyone_sees_one_confirmed_one_waitlisted() {
    let mut w = World::new(11, 40);
    let first = w.teacher(1);
    let b0 = w.book(first, 30, vec![]);
    w.sim.settle();
    w.server_decides(&[b0]);
    w.sim.settle();
    w.sim.disconnect_all();
    let t1 = w.teacher(2);
    let t2 = w.teacher(3);
    let b1 = w.book(t1, 10, vec![]);
    let b2 = w.book(t2, 10, vec![]);
    assert_eq!(
        booking_on(&w.sim, Some(t1), &b1).status,
        Status::Requested,
        "offline: shown as requested"
    );
    // t2 reaches the server first.
    w.sim.set_online(t2, true);
    w.sim.run(10_000);
    w.sim.set_online(t1, true);
    w.sim.run(10_000);
    w.server_decides(&[b0, b2, b1]);
    w.sim.settle();
    for node in [None, Some(t1)] {
        assert_eq!(booking_on(&w.sim, node, &b1).status, Status::Waitlisted);
        assert_eq!(booking_on(&w.sim, node, &b1).wait_position, Some(1));
    }
    for node in [None, Some(t2)] {
        assert_eq!(booking_on(&w.sim, node, &b2).status, Status::Confirmed);
    }
    // The first booking cancels; the wait-listed one moves up.
    w.sim.edit(first, b0, Edit::CancelBooking);
    w.sim.settle();
    w.server_decides(&[b0, b2, b1]);
    w.sim.settle();
    assert_eq!(booking_on(&w.sim, Some(t1), &b1).status, Status::Confirmed);
}

#[test]
fn a_waitlisted_booking_moves_up_the_queue_when_an_earlier_one_cancels() {
    // Ten places: the first school takes them all, two more wait in the order they came.
    let mut w = World::new(17, 10);
    let first = w.teacher(1);
    let b0 = w.book(first, 10, vec![]);
    let t1 = w.teacher(2);
    let b1 = w.book(t1, 5, vec![]);
    let t2 = w.teacher(3);
    let b2 = w.book(t2, 5, vec![]);
    let gate = w.gate(4);
    w.sim.settle();
    w.server_decides(&[b0, b1, b2]);
    w.sim.want(gate, b2);
    w.sim.settle();
    for node in [None, Some(t2), Some(gate)] {
        let b = booking_on(&w.sim, node, &b2);
        assert_eq!(
            (b.status, b.wait_position),
            (Status::Waitlisted, Some(2)),
            "second in the queue, seen from {node:?}"
        );
    }
    // The first wait-listed school gives up: the other one is now first in the queue,
    // still waiting (the ten places stay taken), and every device shows it.
    w.sim.edit(t1, b1, Edit::CancelBooking);
    w.sim.settle();
    w.server_decides(&[b0, b1, b2]);
    w.sim.settle();
    for node in [None, Some(t2), Some(gate)] {
        let b = booking_on(&w.sim, node, &b2);
        assert_eq!(
            (b.status, b.wait_position),
            (Status::Waitlisted, Some(1)),
            "first in the queue now, seen from {node:?}"
        );
    }
}

#[test]
fn a_volunteer_logs_offline_staff_confirm_and_minutes_add_up() {
    let mut w = World::new(13, 60);
    let vw = w.writer(1, Role::Volunteer);
    let volunteer_user = vw.user;
    let vol = w.sim.add_device(vw);
    let staff = w.gate(2);
    let log = w.sim.new_doc_id();
    let school = w.school;
    w.sim.edit(
        vol,
        log,
        Edit::CreateActivityLog {
            volunteer: volunteer_user,
            school: Some(school),
        },
    );
    let ids: Vec<String> = (0..3).map(|_| w.sim.new_entry_id()).collect();
    for (i, a) in ids.iter().enumerate() {
        let start = w.sim.now;
        w.sim.edit(
            vol,
            log,
            Edit::LogActivity {
                activity_id: a.clone(),
                venue: w.venue,
                activity_kind: "guided_tour".into(),
                start,
                minutes: 30 + 15 * u32::try_from(i).unwrap(),
                description: "讲解".into(),
            },
        );
    }
    assert_eq!(
        minutes(&ActivityLog::read(w.sim.devices[vol].doc(&log).unwrap()).unwrap()).unconfirmed,
        30 + 45 + 60
    );
    w.sim.settle();
    w.sim.want(staff, log);
    w.sim.settle();
    w.sim.set_online(staff, false);
    w.sim.edit(
        staff,
        log,
        Edit::ConfirmActivity {
            activity_id: ids[0].clone(),
            approved: true,
            minutes: None,
        },
    );
    w.sim.edit(
        staff,
        log,
        Edit::ConfirmActivity {
            activity_id: ids[1].clone(),
            approved: true,
            minutes: Some(40),
        },
    );
    w.sim.edit(
        staff,
        log,
        Edit::ConfirmActivity {
            activity_id: ids[2].clone(),
            approved: false,
            minutes: None,
        },
    );
    w.sim.settle();
    let m = minutes(&ActivityLog::read(w.sim.devices[vol].doc(&log).unwrap()).unwrap());
    assert_eq!((m.confirmed, m.declined, m.unconfirmed), (30 + 40, 60, 0));
    assert!(w.sim.server.refusals().next().is_none());
}

#[test]
fn a_pupil_editing_a_booking_status_is_refused_and_their_own_check_in_still_lands() {
    let mut w = World::new(17, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.sim.want(phone, b);
    w.sim.settle();
    w.sim.set_online(phone, false);
    w.check_in(phone, b, p0, ScanMethod::GateCode);
    // A tampered app writes the status; the honest app would refuse locally:
    w.sim.edit(
        phone,
        b,
        Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    assert!(
        w.sim.devices[phone]
            .events
            .iter()
            .any(|e| matches!(e, Event::EditFailed { .. })),
        "the device refuses before writing"
    );
    w.sim.edit_unchecked(
        phone,
        b,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    w.sim.settle();

    let refusal = w.sim.server.refusals().next().expect("the server refused");
    assert_eq!(refusal.code, RefusalCode::StatusIsServerOnly);
    assert_eq!(
        booking_on(&w.sim, None, &b).status,
        Status::Requested,
        "nothing refused was merged"
    );
    assert_eq!(
        attendance(&booking_on(&w.sim, None, &b), None).arrived,
        1,
        "the check-in landed"
    );
    let back = w.sim.devices[phone]
        .refusals()
        .next()
        .expect("the phone was told why");
    assert_eq!(back.code, RefusalCode::StatusIsServerOnly);
    assert_eq!(
        booking_on(&w.sim, Some(phone), &b).status,
        Status::Requested,
        "the phone dropped its refused change"
    );
    assert_eq!(
        w.sim.devices[phone].store.refused.len(),
        1,
        "and kept it aside, not silently"
    );
    // Later syncs are clean: no refusal loop.
    let before = w.sim.server.refusals().count();
    w.check_in(phone, b, p0, ScanMethod::GateCode);
    w.sim.settle();
    assert_eq!(w.sim.server.refusals().count(), before);
}

#[test]
fn pupils_may_not_check_in_others_or_when_not_on_the_roster() {
    let mut w = World::new(19, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let b = w.book(t, 30, vec![p0]);
    w.sim.settle();
    w.sim.want(phone, b);
    w.sim.settle();
    let other = w.pupils[1];
    let scan_id = w.sim.new_entry_id();
    w.sim.edit_unchecked(
        phone,
        b,
        &Edit::CheckIn {
            pupil: other,
            scan_id,
            method: ScanMethod::GateCode,
            proof: None,
        },
    );
    w.sim.settle();
    assert_eq!(
        w.sim.server.refusals().last().unwrap().code,
        RefusalCode::NotOwnPupil
    );
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 0);
}

#[test]
fn venue_staff_of_one_venue_cannot_touch_another_venues_booking() {
    let mut w = World::new(23, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, vec![w.pupils[0]]);
    w.sim.settle();
    let mut other = w.writer(2, Role::VenueStaff);
    other.venue = Some(VenueId(uuid::Uuid::from_u128(999)));
    let g = w.sim.add_device(other);
    w.sim.want(g, b);
    w.sim.settle();
    assert!(
        w.sim.devices[g]
            .events
            .iter()
            .any(|e| matches!(e, Event::Unavailable { .. })),
        "deny looks like unknown"
    );
    assert!(
        w.sim.devices[g]
            .doc(&b)
            .is_none_or(|d| d.get_heads().is_empty())
    );
    // Same answer for a document that does not exist at all.
    let ghost = w.sim.new_doc_id();
    w.sim.want(g, ghost);
    w.sim.settle();
    let unavailable = w.sim.devices[g]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Unavailable { .. }))
        .count();
    assert_eq!(unavailable, 2);
}

#[test]
fn a_server_crash_after_persisting_but_before_replying_loses_nothing() {
    let mut w = World::new(29, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.sim.set_online(t, false);
    for p in w.pupils.clone() {
        w.check_in(t, b, p, ScanMethod::Manual);
    }
    w.sim.server.auto_io = false;
    w.sim.set_online(t, true);
    w.sim.run(10_000);
    assert_eq!(
        attendance(&booking_on(&w.sim, None, &b), None).arrived,
        8,
        "merged in memory, not yet acknowledged"
    );
    let stored_before_crash = w.sim.server.store.stored_bytes(&b);
    assert!(stored_before_crash > 0);
    w.sim.crash_server();
    w.sim.settle();
    assert_eq!(
        attendance(&booking_on(&w.sim, None, &b), None).arrived,
        8,
        "every check-in survived the crash"
    );
    assert!(
        w.sim.devices[t]
            .events
            .iter()
            .any(|e| matches!(e, Event::Synced { .. }))
    );
}

#[test]
fn a_pupil_removed_from_the_roster_loses_the_booking_on_their_phone() {
    let mut w = World::new(31, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let b = w.book(t, 30, vec![p0]);
    w.sim.settle();
    w.sim.want(phone, b);
    w.sim.settle();
    assert!(w.sim.devices[phone].doc(&b).is_some());
    w.sim.edit(t, b, Edit::RemoveFromRoster { pupil: p0 });
    w.sim.settle();
    assert!(
        w.sim.devices[phone]
            .events
            .iter()
            .any(|e| matches!(e, Event::AccessLost { .. }))
    );
    assert!(w.sim.devices[phone].doc(&b).is_none());
    assert!(
        !w.sim.devices[phone].store.docs.contains_key(&b),
        "the local copy is gone from storage"
    );
}

#[test]
fn a_check_in_for_a_cancelled_booking_is_kept_and_flagged() {
    let mut w = World::new(37, 60);
    let t = w.teacher(1);
    let gate = w.gate(2);
    let b = w.book(t, 30, vec![w.pupils[0]]);
    w.sim.settle();
    w.server_decides(&[b]);
    w.sim.want(gate, b);
    w.sim.settle();
    w.sim.disconnect_all();
    w.sim.edit(t, b, Edit::CancelBooking);
    w.check_in(gate, b, w.pupils[0], ScanMethod::PassScan);
    w.check_in(gate, b, w.pupils[5], ScanMethod::PassScan);
    w.sim.settle();
    let a = attendance(&booking_on(&w.sim, None, &b), None);
    assert_eq!(a.arrived, 2, "nothing a device recorded is dropped");
    let kinds: Vec<AnomalyKind> = a.anomalies.iter().map(|x| x.kind).collect();
    assert!(kinds.contains(&AnomalyKind::CancelledBooking));
    assert!(kinds.contains(&AnomalyKind::WalkIn));
}

#[test]
fn a_device_crash_loses_nothing_it_returned_from() {
    let mut w = World::new(41, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    w.check_in(t, b, w.pupils[0], ScanMethod::Manual);
    w.sim.crash_device(t);
    w.sim.settle();
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 1);
}

#[test]
fn reconnecting_after_a_day_offline_sends_only_what_is_new() {
    let mut w = World::new(43, 60);
    let t = w.teacher(1);
    let b = w.book(t, 60, w.pupils.clone());
    w.sim.settle();
    w.sim.disconnect_all();
    w.check_in(t, b, w.pupils[0], ScanMethod::Manual);
    w.sim.crash_device(t); // restart from storage: persisted sync state only
    w.sim.reconnect_all();
    let steps = w.sim.run(10_000);
    assert!(
        steps <= 8,
        "a resumed sync takes a handful of frames, took {steps}"
    );
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 1);
}

/// A booking of every pupil with a gate that went offline after it synced and checked
/// every pupil in; the server's and the gate's settings changed by `adjust`. (world,
/// gate, booking)
fn a_gate_back_from_a_day_offline(
    seed: u64,
    adjust: impl Fn(&mut kepu_sync_core::engine::Config),
) -> (World, usize, DocumentId) {
    let mut w = World::new(seed, 60);
    w.sim.adjust_server(&adjust);
    let t = w.teacher(1);
    let writer = w.writer(2, Role::VenueStaff);
    let g = w.sim.add_device_with(writer, &adjust);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.sim.want(g, b);
    w.sim.settle();
    w.sim.disconnect_all();
    for p in w.pupils.clone() {
        w.check_in(g, b, p, ScanMethod::PassScan);
    }
    w.sim.reconnect_all();
    w.sim.settle();
    (w, g, b)
}

fn protocol_errors(w: &World) -> usize {
    w.sim
        .server
        .events
        .iter()
        .filter(|e| matches!(e, Event::ProtocolError { .. }))
        .count()
}

#[test]
fn a_gate_back_from_a_day_offline_sends_its_changes_not_its_whole_copy() {
    // The gate's day is most of its copy: automerge would send the whole document, which
    // the server must load on the side to split by author (ADR 0200). The gate sends its
    // changes (ADR 0202).
    let (w, g, b) = a_gate_back_from_a_day_offline(59, |_| {});
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 8);
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(g), &b), None).arrived,
        8
    );
    assert_eq!(
        w.sim.server.engine.work().documents_split,
        0,
        "no whole copy loaded on the side"
    );
    assert_eq!(protocol_errors(&w), 0);
}

#[test]
fn a_day_too_large_for_one_message_goes_in_messages_the_server_takes() {
    // The server takes at most four changes a message: the gate's eight check-ins go in
    // runs of four, the server asking for the rest, and nothing is refused.
    let (w, g, b) = a_gate_back_from_a_day_offline(61, |c| c.limits.changes_per_message = 4);
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 8);
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(g), &b), None).arrived,
        8
    );
    assert_eq!(w.sim.server.engine.work().documents_split, 0);
    assert_eq!(protocol_errors(&w), 0, "no message refused");
}

#[test]
fn idle_documents_leave_server_memory_and_come_back_on_demand() {
    let mut w = World::new(47, 60);
    let t = w.teacher(1);
    let docs: Vec<DocumentId> = (0..5).map(|_| w.book(t, 1, vec![])).collect();
    w.sim.settle();
    w.sim.disconnect_all();
    w.sim.advance(10 * 60 * 1000);
    w.sim.tick();
    assert_eq!(w.sim.server.engine.docs_in_memory(), 0);
    w.check_in(t, docs[3], w.pupils[0], ScanMethod::Manual);
    w.sim.settle();
    assert_eq!(
        attendance(&booking_on(&w.sim, None, &docs[3]), None).arrived,
        1
    );
}

#[test]
fn a_teacher_may_not_decide_a_booking_status() {
    let mut w = World::new(53, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, vec![]);
    w.sim.settle();
    w.sim.edit_unchecked(
        t,
        b,
        &Edit::Decide {
            status: Status::Confirmed,
            wait_position: None,
        },
    );
    w.sim.settle();
    assert_eq!(
        w.sim.server.refusals().last().unwrap().code,
        RefusalCode::StatusIsServerOnly
    );
    assert_eq!(booking_on(&w.sim, None, &b).status, Status::Requested);
}

#[test]
fn faults_duplicates_and_reordering_do_not_break_convergence() {
    let mut w = World::new(59, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    let gates: Vec<usize> = (0..3).map(|i| w.gate(10 + i)).collect();
    for g in &gates {
        w.sim.want(*g, b);
    }
    w.sim.settle();
    w.sim.disconnect_all();
    for (k, g) in gates.iter().enumerate() {
        for p in w.pupils.clone().iter().skip(k) {
            w.check_in(*g, b, *p, ScanMethod::PassScan);
        }
    }
    w.sim.faults = Faults {
        drop_pct: 3,
        duplicate_pct: 5,
        reorder: true,
        hold_server_io: true,
        read_together: true,
    };
    w.sim.settle();
    w.sim.faults = Faults::default();
    w.sim.settle();
    let server = booking_on(&w.sim, None, &b);
    assert_eq!(attendance(&server, None).arrived, 8);
    for g in gates {
        assert_eq!(booking_on(&w.sim, Some(g), &b), server);
    }
}

mod convergence {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Random offline histories over a teacher and three gates, with lost, duplicated
        /// and reordered frames, converge to equal documents and equal attendance.
        #[test]
        fn random_interleavings_converge(seed in any::<u64>(), ops in proptest::collection::vec((0usize..4, 0usize..8, 0u8..5), 1..60)) {
            let mut w = World::new(seed, 60);
            let t = w.teacher(1);
            let b = w.book(t, 30, w.pupils[..6].to_vec());
            let gates: Vec<usize> = (0..3).map(|i| w.gate(10 + i)).collect();
            w.sim.settle();
            for g in &gates {
                w.sim.want(*g, b);
            }
            w.sim.settle();
            w.sim.disconnect_all();
            w.sim.faults = Faults { drop_pct: seed % 4, duplicate_pct: (seed >> 8) % 6, reorder: true, hold_server_io: (seed >> 16) % 4 != 0, read_together: (seed >> 24) % 2 == 0 };
            let devices = [t, gates[0], gates[1], gates[2]];
            for (dev, pupil, action) in ops {
                let d = devices[dev];
                let p = w.pupils[pupil];
                match action {
                    0 | 1 => w.check_in(d, b, p, ScanMethod::PassScan),
                    2 => {
                        let scan_id = w.sim.new_entry_id();
                        w.sim.edit(d, b, Edit::CheckOut { pupil: p, scan_id, method: ScanMethod::PassScan });
                    }
                    3 => {
                        w.sim.set_online(d, true);
                    }
                    _ => {
                        w.sim.run(usize::from(u8::try_from(pupil).unwrap()) * 3);
                        w.sim.set_online(d, false);
                    }
                }
                w.sim.advance(1_000);
            }
            w.sim.settle();
            w.sim.faults = Faults::default();
            w.sim.settle();
            let server = booking_on(&w.sim, None, &b);
            let expected = attendance(&server, None);
            for d in devices {
                let local = booking_on(&w.sim, Some(d), &b);
                prop_assert_eq!(&local, &server);
                prop_assert_eq!(attendance(&local, None), expected.clone());
            }
            prop_assert!(w.sim.server.refusals().next().is_none(), "honest devices are never refused");
        }
    }
}

mod proofs {
    use super::*;
    use kepu_sync_core::proof::{
        GateDayCert, GateSigner, ServerSigner, gate_public_key, utc_day, verify_gate_code,
    };

    fn world_with_checks(seed: u64) -> (World, ServerSigner, DocumentId) {
        let signer = ServerSigner::from_seed([9; 32]);
        let server = Writer::server(DeviceId(uuid::Uuid::from_u128(1)));
        let mut w = World::new(seed, 60);
        let revocations = w.sim.new_doc_id();
        // Rebuild the server with checks, then recreate the venue (a fresh server store).
        let _ = server;
        w.sim
            .set_server_proof_checks(signer.public(), Some(revocations));
        w.sim.server_edit(revocations, Edit::CreateRevocations);
        let start = w.sim.now + HOUR;
        let (venue, slot, venue_doc) = (w.venue, w.slot, w.venue_doc);
        w.sim.server_edit(venue_doc, Edit::CreateVenue { venue });
        w.sim.server_edit(
            venue_doc,
            Edit::PutSlot {
                slot,
                start,
                end: start + 2 * HOUR,
                capacity: 60,
                label: "x".into(),
            },
        );
        (w, signer, revocations)
    }

    fn gate_signer(signer: &ServerSigner, venue: VenueId, now: i64) -> GateSigner {
        let seed = [3u8; 32];
        let cert = signer.certify_gate(GateDayCert {
            venue,
            day: utc_day(now).unwrap(),
            gate_key: gate_public_key(&seed),
            expires_ms: now + 24 * HOUR,
        });
        GateSigner::new(seed, cert).unwrap()
    }

    #[test]
    fn the_server_verifies_gate_proofs_again_and_refuses_forged_ones() {
        let (mut w, signer, _) = world_with_checks(61);
        let t = w.teacher(1);
        let p0 = w.pupils[0];
        let phone = w.pupil_phone(2, p0);
        let b = w.book(t, 30, vec![p0]);
        w.sim.settle();
        w.sim.want(phone, b);
        w.sim.settle();
        let gate = gate_signer(&signer, w.venue, w.sim.now);
        let code = gate.code_at(w.sim.now);
        let proof = verify_gate_code(&code, &signer.public(), w.sim.now, Some(w.venue))
            .expect("the phone verifies offline");
        let scan_id = w.sim.new_entry_id();
        w.sim.edit(
            phone,
            b,
            Edit::CheckIn {
                pupil: p0,
                scan_id,
                method: ScanMethod::GateCode,
                proof: Some(proof.encode()),
            },
        );
        w.sim.settle();
        assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 1);
        assert!(w.sim.server.refusals().next().is_none());

        // A gate code of another venue, and a made-up proof, are refused.
        let other = gate_signer(&signer, VenueId(uuid::Uuid::from_u128(77)), w.sim.now);
        let foreign =
            verify_gate_code(&other.code_at(w.sim.now), &signer.public(), w.sim.now, None).unwrap();
        let scan_id = w.sim.new_entry_id();
        w.sim.edit(
            phone,
            b,
            Edit::CheckIn {
                pupil: p0,
                scan_id,
                method: ScanMethod::GateCode,
                proof: Some(foreign.encode()),
            },
        );
        w.sim.settle();
        assert_eq!(
            w.sim.server.refusals().last().map(|r| r.code.clone()),
            Some(RefusalCode::BadProof)
        );
        let scan_id = w.sim.new_entry_id();
        w.sim.edit(
            phone,
            b,
            Edit::CheckIn {
                pupil: p0,
                scan_id,
                method: ScanMethod::GateCode,
                proof: Some("KPE1.forged".into()),
            },
        );
        w.sim.settle();
        assert_eq!(w.sim.server.refusals().count(), 2);
        let server = booking_on(&w.sim, None, &b);
        assert_eq!(
            server.check_ins.len(),
            1,
            "only the genuine scan was merged"
        );
    }

    #[test]
    fn the_server_refuses_revoked_and_foreign_pupil_passes() {
        let (mut w, signer, revocations) = world_with_checks(67);
        let t = w.teacher(1);
        let gate = w.gate(2);
        let (p0, p1) = (w.pupils[0], w.pupils[1]);
        let b = w.book(t, 30, vec![p0, p1]);
        w.sim.settle();
        w.sim.want(gate, b);
        w.sim.settle();
        let school = w.school;
        let far = w.sim.now + 100 * 24 * HOUR;
        let pass0 = signer.issue_pass(p0, school, 1, far);
        let pass1 = signer.issue_pass(p1, school, 1, far);
        w.sim.server_edit(
            revocations,
            Edit::RevokePass {
                pupil: p1,
                serial: 1,
            },
        );
        for (pupil, pass) in [(p0, pass0.clone()), (p1, pass1), (w.pupils[2], pass0)] {
            let scan_id = w.sim.new_entry_id();
            w.sim.edit(
                gate,
                b,
                Edit::CheckIn {
                    pupil,
                    scan_id,
                    method: ScanMethod::PassScan,
                    proof: Some(pass),
                },
            );
            w.sim.settle();
        }
        let a = attendance(&booking_on(&w.sim, None, &b), None);
        assert_eq!(a.arrived, 1, "only the valid pass counts");
        let codes: Vec<RefusalCode> = w.sim.server.refusals().map(|r| r.code.clone()).collect();
        assert_eq!(codes, vec![RefusalCode::BadProof, RefusalCode::BadProof]);
    }
}

#[test]
fn a_pass_scanned_offline_before_its_revocation_still_counts() {
    use kepu_sync_core::proof::ServerSigner;
    let signer = ServerSigner::from_seed([9; 32]);
    let mut w = World::new(83, 60);
    let revocations = w.sim.new_doc_id();
    w.sim
        .set_server_proof_checks(signer.public(), Some(revocations));
    w.sim.server_edit(revocations, Edit::CreateRevocations);
    let (venue, slot, venue_doc) = (w.venue, w.slot, w.venue_doc);
    let start = w.sim.now + HOUR;
    w.sim.server_edit(venue_doc, Edit::CreateVenue { venue });
    w.sim.server_edit(
        venue_doc,
        Edit::PutSlot {
            slot,
            start,
            end: start + 2 * HOUR,
            capacity: 60,
            label: "x".into(),
        },
    );
    let t = w.teacher(1);
    let gate = w.gate(2);
    let p1 = w.pupils[1];
    let b = w.book(t, 30, vec![p1]);
    w.sim.settle();
    w.sim.want(gate, b);
    w.sim.settle();
    w.sim.set_online(gate, false);
    let pass = signer.issue_pass(p1, w.school, 1, w.sim.now + 100 * 24 * HOUR);
    let scan_id = w.sim.new_entry_id();
    w.sim.edit(
        gate,
        b,
        Edit::CheckIn {
            pupil: p1,
            scan_id,
            method: ScanMethod::PassScan,
            proof: Some(pass.clone()),
        },
    );
    w.sim.advance(HOUR);
    w.sim.server_edit(
        revocations,
        Edit::RevokePass {
            pupil: p1,
            serial: 1,
        },
    );
    w.sim.settle();
    assert!(
        w.sim.server.refusals().next().is_none(),
        "the scan predates the revocation"
    );
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 1);
    // A scan of the same pass after the revocation is refused.
    let scan_id = w.sim.new_entry_id();
    w.sim.edit(
        gate,
        b,
        Edit::CheckIn {
            pupil: p1,
            scan_id,
            method: ScanMethod::PassScan,
            proof: Some(pass),
        },
    );
    w.sim.settle();
    assert_eq!(
        w.sim
            .server
            .refusals()
            .map(|r| r.code.clone())
            .collect::<Vec<_>>(),
        vec![RefusalCode::BadProof]
    );
}

#[test]
fn a_device_on_schema_1_is_read_and_accepted_by_this_engine() {
    use automerge::transaction::Transactable;
    let mut w = World::new(71, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    // A booking as a version-1 app wrote it: no `guide`, schema 1.
    let mut old = automerge::Automerge::new();
    let tw = w.sim.devices[t].writer().clone();
    kepu_sync_core::edits::apply_unchecked(
        &mut old,
        &tw,
        w.sim.now,
        &Edit::CreateBooking {
            venue: w.venue,
            slot: w.slot,
            school: w.school,
            party_size: 5,
            roster: vec![p0],
        },
    )
    .unwrap();
    let mut tx = old.transaction();
    tx.put(automerge::ROOT, "schema", 1).unwrap();
    tx.commit();
    let v1 = Booking::read(&old).unwrap();
    assert_eq!((v1.schema, v1.guide), (1, None));
    // The same doc reaches the server through the device, then a v2 gate adds a guide.
    let b = w.sim.new_doc_id();
    w.sim.edit(
        t,
        b,
        Edit::CreateBooking {
            venue: w.venue,
            slot: w.slot,
            school: w.school,
            party_size: 5,
            roster: vec![p0],
        },
    );
    w.sim.settle();
    let staff = w.gate(3);
    w.sim.want(staff, b);
    w.sim.settle();
    w.sim.edit(
        staff,
        b,
        Edit::SetGuide {
            guide: "A组".into(),
        },
    );
    w.check_in(t, b, p0, ScanMethod::Manual);
    w.sim.settle();
    let server = booking_on(&w.sim, None, &b);
    assert_eq!(server.guide.as_deref(), Some("A组"));
    assert_eq!(attendance(&server, None).arrived, 1);
    assert!(w.sim.server.refusals().next().is_none());
}

#[test]
fn a_pupil_who_loses_access_offline_keeps_their_unsynced_check_in_aside() {
    let mut w = World::new(73, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let b = w.book(t, 30, vec![p0]);
    w.sim.settle();
    w.sim.want(phone, b);
    w.sim.settle();
    w.sim.set_online(phone, false);
    w.check_in(phone, b, p0, ScanMethod::GateCode);
    w.sim.edit(t, b, Edit::RemoveFromRoster { pupil: p0 });
    w.sim.settle();
    assert!(
        w.sim.devices[phone].doc(&b).is_none(),
        "the copy is dropped"
    );
    let kept: Vec<&str> = w.sim.devices[phone]
        .store
        .refused
        .iter()
        .map(|(_, _, code)| code.as_str())
        .collect();
    assert_eq!(
        kept,
        vec!["access-lost"],
        "the unsynced check-in is kept aside and shown"
    );
}

#[test]
fn compaction_deletes_only_the_rows_it_read() {
    use kepu_sync_core::engine::{IoResult, StorageTask, StoredChange};
    let mut w = World::new(79, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    for p in w.pupils.clone() {
        w.check_in(t, b, p, ScanMethod::Manual);
    }
    w.sim.settle();
    let rows_before = w.sim.server.store.docs[&b].changes.len();
    assert!(rows_before > 1);
    // Another server node appends a change while this one compacts.
    let fx = w.sim.server.engine.compact_now(w.sim.now, b);
    let compact = fx
        .tasks
        .iter()
        .find(|(_, t)| matches!(t, StorageTask::Compact { .. }))
        .expect("a compaction task")
        .clone();
    let mut other = automerge::Automerge::load(
        &w.sim.server.store.docs[&b]
            .snapshot
            .clone()
            .unwrap_or_else(|| {
                let mut d = automerge::Automerge::new();
                let changes: Vec<automerge::Change> = w.sim.server.store.docs[&b]
                    .changes
                    .values()
                    .map(|c| automerge::Change::from_bytes(c.clone()).unwrap())
                    .collect();
                d.apply_changes(changes).unwrap();
                d.save()
            }),
    )
    .unwrap();
    let gate = w.writer(5, Role::VenueStaff);
    let scan_id = w.sim.new_entry_id();
    kepu_sync_core::edits::apply_unchecked(
        &mut other,
        &gate,
        w.sim.now,
        &Edit::CheckIn {
            pupil: w.pupils[0],
            scan_id,
            method: ScanMethod::PassScan,
            proof: None,
        },
    )
    .unwrap();
    let late = other.get_last_local_change().unwrap();
    let _ = w.sim.server_store_run(&StorageTask::Append {
        doc: b,
        kind: None,
        changes: vec![StoredChange {
            hash: late.hash(),
            bytes: late.raw_bytes().to_vec(),
        }],
        heads: vec![],
        owners: Vec::new(),
    });
    assert_eq!(w.sim.server_store_run(&compact.1), IoResult::Done);
    let stored = &w.sim.server.store.docs[&b];
    assert_eq!(
        stored.changes.len(),
        1,
        "only the row appended meanwhile is left"
    );
    assert!(stored.changes.contains_key(&late.hash()));
    // Loading snapshot + rows gives everything.
    let mut d = automerge::Automerge::load(stored.snapshot.as_ref().unwrap()).unwrap();
    d.apply_changes(
        stored
            .changes
            .values()
            .map(|c| automerge::Change::from_bytes(c.clone()).unwrap()),
    )
    .unwrap();
    let booking = Booking::read(&d).unwrap();
    assert_eq!(booking.check_ins.len(), 9);
}

/// Known gap 21, step by step: a device's heads-only answer read while its own next
/// append is in flight must not cancel the reply the server owes it.
#[test]
fn a_reply_held_while_an_append_is_in_flight_still_acknowledges_the_change() {
    let mut w = World::new(71, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.sim.faults.hold_server_io = true;
    let (p0, p1) = (w.pupils[0], w.pupils[1]);
    // 1-2. D sends m1 with c1, then m2 with c2 before anything comes back.
    w.check_in(t, b, p0, ScanMethod::Manual);
    w.check_in(t, b, p1, ScanMethod::Manual);
    assert_eq!(w.sim.in_flight(t), (2, 0), "m1 and m2 on the wire");
    // The server applies m1 and starts append T1.
    assert!(w.sim.deliver(t, true));
    assert_eq!(w.sim.held_server_io(), 1);
    // 3. T1 completes before the server reads m2: reply R1 with heads [c1].
    assert!(w.sim.release_one_server_io());
    assert_eq!(w.sim.in_flight(t), (1, 1));
    // 4. The server reads m2, applies c2 and starts T2; the reply is held.
    assert!(w.sim.deliver(t, true));
    assert_eq!(w.sim.held_server_io(), 1);
    assert_eq!(w.sim.in_flight(t), (0, 1));
    // 5. D reads R1 and answers m3: heads [c2], no changes.
    assert!(w.sim.deliver(t, false));
    assert_eq!(w.sim.in_flight(t), (1, 0));
    // 6. The server reads m3 while T2 is in flight.
    assert!(w.sim.deliver(t, true));
    // 7. T2 completes: the server owes D a reply and sends it.
    assert!(w.sim.release_one_server_io());
    w.sim.run(1_000);
    assert_eq!(
        w.sim.unacknowledged(),
        vec![],
        "the teacher's phone knows the server holds both check-ins, without reconnecting"
    );
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 2);
}

/// The two-writer form: a gate's changes cross the fan-out of the teacher's.
#[test]
fn two_writers_crossing_a_fan_out_both_hear_their_changes_acknowledged() {
    for seed in 0..40 {
        let mut w = World::new(200 + seed, 60);
        let (t, g, b) = w.teacher_and_gate_on_a_booking();
        w.sim.faults = Faults {
            reorder: true,
            hold_server_io: true,
            ..Faults::default()
        };
        for k in 0..4 {
            let p = w.pupils[k];
            w.check_in(t, b, p, ScanMethod::Manual);
            let q = w.pupils[7 - k];
            w.check_in(g, b, q, ScanMethod::PassScan);
            w.sim.run(usize::try_from(seed % 5).unwrap());
        }
        // No reconnect: run to quiet on the same connections, then check the promise.
        w.sim.run(100_000);
        assert_eq!(w.sim.unacknowledged(), vec![], "seed {seed}");
        assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 8);
    }
}

/// Devices watching a booking hear a gate's check-in as soon as it is merged, without
/// waiting for the disk (ADR 0198); the gate itself is told the server holds it only once
/// it is written.
#[test]
fn a_watching_device_hears_a_check_in_before_it_is_written_and_the_gate_only_after() {
    let mut w = World::new(91, 60);
    let (t, g, b) = w.teacher_and_gate_on_a_booking();
    // The teacher wrote the booking a while ago and now only watches.
    w.sim.advance(60_000);
    w.sim.faults.hold_server_io = true;
    w.check_in(g, b, w.pupils[2], ScanMethod::PassScan);
    assert!(w.sim.deliver(g, true));
    assert_eq!(
        w.sim.held_server_io(),
        1,
        "the gate's append is being written"
    );
    while w.sim.deliver(t, false) || w.sim.deliver(t, true) {}
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(t), &b), None).arrived,
        1,
        "the watching teacher's phone shows the arrival while it is being written"
    );
    while w.sim.deliver(g, false) || w.sim.deliver(g, true) {}
    assert!(
        w.sim.unacknowledged().iter().any(|(d, _, _)| *d == g),
        "the gate is not told the server holds a check-in that is not written"
    );
    assert!(w.sim.release_one_server_io());
    w.sim.run(10_000);
    assert_eq!(w.sim.unacknowledged(), vec![]);
}

/// A watching device that has not answered our last message is not sent another per
/// merge: it hears the rest when it answers, so a busy booking sends a slow watcher one
/// message at a time.
#[test]
fn a_watching_device_is_sent_one_message_at_a_time_while_it_has_not_answered() {
    let mut w = World::new(93, 60);
    let (t, g, b) = w.teacher_and_gate_on_a_booking();
    w.sim.advance(60_000);
    w.sim.faults.hold_server_io = true;
    for k in 0..3 {
        w.check_in(g, b, w.pupils[k], ScanMethod::PassScan);
        assert!(w.sim.deliver(g, true));
    }
    assert_eq!(w.sim.held_server_io(), 3, "three appends being written");
    assert_eq!(
        w.sim.in_flight(t).1,
        1,
        "one message on its way to the watching teacher, not one per merge"
    );
    // The teacher reads it and answers; the answer brings the rest at once.
    while w.sim.deliver(t, false) || w.sim.deliver(t, true) {}
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(t), &b), None).arrived,
        3,
        "the teacher's phone has all three while they are being written"
    );
    w.sim.faults.hold_server_io = false;
    w.sim.release_server_io();
    w.sim.settle();
    assert_eq!(w.sim.unacknowledged(), vec![]);
}

/// A device whose own change is still being written hears nothing early: the heads it
/// would be sent cover its unwritten change. Nor does it on a new connection.
#[test]
fn a_device_with_a_change_being_written_is_not_told_early_on_any_connection() {
    let mut w = World::new(92, 60);
    let (t, g, b) = w.teacher_and_gate_on_a_booking();
    w.sim.faults.hold_server_io = true;
    // The teacher's check-in is merged and its append held.
    w.check_in(t, b, w.pupils[0], ScanMethod::Manual);
    assert!(w.sim.deliver(t, true));
    // The teacher reconnects while it is written: a new connection of the same phone.
    w.sim.set_online(t, false);
    w.sim.set_online(t, true);
    // The gate's check-in is merged: the watching teacher would be sent heads covering
    // its own unwritten check-in.
    w.check_in(g, b, w.pupils[1], ScanMethod::PassScan);
    assert!(w.sim.deliver(g, true));
    for _ in 0..50 {
        if !(w.sim.deliver(t, false) || w.sim.deliver(t, true)) {
            break;
        }
    }
    assert!(
        w.sim.unacknowledged().iter().any(|(d, _, _)| *d == t),
        "the teacher's phone does not believe its unwritten check-in is held"
    );
    w.sim.faults.hold_server_io = false;
    w.sim.release_server_io();
    w.sim.settle();
    assert_eq!(w.sim.unacknowledged(), vec![]);
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(t), &b), None).arrived,
        2
    );
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 2);
}

/// Whatever the interleaving of frames, storage completions, reconnects and a server
/// crash, no device is ever told the server holds a change of its own before the server
/// was told it is written, while watching devices hear changes before they are written
/// (issue 6, ADR 0198). Checked after every step.
#[test]
fn no_device_is_told_its_change_is_held_before_it_is_written_whatever_the_interleaving() {
    for seed in 0..24 {
        let mut w = World::new(400 + seed, 60);
        let (t, g, b) = w.teacher_and_gate_on_a_booking();
        let g2 = w.gate(3);
        w.sim.set_online(g2, true);
        w.sim.want(g2, b);
        w.sim.settle();
        w.sim.faults = Faults {
            reorder: true,
            hold_server_io: true,
            read_together: seed % 2 == 0,
            ..Faults::default()
        };
        let writers = [
            (t, ScanMethod::Manual),
            (g, ScanMethod::PassScan),
            (g2, ScanMethod::PassScan),
        ];
        let pupils = w.pupils.clone();
        for (k, pupil) in pupils.iter().enumerate() {
            let (device, method) = writers[usize::try_from(w.sim.rng.below(3)).unwrap()];
            w.check_in(device, b, *pupil, method);
            for _ in 0..w.sim.rng.below(6) {
                w.sim.step();
                assert_eq!(
                    w.sim.acknowledged_unwritten(),
                    vec![],
                    "seed {seed}, check-in {k}"
                );
            }
            if k == pupils.len() / 2 && seed % 3 == 0 {
                w.sim.crash_server();
                w.sim.reconnect_all();
            } else if w.sim.rng.chance(30) {
                // A phone reconnects, perhaps while its change is being written.
                let (device, _) = writers[usize::try_from(w.sim.rng.below(3)).unwrap()];
                w.sim.set_online(device, false);
                w.sim.set_online(device, true);
            }
            assert_eq!(
                w.sim.acknowledged_unwritten(),
                vec![],
                "seed {seed}, check-in {k}"
            );
        }
        for _ in 0..100_000 {
            if !w.sim.step() {
                break;
            }
            assert_eq!(
                w.sim.acknowledged_unwritten(),
                vec![],
                "seed {seed}, draining"
            );
        }
        assert_eq!(w.sim.unacknowledged(), vec![], "seed {seed}");
        assert_eq!(
            attendance(&booking_on(&w.sim, None, &b), None).arrived,
            pupils.len(),
            "seed {seed}"
        );
    }
}

/// A steady stream of writes to one booking does not delay its acknowledgements beyond
/// the bound: frames that arrive after the document has been busy for longer are held
/// until the replies are out.
#[test]
fn a_busy_booking_acknowledges_within_the_bound_while_writes_keep_coming() {
    let mut w = World::new(73, 60);
    let (t, g, b) = w.teacher_and_gate_on_a_booking();
    w.sim.faults.hold_server_io = true;
    // The teacher's check-in starts an append that stays in flight.
    w.check_in(t, b, w.pupils[0], ScanMethod::Manual);
    assert!(w.sim.deliver(t, true));
    assert_eq!(w.sim.held_server_io(), 1);
    // Past the bound, the gate keeps writing.
    w.sim.advance(5_000);
    w.check_in(g, b, w.pupils[1], ScanMethod::PassScan);
    assert!(w.sim.deliver(g, true));
    assert_eq!(
        w.sim.held_server_io(),
        1,
        "the gate's frame waits: no new append joins the busy period"
    );
    // The first append completes: the teacher hears at once, before the gate's changes
    // start a new busy period.
    assert!(w.sim.release_one_server_io());
    while w.sim.deliver(t, false) {}
    assert!(
        !w.sim.unacknowledged().iter().any(|(d, _, _)| *d == t),
        "the teacher is acknowledged while the gate's frame still waits"
    );
    w.sim.run(10_000);
    assert_eq!(w.sim.unacknowledged(), vec![]);
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 2);
}

/// A device watching a booking keeps hearing changes after the server evicted and
/// reloaded it.
#[test]
fn a_watching_device_hears_changes_after_the_server_evicts_the_booking() {
    let mut w = World::new(79, 60);
    let (t, g, b) = w.teacher_and_gate_on_a_booking();
    // Idle for longer than the eviction time: the server drops the booking from memory.
    w.sim.advance(10 * 60 * 1000);
    w.sim.tick();
    assert!(w.sim.server.doc(&b).is_none(), "evicted");
    // The gate scans; the teacher, connected and only watching, hears it.
    w.check_in(g, b, w.pupils[3], ScanMethod::PassScan);
    w.sim.run(10_000);
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(t), &b), None).arrived,
        1,
        "the watching teacher's phone got the gate's scan without reconnecting"
    );
}

/// A change whose write fails once is written by the retry, whole, and only then
/// acknowledged: the retry reads the change again from the document.
#[test]
fn a_write_that_fails_once_is_retried_and_then_acknowledged() {
    let mut w = World::new(84, 60);
    let (t, _g1, b) = w.teacher_and_gate_on_a_booking();
    w.sim.settle();
    let stored_before = w.sim.server.store.docs[&b].changes.len();
    w.sim.faults.hold_server_io = true;
    w.sim.server.store.failing = true;
    w.check_in(t, b, w.pupils[1], ScanMethod::Manual);
    assert!(w.sim.deliver(t, true));
    assert_eq!(w.sim.held_server_io(), 1);
    assert!(w.sim.release_newest_server_io(), "the first write fails");
    assert_eq!(w.sim.held_server_io(), 1, "and is tried again");
    while w.sim.deliver(t, false) || w.sim.deliver(t, true) {}
    assert!(
        w.sim.unacknowledged().iter().any(|(d, _, _)| *d == t),
        "nothing acknowledged while the write is failing"
    );
    w.sim.server.store.failing = false;
    assert!(w.sim.release_newest_server_io(), "the retry is written");
    w.sim.faults.hold_server_io = false;
    w.sim.settle();
    assert!(!w.sim.unacknowledged().iter().any(|(d, _, _)| *d == t));
    let stored = &w.sim.server.store.docs[&b].changes;
    assert_eq!(
        stored.len(),
        stored_before + 1,
        "the check-in is stored once"
    );
    let mut reloaded = automerge::Automerge::new();
    for bytes in stored.values() {
        reloaded.load_incremental(bytes).unwrap();
    }
    assert_eq!(
        reloaded.get_heads(),
        w.sim.server.doc(&b).unwrap().get_heads(),
        "the stored changes are the document's"
    );
}

/// A completion from before a storage failure must not count for the reloaded document:
/// the server would acknowledge heads that are not stored yet.
#[test]
fn a_stale_completion_after_a_storage_failure_acknowledges_nothing() {
    let mut w = World::new(83, 60);
    let (t, g1, b) = w.teacher_and_gate_on_a_booking();
    w.sim.faults.hold_server_io = true;
    // The gate's change is stored, but its completion is slow (the stale one).
    w.check_in(g1, b, w.pupils[0], ScanMethod::PassScan);
    assert!(w.sim.deliver(g1, true));
    // The teacher's change fails to store, every retry too: the booking leaves memory.
    w.sim.server.store.failing = true;
    w.check_in(t, b, w.pupils[1], ScanMethod::Manual);
    assert!(w.sim.deliver(t, true));
    assert_eq!(w.sim.held_server_io(), 2);
    for _ in 0..4 {
        assert!(w.sim.release_newest_server_io());
    }
    assert!(
        w.sim.server.doc(&b).is_none(),
        "dropped after the last retry"
    );
    assert_eq!(
        w.sim.held_server_io(),
        1,
        "the gate's completion is still out"
    );
    w.sim.server.store.failing = false;
    // Another gate opens the booking: the server loads it again.
    let g2 = w.gate(3);
    w.sim.set_online(g2, true);
    while w.sim.deliver(g2, true) || w.sim.deliver(g2, false) {}
    w.sim.want(g2, b);
    assert!(w.sim.deliver(g2, true));
    assert!(w.sim.release_newest_server_io(), "the load");
    while w.sim.deliver(g2, true) || w.sim.deliver(g2, false) {}
    // Its check-in starts a new append, still in flight when the stale completion lands.
    w.check_in(g2, b, w.pupils[2], ScanMethod::PassScan);
    assert!(w.sim.deliver(g2, true));
    assert_eq!(w.sim.held_server_io(), 2);
    assert!(w.sim.release_one_server_io(), "the stale completion");
    while w.sim.deliver(g2, false) || w.sim.deliver(g2, true) {}
    assert!(
        w.sim.unacknowledged().iter().any(|(d, _, _)| *d == g2),
        "nothing acknowledged before its own append is written"
    );
    assert!(w.sim.release_one_server_io());
    while w.sim.deliver(g2, false) || w.sim.deliver(g2, true) {}
    assert!(!w.sim.unacknowledged().iter().any(|(d, _, _)| *d == g2));
    w.sim.faults.hold_server_io = false;
    w.sim.settle();
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 3);
}

/// Sync states are saved while they move, not only at disconnect: after a crash the
/// device resumes from a recent state.
#[test]
fn sync_states_are_saved_while_connected() {
    let mut w = World::new(89, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    for p in w.pupils.clone() {
        w.check_in(t, b, p, ScanMethod::Manual);
    }
    w.sim.run(10_000);
    w.sim.advance(6_000);
    w.sim.tick();
    let heads = w.sim.server.doc(&b).unwrap().get_heads();
    let saved = w.sim.server.store.docs[&b]
        .sync_states
        .get(&format!("storage-{}", w.sim.device_id(t)))
        .map(|s| automerge::sync::State::decode(s).unwrap().shared_heads);
    assert_eq!(
        saved,
        Some(heads),
        "the teacher's state is saved with the heads it has acknowledged, while connected"
    );
}

#[test]
fn a_pupil_taking_the_teachers_next_sequence_number_is_refused_and_the_teachers_offline_check_ins_land()
 {
    let mut w = World::new(23, 60);
    let t = w.teacher(1);
    let p0 = w.pupils[0];
    let phone = w.pupil_phone(2, p0);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.settle();
    w.sim.want(phone, b);
    w.sim.settle();
    // The teacher goes on a trip with no network and ticks two pupils off.
    w.sim.set_online(t, false);
    w.check_in(t, b, w.pupils[1], ScanMethod::Manual);
    w.check_in(t, b, w.pupils[2], ScanMethod::Manual);
    // Meanwhile the pupil's tampered app reads the teacher's actor id from the booking's
    // history and writes an empty change under it, with the teacher's next sequence number.
    let copy = w.sim.devices[phone]
        .doc(&b)
        .expect("the pupil reads the booking");
    let teacher_actor = w.sim.devices[t].doc(&b).unwrap().get_actor().clone();
    assert!(
        copy.get_changes(&[])
            .iter()
            .any(|c| c.actor_id() == &teacher_actor),
        "the teacher's actor id is in the history every rostered pupil reads"
    );
    let mut forged = copy.fork();
    forged.set_actor(teacher_actor);
    let hash = forged.empty_commit(automerge::transaction::CommitOptions::default());
    let change = forged.get_change_by_hash(&hash).unwrap();
    let data = automerge::sync::Message {
        heads: forged.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: automerge::sync::ChunkList::from(vec![change.raw_bytes().to_vec()]),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode();
    let frame = kepu_sync_core::wire::Message::Sync {
        sender_id: "pupil".into(),
        target_id: "server".into(),
        document_id: b,
        data,
    };
    w.sim.send_raw(phone, frame.encode());
    w.sim.run(10_000);
    let refusal = w
        .sim
        .server
        .refusals()
        .next()
        .expect("the server refused it");
    assert_eq!(refusal.code, RefusalCode::ForeignActor);
    assert!(
        w.sim
            .server
            .doc(&b)
            .unwrap()
            .get_change_by_hash(&hash)
            .is_none(),
        "the forged change was not merged"
    );
    // The teacher comes back: the offline check-ins land and are counted.
    w.sim.settle();
    assert_eq!(attendance(&booking_on(&w.sim, None, &b), None).arrived, 2);
    assert_eq!(
        attendance(&booking_on(&w.sim, Some(phone), &b), None).arrived,
        2,
        "and reach the pupil's phone"
    );
    // The claim outlives a server restart.
    w.sim.crash_server();
    w.sim.send_raw(phone, frame.encode());
    w.sim.settle();
    w.sim.send_raw(phone, frame.encode());
    w.sim.run(10_000);
    assert!(
        w.sim
            .server
            .refusals()
            .any(|r| r.code == RefusalCode::ForeignActor),
        "refused again after a restart"
    );
}

/// A booking made while the phone is connected reaches the server on that connection.
#[test]
fn a_booking_made_while_connected_is_sent_without_reconnecting() {
    let mut w = World::new(97, 60);
    let t = w.teacher(1);
    w.sim.set_online(t, true);
    w.sim.run(1_000);
    let b = w.book(t, 30, w.pupils.clone());
    w.sim.run(10_000);
    assert!(
        w.sim
            .server
            .doc(&b)
            .is_some_and(|d| !d.get_heads().is_empty()),
        "the server has the booking"
    );
    assert_eq!(w.sim.unacknowledged(), vec![]);
}

#[test]
fn a_document_is_compacted_only_once_its_new_rows_outweigh_its_snapshot() {
    let mut w = World::new(83, 60);
    let t = w.teacher(1);
    let b = w.book(t, 30, w.pupils.clone());
    let pupils = w.pupils.clone();
    // A day's worth of check-ins in one sync: stored as rows, then folded into a snapshot.
    for i in 0..600 {
        w.check_in(t, b, pupils[i % pupils.len()], ScanMethod::Manual);
    }
    w.sim.settle();
    let stored = |w: &World| {
        let d = &w.sim.server.store.docs[&b];
        let bytes: usize = d.changes.values().map(Vec::len).sum();
        (d.snapshot.clone(), d.changes.len(), bytes)
    };
    assert!(stored(&w).0.is_some(), "the large sync was compacted");
    // Then one check-in per sync: the rows pile up past the row count until they weigh
    // as much as the snapshot, and only then are they folded into a new one.
    let mut most_rows_kept = 0;
    let mut compacted_again = false;
    for i in 0..600 {
        let (snapshot, rows, bytes) = stored(&w);
        let snapshot = snapshot.expect("a snapshot");
        w.check_in(t, b, pupils[i % pupils.len()], ScanMethod::Manual);
        w.sim.settle();
        if stored(&w).0.as_ref() != Some(&snapshot) {
            // One more row (well under 2 KB) came in with the step that compacted.
            assert!(rows + 1 >= 64, "compacted at {} rows", rows + 1);
            assert!(
                bytes + 2_000 >= snapshot.len(),
                "compacted with {bytes} bytes of rows against a {}-byte snapshot",
                snapshot.len()
            );
            compacted_again = true;
            break;
        }
        most_rows_kept = most_rows_kept.max(rows + 1);
    }
    assert!(
        most_rows_kept > 64,
        "64 rows alone do not compact a large document (kept at most {most_rows_kept})"
    );
    assert!(compacted_again, "the rows are folded in eventually");
    // The new snapshot loads and holds every check-in: 600 + the ones after.
    let doc = automerge::Automerge::load(&stored(&w).0.expect("a snapshot")).expect("loads");
    let read = kepu_sync_core::schema::booking::Booking::read(&doc).expect("a booking");
    assert!(read.check_ins.len() > 600 + 64);
}
