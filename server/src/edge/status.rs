//! The routes and the guard of an edge box's state ([`super::state`]): `GET
//! /api/edge/status`, and an edge whose enrollment was revoked refusing to serve
//! (ADR 0150).

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::accounts::Role;
use crate::app_state::AppState;
use crate::error::{Error, Result};
use crate::http::{ApiJson, WebUser};

pub use super::state::{EdgeStatus, StatusView};

/// `GET /api/edge/status` for the venue's staff and bureau administrators.
pub fn routes(status: EdgeStatus) -> Router<AppState> {
    Router::new().route(
        "/api/edge/status",
        get(move |user: WebUser| {
            let status = status.clone();
            async move { view(&status, &user) }
        }),
    )
}

fn view(status: &EdgeStatus, user: &WebUser) -> Result<ApiJson<StatusView>> {
    let may = user.role == Role::BureauAdmin
        || (user.role == Role::VenueStaff && user.venue_id == Some(status.venue));
    if !may {
        return Err(Error::Forbidden(
            "only this venue's staff and bureau administrators",
        ));
    }
    Ok(ApiJson(status.view(crate::clock::now_ms())))
}

/// What an edge box does not serve: enrollment and the proofs need the upstream's key
/// (devices enroll and fetch them upstream), and it is no one's upstream itself.
fn upstream_only(path: &str) -> bool {
    path == "/api/enroll"
        || path == "/api/gates/day-cert"
        || path.starts_with("/api/edge/roster")
        || path.starts_with("/api/edge/actors")
        || path.starts_with("/api/edge/owners")
        || (path.starts_with("/api/pupils/") && path.ends_with("/pass"))
}

/// The edge's gate in front of every route: what only the upstream serves is refused,
/// and once the edge is revoked, everything but the health checks and the status: it
/// must not go on serving devices the upstream no longer vouches for it to serve. Its
/// database is kept as it is (unsynced work included).
pub async fn edge_only(State(status): State<EdgeStatus>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if upstream_only(path) {
        return Error::Forbidden("an edge box does not serve this; ask the upstream")
            .into_response();
    }
    let open = matches!(path, "/healthz" | "/readyz" | "/api/edge/status");
    if status.is_revoked() && !open {
        return Error::Unavailable("this edge box was revoked upstream").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_banner_counts_whole_minutes_since_the_link_went_down() {
        let venue = Uuid::from_u128(5);
        let s = EdgeStatus::new(venue, 0);
        // Never connected: cut off since the start.
        assert_eq!(s.view(59_999).cut_off_minutes, Some(0));
        s.connected(60_000);
        let up = s.view(10 * 60_000);
        assert!(up.upstream_connected);
        assert_eq!((up.cut_off_since, up.cut_off_minutes), (None, None));
        assert_eq!(up.banner, "");
        s.disconnected(100_000);
        // A second disconnection does not move the time it went down.
        s.disconnected(200_000);
        let down = s.view(100_000 + 3 * 60_000 + 59_000);
        assert_eq!(down.cut_off_since, Some(100_000));
        assert_eq!(down.cut_off_minutes, Some(3));
        assert_eq!(
            down.banner,
            "上游已断开 3 分钟 · upstream unreachable for 3 min"
        );
        s.revoke();
        assert!(s.view(300_000).revoked);
        assert!(s.view(300_000).banner.contains("revoked"));
    }

    #[test]
    fn what_only_the_upstream_serves_is_named() {
        for path in [
            "/api/enroll",
            "/api/gates/day-cert",
            "/api/edge/roster",
            "/api/edge/actors",
            "/api/pupils/00000000-0000-0000-0000-000000000001/pass",
        ] {
            assert!(upstream_only(path), "{path}");
        }
        for path in [
            "/sync",
            "/api/edge/status",
            "/api/venues/x/live",
            "/api/bookings",
        ] {
            assert!(!upstream_only(path), "{path}");
        }
    }
}
