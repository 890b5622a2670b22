//! The relational store: one code path over SQLite and PostgreSQL through sqlx's `Any`
//! driver. Queries use numbered `$1` placeholders (both backends accept them), times are
//! unix milliseconds, ids are uuid text and bytes are BLOB/BYTEA.
//!
//! Each concept's queries live in their own file under `store/` as an `impl Store` block.

mod backend;
mod claims;
mod day_rows;
mod demo;
mod devices;
mod directory;
mod documents;
mod edges;
mod enrollment;
mod fleet;
mod geo;
mod live;
mod nodes;
mod records;
mod refusals;
mod reports;
mod rows;
mod server_keys;
mod users;
mod web_logins;
mod written;

use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use backend::Backend;
pub use day_rows::VenueWatch;
pub use devices::{ConnectFacts, DeviceAuthRecord, DeviceRecord};
pub use directory::{DirectorySlot, DirectoryVenue};
pub use edges::{Roster, RosterDevice, RosterUser};
pub use fleet::{FleetDevice, FleetQuery, RefusalTally};
pub use geo::{City, County, School, Venue};
pub use live::{
    DayAnomaly, DayBooking, DayBookings, DayDevice, DayScan, DaySlot, VenueDay, VenueRows,
};
pub use records::{
    AnomalyRow, BookingAttendance, BookingRow, BookingWrite, ScanRow, SlotBooking, VolunteerHours,
};
pub use refusals::{MAX_DETAIL_CHARS, MAX_REFUSALS_PER_DEVICE, Refusal};
pub use reports::{SchoolFacts, SchoolPlace, Scope};
pub use users::{ErasedPupil, NewUser, User};
pub use web_logins::{SessionRecord, WebLoginRecord};

use crate::error::{Error, Result};

/// Connections of the SQLite pool (besides the records' own, ADR 0182). One writes at a
/// time (ADR 0183); the others read. Each is a thread of sqlx's with its own page cache
/// and its own malloc arena: eight took 35–45 MiB more peak RSS at the end of day than
/// four with small caches, for no CPU or latency (ADR 0184).
pub const SQLITE_CONNECTIONS: u32 = 3;

/// Each SQLite connection's page cache: 256 KiB instead of SQLite's 2 MiB. The pages
/// the server reads again are in the operating system's cache; a miss costs a copy from
/// it, not a disk read (ADR 0184).
const SQLITE_CACHE: &str = "PRAGMA cache_size = -256";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The connection the records are written on, on SQLite: its commits do not wait for
    /// the disk (`synchronous = NORMAL`, ADR 0182). On PostgreSQL, `pool`.
    records_pool: AnyPool,
    /// The connection write transactions run on, on SQLite: they take turns anyway
    /// (`write_turn`), and on a connection of their own a device's acknowledgement never
    /// waits for one of the pool's, held by the dashboard's reads (ADR 0190). On
    /// PostgreSQL, `pool`.
    writer_pool: AnyPool,
    backend: Backend,
    server_seed: Arc<[u8; 32]>,
    /// The database URL (holds credentials: never log it), for the connections of
    /// their own that several nodes need (notifications, the leader's lock).
    url: Arc<str>,
    /// This process among the nodes sharing the database (random at every open).
    node: Arc<str>,
    /// What this process last wrote of each booking's records (ADR 0180).
    written: Arc<written::WrittenRecords>,
    /// The actor-id claims this process saw committed (ADR 0188).
    claims: Arc<claims::Claims>,
    /// Bookings' rows for the live dashboard, with their records' tokens (ADR 0193).
    day_rows: Arc<day_rows::DayRows>,
    /// On SQLite, the turn to write (ADR 0183): SQLite has one writer at a time, and a
    /// writer that finds the file locked sleeps in growing steps and fails after its busy
    /// timeout. The process's write transactions take turns here instead, woken as soon
    /// as the one before them ends. `None` on PostgreSQL.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction of the store. On SQLite it holds the process's turn to write
/// until it is committed, rolled back or dropped. Statements run on it as on the
/// transaction's connection (`&mut *tx`).
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// The transaction, for functions that take one.
    pub(crate) fn tx(&mut self) -> &mut sqlx::Transaction<'static, sqlx::Any> {
        &mut self.tx
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A pooled connection sitting idle at least this long is pinged before it is used.
const PING_IF_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The pools' options: at most `max` connections, and a connection taken from the pool is
/// pinged only if it sat idle for [`PING_IF_IDLE`] (ADR 0187). sqlx pings every
/// connection as it is given back, so one given back a moment ago is known good; pinging
/// it again on every take made each statement three round trips to its connection
/// instead of two (on PostgreSQL, three network round trips).
fn pool_options(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl Store {
    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes never fails with
    /// "database is locked" when another writer commits in between; it waits instead.
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let turn = self.take_turn().await;
        Ok(WriteTx {
            tx: self.writer_pool.begin_with(statement).await?,
            _turn: turn,
        })
    }

    /// Waits for the turn to write, on SQLite (ADR 0183).
    async fn take_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(turn) => Some(Arc::clone(turn).lock_owned().await),
            None => None,
        }
    }

    /// Starts a read-only transaction that sees one snapshot of the database for all of
    /// its statements: on PostgreSQL `REPEATABLE READ` (its default, `READ COMMITTED`,
    /// takes a new snapshot per statement); on SQLite in WAL mode a deferred transaction
    /// keeps the snapshot of its first read until it ends.
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn begin_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        Ok(self.pool.begin_with(statement).await?)
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`), applies the migrations and
    /// loads (or, on first start, creates) the server signing seed. A configured seed is
    /// stored on first start and must match the stored one afterwards.
    ///
    /// # Errors
    /// Unknown scheme, connection or migration failure, or a seed mismatch.
    pub async fn open(url: &str, configured_seed: Option<[u8; 32]>) -> Result<Self> {
        Self::open_with(url, configured_seed, 16).await
    }

    /// [`Store::open`] with a pool of `pg_connections` connections on PostgreSQL
    /// (`--db-connections`); SQLite keeps [`SQLITE_CONNECTIONS`].
    ///
    /// # Errors
    /// Unknown scheme, connection or migration failure, or a seed mismatch.
    pub async fn open_with(
        url: &str,
        configured_seed: Option<[u8; 32]>,
        pg_connections: u32,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let max_connections = match backend {
            Backend::Sqlite => SQLITE_CONNECTIONS,
            Backend::Postgres => pg_connections.max(2),
        };
        let pool = pool_options(max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_CACHE).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let writer_pool = if backend == Backend::Sqlite {
            pool_options(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(SQLITE_CACHE).await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?
        } else {
            pool.clone()
        };
        let records_pool = if backend == Backend::Sqlite {
            // WAL is persistent in the file; setting it once is enough.
            pool.execute("PRAGMA journal_mode = WAL").await?;
            // Records are derived: a commit of them lost to a power cut is redone at the
            // next start (`records::rebuild::reproject_stale`), so they do not wait for
            // the disk. In WAL mode this loses no consistency, and the next commit that
            // does wait (a device's changes) writes theirs to the disk too.
            pool_options(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(SQLITE_CACHE).await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?
        } else {
            pool.clone()
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let server_seed = server_keys::load_or_create_seed(&pool, configured_seed).await?;
        tracing::info!(backend = backend.name(), "store opened");
        Ok(Self {
            pool,
            records_pool,
            writer_pool,
            backend,
            server_seed: Arc::new(server_seed),
            url: Arc::from(url),
            node: Arc::from(hex::encode(rand::random::<[u8; 8]>())),
            written: Arc::default(),
            claims: Arc::default(),
            day_rows: Arc::default(),
            write_turn: (backend == Backend::Sqlite).then(Arc::default),
        })
    }

    /// The database URL, for a connection of its own. It holds credentials: never log it.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// This node's id among the nodes sharing the database (random per start; it names
    /// the node's own notifications, which it ignores).
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Starts a write transaction that replaces one document's records. On PostgreSQL it
    /// first takes a lock on the document for the transaction, so that two nodes
    /// rewriting the same document's records take turns instead of one failing on the
    /// other's rows (and every statement after it sees what the other committed).
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn begin_records_write(&self, doc: &str) -> Result<WriteTx> {
        self.begin_records_write_many(&[doc]).await
    }

    /// Starts a write transaction that replaces several documents' records (ADR 0190).
    /// On PostgreSQL it takes the documents' locks first, in the order of their ids, so
    /// that two nodes writing overlapping sets wait for each other instead of deadlocking
    /// (any lock taken later in the transaction, such as the arrival numbers', comes
    /// after every document's).
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn begin_records_write_many(&self, docs: &[&str]) -> Result<WriteTx> {
        let mut tx = self.begin_records_tx().await?;
        if self.backend == Backend::Postgres {
            let mut sorted = docs.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            for doc in sorted {
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(crate::cluster::RECORDS_LOCK_SPACE)
                    .bind(doc)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(tx)
    }

    /// Starts a write transaction of derived rows (records, and the heads they were
    /// computed at) whose commit does not wait for the disk (ADR 0182): on SQLite on the
    /// records connection, on PostgreSQL with `synchronous_commit` off for it. A crash may
    /// lose the last such commits, never corrupt them; the records are then recomputed at
    /// the next start. Nothing a device was told is stored goes through here.
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn begin_records_tx(&self) -> Result<WriteTx> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.take_turn().await;
                Ok(WriteTx {
                    tx: self.records_pool.begin_with("BEGIN IMMEDIATE").await?,
                    _turn: turn,
                })
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
                Ok(WriteTx { tx, _turn: None })
            }
        }
    }

    /// The connection pool, for tests and benchmarks that set up or inspect rows
    /// directly. The server's own queries are `Store` methods under `store/`.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `kepu_records_rows_written_total{write="changed"|"everything"}`: the rows of
    /// bookings' records this process wrote, by whether a write held only the rows that
    /// changed (ADR 0180) or every row.
    #[must_use]
    pub fn records_rows_written(&self) -> prometheus::IntCounterVec {
        self.written.rows_written()
    }

    /// Has the records writes of `venue`'s bookings keep their rows in memory for its
    /// live dashboard while the returned watch is held (ADR 0193).
    #[must_use]
    pub fn watch_venue(&self, venue: uuid::Uuid) -> VenueWatch {
        VenueWatch::new(Arc::clone(&self.day_rows), venue.to_string())
    }

    /// Bookings whose dashboard rows (scans, anomalies, devices) were read from the
    /// records so far, not taken from memory (ADR 0193).
    #[must_use]
    pub fn day_rows_read(&self) -> u64 {
        self.day_rows.reads()
    }

    /// `kepu_live_booking_rows_total{from="memory"|"records"}`: bookings whose dashboard
    /// rows were taken from memory or read from the records (ADR 0193).
    #[must_use]
    pub fn live_booking_rows(&self) -> prometheus::IntCounterVec {
        self.day_rows.metric()
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The server's 32-byte signing seed (check-in proofs, pupil passes). Never log it.
    #[must_use]
    pub fn server_seed(&self) -> &[u8; 32] {
        &self.server_seed
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// The database does not answer.
    pub async fn ping(&self) -> Result<()> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    /// Closes every connection (after the server stopped).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer_pool.close().await;
        self.records_pool.close().await;
    }
}

/// Parses a uuid column, reporting corrupt data without echoing it.
pub(crate) fn parse_uuid(text: &str, table: &'static str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(text).map_err(|_| Error::Corrupt(table))
}

#[cfg(test)]
mod write_turn_tests {
    use kepu_sync_core::doc_id::DocumentId;
    use kepu_sync_core::mem_store::{append, plain_changes};

    use super::Store;

    /// Every SQLite connection of the store, the records' and the writers' own too, keeps
    /// the small page cache (ADR 0184).
    #[tokio::test]
    async fn sqlite_connections_keep_a_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = Store::open(&url, None).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..super::SQLITE_CONNECTIONS {
            let mut conn = store.pool().acquire().await.unwrap();
            let kib: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(kib, -256, "a pool connection");
            held.push(conn);
        }
        let mut tx = store.begin_records_tx().await.unwrap();
        let kib: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(kib, -256, "the records connection");
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        let kib: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(kib, -256, "the writers' connection");
    }

    /// A write transaction (a device's append waiting to be acknowledged) has a
    /// connection of its own on SQLite: it starts while readers, the live dashboard's
    /// snapshots say, hold every connection of the pool (ADR 0190).
    #[tokio::test]
    async fn a_write_starts_while_readers_hold_every_pool_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = Store::open(&url, None).await.unwrap();
        let mut readers = Vec::new();
        for _ in 0..super::SQLITE_CONNECTIONS {
            let mut tx = store.begin_read().await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(n, 0);
            readers.push(tx);
        }
        let doc = DocumentId::from_bytes([9; 16]);
        let (d, changes) = plain_changes(3);
        let task = append(doc, changes, d.get_heads());
        let write = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            store.run_document_tasks(&[&task], 1).await
        })
        .await
        .expect("the write did not wait for a reader's connection");
        write.unwrap();
        drop(readers);
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM changes")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(stored, 3);
    }

    /// SQLite has one writer at a time. A write of the server's that takes longer than
    /// SQLite's busy timeout (5 s: a school's pupil import on a slow disk, a records
    /// rebuild) must make a device's append and a records write wait for their turn, not
    /// fail with "database is locked" and cost the device its acknowledgement.
    #[tokio::test]
    async fn sqlite_writers_wait_for_their_turn_however_long_the_write_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = Store::open(&url, None).await.unwrap();
        let mut long = store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO sync_states (doc_id, peer_storage_id, state) VALUES ($1, $2, $3)")
            .bind("long")
            .bind("peer")
            .bind(vec![1_u8])
            .execute(&mut *long)
            .await
            .unwrap();
        let doc = DocumentId::from_bytes([7; 16]);
        let (d, changes) = plain_changes(1);
        let task = append(doc, changes, d.get_heads());
        let appending = {
            let store = store.clone();
            tokio::spawn(async move { store.run_document_tasks(&[&task], 1).await })
        };
        let recording = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_records_tx().await?;
                sqlx::query("DELETE FROM sync_states WHERE doc_id = 'nothing'")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<(), crate::error::Error>(())
            })
        };
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        assert!(
            !appending.is_finished(),
            "the append waits while the write holds the turn"
        );
        long.commit().await.unwrap();
        appending
            .await
            .unwrap()
            .expect("the append is stored after the long write");
        recording
            .await
            .unwrap()
            .expect("the records write runs after it");
        assert_eq!(store.load_document(doc).await.unwrap().changes.len(), 1);
    }
}
