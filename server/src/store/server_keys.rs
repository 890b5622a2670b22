//! The server's signing seed, generated on first start and kept in `server_keys`.

use sqlx::{AnyPool, Row};

use crate::clock::now_ms;
use crate::error::{Error, Result};

const SIGNING_SEED: &str = "signing_seed";

/// Loads the stored seed, or stores the configured one (or fresh random bytes) on first
/// start. A configured seed that differs from the stored one is refused.
pub(super) async fn load_or_create_seed(
    pool: &AnyPool,
    configured: Option<[u8; 32]>,
) -> Result<[u8; 32]> {
    let candidate = configured.unwrap_or_else(|| {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        seed
    });
    // Whoever inserts first wins; every node then reads the same seed.
    sqlx::query(
        "INSERT INTO server_keys (name, seed, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(SIGNING_SEED)
    .bind(candidate.to_vec())
    .bind(now_ms())
    .execute(pool)
    .await?;
    let row = sqlx::query("SELECT seed FROM server_keys WHERE name = $1")
        .bind(SIGNING_SEED)
        .fetch_one(pool)
        .await?;
    let stored: Vec<u8> = row.try_get("seed")?;
    let stored: [u8; 32] = stored
        .try_into()
        .map_err(|_| Error::Corrupt("server_keys"))?;
    if configured.is_some_and(|c| c != stored) {
        return Err(Error::Config(
            "KEPU_SERVER_SEED differs from the seed stored in the database".into(),
        ));
    }
    Ok(stored)
}
