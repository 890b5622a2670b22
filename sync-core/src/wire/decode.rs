//! Decoding one websocket frame into a [`Message`].
//!
//! Two passes over the input. The first walks the whole top-level map with a depth- and
//! length-checked skipper, so every byte is proven well formed and no length prefix is
//! trusted beyond the bytes that follow it; it only notes where each known key's value
//! starts. The second pass reads, by type, just the fields that message type uses. A field
//! whose value is CBOR `null` or `undefined` counts as absent, as JavaScript senders write
//! `undefined` for unset optional fields.

use minicbor::decode::{Decoder, Error as CborError};

use super::{Message, PeerMetadata, Refusal, WireError};
use crate::doc_id::DocumentId;
use crate::refusal::RefusalCode;

/// Deepest nesting of arrays, maps and tags accepted anywhere in a message (the top-level
/// map is level 1).
pub const MAX_DEPTH: usize = 32;

/// Most protocol versions a `join` may offer.
const MAX_VERSIONS: usize = 32;

/// Longest peer id, storage id, session id or protocol version accepted, in bytes. Stock
/// peers use UUIDs or short random strings; the server echoes peer ids in every reply and
/// keeps storage ids as database keys.
pub const MAX_ID_LEN: usize = 256;
/// Longest `refusalPath` accepted, in bytes: a path the server cut to
/// [`crate::validate::MAX_PATH_CHARS`] characters, each at most four bytes.
pub const MAX_PATH_LEN: usize = crate::validate::MAX_PATH_CHARS * 4;

/// CBOR tag 64 ("uint8 typed array"), which cbor-x puts on `Uint8Array`s unless
/// configured otherwise. It is accepted in front of byte strings.
const TAG_UINT8_ARRAY: u64 = 64;

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const NULL: u8 = 0xf6;
const UNDEFINED: u8 = 0xf7;

/// The keys the protocol knows, at the top level of a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Type,
    SenderId,
    TargetId,
    DocumentId,
    Data,
    PeerMetadata,
    Metadata,
    SupportedProtocolVersions,
    SelectedProtocolVersion,
    SessionId,
    Count,
    Message,
    Refusal,
    RefusalPath,
    RejectedChanges,
}

impl Key {
    const ALL: [Self; 15] = [
        Self::Type,
        Self::SenderId,
        Self::TargetId,
        Self::DocumentId,
        Self::Data,
        Self::PeerMetadata,
        Self::Metadata,
        Self::SupportedProtocolVersions,
        Self::SelectedProtocolVersion,
        Self::SessionId,
        Self::Count,
        Self::Message,
        Self::Refusal,
        Self::RefusalPath,
        Self::RejectedChanges,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::SenderId => "senderId",
            Self::TargetId => "targetId",
            Self::DocumentId => "documentId",
            Self::Data => "data",
            Self::PeerMetadata => "peerMetadata",
            Self::Metadata => "metadata",
            Self::SupportedProtocolVersions => "supportedProtocolVersions",
            Self::SelectedProtocolVersion => "selectedProtocolVersion",
            Self::SessionId => "sessionId",
            Self::Count => "count",
            Self::Message => "message",
            Self::Refusal => "refusal",
            Self::RefusalPath => "refusalPath",
            Self::RejectedChanges => "rejectedChanges",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|key| key.name() == name)
    }
}

/// Decodes one message. See the module documentation of [`crate::wire`] for the rules.
///
/// # Errors
/// A [`WireError`] naming the first problem found; no input is ever echoed except a
/// truncated unknown `type`.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    let mut reader = Reader::new(bytes);
    let (major, _) = reader.header()?;
    if major != MAJOR_MAP {
        return Err(WireError::NotAMap);
    }
    let positions = reader.index_top_level_map()?;
    if reader.remaining() > 0 {
        return Err(WireError::TrailingBytes(reader.position()));
    }
    let fields = Fields {
        input: bytes,
        positions,
        msg_type: "message",
    };
    fields.into_message()
}

/// Where each known key's value starts, if present and neither `null` nor `undefined`.
type Positions = [Option<usize>; Key::ALL.len()];

/// A CBOR reader that checks nesting depth and declared lengths before trusting them.
struct Reader<'b> {
    decoder: Decoder<'b>,
}

impl<'b> Reader<'b> {
    fn new(input: &'b [u8]) -> Self {
        Self {
            decoder: Decoder::new(input),
        }
    }

    fn at(input: &'b [u8], position: usize) -> Self {
        let mut reader = Self::new(input);
        reader.decoder.set_position(position);
        reader
    }

    fn position(&self) -> usize {
        self.decoder.position()
    }

    fn remaining(&self) -> usize {
        self.decoder.input().len().saturating_sub(self.position())
    }

    /// Turns a minicbor error into a [`WireError`] carrying only an offset.
    fn cbor_error(&self, err: &CborError) -> WireError {
        let at = err.position().unwrap_or_else(|| self.position());
        if err.is_end_of_input() {
            WireError::Truncated(at)
        } else {
            WireError::Malformed(at)
        }
    }

    /// Peeks at the next item's major type and argument (`None` for indefinite length)
    /// without consuming it.
    fn header(&self) -> Result<(u8, Option<u64>), WireError> {
        let input = self.decoder.input();
        let at = self.position();
        let initial = *input.get(at).ok_or(WireError::Truncated(at))?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let argument = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let width = 1usize << (info - 24);
                let start = at + 1;
                let end = start + width;
                let bytes = input.get(start..end).ok_or(WireError::Truncated(at))?;
                Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
            }
            31 if matches!(major, MAJOR_BYTES | MAJOR_TEXT | MAJOR_ARRAY | MAJOR_MAP) => None,
            // A break code (0xff) is only valid where an indefinite item is being closed.
            _ => return Err(WireError::Malformed(at)),
        };
        Ok((major, argument))
    }

    /// Refuses a declared count of `items` (each at least `unit` bytes) that the rest of the
    /// input cannot hold, so that a length prefix never drives allocation or iteration.
    fn check_len(&self, items: u64, unit: u64) -> Result<(), WireError> {
        let remaining = self.remaining() as u64;
        if items.saturating_mul(unit) > remaining {
            return Err(WireError::LengthExceedsInput(self.position()));
        }
        Ok(())
    }

    /// True (and consumed) if the next byte closes an indefinite item.
    fn take_break(&mut self) -> Result<bool, WireError> {
        let at = self.position();
        match self.decoder.input().get(at) {
            Some(0xff) => {
                self.decoder.set_position(at + 1);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(WireError::Truncated(at)),
        }
    }

    /// True (and consumed) if the next item is `null` or `undefined`.
    fn take_absent(&mut self) -> bool {
        let at = self.position();
        if matches!(self.decoder.input().get(at), Some(&(NULL | UNDEFINED))) {
            self.decoder.set_position(at + 1);
            true
        } else {
            false
        }
    }

    /// Skips one complete item of any type, at nesting level `depth`.
    fn skip(&mut self, depth: usize) -> Result<(), WireError> {
        let at = self.position();
        if depth > MAX_DEPTH {
            return Err(WireError::TooDeep(at));
        }
        let (major, argument) = self.header()?;
        match (major, argument) {
            (MAJOR_ARRAY | MAJOR_MAP, _) => self.skip_container(depth, major == MAJOR_MAP),
            (MAJOR_TAG, _) => {
                self.decoder.tag().map_err(|e| self.cbor_error(&e))?;
                self.skip(depth + 1)
            }
            (MAJOR_BYTES | MAJOR_TEXT, Some(len)) => {
                self.check_string_len(len)?;
                self.decoder.skip().map_err(|e| self.cbor_error(&e))
            }
            // Indefinite strings (chunks are length-checked by minicbor's slicing), integers,
            // simple values and floats.
            _ => self.decoder.skip().map_err(|e| self.cbor_error(&e)),
        }
    }

    /// Refuses a definite string at the current position whose declared length `len` is
    /// longer than the input after its header.
    fn check_string_len(&self, len: u64) -> Result<(), WireError> {
        let after_header = self.remaining().saturating_sub(self.header_len()) as u64;
        if len > after_header {
            return Err(WireError::LengthExceedsInput(self.position()));
        }
        Ok(())
    }

    /// Bytes taken by the header at the current position (valid after `header()` succeeded).
    fn header_len(&self) -> usize {
        let info = self
            .decoder
            .input()
            .get(self.position())
            .map_or(0, |b| b & 0x1f);
        match info {
            24..=27 => 1 + (1usize << (info - 24)),
            _ => 1,
        }
    }

    /// Skips an array or map, definite or indefinite.
    fn skip_container(&mut self, depth: usize, is_map: bool) -> Result<(), WireError> {
        let per_entry = if is_map { 2 } else { 1 };
        let length = if is_map {
            self.decoder.map()
        } else {
            self.decoder.array()
        }
        .map_err(|e| self.cbor_error(&e))?;
        match length {
            Some(n) => {
                self.check_len(n, per_entry)?;
                for _ in 0..n.saturating_mul(per_entry) {
                    self.skip(depth + 1)?;
                }
            }
            None => {
                while !self.take_break()? {
                    for _ in 0..per_entry {
                        self.skip(depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks the top-level map and notes where the value of each known text key starts.
    fn index_top_level_map(&mut self) -> Result<Positions, WireError> {
        let mut positions: Positions = [None; Key::ALL.len()];
        let length = self.decoder.map().map_err(|e| self.cbor_error(&e))?;
        if let Some(n) = length {
            self.check_len(n, 2)?;
        }
        let mut seen = 0u64;
        loop {
            match length {
                Some(n) if seen == n => break,
                None if self.take_break()? => break,
                _ => seen += 1,
            }
            let key = match self.header()? {
                (MAJOR_TEXT, Some(len)) => {
                    self.check_string_len(len)?;
                    let name = self.decoder.str().map_err(|e| self.cbor_error(&e))?;
                    Key::from_name(name)
                }
                _ => {
                    self.skip(2)?;
                    None
                }
            };
            let value_at = self.position();
            if self.take_absent() {
                continue;
            }
            if let Some(key) = key {
                let slot = &mut positions[key as usize];
                if slot.is_some() {
                    return Err(WireError::DuplicateField(key.name()));
                }
                *slot = Some(value_at);
            }
            self.skip(2)?;
        }
        Ok(positions)
    }

    /// Reads a text string, definite or indefinite.
    fn text(&mut self) -> Option<String> {
        match self.header().ok()? {
            (MAJOR_TEXT, Some(_)) => self.decoder.str().ok().map(str::to_owned),
            (MAJOR_TEXT, None) => {
                let mut out = String::new();
                for chunk in self.decoder.str_iter().ok()? {
                    out.push_str(chunk.ok()?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Reads a byte string, definite or indefinite, optionally behind tag 64.
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let (mut major, mut argument) = self.header().ok()?;
        if major == MAJOR_TAG {
            if self.decoder.tag().ok()?.as_u64() != TAG_UINT8_ARRAY {
                return None;
            }
            (major, argument) = self.header().ok()?;
        }
        match (major, argument) {
            (MAJOR_BYTES, Some(_)) => self.decoder.bytes().ok().map(<[u8]>::to_vec),
            (MAJOR_BYTES, None) => {
                let mut out = Vec::new();
                for chunk in self.decoder.bytes_iter().ok()? {
                    out.extend_from_slice(chunk.ok()?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    fn document_id(&mut self) -> Option<DocumentId> {
        if self.header().ok()?.0 == MAJOR_TEXT {
            self.text()?.parse().ok()
        } else {
            let bytes: [u8; 16] = self.bytes()?.try_into().ok()?;
            Some(DocumentId::from_bytes(bytes))
        }
    }

    fn unsigned(&mut self) -> Option<u64> {
        match self.header().ok()?.0 {
            MAJOR_UNSIGNED => self.decoder.u64().ok(),
            _ => None,
        }
    }

    fn bool(&mut self) -> Option<bool> {
        self.decoder.bool().ok()
    }

    /// Reads an array, calling `item` for each element; `None` if not an array or any
    /// element is refused. The array is known to be well formed (first pass).
    fn array<T>(
        &mut self,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Result<Vec<T>, usize>> {
        let length = self.decoder.array().ok()?;
        let mut out = Vec::new();
        loop {
            match length {
                Some(n) if out.len() as u64 == n => break,
                None if self.take_break().ok()? => break,
                _ => {}
            }
            if out.len() == max {
                return Some(Err(max));
            }
            out.push(item(self)?);
        }
        Some(Ok(out))
    }

    /// Reads `peerMetadata`: a map whose unknown keys are skipped and whose `null` or
    /// `undefined` values count as absent.
    fn peer_metadata(&mut self) -> Option<PeerMetadata> {
        let length = self.decoder.map().ok()?;
        let mut metadata = PeerMetadata::default();
        let mut seen = 0u64;
        loop {
            match length {
                Some(n) if seen == n => break,
                None if self.take_break().ok()? => break,
                _ => seen += 1,
            }
            let key = match self.header().ok()? {
                (MAJOR_TEXT, Some(_)) => self.decoder.str().ok(),
                _ => {
                    self.skip(3).ok()?;
                    None
                }
            };
            if self.take_absent() {
                continue;
            }
            match key {
                Some("storageId") => metadata.storage_id = Some(self.text()?),
                Some("isEphemeral") => metadata.is_ephemeral = Some(self.bool()?),
                _ => self.skip(3).ok()?,
            }
        }
        Some(metadata)
    }
}

const fn too_long(field: &'static str) -> WireError {
    WireError::TooLong {
        field,
        max: MAX_ID_LEN,
    }
}

/// The indexed top-level map, read field by field once the message type is known.
struct Fields<'b> {
    input: &'b [u8],
    positions: Positions,
    msg_type: &'static str,
}

impl<'b> Fields<'b> {
    fn missing(&self, key: Key) -> WireError {
        WireError::MissingField {
            field: key.name(),
            msg_type: self.msg_type,
        }
    }

    fn invalid(&self, key: Key, expected: &'static str) -> WireError {
        WireError::InvalidField {
            field: key.name(),
            msg_type: self.msg_type,
            expected,
        }
    }

    /// Reads an optional field with `read`, which returns `None` for a value of the wrong
    /// shape.
    fn optional<T>(
        &self,
        key: Key,
        expected: &'static str,
        read: impl FnOnce(&mut Reader<'b>) -> Option<T>,
    ) -> Result<Option<T>, WireError> {
        let Some(position) = self.positions[key as usize] else {
            return Ok(None);
        };
        let mut reader = Reader::at(self.input, position);
        read(&mut reader)
            .map(Some)
            .ok_or_else(|| self.invalid(key, expected))
    }

    fn required<T>(
        &self,
        key: Key,
        expected: &'static str,
        read: impl FnOnce(&mut Reader<'b>) -> Option<T>,
    ) -> Result<T, WireError> {
        self.optional(key, expected, read)?
            .ok_or_else(|| self.missing(key))
    }

    fn text(&self, key: Key) -> Result<Option<String>, WireError> {
        let text = self.optional(key, "text", Reader::text)?;
        let bounded = matches!(
            key,
            Key::SenderId | Key::TargetId | Key::SessionId | Key::SelectedProtocolVersion
        );
        if bounded && text.as_ref().is_some_and(|t| t.len() > MAX_ID_LEN) {
            return Err(too_long(key.name()));
        }
        if key == Key::RefusalPath && text.as_ref().is_some_and(|t| t.len() > MAX_PATH_LEN) {
            return Err(too_long(key.name()));
        }
        Ok(text)
    }

    fn required_text(&self, key: Key) -> Result<String, WireError> {
        self.text(key)?.ok_or_else(|| self.missing(key))
    }

    fn document_id(&self) -> Result<Option<DocumentId>, WireError> {
        self.optional(
            Key::DocumentId,
            "bs58check text or 16 bytes",
            Reader::document_id,
        )
    }

    fn required_document_id(&self) -> Result<DocumentId, WireError> {
        self.document_id()?
            .ok_or_else(|| self.missing(Key::DocumentId))
    }

    /// The non-empty `data` byte string.
    fn data(&self) -> Result<Vec<u8>, WireError> {
        let data = self.required(Key::Data, "a byte string", Reader::bytes)?;
        if data.is_empty() {
            return Err(WireError::ZeroLengthData(self.msg_type));
        }
        Ok(data)
    }

    fn peer_metadata(&self) -> Result<Option<PeerMetadata>, WireError> {
        let expected = "a map";
        let metadata = match self.optional(Key::PeerMetadata, expected, Reader::peer_metadata)? {
            Some(metadata) => Some(metadata),
            None => self.optional(Key::Metadata, expected, Reader::peer_metadata)?,
        };
        if metadata
            .as_ref()
            .and_then(|m| m.storage_id.as_ref())
            .is_some_and(|s| s.len() > MAX_ID_LEN)
        {
            return Err(too_long("storageId"));
        }
        Ok(metadata)
    }

    /// An array field whose elements are read by `item`, with at most `max` elements.
    fn list<T>(
        &self,
        key: Key,
        expected: &'static str,
        max: usize,
        item: impl FnMut(&mut Reader<'b>) -> Option<T>,
    ) -> Result<Option<Vec<T>>, WireError> {
        match self.optional(key, expected, |r| r.array(max, item))? {
            None => Ok(None),
            Some(Ok(items)) => Ok(Some(items)),
            Some(Err(max)) => Err(WireError::TooMany {
                field: key.name(),
                max,
            }),
        }
    }

    fn refusal(&self) -> Result<Option<Refusal>, WireError> {
        let Some(code) = self.text(Key::Refusal)? else {
            return Ok(None);
        };
        let changes = self.list(
            Key::RejectedChanges,
            "an array of 32-byte hashes",
            usize::MAX,
            |r| r.bytes()?.try_into().ok(),
        )?;
        Ok(Some(Refusal {
            code: RefusalCode::parse(&code),
            path: self.text(Key::RefusalPath)?.unwrap_or_default(),
            document_id: self.document_id()?,
            changes: changes.unwrap_or_default(),
        }))
    }

    fn into_message(mut self) -> Result<Message, WireError> {
        let Some(type_at) = self.positions[Key::Type as usize] else {
            return Err(WireError::MissingType);
        };
        let type_name = Reader::at(self.input, type_at)
            .text()
            .ok_or_else(|| self.invalid(Key::Type, "text"))?;
        let Some(msg_type) = super::TYPE_NAMES
            .iter()
            .copied()
            .find(|name| *name == type_name)
        else {
            return Err(WireError::unknown_type(&type_name));
        };
        self.msg_type = msg_type;

        let sender_id = || self.required_text(Key::SenderId);
        let target_id = || self.required_text(Key::TargetId);
        Ok(match self.msg_type {
            "join" => Message::Join {
                sender_id: sender_id()?,
                peer_metadata: self.peer_metadata()?,
                supported_protocol_versions: self
                    .list(
                        Key::SupportedProtocolVersions,
                        "an array of text",
                        MAX_VERSIONS,
                        Reader::text,
                    )?
                    .map(|versions| {
                        if versions.iter().any(|v| v.len() > MAX_ID_LEN) {
                            Err(too_long("supportedProtocolVersions"))
                        } else {
                            Ok(versions)
                        }
                    })
                    .transpose()?
                    .unwrap_or_else(|| vec![super::PROTOCOL_V1.to_owned()]),
            },
            "peer" => Message::Peer {
                sender_id: sender_id()?,
                target_id: target_id()?,
                peer_metadata: self.peer_metadata()?,
                selected_protocol_version: self.required_text(Key::SelectedProtocolVersion)?,
            },
            "request" => Message::Request {
                sender_id: sender_id()?,
                target_id: target_id()?,
                document_id: self.required_document_id()?,
                data: self.data()?,
            },
            "sync" => Message::Sync {
                sender_id: sender_id()?,
                target_id: target_id()?,
                document_id: self.required_document_id()?,
                data: self.data()?,
            },
            "doc-unavailable" => Message::DocUnavailable {
                sender_id: sender_id()?,
                target_id: target_id()?,
                document_id: self.required_document_id()?,
            },
            "ephemeral" => Message::Ephemeral {
                sender_id: sender_id()?,
                target_id: target_id()?,
                document_id: self.required_document_id()?,
                session_id: self.required_text(Key::SessionId)?,
                count: self.required(Key::Count, "an unsigned integer", Reader::unsigned)?,
                data: self.data()?,
            },
            "error" => Message::Error {
                sender_id: self.text(Key::SenderId)?,
                target_id: self.text(Key::TargetId)?,
                message: self.required_text(Key::Message)?,
                refusal: self.refusal()?,
            },
            "remote-heads-changed" => Message::RemoteHeadsChanged {
                sender_id: sender_id()?,
                target_id: target_id()?,
                document_id: self.required_document_id()?,
            },
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id: sender_id()?,
                target_id: target_id()?,
            },
            "leave" => Message::Leave {
                sender_id: sender_id()?,
            },
            _ => return Err(WireError::unknown_type(&type_name)),
        })
    }
}
