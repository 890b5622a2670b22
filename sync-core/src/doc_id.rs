//! The automerge-repo document id: 16 bytes (usually a UUID), written on the wire and in
//! `automerge:` URLs as bs58check text, e.g. `4NMNnkMhL8jXrdJ9jamS58PAVdXu`.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// URL scheme prefix of an automerge document URL.
const URL_PREFIX: &str = "automerge:";

/// Longest text accepted for one bs58check id or head. A 16-byte id is 27 or 28 characters
/// and a 32-byte head about 50; the cap keeps the quadratic base58 decoder away from long
/// attacker-supplied strings.
const MAX_ENCODED_LEN: usize = 64;

/// A document id that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocIdError {
    /// The text is neither bs58check nor a hex UUID.
    #[error("document id is neither bs58check nor a hex UUID")]
    InvalidEncoding,
    /// The text is longer than any valid id.
    #[error("document id text is too long ({0} bytes)")]
    TooLong(usize),
    /// The bs58check payload is not 16 bytes.
    #[error("document id decodes to {0} bytes, expected 16")]
    WrongLength(usize),
    /// The URL does not start with `automerge:`.
    #[error("not an automerge URL (expected the prefix `automerge:`)")]
    NotAutomergeUrl,
    /// A head after `#` is not bs58check of a 32-byte hash.
    #[error("head {0} of the automerge URL is not bs58check of a 32-byte hash")]
    InvalidHead(usize),
}

/// A document id: 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// Builds the id from 16 raw bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id of a UUID (its 16 bytes, big-endian as written).
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid.into_bytes())
    }

    /// The one school log of a school for a calendar year: the first 16 bytes of
    /// SHA-256 over a fixed label, the school's uuid bytes and the year (big-endian). The
    /// server creates it, and every teacher's phone and tour device computes the same id
    /// without asking, so a school's year lives in one document however many devices
    /// write into it.
    #[must_use]
    pub fn school_log(school: crate::ids::SchoolId, year: i64) -> Self {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"kepu:school_log:v1");
        h.update(school.0.as_bytes());
        h.update(year.to_be_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }

    /// The 16 bytes read as a UUID.
    #[must_use]
    pub const fn to_uuid(&self) -> Uuid {
        Uuid::from_bytes(self.0)
    }

    /// The document's URL, `automerge:<bs58check id>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }

    /// Reads `automerge:<id>` with an optional `#<head>|<head>…` suffix, where each head is
    /// bs58check of a 32-byte change hash.
    ///
    /// # Errors
    /// [`DocIdError::NotAutomergeUrl`] without the prefix, the id's own error, or
    /// [`DocIdError::InvalidHead`] with the 0-based index of the first bad head.
    pub fn parse_url(url: &str) -> Result<(Self, Vec<[u8; 32]>), DocIdError> {
        let rest = url
            .strip_prefix(URL_PREFIX)
            .ok_or(DocIdError::NotAutomergeUrl)?;
        let Some((id, heads)) = rest.split_once('#') else {
            return Ok((rest.parse()?, Vec::new()));
        };
        let id = id.parse()?;
        let heads = heads
            .split('|')
            .enumerate()
            .map(|(i, head)| decode_head(head).ok_or(DocIdError::InvalidHead(i)))
            .collect::<Result<_, _>>()?;
        Ok((id, heads))
    }
}

/// Decodes bs58check text to exactly `N` bytes, refusing over-long text before decoding.
fn decode_bs58check<const N: usize>(text: &str) -> Result<[u8; N], DocIdError> {
    if text.len() > MAX_ENCODED_LEN {
        return Err(DocIdError::TooLong(text.len()));
    }
    let bytes = bs58::decode(text)
        .with_check(None)
        .into_vec()
        .map_err(|_| DocIdError::InvalidEncoding)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DocIdError::WrongLength(len))
}

fn decode_head(text: &str) -> Option<[u8; 32]> {
    decode_bs58check::<32>(text).ok()
}

/// Reads a legacy hyphenated (36 characters) or plain (32 characters) hex UUID.
fn parse_hex_uuid(text: &str) -> Option<Uuid> {
    let plain_len = text.chars().filter(char::is_ascii_hexdigit).count();
    let hyphenated = text.len() == 36 && plain_len == 32;
    if (text.len() == 32 && plain_len == 32) || hyphenated {
        Uuid::try_parse(text).ok()
    } else {
        None
    }
}

impl FromStr for DocumentId {
    type Err = DocIdError;

    /// Accepts bs58check (the wire form) and, for old data, a hex UUID.
    fn from_str(s: &str) -> Result<Self, DocIdError> {
        match decode_bs58check::<16>(s) {
            Ok(bytes) => Ok(Self(bytes)),
            Err(err) => parse_hex_uuid(s).map(Self::from_uuid).ok_or(err),
        }
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl serde::Serialize for DocumentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DocumentId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bs58check document id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DocumentId, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";

    #[test]
    fn a_school_year_has_one_fixed_log_id() {
        use crate::ids::SchoolId;
        let a = SchoolId(Uuid::from_u128(7));
        let b = SchoolId(Uuid::from_u128(8));
        assert_eq!(
            DocumentId::school_log(a, 2026),
            DocumentId::school_log(a, 2026)
        );
        assert_ne!(
            DocumentId::school_log(a, 2026),
            DocumentId::school_log(a, 2027)
        );
        assert_ne!(
            DocumentId::school_log(a, 2026),
            DocumentId::school_log(b, 2026)
        );
        // Pinned: phones and servers of different versions must agree on it.
        assert_eq!(
            DocumentId::school_log(a, 2026).to_string(),
            "2jct3bvcKAxMQPDToSdaaZZ2wemh"
        );
    }

    fn head(seed: u8) -> [u8; 32] {
        [seed; 32]
    }

    fn head_text(seed: u8) -> String {
        bs58::encode(head(seed)).with_check().into_string()
    }

    #[test]
    fn example_id_from_the_js_docs_round_trips() {
        let id: DocumentId = EXAMPLE.parse().expect("valid id");
        assert_eq!(id.to_string(), EXAMPLE);
        assert_eq!(id.url(), format!("automerge:{EXAMPLE}"));
    }

    #[test]
    fn id_text_is_bs58check_of_the_sixteen_bytes() {
        let id = DocumentId::from_bytes([7; 16]);
        let decoded = bs58::decode(id.to_string())
            .with_check(None)
            .into_vec()
            .expect("bs58check");
        assert_eq!(decoded, [7; 16]);
    }

    #[test]
    fn legacy_hex_uuids_are_accepted() {
        let uuid = Uuid::from_bytes([0xab; 16]);
        let hyphenated: DocumentId = uuid.hyphenated().to_string().parse().expect("hyphenated");
        let plain: DocumentId = uuid.simple().to_string().parse().expect("plain");
        assert_eq!(hyphenated, DocumentId::from_uuid(uuid));
        assert_eq!(plain.to_uuid(), uuid);
    }

    #[test]
    fn damaged_or_wrong_sized_ids_are_refused() {
        // One character changed breaks the checksum.
        let damaged = EXAMPLE.replace('4', "5");
        assert_eq!(
            damaged.parse::<DocumentId>(),
            Err(DocIdError::InvalidEncoding)
        );
        let twenty = bs58::encode([1u8; 20]).with_check().into_string();
        assert_eq!(
            twenty.parse::<DocumentId>(),
            Err(DocIdError::WrongLength(20))
        );
        assert_eq!("".parse::<DocumentId>(), Err(DocIdError::InvalidEncoding));
        let long = "1".repeat(10_000);
        assert_eq!(long.parse::<DocumentId>(), Err(DocIdError::TooLong(10_000)));
        assert!(
            "{abababab-abab-abab-abab-abababababab}"
                .parse::<DocumentId>()
                .is_err()
        );
    }

    #[test]
    fn url_without_heads_parses() {
        let (id, heads) = DocumentId::parse_url(&format!("automerge:{EXAMPLE}")).expect("url");
        assert_eq!(id.to_string(), EXAMPLE);
        assert!(heads.is_empty());
    }

    #[test]
    fn url_with_heads_returns_the_hashes_in_order() {
        let url = format!("automerge:{EXAMPLE}#{}|{}", head_text(1), head_text(2));
        let (id, heads) = DocumentId::parse_url(&url).expect("url");
        assert_eq!(id.to_string(), EXAMPLE);
        assert_eq!(heads, vec![head(1), head(2)]);
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert_eq!(
            DocumentId::parse_url(EXAMPLE),
            Err(DocIdError::NotAutomergeUrl)
        );
        let bad_head = format!("automerge:{EXAMPLE}#{}|nope", head_text(1));
        assert_eq!(
            DocumentId::parse_url(&bad_head),
            Err(DocIdError::InvalidHead(1))
        );
        let empty_heads = format!("automerge:{EXAMPLE}#");
        assert_eq!(
            DocumentId::parse_url(&empty_heads),
            Err(DocIdError::InvalidHead(0))
        );
        // A 16-byte id is not a head.
        let id_as_head = format!("automerge:{EXAMPLE}#{EXAMPLE}");
        assert_eq!(
            DocumentId::parse_url(&id_as_head),
            Err(DocIdError::InvalidHead(0))
        );
    }

    #[test]
    fn serde_uses_the_bs58_text() {
        let id: DocumentId = EXAMPLE.parse().expect("valid id");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{EXAMPLE}\""));
        let back: DocumentId = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<DocumentId>("\"nope\"").is_err());
    }
}
