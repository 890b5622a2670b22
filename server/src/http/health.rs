//! Liveness and readiness.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::ApiJson;
use crate::app_state::AppState;
use crate::error::Result;

/// `/healthz` (the process answers) and `/readyz` (the database answers too; it says
/// whether this node leads).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> ApiJson<Value> {
    ApiJson(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<ApiJson<Value>> {
    state.store.ping().await?;
    Ok(ApiJson(json!({
        "status": "ready",
        "database": state.store.backend().name(),
        // Whether this node runs the once-only work (several nodes on PostgreSQL).
        // Asked of PostgreSQL now, not as last checked (`Leadership::confirm`).
        "leader": state.leader.confirm(&state.store).await,
    })))
}
