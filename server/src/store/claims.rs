//! Actor ids belong to devices: the claim table (`device_actors`) keeps the first device
//! that wrote under each actor id, on every node. Every transaction that stores changes
//! checks their actor ids' claims in it (another node may have given one to another
//! device since this node learned it). A claim, once committed, never changes, so this
//! process remembers the claims it saw committed and asks the table only about the
//! others: in the live day that was two statements for every batch of appends, for the
//! same few actor ids again and again.

use std::collections::HashMap;
use std::sync::Mutex;

use kepu_sync_core::ids::DeviceId;
use sqlx::Row;

use crate::error::Result;
use crate::store::rows::{ROWS_PER_INSERT, numbered, placeholders};

/// Claims remembered at most (about 100 bytes each); past that the memory starts over
/// and the table is asked again.
const MAX_REMEMBERED: usize = 20_000;

/// The claims this process saw committed: actor id → owning device.
#[derive(Debug, Default)]
pub(super) struct Claims {
    known: Mutex<HashMap<Vec<u8>, DeviceId>>,
}

impl Claims {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, DeviceId>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims each actor id of `wanted` for its device in `tx`, asking the table only
    /// about those this process has not seen committed: the claims made now, or
    /// [`crate::error::Error::ActorClaimed`] with the owners when one belongs to another
    /// device.
    ///
    /// # Errors
    /// A database failure, or an actor id claimed by another device.
    pub(super) async fn claim(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        wanted: &[(Vec<u8>, DeviceId)],
        now: i64,
    ) -> Result<Vec<(Vec<u8>, DeviceId)>> {
        let mut ask: Vec<(Vec<u8>, DeviceId)> = Vec::new();
        let mut taken: Vec<(Vec<u8>, DeviceId)> = Vec::new();
        {
            let known = self.known();
            for (actor, device) in wanted {
                match known.get(actor) {
                    Some(owner) if owner == device => {}
                    Some(owner) => {
                        if !taken.iter().any(|(a, _)| a == actor) {
                            taken.push((actor.clone(), *owner));
                        }
                    }
                    None => ask.push((actor.clone(), *device)),
                }
            }
        }
        if !taken.is_empty() {
            return Err(crate::error::Error::ActorClaimed(taken));
        }
        claim_actors(tx, &ask, now).await
    }

    /// The transaction that claimed or checked `wanted` committed: they are the table's.
    pub(super) fn confirmed(&self, wanted: &[(Vec<u8>, DeviceId)]) {
        if wanted.is_empty() {
            return;
        }
        let mut known = self.known();
        if known.len() + wanted.len() > MAX_REMEMBERED {
            known.clear();
        }
        for (actor, device) in wanted {
            known.insert(actor.clone(), *device);
        }
    }
}

/// Claims each actor id of `wanted` for its device where the claim table holds none, and
/// checks the others: the claims made now, or [`crate::error::Error::ActorClaimed`] (with
/// the table's owners) when one belongs to another device. Two transactions claiming one
/// actor id take turns on its key, so the second sees the first's claim.
async fn claim_actors(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    wanted: &[(Vec<u8>, DeviceId)],
    now: i64,
) -> Result<Vec<(Vec<u8>, DeviceId)>> {
    let mut want: Vec<(Vec<u8>, DeviceId)> = Vec::new();
    for (a, d) in wanted {
        if !want.iter().any(|(x, y)| x == a && y == d) {
            want.push((a.clone(), *d));
        }
    }
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let mut made: Vec<(Vec<u8>, DeviceId)> = Vec::new();
    for chunk in want.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO device_actors (actor, device_id, first_seen) VALUES {} \
             ON CONFLICT (actor) DO NOTHING RETURNING actor, device_id",
            placeholders(tx, chunk.len(), 3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (a, d) in chunk {
            q = q.bind(a.clone()).bind(d.to_string()).bind(now);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let actor: Vec<u8> = row.try_get(0)?;
            let device: String = row.try_get(1)?;
            if let Ok(device) = device.parse() {
                made.push((actor, device));
            }
        }
    }
    let rest: Vec<&(Vec<u8>, DeviceId)> = want
        .iter()
        .filter(|w| !made.iter().any(|m| m.0 == w.0 && m.1 == w.1))
        .collect();
    let mut taken: Vec<(Vec<u8>, DeviceId)> = Vec::new();
    for chunk in rest.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "SELECT actor, device_id FROM device_actors WHERE actor IN ({})",
            numbered(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (a, _) in chunk {
            q = q.bind(a.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            let actor: Vec<u8> = row.try_get(0)?;
            let owner: String = row.try_get(1)?;
            let Ok(owner) = owner.parse::<DeviceId>() else {
                continue;
            };
            let conflicting = chunk.iter().any(|(a, d)| *a == actor && *d != owner);
            if conflicting && !taken.iter().any(|(a, _)| *a == actor) {
                taken.push((actor, owner));
            }
        }
    }
    if taken.is_empty() {
        Ok(made)
    } else {
        Err(crate::error::Error::ActorClaimed(taken))
    }
}
