//! Device bearer tokens: 32 random bytes, base64url without padding; only their SHA-256
//! is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A freshly issued bearer token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(String);

impl std::fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceToken(…)")
    }
}

impl DeviceToken {
    /// 32 bytes from the operating system's CSPRNG (via the thread RNG).
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token text to hand to the device, once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Consumes the token into its text.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }

    /// The stored hash of this token.
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The stored hash of a presented token, or `None` if it cannot be a token (wrong
    /// alphabet or length) — such a token is refused without a database look-up.
    #[must_use]
    pub fn hash_presented(text: &str) -> Option<[u8; 32]> {
        let bytes = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        Some(Sha256::digest(text.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_hashes_like_presented_token() {
        let token = DeviceToken::generate();
        assert_eq!(token.expose().len(), 43);
        assert_eq!(
            DeviceToken::hash_presented(token.expose()),
            Some(token.hash())
        );
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        assert_eq!(DeviceToken::hash_presented(""), None);
        assert_eq!(DeviceToken::hash_presented("not a token!"), None);
        assert_eq!(DeviceToken::hash_presented("AAAA"), None);
    }
}
