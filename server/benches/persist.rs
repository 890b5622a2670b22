//! Server figures (`cargo bench -p kepu-server --bench persist`):
//!
//! 1. Changes persisted per second through the server's storage path
//!    (`Store::run_document_tasks` with batches of `Append` tasks of real automerge
//!    check-in changes, many documents per transaction) against the raw rate of the same
//!    batched change-row INSERTs through sqlx on the same database; on SQLite and, if
//!    reachable (`KEPU_TEST_PG_URL`), PostgreSQL.
//! 2. Memory per idle authenticated websocket connection: N connections to an in-process
//!    server, RSS delta (`/proc/self/status`) divided by N.
//! 3. Writing a large booking's records (`Store::write_booking_records`): a roster of 300
//!    and 2,000 scans, written again and again as the server does after each burst of
//!    merges; on SQLite and, if reachable, PostgreSQL.

use std::time::{Duration, Instant};

use automerge::Automerge;
use futures_util::{SinkExt, StreamExt};
use kepu_server::Store;
use kepu_server::accounts::{Accounts, Role};
use kepu_server::store::NewUser;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::{Edit, apply_unchecked};
use kepu_sync_core::engine::{StorageTask, StoredChange};
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::schema::booking::ScanMethod;
use kepu_sync_core::wire::Message;
use kepu_sync_core::writer::{Role as WriterRole, Writer};
use sqlx::{Connection, Executor};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// Booking documents per run.
const DOCS: usize = 600;
/// Check-in changes per document (plus the creating change).
const CHECK_INS: usize = 10;
/// Append tasks (documents) per transaction.
const TASKS_PER_BATCH: usize = 100;
/// Rows per multi-row INSERT, as the server's storage path uses.
const ROWS_PER_INSERT: usize = 200;
/// Idle connections for the memory figure.
const CONNECTIONS: usize = 500;

fn writer() -> Writer {
    Writer {
        device: DeviceId(Uuid::from_u128(1)),
        user: UserId(Uuid::from_u128(2)),
        role: WriterRole::Teacher,
        school: Some(SchoolId(Uuid::from_u128(3))),
        venue: None,
        pupil: None,
    }
}

/// One booking with its check-ins, as an `Append` task of real change bytes.
fn booking_task(n: usize) -> StorageTask {
    let mut doc = Automerge::new();
    let w = writer();
    let now = 1_760_000_000_000 + i64::try_from(n).unwrap_or(0);
    let roster: Vec<PupilId> = (0..CHECK_INS as u128)
        .map(|i| PupilId(Uuid::from_u128(1_000 + i)))
        .collect();
    let create = Edit::CreateBooking {
        venue: VenueId(Uuid::from_u128(4)),
        slot: SlotId(Uuid::from_u128(5)),
        school: SchoolId(Uuid::from_u128(3)),
        party_size: 30,
        roster: roster.clone(),
    };
    apply_unchecked(&mut doc, &w, now, &create).expect("create booking");
    for (i, pupil) in roster.iter().enumerate() {
        let at = now + i64::try_from(i).unwrap_or(0);
        let edit = Edit::CheckIn {
            pupil: *pupil,
            scan_id: kepu_sync_core::ids::uuid_v7(at, rand::random()).to_string(),
            method: ScanMethod::Manual,
            proof: None,
        };
        apply_unchecked(&mut doc, &w, at, &edit).expect("check in");
    }
    let changes = doc
        .get_changes(&[])
        .into_iter()
        .map(|c| StoredChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
        .collect();
    StorageTask::Append {
        doc: DocumentId::from_bytes(rand::random()),
        kind: Some(DocKind::Booking),
        changes,
        heads: doc.get_heads(),
        // As the engine sends it: the writer owns the document's actor id, so the
        // storage path claims or checks it in the same transaction (ADR 0140).
        owners: vec![(doc.get_actor().to_bytes().to_vec(), w.device)],
    }
}

/// Roster and scans of the booking in the records figure.
const RECORDS_ROSTER: usize = 300;
const RECORDS_SCANS: usize = 2_000;
/// Writes of its records timed.
const RECORDS_WRITES: usize = 10;

/// A booking of [`RECORDS_ROSTER`] pupils with [`RECORDS_SCANS`] scans, read back.
fn large_booking() -> kepu_sync_core::schema::booking::Booking {
    let mut doc = Automerge::new();
    let w = writer();
    let now = 1_760_000_000_000;
    let roster: Vec<PupilId> = (0..RECORDS_ROSTER as u128)
        .map(|i| PupilId(Uuid::from_u128(10_000 + i)))
        .collect();
    let create = Edit::CreateBooking {
        venue: VenueId(Uuid::from_u128(4)),
        slot: SlotId(Uuid::from_u128(5)),
        school: SchoolId(Uuid::from_u128(3)),
        party_size: u32::try_from(RECORDS_ROSTER).unwrap_or(u32::MAX),
        roster: roster.clone(),
    };
    apply_unchecked(&mut doc, &w, now, &create).expect("create booking");
    for i in 0..RECORDS_SCANS {
        let at = now + i64::try_from(i).unwrap_or(0);
        let edit = Edit::CheckIn {
            pupil: roster[i % roster.len()],
            scan_id: kepu_sync_core::ids::uuid_v7(at, rand::random()).to_string(),
            method: ScanMethod::Manual,
            proof: None,
        };
        apply_unchecked(&mut doc, &w, at, &edit).expect("check in");
    }
    kepu_sync_core::schema::booking::Booking::read(&doc).expect("a booking")
}

#[allow(clippy::cast_precision_loss)]
async fn records_figure(name: &str, url: &str) {
    let store = Store::open(url, None).await.expect("open store");
    let booking = large_booking();
    let doc = DocumentId::from_bytes(rand::random());
    store
        .write_booking_records(doc, &booking, 1_760_000_000_000, None)
        .await
        .expect("warm-up write");
    let started = Instant::now();
    for n in 0..RECORDS_WRITES {
        store
            .write_booking_records(doc, &booking, 1_760_000_000_001 + n as i64, None)
            .await
            .expect("records written");
    }
    let per = started.elapsed() / u32::try_from(RECORDS_WRITES).unwrap_or(1);
    println!(
        "records/{name}: a booking of {RECORDS_ROSTER} pupils and {RECORDS_SCANS} scans: {per:.2?} per write of its records ({RECORDS_WRITES} writes)"
    );
    store.close().await;
}

fn change_count(tasks: &[StorageTask]) -> usize {
    tasks
        .iter()
        .map(|t| match t {
            StorageTask::Append { changes, .. } => changes.len(),
            _ => 0,
        })
        .sum()
}

async fn server_path(store: &Store, tasks: &[StorageTask]) -> Duration {
    let started = Instant::now();
    for batch in tasks.chunks(TASKS_PER_BATCH) {
        let refs: Vec<&StorageTask> = batch.iter().collect();
        store
            .run_document_tasks(&refs, 1_760_000_000_000)
            .await
            .expect("server storage path");
    }
    started.elapsed()
}

async fn raw_inserts(store: &Store, blob: &str, tasks: &[StorageTask]) -> Duration {
    let pool = store.pool();
    pool.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS bench_raw_changes (doc_id TEXT NOT NULL, hash {blob} NOT NULL, \
         data {blob} NOT NULL, received_at BIGINT NOT NULL, PRIMARY KEY (doc_id, hash))"
    )))
    .await
    .expect("raw table");
    let rows: Vec<Vec<(String, &StoredChange)>> = tasks
        .chunks(TASKS_PER_BATCH)
        .map(|batch| {
            batch
                .iter()
                .flat_map(|t| match t {
                    StorageTask::Append { doc, changes, .. } => {
                        let id = doc.to_string();
                        changes.iter().map(|c| (id.clone(), c)).collect::<Vec<_>>()
                    }
                    _ => Vec::new(),
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &rows {
        let mut tx = pool.begin().await.expect("begin");
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO bench_raw_changes (doc_id, hash, data, received_at) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 4;
                sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
            }
            sql.push_str(" ON CONFLICT (doc_id, hash) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, c) in chunk {
                q = q
                    .bind(id.clone())
                    .bind(c.hash.0.to_vec())
                    .bind(c.bytes.clone())
                    .bind(1_760_000_000_000_i64);
            }
            q.execute(&mut *tx).await.expect("raw insert");
        }
        tx.commit().await.expect("commit");
    }
    started.elapsed()
}

#[allow(clippy::cast_precision_loss)]
async fn persist_figures(name: &str, url: &str, blob: &str) {
    let store = Store::open(url, None).await.expect("open store");
    // Warm up both paths on their own documents.
    let warm: Vec<StorageTask> = (0..TASKS_PER_BATCH).map(booking_task).collect();
    server_path(&store, &warm).await;
    raw_inserts(&store, blob, &warm).await;
    let tasks: Vec<StorageTask> = (0..DOCS).map(booking_task).collect();
    let n = change_count(&tasks);
    let raw_tasks: Vec<StorageTask> = (0..DOCS).map(booking_task).collect();
    let server = server_path(&store, &tasks).await;
    let raw = raw_inserts(&store, blob, &raw_tasks).await;
    let server_rate = n as f64 / server.as_secs_f64();
    let raw_rate = change_count(&raw_tasks) as f64 / raw.as_secs_f64();
    println!(
        "persist/{name}: {n} changes in {DOCS} documents, {TASKS_PER_BATCH} documents per transaction"
    );
    println!("  server storage path : {server_rate:>10.0} changes/s ({server:.2?})");
    println!("  raw sqlx INSERTs    : {raw_rate:>10.0} changes/s ({raw:.2?})");
    println!(
        "  server / raw        : {:>10.0} %",
        100.0 * server_rate / raw_rate
    );
    store.close().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn open_idle(addr: std::net::SocketAddr, token: &str, i: usize) -> impl Send {
    let mut request = format!("ws://{addr}/sync")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    let join = Message::Join {
        sender_id: format!("bench-{i}"),
        peer_metadata: None,
        supported_protocol_versions: vec!["1".into()],
    };
    socket
        .send(Ws::Binary(join.encode().into()))
        .await
        .expect("join");
    // Wait for the server's `peer`: the connection is authenticated and idle from here.
    let _ = socket.next().await;
    socket
}

#[allow(clippy::cast_precision_loss)]
async fn memory_figure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kepu_server::Config::with_data_dir(dir.path().to_path_buf());
    let url = config.resolve_database_url().expect("url");
    let store = Store::open(&url, None).await.expect("store");
    let accounts = Accounts::new(store.clone());
    let mut tokens = Vec::new();
    for _ in 0..=CONNECTIONS {
        let user = NewUser {
            id: kepu_server::ids::new_id(),
            role: Role::Volunteer,
            school_id: None,
            venue_id: None,
            display_name: None,
            external_ref: None,
        };
        store
            .create_user(&user, kepu_server::clock::now_ms())
            .await
            .expect("user");
        let code = accounts
            .issue_enrollment_code(user.id, 1)
            .await
            .expect("code");
        let enrolled = accounts
            .enroll(code.code.expose(), Some("bench/1"))
            .await
            .expect("enroll");
        tokens.push(enrolled.token);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kepu_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    // Warm up: one connection, so the first-connection allocations are not counted.
    let warm = open_idle(addr, &tokens[CONNECTIONS], CONNECTIONS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let mut sockets = Vec::new();
    for (i, token) in tokens[..CONNECTIONS].iter().enumerate() {
        sockets.push(open_idle(addr, token, i).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let per = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    println!(
        "memory: {CONNECTIONS} idle authenticated connections, RSS {before} KiB -> {after} KiB, \
         {per:.1} KiB per connection (server and client ends in one process)"
    );
    drop(sockets);
    drop(warm);
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
}

async fn postgres_url() -> Option<(String, String, String)> {
    let admin = std::env::var("KEPU_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn =
        tokio::time::timeout(Duration::from_secs(3), sqlx::AnyConnection::connect(&admin))
            .await
            .ok()?
            .ok()?;
    let name = format!("kepu_bench_{}", Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .ok()?;
    conn.close().await.ok();
    let base = admin.split('?').next().unwrap_or(&admin);
    let cut = base.rfind('/').unwrap_or(base.len());
    Some((format!("{}/{name}", &base[..cut]), admin, name))
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    persist_figures("sqlite", &sqlite, "BLOB").await;
    records_figure("sqlite", &sqlite).await;
    match postgres_url().await {
        Some((url, admin, name)) => {
            persist_figures("postgres", &url, "BYTEA").await;
            records_figure("postgres", &url).await;
            if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                let _ = conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await;
            }
        }
        None => println!("persist/postgres: skipped (PostgreSQL not reachable)"),
    }
    memory_figure().await;
}
