//! Enrolling a device with a one-time code.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::ApiJson;
use crate::accounts::Enrollment;
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::limits::ClientAddr;

/// `POST /api/enroll {code, app_version?, device_id?}` → the device id, its token and the
/// user. With `device_id`, the code must be a reconnect code issued for that device (ADR
/// 0172), which keeps its id and gets a new token. Wrong codes are limited per client
/// address (`too_many_attempts`, 429).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/enroll", post(enroll))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    code: String,
    app_version: Option<String>,
    device_id: Option<String>,
}

/// The enrollment plus what a device needs to work offline: the server's public key
/// (to verify gate codes and passes) and the id of the pass revocation list document.
#[derive(Serialize)]
struct EnrollResponse {
    #[serde(flatten)]
    enrollment: Enrollment,
    server_public_key: String,
    revocations_doc: String,
}

async fn enroll(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<ApiJson<EnrollResponse>> {
    // Each attempt counts against the client's address before the code is looked up, so
    // parallel guesses cannot pass the limit; a code that works gives its count back.
    let guesses = &state.guards.enroll_failures;
    if let Some(ip) = client.0 {
        guesses
            .begin(&ip, now_ms())
            .map_err(|_| Error::TooManyAttempts)?;
    }
    let enrolled = match request.device_id.as_deref() {
        None => {
            state
                .accounts
                .enroll(&request.code, request.app_version.as_deref())
                .await
        }
        Some(id) => match id.trim().parse::<kepu_sync_core::ids::DeviceId>() {
            Ok(device) => {
                state
                    .accounts
                    .reenroll(&request.code, device, request.app_version.as_deref())
                    .await
            }
            Err(_) => Err(Error::InvalidInput("malformed device_id".into())),
        },
    };
    if let Some(ip) = client.0
        && !matches!(enrolled, Err(Error::EnrollmentCodeRejected))
    {
        guesses.succeeded(&ip);
    }
    let enrollment = enrolled?;
    let key = kepu_sync_core::proof::ServerSigner::from_seed(*state.store.server_seed()).public();
    Ok(ApiJson(EnrollResponse {
        enrollment,
        server_public_key: key.to_base64(),
        revocations_doc: crate::sync::documents::REVOCATIONS_DOC.to_string(),
    }))
}
