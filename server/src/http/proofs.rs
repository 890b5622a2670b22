//! What devices need to make and check offline check-in proofs: a gate's certified day
//! key, and a pupil's pass. Both are signed with the server's key; neither carries a name.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use base64::Engine as _;
use kepu_sync_core::ids::{PupilId, SchoolId, VenueId};
use kepu_sync_core::proof::{GateDayCert, ServerSigner, utc_day};
use serde::{Deserialize, Serialize};

use super::ApiJson;
use super::auth::AuthenticatedDevice;
use crate::accounts::Role;
use crate::app_state::AppState;
use crate::clock::{DAY_MS, now_ms};
use crate::error::{Error, Result};

/// A pass is valid this long after it is fetched.
const PASS_VALIDITY_MS: i64 = 180 * 86_400_000;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/gates/day-cert", post(day_cert))
        .route("/api/pupils/{id}/pass", get(pass))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DayCertRequest {
    /// The gate's public key for today, base64 (32 bytes).
    gate_key: String,
}

#[derive(Serialize)]
struct DayCert {
    cert: String,
    venue_id: VenueId,
    day: u32,
    expires_ms: i64,
    server_public_key: String,
    /// The same key certified for the coming UTC day: the UTC day turns at 08:00 Beijing
    /// time, so a gate certified before a venue opens (or the evening before) keeps
    /// showing codes offline after 08:00.
    next: NextDayCert,
}

#[derive(Serialize)]
struct NextDayCert {
    cert: String,
    day: u32,
    expires_ms: i64,
}

/// A day's certificate lasts until an hour after its UTC day ends.
fn day_expiry(day: u32) -> i64 {
    (i64::from(day) + 1) * DAY_MS + 3_600_000
}

fn signer(state: &AppState) -> ServerSigner {
    ServerSigner::from_seed(*state.store.server_seed())
}

/// `POST /api/gates/day-cert`: venue staff devices get their gate key certified for their
/// venue for today's UTC day and the coming one; the gate then shows rotating codes
/// signed with it.
async fn day_cert(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    ApiJson(request): ApiJson<DayCertRequest>,
) -> Result<ApiJson<DayCert>> {
    let (Role::VenueStaff, Some(venue)) = (id.writer.role, id.writer.venue) else {
        return Err(Error::Forbidden(
            "only a venue's staff devices act as gates",
        ));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(request.gate_key.trim())
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(request.gate_key.trim())
        })
        .map_err(|_| Error::InvalidInput("gate_key must be base64".into()))?;
    let gate_key: [u8; 32] = raw
        .try_into()
        .map_err(|_| Error::InvalidInput("gate_key must be 32 bytes".into()))?;
    let now = now_ms();
    let day = utc_day(now).ok_or_else(|| Error::InvalidInput("clock out of range".into()))?;
    let next_day = day
        .checked_add(1)
        .ok_or_else(|| Error::InvalidInput("clock out of range".into()))?;
    let signer = signer(&state);
    let certify = |day: u32| {
        signer
            .certify_gate(GateDayCert {
                venue,
                day,
                gate_key,
                expires_ms: day_expiry(day),
            })
            .encode()
    };
    Ok(ApiJson(DayCert {
        cert: certify(day),
        venue_id: venue,
        day,
        expires_ms: day_expiry(day),
        server_public_key: signer.public().to_base64(),
        next: NextDayCert {
            cert: certify(next_day),
            day: next_day,
            expires_ms: day_expiry(next_day),
        },
    }))
}

#[derive(Serialize)]
struct Pass {
    pass: String,
    expires_ms: i64,
}

/// `GET /api/pupils/{id}/pass`: the pupil's own device, their school's teachers and bureau
/// administrators get the pupil's current pass (pseudonymous id, school, serial, expiry).
async fn pass(
    State(state): State<AppState>,
    AuthenticatedDevice(id): AuthenticatedDevice,
    Path(pupil): Path<String>,
) -> Result<ApiJson<Pass>> {
    let pupil: uuid::Uuid = pupil
        .parse()
        .map_err(|_| Error::InvalidInput("malformed pupil id".into()))?;
    let user = state
        .store
        .user(pupil)
        .await?
        .filter(|u| u.role == Role::Pupil)
        .ok_or_else(|| Error::not_found("pupil", pupil))?;
    let allowed = match id.writer.role {
        Role::Pupil => id.writer.pupil.is_some_and(|p| p.0 == pupil),
        Role::Teacher => id
            .writer
            .school
            .is_some_and(|s| Some(s.0) == user.school_id),
        Role::BureauAdmin => true,
        _ => false,
    };
    if !allowed {
        return Err(Error::not_found("pupil", pupil));
    }
    let (Some(school), Some(serial)) = (user.school_id, user.pupil_pass_serial) else {
        return Err(Error::not_found("pupil", pupil));
    };
    let expires_ms = now_ms() + PASS_VALIDITY_MS;
    let serial = u32::try_from(serial).map_err(|_| Error::Corrupt("users.pupil_pass_serial"))?;
    let pass = signer(&state).issue_pass(PupilId(pupil), SchoolId(school), serial, expires_ms);
    Ok(ApiJson(Pass { pass, expires_ms }))
}
