//! Fresh ids for new records: UUID v7 (time-ordered, so indexes stay compact) from the
//! clock and the thread RNG.

use uuid::Uuid;

use crate::clock::now_ms;

/// A new UUID v7.
#[must_use]
pub fn new_id() -> Uuid {
    let mut random = [0u8; 10];
    rand::fill(&mut random);
    kepu_sync_core::ids::uuid_v7(now_ms(), random)
}

/// A stable id derived from a label (UUID v8 over SHA-256), for seeded sample data that
/// must be the same on every run.
#[must_use]
pub fn stable_id(label: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(label.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}
