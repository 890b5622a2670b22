//! Prometheus scrape endpoint. With `--metrics-token` it requires
//! `Authorization: Bearer <token>`; with `--metrics-addr` it is served on that address
//! instead of the main one.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::accounts::{AuthError, bearer_token};
use crate::app_state::AppState;
use crate::error::Error;

/// `GET /metrics` in the Prometheus text format.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Compares the presented token with the configured one in constant time (both hashed
/// first, so neither length nor prefix shows in the timing).
fn token_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.guards.metrics_token {
        match bearer_token(&headers) {
            None => return Error::Auth(AuthError::Missing).into_response(),
            Some(presented) if !token_matches(presented, expected) => {
                return Error::Auth(AuthError::Invalid).into_response();
            }
            Some(_) => {}
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_matches() {
        assert!(token_matches("s3cret-scrape", "s3cret-scrape"));
        assert!(!token_matches("s3cret-scrapf", "s3cret-scrape"));
        assert!(!token_matches("", "s3cret-scrape"));
    }
}
