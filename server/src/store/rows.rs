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
