//! Who may see and write what on a real server: volunteer hours per venue, documents at
//! ids the server derives, and a refusals table no device can fill.

use std::time::Duration;

use automerge::Automerge;
use kepu_server::accounts::Role;
use kepu_server::clock::now_ms;
use kepu_server::ids::new_id;
use kepu_server::store::{MAX_DETAIL_CHARS, MAX_REFUSALS_PER_DEVICE, Refusal};
use kepu_server::sync::documents::{DerivedRegistry, misplaced, venue_doc};
use kepu_sync_core::calendar::china_year;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::engine::{Event, StorageTask, StoredChange};
use kepu_sync_core::ids::{SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::validate::RefusalCode;
use kepu_sync_core::writer::Writer;
use uuid::Uuid;

use crate::support::{Db, TestDb, TestServer, place, user};
use crate::sync_client::Device;
use crate::world::{Enroller, new_doc};

async fn sync_until_stored(device: &mut Device, addr: std::net::SocketAddr, doc: DocumentId) {
    for attempt in 1..=50 {
        device.sync(addr).await;
        if device.server_has_all(&doc) {
            return;
        }
        if attempt % 10 == 0 {
            // The client engine offers a document created while connected only at the
            // next connection (it fans out to the document's peers, and a new document
            // has none yet), as phones do when they reconnect.
            device.disconnect();
        }
    }
    panic!(
        "the server never acknowledged {doc}: {:?}",
        device.events.iter().rev().take(12).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn venue_staff_see_only_hours_logged_at_their_own_venue() {
    let server = TestServer::start(Db::Sqlite).await;
    let p = place(&server.db.store).await;
    let enroller = Enroller::new(&server.db.store, server.addr);
    let mut volunteer = enroller
        .device(Role::Volunteer, Some(p.school), None, 41)
        .await;
    let log = new_doc();
    volunteer.edit(
        log,
        Edit::CreateActivityLog {
            volunteer: volunteer.engine.config().writer.user,
            school: Some(SchoolId(p.school)),
        },
    );
    let elsewhere = VenueId(Uuid::from_u128(0xE15E));
    for (id, venue, minutes) in [("here", VenueId(p.venue), 60), ("there", elsewhere, 45)] {
        volunteer.edit(
            log,
            Edit::LogActivity {
                activity_id: id.into(),
                venue,
                activity_kind: "guided_tour".into(),
                start: now_ms(),
                minutes,
                description: String::new(),
            },
        );
    }
    sync_until_stored(&mut volunteer, server.addr, log).await;

    let admin = enroller.admin_token().await;
    let staff_user = user(
        &server.db.store,
        Role::VenueStaff,
        None,
        Some(p.venue),
        None,
    )
    .await;
    let staff = enroller.enroll(staff_user).await.1;
    let mut all = serde_json::Value::Null;
    for _ in 0..100 {
        all = enroller.get_json("/api/volunteers/hours", &admin).await;
        if all["volunteers"][0]["activities"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all["volunteers"][0]["unconfirmed_minutes"], 105, "{all}");
    let seen = enroller.get_json("/api/volunteers/hours", &staff).await;
    let rows = seen["volunteers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{seen}");
    assert_eq!(rows[0]["activities"], 1, "only the activity at their venue");
    assert_eq!(rows[0]["unconfirmed_minutes"], 60);
    // Another venue's staff see nothing of it.
    let other = server
        .db
        .store
        .create_venue(new_id(), p.county, "株洲科技馆", "science_museum")
        .await
        .unwrap()
        .id;
    let other_user = user(&server.db.store, Role::VenueStaff, None, Some(other), None).await;
    let other_token = enroller.enroll(other_user).await.1;
    let none = enroller
        .get_json("/api/volunteers/hours", &other_token)
        .await;
    assert_eq!(none["volunteers"], serde_json::json!([]));
    server.finish().await;
}

#[tokio::test]
async fn a_teacher_cannot_take_another_schools_log_id_for_next_year() {
    let server = TestServer::start(Db::Sqlite).await;
    let p = place(&server.db.store).await;
    let other_school = server
        .db
        .store
        .create_school(new_id(), p.county, "麓山小学")
        .await
        .unwrap()
        .id;
    // Once the server has created both schools' logs for this year, it knows their ids.
    let year = china_year(now_ms());
    for _ in 0..100 {
        let ids: Vec<DocumentId> = server
            .db
            .store
            .document_ids()
            .await
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        if [p.school, other_school]
            .iter()
            .all(|s| ids.contains(&DocumentId::school_log(SchoolId(*s), year)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enroller = Enroller::new(&server.db.store, server.addr);
    let mut teacher = enroller
        .device(Role::Teacher, Some(p.school), None, 43)
        .await;
    let targets = [
        DocumentId::school_log(SchoolId(other_school), year + 1),
        DocumentId::school_log(SchoolId(p.school), year + 3),
    ];
    for target in targets {
        teacher.edit(
            target,
            Edit::CreateBooking {
                venue: VenueId(p.venue),
                slot: SlotId(Uuid::from_u128(7)),
                school: SchoolId(p.school),
                party_size: 3,
                roster: vec![],
            },
        );
    }
    // The logs do not exist yet: creating them is refused. The venue's document exists
    // (the server made it), so the "creation" is a write into it, refused as well.
    let refusal = |t: &Device, doc: DocumentId| {
        t.events.iter().find_map(|e| match e {
            Event::Refused {
                doc: d, refusal, ..
            } if *d == doc => Some(refusal.code.clone()),
            _ => None,
        })
    };
    for _ in 0..20 {
        teacher.sync(server.addr).await;
        if targets.iter().all(|t| refusal(&teacher, *t).is_some()) {
            break;
        }
    }
    assert_eq!(
        targets[..2]
            .iter()
            .map(|t| refusal(&teacher, *t))
            .collect::<Vec<_>>(),
        vec![Some(RefusalCode::MayNotCreate); 2],
        "{:?}",
        teacher.events
    );
    let stored: Vec<(DocumentId, String)> = server.db.store.document_ids().await.unwrap();
    for target in targets {
        assert!(
            stored
                .iter()
                .all(|(d, kind)| *d != target || kind != "booking"),
            "no booking stored at a derived id"
        );
    }
    // An ordinary booking still goes through.
    let ordinary = new_doc();
    teacher.edit(
        ordinary,
        Edit::CreateBooking {
            venue: VenueId(p.venue),
            slot: SlotId(Uuid::from_u128(7)),
            school: SchoolId(p.school),
            party_size: 3,
            roster: vec![],
        },
    );
    sync_until_stored(&mut teacher, server.addr, ordinary).await;
    server.finish().await;
}

/// A booking stored at a venue's derived id (as a device could before creation at
/// derived ids was refused) is reported and never taken for the venue's document.
async fn a_document_of_the_wrong_kind_at_a_derived_id_is_reported(db: &TestDb) {
    let p = place(&db.store).await;
    let squatted = venue_doc(VenueId(p.venue));
    let mut booking = Automerge::new();
    let teacher = Writer {
        device: kepu_sync_core::ids::DeviceId(Uuid::from_u128(5)),
        user: UserId(Uuid::from_u128(6)),
        role: kepu_sync_core::writer::Role::Teacher,
        school: Some(SchoolId(p.school)),
        venue: None,
        pupil: None,
    };
    apply_unchecked(
        &mut booking,
        &teacher,
        now_ms(),
        &Edit::CreateBooking {
            venue: VenueId(p.venue),
            slot: SlotId(Uuid::from_u128(7)),
            school: SchoolId(p.school),
            party_size: 3,
            roster: vec![],
        },
    )
    .unwrap();
    let changes: Vec<StoredChange> = booking
        .get_changes(&[])
        .into_iter()
        .map(|c| StoredChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
        .collect();
    let append = StorageTask::Append {
        doc: squatted,
        kind: Some(DocKind::Booking),
        changes,
        heads: booking.get_heads(),
        owners: Vec::new(),
    };
    db.store
        .run_document_tasks(&[&append], now_ms())
        .await
        .unwrap();
    let registry = DerivedRegistry::new();
    registry.refresh(vec![SchoolId(p.school)], vec![VenueId(p.venue)], 2026);
    let found = misplaced(&db.store, &registry).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].doc, squatted);
    assert_eq!(found[0].expected, DocKind::Venue);
    assert_eq!(found[0].found, "booking");
}

/// A device whose changes keep being refused, with long paths, leaves a bounded trace.
async fn refusals_are_bounded_per_device_and_in_length(db: &TestDb) {
    let accounts = kepu_server::accounts::Accounts::new(db.store.clone());
    let admin = user(&db.store, Role::BureauAdmin, None, None, None).await;
    let code = accounts.issue_enrollment_code(admin, 7).await.unwrap();
    let enrolled = accounts.enroll(code.code.expose(), None).await.unwrap();
    let device = enrolled.device_id.0;
    let total = usize::try_from(MAX_REFUSALS_PER_DEVICE).unwrap() + 20;
    let long = format!("unknown-field at check_ins/{}", "x".repeat(100_000));
    for i in 0..total {
        let refusal = Refusal {
            id: new_id(),
            device_id: device,
            doc_id: "4NMNnkMhL8jXrdJ9jamS58PAVdXu".into(),
            code: "unknown-field".into(),
            detail: long.clone(),
            at: 1_000 + i64::try_from(i).unwrap(),
        };
        db.store.record_refusal(&refusal).await.unwrap();
    }
    let kept = db.store.refusals_of_device(device).await.unwrap();
    assert_eq!(
        kept.len(),
        usize::try_from(MAX_REFUSALS_PER_DEVICE).unwrap()
    );
    assert_eq!(kept[0].at, 1_020, "the oldest are dropped");
    assert!(
        kept.iter()
            .all(|r| r.detail.chars().count() <= MAX_DETAIL_CHARS)
    );
    let record = db.store.device(device).await.unwrap().unwrap();
    assert_eq!(record.pending_refusals, MAX_REFUSALS_PER_DEVICE);
}

crate::support::on_both_databases!(
    db:
    a_document_of_the_wrong_kind_at_a_derived_id_is_reported,
    refusals_are_bounded_per_device_and_in_length,
);
