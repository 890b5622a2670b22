//! Documents and their change rows: the source of truth. Runs the sync engine's storage
//! tasks; appends are idempotent by change hash and many tasks commit in one transaction.

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{Loaded, StorageTask, StoredChange};
use kepu_sync_core::ids::DeviceId;
use sqlx::Row;

use crate::error::Result;
use crate::store::Store;
use crate::store::rows::{ROWS_PER_INSERT, placeholders};

fn hash_from(bytes: &[u8]) -> Option<automerge::ChangeHash> {
    <[u8; 32]>::try_from(bytes).ok().map(automerge::ChangeHash)
}

fn heads_blob(heads: &[automerge::ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

impl Store {
    /// Loads a document's snapshot, change rows and sync states, in one consistent read:
    /// a compaction by another task or node cannot fall between the snapshot and the
    /// rows (which would lose the rows it folded in).
    ///
    /// # Errors
    /// A database failure.
    pub async fn load_document(&self, doc: DocumentId) -> Result<Loaded> {
        self.read_document(doc, true).await
    }

    /// A document's change rows and the heads of its stored snapshot, without the
    /// snapshot (another node stored rows; see `StorageTask::LoadChanges`).
    ///
    /// # Errors
    /// A database failure.
    pub async fn load_changes(&self, doc: DocumentId) -> Result<Loaded> {
        self.read_document(doc, false).await
    }

    async fn read_document(&self, doc: DocumentId, whole: bool) -> Result<Loaded> {
        let id = doc.to_string();
        let mut tx = self.begin_read().await?;
        let row =
            sqlx::query("SELECT snapshot_heads, heads, snapshot FROM documents WHERE doc_id = $1")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
        let snapshot_heads: Vec<automerge::ChangeHash> = row
            .as_ref()
            .and_then(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten())
            .map(|b| b.chunks_exact(32).filter_map(hash_from).collect())
            .unwrap_or_default();
        let stored_heads: Vec<automerge::ChangeHash> = row
            .as_ref()
            .and_then(|r| r.try_get::<Option<Vec<u8>>, _>(1).ok().flatten())
            .map(|b| b.chunks_exact(32).filter_map(hash_from).collect())
            .unwrap_or_default();
        let snapshot: Option<Vec<u8>> = if whole {
            row.and_then(|r| r.try_get::<Option<Vec<u8>>, _>(2).ok().flatten())
        } else {
            None
        };
        let changes = sqlx::query("SELECT hash, data FROM changes WHERE doc_id = $1")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .filter_map(|r| {
                let hash: Vec<u8> = r.try_get(0).ok()?;
                let bytes: Vec<u8> = r.try_get(1).ok()?;
                Some(StoredChange {
                    hash: hash_from(&hash)?,
                    bytes,
                })
            })
            .collect();
        let sync_states = if whole {
            sqlx::query("SELECT peer_storage_id, state FROM sync_states WHERE doc_id = $1")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .filter_map(|r| {
                    Some((
                        r.try_get::<String, _>(0).ok()?,
                        r.try_get::<Vec<u8>, _>(1).ok()?,
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(Loaded {
            snapshot,
            changes,
            sync_states,
            snapshot_heads: Some(snapshot_heads),
            stored_heads: Some(stored_heads),
        })
    }

    /// Runs `tasks` as [`Store::run_document_tasks`] does, in one transaction; if that
    /// fails, runs each task in a transaction of its own, so that one failing task fails
    /// only itself and not the unrelated documents batched with it. One result per task.
    pub async fn run_document_tasks_isolated(
        &self,
        tasks: &[&StorageTask],
        now: i64,
    ) -> Vec<Result<()>> {
        let first = match self.run_document_tasks(tasks, now).await {
            Ok(()) => return tasks.iter().map(|_| Ok(())).collect(),
            Err(e) => e,
        };
        if tasks.len() == 1 {
            return vec![Err(first)];
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(self.run_document_tasks(&[*task], now).await);
        }
        out
    }

    /// Runs storage tasks other than `Load` in one transaction, in order. Consecutive
    /// appends, of any documents, are written together: one multi-row upsert of their
    /// documents and multi-row inserts of their change rows.
    ///
    /// # Errors
    /// A database failure; then none of the tasks took effect.
    pub async fn run_document_tasks(&self, tasks: &[&StorageTask], now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Actor ids first: changes are stored only under actor ids this transaction
        // finds claimed by the device that wrote them (gap 6 closed: another node may
        // have given one to another device since this node learned its claims).
        let mut wanted: Vec<(Vec<u8>, DeviceId)> = Vec::new();
        for task in tasks {
            match task {
                StorageTask::ClaimActors { device, actors } => {
                    wanted.extend(actors.iter().map(|a| (a.clone(), *device)));
                }
                StorageTask::Append { owners, .. } => wanted.extend(owners.iter().cloned()),
                _ => {}
            }
        }
        let claimed = self.claims.claim(tx.tx(), &wanted, now).await?;
        let mut appends: Vec<&StorageTask> = Vec::new();
        // Peers' sync states, written together at the end: no other task reads them, and
        // a reconnect storm saves one per device and document (ADR 0187).
        let mut states: Vec<&StorageTask> = Vec::new();
        for task in tasks {
            if matches!(task, StorageTask::Append { .. }) {
                appends.push(task);
                continue;
            }
            if matches!(task, StorageTask::SaveSyncState { .. }) {
                states.push(task);
                continue;
            }
            append_all(tx.tx(), &std::mem::take(&mut appends), now).await?;
            match task {
                StorageTask::Load { .. }
                | StorageTask::LoadChanges { .. }
                | StorageTask::Append { .. }
                | StorageTask::Quarantine { .. }
                | StorageTask::Forget { .. } => {}
                // Claimed above, with the appends' owners.
                StorageTask::ClaimActors { .. } => {}
                StorageTask::Compact {
                    doc,
                    snapshot,
                    heads,
                    delete,
                    replaces,
                } => {
                    let id = doc.to_string();
                    // Only over the snapshot the engine knows: another node's newer one
                    // may hold changes whose rows it deleted (ADR 0120).
                    let expected = replaces.as_deref().map(heads_blob);
                    let replaced = sqlx::query(
                        "UPDATE documents SET snapshot = $2, snapshot_heads = $3, updated_at = $4 \
                         WHERE doc_id = $1 AND ($5 = 0 OR COALESCE(snapshot_heads, $6) = $6)",
                    )
                    .bind(&id)
                    .bind(snapshot.clone())
                    .bind(heads_blob(heads))
                    .bind(now)
                    .bind(i64::from(expected.is_some()))
                    .bind(expected.unwrap_or_default())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if replaced == 0 {
                        return Err(crate::error::Error::Conflict(
                            "the stored snapshot changed since it was read".into(),
                        ));
                    }
                    delete_changes(tx.tx(), &id, delete).await?;
                }
                // Written below, with the others.
                StorageTask::SaveSyncState { .. } => {}
            }
        }
        append_all(tx.tx(), &appends, now).await?;
        save_sync_states(tx.tx(), &states).await?;
        if self.backend == crate::store::Backend::Postgres {
            // Delivered to the other nodes when (and only if) this commits, claims
            // before documents: a node learns who owns an actor id before it reads the
            // changes written under it.
            let claims: Vec<String> = claimed
                .iter()
                .map(|(a, d)| crate::cluster::claim_id(a, *d))
                .collect();
            for payload in crate::cluster::payloads(&self.node, crate::cluster::Tag::Actor, &claims)
            {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::cluster::CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut stored: Vec<String> = Vec::new();
            for task in tasks {
                if let StorageTask::Append { doc, .. } = task {
                    let id = doc.to_string();
                    if !stored.contains(&id) {
                        stored.push(id);
                    }
                }
            }
            for payload in crate::cluster::payloads(&self.node, crate::cluster::Tag::Doc, &stored) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::cluster::CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.claims.confirmed(&wanted);
        Ok(())
    }

    /// Tells the other nodes sharing the database (PostgreSQL) about `ids` (nothing on
    /// SQLite, which has one node).
    ///
    /// # Errors
    /// A database failure.
    pub async fn notify_nodes(&self, tag: crate::cluster::Tag, ids: &[String]) -> Result<()> {
        if self.backend != crate::store::Backend::Postgres {
            return Ok(());
        }
        for payload in crate::cluster::payloads(&self.node, tag, ids) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::cluster::CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every actor id claim: the device that owns it (loaded into the sync engine at start).
    ///
    /// # Errors
    /// A database failure.
    pub async fn actor_claims(&self) -> Result<Vec<(Vec<u8>, DeviceId)>> {
        Ok(sqlx::query("SELECT actor, device_id FROM device_actors")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .filter_map(|r| {
                let actor: Vec<u8> = r.try_get(0).ok()?;
                let device: String = r.try_get(1).ok()?;
                Some((actor, device.parse().ok()?))
            })
            .collect())
    }

    /// Notes that the records of `doc` were written from the state with `heads`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn mark_projected(
        &self,
        doc: DocumentId,
        heads: &[automerge::ChangeHash],
    ) -> Result<()> {
        // Derived, like the records it follows: its commit does not wait for the disk.
        let mut tx = self.begin_records_tx().await?;
        mark_projected_in(tx.tx(), &doc.to_string(), Some(heads)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Documents whose stored changes may be newer than their records (the server
    /// stopped between storing changes and writing records), venues first.
    ///
    /// # Errors
    /// A database failure.
    pub async fn stale_projections(&self) -> Result<Vec<DocumentId>> {
        Ok(sqlx::query(
            "SELECT doc_id FROM documents WHERE heads IS NOT NULL \
             AND (projected_heads IS NULL OR projected_heads <> heads) \
             ORDER BY CASE WHEN kind = 'venue' THEN 0 ELSE 1 END, doc_id",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok()?.parse().ok())
        .collect())
    }

    /// Every stored document id, with its kind.
    ///
    /// # Errors
    /// A database failure.
    pub async fn document_ids(&self) -> Result<Vec<(DocumentId, String)>> {
        Ok(
            sqlx::query("SELECT doc_id, kind FROM documents ORDER BY doc_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .filter_map(|r| {
                    Some((
                        r.try_get::<String, _>(0).ok()?.parse().ok()?,
                        r.try_get::<String, _>(1).ok()?,
                    ))
                })
                .collect(),
        )
    }

    /// Number of change rows and bytes stored for a document (rows, snapshot bytes).
    ///
    /// # Errors
    /// A database failure.
    pub async fn document_size(&self, doc: DocumentId) -> Result<(i64, i64)> {
        let id = doc.to_string();
        let rows: i64 = sqlx::query("SELECT COUNT(*) FROM changes WHERE doc_id = $1")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let snap: Option<Vec<u8>> = sqlx::query("SELECT snapshot FROM documents WHERE doc_id = $1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await?
            .and_then(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten());
        Ok((
            rows,
            snap.map_or(0, |s| i64::try_from(s.len()).unwrap_or(i64::MAX)),
        ))
    }
}

/// Writes `Append` tasks: the documents' rows (kind, time, heads; the last task of a
/// document wins) and their change rows, idempotent by (document, hash).
/// Writes peers' sync states as multi-row upserts; of several for the same document and
/// peer, the last.
async fn save_sync_states(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tasks: &[&StorageTask],
) -> Result<()> {
    let mut latest: std::collections::HashMap<(DocumentId, &str), usize> =
        std::collections::HashMap::new();
    let mut rows: Vec<(String, &str, &[u8])> = Vec::new();
    for task in tasks {
        let StorageTask::SaveSyncState { doc, peer, state } = task else {
            continue;
        };
        let row = (doc.to_string(), peer.as_str(), state.as_slice());
        match latest.entry((*doc, peer.as_str())) {
            std::collections::hash_map::Entry::Occupied(at) => rows[*at.get()] = row,
            std::collections::hash_map::Entry::Vacant(at) => {
                at.insert(rows.len());
                rows.push(row);
            }
        }
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO sync_states (doc_id, peer_storage_id, state) VALUES {} \
             ON CONFLICT (doc_id, peer_storage_id) DO UPDATE SET state = excluded.state",
            placeholders(tx, chunk.len(), 3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (doc, peer, state) in chunk {
            q = q.bind(doc.clone()).bind(*peer).bind(state.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn append_all(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tasks: &[&StorageTask],
    now: i64,
) -> Result<()> {
    let mut docs: Vec<(String, &'static str, Vec<u8>)> = Vec::new();
    let mut index: std::collections::HashMap<DocumentId, usize> = std::collections::HashMap::new();
    let mut rows: Vec<(usize, &StoredChange)> = Vec::new();
    let mut seen: std::collections::HashSet<(DocumentId, automerge::ChangeHash)> =
        std::collections::HashSet::new();
    for task in tasks {
        let StorageTask::Append {
            doc,
            kind,
            changes,
            heads,
            ..
        } = task
        else {
            continue;
        };
        let kind = kind.map_or("", |k| k.as_str());
        let i = *index.entry(*doc).or_insert_with(|| {
            docs.push((doc.to_string(), "", Vec::new()));
            docs.len() - 1
        });
        if !kind.is_empty() {
            docs[i].1 = kind;
        }
        docs[i].2 = heads_blob(heads);
        for c in changes {
            if seen.insert((*doc, c.hash)) {
                rows.push((i, c));
            }
        }
    }
    for chunk in docs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO documents (doc_id, kind, updated_at, heads) VALUES {} \
             ON CONFLICT (doc_id) DO UPDATE SET updated_at = excluded.updated_at, heads = excluded.heads, \
             kind = CASE WHEN excluded.kind <> '' THEN excluded.kind ELSE documents.kind END",
            placeholders(tx, chunk.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, kind, heads) in chunk {
            q = q.bind(id.clone()).bind(*kind).bind(now).bind(heads.clone());
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO changes (doc_id, hash, data, received_at) VALUES {} \
             ON CONFLICT (doc_id, hash) DO NOTHING",
            placeholders(tx, chunk.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, c) in chunk {
            q = q
                .bind(docs[*i].0.clone())
                .bind(c.hash.0.to_vec())
                .bind(c.bytes.clone())
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Notes, in the transaction that writes a document's records, the heads they were
/// computed at (`None`: leaves them as they are), so that records and their heads are
/// committed together.
pub(super) async fn mark_projected_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    doc: &str,
    heads: Option<&[automerge::ChangeHash]>,
) -> Result<()> {
    if let Some(heads) = heads {
        sqlx::query("UPDATE documents SET projected_heads = $2 WHERE doc_id = $1")
            .bind(doc)
            .bind(heads_blob(heads))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Deletes the change rows a snapshot folded in, [`ROWS_PER_INSERT`] hashes a statement
/// (one statement per hash was the live day's most frequent statement: a compaction
/// folds a hundred changes or more).
async fn delete_changes(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    doc: &str,
    hashes: &[automerge::ChangeHash],
) -> Result<()> {
    for chunk in hashes.chunks(ROWS_PER_INSERT) {
        let list = placeholders(tx, chunk.len(), 1);
        let last = if tx.backend_name() == "SQLite" {
            "?".to_owned()
        } else {
            format!("${}", chunk.len() + 1)
        };
        let sql = format!("DELETE FROM changes WHERE hash IN ({list}) AND doc_id = {last}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for h in chunk {
            q = q.bind(h.0.to_vec());
        }
        q.bind(doc).execute(&mut **tx).await?;
    }
    Ok(())
}
