//! The HTTP surface. Each `http/<area>.rs` owns a router over [`AppState`]; [`routes`]
//! merges them and [`router`] adds the fallbacks, tracing and state. The sync endpoint
//! joins by adding its route to [`routes`]. Handlers read through the
//! [`Store`](crate::store::Store) and render; they run no SQL. Every HTML page (login,
//! reports, the live dashboard) is built in the one shell of `page.rs`, with its `Lang`.

mod admin;
mod auth;
mod devices;
mod directory;
mod enroll;
mod error_response;
mod fleet;
mod health;
mod json;
mod live;
mod page;
mod prometheus;
mod proofs;
mod records;
mod reports;
mod session;
mod text;
mod venues;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::trace::TraceLayer;

pub use auth::{AdminDevice, AuthenticatedDevice};
pub use error_response::ErrorBody;
pub(crate) use error_response::error_response;
pub use json::ApiJson;
pub use session::{PageUser, SESSION_COOKIE, WebUser, session_cookie};

use crate::app_state::AppState;
use crate::error::Error;

/// Every route, without state: merge more routers (e.g. `/sync`) into this.
pub fn routes() -> Router<AppState> {
    app_routes(true)
}

/// Every route, `/metrics` only if `with_metrics` (else it has its own listener).
pub fn app_routes(with_metrics: bool) -> Router<AppState> {
    let routes = if with_metrics {
        Router::new().merge(prometheus::router())
    } else {
        Router::new()
    };
    routes
        .merge(health::router())
        .merge(venues::router())
        .merge(enroll::router())
        .merge(devices::router())
        .merge(admin::router())
        .merge(records::router())
        .merge(proofs::router())
        .merge(directory::router())
        .merge(live::router())
        .merge(fleet::router())
        .merge(reports::router())
        .merge(session::router())
}

/// `/metrics` alone, for a listener of its own (`--metrics-addr`).
pub fn metrics_routes() -> Router<AppState> {
    prometheus::router()
}

/// The complete application for `routes`: JSON fallbacks for unknown routes and methods,
/// request metrics, and a trace span per request that records the method and the matched
/// route only (never the query string, which may carry a token, nor any header).
pub fn router_with(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { Error::not_found("route", "") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            bound_body_time,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                tracing::info_span!("http", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

/// The complete application with the standard [`routes`].
pub fn router(state: AppState) -> Router {
    router_with(routes(), state)
}

/// A request body must arrive within `--body-read-timeout-secs` of the request's start;
/// after that reading it fails (the handler answers 400 and the connection closes), so a
/// client that sends its body a byte at a time holds nothing for long.
async fn bound_body_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use futures_util::StreamExt as _;
    let limit = std::time::Duration::from_secs(state.guards.limits.body_read_timeout_secs);
    let deadline = tokio::time::Instant::now() + limit;
    let (parts, body) = request.into_parts();
    let chunks = body.into_data_stream();
    let bounded = futures_util::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(chunks))),
            Ok(None) => None,
            Err(_) => Some((
                Err(axum::Error::new("the request body took too long to arrive")),
                None,
            )),
        }
    });
    next.run(Request::from_parts(
        parts,
        axum::body::Body::from_stream(bounded),
    ))
    .await
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        100..=399 => "ok",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .http_requests_total
        .with_label_values(&[class])
        .inc();
    response
}
