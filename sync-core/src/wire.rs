//! The automerge-repo websocket protocol, version 1: one binary websocket message holds one
//! CBOR map with camelCase text keys (`type`, `senderId`, `targetId`, `documentId`,
//! `data`, …). See `docs/protocol.md` for the conversation built from these messages.
//!
//! Decoding is lenient where JavaScript peers differ and strict where a hostile peer could
//! hurt the server:
//! * CBOR `null` and `undefined` count as an absent field; unknown keys (of any type, with
//!   any value) are skipped; `peerMetadata` is also read under the spec's name `metadata`;
//!   `documentId` may be bs58check text or a 16-byte byte string; a `join` without
//!   `supportedProtocolVersions` offers `["1"]`.
//! * A zero-length `data`, a missing required field, an unknown `type`, a non-map top level,
//!   trailing bytes, nesting deeper than [`MAX_DEPTH`] and any length prefix larger than the
//!   input that follows it are refused with a [`WireError`]. Decoding never panics, and it
//!   allocates no more than about the input's size.
//!
//! kepu extends `error` with a machine-readable [`Refusal`] under extra keys (`refusal`,
//! `documentId`, `rejectedChanges`) that other automerge-repo clients ignore.

mod decode;
mod encode;
#[cfg(feature = "socket")]
pub mod socket;

pub use crate::refusal::RefusalCode;
pub use decode::{MAX_DEPTH, MAX_ID_LEN, decode};

use crate::doc_id::DocumentId;

/// The only protocol version there is.
pub const PROTOCOL_V1: &str = "1";

/// Largest piece of a message that kepu's server, phones and load generator put in one
/// websocket frame (ADR 0192). A longer message goes out as a fragmented websocket
/// message (RFC 6455, section 5.4), which every client reassembles; the socket at either
/// end then holds one piece at a time instead of keeping room for the largest message
/// it ever wrote or read.
pub const PIECE: usize = 16 * 1024;

/// The frames of a `len`-byte message sent in pieces: their byte ranges, each at most
/// [`PIECE`] long. One range when the message fits in one frame (an empty message too).
pub fn pieces(len: usize) -> impl ExactSizeIterator<Item = std::ops::Range<usize>> {
    (0..len.div_ceil(PIECE).max(1)).map(move |i| i * PIECE..len.min((i + 1) * PIECE))
}

/// The `type` of every message, as written on the wire.
const TYPE_NAMES: [&str; 10] = [
    "join",
    "peer",
    "request",
    "sync",
    "doc-unavailable",
    "ephemeral",
    "error",
    "remote-heads-changed",
    "remote-subscription-change",
    "leave",
];

/// Longest unknown `type` kept in [`WireError::UnknownType`], in characters.
const MAX_ECHOED_TYPE: usize = 64;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server, first message on a connection.
    Join {
        sender_id: String,
        peer_metadata: Option<PeerMetadata>,
        supported_protocol_versions: Vec<String>,
    },
    /// Server → client, the answer to `join`.
    Peer {
        sender_id: String,
        target_id: String,
        peer_metadata: Option<PeerMetadata>,
        selected_protocol_version: String,
    },
    /// A sync message from a peer that has no copy of the document; answer with `sync` or
    /// `doc-unavailable`.
    Request {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        /// An encoded automerge sync message (never empty).
        data: Vec<u8>,
    },
    /// An automerge sync message for one document.
    Sync {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        /// An encoded automerge sync message (never empty).
        data: Vec<u8>,
    },
    /// The sender does not have the document (or may not share it: the two look the same).
    DocUnavailable {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
    },
    /// Application data relayed to the other peers of a document, not stored.
    Ephemeral {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
        /// Random per sender start-up; with `count` it identifies the message.
        session_id: String,
        count: u64,
        /// CBOR-encoded application payload (never empty).
        data: Vec<u8>,
    },
    /// A failure report. automerge-repo clients only log it.
    Error {
        sender_id: Option<String>,
        target_id: Option<String>,
        message: String,
        refusal: Option<Refusal>,
    },
    /// Remote-heads gossip; tolerated, its heads are ignored.
    RemoteHeadsChanged {
        sender_id: String,
        target_id: String,
        document_id: DocumentId,
    },
    /// Remote-heads subscription control; tolerated, its add/remove lists are ignored.
    RemoteSubscriptionChange {
        sender_id: String,
        target_id: String,
    },
    /// The sender is going away (in the spec, never sent by the JavaScript adapters).
    Leave { sender_id: String },
}

/// What a peer says about itself in `join` and `peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// Stable id of the peer's storage; peers persist sync state per storage id.
    pub storage_id: Option<String>,
    /// An ephemeral peer's sync state is not persisted.
    pub is_ephemeral: Option<bool>,
}

/// kepu's extension of `error`: a machine-readable refusal. Extra CBOR keys that other
/// automerge-repo clients ignore (they tolerate unknown keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason, e.g. `not-on-roster` (wire key `refusal`); a code this
    /// build does not know arrives as [`RefusalCode::Other`].
    pub code: RefusalCode,
    /// Where in the document, as `/`-joined keys (wire key `refusalPath`, left out when
    /// empty): the path of the first refused change, holding pseudonymous ids only.
    pub path: String,
    /// The document concerned, if any (wire key `documentId`).
    pub document_id: Option<DocumentId>,
    /// Hashes of the changes that were refused (wire key `rejectedChanges`).
    pub changes: Vec<[u8; 32]>,
}

impl Refusal {
    /// A refusal of a message or a connection: a code and perhaps a document, naming no
    /// changes and no path.
    #[must_use]
    pub const fn new(code: RefusalCode, document_id: Option<DocumentId>) -> Self {
        Self {
            code,
            path: String::new(),
            document_id,
            changes: Vec::new(),
        }
    }
}

/// Why a frame is not a protocol message. Messages give offsets and field names, never
/// payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame has no bytes.
    #[error("empty message")]
    Empty,
    /// Not well-formed CBOR.
    #[error("malformed CBOR at byte {0}")]
    Malformed(usize),
    /// The CBOR stops in the middle of an item.
    #[error("CBOR ends early at byte {0}")]
    Truncated(usize),
    /// A length prefix promises more than the rest of the frame holds.
    #[error("length declared at byte {0} is larger than the remaining input")]
    LengthExceedsInput(usize),
    /// Arrays, maps or tags nested deeper than [`MAX_DEPTH`].
    #[error("CBOR nested deeper than {MAX_DEPTH} levels at byte {0}")]
    TooDeep(usize),
    /// Bytes follow the message's map.
    #[error("trailing bytes after the message, from byte {0}")]
    TrailingBytes(usize),
    /// The top-level item is not a map.
    #[error("message is not a CBOR map")]
    NotAMap,
    /// No `type` key.
    #[error("missing field type")]
    MissingType,
    /// A `type` this protocol does not have (at most 64 characters of it are kept).
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A required key is absent (or `null`/`undefined`).
    #[error("missing field {field} in {msg_type}")]
    MissingField {
        field: &'static str,
        msg_type: &'static str,
    },
    /// A key holds a value of the wrong shape.
    #[error("invalid field {field} in {msg_type}: expected {expected}")]
    InvalidField {
        field: &'static str,
        msg_type: &'static str,
        expected: &'static str,
    },
    /// A known key appears twice in the top-level map.
    #[error("duplicate field {0}")]
    DuplicateField(&'static str),
    /// `data` of a request, sync or ephemeral message is empty.
    #[error("zero-length data in {0}")]
    ZeroLengthData(&'static str),
    /// An array field has more elements than allowed.
    #[error("too many entries in {field} (at most {max})")]
    TooMany { field: &'static str, max: usize },
    /// An id (peer, storage, session) or version is longer than allowed.
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

impl WireError {
    fn unknown_type(name: &str) -> Self {
        Self::UnknownType(name.chars().take(MAX_ECHOED_TYPE).collect())
    }
}

impl Message {
    /// The message as one definite-length CBOR map.
    ///
    /// Encoding does not validate: a `request`, `sync` or `ephemeral` with empty `data`
    /// encodes, but no peer (this decoder included) accepts it.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode::encode(self)
    }

    /// The wire `type` of the message, e.g. `"doc-unavailable"`.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        let index = match self {
            Self::Join { .. } => 0,
            Self::Peer { .. } => 1,
            Self::Request { .. } => 2,
            Self::Sync { .. } => 3,
            Self::DocUnavailable { .. } => 4,
            Self::Ephemeral { .. } => 5,
            Self::Error { .. } => 6,
            Self::RemoteHeadsChanged { .. } => 7,
            Self::RemoteSubscriptionChange { .. } => 8,
            Self::Leave { .. } => 9,
        };
        TYPE_NAMES[index]
    }
}

#[cfg(test)]
mod tests {
    use minicbor::Encoder;
    use proptest::prelude::*;

    use super::*;

    const DOC: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";

    fn doc() -> DocumentId {
        DOC.parse().expect("valid id")
    }

    #[test]
    fn a_message_is_cut_into_pieces_that_cover_it_once() {
        let all = |len| pieces(len).collect::<Vec<_>>();
        assert_eq!(all(0), vec![0..0], "an empty message is one frame");
        assert_eq!(all(PIECE), vec![0..PIECE]);
        assert_eq!(all(PIECE + 1), vec![0..PIECE, PIECE..PIECE + 1]);
        let long = all(5 * PIECE - 7);
        assert_eq!(long.len(), 5);
        assert!(long.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!((long[0].start, long[4].end), (0, 5 * PIECE - 7));
    }

    fn hex(text: &str) -> Vec<u8> {
        let compact: String = text.split_whitespace().collect();
        ::hex::decode(compact).expect("test hex")
    }

    /// A CBOR map built item by item, the way a JavaScript encoder lays it out.
    fn cbor(build: impl FnOnce(&mut Encoder<&mut Vec<u8>>)) -> Vec<u8> {
        let mut out = Vec::new();
        build(&mut Encoder::new(&mut out));
        out
    }

    fn sync_message() -> Message {
        Message::Sync {
            sender_id: "peer-abc".into(),
            target_id: "kepu-server".into(),
            document_id: doc(),
            data: vec![0x42, 0x01, 0x02, 0x03],
        }
    }

    fn peer_message() -> Message {
        Message::Peer {
            sender_id: "kepu-server".into(),
            target_id: "peer-abc".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("3f6c1c8e-0d7a-4c4e-9a51-1c2b3d4e5f60".into()),
                is_ephemeral: Some(false),
            }),
            selected_protocol_version: PROTOCOL_V1.into(),
        }
    }

    fn every_variant() -> Vec<Message> {
        vec![
            Message::Join {
                sender_id: "peer-abc".into(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: Some(true),
                }),
                supported_protocol_versions: vec!["1".into()],
            },
            peer_message(),
            Message::Request {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                data: vec![1],
            },
            sync_message(),
            Message::DocUnavailable {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
            },
            Message::Ephemeral {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                session_id: "s-1".into(),
                count: u64::MAX,
                data: vec![0xa0],
            },
            Message::Error {
                sender_id: Some("kepu-server".into()),
                target_id: None,
                message: "rule violation".into(),
                refusal: Some(Refusal {
                    code: RefusalCode::NotOnRoster,
                    path: "check_ins/p-1/d-2".into(),
                    document_id: Some(doc()),
                    changes: vec![[7; 32], [9; 32]],
                }),
            },
            Message::Error {
                sender_id: None,
                target_id: None,
                message: "unsupported protocol version".into(),
                refusal: None,
            },
            Message::RemoteHeadsChanged {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
            },
            Message::RemoteSubscriptionChange {
                sender_id: "a".into(),
                target_id: "b".into(),
            },
            Message::Leave {
                sender_id: "a".into(),
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let messages = every_variant();
        let names: Vec<_> = messages.iter().map(Message::type_name).collect();
        for name in TYPE_NAMES {
            assert!(names.contains(&name), "no round-trip case for {name}");
        }
        for message in messages {
            assert_eq!(
                decode(&message.encode()),
                Ok(message.clone()),
                "{message:?}"
            );
        }
    }

    #[test]
    fn encoding_uses_definite_maps_text_ids_and_byte_strings() {
        let bytes = sync_message().encode();
        // Definite map of 5 entries, first key "type".
        assert_eq!(&bytes[..6], &hex("a5 64 74797065"));
        // The document id travels as its bs58check text, data as a byte string (major 2).
        let id = format!("documentId\x78\x1c{DOC}");
        assert!(bytes.windows(id.len()).any(|w| w == id.as_bytes()));
        assert!(bytes.ends_with(&hex("64 64617461 44 42010203")));
    }

    #[test]
    fn join_from_cbor_x_with_undefined_storage_id_decodes() {
        // {type:"join", senderId:"peer-abc",
        //  peerMetadata:{storageId: undefined, isEphemeral: true},
        //  supportedProtocolVersions:["1"]}
        let bytes = hex("a4
             64 74797065 64 6a6f696e
             68 73656e6465724964 68 706565722d616263
             6c 706565724d65746164617461
                a2 69 73746f726167654964 f7
                   6b 6973457068656d6572616c f5
             78 19 737570706f7274656450726f746f636f6c56657273696f6e73 81 61 31");
        assert_eq!(
            decode(&bytes),
            Ok(Message::Join {
                sender_id: "peer-abc".into(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: Some(true),
                }),
                supported_protocol_versions: vec!["1".into()],
            })
        );
    }

    /// Bytes produced by cbor-x 1.6 `new Encoder({ tagUint8Array: false, useRecords: false })`,
    /// the encoder automerge-repo uses: it writes maps with a 2-byte length (`b9 0004`).
    #[test]
    fn frames_from_the_real_cbor_x_encoder_decode() {
        // {type:"join", senderId:"peer-abc",
        //  peerMetadata:{storageId: undefined, isEphemeral: true}, supportedProtocolVersions:["1"]}
        let join = hex(
            "b90004 6474797065 646a6f696e 6873656e6465724964 68706565722d616263
             6c706565724d65746164617461 b90002 6973746f726167654964 f7
             6b6973457068656d6572616c f5
             7819737570706f7274656450726f746f636f6c56657273696f6e73 816131",
        );
        assert!(matches!(
            decode(&join),
            Ok(Message::Join {
                peer_metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: Some(true)
                }),
                ..
            })
        ));
        // {type:"sync", senderId:"a", targetId:"b", documentId:"4NMN…", data:Uint8Array[1,2,3],
        //  extra:{nested:[1,{x:null}], u:undefined}}
        let sync = hex(
            "b90006 6474797065 6473796e63 6873656e6465724964 6161 68746172676574496461 62
             6a646f63756d656e744964 781c344e4d4e6e6b4d684c386a5872644a396a616d533538504156645875
             6464617461 43010203
             656578747261 b90002 666e6573746564 8201b900016178f6 6175 f7",
        );
        assert_eq!(
            decode(&sync),
            Ok(Message::Sync {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                data: vec![1, 2, 3],
            })
        );
    }

    #[test]
    fn join_without_versions_offers_version_one_and_reads_spec_metadata_key() {
        let bytes = cbor(|e| {
            e.map(3).unwrap();
            e.str("type").unwrap().str("join").unwrap();
            e.str("senderId").unwrap().str("p").unwrap();
            e.str("metadata").unwrap().map(1).unwrap();
            e.str("storageId").unwrap().str("s").unwrap();
        });
        let Ok(Message::Join {
            peer_metadata,
            supported_protocol_versions,
            ..
        }) = decode(&bytes)
        else {
            panic!("join expected");
        };
        assert_eq!(supported_protocol_versions, vec!["1".to_owned()]);
        assert_eq!(peer_metadata.and_then(|m| m.storage_id), Some("s".into()));
    }

    #[test]
    fn unknown_keys_of_any_shape_and_null_values_are_skipped() {
        let bytes = cbor(|e| {
            e.begin_map().unwrap();
            e.str("type").unwrap().str("sync").unwrap();
            // Unknown keys: nested map/array/tag values, non-text keys, indefinite items.
            e.str("newHeads").unwrap().map(1).unwrap();
            e.str("x").unwrap().array(2).unwrap().u8(1).unwrap();
            e.tag(minicbor::data::Tag::new(1))
                .unwrap()
                .f64(1.5)
                .unwrap();
            e.u32(7).unwrap().bytes(&[1, 2, 3]).unwrap();
            e.array(1).unwrap().null().unwrap().begin_array().unwrap();
            e.begin_map().unwrap().end().unwrap().end().unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("peerMetadata").unwrap().undefined().unwrap();
            e.str("count").unwrap().null().unwrap();
            e.str("documentId").unwrap().str(DOC).unwrap();
            e.str("data").unwrap().bytes(&[9]).unwrap();
            e.end().unwrap();
        });
        assert_eq!(
            decode(&bytes),
            Ok(Message::Sync {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                data: vec![9],
            })
        );
    }

    fn sync_with(document_id: impl FnOnce(&mut Encoder<&mut Vec<u8>>), data: &[u8]) -> Vec<u8> {
        cbor(|e| {
            e.map(5).unwrap();
            e.str("type").unwrap().str("sync").unwrap();
            e.str("senderId").unwrap().str("a").unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("documentId").unwrap();
            document_id(e);
            e.str("data").unwrap().bytes(data).unwrap();
        })
    }

    #[test]
    fn byte_string_document_ids_are_accepted() {
        let bytes = sync_with(
            |e| {
                e.bytes(doc().as_bytes()).unwrap();
            },
            &[1],
        );
        assert!(
            matches!(decode(&bytes), Ok(Message::Sync { document_id, .. }) if document_id == doc())
        );
        let tagged = sync_with(
            |e| {
                e.tag(minicbor::data::Tag::new(64))
                    .unwrap()
                    .bytes(doc().as_bytes())
                    .unwrap();
            },
            &[1],
        );
        assert!(decode(&tagged).is_ok());
    }

    #[test]
    fn bad_document_ids_are_refused() {
        let expected = Err(WireError::InvalidField {
            field: "documentId",
            msg_type: "sync",
            expected: "bs58check text or 16 bytes",
        });
        let short = sync_with(
            |e| {
                e.bytes(&[1; 15]).unwrap();
            },
            &[1],
        );
        assert_eq!(decode(&short), expected);
        let text = sync_with(
            |e| {
                e.str("not-an-id").unwrap();
            },
            &[1],
        );
        assert_eq!(decode(&text), expected);
        let number = sync_with(
            |e| {
                e.u8(3).unwrap();
            },
            &[1],
        );
        assert_eq!(decode(&number), expected);
    }

    #[test]
    fn zero_length_data_is_refused() {
        let bytes = sync_with(
            |e| {
                e.str(DOC).unwrap();
            },
            &[],
        );
        assert_eq!(decode(&bytes), Err(WireError::ZeroLengthData("sync")));
        assert_eq!(
            WireError::ZeroLengthData("sync").to_string(),
            "zero-length data in sync"
        );
        for message in [
            Message::Request {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                data: vec![],
            },
            Message::Ephemeral {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                session_id: "s".into(),
                count: 0,
                data: vec![],
            },
        ] {
            assert_eq!(
                decode(&message.encode()),
                Err(WireError::ZeroLengthData(message.type_name()))
            );
        }
    }

    #[test]
    fn missing_or_null_required_fields_are_named() {
        let bytes = cbor(|e| {
            e.map(4).unwrap();
            e.str("type").unwrap().str("sync").unwrap();
            e.str("senderId").unwrap().undefined().unwrap();
            e.str("targetId").unwrap().str("b").unwrap();
            e.str("documentId").unwrap().str(DOC).unwrap();
        });
        let err = decode(&bytes).expect_err("senderId is undefined");
        assert_eq!(err.to_string(), "missing field senderId in sync");
        let no_type = cbor(|e| {
            e.map(1).unwrap().str("senderId").unwrap().str("a").unwrap();
        });
        assert_eq!(decode(&no_type), Err(WireError::MissingType));
    }

    #[test]
    fn unknown_types_are_refused_and_truncated() {
        let long = "x".repeat(500);
        let bytes = cbor(|e| {
            e.map(1).unwrap().str("type").unwrap().str(&long).unwrap();
        });
        assert_eq!(decode(&bytes), Err(WireError::UnknownType("x".repeat(64))));
    }

    #[test]
    fn structural_problems_are_refused() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&hex("83 01 02 03")), Err(WireError::NotAMap));
        assert_eq!(decode(&hex("a0 00")), Err(WireError::TrailingBytes(1)));
        let mut trailing = sync_message().encode();
        trailing.push(0xa0);
        assert!(matches!(
            decode(&trailing),
            Err(WireError::TrailingBytes(_))
        ));
        // Truncated map.
        let full = sync_message().encode();
        for cut in 1..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
        // A map claiming 2^32 entries in 5 bytes.
        assert_eq!(
            decode(&hex("ba ffffffff")),
            Err(WireError::LengthExceedsInput(5))
        );
        // A byte string claiming 2^63 bytes as an unknown key's value.
        assert_eq!(
            decode(&hex("a1 61 78 5b 7fffffffffffffff 00")),
            Err(WireError::LengthExceedsInput(3))
        );
        // A stray break code as a value.
        assert_eq!(decode(&hex("a1 61 78 ff")), Err(WireError::Malformed(3)));
        // Duplicate known key.
        assert_eq!(
            decode(&hex("a2 64 74797065 61 78 64 74797065 61 78")),
            Err(WireError::DuplicateField("type"))
        );
    }

    fn nested(depth: usize, open: u8, close: Option<u8>) -> Vec<u8> {
        // {"x": [[[ … ]]]} with `depth` arrays.
        let mut bytes = hex("a1 61 78");
        bytes.extend(std::iter::repeat_n(open, depth));
        if let Some(close) = close {
            bytes.extend(std::iter::repeat_n(close, depth));
        }
        bytes
    }

    #[test]
    fn nesting_is_limited_to_max_depth() {
        // Top-level map is level 1, so 31 arrays fit.
        let fits = nested(MAX_DEPTH - 1, 0x9f, Some(0xff));
        assert_eq!(decode(&fits), Err(WireError::MissingType));
        let too_deep = nested(MAX_DEPTH, 0x9f, Some(0xff));
        assert!(matches!(decode(&too_deep), Err(WireError::TooDeep(_))));
        let definite = nested(10_000, 0x81, None);
        assert!(matches!(decode(&definite), Err(WireError::TooDeep(_))));
    }

    #[test]
    fn error_messages_do_not_echo_payload() {
        let secret = "hunter2-secret-token";
        let bytes = cbor(|e| {
            e.map(2).unwrap();
            e.str("type").unwrap().str("sync").unwrap();
            e.str("senderId").unwrap().bytes(secret.as_bytes()).unwrap();
        });
        let text = decode(&bytes).expect_err("bytes senderId").to_string();
        assert_eq!(text, "invalid field senderId in sync: expected text");
        assert!(!text.contains(secret));
    }

    #[test]
    fn refusal_extension_is_optional_on_error() {
        // A plain automerge-repo error, with extra keys a JS server might add.
        let bytes = cbor(|e| {
            e.map(3).unwrap();
            e.str("type").unwrap().str("error").unwrap();
            e.str("message")
                .unwrap()
                .str("unsupported protocol version")
                .unwrap();
            e.str("documentId").unwrap().str(DOC).unwrap();
        });
        assert_eq!(
            decode(&bytes),
            Ok(Message::Error {
                sender_id: None,
                target_id: None,
                message: "unsupported protocol version".into(),
                refusal: None,
            })
        );
        let bad_hash = cbor(|e| {
            e.map(4).unwrap();
            e.str("type").unwrap().str("error").unwrap();
            e.str("message").unwrap().str("m").unwrap();
            e.str("refusal").unwrap().str("not-on-roster").unwrap();
            e.str("rejectedChanges")
                .unwrap()
                .array(1)
                .unwrap()
                .bytes(&[1; 31])
                .unwrap();
        });
        assert!(matches!(
            decode(&bad_hash),
            Err(WireError::InvalidField {
                field: "rejectedChanges",
                ..
            })
        ));
    }

    #[test]
    fn oversized_version_lists_are_refused() {
        let bytes = cbor(|e| {
            e.map(3).unwrap();
            e.str("type").unwrap().str("join").unwrap();
            e.str("senderId").unwrap().str("p").unwrap();
            e.str("supportedProtocolVersions")
                .unwrap()
                .array(1000)
                .unwrap();
            for _ in 0..1000 {
                e.str("1").unwrap();
            }
        });
        assert_eq!(
            decode(&bytes),
            Err(WireError::TooMany {
                field: "supportedProtocolVersions",
                max: 32
            })
        );
    }

    #[test]
    fn snapshot_of_encoded_sync() {
        insta::assert_snapshot!(::hex::encode(sync_message().encode()));
    }

    #[test]
    fn snapshot_of_encoded_peer() {
        insta::assert_snapshot!(::hex::encode(peer_message().encode()));
    }

    fn arb_doc() -> impl Strategy<Value = DocumentId> {
        any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
    }

    fn arb_metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
        proptest::option::of(
            (
                proptest::option::of(".{0,40}"),
                proptest::option::of(any::<bool>()),
            )
                .prop_map(|(storage_id, is_ephemeral)| PeerMetadata {
                    storage_id,
                    is_ephemeral,
                }),
        )
    }

    fn arb_data() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..300)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let id = || ".{0,24}";
        prop_oneof![
            (
                id(),
                arb_metadata(),
                proptest::collection::vec(".{0,3}", 0..4)
            )
                .prop_map(|(sender_id, peer_metadata, supported_protocol_versions)| {
                    Message::Join {
                        sender_id,
                        peer_metadata,
                        supported_protocol_versions,
                    }
                }),
            (id(), id(), arb_metadata(), ".{0,3}").prop_map(|(s, t, m, v)| Message::Peer {
                sender_id: s,
                target_id: t,
                peer_metadata: m,
                selected_protocol_version: v,
            }),
            (id(), id(), arb_doc(), arb_data(), any::<bool>()).prop_map(|(s, t, d, data, req)| {
                if req {
                    Message::Request {
                        sender_id: s,
                        target_id: t,
                        document_id: d,
                        data,
                    }
                } else {
                    Message::Sync {
                        sender_id: s,
                        target_id: t,
                        document_id: d,
                        data,
                    }
                }
            }),
            (id(), id(), arb_doc()).prop_map(|(s, t, d)| Message::DocUnavailable {
                sender_id: s,
                target_id: t,
                document_id: d,
            }),
            (id(), id(), arb_doc(), id(), any::<u64>(), arb_data()).prop_map(
                |(s, t, d, session_id, count, data)| Message::Ephemeral {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    session_id,
                    count,
                    data,
                }
            ),
            (
                proptest::option::of(id()),
                proptest::option::of(id()),
                ".{0,80}",
                proptest::option::of((
                    id(),
                    ".{0,80}",
                    proptest::option::of(arb_doc()),
                    proptest::collection::vec(any::<[u8; 32]>(), 0..4)
                ))
            )
                .prop_map(|(s, t, message, refusal)| Message::Error {
                    sender_id: s,
                    target_id: t,
                    message,
                    refusal: refusal.map(|(code, path, document_id, changes)| Refusal {
                        code: RefusalCode::parse(&code),
                        path,
                        document_id,
                        changes,
                    }),
                }),
            (id(), id(), arb_doc()).prop_map(|(s, t, d)| Message::RemoteHeadsChanged {
                sender_id: s,
                target_id: t,
                document_id: d,
            }),
            (id(), id()).prop_map(|(s, t)| Message::RemoteSubscriptionChange {
                sender_id: s,
                target_id: t,
            }),
            id().prop_map(|s| Message::Leave { sender_id: s }),
        ]
    }

    #[test]
    fn peer_storage_and_session_ids_of_a_megabyte_are_refused() {
        let long = "x".repeat(1 << 20);
        let mut sync = sync_message();
        if let Message::Sync { sender_id, .. } = &mut sync {
            sender_id.clone_from(&long);
        }
        assert_eq!(
            decode(&sync.encode()),
            Err(WireError::TooLong {
                field: "senderId",
                max: MAX_ID_LEN
            })
        );
        let join = Message::Join {
            sender_id: "peer".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(long.clone()),
                is_ephemeral: None,
            }),
            supported_protocol_versions: vec!["1".into()],
        };
        assert!(matches!(
            decode(&join.encode()),
            Err(WireError::TooLong {
                field: "storageId",
                ..
            })
        ));
        let ephemeral = Message::Ephemeral {
            sender_id: "peer".into(),
            target_id: "server".into(),
            document_id: doc(),
            session_id: long,
            count: 1,
            data: vec![1],
        };
        assert!(matches!(
            decode(&ephemeral.encode()),
            Err(WireError::TooLong {
                field: "sessionId",
                ..
            })
        ));
        // At the bound, still fine.
        let mut sync = sync_message();
        if let Message::Sync { sender_id, .. } = &mut sync {
            *sender_id = "y".repeat(MAX_ID_LEN);
        }
        assert!(decode(&sync.encode()).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(
            message in arb_message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = message.encode();
            for (index, byte) in flips {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_is_identity(message in arb_message()) {
            prop_assert_eq!(decode(&message.encode()), Ok(message));
        }
    }
}
