//! The device's SQLite store: one file, versioned schema upgrades (`PRAGMA user_version`),
//! WAL with `synchronous = FULL` so that a write that returned survives a killed app or a
//! power cut. It runs the engine's [`StorageTask`]s with the semantics of the reference
//! store `kepu_sync_core::mem_store::MemStore` (feature `testing`): `Append` is idempotent
//! by hash, `Compact` deletes only the rows it lists, `Quarantine` moves refused changes
//! aside (kept and shown), `Forget` drops a document.

use std::path::Path;

use automerge::ChangeHash;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{IoResult, Loaded, StorageTask, StoredChange};
use kepu_sync_core::schema::DocKind;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::error::{Error, Result};

/// How a failed task says that the device is full (SQLite's `SQLITE_FULL`).
pub const FULL: &str = "storage full";

/// The file name inside the directory the app gives.
pub const FILE_NAME: &str = "kepu.sqlite3";

/// The lock file beside the store. An open store holds an exclusive OS lock on it, so
/// one client writes a store at a time (a background worker, the UI, an app extension:
/// the second `open` is refused). The OS drops the lock when the process dies.
pub const LOCK_NAME: &str = "kepu.sqlite3.lock";

/// How long `open` waits for a client that holds the store to let go before it answers
/// [`Error::StoreInUse`]. A client the app just dropped (after a cancelled sync, say)
/// lets go a moment later, when its last task has ended; an app that reopens at once
/// gets the store, not a refusal. A store held for good is refused after this.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_millis(1_500);

/// Schema upgrades, applied in order; `user_version` is the number applied. Never edit
/// one that shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: documents and their change rows (the same layout as the server), sync states
    // per peer, refused changes, local changes not yet acknowledged, key/value meta.
    "CREATE TABLE documents (
        doc_id     BLOB PRIMARY KEY,
        kind       TEXT,
        snapshot   BLOB,
        updated_at INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE changes (
        doc_id BLOB NOT NULL,
        hash   BLOB NOT NULL,
        bytes  BLOB NOT NULL,
        PRIMARY KEY (doc_id, hash)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE sync_states (
        doc_id BLOB NOT NULL,
        peer   TEXT NOT NULL,
        state  BLOB NOT NULL,
        PRIMARY KEY (doc_id, peer)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE refused_changes (
        id     INTEGER PRIMARY KEY,
        doc_id BLOB NOT NULL,
        hash   BLOB NOT NULL,
        bytes  BLOB NOT NULL,
        code   TEXT NOT NULL,
        path   TEXT NOT NULL,
        at     INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE pending (
        doc_id BLOB NOT NULL,
        hash   BLOB NOT NULL,
        PRIMARY KEY (doc_id, hash)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;",
];

/// A refusal as stored, for the app to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefusal {
    /// Document.
    pub doc: DocumentId,
    /// Machine-readable reason.
    pub code: String,
    /// Where in the document.
    pub path: String,
    /// How many changes.
    pub changes: u64,
    /// When the device learnt of it (unix ms).
    pub at: i64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    // Dropped in this order: the database closes before the lock is released.
    conn: Connection,
    _lock: Option<std::fs::File>,
}

/// Takes the store's exclusive lock, waiting up to [`OPEN_WAIT`] for a client that holds
/// it to let go, or says that another client holds it.
fn lock(dir: &Path) -> Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_NAME))
        .map_err(|e| Error::Storage(format!("cannot open the store's lock file: {e}")))?;
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return locked(file, other),
        }
    }
}

/// What one attempt at the store's lock means.
fn locked(
    file: std::fs::File,
    attempt: std::result::Result<(), std::fs::TryLockError>,
) -> Result<Option<std::fs::File>> {
    match attempt {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::StoreInUse),
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            // A file system without locks: run unguarded rather than not at all.
            tracing::warn!("the file system cannot lock the store; one client must open it");
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Storage(format!("cannot lock the store: {e}")))
        }
    }
}

/// Is this SQLite's "database or disk is full"?
#[must_use]
pub fn is_full(e: &Error) -> bool {
    matches!(e, Error::Sqlite(s) if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
}

fn doc_key(doc: &DocumentId) -> &[u8] {
    doc.as_bytes().as_slice()
}

fn kind_text(kind: Option<DocKind>) -> Option<&'static str> {
    kind.map(DocKind::as_str)
}

impl Store {
    /// Opens (creating or upgrading) the store in `dir`.
    ///
    /// # Errors
    /// [`Error::StoreInUse`] while another client (in this process or another) has it
    /// open; the directory or file cannot be opened, or the file is from a newer app.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Storage(e.to_string()))?;
        let guard = lock(dir)?;
        let conn = Connection::open(dir.join(FILE_NAME))?;
        Self::setup(conn, guard)
    }

    /// An in-memory store (benchmarks of the engine path without the disk).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, None)
    }

    fn setup(mut conn: Connection, guard: Option<std::fs::File>) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // The WAL is copied back into the database file when the app is idle
        // ([`Store::checkpoint`]); the automatic checkpoint, which runs inside the commit
        // that crosses it, is only the bound (8,192 pages, 32 MiB).
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 8192;",
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > known {
            return Err(Error::Storage(format!(
                "store schema {version} is newer than this app ({known})"
            )));
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )?;
        }
        tx.commit()?;
        Ok(Self { conn, _lock: guard })
    }

    /// Copies what the WAL holds back into the database file, without waiting for
    /// readers (idle time; the automatic checkpoint is only the bound).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn checkpoint(&self) -> Result<()> {
        let _: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))?;
        Ok(())
    }

    /// The schema version of the open file.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs one engine task in one transaction. `local` marks an `Append` of this
    /// device's own edits (counted as pending until the server has them).
    pub fn run(&mut self, task: &StorageTask, local: bool, now: i64) -> IoResult {
        match self.try_run(task, local, now) {
            Ok(r) => r,
            Err(e) if is_full(&e) => IoResult::Failed(FULL.into()),
            Err(e) => IoResult::Failed(e.to_string()),
        }
    }

    fn try_run(&mut self, task: &StorageTask, local: bool, now: i64) -> Result<IoResult> {
        if let StorageTask::Load { doc } | StorageTask::LoadChanges { doc } = task {
            return self.load(doc).map(IoResult::Loaded);
        }
        let tx = self.conn.transaction()?;
        match task {
            StorageTask::Load { .. } | StorageTask::LoadChanges { .. } => {}
            StorageTask::Append {
                doc, kind, changes, ..
            } => {
                touch(&tx, doc, *kind, now)?;
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT OR IGNORE INTO changes (doc_id, hash, bytes) VALUES (?1, ?2, ?3)",
                    )?;
                    for c in changes {
                        ins.execute(params![doc_key(doc), c.hash.0.as_slice(), c.bytes])?;
                    }
                }
                if local {
                    let mut ins = tx.prepare_cached(
                        "INSERT OR IGNORE INTO pending (doc_id, hash) VALUES (?1, ?2)",
                    )?;
                    for c in changes {
                        ins.execute(params![doc_key(doc), c.hash.0.as_slice()])?;
                    }
                }
            }
            StorageTask::Compact {
                doc,
                snapshot,
                delete,
                ..
            } => {
                touch(&tx, doc, None, now)?;
                tx.execute(
                    "UPDATE documents SET snapshot = ?2 WHERE doc_id = ?1",
                    params![doc_key(doc), snapshot],
                )?;
                let mut del =
                    tx.prepare_cached("DELETE FROM changes WHERE doc_id = ?1 AND hash = ?2")?;
                for h in delete {
                    del.execute(params![doc_key(doc), h.0.as_slice()])?;
                }
            }
            StorageTask::SaveSyncState { doc, peer, state } => {
                tx.execute(
                    "INSERT INTO sync_states (doc_id, peer, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (doc_id, peer) DO UPDATE SET state = excluded.state",
                    params![doc_key(doc), peer, state],
                )?;
            }
            StorageTask::Quarantine {
                doc,
                changes,
                refusal,
                snapshot,
            } => {
                touch(&tx, doc, None, now)?;
                tx.execute("DELETE FROM changes WHERE doc_id = ?1", [doc_key(doc)])?;
                tx.execute(
                    "UPDATE documents SET snapshot = ?2 WHERE doc_id = ?1",
                    params![doc_key(doc), snapshot],
                )?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO refused_changes (doc_id, hash, bytes, code, path, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let mut unpend =
                    tx.prepare_cached("DELETE FROM pending WHERE doc_id = ?1 AND hash = ?2")?;
                for c in changes {
                    ins.execute(params![
                        doc_key(doc),
                        c.hash.0.as_slice(),
                        c.bytes,
                        refusal.code.as_str(),
                        refusal.path,
                        now
                    ])?;
                    unpend.execute(params![doc_key(doc), c.hash.0.as_slice()])?;
                }
            }
            StorageTask::Forget { doc } => {
                keep_unacknowledged(&tx, doc, now)?;
                for table in ["documents", "changes", "sync_states", "pending"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE doc_id = ?1"),
                        [doc_key(doc)],
                    )?;
                }
            }
            // Server only: a phone's engine never claims actor ids.
            StorageTask::ClaimActors { .. } => {}
        }
        tx.commit()?;
        Ok(IoResult::Done)
    }

    /// A document's snapshot, change rows and sync states.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn load(&self, doc: &DocumentId) -> Result<Loaded> {
        let snapshot: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT snapshot FROM documents WHERE doc_id = ?1",
                [doc_key(doc)],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash, bytes FROM changes WHERE doc_id = ?1")?;
        let changes = stmt
            .query_map([doc_key(doc)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .filter_map(|row| {
                let (hash, bytes) = row.ok()?;
                let hash: [u8; 32] = hash.try_into().ok()?;
                Some(StoredChange {
                    hash: ChangeHash(hash),
                    bytes,
                })
            })
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer, state FROM sync_states WHERE doc_id = ?1")?;
        let sync_states = stmt
            .query_map([doc_key(doc)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(Loaded {
            snapshot,
            changes,
            sync_states,
            snapshot_heads: None,
            stored_heads: None,
        })
    }

    /// Limits the file to `pages` pages (per connection; a full device in tests).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn limit_pages(&self, pages: u32) -> Result<()> {
        let _: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })?;
        Ok(())
    }

    /// Does the store hold (or want) `doc`?
    ///
    /// # Errors
    /// SQLite failed.
    pub fn holds(&self, doc: &DocumentId) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM documents WHERE doc_id = ?1")?;
        Ok(stmt.exists([doc_key(doc)])?)
    }

    /// Remembers a document the device wants (fetched on the next sync).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn want(&self, doc: &DocumentId, now: i64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO documents (doc_id, updated_at) VALUES (?1, ?2)",
            params![doc_key(doc), now],
        )?;
        Ok(())
    }

    /// Every document the device holds or wants, with its kind once known.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn documents(&self) -> Result<Vec<(DocumentId, Option<DocKind>)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id, kind FROM documents ORDER BY doc_id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?))
            })?
            .filter_map(|row| {
                let (id, kind) = row.ok()?;
                let id: [u8; 16] = id.try_into().ok()?;
                Some((
                    DocumentId::from_bytes(id),
                    kind.as_deref().and_then(DocKind::parse),
                ))
            })
            .collect();
        Ok(rows)
    }

    /// Local changes the server has not acknowledged yet.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn pending_changes(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The server has every local change of `doc`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn acknowledge(&self, doc: &DocumentId) -> Result<()> {
        self.conn
            .execute("DELETE FROM pending WHERE doc_id = ?1", [doc_key(doc)])?;
        Ok(())
    }

    /// Refusals, grouped per document and reason, newest first.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn refusals(&self) -> Result<Vec<StoredRefusal>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, code, path, count(*), max(at) FROM refused_changes
             GROUP BY doc_id, code, path ORDER BY max(at) DESC",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .filter_map(|row| {
                let (id, code, path, n, at) = row.ok()?;
                let id: [u8; 16] = id.try_into().ok()?;
                Some(StoredRefusal {
                    doc: DocumentId::from_bytes(id),
                    code,
                    path,
                    changes: u64::try_from(n).unwrap_or(0),
                    at,
                })
            })
            .collect();
        Ok(rows)
    }

    /// A meta value.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets meta values in one transaction.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn set_meta(&mut self, values: &[(&str, Option<&str>)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (k, v) in values {
            match v {
                Some(v) => tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [k])?,
            };
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets meta values and remembers documents to fetch, in one transaction.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn set_meta_and_want(
        &mut self,
        values: &[(&str, Option<&str>)],
        want: &[DocumentId],
        now: i64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (k, v) in values {
            match v {
                Some(v) => tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?,
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [k])?,
            };
        }
        for doc in want {
            tx.execute(
                "INSERT OR IGNORE INTO documents (doc_id, updated_at) VALUES (?1, ?2)",
                params![doc_key(doc), now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes everything the device holds (a revoked device), keeping the schema.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn wipe(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        for table in [
            "documents",
            "changes",
            "sync_states",
            "refused_changes",
            "pending",
            "meta",
        ] {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        tx.commit()?;
        // Overwrite freed pages so deleted rows do not linger in the file.
        self.conn.execute_batch("VACUUM;")?;
        let _: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(())
    }

    /// Rows in a table (tests).
    ///
    /// # Errors
    /// Unknown table or SQLite failed.
    pub fn count(&self, table: &str) -> Result<u64> {
        if ![
            "documents",
            "changes",
            "sync_states",
            "refused_changes",
            "pending",
            "meta",
        ]
        .contains(&table)
        {
            return Err(Error::InvalidInput(format!("unknown table {table}")));
        }
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Before a document is forgotten (access lost), this device's changes the server never
/// acknowledged go to the refused list as `access-lost`. The engine already sets aside
/// those of the current actor id; this catches the ones written under an earlier one
/// (before the store was last opened), which only the `pending` rows still name.
fn keep_unacknowledged(tx: &Transaction<'_>, doc: &DocumentId, now: i64) -> Result<()> {
    let hashes: Vec<Vec<u8>> = {
        let mut stmt = tx.prepare_cached("SELECT hash FROM pending WHERE doc_id = ?1")?;
        stmt.query_map([doc_key(doc)], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?
    };
    if hashes.is_empty() {
        return Ok(());
    }
    // The change rows, or (once compacted away) the snapshot, hold the bytes.
    let mut whole: Option<std::collections::HashMap<ChangeHash, Vec<u8>>> = None;
    let mut ins = tx.prepare_cached(
        "INSERT INTO refused_changes (doc_id, hash, bytes, code, path, at)
         VALUES (?1, ?2, ?3, 'access-lost', '', ?4)",
    )?;
    for hash in hashes {
        let row: Option<Vec<u8>> = tx
            .query_row(
                "SELECT bytes FROM changes WHERE doc_id = ?1 AND hash = ?2",
                params![doc_key(doc), hash],
                |r| r.get(0),
            )
            .optional()?;
        let bytes = match row {
            Some(b) => Some(b),
            None => {
                if whole.is_none() {
                    let all = load_whole(tx, doc)?
                        .get_changes(&[])
                        .into_iter()
                        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
                        .collect();
                    whole = Some(all);
                }
                let h: Option<[u8; 32]> = hash.as_slice().try_into().ok();
                h.and_then(|h| whole.as_ref()?.get(&ChangeHash(h)).cloned())
            }
        };
        if let Some(bytes) = bytes {
            ins.execute(params![doc_key(doc), hash, bytes, now])?;
        } else {
            tracing::warn!("an unacknowledged change of a lost document has no bytes");
        }
    }
    Ok(())
}

/// The document as stored: its snapshot with its change rows applied.
fn load_whole(tx: &Transaction<'_>, doc: &DocumentId) -> Result<automerge::Automerge> {
    let snapshot: Option<Vec<u8>> = tx
        .query_row(
            "SELECT snapshot FROM documents WHERE doc_id = ?1",
            [doc_key(doc)],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let mut stmt = tx.prepare_cached("SELECT hash, bytes FROM changes WHERE doc_id = ?1")?;
    let rows = stmt
        .query_map([doc_key(doc)], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let changes = rows.into_iter().map(|(hash, bytes)| StoredChange {
        hash: ChangeHash(hash.try_into().unwrap_or([0; 32])),
        bytes,
    });
    let restored = kepu_sync_core::stored::restore(snapshot.as_deref(), changes);
    for problem in &restored.problems {
        tracing::error!(doc = %doc, problem = %problem, "stored document partly unreadable");
    }
    Ok(restored.doc)
}

fn touch(tx: &Transaction<'_>, doc: &DocumentId, kind: Option<DocKind>, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO documents (doc_id, kind, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE SET
           kind = coalesce(excluded.kind, documents.kind), updated_at = excluded.updated_at",
        params![doc_key(doc), kind_text(kind), now],
    )?;
    Ok(())
}
