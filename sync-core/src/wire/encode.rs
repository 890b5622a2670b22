//! Encoding a [`Message`] as one definite-length CBOR map with camelCase text keys, the
//! shape the JavaScript `cbor-x` decoder of automerge-repo reads.

use std::convert::Infallible;

use minicbor::encode::{Encoder, Error as CborError};

use super::{Message, PeerMetadata, Refusal};
use crate::doc_id::DocumentId;

/// One map value, borrowed from the message being encoded.
enum Value<'a> {
    Text(&'a str),
    /// A document id, written as its bs58check text.
    Id(DocumentId),
    Bytes(&'a [u8]),
    Unsigned(u64),
    Bool(bool),
    TextList(&'a [String]),
    HashList(&'a [[u8; 32]]),
    Metadata(&'a PeerMetadata),
}

type Entries<'a> = Vec<(&'static str, Value<'a>)>;

pub(super) fn encode(message: &Message) -> Vec<u8> {
    let mut encoder = Encoder::new(Vec::new());
    write_map(&mut encoder, &entries(message))
        // Writing to a Vec cannot fail: its write error type is `Infallible` and nothing
        // here raises a custom encode error.
        .expect("encoding CBOR into a Vec is infallible");
    encoder.into_writer()
}

/// The key/value pairs of `message`, absent optional fields left out.
fn entries(message: &Message) -> Entries<'_> {
    let mut out: Entries<'_> = vec![("type", Value::Text(message.type_name()))];
    match message {
        Message::Join {
            sender_id,
            peer_metadata,
            supported_protocol_versions,
        } => {
            out.push(("senderId", Value::Text(sender_id)));
            if let Some(metadata) = peer_metadata {
                out.push(("peerMetadata", Value::Metadata(metadata)));
            }
            out.push((
                "supportedProtocolVersions",
                Value::TextList(supported_protocol_versions),
            ));
        }
        Message::Peer {
            sender_id,
            target_id,
            peer_metadata,
            selected_protocol_version,
        } => {
            push_peers(&mut out, sender_id, target_id);
            if let Some(metadata) = peer_metadata {
                out.push(("peerMetadata", Value::Metadata(metadata)));
            }
            out.push((
                "selectedProtocolVersion",
                Value::Text(selected_protocol_version),
            ));
        }
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            push_peers(&mut out, sender_id, target_id);
            out.push(("documentId", Value::Id(*document_id)));
            out.push(("data", Value::Bytes(data)));
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        }
        | Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
        } => {
            push_peers(&mut out, sender_id, target_id);
            out.push(("documentId", Value::Id(*document_id)));
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            document_id,
            session_id,
            count,
            data,
        } => {
            push_peers(&mut out, sender_id, target_id);
            out.push(("documentId", Value::Id(*document_id)));
            out.push(("sessionId", Value::Text(session_id)));
            out.push(("count", Value::Unsigned(*count)));
            out.push(("data", Value::Bytes(data)));
        }
        Message::Error {
            sender_id,
            target_id,
            message,
            refusal,
        } => {
            if let Some(sender_id) = sender_id {
                out.push(("senderId", Value::Text(sender_id)));
            }
            if let Some(target_id) = target_id {
                out.push(("targetId", Value::Text(target_id)));
            }
            out.push(("message", Value::Text(message)));
            if let Some(refusal) = refusal {
                push_refusal(&mut out, refusal);
            }
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
        } => push_peers(&mut out, sender_id, target_id),
        Message::Leave { sender_id } => out.push(("senderId", Value::Text(sender_id))),
    }
    out
}

fn push_peers<'a>(out: &mut Entries<'a>, sender_id: &'a str, target_id: &'a str) {
    out.push(("senderId", Value::Text(sender_id)));
    out.push(("targetId", Value::Text(target_id)));
}

fn push_refusal<'a>(out: &mut Entries<'a>, refusal: &'a Refusal) {
    out.push(("refusal", Value::Text(refusal.code.as_str())));
    if !refusal.path.is_empty() {
        out.push(("refusalPath", Value::Text(&refusal.path)));
    }
    if let Some(document_id) = refusal.document_id {
        out.push(("documentId", Value::Id(document_id)));
    }
    out.push(("rejectedChanges", Value::HashList(&refusal.changes)));
}

fn write_map(
    encoder: &mut Encoder<Vec<u8>>,
    entries: &[(&'static str, Value<'_>)],
) -> Result<(), CborError<Infallible>> {
    encoder.map(entries.len() as u64)?;
    for (key, value) in entries {
        encoder.str(key)?;
        write_value(encoder, value)?;
    }
    Ok(())
}

fn write_value(
    encoder: &mut Encoder<Vec<u8>>,
    value: &Value<'_>,
) -> Result<(), CborError<Infallible>> {
    match value {
        Value::Text(text) => {
            encoder.str(text)?;
        }
        Value::Id(id) => {
            encoder.str(&id.to_string())?;
        }
        Value::Bytes(bytes) => {
            encoder.bytes(bytes)?;
        }
        Value::Unsigned(n) => {
            encoder.u64(*n)?;
        }
        Value::Bool(b) => {
            encoder.bool(*b)?;
        }
        Value::TextList(items) => {
            encoder.array(items.len() as u64)?;
            for item in *items {
                encoder.str(item)?;
            }
        }
        Value::HashList(hashes) => {
            encoder.array(hashes.len() as u64)?;
            for hash in *hashes {
                encoder.bytes(hash)?;
            }
        }
        Value::Metadata(metadata) => {
            let mut entries = Vec::new();
            if let Some(storage_id) = &metadata.storage_id {
                entries.push(("storageId", Value::Text(storage_id)));
            }
            if let Some(is_ephemeral) = metadata.is_ephemeral {
                entries.push(("isEphemeral", Value::Bool(is_ephemeral)));
            }
            write_map(encoder, &entries)?;
        }
    }
    Ok(())
}
