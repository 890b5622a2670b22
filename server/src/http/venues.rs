//! The public venue directory (科普地图).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::ApiJson;
use crate::app_state::AppState;
use crate::error::Result;
use crate::store::Venue;

/// `GET /api/venues`, public.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/venues", get(list_venues))
}

#[derive(Serialize)]
struct VenueList {
    venues: Vec<Venue>,
}

async fn list_venues(State(state): State<AppState>) -> Result<ApiJson<VenueList>> {
    Ok(ApiJson(VenueList {
        venues: state.store.list_venues().await?,
    }))
}
