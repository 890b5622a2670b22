//! The server's signing key and the public key every device is configured with.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use super::ProofError;
use super::codec::{self, SIG_LEN};

/// The server's Ed25519 signing key: it certifies gate day keys and issues pupil passes.
///
/// Built from a 32-byte seed the caller supplies (from its secret store); the core has
/// no randomness source. The key is wiped from memory when dropped, and `Debug` shows
/// only the public key.
pub struct ServerSigner {
    key: SigningKey,
}

impl ServerSigner {
    /// The signer for a 32-byte secret seed.
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key that phones, gate and teacher devices verify against.
    #[must_use]
    pub fn public(&self) -> ServerPublicKey {
        ServerPublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `domain` followed by `parts`.
    pub(crate) fn sign(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; SIG_LEN] {
        self.key
            .sign(&codec::signed_message(domain, parts))
            .to_bytes()
    }
}

impl fmt::Debug for ServerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSigner")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// The server's Ed25519 public key (32 bytes; 43 characters as base64url without
/// padding, the form used in configuration).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerPublicKey {
    key: VerifyingKey,
}

impl ServerPublicKey {
    /// The key from its 32 bytes. Refused as [`ProofError::Malformed`] if the bytes are
    /// not a curve point or are a weak (small-order) key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ProofError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ProofError::Malformed)?;
        if key.is_weak() {
            return Err(ProofError::Malformed);
        }
        Ok(Self { key })
    }

    /// The 32 bytes of the key.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key as base64url without padding (43 characters).
    #[must_use]
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Parses [`ServerPublicKey::to_base64`] output; anything else is
    /// [`ProofError::Malformed`].
    pub fn from_base64(text: &str) -> Result<Self, ProofError> {
        if text.len() != 43 {
            return Err(ProofError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ProofError::Malformed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| ProofError::Malformed)?;
        Self::from_bytes(&bytes)
    }

    /// Strictly verifies a signature over `domain` followed by `parts`.
    pub(crate) fn verifies(&self, domain: &[u8], parts: &[&[u8]], sig: &[u8; SIG_LEN]) -> bool {
        codec::verify_signature(&self.key, &codec::signed_message(domain, parts), sig)
    }
}

impl fmt::Debug for ServerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerPublicKey({})", self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trips_through_base64() {
        let public = ServerSigner::from_seed([1; 32]).public();
        let text = public.to_base64();
        assert_eq!(text.len(), 43);
        assert_eq!(ServerPublicKey::from_base64(&text), Ok(public));
        assert_eq!(ServerPublicKey::from_bytes(&public.to_bytes()), Ok(public));
    }

    #[test]
    fn malformed_or_weak_public_keys_are_refused() {
        assert_eq!(ServerPublicKey::from_base64(""), Err(ProofError::Malformed));
        assert_eq!(
            ServerPublicKey::from_base64("not a key at all, not a key at all, not a k"),
            Err(ProofError::Malformed)
        );
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            ServerPublicKey::from_bytes(&identity),
            Err(ProofError::Malformed)
        );
        let text = URL_SAFE_NO_PAD.encode(identity);
        assert_eq!(
            ServerPublicKey::from_base64(&text),
            Err(ProofError::Malformed)
        );
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let seed = [0xAB; 32];
        let signer = ServerSigner::from_seed(seed);
        let shown = format!("{signer:?}");
        assert!(shown.contains(&signer.public().to_base64()));
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(seed)));
        assert!(!shown.to_lowercase().contains("abab"));
    }

    #[test]
    fn signatures_are_bound_to_their_domain() {
        let signer = ServerSigner::from_seed([1; 32]);
        let sig = signer.sign(b"a", &[b"xy"]);
        assert!(signer.public().verifies(b"a", &[b"x", b"y"], &sig));
        assert!(!signer.public().verifies(b"b", &[b"xy"], &sig));
    }
}
