//! A booking's records written change by change hold exactly the rows that writing them
//! whole would (ADR 0180): the server writes only the rows that changed since its own
//! last write, and every row when someone else wrote the booking's records in between.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge};
use kepu_server::records::{project, write};
use kepu_server::store::Store;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId};
use kepu_sync_core::schema::booking::{ScanMethod, Status};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

use crate::stored_rows::{MIN, SCHOOL, SLOT, T, VENUE, pupil, records_tables, writer};
use crate::support::{Db, TestDb};

crate::support::on_both_databases!(
    db: a_booking_written_change_by_change_holds_the_rows_of_a_whole_write,
    another_writer_in_between_makes_the_next_write_replace_every_row
);

const BOOKING: [u8; 16] = [0xb1; 16];

fn apply(doc: &mut Automerge, who: &Writer, at: i64, edit: &Edit) {
    doc.set_actor(ActorId::from(who.device.as_bytes().as_slice()));
    apply_unchecked(doc, who, at, edit).expect("edit applies");
}

fn scan(pupil: PupilId, id: &str) -> Edit {
    Edit::CheckIn {
        pupil,
        scan_id: id.into(),
        method: ScanMethod::Manual,
        proof: None,
    }
}

fn venue() -> (DocumentId, Automerge) {
    let server = Writer::server(DeviceId(Uuid::from_u128(0x5e_0002)));
    let gate = writer(2, Role::VenueStaff);
    let mut doc = Automerge::new();
    apply(&mut doc, &server, T, &Edit::CreateVenue { venue: VENUE });
    apply(
        &mut doc,
        &gate,
        T + MIN,
        &Edit::PutSlot {
            slot: SLOT,
            start: T + 60 * MIN,
            end: T + 180 * MIN,
            capacity: 40,
            label: "上午场".into(),
        },
    );
    (DocumentId::from_bytes(*VENUE.as_bytes()), doc)
}

/// The booking after each step of its day: scans arriving out of order (an earlier scan
/// of a pupil arriving later takes over as the one that counts), a walk-in (an anomaly),
/// a check-out, a pupil added and one removed from the roster.
fn day() -> Vec<Automerge> {
    let server = Writer::server(DeviceId(Uuid::from_u128(0x5e_0002)));
    let teacher = writer(1, Role::Teacher);
    let gate = writer(2, Role::VenueStaff);
    let gate2 = writer(3, Role::VenueStaff);
    let steps: Vec<Vec<(&Writer, i64, Edit)>> = vec![
        vec![
            (
                &teacher,
                T,
                Edit::CreateBooking {
                    venue: VENUE,
                    slot: SLOT,
                    school: SCHOOL,
                    party_size: 4,
                    roster: vec![pupil(1), pupil(2), pupil(3), pupil(4)],
                },
            ),
            (
                &server,
                T + MIN,
                Edit::Decide {
                    status: Status::Confirmed,
                    wait_position: None,
                },
            ),
        ],
        vec![
            (&gate, T + 58 * MIN, scan(pupil(1), "g-1")),
            (&gate, T + 59 * MIN, scan(pupil(2), "g-2")),
        ],
        // The second gate's phone was offline: its scans are earlier.
        vec![
            (&gate2, T + 55 * MIN, scan(pupil(1), "h-1")),
            (&gate2, T + 56 * MIN, scan(pupil(3), "h-2")),
        ],
        vec![(&gate, T + 61 * MIN, scan(pupil(9), "g-3"))],
        vec![
            (
                &gate,
                T + 170 * MIN,
                Edit::CheckOut {
                    pupil: pupil(1),
                    scan_id: "g-4".into(),
                    method: ScanMethod::Manual,
                },
            ),
            (
                &teacher,
                T + 100 * MIN,
                Edit::AddToRoster {
                    pupils: vec![pupil(5)],
                },
            ),
        ],
        vec![(&gate2, T + 62 * MIN, scan(pupil(5), "h-3"))],
        vec![(
            &teacher,
            T + 120 * MIN,
            Edit::RemoveFromRoster { pupil: pupil(4) },
        )],
        vec![(&gate, T + 121 * MIN, scan(pupil(3), "g-5"))],
    ];
    let mut doc = Automerge::new();
    let mut out = Vec::new();
    for step in steps {
        for (who, at, edit) in step {
            apply(&mut doc, who, at, &edit);
        }
        out.push(doc.clone());
    }
    out
}

fn kind(db: &TestDb) -> Db {
    if db.data_dir().is_some() {
        Db::Sqlite
    } else {
        Db::Postgres
    }
}

type Tables = BTreeMap<String, Vec<BTreeMap<String, Option<String>>>>;

/// The records of `doc` written whole into a database of their own.
async fn written_whole(db: &TestDb, venue: &(DocumentId, Automerge), doc: &Automerge) -> Tables {
    let reference = TestDb::new(kind(db)).await;
    write(
        &reference.store,
        venue.0,
        &project(venue.0, &venue.1),
        None,
        T,
    )
    .await
    .unwrap();
    let id = DocumentId::from_bytes(BOOKING);
    write(&reference.store, id, &project(id, doc), None, T)
        .await
        .unwrap();
    let tables = records_tables(&reference, kind(db)).await;
    reference.finish().await;
    tables
}

async fn write_booking(store: &Store, doc: &Automerge) {
    let id = DocumentId::from_bytes(BOOKING);
    write(store, id, &project(id, doc), None, T)
        .await
        .expect("records written");
}

fn rows_written(store: &Store, how: &str) -> u64 {
    store.records_rows_written().with_label_values(&[how]).get()
}

async fn a_booking_written_change_by_change_holds_the_rows_of_a_whole_write(db: &TestDb) {
    let venue = venue();
    write(&db.store, venue.0, &project(venue.0, &venue.1), None, T)
        .await
        .unwrap();
    let day = day();
    for (step, doc) in day.iter().enumerate() {
        write_booking(&db.store, doc).await;
        assert_eq!(
            records_tables(db, kind(db)).await,
            written_whole(db, &venue, doc).await,
            "the records after step {step} differ from a whole write"
        );
    }
    let changed = rows_written(&db.store, "changed");
    let everything = rows_written(&db.store, "everything");
    assert!(changed > 0, "no write held only the changed rows");
    // The first write and the one after a pupil left the roster write every row; the
    // others only what changed.
    assert!(
        changed < everything,
        "{changed} changed rows against {everything} rows written whole"
    );
}

async fn another_writer_in_between_makes_the_next_write_replace_every_row(db: &TestDb) {
    let venue = venue();
    write(&db.store, venue.0, &project(venue.0, &venue.1), None, T)
        .await
        .unwrap();
    let day = day();
    // A second node on the same database.
    let other = Store::open(&db.url, None).await.expect("second store");
    write_booking(&db.store, &day[1]).await;
    write_booking(&db.store, &day[3]).await;
    // The other node still had the booking at an earlier step.
    write_booking(&other, &day[1]).await;
    let everything = rows_written(&db.store, "everything");
    write_booking(&db.store, &day[5]).await;
    assert_eq!(
        records_tables(db, kind(db)).await,
        written_whole(db, &venue, &day[5]).await,
        "the records hold rows of another node's older write"
    );
    assert!(
        rows_written(&db.store, "everything") > everything,
        "the write after another node's did not replace every row"
    );
    // A rebuild in between (the admin command clears every record) too.
    other.clear_records().await.unwrap();
    write(&other, venue.0, &project(venue.0, &venue.1), None, T)
        .await
        .unwrap();
    write_booking(&db.store, &day[6]).await;
    assert_eq!(
        records_tables(db, kind(db)).await,
        written_whole(db, &venue, &day[6]).await,
        "the records after a rebuild in between differ from a whole write"
    );
    other.close().await;
}
