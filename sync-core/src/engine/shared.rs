//! What the engine shards of one server hold in common (ADR 0135).
//!
//! A server runs one engine per shard; each owns a disjoint set of documents. Two facts
//! are about more than one document and must be the same in every shard:
//! - **Actor-id claims.** An actor id belongs to the first device that writes under it,
//!   whatever the document. A claim is checked and taken in one step under a lock, so two
//!   shards merging in parallel can never give one actor id to two devices.
//! - **The revocation list.** A pass check-in in any booking is checked against the list,
//!   which lives in one shard. The shard that holds it publishes what it reads after each
//!   change; the others read the published copy.
//!
//! - **Relay rosters.** An edge box at a venue (ADR 0150) relays the changes of the
//!   venue's devices under their own actor ids. Which devices an edge may relay for, and
//!   as whom each change is validated, holds for every document the edge syncs.
//!
//! A phone's engine (one shard) has its own `Shared`, as does a server with one shard.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use automerge::ChangeHash;

use crate::ids::{DeviceId, PupilId};
use crate::writer::Writer;

/// Revoked passes, (pupil, serial) → revoked at (ms).
pub type RevokedPasses = BTreeMap<(PupilId, u32), i64>;

/// State the engine shards of one process share. Cheap to read; every lock is held for a
/// lookup or an insert only, never across automerge work.
#[derive(Debug, Default)]
pub struct Shared {
    claims: Mutex<Claims>,
    revoked: RwLock<Published>,
    /// Edge device → the writers of the devices it may relay for (ADR 0150).
    relays: RwLock<HashMap<DeviceId, std::sync::Arc<Roster>>>,
    /// Whether any edge has a roster: every admitted change asks [`Shared::relay`], and a
    /// server without edge boxes answers without taking the lock.
    any_relay: std::sync::atomic::AtomicBool,
}

/// The devices an edge box may relay for, each with the identity its changes are
/// validated as.
pub type Roster = HashMap<DeviceId, Writer>;

#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Actor id → the device that owns it.
    owners: HashMap<Vec<u8>, DeviceId>,
    /// Actor ids owned, per device.
    owned: HashMap<DeviceId, usize>,
}

#[derive(Debug, Default)]
struct Published {
    /// Heads of the revocation list the passes were read from; `None` before the first.
    heads: Option<Vec<ChangeHash>>,
    passes: RevokedPasses,
}

/// The outcome of claiming an actor id for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// It was nobody's and is now the device's.
    New,
    /// It was already the device's.
    Own,
    /// It is another device's.
    Taken(DeviceId),
}

impl Claims {
    pub(super) fn owner(&self, actor: &[u8]) -> Option<DeviceId> {
        self.owners.get(actor).copied()
    }

    pub(super) fn owned_by(&self, device: DeviceId) -> usize {
        self.owned.get(&device).copied().unwrap_or(0)
    }

    /// Sets the owner of `actor`, whoever held it.
    fn correct(&mut self, actor: Vec<u8>, device: DeviceId) {
        match self.owners.insert(actor, device) {
            Some(old) if old == device => return,
            Some(old) => {
                if let Some(n) = self.owned.get_mut(&old) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.owned.remove(&old);
                    }
                }
            }
            None => {}
        }
        *self.owned.entry(device).or_default() += 1;
    }

    /// Checks and takes the claim in one step.
    pub(super) fn claim(&mut self, actor: &[u8], device: DeviceId) -> Claim {
        match self.owners.get(actor) {
            Some(owner) if *owner == device => Claim::Own,
            Some(owner) => Claim::Taken(*owner),
            None => {
                self.owners.insert(actor.to_vec(), device);
                *self.owned.entry(device).or_default() += 1;
                Claim::New
            }
        }
    }
}

impl Shared {
    /// A fresh, empty state, for one engine or for the shards of one server.
    #[must_use]
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// The claims, locked. A panic elsewhere while the lock was held leaves the map as
    /// it was (every change is one insert), so a poisoned lock is used as it is.
    pub(super) fn claims(&self) -> MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads actor claims kept by the host. The first claim of an actor id wins; a later
    /// one for another device is ignored.
    pub fn load_claims(&self, claims: impl IntoIterator<Item = (Vec<u8>, DeviceId)>) {
        let mut held = self.claims();
        for (actor, device) in claims {
            held.claim(&actor, device);
        }
    }

    /// Claims the host's shared store holds (another server node made them, or the store
    /// refused an append because of them): they replace what the shards believed, since
    /// the store keeps the first claim of each actor id, whichever node made it.
    pub fn correct_claims(&self, claims: impl IntoIterator<Item = (Vec<u8>, DeviceId)>) {
        let mut held = self.claims();
        for (actor, device) in claims {
            held.correct(actor, device);
        }
    }

    /// The device that owns `actor`, if any.
    #[must_use]
    pub fn actor_owner(&self, actor: &[u8]) -> Option<DeviceId> {
        self.claims().owner(actor)
    }

    /// Actor ids known to belong to devices.
    #[must_use]
    pub fn claimed_actors(&self) -> usize {
        self.claims().owners.len()
    }

    /// Publishes the revocation list as read at `heads` (by the shard that holds it).
    pub(super) fn publish_revoked(&self, heads: Vec<ChangeHash>, passes: RevokedPasses) {
        let mut p = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        p.heads = Some(heads);
        p.passes = passes;
    }

    /// Were the passes published from these heads?
    pub(super) fn revoked_at(&self, heads: &[ChangeHash]) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .heads
            .as_deref()
            == Some(heads)
    }

    /// Sets the roster of the edge device `edge`: from now on a change it sends is
    /// accepted only under an actor id claimed by one of these devices, and validated as
    /// that device wrote it. An empty roster still marks `edge` as an edge.
    pub fn set_relay(&self, edge: DeviceId, roster: Roster) {
        self.any_relay
            .store(true, std::sync::atomic::Ordering::Release);
        self.relays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(edge, std::sync::Arc::new(roster));
    }

    /// The roster of `device` if it is an edge box, `None` for any other device.
    #[must_use]
    pub fn relay(&self, device: DeviceId) -> Option<std::sync::Arc<Roster>> {
        if !self.any_relay.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.relays
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&device)
            .cloned()
    }

    /// The identity a change under `actor` sent by the edge `edge` is validated as: the
    /// device that owns the actor id, if it is on the edge's roster.
    #[must_use]
    pub fn relayed_writer(&self, edge: DeviceId, actor: &[u8]) -> Option<Writer> {
        let roster = self.relay(edge)?;
        let owner = self.actor_owner(actor)?;
        roster.get(&owner).cloned()
    }

    /// Claims `actor` for `device` unless another device holds it; returns whether the
    /// actor id is now `device`'s.
    pub fn claim_for(&self, actor: &[u8], device: DeviceId) -> bool {
        !matches!(self.claims().claim(actor, device), Claim::Taken(_))
    }

    /// The revoked passes as last published (empty before the list was ever read).
    #[must_use]
    pub fn revoked(&self) -> RevokedPasses {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .passes
            .clone()
    }
}
