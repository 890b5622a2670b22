//! Extractors for authenticated devices and bureau administrators.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::accounts::{DeviceIdentity, Role};
use crate::app_state::AppState;
use crate::error::Error;

/// A request made with a live device's bearer token.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice(pub DeviceIdentity);

/// A request made by a bureau administrator's device.
#[derive(Debug, Clone)]
pub struct AdminDevice(pub DeviceIdentity);

impl FromRequestParts<AppState> for AuthenticatedDevice {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let identity = state
            .authenticator()
            .authenticate_headers(&parts.headers)
            .await?;
        Ok(Self(identity))
    }
}

impl FromRequestParts<AppState> for AdminDevice {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let AuthenticatedDevice(identity) =
            AuthenticatedDevice::from_request_parts(parts, state).await?;
        if identity.writer.role != Role::BureauAdmin {
            return Err(Error::Forbidden("only bureau administrators may do this"));
        }
        Ok(Self(identity))
    }
}
