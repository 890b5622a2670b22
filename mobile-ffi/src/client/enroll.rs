//! Enrollment: `POST /api/enroll {code, app_version}` with the one-time code scanned from
//! a QR. Online, once per install.

use serde::{Deserialize, Serialize};

use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};

use super::error::{Error, Result};

#[derive(Serialize)]
struct Request<'a> {
    code: &'a str,
    app_version: &'a str,
    /// Set only to redeem a reconnect code for this (already enrolled) device.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
}

/// What the server answers.
#[derive(Deserialize)]
pub struct Enrolled {
    /// New device id.
    pub device_id: DeviceId,
    /// Bearer token.
    pub token: String,
    /// User.
    pub user_id: UserId,
    /// Role (`pupil`, `teacher`, …).
    pub role: String,
    /// School.
    pub school_id: Option<SchoolId>,
    /// Venue.
    pub venue_id: Option<VenueId>,
    /// Pupil.
    #[serde(default)]
    pub pupil_id: Option<PupilId>,
    /// The server's public key (base64, 43 characters) that signs gate-day certificates
    /// and pupil passes.
    #[serde(default)]
    pub server_public_key: Option<String>,
    /// The server's pass revocation list document (bs58).
    #[serde(default)]
    pub revocations_doc: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail {
    pub(crate) code: String,
}

/// Enrolls with `code` at `server_url` (`http(s)://host[:port]`).
///
/// # Errors
/// [`Error::Network`] when the server cannot be reached, [`Error::Rejected`] with the
/// server's error code when it refuses.
pub async fn enroll(
    http: &reqwest::Client,
    server_url: &str,
    code: &str,
    app_version: &str,
) -> Result<Enrolled> {
    let url = format!("{}/api/enroll", server_url.trim_end_matches('/'));
    let request = http.post(url).json(&Request {
        code,
        app_version,
        device_id: None,
    });
    call(request, "enrollment").await
}

/// Redeems a reconnect code made for `device` on the fleet page (ADR 0172): the server
/// answers with the same device id and a new token.
///
/// # Errors
/// As [`enroll`].
pub async fn reenroll(
    http: &reqwest::Client,
    server_url: &str,
    code: &str,
    app_version: &str,
    device: DeviceId,
) -> Result<Enrolled> {
    let url = format!("{}/api/enroll", server_url.trim_end_matches('/'));
    let request = http.post(url).json(&Request {
        code,
        app_version,
        device_id: Some(device.to_string()),
    });
    call(request, "reconnection").await
}

/// Sends `request` and reads its JSON answer; `what` names the call in errors.
///
/// # Errors
/// [`Error::Network`] when the server cannot be reached or fails, [`Error::Rejected`]
/// with the server's error code when it refuses, [`Error::Other`] for a malformed answer.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T> {
    let response = request
        .send()
        .await
        .map_err(|e| Error::Network(without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let code = response
            .json::<ErrorBody>()
            .await
            .map_or_else(|_| format!("http-{}", status.as_u16()), |b| b.error.code);
        return if status.is_server_error() {
            Err(Error::Network(code))
        } else {
            Err(Error::Rejected(code))
        };
    }
    response
        .json::<T>()
        .await
        .map_err(|_| Error::Other(format!("malformed {what} response")))
}

fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect to the server".into()
    } else {
        "request failed".into()
    }
}
