//! The one JSON error shape, `{"error": {"code": "...", "message": "..."}}`, and the one
//! place that maps [`Error`] to HTTP. 5xx bodies are generic; their cause is logged here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::accounts::AuthError;
use crate::error::Error;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_token`.
    pub code: String,
    /// Message for people; never personal data or internals.
    pub message: String,
}

/// Builds an error response with the standard shape.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            Self::EnrollmentCodeRejected => (StatusCode::BAD_REQUEST, "invalid_enrollment_code"),
            Self::Conflict(_) | Self::ActorClaimed(_) => (StatusCode::CONFLICT, "conflict"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::AppTooOld { .. } => (StatusCode::FORBIDDEN, "app_too_old"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::LoginFailed => (StatusCode::UNAUTHORIZED, "login_failed"),
            Self::NotLoggedIn => (StatusCode::UNAUTHORIZED, "not_logged_in"),
            Self::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            Self::TooManyConnections(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
            Self::Auth(AuthError::Missing) => (StatusCode::UNAUTHORIZED, "missing_token"),
            Self::Auth(AuthError::Invalid) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::Auth(AuthError::Revoked) => (StatusCode::UNAUTHORIZED, "device_revoked"),
            Self::Auth(AuthError::Store(_))
            | Self::Database(_)
            | Self::Migrate(_)
            | Self::Io(_)
            | Self::Config(_)
            | Self::Corrupt(_) => {
                tracing::error!(error = %self, "request failed");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error".into(),
                );
            }
        };
        let message = match &self {
            Self::NotFound { kind: "route", .. } => "no such route".to_owned(),
            other => other.to_string(),
        };
        let mut response = error_response(status, code, message);
        // Phones wipe their store only on an explicit revocation, so a refused token says
        // which it is in a header a proxy leaves alone (`/sync` upgrades, device APIs).
        let kepu_error = match &self {
            Self::Auth(AuthError::Revoked) => Some("device-revoked"),
            Self::Auth(AuthError::Missing | AuthError::Invalid) => Some("unauthenticated"),
            // A phone keeps its data on this answer, and older phones, which do not know
            // the code, read a 403 without the revoked header as "keep everything" too.
            Self::AppTooOld { .. } => Some("app-too-old"),
            _ => None,
        };
        if let Some(v) = kepu_error {
            response
                .headers_mut()
                .insert("x-kepu-error", HeaderValue::from_static(v));
        }
        if let Self::AppTooOld { minimum } = &self
            && let Ok(v) = HeaderValue::from_str(minimum)
        {
            response.headers_mut().insert("x-kepu-min-version", v);
        }
        response
    }
}
