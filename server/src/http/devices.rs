//! A device's own token rotation, and revocation.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use kepu_sync_core::ids::DeviceId;
use serde::Serialize;
use uuid::Uuid;

use super::{ApiJson, AuthenticatedDevice};
use crate::accounts::Role;
use crate::app_state::AppState;
use crate::error::{Error, Result};

/// `POST /api/devices/{id}/rotate` (the device itself) and `POST /api/devices/{id}/revoke`
/// (a bureau administrator, or the device itself).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/devices/{id}/rotate", post(rotate))
        .route("/api/devices/{id}/revoke", post(revoke))
}

/// Parses a path id without echoing it back.
pub(super) fn path_uuid(text: &str, kind: &'static str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::InvalidInput(format!("malformed {kind} id")))
}

#[derive(Serialize)]
struct Rotated {
    device_id: DeviceId,
    token: String,
}

async fn rotate(
    State(state): State<AppState>,
    AuthenticatedDevice(caller): AuthenticatedDevice,
    Path(id): Path<String>,
) -> Result<ApiJson<Rotated>> {
    let device_id = DeviceId(path_uuid(&id, "device")?);
    let token = state.accounts.rotate_token(&caller, device_id).await?;
    Ok(ApiJson(Rotated {
        device_id,
        token: token.into_string(),
    }))
}

#[derive(Serialize)]
pub(super) struct Revoked {
    pub(super) device_id: DeviceId,
    pub(super) revoked: bool,
}

async fn revoke(
    State(state): State<AppState>,
    AuthenticatedDevice(caller): AuthenticatedDevice,
    Path(id): Path<String>,
) -> Result<ApiJson<Revoked>> {
    let device_id = DeviceId(path_uuid(&id, "device")?);
    if caller.writer.role != Role::BureauAdmin && caller.writer.device != device_id {
        return Err(Error::Forbidden(
            "only bureau administrators may revoke other devices",
        ));
    }
    revoke_device(&state, device_id).await
}

pub(super) async fn revoke_device(
    state: &AppState,
    device_id: DeviceId,
) -> Result<ApiJson<Revoked>> {
    if state.store.device(device_id.0).await?.is_none() {
        return Err(Error::not_found("device", device_id));
    }
    let revoked = state.authenticator().revoke(device_id).await?;
    // Open dashboards take the device out of their band at their next read (ADR 0199).
    state.live.people_changed();
    Ok(ApiJson(Revoked { device_id, revoked }))
}
