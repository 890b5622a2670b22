//! The upstream's side of edge boxes: who is an edge, its venue's roster, and the actor
//! ids it relays (ADR 0150).

use std::collections::HashMap;

use axum::extract::{Extension, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kepu_sync_core::engine::StorageTask;
use kepu_sync_core::ids::DeviceId;
use kepu_sync_core::writer::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts::DeviceIdentity;
use crate::app_state::AppState;
use crate::error::{Error, Result};
use crate::http::{ApiJson, AuthenticatedDevice};
use crate::store::{NewUser, Roster, Store};
use crate::sync::ws::SyncContext;

use super::relay::{register, writers};

/// Most actor claims one report may carry.
pub const MAX_CLAIMS_PER_REPORT: usize = 20_000;

/// Creates the edge box of `venue`: a venue staff user marked as an edge. Returns the
/// user, to issue its enrollment code for.
///
/// # Errors
/// Unknown venue, or a database failure.
pub async fn create(store: &Store, venue: Uuid, now: i64) -> Result<Uuid> {
    let user = NewUser {
        id: crate::ids::new_id(),
        role: Role::VenueStaff,
        school_id: None,
        venue_id: Some(venue),
        display_name: Some("edge box".into()),
        external_ref: None,
    };
    store.create_user(&user, now).await?;
    store.mark_edge_user(user.id, venue, now).await?;
    Ok(user.id)
}

/// Routes an edge box calls on its upstream (they need the hub: added beside `/sync`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/edge/roster", get(roster))
        .route("/api/edge/actors", post(actors))
        .route("/api/edge/owners", post(owners))
}

async fn edge_roster(
    state: &AppState,
    ctx: &SyncContext,
    identity: &DeviceIdentity,
) -> Result<Roster> {
    let venue = state.store.edge_venue(identity.writer.user.0).await?;
    register(&state.store, &ctx.hub, identity, venue)
        .await?
        .ok_or(Error::Forbidden("only an edge box reads a venue's roster"))
}

/// `GET /api/edge/roster`: the venue's roster for its edge box (token hashes, no names).
async fn roster(
    State(state): State<AppState>,
    Extension(ctx): Extension<SyncContext>,
    AuthenticatedDevice(identity): AuthenticatedDevice,
) -> Result<Json<Roster>> {
    Ok(Json(edge_roster(&state, &ctx, &identity).await?))
}

/// One actor id an edge reports: which device of its roster writes under it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorClaim {
    /// The actor id, hex.
    pub actor: String,
    /// The device.
    pub device: Uuid,
}

/// `POST /api/edge/actors` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorReport {
    /// The claims.
    pub claims: Vec<ActorClaim>,
}

/// What became of a report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActorVerdict {
    /// Claims now held by the devices named.
    pub accepted: usize,
    /// Claims refused: (actor hex, why).
    pub refused: Vec<(String, String)>,
}

/// `POST /api/edge/actors`: the edge reports which of its roster's devices writes under
/// which actor id (it learned them from the first change of each at the edge). A claim
/// for a device not on the roster, or of an actor id another device holds, is refused;
/// changes under it are then refused `foreign-actor` when the edge relays them.
async fn actors(
    State(state): State<AppState>,
    Extension(ctx): Extension<SyncContext>,
    AuthenticatedDevice(identity): AuthenticatedDevice,
    ApiJson(report): ApiJson<ActorReport>,
) -> Result<ApiJson<ActorVerdict>> {
    if report.claims.len() > MAX_CLAIMS_PER_REPORT {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_CLAIMS_PER_REPORT} claims per report"
        )));
    }
    let roster = writers(&edge_roster(&state, &ctx, &identity).await?);
    let shared = ctx.hub.shared();
    let mut verdict = ActorVerdict::default();
    let mut per_device: HashMap<DeviceId, Vec<Vec<u8>>> = HashMap::new();
    for c in report.claims {
        let actor = match hex::decode(&c.actor) {
            Ok(a) if !a.is_empty() && a.len() <= 64 => a,
            _ => {
                verdict.refused.push((c.actor, "malformed actor id".into()));
                continue;
            }
        };
        let device = DeviceId(c.device);
        if !roster.contains_key(&device) {
            verdict
                .refused
                .push((c.actor, "device not on this edge's roster".into()));
            continue;
        }
        if !shared.claim_for(&actor, device) {
            verdict
                .refused
                .push((c.actor, "actor id belongs to another device".into()));
            continue;
        }
        per_device.entry(device).or_default().push(actor);
    }
    // Kept like the claims of a device's own first write (and told to the other nodes).
    let now = crate::clock::now_ms();
    for (device, actors) in per_device {
        let n = actors.len();
        let task = StorageTask::ClaimActors { device, actors };
        match state.store.run_document_tasks(&[&task], now).await {
            Ok(()) => verdict.accepted += n,
            Err(Error::ActorClaimed(owners)) => {
                for (a, _) in &owners {
                    verdict
                        .refused
                        .push((hex::encode(a), "actor id belongs to another device".into()));
                }
                verdict.accepted += n.saturating_sub(owners.len());
                ctx.hub.actor_claims(owners);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ApiJson(verdict))
}

/// `POST /api/edge/owners` body: actor ids (hex) found in changes the edge received.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnersQuery {
    /// The actor ids.
    pub actors: Vec<String>,
}

/// The answer: per actor id, the roster device that owns it, or `None` when it is no
/// roster device's (another device's, the server's, or nobody's yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Owners {
    /// (actor hex, owner).
    pub owners: Vec<(String, Option<Uuid>)>,
}

/// `POST /api/edge/owners`: whose are the actor ids of changes the edge got from the
/// upstream? The edge claims them for those devices (or for nobody at the venue), so
/// that no device at the edge writes under an actor id that is someone else's upstream.
/// Owners off the roster are not named.
async fn owners(
    State(state): State<AppState>,
    Extension(ctx): Extension<SyncContext>,
    AuthenticatedDevice(identity): AuthenticatedDevice,
    ApiJson(query): ApiJson<OwnersQuery>,
) -> Result<ApiJson<Owners>> {
    if query.actors.len() > MAX_CLAIMS_PER_REPORT {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_CLAIMS_PER_REPORT} actor ids per query"
        )));
    }
    let roster = writers(&edge_roster(&state, &ctx, &identity).await?);
    let shared = ctx.hub.shared();
    let owners = query
        .actors
        .into_iter()
        .map(|hex_actor| {
            let owner = hex::decode(&hex_actor)
                .ok()
                .and_then(|a| shared.actor_owner(&a))
                .filter(|d| roster.contains_key(d))
                .map(|d| d.0);
            (hex_actor, owner)
        })
        .collect();
    Ok(ApiJson(Owners { owners }))
}
