//! What this process last wrote of each booking's records, kept as hashes, so that the
//! next write of the booking writes only the rows that changed (ADR 0180).
//!
//! A booking of 300 pupils ends the day with about 2,800 rows (roster, scans, anomalies);
//! each batch of check-ins changes a handful of them. Rewriting them all for every batch
//! wrote about eight rows for every check-in at the end of day. Writing only the changed
//! rows needs to know what the database holds without reading it back: this process
//! remembers what it wrote, with the random token it stored beside the rows
//! (`records_writes`). When the stored token is not its own, someone else wrote the
//! booking's records since (another node, `admin rebuild-projections`, a restore), and
//! the write replaces every row as before.
//!
//! A row is remembered as two 64-bit hashes, its key's and its whole content's, about
//! 40 bytes a row: 20 bookings of 2,800 rows are about 2 MiB. The memory holds at most
//! [`MAX_REMEMBERED_ROWS`] rows; past that, bookings are forgotten (their next write
//! replaces every row).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Mutex;

use prometheus::{IntCounterVec, Opts};

use super::rows::{Insert, Val};
use crate::error::Result;

/// At most this many rows are remembered across all bookings (about 10 MiB).
pub(super) const MAX_REMEMBERED_ROWS: usize = 250_000;

/// Builds the values of one row (`doc_id` first) from its index in the caller's source.
pub(super) type BuildRow<'a> = Box<dyn Fn(usize, &mut Vec<Val>) + Send + Sync + 'a>;

/// The statements of one table of a document's rows.
pub(super) struct Table {
    /// `INSERT INTO t (doc_id, …) VALUES`
    pub(super) insert: &'static str,
    /// After the values of an insert; may be empty.
    pub(super) tail: &'static str,
    /// `DELETE FROM t WHERE doc_id = $1`
    pub(super) delete_all: &'static str,
    /// `DELETE FROM t WHERE doc_id = $1 AND k1 = $2 …`: one row by its key.
    pub(super) delete_one: &'static str,
    /// Columns of a row.
    pub(super) width: usize,
    /// Which columns (after `doc_id`, which is column 0) make the key, in `delete_one`'s
    /// order.
    pub(super) key: &'static [usize],
}

/// One table's rows of one document, as they are to be written. A row is known by its
/// hashes first; its values (text columns are allocated strings) are built only when it is
/// written: a write of a booking that changed by a few scans builds a few rows, not its
/// every row (ADR 0195).
pub(super) struct TableRows<'a> {
    table: &'static Table,
    build: BuildRow<'a>,
    /// Key hash → row hash, for the rows kept (the first row of a key wins: the table's
    /// key is its primary key, which would refuse a second row of it).
    hashes: HashMap<u64, u64>,
    /// The key hash of each row kept, in order, with its index in the caller's source.
    keys: Vec<(u64, usize)>,
}

/// The hash of what `f` feeds: `DefaultHasher::new()` has fixed keys, so a row hashes the
/// same in every process and run.
pub(super) fn hash_of(f: impl FnOnce(&mut DefaultHasher)) -> u64 {
    let mut h = DefaultHasher::new();
    f(&mut h);
    h.finish()
}

impl<'a> TableRows<'a> {
    /// The rows of `items` in `table`: each known by the hash of its key's values
    /// (`key`) and of all its values (`content`), computed from the caller's typed values
    /// the same way for the same row each time (`doc_id`, the same for every row, may be
    /// left out); `values` builds a row's column values, `doc_id` first, when it is
    /// written.
    pub(super) fn of<T: Send + Sync + 'a>(
        table: &'static Table,
        items: Vec<T>,
        key: impl Fn(&T) -> u64,
        content: impl Fn(&T) -> u64,
        values: impl Fn(&T, &mut Vec<Val>) + Send + Sync + 'a,
    ) -> Self {
        let hashed: Vec<(u64, u64)> = items.iter().map(|t| (key(t), content(t))).collect();
        let mut rows = Self {
            table,
            build: Box::new(move |i, out| values(&items[i], out)),
            hashes: HashMap::with_capacity(hashed.len()),
            keys: Vec::with_capacity(hashed.len()),
        };
        for (i, (key, row)) in hashed.into_iter().enumerate() {
            // The first row of a key wins.
            if rows.hashes.contains_key(&key) {
                continue;
            }
            rows.hashes.insert(key, row);
            rows.keys.push((key, i));
        }
        rows
    }

    /// The values of kept row `i`, appended to `out`.
    fn values_into(&self, i: usize, out: &mut Vec<Val>) {
        let before = out.len();
        (self.build)(self.keys[i].1, out);
        debug_assert_eq!(
            out.len() - before,
            self.table.width,
            "a row of {}",
            self.table.insert
        );
    }

    /// The rows to write over `before` (what the database holds): the rows whose key is
    /// new or whose content changed, each with whether an old row of its key goes first.
    /// `None` when a row of `before` is gone (the caller replaces every row).
    fn changes(&self, before: &HashMap<u64, u64>) -> Option<Vec<(usize, bool)>> {
        if before.keys().any(|k| !self.hashes.contains_key(k)) {
            return None;
        }
        let mut out = Vec::new();
        for (i, (key, _)) in self.keys.iter().enumerate() {
            match before.get(key) {
                None => out.push((i, false)),
                Some(&row) if row != self.hashes[key] => out.push((i, true)),
                Some(_) => {}
            }
        }
        Some(out)
    }

    /// Replaces every row of the document.
    async fn replace(self, conn: &mut sqlx::AnyConnection, doc: &str) -> Result<HashMap<u64, u64>> {
        let t = self.table;
        sqlx::query(sqlx::AssertSqlSafe(t.delete_all))
            .bind(doc)
            .execute(&mut *conn)
            .await?;
        let mut insert = Insert::new(t.insert, t.width, t.tail);
        let mut values = Vec::with_capacity(self.keys.len() * t.width);
        for i in 0..self.keys.len() {
            self.values_into(i, &mut values);
        }
        insert.extend(values);
        insert.run(conn).await?;
        Ok(self.hashes)
    }

    /// Writes the `changes` over what the database holds.
    async fn apply(
        self,
        conn: &mut sqlx::AnyConnection,
        changes: Vec<(usize, bool)>,
    ) -> Result<HashMap<u64, u64>> {
        let t = self.table;
        let mut insert = Insert::new(t.insert, t.width, t.tail);
        let mut values = Vec::with_capacity(t.width);
        for (i, replaces) in changes {
            values.clear();
            self.values_into(i, &mut values);
            if replaces {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(t.delete_one));
                for v in std::iter::once(&values[0]).chain(t.key.iter().map(|&k| &values[k])) {
                    q = match v {
                        Val::Text(s) => q.bind(s.clone()),
                        Val::Int(n) => q.bind(*n),
                    };
                }
                q.execute(&mut *conn).await?;
            }
            insert.extend(values.drain(..));
        }
        insert.run(conn).await?;
        Ok(self.hashes)
    }
}

/// A booking's rows as this process last wrote them.
struct Written {
    token: i64,
    tables: Vec<HashMap<u64, u64>>,
    /// The hash of what the slot's capacity decision reads of the booking.
    decided_on: u64,
}

impl Written {
    fn rows(&self) -> usize {
        self.tables.iter().map(HashMap::len).sum()
    }
}

/// What this process last wrote of each booking's records (see the module doc).
pub(super) struct WrittenRecords {
    inner: Mutex<Memory>,
    /// `kepu_records_rows_written_total{write}`: rows written by writes of only the
    /// changed rows (`changed`) and by writes of every row (`everything`).
    rows_written: IntCounterVec,
}

impl Default for WrittenRecords {
    fn default() -> Self {
        let rows_written = IntCounterVec::new(
            Opts::new(
                "kepu_records_rows_written_total",
                "Rows of bookings' records written, by whether the write held only the changed rows or every row",
            ),
            &["write"],
        )
        .unwrap_or_else(|_| unreachable!("the metric's name and label are valid"));
        for write in ["changed", "everything"] {
            rows_written.with_label_values(&[write]);
        }
        Self {
            inner: Mutex::default(),
            rows_written,
        }
    }
}

#[derive(Default)]
struct Memory {
    by_doc: HashMap<String, Written>,
    rows: usize,
}

/// How a document's rows were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrote {
    /// Every row again (this many).
    Everything(usize),
    /// Only the rows that changed (this many).
    Changed(usize),
}

impl WrittenRecords {
    fn take(&self, doc: &str) -> Option<Written> {
        let mut m = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let w = m.by_doc.remove(doc)?;
        m.rows -= w.rows();
        Some(w)
    }

    fn put(&self, doc: &str, w: Written) {
        let mut m = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rows = w.rows();
        if rows > MAX_REMEMBERED_ROWS {
            return;
        }
        while m.rows + rows > MAX_REMEMBERED_ROWS {
            let Some(victim) = m.by_doc.keys().next().cloned() else {
                break;
            };
            if let Some(v) = m.by_doc.remove(&victim) {
                m.rows -= v.rows();
            }
        }
        m.rows += rows;
        m.by_doc.insert(doc.to_owned(), w);
    }

    /// The `kepu_records_rows_written_total` counter, to register with the server's
    /// metrics.
    pub(super) fn rows_written(&self) -> IntCounterVec {
        self.rows_written.clone()
    }

    /// Forgets what it wrote of `doc`: its next write replaces every row and asks for its
    /// slot's decision.
    pub(super) fn forget(&self, doc: &str) {
        let _ = self.take(doc);
    }

    /// Forgets everything (the records were cleared).
    pub(super) fn forget_all(&self) {
        let mut m = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.by_doc.clear();
        m.rows = 0;
    }

    /// Writes a document's `tables` inside `tx` (which holds the document's records
    /// lock): only the changed rows when the stored token is the one this process wrote
    /// last, every row otherwise; then stores a new token. The memory is updated by
    /// [`Pending::committed`] once the transaction commits: a write that fails leaves the
    /// document forgotten, so the next write replaces every row.
    ///
    /// # Errors
    /// A database failure.
    pub(super) async fn write(
        &self,
        conn: &mut sqlx::AnyConnection,
        doc: &str,
        tables: Vec<TableRows<'_>>,
        decided_on: u64,
    ) -> Result<Pending<'_>> {
        let before = self.take(doc);
        let token: i64 = rand::random();
        // The database holds what this process remembers when the stored token is the
        // one it wrote last: swapping that token for the new one tells, in one statement.
        let ours = match &before {
            Some(b) => {
                sqlx::query("UPDATE records_writes SET token = $3 WHERE doc_id = $1 AND token = $2")
                    .bind(doc)
                    .bind(b.token)
                    .bind(token)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                    == 1
            }
            None => false,
        };
        let decision_due = before.as_ref().is_none_or(|b| b.decided_on != decided_on);
        let plan = before
            .filter(|b| ours && b.tables.len() == tables.len())
            .and_then(|b| {
                tables
                    .iter()
                    .zip(&b.tables)
                    .map(|(t, before)| t.changes(before))
                    .collect::<Option<Vec<_>>>()
            });
        let mut hashes = Vec::with_capacity(tables.len());
        let wrote = match plan {
            Some(plan) => {
                let changed = plan.iter().map(Vec::len).sum();
                for (t, changes) in tables.into_iter().zip(plan) {
                    hashes.push(t.apply(conn, changes).await?);
                }
                Wrote::Changed(changed)
            }
            None => {
                let rows = tables.iter().map(|t| t.keys.len()).sum();
                for t in tables {
                    hashes.push(t.replace(conn, doc).await?);
                }
                Wrote::Everything(rows)
            }
        };
        if !ours {
            sqlx::query(
                "INSERT INTO records_writes (doc_id, token) VALUES ($1, $2) \
                 ON CONFLICT (doc_id) DO UPDATE SET token = excluded.token",
            )
            .bind(doc)
            .bind(token)
            .execute(&mut *conn)
            .await?;
        }
        Ok(Pending {
            memory: self,
            doc: doc.to_owned(),
            written: Written {
                token,
                tables: hashes,
                decided_on,
            },
            wrote,
            decision_due,
        })
    }
}

/// A write whose transaction has not committed yet.
pub(super) struct Pending<'a> {
    memory: &'a WrittenRecords,
    doc: String,
    written: Written,
    pub(super) wrote: Wrote,
    /// What the slot's capacity decision reads of the booking changed since this
    /// process last wrote it, or it does not know (ADR 0188).
    pub(super) decision_due: bool,
}

impl Pending<'_> {
    /// The token the write stored beside the document's records.
    pub(super) fn token(&self) -> i64 {
        self.written.token
    }

    /// The transaction committed: remember what it wrote.
    pub(super) fn committed(self) -> Wrote {
        let (label, rows) = match self.wrote {
            Wrote::Changed(n) => ("changed", n),
            Wrote::Everything(n) => ("everything", n),
        };
        self.memory
            .rows_written
            .with_label_values(&[label])
            .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
        self.memory.put(&self.doc, self.written);
        self.wrote
    }
}

#[cfg(test)]
mod tests {
    use std::hash::Hash;

    use super::*;

    const TABLE: Table = Table {
        insert: "INSERT",
        tail: "",
        delete_all: "DELETE",
        delete_one: "DELETE ONE",
        width: 3,
        key: &[1],
    };

    /// A table of rows `(key, value)` of document "d", hashed from those typed values.
    fn table(rows: &'static [(&'static str, i64)]) -> TableRows<'static> {
        TableRows::of(
            &TABLE,
            rows.to_vec(),
            |(k, _)| hash_of(|h| k.hash(h)),
            |r| hash_of(|h| r.hash(h)),
            |(k, v), out| out.extend(["d".into(), (*k).into(), (*v).into()]),
        )
    }

    #[test]
    fn only_new_and_changed_rows_are_written() {
        let before = table(&[("a", 1), ("b", 2)]);
        let after = table(&[("a", 1), ("b", 3), ("c", 4)]);
        let changes = after.changes(&before.hashes).expect("nothing removed");
        assert_eq!(changes, vec![(1, true), (2, false)]);
    }

    #[test]
    fn a_removed_row_means_every_row_again() {
        let before = table(&[("a", 1), ("b", 2)]);
        let after = table(&[("a", 1)]);
        assert_eq!(after.changes(&before.hashes), None);
    }

    #[test]
    fn the_first_row_of_a_key_wins_and_its_values_are_built_from_its_source_row() {
        let t = table(&[("a", 1), ("a", 2), ("b", 3)]);
        assert_eq!(t.keys.len(), 2);
        assert_eq!(t.hashes.len(), 2);
        let mut out = Vec::new();
        t.values_into(1, &mut out);
        assert_eq!(out, vec![Val::from("d"), Val::from("b"), Val::Int(3)]);
    }

    #[test]
    fn the_memory_stays_within_its_bound() {
        let memory = WrittenRecords::default();
        let many = |n: u64| Written {
            token: 1,
            tables: vec![(0..n).map(|i| (i, i)).collect()],
            decided_on: 0,
        };
        memory.put("a", many(200_000));
        memory.put("b", many(100_000));
        let m = memory.inner.lock().unwrap();
        assert!(m.rows <= MAX_REMEMBERED_ROWS, "{} rows", m.rows);
        assert!(m.by_doc.contains_key("b"));
        assert!(!m.by_doc.contains_key("a"));
    }
}
