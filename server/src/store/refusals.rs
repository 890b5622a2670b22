//! Refusals: changes a device sent that the server would not merge, kept for admins and
//! for the device to show.

use kepu_sync_core::refusal::RefusalCode;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::rows;
use crate::error::Result;
use crate::store::Store;

/// One refused change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// Its id.
    pub id: Uuid,
    /// The device that sent it.
    pub device_id: Uuid,
    /// The document (bs58check id).
    pub doc_id: String,
    /// A machine-readable reason (its text form in JSON and in the database).
    pub code: RefusalCode,
    /// A human-readable detail (never personal data).
    pub detail: String,
    /// When it was refused (unix ms).
    pub at: i64,
}

/// Longest detail stored (characters); a longer one is cut and ends with `…`. The detail
/// holds a document path a device chose, so it is bounded here whatever the caller sends.
pub const MAX_DETAIL_CHARS: usize = 300;
/// Refusals kept per device: beyond this, the oldest are dropped as new ones arrive, so
/// a device that keeps sending refused changes cannot fill the table.
pub const MAX_REFUSALS_PER_DEVICE: i64 = 500;
/// Longest code stored (codes are short kebab-case words).
const MAX_CODE_CHARS: usize = 64;

fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

impl Store {
    /// Records a refusal and counts it as pending for the device. The code and detail
    /// are cut to their bounds, and only the device's newest
    /// [`MAX_REFUSALS_PER_DEVICE`] refusals are kept.
    ///
    /// # Errors
    /// A database failure (e.g. unknown device).
    pub async fn record_refusal(&self, refusal: &Refusal) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO refusals (id, device_id, doc_id, code, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(refusal.id.to_string())
        .bind(refusal.device_id.to_string())
        .bind(bounded(&refusal.doc_id, MAX_CODE_CHARS))
        .bind(bounded(refusal.code.as_str(), MAX_CODE_CHARS))
        .bind(bounded(&refusal.detail, MAX_DETAIL_CHARS))
        .bind(refusal.at)
        .execute(&mut *tx)
        .await?;
        // Keep the newest rows only (by time, then id, as they are listed).
        sqlx::query(
            "DELETE FROM refusals WHERE device_id = $1 AND id NOT IN (\
             SELECT id FROM refusals WHERE device_id = $1 \
             ORDER BY at DESC, id DESC LIMIT $2)",
        )
        .bind(refusal.device_id.to_string())
        .bind(MAX_REFUSALS_PER_DEVICE)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE devices SET pending_refusals = CASE WHEN pending_refusals >= $2 \
             THEN $2 ELSE pending_refusals + 1 END WHERE id = $1",
        )
        .bind(refusal.device_id.to_string())
        .bind(MAX_REFUSALS_PER_DEVICE)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A device's refusals, oldest first.
    ///
    /// # Errors
    /// A database failure.
    pub async fn refusals_of_device(&self, device_id: Uuid) -> Result<Vec<Refusal>> {
        let rows = sqlx::query(
            "SELECT id, device_id, doc_id, code, detail, at FROM refusals \
             WHERE device_id = $1 ORDER BY at, id",
        )
        .bind(device_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Refusal {
                    id: rows::uuid(row, "id", "refusals")?,
                    device_id: rows::uuid(row, "device_id", "refusals")?,
                    doc_id: row.try_get("doc_id")?,
                    code: RefusalCode::parse(row.try_get("code")?),
                    detail: row.try_get("detail")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }
}
