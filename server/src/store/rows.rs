//! Small helpers for reading `Any` rows.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::error::Result;
use crate::store::parse_uuid;

/// Reads a non-null uuid text column.
pub(super) fn uuid(row: &AnyRow, column: &str, table: &'static str) -> Result<Uuid> {
    let text: String = row.try_get(column)?;
    parse_uuid(&text, table)
}

/// Reads a nullable uuid text column.
pub(super) fn opt_uuid(row: &AnyRow, column: &str, table: &'static str) -> Result<Option<Uuid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_uuid(&t, table)).transpose()
}

/// Rows written per statement by [`Insert`] (and by the storage path's appends).
pub(super) const ROWS_PER_INSERT: usize = 200;

/// `($1, $2, …), (…)` for `rows` rows of `width` parameters, or `(?, ?, …), (…)` on
/// SQLite. SQLite finds a named parameter (`$k`) by walking the list of every name in the
/// statement, so binding a statement of n named parameters takes about n² steps: a
/// 200-row insert of 7 columns spent more in that walk than in writing its rows (8 % of
/// the server's CPU at the end of day, `docs/performance.md`). Bare `?` parameters have no
/// name and are bound in order. PostgreSQL wants `$k`.
pub(super) fn placeholders(conn: &sqlx::AnyConnection, rows: usize, width: usize) -> String {
    let numbered = conn.backend_name() != "SQLite";
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push('$');
                sql.push_str(&(r * width + c + 1).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// `n` numbered parameters from `$first` on, for an `IN (…)` list: `$3, $4, $5`.
pub(super) fn numbered(first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for k in first..first + n {
        if k > first {
            out.push_str(", ");
        }
        out.push('$');
        out.push_str(&k.to_string());
    }
    out
}

/// A value of a row for [`Insert`].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(super) enum Val {
    Text(String),
    Int(i64),
}

impl From<String> for Val {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

/// Rows of one table written [`ROWS_PER_INSERT`] at a time, one statement each, instead
/// of one statement (one round trip on PostgreSQL) per row.
pub(super) struct Insert {
    /// `INSERT INTO t (a, b) VALUES`
    head: &'static str,
    /// After the values, e.g. `ON CONFLICT … DO NOTHING`; may be empty.
    tail: &'static str,
    width: usize,
    values: Vec<Val>,
}

impl Insert {
    pub(super) const fn new(head: &'static str, width: usize, tail: &'static str) -> Self {
        Self {
            head,
            tail,
            width,
            values: Vec::new(),
        }
    }

    /// Values of whole rows, `width` each.
    pub(super) fn extend(&mut self, values: impl IntoIterator<Item = Val>) {
        self.values.extend(values);
        debug_assert_eq!(self.values.len() % self.width, 0, "rows of {}", self.head);
    }

    /// Writes the rows.
    ///
    /// # Errors
    /// A database failure.
    pub(super) async fn run(self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        let mut values = self.values.into_iter().peekable();
        while values.peek().is_some() {
            let chunk: Vec<Val> = values.by_ref().take(ROWS_PER_INSERT * self.width).collect();
            let sql = format!(
                "{} {} {}",
                self.head,
                placeholders(conn, chunk.len() / self.width, self.width),
                self.tail
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for v in chunk {
                q = match v {
                    Val::Text(s) => q.bind(s),
                    Val::Int(i) => q.bind(i),
                };
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn an_in_list_numbers_its_parameters_from_the_first_free_one() {
        assert_eq!(numbered(3, 3), "$3, $4, $5");
        assert_eq!(numbered(2, 1), "$2");
        assert_eq!(numbered(2, 0), "");
    }
}
