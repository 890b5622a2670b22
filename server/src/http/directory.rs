//! The 科普地图 directory: every venue's profile as open data, JSON and GeoJSON, with its
//! last-updated date. Read from the venue documents' projections; no login.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::app_state::AppState;
use crate::error::Result;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/directory.json", get(directory_json))
        .route("/api/directory.geojson", get(directory_geojson))
}

struct Entry {
    venue_id: String,
    doc: Value,
    updated_at: i64,
    slots: Vec<Value>,
}

async fn entries(state: &AppState) -> Result<Vec<Entry>> {
    Ok(state
        .store
        .directory()
        .await?
        .into_iter()
        .map(|v| Entry {
            doc: serde_json::from_str(&v.profile_json).unwrap_or(Value::Null),
            slots: v
                .slots
                .iter()
                .map(|s| {
                    json!({
                        "slot_id": s.slot_id, "start_ms": s.start_ms, "end_ms": s.end_ms,
                        "capacity": s.capacity, "label": s.label,
                    })
                })
                .collect(),
            venue_id: v.venue_id,
            updated_at: v.updated_at,
        })
        .collect())
}

fn properties(e: &Entry) -> Value {
    let profile = &e.doc["profile"];
    json!({
        "venue_id": e.venue_id,
        "name": profile["name"], "kind": profile["venue_kind"], "address": profile["address"],
        "phone": profile["phone"], "city": profile["city"], "county": profile["county"],
        "opening_hours": profile["opening_hours"], "services": profile["services"],
        "facilities": profile["facilities"], "after_school": e.doc["after_school"],
        "instruments": e.doc["instruments"], "bookable_slots": e.slots,
        "profile_updated_at": e.doc["updated_at"],
    })
}

fn last_updated(entries: &[Entry]) -> i64 {
    entries.iter().map(|e| e.updated_at).max().unwrap_or(0)
}

async fn directory_json(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let entries = entries(&state).await?;
    let body = json!({ "last_updated_ms": last_updated(&entries), "venues": entries.iter().map(properties).collect::<Vec<_>>() });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    ))
}

async fn directory_geojson(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let entries = entries(&state).await?;
    let features: Vec<Value> = entries
        .iter()
        .map(|e| {
            let geometry = match e.doc["location"].as_array().map(|a| {
                (
                    a.first().and_then(Value::as_f64),
                    a.get(1).and_then(Value::as_f64),
                )
            }) {
                Some((Some(lat), Some(lon))) => {
                    json!({ "type": "Point", "coordinates": [lon, lat] })
                }
                _ => Value::Null,
            };
            json!({ "type": "Feature", "geometry": geometry, "properties": properties(e) })
        })
        .collect();
    let body = json!({ "type": "FeatureCollection", "last_updated_ms": last_updated(&entries), "features": features });
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        body.to_string(),
    ))
}
