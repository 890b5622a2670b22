//! The records the server stores for a fixed set of documents (a venue with a slot, a
//! confirmed booking with check-ins, a walk-in and a check-out, a volunteer's log, a
//! school's year), read back from every `proj_` table as text, as one snapshot. Both
//! databases must store the same rows, so both compare with the same snapshot; a change
//! of what the records hold is a visible diff (see CONTRIBUTING.md, "Snapshots").

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge};
use kepu_server::records::{project, write};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::booking::{ScanMethod, Status};
use kepu_sync_core::writer::{Role, Writer};
use sqlx::{Connection, Row};
use uuid::Uuid;

use crate::support::{Db, TestDb};

crate::support::on_both_databases!(db: the_records_of_a_fixed_day_are_stored_as_before);

/// 2026-03-02 09:00 China time.
pub(crate) const T: i64 = 1_772_413_200_000;
pub(crate) const MIN: i64 = 60_000;
pub(crate) const SCHOOL: SchoolId = SchoolId(Uuid::from_u128(0x5c_0001));
pub(crate) const VENUE: VenueId = VenueId(Uuid::from_u128(0x7e_0001));
pub(crate) const SLOT: SlotId = SlotId(Uuid::from_u128(0x51_0001));

pub(crate) fn pupil(n: u128) -> PupilId {
    PupilId(Uuid::from_u128(0x90_0000 + n))
}

pub(crate) fn writer(n: u128, role: Role) -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(0xde_0000 + n)),
        user: UserId(Uuid::from_u128(0xa5_0000 + n)),
        role,
        school: matches!(role, Role::Teacher | Role::Volunteer).then_some(SCHOOL),
        venue: (role == Role::VenueStaff).then_some(VENUE),
        pupil: None,
    }
}

fn written(edits: &[(&Writer, i64, Edit)]) -> Automerge {
    let mut doc = Automerge::new();
    for (who, at, edit) in edits {
        doc.set_actor(ActorId::from(who.device.as_bytes().as_slice()));
        apply_unchecked(&mut doc, who, *at, edit).expect("edit applies");
    }
    doc
}

/// The day's documents, venue first (a booking's records read its slot).
fn documents() -> Vec<(DocumentId, Automerge)> {
    let server = Writer::server(DeviceId(Uuid::from_u128(0x5e_0001)));
    let teacher = writer(1, Role::Teacher);
    let gate = writer(2, Role::VenueStaff);
    let volunteer = writer(3, Role::Volunteer);
    let venue = written(&[
        (&server, T, Edit::CreateVenue { venue: VENUE }),
        (
            &gate,
            T + MIN,
            Edit::SetProfile {
                fields: BTreeMap::from([
                    ("name".to_owned(), "湖南省科学技术馆".to_owned()),
                    ("address".to_owned(), "长沙市岳麓区".to_owned()),
                ]),
                location: Some((28.23, 112.87)),
                after_school: Some(true),
            },
        ),
        (
            &gate,
            T + 2 * MIN,
            Edit::PutSlot {
                slot: SLOT,
                start: T + 60 * MIN,
                end: T + 180 * MIN,
                capacity: 40,
                label: "课后场".into(),
            },
        ),
    ]);
    let scan = |pupil, id: &str| Edit::CheckIn {
        pupil,
        scan_id: id.into(),
        method: ScanMethod::Manual,
        proof: None,
    };
    let booking = written(&[
        (
            &teacher,
            T,
            Edit::CreateBooking {
                venue: VENUE,
                slot: SLOT,
                school: SCHOOL,
                party_size: 3,
                roster: vec![pupil(1), pupil(2), pupil(3)],
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
        (&gate, T + 55 * MIN, scan(pupil(1), "scan-1")),
        (&teacher, T + 56 * MIN, scan(pupil(1), "scan-2")),
        (&gate, T + 57 * MIN, scan(pupil(2), "scan-3")),
        // A walk-in, before the window opens.
        (&gate, T - 30 * MIN, scan(pupil(9), "scan-4")),
        (
            &gate,
            T + 170 * MIN,
            Edit::CheckOut {
                pupil: pupil(1),
                scan_id: "scan-5".into(),
                method: ScanMethod::Manual,
            },
        ),
    ]);
    let log = |id: &str, minutes, start| Edit::LogActivity {
        activity_id: id.into(),
        venue: VENUE,
        activity_kind: "guided_tour".into(),
        start,
        minutes,
        description: "机器人展区讲解".into(),
    };
    let activity_log = written(&[
        (
            &volunteer,
            T,
            Edit::CreateActivityLog {
                volunteer: volunteer.user,
                school: Some(SCHOOL),
            },
        ),
        (&volunteer, T + MIN, log("act-1", 60, T - 120 * MIN)),
        (&volunteer, T + MIN, log("act-2", 45, T - 60 * MIN)),
        (&volunteer, T + MIN, log("act-3", 30, T - 30 * MIN)),
        (
            &gate,
            T + 10 * MIN,
            Edit::ConfirmActivity {
                activity_id: "act-1".into(),
                approved: true,
                minutes: Some(50),
            },
        ),
        (
            &gate,
            T + 11 * MIN,
            Edit::ConfirmActivity {
                activity_id: "act-2".into(),
                approved: false,
                minutes: None,
            },
        ),
    ]);
    let school_log = written(&[
        (
            &server,
            T,
            Edit::CreateSchoolLog {
                school: SCHOOL,
                year: 2026,
            },
        ),
        (
            &teacher,
            T + MIN,
            Edit::LogSession {
                id: "sess-1".into(),
                at: T - 1440 * MIN,
                topic: "简单电路".into(),
                minutes: 40,
            },
        ),
        (
            &teacher,
            T + 2 * MIN,
            Edit::LogLecture {
                id: "lect-1".into(),
                at: T - 720 * MIN,
                topic: "航天".into(),
                minutes: 90,
            },
        ),
        (
            &gate,
            T + 3 * MIN,
            Edit::AddTourStop {
                id: "stop-1".into(),
                at: T,
                location: "操场".into(),
                days: 2,
            },
        ),
        (
            &gate,
            T + 4 * MIN,
            Edit::TourAttendance {
                stop: "stop-1".into(),
                pupil: pupil(1),
            },
        ),
    ]);
    vec![
        (DocumentId::from_bytes(*VENUE.as_bytes()), venue),
        (DocumentId::from_bytes([0xb0; 16]), booking),
        (DocumentId::from_bytes([0xac; 16]), activity_log),
        (DocumentId::school_log(SCHOOL, 2026), school_log),
    ]
}

/// Every row of every records table, each column as text (`null` for NULL), columns by
/// name and rows in order, so that both databases give the same answer.
pub(crate) async fn records_tables(
    db: &TestDb,
    kind: Db,
) -> BTreeMap<String, Vec<BTreeMap<String, Option<String>>>> {
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let (tables, columns) = match kind {
        Db::Sqlite => (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'proj%'",
            "SELECT name FROM pragma_table_info($1)",
        ),
        Db::Postgres => (
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE 'proj%'",
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
        ),
    };
    let tables: Vec<String> = sqlx::query_scalar(tables)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut cols: Vec<String> = sqlx::query_scalar(columns)
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        cols.sort();
        let select = cols
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let order = (1..=cols.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {select} FROM {table} ORDER BY {order}"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let rows = rows
            .iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), r.try_get::<Option<String>, _>(i).unwrap()))
                    .collect()
            })
            .collect();
        out.insert(table, rows);
    }
    conn.close().await.ok();
    out
}

async fn the_records_of_a_fixed_day_are_stored_as_before(db: &TestDb) {
    for (id, doc) in documents() {
        let projection = project(id, &doc);
        write(&db.store, id, &projection, None, T + 200 * MIN)
            .await
            .expect("records written");
    }
    let kind = if db.data_dir().is_some() {
        Db::Sqlite
    } else {
        Db::Postgres
    };
    let tables = records_tables(db, kind).await;
    insta::assert_json_snapshot!("records_of_a_fixed_day", tables);
}
