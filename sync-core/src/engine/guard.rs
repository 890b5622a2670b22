//! The payload guard: every chunk of an incoming automerge sync message is read here
//! before automerge sees any of it, and a message that would cost the server more than
//! its limits allow is refused whole.
//!
//! automerge 0.12 inflates a compressed change (chunk type 2) into memory with no bound
//! before it checks anything, expands run-length encoded columns into one operation per
//! run item (a few bytes can declare billions of operations), and trusts the probe count
//! and size of a peer's Bloom filter. This module parses what automerge would parse,
//! without allocating more than the limits:
//!
//! * every chunk header (4 magic bytes, 4 checksum bytes, 1 type byte, a LEB128 length);
//! * a compressed change is inflated through a `Read::take` bound, so nothing larger than
//!   [`Limits::change_bytes`] is ever allocated;
//! * a document chunk (what `save()` writes, and what a stock client sends when more than a
//!   third of a document is new to its peer) is walked column by column; a compressed
//!   column is inflated as a stream into a counter, never into memory;
//! * the items of every column are counted from its run lengths without expanding them, so
//!   the declared operations and changes are known before automerge builds them;
//! * bundles (chunk type 3) and unknown types are refused: no stock client sends them.
//!
//! The result is a [`Scan`]: what each chunk is, and for a change its hash, actor, sequence
//! number and dependencies, read from the chunk itself (the engine uses these to refuse a
//! change written under another device's actor id).

use std::io::{self, Read};
use std::ops::Range;

use automerge::ChangeHash;
use automerge::sync;
use flate2::bufread::DeflateDecoder;
use sha2::{Digest, Sha256};

use crate::refusal::RefusalCode;

/// The first four bytes of every automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const TYPE_DOCUMENT: u8 = 0;
const TYPE_CHANGE: u8 = 1;
const TYPE_COMPRESSED_CHANGE: u8 = 2;
/// The bit of a column specification that marks a DEFLATE-compressed column.
const DEFLATE_BIT: u64 = 0b1000;
/// The operation-type column (id 4, unsigned integers) of a change or a document.
const ACTION_COLUMN: u64 = (4 << 4) | 2;
/// The actor column of a document's change metadata (id 0, actor indices): one item per
/// change.
const CHANGE_ACTOR_COLUMN: u64 = 1;
/// A column's items may outnumber operations (predecessors of an operation, dependencies
/// of a change), by at most this factor.
const ITEMS_PER_OP: u64 = 4;

/// What one sync message (and one connection) may cost. The defaults keep one message's
/// cost to the server's memory under about 64 MiB (see `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// One compressed change, inflated.
    pub change_bytes: u64,
    /// One document chunk with its compressed columns inflated.
    pub document_bytes: u64,
    /// All chunks of one message, inflated.
    pub message_bytes: u64,
    /// Operations in one change.
    pub ops_per_change: u64,
    /// Operations in one message (changes and documents together).
    pub ops_per_message: u64,
    /// Change chunks in one message.
    pub changes_per_message: u64,
    /// Changes inside one document chunk.
    pub changes_per_document: u64,
    /// Actor ids listed in one document chunk.
    pub actors_per_document: u64,
    /// Bytes of one actor id.
    pub actor_len: u64,
    /// Bloom filters (`have` entries) in one message; stock peers send at most one.
    pub haves: usize,
    /// Probes of one Bloom filter; stock peers use 7.
    pub bloom_probes: u64,
    /// Bytes of changes waiting for missing dependencies, per document.
    pub queued_bytes_per_doc: u64,
    /// Bytes of changes waiting for missing dependencies that one connection brought,
    /// over all its documents.
    pub queued_bytes_per_conn: u64,
    /// Actor ids one device may own.
    pub actors_per_device: usize,
    /// Bytes of one ephemeral message's data.
    pub ephemeral_bytes: usize,
    /// Ephemeral messages one connection may send per second.
    pub ephemeral_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        Self {
            change_bytes: 4 * MIB,
            document_bytes: 16 * MIB,
            message_bytes: 16 * MIB,
            ops_per_change: 50_000,
            ops_per_message: 50_000,
            changes_per_message: 10_000,
            changes_per_document: 100_000,
            actors_per_document: 10_000,
            actor_len: 64,
            haves: 8,
            bloom_probes: 64,
            queued_bytes_per_doc: 4 * MIB,
            queued_bytes_per_conn: 8 * MIB,
            actors_per_device: 100_000,
            ephemeral_bytes: 16 * 1024,
            ephemeral_per_second: 20,
        }
    }
}

/// Why a message is refused: a [`RefusalCode`] and a short text (no payload bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Machine-readable code.
    pub code: RefusalCode,
    /// For people.
    pub detail: String,
}

impl Refused {
    fn new(code: RefusalCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    fn malformed(detail: impl Into<String>) -> Self {
        Self::new(RefusalCode::MalformedSync, detail)
    }
}

/// A change chunk, as read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMeta {
    /// The change hash automerge will compute for it.
    pub hash: ChangeHash,
    /// The actor id it is written under.
    pub actor: Vec<u8>,
    /// Its sequence number for that actor.
    pub seq: u64,
    /// The changes it depends on.
    pub deps: Vec<ChangeHash>,
    /// Operations it declares.
    pub ops: u64,
}

/// A document chunk, as read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentMeta {
    /// Every actor id the document lists.
    pub actors: Vec<Vec<u8>>,
    /// The heads it declares (automerge checks them when it loads the document).
    pub heads: Vec<ChangeHash>,
    /// Changes it declares.
    pub changes: u64,
    /// Operations it declares.
    pub ops: u64,
}

/// What a chunk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A change (chunk type 1, or 2 once inflated).
    Change(ChangeMeta),
    /// A whole document (chunk type 0).
    Document(DocumentMeta),
}

/// One chunk of a message: where its bytes are and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Which element of the message's chunk list holds it (a V2 message concatenates
    /// many chunks into one element).
    pub element: usize,
    /// Its bytes within that element, header included.
    pub range: Range<usize>,
    /// What it is.
    pub kind: Kind,
    /// Its size once inflated.
    pub inflated: u64,
}

/// Everything the guard read from one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The chunks in order.
    pub chunks: Vec<Chunk>,
    /// All chunks, inflated.
    pub inflated: u64,
    /// Operations declared.
    pub ops: u64,
    /// Change chunks.
    pub changes: u64,
}

impl Scan {
    /// The change chunks.
    pub fn changes(&self) -> impl Iterator<Item = (&Chunk, &ChangeMeta)> {
        self.chunks.iter().filter_map(|c| match &c.kind {
            Kind::Change(m) => Some((c, m)),
            Kind::Document(_) => None,
        })
    }

    /// Are there document chunks?
    #[must_use]
    pub fn has_documents(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| matches!(c.kind, Kind::Document(_)))
    }
}

/// Reads every chunk of `message` within `limits`; refuses the whole message otherwise.
///
/// # Errors
/// A [`Refused`] with the first limit exceeded or the first malformed part found.
pub fn scan(message: &sync::Message, limits: &Limits) -> Result<Scan, Refused> {
    check_haves(message, limits)?;
    let mut scan = Scan::default();
    for (element, bytes) in message.changes.iter().enumerate() {
        let mut at = 0;
        while at < bytes.len() {
            let chunk = read_chunk(bytes, at, element, limits, &scan)?;
            at = chunk.range.end;
            scan.inflated = scan.inflated.saturating_add(chunk.inflated);
            if scan.inflated > limits.message_bytes {
                return Err(Refused::new(
                    RefusalCode::PayloadTooLarge,
                    format!(
                        "the message inflates to more than {} bytes",
                        limits.message_bytes
                    ),
                ));
            }
            match &chunk.kind {
                Kind::Change(m) => {
                    scan.ops = scan.ops.saturating_add(m.ops);
                    scan.changes += 1;
                }
                Kind::Document(d) => scan.ops = scan.ops.saturating_add(d.ops),
            }
            if scan.ops > limits.ops_per_message {
                return Err(too_many_ops("message", limits.ops_per_message));
            }
            if scan.changes > limits.changes_per_message {
                return Err(Refused::new(
                    RefusalCode::TooManyChanges,
                    format!(
                        "a message may carry at most {} changes",
                        limits.changes_per_message
                    ),
                ));
            }
            scan.chunks.push(chunk);
        }
    }
    Ok(scan)
}

/// The actor id of a stored change chunk (type 1, or type 2 inflated within
/// `limits.change_bytes`), or `None` if it is not one.
#[must_use]
pub fn change_actor(bytes: &[u8], limits: &Limits) -> Option<Vec<u8>> {
    let mut c = Cursor::new(bytes);
    if c.take(4).ok()? != MAGIC {
        return None;
    }
    c.take(4).ok()?;
    let kind = c.byte().ok()?;
    let len = c.uleb().ok()?;
    let data = c.take(len).ok()?;
    let inflated;
    let body = match kind {
        TYPE_CHANGE => data,
        TYPE_COMPRESSED_CHANGE => {
            inflated = inflate(data, limits.change_bytes).ok()?;
            &inflated
        }
        _ => return None,
    };
    let mut c = Cursor::new(body);
    let deps = c.uleb().ok()?;
    c.take(deps.checked_mul(32)?).ok()?;
    let actor_len = c.uleb().ok()?;
    c.take(actor_len).ok().map(<[u8]>::to_vec)
}

fn too_many_ops(what: &str, max: u64) -> Refused {
    Refused::new(
        RefusalCode::TooManyOperations,
        format!("a {what} may declare at most {max} operations"),
    )
}

/// A peer's Bloom filters are read by automerge whenever it computes what to send: a
/// filter with entries but no bits divides by zero, and its probe count sizes a vector
/// per hash tested.
fn check_haves(message: &sync::Message, limits: &Limits) -> Result<(), Refused> {
    if message.have.len() > limits.haves {
        return Err(Refused::malformed(format!(
            "at most {} have entries",
            limits.haves
        )));
    }
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue;
        }
        let mut c = Cursor::new(&bytes);
        let (Ok(entries), Ok(_bits_per_entry), Ok(probes)) = (c.uleb(), c.uleb(), c.uleb()) else {
            return Err(Refused::malformed("unreadable bloom filter"));
        };
        if entries > 0 && c.rest().is_empty() {
            return Err(Refused::malformed("bloom filter with entries and no bits"));
        }
        if probes > limits.bloom_probes {
            return Err(Refused::malformed(format!(
                "bloom filter with more than {} probes",
                limits.bloom_probes
            )));
        }
    }
    Ok(())
}

fn read_chunk(
    bytes: &[u8],
    at: usize,
    element: usize,
    limits: &Limits,
    so_far: &Scan,
) -> Result<Chunk, Refused> {
    let mut c = Cursor::new(&bytes[at..]);
    let truncated = |_| Refused::malformed("truncated chunk header");
    if c.take(4).map_err(truncated)? != MAGIC {
        return Err(Refused::malformed("not an automerge chunk"));
    }
    let checksum: [u8; 4] = c
        .take(4)
        .map_err(truncated)?
        .try_into()
        .map_err(|_| Refused::malformed("truncated chunk header"))?;
    let kind = c.byte().map_err(truncated)?;
    let len = c.uleb().map_err(truncated)?;
    let data = c
        .take(len)
        .map_err(|_| Refused::malformed("chunk longer than the message"))?;
    let range = at..at + c.pos;
    let budget = limits.message_bytes.saturating_sub(so_far.inflated);
    let ops_left = limits.ops_per_message.saturating_sub(so_far.ops);
    let (kind, inflated) = match kind {
        TYPE_CHANGE => {
            let meta = read_change(data, limits, ops_left)?;
            (Kind::Change(meta), range.len() as u64)
        }
        TYPE_COMPRESSED_CHANGE => {
            let bound = limits.change_bytes.min(budget);
            let body = inflate(data, bound)?;
            let meta = read_change(&body, limits, ops_left)?;
            (Kind::Change(meta), body.len() as u64)
        }
        TYPE_DOCUMENT => {
            let bound = limits.document_bytes.min(budget);
            let (meta, size) = read_document(data, limits, bound, ops_left)?;
            (Kind::Document(meta), size)
        }
        other => {
            return Err(Refused::new(
                RefusalCode::ChunkTypeRefused,
                format!("chunk type {other} is not accepted from devices"),
            ));
        }
    };
    if let Kind::Change(m) = &kind
        && m.hash.0[..4] != checksum
    {
        return Err(Refused::malformed("change checksum does not match"));
    }
    Ok(Chunk {
        element,
        range,
        kind,
        inflated,
    })
}

/// Splits `bytes` into plain change chunks, each with its hash and its place; `None` if
/// anything in them is not a whole plain change chunk. For changes automerge built (the
/// server's own answers), not for what devices send.
pub(crate) fn change_chunks(bytes: &[u8]) -> Option<Vec<(ChangeHash, Range<usize>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut c = Cursor::new(&bytes[at..]);
        if c.take(4).ok()? != MAGIC {
            return None;
        }
        c.take(4).ok()?;
        if c.byte().ok()? != TYPE_CHANGE {
            return None;
        }
        let len = c.uleb().ok()?;
        let data = c.take(len).ok()?;
        out.push((hash_of(TYPE_CHANGE, data), at..at + c.pos));
        at += c.pos;
    }
    Some(out)
}

/// Inflates DEFLATE `data`, refusing (without allocating it) anything beyond `bound`.
fn inflate(data: &[u8], bound: u64) -> Result<Vec<u8>, Refused> {
    // Measure first, into nothing; then inflate exactly that much.
    let mut counter = DeflateDecoder::new(data).take(bound.saturating_add(1));
    let size = io::copy(&mut counter, &mut io::sink())
        .map_err(|_| Refused::malformed("corrupt compressed change"))?;
    if size > bound {
        return Err(too_large("compressed change", bound));
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    DeflateDecoder::new(data)
        .take(size)
        .read_to_end(&mut out)
        .map_err(|_| Refused::malformed("corrupt compressed change"))?;
    Ok(out)
}

fn too_many_changes(max: u64) -> Refused {
    Refused::new(
        RefusalCode::TooManyChanges,
        format!("a document may carry at most {max} changes"),
    )
}

fn too_large(what: &str, bound: u64) -> Refused {
    Refused::new(
        RefusalCode::PayloadTooLarge,
        format!("a {what} may inflate to at most {bound} bytes"),
    )
}

fn hash_of(kind: u8, data: &[u8]) -> ChangeHash {
    let mut prefix = vec![kind];
    write_uleb(&mut prefix, data.len() as u64);
    let digest = Sha256::new()
        .chain_update(&prefix)
        .chain_update(data)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    ChangeHash(out)
}

fn write_uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn actor_id<'a>(c: &mut Cursor<'a>, limits: &Limits) -> Result<&'a [u8], Refused> {
    let len = c
        .uleb()
        .map_err(|_| Refused::malformed("truncated actor id"))?;
    if len > limits.actor_len {
        return Err(Refused::malformed(format!(
            "actor ids are at most {} bytes",
            limits.actor_len
        )));
    }
    c.take(len)
        .map_err(|_| Refused::malformed("truncated actor id"))
}

fn hashes(c: &mut Cursor<'_>) -> Result<Vec<ChangeHash>, Refused> {
    let n = c
        .uleb()
        .map_err(|_| Refused::malformed("truncated hashes"))?;
    let bytes = n
        .checked_mul(32)
        .and_then(|len| c.take(len).ok())
        .ok_or_else(|| Refused::malformed("truncated hashes"))?;
    Ok(bytes
        .chunks_exact(32)
        .map(|h| {
            let mut out = [0u8; 32];
            out.copy_from_slice(h);
            ChangeHash(out)
        })
        .collect())
}

/// Reads a change body (what follows the header of a type 1 chunk).
fn read_change(body: &[u8], limits: &Limits, ops_left: u64) -> Result<ChangeMeta, Refused> {
    let bad = |what: &str| Refused::malformed(format!("malformed change: {what}"));
    let mut c = Cursor::new(body);
    let deps = hashes(&mut c)?;
    let actor = actor_id(&mut c, limits)?.to_vec();
    let seq = c.uleb().map_err(|_| bad("sequence number"))?;
    c.uleb().map_err(|_| bad("start op"))?;
    c.sleb().map_err(|_| bad("timestamp"))?;
    let message = c.uleb().map_err(|_| bad("message"))?;
    c.take(message).map_err(|_| bad("message"))?;
    let others = c.uleb().map_err(|_| bad("actors"))?;
    for _ in 0..others {
        actor_id(&mut c, limits)?;
    }
    let columns = columns(&mut c)?;
    let data_len = columns.iter().map(|(_, len)| *len).sum::<u64>();
    let data = c.take(data_len).map_err(|_| bad("column data"))?;
    let op_bound = limits.ops_per_change.min(ops_left);
    let item_bound = op_bound.saturating_mul(ITEMS_PER_OP);
    let mut ops = 0;
    let mut at = 0usize;
    for (spec, len) in columns {
        let len = usize::try_from(len).map_err(|_| bad("column length"))?;
        let bytes = &data[at..at + len];
        at += len;
        if spec & DEFLATE_BIT != 0 {
            return Err(bad("compressed column"));
        }
        let items = count_items(spec, bytes, item_bound)
            .map_err(|e| e.refusal("change", op_bound))?
            .items;
        if spec == ACTION_COLUMN {
            ops = items;
        }
    }
    if ops > op_bound {
        return Err(too_many_ops("change", op_bound));
    }
    Ok(ChangeMeta {
        hash: hash_of(TYPE_CHANGE, body),
        actor,
        seq,
        deps,
        ops,
    })
}

/// Column specifications and lengths of a change or document.
fn columns(c: &mut Cursor<'_>) -> Result<Vec<(u64, u64)>, Refused> {
    let bad = || Refused::malformed("malformed column list");
    let n = c.uleb().map_err(|_| bad())?;
    // Each column takes at least two bytes to declare.
    if n > c.rest().len() as u64 / 2 {
        return Err(bad());
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let spec = c.uleb().map_err(|_| bad())?;
        let len = c.uleb().map_err(|_| bad())?;
        if spec > u64::from(u32::MAX) {
            return Err(bad());
        }
        out.push((spec, len));
    }
    Ok(out)
}

/// Reads a document body; returns what it declares and its size once inflated.
fn read_document(
    body: &[u8],
    limits: &Limits,
    bound: u64,
    ops_left: u64,
) -> Result<(DocumentMeta, u64), Refused> {
    let bad = |what: &str| Refused::malformed(format!("malformed document: {what}"));
    let mut c = Cursor::new(body);
    let n = c.uleb().map_err(|_| bad("actors"))?;
    if n > limits.actors_per_document {
        return Err(bad("too many actors"));
    }
    let mut actors = Vec::new();
    for _ in 0..n {
        actors.push(actor_id(&mut c, limits)?.to_vec());
    }
    let heads = hashes(&mut c)?;
    let change_columns = columns(&mut c)?;
    let op_columns = columns(&mut c)?;
    let change_len: u64 = change_columns.iter().map(|(_, len)| *len).sum();
    let op_len: u64 = op_columns.iter().map(|(_, len)| *len).sum();
    let change_data = c.take(change_len).map_err(|_| bad("change columns"))?;
    let op_data = c.take(op_len).map_err(|_| bad("operation columns"))?;
    let mut size = body.len() as u64;
    // Items per column: changes for the change columns, operations for the others.
    let mut counts = [0u64; 2];
    let item_bounds = [limits.changes_per_document, ops_left];
    for (set, (columns, data)) in [(&change_columns, change_data), (&op_columns, op_data)]
        .into_iter()
        .enumerate()
    {
        let mut at = 0usize;
        for &(spec, len) in columns {
            let len = usize::try_from(len).map_err(|_| bad("column length"))?;
            let bytes = &data[at..at + len];
            at += len;
            let item_bound = item_bounds[set].saturating_mul(ITEMS_PER_OP);
            let normal = spec & !DEFLATE_BIT;
            let counted = if spec & DEFLATE_BIT == 0 {
                count_items(normal, bytes, item_bound)
            } else {
                let room = bound.saturating_sub(size);
                count_items(
                    normal,
                    DeflateDecoder::new(bytes).take(room.saturating_add(1)),
                    item_bound,
                )
                .and_then(|c| {
                    if c.bytes > room {
                        Err(ColumnError::TooLarge)
                    } else {
                        Ok(c)
                    }
                })
            };
            let counted = counted.map_err(|e| match e {
                ColumnError::TooLarge => too_large("document", bound),
                ColumnError::TooManyItems if set == 0 => too_many_changes(item_bounds[0]),
                e => e.refusal("document", limits.ops_per_message),
            })?;
            if spec & DEFLATE_BIT != 0 {
                size = size
                    .saturating_add(counted.bytes)
                    .saturating_sub(len as u64);
            }
            let driver = if set == 0 {
                CHANGE_ACTOR_COLUMN
            } else {
                ACTION_COLUMN
            };
            if normal == driver {
                counts[set] = counted.items;
            }
        }
    }
    let [changes, ops] = counts;
    if size > bound {
        return Err(too_large("document", bound));
    }
    if changes > limits.changes_per_document {
        return Err(too_many_changes(limits.changes_per_document));
    }
    if ops > ops_left {
        return Err(too_many_ops("message", limits.ops_per_message));
    }
    Ok((
        DocumentMeta {
            actors,
            heads,
            changes,
            ops,
        },
        size,
    ))
}

#[derive(Debug)]
enum ColumnError {
    Malformed,
    TooManyItems,
    TooLarge,
}

impl ColumnError {
    fn refusal(self, what: &str, max_ops: u64) -> Refused {
        match self {
            Self::Malformed => Refused::malformed(format!("malformed {what} column")),
            Self::TooManyItems => too_many_ops(what, max_ops),
            Self::TooLarge => too_large(what, max_ops),
        }
    }
}

struct Counted {
    items: u64,
    bytes: u64,
}

/// A reader that counts what it hands out.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[derive(Clone, Copy)]
enum Value {
    Unsigned,
    Signed,
    Text,
}

/// Counts the items of one column from its run lengths (nothing is expanded), then reads
/// the rest of it to know its size. Value columns (raw bytes) have no items.
fn count_items(spec: u64, input: impl Read, bound: u64) -> Result<Counted, ColumnError> {
    let mut r = Counting {
        inner: input,
        read: 0,
    };
    let items = match spec & 0b111 {
        // Boolean: alternating run lengths.
        4 => {
            let mut items = 0u64;
            while let Some(run) = read_uleb(&mut r)? {
                items = items.saturating_add(run);
                if items > bound {
                    return Err(ColumnError::TooManyItems);
                }
            }
            items
        }
        7 => 0,
        3 => rle_items(&mut r, Value::Signed, bound)?,
        5 => rle_items(&mut r, Value::Text, bound)?,
        // Group, actor, integer and value metadata columns: unsigned values.
        _ => rle_items(&mut r, Value::Unsigned, bound)?,
    };
    io::copy(&mut r, &mut io::sink()).map_err(|_| ColumnError::Malformed)?;
    Ok(Counted {
        items,
        bytes: r.read,
    })
}

/// automerge's run-length encoding: a signed count, then one value repeated `count` times
/// (count > 0), `-count` literal values (count < 0), or an unsigned count of nulls (0).
fn rle_items(r: &mut impl Read, value: Value, bound: u64) -> Result<u64, ColumnError> {
    let mut items = 0u64;
    while let Some(count) = read_sleb(r)? {
        let (run, values) = match count {
            n if n > 0 => (n.unsigned_abs(), 1),
            n if n < 0 => (n.unsigned_abs(), n.unsigned_abs()),
            _ => (read_uleb(r)?.ok_or(ColumnError::Malformed)?, 0),
        };
        items = items.saturating_add(run);
        if items > bound {
            return Err(ColumnError::TooManyItems);
        }
        for _ in 0..values {
            skip_value(r, value)?;
        }
    }
    Ok(items)
}

fn skip_value(r: &mut impl Read, value: Value) -> Result<(), ColumnError> {
    match value {
        Value::Unsigned => read_uleb(r)?.map(|_| ()).ok_or(ColumnError::Malformed),
        Value::Signed => read_sleb(r)?.map(|_| ()).ok_or(ColumnError::Malformed),
        Value::Text => {
            let len = read_uleb(r)?.ok_or(ColumnError::Malformed)?;
            let skipped =
                io::copy(&mut r.take(len), &mut io::sink()).map_err(|_| ColumnError::Malformed)?;
            if skipped == len {
                Ok(())
            } else {
                Err(ColumnError::Malformed)
            }
        }
    }
}

/// Reads one byte; `None` at the end.
fn next_byte(r: &mut impl Read) -> Result<Option<u8>, ColumnError> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ColumnError::Malformed),
        }
    }
}

/// An unsigned LEB128; `None` at a clean end of input.
fn read_uleb(r: &mut impl Read) -> Result<Option<u64>, ColumnError> {
    let Some(first) = next_byte(r)? else {
        return Ok(None);
    };
    let mut value = u64::from(first & 0x7f);
    let mut byte = first;
    let mut shift = 7;
    while byte & 0x80 != 0 {
        byte = next_byte(r)?.ok_or(ColumnError::Malformed)?;
        if shift >= 64 || (shift == 63 && byte & 0x7e != 0) {
            return Err(ColumnError::Malformed);
        }
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Ok(Some(value))
}

/// A signed LEB128; `None` at a clean end of input.
fn read_sleb(r: &mut impl Read) -> Result<Option<i64>, ColumnError> {
    let Some(first) = next_byte(r)? else {
        return Ok(None);
    };
    let mut value = i64::from(first & 0x7f);
    let mut byte = first;
    let mut shift = 7;
    while byte & 0x80 != 0 {
        byte = next_byte(r)?.ok_or(ColumnError::Malformed)?;
        if shift >= 64 {
            return Err(ColumnError::Malformed);
        }
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if shift < 64 && byte & 0x40 != 0 {
        value |= -1i64 << shift;
    }
    Ok(Some(value))
}

/// A cursor over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

struct Short;

impl<'a> Cursor<'a> {
    const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Short> {
        let n = usize::try_from(n).map_err(|_| Short)?;
        if n > self.bytes.len() - self.pos {
            return Err(Short);
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, Short> {
        self.take(1).map(|b| b[0])
    }

    fn uleb(&mut self) -> Result<u64, Short> {
        let mut rest = self.rest();
        let before = rest.len();
        let v = read_uleb(&mut rest).ok().flatten().ok_or(Short)?;
        self.pos += before - rest.len();
        Ok(v)
    }

    fn sleb(&mut self) -> Result<i64, Short> {
        let mut rest = self.rest();
        let before = rest.len();
        let v = read_sleb(&mut rest).ok().flatten().ok_or(Short)?;
        self.pos += before - rest.len();
        Ok(v)
    }
}

/// Builders of hostile payloads, for tests (the server's, the simulator's, the phone's)
/// and the load generator: what an attacker with a device token sends.
pub mod hostile {
    use std::io::Write;

    use automerge::ChangeHash;
    use automerge::sync;
    use flate2::write::DeflateEncoder;
    use sha2::{Digest, Sha256};

    use super::{
        ACTION_COLUMN, CHANGE_ACTOR_COLUMN, DEFLATE_BIT, MAGIC, TYPE_CHANGE,
        TYPE_COMPRESSED_CHANGE, TYPE_DOCUMENT, write_uleb,
    };

    fn leb(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_uleb(&mut out, v);
        out
    }

    /// The fixed fields of a change body, up to and including its column list.
    fn change_head(
        actor: &[u8],
        seq: u64,
        deps: &[ChangeHash],
        columns: &[(u64, &[u8])],
    ) -> Vec<u8> {
        let mut b = leb(deps.len() as u64);
        for d in deps {
            b.extend(d.0);
        }
        b.extend(leb(actor.len() as u64));
        b.extend(actor);
        b.extend(leb(seq));
        b.extend(leb(1)); // start op
        b.push(0); // timestamp
        b.push(0); // no message
        b.push(0); // no other actors
        b.extend(leb(columns.len() as u64));
        for (spec, data) in columns {
            b.extend(leb(*spec));
            b.extend(leb(data.len() as u64));
        }
        for (_, data) in columns {
            b.extend(*data);
        }
        b
    }

    fn chunk(kind: u8, checksum: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(&checksum[..4]);
        out.push(kind);
        out.extend(leb(data.len() as u64));
        out.extend(data);
        out
    }

    /// A well-formed compressed change (chunk type 2, correct checksum) under `actor` that
    /// inflates to `inflated` bytes: a change without operations whose trailing bytes are
    /// zeros, which automerge accepts once it has inflated all of it. Built as a stream;
    /// 1 GiB deflates to about 1 MiB.
    ///
    /// # Panics
    /// Never (writes go to memory).
    #[must_use]
    pub fn compressed_change_bomb(
        actor: &[u8],
        seq: u64,
        deps: &[ChangeHash],
        inflated: u64,
    ) -> Vec<u8> {
        let head = change_head(actor, seq, deps, &[]);
        let total = inflated.max(head.len() as u64);
        let mut hasher = Sha256::new();
        hasher.update([TYPE_CHANGE]);
        hasher.update(leb(total));
        hasher.update(&head);
        let mut deflater = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflater.write_all(&head).expect("in memory");
        let block = vec![0u8; 1 << 20];
        let mut left = total - head.len() as u64;
        while left > 0 {
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            hasher.update(&block[..n]);
            deflater.write_all(&block[..n]).expect("in memory");
            left -= n as u64;
        }
        let checksum = hasher.finalize();
        let data = deflater.finish().expect("in memory");
        chunk(TYPE_COMPRESSED_CHANGE, &checksum, &data)
    }

    /// A document chunk (type 0) with one DEFLATE-compressed column that inflates to
    /// `inflated` zero bytes (a valid column of empty runs): automerge inflates every
    /// column of a document into memory before it reads any.
    #[must_use]
    pub fn document_bomb(actor: &[u8], inflated: u64) -> Vec<u8> {
        let mut deflater = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let block = vec![0u8; 1 << 20];
        let mut left = inflated;
        while left > 0 {
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            deflater.write_all(&block[..n]).expect("in memory");
            left -= n as u64;
        }
        let column = deflater.finish().expect("in memory");
        let mut body = leb(1);
        body.extend(leb(actor.len() as u64));
        body.extend(actor);
        body.push(0); // no heads
        body.push(1); // one change column: actor indices, compressed
        body.extend(leb(CHANGE_ACTOR_COLUMN | DEFLATE_BIT));
        body.extend(leb(column.len() as u64));
        body.push(0); // no operation columns
        body.extend(column);
        let digest = Sha256::new()
            .chain_update([TYPE_DOCUMENT])
            .chain_update(leb(body.len() as u64))
            .chain_update(&body)
            .finalize();
        chunk(TYPE_DOCUMENT, &digest, &body)
    }

    /// A change chunk of a few dozen bytes whose operation column declares `ops`
    /// operations in one run.
    #[must_use]
    pub fn operation_bomb(actor: &[u8], seq: u64, deps: &[ChangeHash], ops: u64) -> Vec<u8> {
        // A run: a positive signed count, then the repeated value (1 = "set").
        let mut run = Vec::new();
        let mut v = i64::try_from(ops).unwrap_or(i64::MAX);
        loop {
            let byte = u8::try_from(v & 0x7f).unwrap_or(0);
            v >>= 7;
            if v == 0 && byte & 0x40 == 0 {
                run.push(byte);
                break;
            }
            run.push(byte | 0x80);
        }
        run.push(1);
        let body = change_head(actor, seq, deps, &[(ACTION_COLUMN, &run)]);
        let digest = Sha256::new()
            .chain_update([TYPE_CHANGE])
            .chain_update(leb(body.len() as u64))
            .chain_update(&body)
            .finalize();
        chunk(TYPE_CHANGE, &digest, &body)
    }

    /// An encoded sync message (V1) announcing `heads` and carrying `chunks`.
    #[must_use]
    pub fn sync_message(heads: Vec<ChangeHash>, chunks: Vec<Vec<u8>>) -> Vec<u8> {
        sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(chunks),
            flags: None,
            version: sync::MessageVersion::V1,
        }
        .encode()
    }

    /// An encoded sync message whose Bloom filter claims entries but has no bits:
    /// automerge divides by zero testing a hash against it.
    #[must_use]
    pub fn broken_bloom_message(heads: &[ChangeHash]) -> Vec<u8> {
        let mut raw = vec![0x42];
        raw.extend(leb(heads.len() as u64));
        for h in heads {
            raw.extend(h.0);
        }
        raw.push(0); // need
        raw.push(1); // one have
        raw.push(0); // no last-sync hashes
        let bloom = [leb(1), leb(0), leb(7)].concat();
        raw.extend(leb(bloom.len() as u64));
        raw.extend(bloom);
        raw.push(0); // no changes
        raw
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ObjType, ROOT};
    use flate2::write::DeflateEncoder;

    use super::*;

    fn leb(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_uleb(&mut out, v);
        out
    }

    fn sleb(mut v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
            if done {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn chunk(kind: u8, checksum: [u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(checksum);
        out.push(kind);
        out.extend(leb(data.len() as u64));
        out.extend(data);
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `n` zero bytes, deflated as a stream (never held whole).
    fn deflated_zeros(n: u64) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(block.len() as u64);
            e.write_all(&block[..usize::try_from(k).unwrap()]).unwrap();
            left -= k;
        }
        e.finish().unwrap()
    }

    /// A change body with the given columns (spec, bytes) and `extra` trailing bytes.
    fn change_body(actor: &[u8], seq: u64, columns: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut b = leb(0);
        b.extend(leb(actor.len() as u64));
        b.extend(actor);
        b.extend(leb(seq));
        b.extend(leb(1));
        b.extend(sleb(0));
        b.extend(leb(0));
        b.extend(leb(0));
        b.extend(leb(columns.len() as u64));
        for (spec, data) in columns {
            b.extend(leb(*spec));
            b.extend(leb(data.len() as u64));
        }
        for (_, data) in columns {
            b.extend(data);
        }
        b
    }

    fn change_chunk(body: &[u8]) -> Vec<u8> {
        let hash = hash_of(TYPE_CHANGE, body);
        chunk(TYPE_CHANGE, hash.0[..4].try_into().unwrap(), body)
    }

    fn message(chunks: Vec<Vec<u8>>) -> sync::Message {
        sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(chunks),
            flags: None,
            version: sync::MessageVersion::V1,
        }
    }

    fn refused(message: &sync::Message, limits: &Limits) -> RefusalCode {
        scan(message, limits).expect_err("refused").code
    }

    fn real_doc(keys: usize) -> Automerge {
        let mut doc = Automerge::new().with_actor(ActorId::from([7u8; 16].as_slice()));
        let mut tx = doc.transaction();
        let map = tx.put_object(ROOT, "m", ObjType::Map).unwrap();
        for i in 0..keys {
            tx.put(&map, format!("key-{i}"), "a value that repeats")
                .unwrap();
        }
        tx.commit();
        doc
    }

    #[test]
    fn a_real_change_is_read_as_automerge_reads_it() {
        let doc = real_doc(50);
        let change = doc.get_changes(&[]).pop().unwrap();
        let s = scan(
            &message(vec![change.raw_bytes().to_vec()]),
            &Limits::default(),
        )
        .unwrap();
        let (_, meta) = s.changes().next().unwrap();
        assert_eq!(meta.hash, change.hash());
        assert_eq!(meta.actor, change.actor_id().to_bytes());
        assert_eq!(meta.seq, 1);
        assert_eq!(meta.ops, 51);
        assert_eq!(s.ops, 51);
    }

    #[test]
    fn a_compressed_change_within_its_bound_is_read_like_the_plain_one() {
        let doc = real_doc(50);
        let change = doc.get_changes(&[]).pop().unwrap();
        let raw = change.raw_bytes();
        let mut c = Cursor::new(raw);
        c.take(4).ok().unwrap();
        let checksum: [u8; 4] = c.take(4).ok().unwrap().try_into().unwrap();
        c.byte().ok().unwrap();
        let len = c.uleb().ok().unwrap();
        let body = c.take(len).ok().unwrap();
        let compressed = chunk(TYPE_COMPRESSED_CHANGE, checksum, &deflate(body));
        // automerge reads it as the same change.
        let parsed = Change::try_from(compressed.as_slice()).unwrap();
        assert_eq!(parsed.hash(), change.hash());
        let s = scan(&message(vec![compressed.clone()]), &Limits::default()).unwrap();
        assert_eq!(s.changes().next().unwrap().1.hash, change.hash());
        assert_eq!(
            change_actor(&compressed, &Limits::default()).unwrap(),
            change.actor_id().to_bytes()
        );
    }

    use automerge::Change;

    #[test]
    fn a_compressed_change_that_inflates_past_its_bound_is_refused_without_inflating_it() {
        // A valid change whose trailing (extra) bytes are 64 MiB of zeros: automerge would
        // accept it, after allocating all of it.
        let body_head = change_body(&[1; 16], 1, &[]);
        let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&body_head).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&block).unwrap();
        }
        let data = e.finish().unwrap();
        assert!(data.len() < 200_000, "a small frame: {}", data.len());
        let bomb = chunk(TYPE_COMPRESSED_CHANGE, [0; 4], &data);
        let limits = Limits::default();
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::PayloadTooLarge
        );
    }

    #[test]
    fn compressed_changes_that_together_inflate_past_the_message_bound_are_refused() {
        let limits = Limits {
            change_bytes: 1 << 20,
            message_bytes: 3 << 20,
            ..Limits::default()
        };
        let mut body = change_body(&[1; 16], 1, &[]);
        body.resize(900_000, 0);
        let hash = hash_of(TYPE_CHANGE, &body);
        let one = chunk(
            TYPE_COMPRESSED_CHANGE,
            hash.0[..4].try_into().unwrap(),
            &deflate(&body),
        );
        assert!(scan(&message(vec![one.clone(); 3]), &limits).is_ok());
        assert_eq!(
            refused(&message(vec![one; 4]), &limits),
            RefusalCode::PayloadTooLarge
        );
    }

    #[test]
    fn bundles_and_unknown_chunk_types_are_refused() {
        for kind in [3u8, 4, 0x7f] {
            let c = chunk(kind, [0; 4], &[0, 0, 0]);
            assert_eq!(
                refused(&message(vec![c]), &Limits::default()),
                RefusalCode::ChunkTypeRefused
            );
        }
    }

    #[test]
    fn garbage_and_truncated_chunks_are_malformed() {
        let limits = Limits::default();
        let good = change_chunk(&change_body(&[1; 16], 1, &[]));
        for bad in [
            vec![1, 2, 3],
            good[..good.len() - 1].to_vec(),
            {
                let mut b = good.clone();
                b[4] ^= 1; // checksum
                b
            },
            {
                let mut b = good.clone();
                b[0] = 0;
                b
            },
        ] {
            assert_eq!(
                refused(&message(vec![bad]), &limits),
                RefusalCode::MalformedSync
            );
        }
        assert!(scan(&message(vec![good]), &limits).is_ok());
    }

    #[test]
    fn a_few_bytes_declaring_billions_of_operations_are_refused() {
        let limits = Limits::default();
        // One run of 2^40 "set" actions: seven bytes.
        let mut actions = sleb(1 << 40);
        actions.extend(leb(1));
        let bomb = change_chunk(&change_body(&[1; 16], 1, &[(ACTION_COLUMN, actions)]));
        assert!(bomb.len() < 80);
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::TooManyOperations
        );
        // A null run of 2^40 in any column.
        let mut nulls = sleb(0);
        nulls.extend(leb(1 << 40));
        let bomb = change_chunk(&change_body(&[1; 16], 1, &[((7 << 4) | 1, nulls)]));
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::TooManyOperations
        );
        // A boolean column of 2^40 falses.
        let bomb = change_chunk(&change_body(&[1; 16], 1, &[((3 << 4) | 4, leb(1 << 40))]));
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::TooManyOperations
        );
    }

    #[test]
    fn operations_are_counted_over_the_whole_message() {
        let limits = Limits {
            ops_per_change: 1_000,
            ops_per_message: 2_500,
            ..Limits::default()
        };
        let mut actions = sleb(1_000);
        actions.extend(leb(1));
        let change = |seq| {
            change_chunk(&change_body(
                &[1; 16],
                seq,
                &[(ACTION_COLUMN, actions.clone())],
            ))
        };
        assert!(scan(&message(vec![change(1), change(2)]), &limits).is_ok());
        assert_eq!(
            refused(&message(vec![change(1), change(2), change(3)]), &limits),
            RefusalCode::TooManyOperations
        );
    }

    #[test]
    fn too_many_changes_in_one_message_are_refused() {
        let limits = Limits {
            changes_per_message: 3,
            ..Limits::default()
        };
        let changes: Vec<Vec<u8>> = (1..=4)
            .map(|seq| change_chunk(&change_body(&[1; 16], seq, &[])))
            .collect();
        assert!(scan(&message(changes[..3].to_vec()), &limits).is_ok());
        // Concatenated in one element, as a V2 message carries them.
        assert_eq!(
            refused(&message(vec![changes.concat()]), &limits),
            RefusalCode::TooManyChanges
        );
    }

    #[test]
    fn actor_ids_are_of_sane_length() {
        let long = change_chunk(&change_body(&[1; 65], 1, &[]));
        assert_eq!(
            refused(&message(vec![long]), &Limits::default()),
            RefusalCode::MalformedSync
        );
    }

    #[test]
    fn a_change_with_a_compressed_column_is_malformed() {
        // automerge refuses these too; only documents may compress columns.
        let bad = change_chunk(&change_body(
            &[1; 16],
            1,
            &[(ACTION_COLUMN | DEFLATE_BIT, deflate(&[2, 1]))],
        ));
        assert_eq!(
            refused(&message(vec![bad]), &Limits::default()),
            RefusalCode::MalformedSync
        );
    }

    #[test]
    fn a_document_listing_too_many_actors_is_malformed() {
        let limits = Limits {
            actors_per_document: 2,
            ..Limits::default()
        };
        let mut body = leb(3);
        for n in 0..3u8 {
            body.extend(leb(16));
            body.extend([n; 16]);
        }
        body.extend([0, 0, 0]);
        let doc = chunk(TYPE_DOCUMENT, [0; 4], &body);
        assert_eq!(
            refused(&message(vec![doc]), &limits),
            RefusalCode::MalformedSync
        );
    }

    #[test]
    fn a_saved_document_is_accepted_and_its_changes_and_operations_counted() {
        let mut doc = real_doc(2_000);
        for i in 0..20 {
            let mut tx = doc.transaction();
            tx.put(ROOT, format!("k{i}"), i64::from(i)).unwrap();
            tx.commit();
        }
        let saved = doc.save();
        let s = scan(&message(vec![saved]), &Limits::default()).unwrap();
        assert!(s.has_documents());
        let Kind::Document(d) = &s.chunks[0].kind else {
            panic!("a document")
        };
        assert_eq!(d.changes, 21);
        assert_eq!(d.ops, 2_021);
        assert_eq!(d.actors, vec![vec![7u8; 16]]);
        assert!(s.inflated > 0);
    }

    /// A document body with one actor, no heads, the given change columns and no ops.
    fn document(change_columns: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut b = leb(1);
        b.extend(leb(16));
        b.extend([9u8; 16]);
        b.extend(leb(0));
        b.extend(leb(change_columns.len() as u64));
        for (spec, data) in change_columns {
            b.extend(leb(*spec));
            b.extend(leb(data.len() as u64));
        }
        b.extend(leb(0));
        for (_, data) in change_columns {
            b.extend(data);
        }
        chunk(TYPE_DOCUMENT, [0; 4], &b)
    }

    #[test]
    fn a_document_column_that_inflates_past_the_bound_is_refused() {
        let limits = Limits {
            document_bytes: 8 << 20,
            ..Limits::default()
        };
        // Zeros are a valid column (empty null runs): only the size is wrong.
        let small = document(&[(CHANGE_ACTOR_COLUMN | DEFLATE_BIT, deflated_zeros(1 << 20))]);
        assert!(scan(&message(vec![small]), &limits).is_ok());
        let bomb = document(&[(CHANGE_ACTOR_COLUMN | DEFLATE_BIT, deflated_zeros(64 << 20))]);
        assert!(bomb.len() < 200_000);
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::PayloadTooLarge
        );
    }

    #[test]
    fn a_document_declaring_too_many_changes_or_operations_is_refused() {
        let limits = Limits::default();
        let mut run = sleb(1 << 40);
        run.extend(leb(0));
        let bomb = document(&[(CHANGE_ACTOR_COLUMN, run.clone())]);
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::TooManyChanges
        );
        // Compressed, the same run.
        let bomb = document(&[(CHANGE_ACTOR_COLUMN | DEFLATE_BIT, deflate(&run))]);
        assert_eq!(
            refused(&message(vec![bomb]), &limits),
            RefusalCode::TooManyChanges
        );
    }

    fn bloom(entries: u64, bits_per_entry: u64, probes: u64, bits: usize) -> Vec<u8> {
        let mut b = leb(entries);
        b.extend(leb(bits_per_entry));
        b.extend(leb(probes));
        b.extend(vec![0xff; bits]);
        b
    }

    /// A message with one `have` whose Bloom filter is `filter`, decoded by automerge.
    fn with_have(filter: &[u8]) -> sync::Message {
        let mut raw = vec![0x42, 0, 0, 1, 0];
        raw.extend(leb(filter.len() as u64));
        raw.extend(filter);
        raw.push(0);
        sync::Message::decode(&raw).unwrap()
    }

    #[test]
    fn bloom_filters_that_would_crash_or_flood_the_server_are_refused() {
        let limits = Limits::default();
        // The stock shape passes.
        assert!(scan(&with_have(&bloom(10, 10, 7, 13)), &limits).is_ok());
        // Entries but no bits: automerge divides by zero.
        assert_eq!(
            refused(&with_have(&bloom(1, 0, 7, 0)), &limits),
            RefusalCode::MalformedSync
        );
        // Four billion probes: automerge sizes a vector per hash with it.
        assert_eq!(
            refused(&with_have(&bloom(1, 8, u64::from(u32::MAX), 1)), &limits),
            RefusalCode::MalformedSync
        );
        let mut many = with_have(&bloom(10, 10, 7, 13));
        many.have = vec![many.have[0].clone(); 100];
        assert_eq!(refused(&many, &limits), RefusalCode::MalformedSync);
    }
}
