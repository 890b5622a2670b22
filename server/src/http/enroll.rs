//! Enrolling a device with a one-time code.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;

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

async fn enroll(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<ApiJson<Enrollment>> {
    let enrollment = state
        .accounts
        .enroll(&request.code, request.app_version.as_deref())
        .await?;
    Ok(ApiJson(enrollment))
}
