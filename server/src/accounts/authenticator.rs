//! Device authentication (bearer tokens) and the broadcast of revoked devices that live
//! connections listen to.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};
use kepu_sync_core::writer::Writer;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::accounts::{DeviceToken, Role};
use crate::clock::now_ms;
pub use crate::error::AuthError;
use crate::error::Error;
use crate::store::{ConnectFacts, Store};

/// Who is on the other end of a request or connection: the core's [`Writer`], the same
/// identity the sync engine validates a device's changes against (device, user, role,
/// school, venue and, for a pupil, the pseudonymous pupil id, the same uuid as the user
/// id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceIdentity {
    /// The enrolled device and what its user is.
    pub writer: Writer,
}

/// Checks tokens and announces revocations. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    revocations: broadcast::Sender<DeviceId>,
}

impl Authenticator {
    /// An authenticator over `store`.
    #[must_use]
    pub fn new(store: Store) -> Self {
        let (revocations, _) = broadcast::channel(1024);
        Self { store, revocations }
    }

    /// The device holding `token`, if it is live.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for malformed or unknown tokens, [`AuthError::Revoked`] for a
    /// revoked device or an erased user, [`AuthError::Store`] if the database failed.
    pub async fn authenticate(&self, token: &str) -> Result<DeviceIdentity, AuthError> {
        Ok(self.authenticate_connect(token).await?.0)
    }

    /// As [`Authenticator::authenticate`], with what admitting a sync connection checks
    /// besides, read in the same query (ADR 0187).
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`].
    pub async fn authenticate_connect(
        &self,
        token: &str,
    ) -> Result<(DeviceIdentity, ConnectFacts), AuthError> {
        let hash = DeviceToken::hash_presented(token).ok_or(AuthError::Invalid)?;
        let record = self
            .store
            .device_by_token_hash(&hash)
            .await
            .map_err(|e| AuthError::Store(Box::new(e)))?
            .ok_or(AuthError::Invalid)?;
        if record.revoked_at.is_some() || record.user_erased_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let identity = DeviceIdentity {
            writer: Writer {
                device: DeviceId(record.device_id),
                user: UserId(record.user_id),
                role: record.role,
                school: record.school_id.map(SchoolId),
                venue: record.venue_id.map(VenueId),
                pupil: (record.role == Role::Pupil).then_some(PupilId(record.user_id)),
            },
        };
        Ok((identity, record.connect))
    }

    /// Authenticates the `Authorization: Bearer …` header of a request (or of a websocket
    /// upgrade).
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`], and [`AuthError::Missing`] without the header.
    pub async fn authenticate_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<DeviceIdentity, AuthError> {
        let token = bearer_token(headers).ok_or(AuthError::Missing)?;
        self.authenticate(token).await
    }

    /// Revokes a device and tells every subscriber at once. Returns false if it was
    /// unknown or already revoked.
    ///
    /// # Errors
    /// A database failure.
    pub async fn revoke(&self, device_id: DeviceId) -> Result<bool, Error> {
        let revoked = self.store.revoke_device(device_id.0, now_ms()).await?;
        if revoked {
            self.announce_revoked(device_id);
            tracing::info!(device = %device_id, "device revoked");
        }
        Ok(revoked)
    }

    /// Tells subscribers that a device is revoked (already recorded in the store).
    pub fn announce_revoked(&self, device_id: DeviceId) {
        // No subscribers is fine: nothing is connected.
        let _ = self.revocations.send(device_id);
    }

    /// A stream of revoked device ids. A connection loop closes its connection when its
    /// device appears. On `RecvError::Lagged` a loop must re-check its device with
    /// [`Authenticator::authenticate`] (or the store), since ids may have been missed.
    #[must_use]
    pub fn subscribe_revocations(&self) -> broadcast::Receiver<DeviceId> {
        self.revocations.subscribe()
    }
}

/// The token of an `Authorization: Bearer …` header, if present and well-formed text.
#[must_use]
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
