//! Gate proofs copied from a classmate's check-in, on the simulator: every rostered pupil
//! reads the booking, and with it every check-in's proof and time.

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::proof::{
    GateDayCert, GateSigner, ServerSigner, gate_public_key, utc_day, verify_gate_code,
};
use kepu_sync_core::rules::attendance::{AnomalyKind, attendance};
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use kepu_sync_core::sim::Sim;
use kepu_sync_core::validate::RefusalCode;
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

const HOUR: i64 = 3_600_000;

struct Class {
    sim: Sim,
    signer: ServerSigner,
    venue: VenueId,
    booking: DocumentId,
    pupils: [PupilId; 2],
    phones: [usize; 2],
}

fn writer(n: u128, role: Role, pupil: Option<PupilId>) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(1000 + n)),
        user: UserId(Uuid::from_u128(2000 + n)),
        role,
        school: Some(SchoolId(Uuid::from_u128(10))),
        venue: None,
        pupil,
    }
}

/// A confirmed-looking booking of two pupils, each with a phone holding it; the server
/// verifies proofs when `checks`.
fn class(seed: u64, checks: bool) -> Class {
    let signer = ServerSigner::from_seed([9; 32]);
    let mut sim = Sim::new(seed, Writer::server(DeviceId(Uuid::from_u128(1))));
    if checks {
        sim.set_server_proof_checks(signer.public(), None);
    }
    let venue = VenueId(Uuid::from_u128(20));
    let pupils = [PupilId(Uuid::from_u128(100)), PupilId(Uuid::from_u128(101))];
    let teacher = sim.add_device(writer(1, Role::Teacher, None));
    let booking = sim.new_doc_id();
    sim.edit(
        teacher,
        booking,
        Edit::CreateBooking {
            venue,
            slot: SlotId(Uuid::from_u128(30)),
            school: SchoolId(Uuid::from_u128(10)),
            party_size: 2,
            roster: pupils.to_vec(),
        },
    );
    sim.settle();
    let phones = [
        sim.add_device(writer(2, Role::Pupil, Some(pupils[0]))),
        sim.add_device(writer(3, Role::Pupil, Some(pupils[1]))),
    ];
    for p in phones {
        sim.want(p, booking);
    }
    sim.settle();
    Class {
        sim,
        signer,
        venue,
        booking,
        pupils,
        phones,
    }
}

fn gate(signer: &ServerSigner, venue: VenueId, now: i64) -> GateSigner {
    let seed = [3u8; 32];
    let cert = signer.certify_gate(GateDayCert {
        venue,
        day: utc_day(now).unwrap(),
        gate_key: gate_public_key(&seed),
        expires_ms: now + 24 * HOUR,
    });
    GateSigner::new(seed, cert).unwrap()
}

impl Class {
    /// Phone `i` scans the gate code shown now and checks its pupil in.
    fn scan_gate(&mut self, i: usize) {
        let now = self.sim.now;
        let code = gate(&self.signer, self.venue, now).code_at(now);
        let proof = verify_gate_code(&code, &self.signer.public(), now, Some(self.venue))
            .expect("the phone verifies offline");
        let scan_id = self.sim.new_entry_id();
        self.sim.edit(
            self.phones[i],
            self.booking,
            Edit::CheckIn {
                pupil: self.pupils[i],
                scan_id,
                method: ScanMethod::GateCode,
                proof: Some(proof.encode()),
            },
        );
    }

    /// Phone `i` (a tampered app) writes a check-in of its own pupil carrying `proof`,
    /// claiming the scan time `at`.
    fn check_in_with(&mut self, i: usize, proof: String, at: i64) {
        let scan_id = self.sim.new_entry_id();
        let now = self.sim.now;
        self.sim.now = at;
        self.sim.edit_unchecked(
            self.phones[i],
            self.booking,
            &Edit::CheckIn {
                pupil: self.pupils[i],
                scan_id,
                method: ScanMethod::GateCode,
                proof: Some(proof),
            },
        );
        self.sim.now = now.max(at);
    }

    fn on_server(&self) -> Booking {
        Booking::read(self.sim.server.doc(&self.booking).unwrap()).unwrap()
    }
}

#[test]
fn two_pupils_who_scan_the_same_gate_code_both_count() {
    let mut c = class(71, true);
    c.scan_gate(0);
    c.sim.now += 2_000;
    c.scan_gate(1);
    c.sim.settle();
    assert!(c.sim.server.refusals().next().is_none());
    let b = c.on_server();
    assert_eq!(attendance(&b, None).arrived, 2);
    let proofs: Vec<_> = b.check_ins.iter().map(|s| s.proof.clone()).collect();
    assert_ne!(proofs[0], proofs[1], "each proof is bound to its own pupil");
    assert!(
        attendance(&b, None)
            .anomalies
            .iter()
            .all(|a| a.kind != AnomalyKind::SharedProof)
    );
}

#[test]
fn a_proof_and_time_copied_from_a_classmate_are_refused() {
    let mut c = class(73, true);
    c.scan_gate(0);
    c.sim.settle();
    // The classmate's phone has the booking with pupil 0's check-in in it.
    let seen = Booking::read(c.sim.devices[c.phones[1]].doc(&c.booking).unwrap()).unwrap();
    let original = seen.check_ins[0].clone();
    assert_eq!(original.pupil, c.pupils[0]);
    // Later the same day, absent, it copies proof and time into a check-in of its own.
    c.sim.now += 3 * HOUR;
    c.check_in_with(1, original.proof.clone().unwrap(), original.at);
    c.sim.settle();
    assert_eq!(
        c.sim
            .server
            .refusals()
            .map(|r| r.code.clone())
            .collect::<Vec<_>>(),
        vec![RefusalCode::BadProof]
    );
    let a = attendance(&c.on_server(), None);
    assert_eq!(a.arrived, 1, "the copied check-in does not count");
    assert_eq!(a.missing, vec![c.pupils[1]]);
}

#[test]
fn an_unbound_gate_proof_is_refused() {
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT, ReadDoc};
    use kepu_sync_core::validate::{ProofCheck, validate_patches_with};
    // A tampered app stores the gate proof as scanned (`KPE1.`), which any classmate
    // could copy: the server refuses it even though the gate's signature is genuine.
    let signer = ServerSigner::from_seed([9; 32]);
    let venue = VenueId(Uuid::from_u128(20));
    let pupil = PupilId(Uuid::from_u128(100));
    let phone = writer(2, Role::Pupil, Some(pupil));
    let mut doc = Automerge::new();
    kepu_sync_core::edits::apply_unchecked(
        &mut doc,
        &writer(1, Role::Teacher, None),
        1_767_225_600_000,
        &Edit::CreateBooking {
            venue,
            slot: SlotId(Uuid::from_u128(30)),
            school: SchoolId(Uuid::from_u128(10)),
            party_size: 1,
            roster: vec![pupil],
        },
    )
    .unwrap();
    let now = 1_767_225_700_000;
    let code = gate(&signer, venue, now).code_at(now);
    let plain = verify_gate_code(&code, &signer.public(), now, Some(venue)).unwrap();
    let checks = ProofCheck {
        server_key: Some(signer.public()),
        ..ProofCheck::default()
    };
    let write = |proof: String| {
        let mut d = doc.fork();
        let before = d.get_heads();
        let mut tx = d.transaction();
        let ins = tx.get(ROOT, "check_ins").unwrap().unwrap().1;
        let per = tx
            .put_object(
                &ins,
                format!("{pupil}/{}", phone.device),
                automerge::ObjType::Map,
            )
            .unwrap();
        let rec = tx.put_object(&per, "s1", automerge::ObjType::Map).unwrap();
        tx.put(&rec, "at", automerge::ScalarValue::Timestamp(now))
            .unwrap();
        tx.put(&rec, "method", "gate_code").unwrap();
        tx.put(&rec, "by", phone.user.to_string()).unwrap();
        tx.put(&rec, "proof", proof).unwrap();
        tx.commit();
        let patches = d.diff(&before, &d.get_heads());
        validate_patches_with(&d, &before, &patches, &phone, &checks).map_err(|r| r.code)
    };
    assert_eq!(write(plain.encode()), Err(RefusalCode::BadProof));
    let bound = plain.bind(pupil, phone.device, now).unwrap().encode();
    assert_eq!(write(bound), Ok(()));
}

#[test]
fn one_proof_used_by_several_pupils_is_an_anomaly() {
    // A server without proof checks (as before proofs were bound) accepts the copy; the
    // records flag both scans.
    let mut c = class(83, false);
    c.scan_gate(0);
    c.sim.settle();
    let seen = Booking::read(c.sim.devices[c.phones[1]].doc(&c.booking).unwrap()).unwrap();
    let original = seen.check_ins[0].clone();
    c.check_in_with(1, original.proof.unwrap(), original.at);
    c.sim.settle();
    let a = attendance(&c.on_server(), None);
    assert_eq!(a.arrived, 2);
    let shared: Vec<PupilId> = a
        .anomalies
        .iter()
        .filter(|x| x.kind == AnomalyKind::SharedProof)
        .map(|x| x.pupil)
        .collect();
    assert_eq!(shared, c.pupils.to_vec());
}
