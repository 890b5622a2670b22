//! One-time enrollment codes: 10 characters of Crockford base32 (50 bits), short enough
//! for a QR code or to type, stored as SHA-256 of their normalised form.

use sha2::{Digest, Sha256};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code.
pub const CODE_LEN: usize = 10;

/// A freshly issued enrollment code. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentCode(String);

impl std::fmt::Debug for EnrollmentCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentCode(…)")
    }
}

impl EnrollmentCode {
    /// A random code.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; CODE_LEN];
        rand::fill(&mut bytes);
        Self(
            bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect(),
        )
    }

    /// The code text (for the QR code or the person enrolling), e.g. `7K2M9QXR4D`.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored hash.
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The hash of a typed or scanned code, after Crockford normalisation (case, `I`/`L`
    /// read as 1, `O` as 0, hyphens and spaces ignored); `None` if it cannot be a code.
    #[must_use]
    pub fn hash_presented(text: &str) -> Option<[u8; 32]> {
        let mut normal = String::with_capacity(CODE_LEN);
        for c in text.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || normal.len() >= CODE_LEN {
                return None;
            }
            normal.push(c);
        }
        (normal.len() == CODE_LEN).then(|| Sha256::digest(normal.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_code_matches_despite_case_hyphens_and_lookalikes() {
        let code = EnrollmentCode::generate();
        assert_eq!(code.expose().len(), CODE_LEN);
        let typed = format!("{}-{}", &code.expose()[..5], &code.expose()[5..]).to_lowercase();
        assert_eq!(EnrollmentCode::hash_presented(&typed), Some(code.hash()));
        let with_lookalikes = EnrollmentCode("0111111111".into());
        assert_eq!(
            EnrollmentCode::hash_presented("OIL1111111"),
            Some(with_lookalikes.hash())
        );
    }

    #[test]
    fn garbage_is_not_a_code() {
        assert_eq!(EnrollmentCode::hash_presented(""), None);
        assert_eq!(EnrollmentCode::hash_presented("UUUUUUUUUU"), None);
        assert_eq!(EnrollmentCode::hash_presented("12345678901"), None);
        assert_eq!(EnrollmentCode::hash_presented("张三张三张三张三张三"), None);
    }
}
