//! Today's phone reading documents an old server wrote (issue 15, ADR 0170): the stored
//! change rows of every released schema version's golden bookings
//! (`tests/fixtures/schema-v<N>/`), written into a real kepu-server's database (SQLite
//! and PostgreSQL) through its storage path, fetched by today's library over a real
//! websocket and read through the app's API.

use std::path::PathBuf;
use std::sync::Arc;

use kepu_mobile_ffi::api::{BookingStatus, KepuClient};
use kepu_server::accounts::{Accounts, Role};
use kepu_server::store::NewUser;
use kepu_server::{Config, Store};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{StorageTask, StoredChange};
use kepu_sync_core::golden::{self, RELEASED};
use kepu_sync_core::schema::DocKind;
use serde::Deserialize;
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;

#[derive(Deserialize)]
struct DocFixture {
    read: serde_json::Value,
    rows: Vec<golden::Row>,
}

fn fixture(version: i64, name: &str) -> DocFixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(format!("schema-v{version}"))
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture parses")
}

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

/// Opens a fresh database; returns its URL and, for PostgreSQL, (admin URL, name).
async fn database(db: Db, dir: &std::path::Path) -> (String, Option<(String, String)>) {
    match db {
        Db::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.join("kepu.db").display()),
            None,
        ),
        Db::Postgres => {
            let admin = std::env::var("KEPU_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
            let name = format!("kepu_old_{}", kepu_server::ids::new_id().simple());
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("PostgreSQL must be running (see KEPU_TEST_PG_URL)");
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            conn.close().await.ok();
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            (format!("{base}/{name}"), Some((admin.clone(), name)))
        }
    }
}

/// Writes `rows` as a server stores a document's changes.
async fn store_rows(store: &Store, doc: DocumentId, rows: &[golden::Row]) {
    let changes: Vec<StoredChange> = rows
        .iter()
        .map(|r| StoredChange {
            hash: golden::row_hash(r),
            bytes: hex::decode(&r.bytes).unwrap(),
        })
        .collect();
    let heads = kepu_sync_core::stored::restore(None, changes.clone())
        .doc
        .get_heads();
    // Rows an old server stored carry no actor owners (they predate the claim table).
    let task = StorageTask::Append {
        doc,
        kind: Some(DocKind::Booking),
        changes,
        heads,
        owners: Vec::new(),
    };
    store
        .run_document_tasks(&[&task], kepu_server::clock::now_ms())
        .await
        .unwrap();
}

async fn a_phone_reads_the_bookings_old_servers_stored(db: Db) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = database(db, dir.path()).await;
    let store = Store::open(&url, None).await.unwrap();
    let new_id = kepu_server::ids::new_id;
    let city = store.create_city(new_id(), "长沙市").await.unwrap().id;
    let county = store
        .create_county(new_id(), city, "岳麓区")
        .await
        .unwrap()
        .id;
    store
        .create_school(golden::SCHOOL.0, county, "博才小学")
        .await
        .unwrap();
    store
        .create_venue(golden::VENUE.0, county, "湖南省科技馆", "science_museum")
        .await
        .unwrap();
    // One booking per released version and kind of booking, as the old server left them.
    let mut docs = Vec::new();
    for &version in RELEASED {
        for name in ["booking", "cancelled_booking"] {
            let f = fixture(version, name);
            let doc = DocumentId::from_bytes(new_id().into_bytes());
            store_rows(&store, doc, &f.rows).await;
            docs.push((version, name, doc, f.read));
        }
    }
    let mut config = Config::with_data_dir(dir.path().to_path_buf());
    config.database_url = Some(url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(kepu_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    // Today's teacher phone of the golden school.
    let teacher = NewUser {
        id: new_id(),
        role: Role::Teacher,
        school_id: Some(golden::SCHOOL.0),
        venue_id: None,
        display_name: None,
        external_ref: None,
    };
    store
        .create_user(&teacher, kepu_server::clock::now_ms())
        .await
        .unwrap();
    let code = Accounts::new(store.clone())
        .issue_enrollment_code(teacher.id, 1)
        .await
        .unwrap();
    let phone_dir = tempfile::tempdir().unwrap();
    let client: Arc<KepuClient> = KepuClient::open(
        phone_dir.path().to_string_lossy().into_owned(),
        format!("http://{addr}"),
        None,
    )
    .unwrap();
    client.enroll(code.code.expose().to_owned()).await.unwrap();
    for (_, _, doc, _) in &docs {
        client.add_document(doc.to_string()).unwrap();
    }
    client.sync_now().await.unwrap();
    for (version, name, doc, read) in &docs {
        // The engine's reading through the phone's own store is the old one's, field
        // for field.
        let held = client
            .core()
            .read(doc, |d| golden::read_json(d, DocKind::Booking))
            .unwrap()
            .unwrap_or_else(|| panic!("schema {version} {name}: the phone fetched nothing"));
        assert_eq!(&held, read, "schema {version} {name}");
        // And the app's API shows it.
        let info = client.booking(doc.to_string()).unwrap();
        let (status, arrived) = if *name == "booking" {
            // From version 3 on, a gate still on version 2 also scans a pupil in, under
            // "<pupil>/<device>": counted beside today's per-device scans (ADR 0203).
            (BookingStatus::Confirmed, if *version >= 3 { 3 } else { 2 })
        } else {
            (BookingStatus::Cancelled, 0)
        };
        assert_eq!(info.status, status, "schema {version} {name}");
        let roster = client.roster(doc.to_string()).unwrap();
        assert_eq!(roster.arrived, arrived, "schema {version} {name}");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    store.close().await;
    if let Some((admin, name)) = pg
        && let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await
    {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_todays_phone_reads_the_bookings_old_servers_stored() {
    a_phone_reads_the_bookings_old_servers_stored(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_todays_phone_reads_the_bookings_old_servers_stored() {
    a_phone_reads_the_bookings_old_servers_stored(Db::Postgres).await;
}
