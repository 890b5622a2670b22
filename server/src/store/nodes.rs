//! What several nodes on one PostgreSQL share beyond documents and records: whether the
//! leader's lock is still held, and which devices are connected to which node.

use std::collections::HashSet;

use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::store::rows::numbered;

/// Rows per multi-row statement.
const CHUNK: usize = 200;

impl Store {
    /// Does the session with backend `pid` hold the session advisory lock `key` now?
    /// (PostgreSQL; a terminated session holds nothing.)
    ///
    /// # Errors
    /// A database failure.
    pub async fn holds_advisory_lock(&self, pid: i32, key: i64) -> Result<bool> {
        let high = key >> 32;
        let low = key & 0xffff_ffff;
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = $1 AND classid::bigint = $2 AND objid::bigint = $3 AND objsubid = 1)",
        )
        .bind(pid)
        .bind(high)
        .bind(low)
        .fetch_one(&self.pool)
        .await?)
    }

    /// This node holds no sync connection of any of `devices` any more: their rows of
    /// this node go, 200 devices a statement.
    ///
    /// # Errors
    /// A database failure.
    pub async fn presence_gone(&self, devices: &[Uuid]) -> Result<()> {
        for chunk in devices.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM device_presence WHERE node = $1 AND device_id IN ({})",
                numbered(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&*self.node);
            for d in chunk {
                q = q.bind(d.to_string());
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Marks `devices` as connected to this node at `now`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn presence_refresh(&self, devices: &[Uuid], now: i64) -> Result<()> {
        for chunk in devices.chunks(CHUNK) {
            let mut sql =
                String::from("INSERT INTO device_presence (node, device_id, seen_at) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, ${}, $2)", i + 3));
            }
            sql.push_str(" ON CONFLICT (node, device_id) DO UPDATE SET seen_at = excluded.seen_at");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&*self.node)
                .bind(now);
            for d in chunk {
                q = q.bind(d.to_string());
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Deletes this node's rows not refreshed since `since`, and every node's rows older
    /// than `dead_before` (nodes that died).
    ///
    /// # Errors
    /// A database failure.
    pub async fn presence_prune(&self, since: i64, dead_before: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM device_presence WHERE (node = $1 AND seen_at < $2) OR seen_at < $3",
        )
        .bind(&*self.node)
        .bind(since)
        .bind(dead_before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which of `devices` another node marked connected since `since`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn present_elsewhere(&self, devices: &[Uuid], since: i64) -> Result<HashSet<Uuid>> {
        let mut out = HashSet::new();
        for chunk in devices.chunks(CHUNK) {
            let sql = format!(
                "SELECT DISTINCT device_id FROM device_presence \
                 WHERE node <> $1 AND seen_at >= $2 AND device_id IN ({})",
                numbered(3, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&*self.node)
                .bind(since);
            for d in chunk {
                q = q.bind(d.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                let id: String = row.try_get(0)?;
                if let Ok(id) = id.parse() {
                    out.insert(id);
                }
            }
        }
        Ok(out)
    }
}
