//! The relay roster of an edge box (ADR 0150): the identities whose actor ids an edge may
//! write under, set in the engine shards' shared state when the edge connects or fetches
//! its roster, so that every shard accepts its relayed changes only under them and
//! validates each as its author's.

use std::collections::HashMap;

use kepu_sync_core::engine::shared;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};
use kepu_sync_core::writer::{Role, Writer};
use uuid::Uuid;

use crate::accounts::DeviceIdentity;
use crate::error::Result;
use crate::store::{Roster, Store};
use crate::sync::SyncHub;

/// The identities an edge may relay for: the roster's devices that are neither revoked
/// nor of an erased user, each as its own writer.
#[must_use]
pub fn writers(roster: &Roster) -> shared::Roster {
    let users: HashMap<Uuid, &crate::store::RosterUser> = roster
        .users
        .iter()
        .filter(|u| u.erased_at.is_none())
        .map(|u| (u.id, u))
        .collect();
    let mut out = shared::Roster::new();
    for d in roster.devices.iter().filter(|d| d.revoked_at.is_none()) {
        let Some(u) = users.get(&d.user) else {
            continue;
        };
        let Ok(role) = Role::parse_user(&u.role) else {
            continue;
        };
        out.insert(
            DeviceId(d.id),
            Writer {
                device: DeviceId(d.id),
                user: UserId(u.id),
                role,
                school: u.school.map(SchoolId),
                venue: u.venue.map(VenueId),
                pupil: (role == Role::Pupil).then_some(PupilId(u.id)),
            },
        );
    }
    out
}

/// If `identity` is an edge box (of `edge_venue`, read with its identity: ADR 0187), reads
/// its venue's roster and sets it as the edge's relay roster in the engine shards; `None`
/// for any other device.
///
/// # Errors
/// A database failure.
pub async fn register(
    store: &Store,
    hub: &SyncHub,
    identity: &DeviceIdentity,
    edge_venue: Option<Uuid>,
) -> Result<Option<Roster>> {
    if identity.writer.role != Role::VenueStaff {
        return Ok(None);
    }
    let Some(venue) = edge_venue else {
        return Ok(None);
    };
    let roster = store.edge_roster(venue).await?;
    hub.shared()
        .set_relay(identity.writer.device, writers(&roster));
    Ok(Some(roster))
}
