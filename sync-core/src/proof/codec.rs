//! The text form shared by every kepu code: `TAG.` + base64url (no padding) of a
//! fixed-length binary layout whose first byte names the kind and version.
//!
//! Multi-byte integers are big-endian; ids are their 16 raw UUID bytes; keys are 32-byte
//! Ed25519 public keys; signatures are 64-byte Ed25519 signatures.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};

use super::ProofError;

/// No code shown as a QR code is longer than this many characters; longer input is
/// refused as [`ProofError::Malformed`] before it is decoded. The stored bound gate
/// proof (`KPB1.`, never shown) is 305 characters; each kind's decoder refuses anything
/// longer than its own exact length.
pub const MAX_CODE_CHARS: usize = 300;

/// The exact text length of a code of `kind`.
const fn text_len(kind: Kind) -> usize {
    kind.tag.len() + 1 + (kind.len * 4).div_ceil(3)
}

/// Length of an Ed25519 signature.
pub(crate) const SIG_LEN: usize = 64;

/// One kind of code: its ASCII tag, its kind/version byte and its exact binary length
/// (kind byte included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub(crate) tag: &'static str,
    pub(crate) byte: u8,
    pub(crate) len: usize,
}

/// Gate rotating code, shown by a gate device and scanned by a phone.
pub(crate) const GATE_CODE: Kind = Kind {
    tag: "KPG1",
    byte: 0x11,
    len: 193,
};
/// Pupil pass, shown by a pupil and scanned by a teacher's or gate device.
pub(crate) const PUPIL_PASS: Kind = Kind {
    tag: "KPP1",
    byte: 0x21,
    len: 109,
};
/// Gate proof: a verified gate code kept as evidence inside a check-in record.
pub(crate) const GATE_PROOF: Kind = Kind {
    tag: "KPE1",
    byte: 0x31,
    len: 193,
};
/// Gate proof bound to the pupil and device of one check-in (see `bound.rs`).
pub(crate) const BOUND_GATE_PROOF: Kind = Kind {
    tag: "KPB1",
    byte: 0x51,
    len: 225,
};
/// Signed gate day certificate, sent from the server to a gate device.
pub(crate) const GATE_CERT: Kind = Kind {
    tag: "KPC1",
    byte: 0x41,
    len: 125,
};

/// Signature domains: each signed message starts with one of these, so that a signature
/// made for one purpose can never be accepted for another.
pub(crate) const DOMAIN_GATE_CERT: &[u8] = b"kepu/gate-cert/v1\0";
pub(crate) const DOMAIN_GATE_CODE: &[u8] = b"kepu/gate-code/v1\0";
pub(crate) const DOMAIN_PUPIL_PASS: &[u8] = b"kepu/pupil-pass/v1\0";
pub(crate) const DOMAIN_GATE_BIND: &[u8] = b"kepu/gate-bind/v1\0";

/// Encodes `body` (the layout without its kind byte) as `TAG.` + base64url.
pub(crate) fn encode(kind: Kind, body: &[u8]) -> String {
    debug_assert_eq!(body.len() + 1, kind.len);
    let mut bytes = Vec::with_capacity(kind.len);
    bytes.push(kind.byte);
    bytes.extend_from_slice(body);
    let mut text = String::with_capacity(MAX_CODE_CHARS);
    text.push_str(kind.tag);
    text.push('.');
    URL_SAFE_NO_PAD.encode_string(&bytes, &mut text);
    text
}

/// Decodes a code of `kind`, returning its body (the layout without its kind byte).
///
/// The input must be exactly the canonical text: no whitespace, no padding, no trailing
/// bits in the last base64 character.
pub(crate) fn decode(kind: Kind, text: &str) -> Result<Vec<u8>, ProofError> {
    if text.len() > text_len(kind) {
        return Err(ProofError::Malformed);
    }
    let (tag, payload) = text.split_once('.').ok_or(ProofError::Malformed)?;
    if tag != kind.tag {
        return Err(if looks_like_kepu_tag(tag) {
            ProofError::WrongKind
        } else {
            ProofError::Malformed
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| ProofError::Malformed)?;
    let (&first, body) = bytes.split_first().ok_or(ProofError::Malformed)?;
    if first != kind.byte {
        return Err(ProofError::WrongKind);
    }
    if bytes.len() != kind.len {
        return Err(ProofError::Malformed);
    }
    Ok(body.to_vec())
}

/// `KP` followed by two ASCII letters or digits: a kepu code of some kind or version.
fn looks_like_kepu_tag(tag: &str) -> bool {
    tag.len() == 4 && tag.starts_with("KP") && tag.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The message actually signed: a domain followed by the fields.
pub(crate) fn signed_message(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = domain.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(domain);
    for part in parts {
        message.extend_from_slice(part);
    }
    message
}

/// Strict Ed25519 verification (canonical `S`, no small-order `R` or key).
pub(crate) fn verify_signature(key: &VerifyingKey, message: &[u8], sig: &[u8; SIG_LEN]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(sig))
        .is_ok()
}

/// Reads a fixed layout field by field; running short is [`ProofError::Malformed`].
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProofError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ProofError::Malformed)?;
        self.rest = rest;
        Ok(*head)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProofError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ProofError> {
        self.array().map(i64::from_be_bytes)
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(self) -> Result<(), ProofError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Malformed)
        }
    }
}

/// Test helpers shared by the proof modules.
#[cfg(test)]
pub(crate) mod testing {
    /// QR code byte-mode capacity at error-correction level M, versions 1 to 15
    /// (ISO/IEC 18004, table 7).
    const QR_BYTE_CAPACITY_M: [usize; 15] = [
        14, 26, 42, 62, 84, 106, 122, 152, 180, 213, 251, 287, 331, 362, 412,
    ];

    /// The smallest QR version holding `chars` bytes in byte mode at level M.
    pub(crate) fn qr_version_m(chars: usize) -> Option<usize> {
        QR_BYTE_CAPACITY_M
            .iter()
            .position(|&cap| chars <= cap)
            .map(|i| i + 1)
    }

    /// Every string obtained by flipping one bit of `text` that is still UTF-8.
    pub(crate) fn single_bit_flips(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for pos in 0..text.len() {
            for bit in 0..8 {
                if let Some(s) = flip_bit(text, pos, bit) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// `text` with bit `bit` of byte `pos` flipped, if the result is still UTF-8.
    pub(crate) fn flip_bit(text: &str, pos: usize, bit: u8) -> Option<String> {
        let mut bytes = text.as_bytes().to_vec();
        *bytes.get_mut(pos)? ^= 1 << (bit % 8);
        String::from_utf8(bytes).ok()
    }

    /// Re-encodes `text` (a valid code) after flipping one bit of its binary layout.
    pub(crate) fn flip_payload_bit(text: &str, pos: usize, bit: u8) -> Option<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (tag, payload) = text.split_once('.')?;
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        *bytes.get_mut(pos)? ^= 1 << (bit % 8);
        Some(format!("{tag}.{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    #[test]
    fn qr_capacity_table_is_increasing() {
        assert!(QR_BYTE_CAPACITY_M.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(qr_version_m(152), Some(8));
        assert_eq!(qr_version_m(153), Some(9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_tags_and_bytes() {
        let kinds = [
            GATE_CODE,
            PUPIL_PASS,
            GATE_PROOF,
            GATE_CERT,
            BOUND_GATE_PROOF,
        ];
        for (i, a) in kinds.iter().enumerate() {
            assert!(looks_like_kepu_tag(a.tag));
            for b in &kinds[i + 1..] {
                assert_ne!(a.tag, b.tag);
                assert_ne!(a.byte, b.byte);
            }
        }
    }

    #[test]
    fn round_trip_and_canonical_decoding() {
        let body = vec![7u8; PUPIL_PASS.len - 1];
        let text = encode(PUPIL_PASS, &body);
        assert!(text.starts_with("KPP1."));
        assert_eq!(decode(PUPIL_PASS, &text), Ok(body));
        assert_eq!(decode(GATE_CODE, &text), Err(ProofError::WrongKind));
        assert_eq!(
            decode(PUPIL_PASS, &format!("{text}=")),
            Err(ProofError::Malformed)
        );
        assert_eq!(
            decode(PUPIL_PASS, &format!(" {text}")),
            Err(ProofError::Malformed)
        );
        assert_eq!(decode(PUPIL_PASS, "KPP1."), Err(ProofError::Malformed));
        assert_eq!(decode(PUPIL_PASS, "hello"), Err(ProofError::Malformed));
        assert_eq!(decode(PUPIL_PASS, "KPX9.AAAA"), Err(ProofError::WrongKind));
    }

    #[test]
    fn reader_refuses_short_input_without_panicking() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(ProofError::Malformed));
        assert_eq!(r.array::<3>(), Ok([1, 2, 3]));
        assert_eq!(r.i64(), Err(ProofError::Malformed));
        assert!(r.finish().is_ok());
    }
}
