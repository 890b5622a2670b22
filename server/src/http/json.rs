//! A JSON body extractor whose rejections use the standard error shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error_response::error_response;

/// Like [`axum::Json`], but a malformed body is answered with
/// `{"error": {"code": "bad_json", …}}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Response {
    let (status, code, message) = match rejection {
        JsonRejection::MissingJsonContentType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json".to_owned(),
        ),
        JsonRejection::JsonSyntaxError(_) => (
            StatusCode::BAD_REQUEST,
            "bad_json",
            "the body is not valid JSON".to_owned(),
        ),
        // serde's message can quote the offending value (a name, a code): not echoed.
        JsonRejection::JsonDataError(_) => (
            StatusCode::BAD_REQUEST,
            "bad_json",
            "the body does not have the expected fields and types".to_owned(),
        ),
        other => (
            other.status(),
            "bad_request",
            "the body could not be read".to_owned(),
        ),
    };
    error_response(status, code, message)
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
