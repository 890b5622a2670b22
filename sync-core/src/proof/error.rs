//! Why a proof was refused.

/// Why a gate code, gate proof, gate certificate or pupil pass was refused.
///
/// Messages are fixed sentences: they never contain the code text, an id, a key or a
/// time, so an error can be logged or shown as is. [`ProofError::code`] gives a stable
/// machine reason for protocol replies and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ProofError {
    /// Not a well-formed kepu code: wrong tag, bad base64, wrong length, too long.
    #[error("malformed code")]
    Malformed,
    /// A well-formed kepu code of another kind or version than the one expected
    /// (for example a pupil pass shown to a gate-code scanner).
    #[error("code of another kind")]
    WrongKind,
    /// The gate certificate or the pass is not signed by the configured server key.
    #[error("not signed by the server")]
    BadServerSignature,
    /// The gate code is not signed by the certified gate key (forged or altered).
    #[error("not signed by the certified gate")]
    BadGateSignature,
    /// The gate's day certificate has expired.
    #[error("gate certificate expired")]
    CertExpired,
    /// The pupil pass has expired.
    #[error("pass expired")]
    PassExpired,
    /// The gate code's time window is not the current one (within the tolerance).
    #[error("code outside its time window")]
    OutsideWindow,
    /// The gate code belongs to another venue than the one expected.
    #[error("code for another venue")]
    WrongVenue,
    /// The pupil pass has been revoked.
    #[error("pass revoked")]
    Revoked,
    /// The gate code's window lies on another day than its certificate.
    #[error("code window outside its certificate day")]
    DayMismatch,
    /// A bound gate proof was made for another pupil, device or scan time (copied).
    #[error("proof bound to another check in")]
    NotBound,
}

impl ProofError {
    /// Every variant, in declaration order.
    pub const ALL: [Self; 11] = [
        Self::Malformed,
        Self::WrongKind,
        Self::BadServerSignature,
        Self::BadGateSignature,
        Self::CertExpired,
        Self::PassExpired,
        Self::OutsideWindow,
        Self::WrongVenue,
        Self::Revoked,
        Self::DayMismatch,
        Self::NotBound,
    ];

    /// A stable machine-readable reason (`snake_case`), for replies and metrics.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongKind => "wrong_kind",
            Self::BadServerSignature => "bad_server_signature",
            Self::BadGateSignature => "bad_gate_signature",
            Self::CertExpired => "cert_expired",
            Self::PassExpired => "pass_expired",
            Self::OutsideWindow => "outside_window",
            Self::WrongVenue => "wrong_venue",
            Self::Revoked => "revoked",
            Self::DayMismatch => "day_mismatch",
            Self::NotBound => "not_bound",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn machine_codes_are_unique_snake_case() {
        let codes: BTreeSet<_> = ProofError::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), ProofError::ALL.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }

    #[test]
    fn messages_are_fixed_sentences_without_data() {
        for err in ProofError::ALL {
            let text = err.to_string();
            assert!(!text.is_empty());
            assert!(
                !text
                    .bytes()
                    .any(|b| b.is_ascii_digit() || b == b'.' || b == b'-'),
                "{text}"
            );
        }
    }
}
