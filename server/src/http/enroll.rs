//! Enrolling a device with a one-time code.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::ApiJson;
use crate::accounts::Enrollment;
use crate::app_state::AppState;
use crate::error::Result;

/// `POST /api/enroll {code, app_version?}` → the device id, its token and the user.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/enroll", post(enroll))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    code: String,
    app_version: Option<String>,
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
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<ApiJson<EnrollResponse>> {
    let enrollment = state
        .accounts
        .enroll(&request.code, request.app_version.as_deref())
        .await?;
    let key = kepu_sync_core::proof::ServerSigner::from_seed(*state.store.server_seed()).public();
    Ok(ApiJson(EnrollResponse {
        enrollment,
        server_public_key: key.to_base64(),
        revocations_doc: crate::sync::documents::REVOCATIONS_DOC.to_string(),
    }))
}
