//! Erasing a pupil's personal data on request. What this means for the documents, whose
//! history every replica keeps, is decided in ADR 0110: documents hold only pseudonymous
//! ids and coded booking notes, so erasure is relational and rewrites no history.

use kepu_sync_core::ids::{DeviceId, PupilId};

use crate::accounts::Accounts;
use crate::clock::now_ms;
use crate::error::Result;
use crate::store::ErasedPupil;

impl Accounts {
    /// Erases a pupil (see [`Store::erase_pupil`](crate::store::Store::erase_pupil)) and
    /// disconnects their devices.
    ///
    /// # Errors
    /// Unknown pupil or a database failure.
    pub async fn erase_pupil(&self, pupil_id: PupilId) -> Result<ErasedPupil> {
        let erased = self.store.erase_pupil(pupil_id.0, now_ms()).await?;
        for device in &erased.revoked_devices {
            self.authenticator.announce_revoked(DeviceId(*device));
        }
        if erased.changed {
            tracing::info!(
                pupil = %pupil_id,
                devices_revoked = erased.revoked_devices.len(),
                "pupil erased"
            );
        }
        Ok(erased)
    }
}
