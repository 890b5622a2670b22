//! Validation before merge: may this writer make these changes to this document?
//!
//! The server calls [`validate`] on every incoming batch before the changes reach the
//! stored document; a device calls it (through [`crate::edits`]) before it writes, so a
//! well-behaved device is never refused. The rules are stated once in
//! `docs/conflict-rules.md`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use automerge::{
    Automerge, ChangeHash, ObjId, ObjType, Patch, PatchAction, Prop, ROOT, ReadDoc, ScalarValue,
    Value,
};

use crate::doc_id::DocumentId;
use crate::doc_read as r;
use crate::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};
use crate::schema::{self, DocKind, activity_log, booking, school_log, venue};
use crate::writer::{Role, Writer};

pub use crate::refusal::RefusalCode;

/// A refusal: the reason and the document path it concerns (ids in paths are
/// pseudonymous; no names or free text are ever echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{code} at {path}")]
pub struct Refusal {
    /// Why.
    pub code: RefusalCode,
    /// Where, as `/`-joined keys (`status`, `check_ins/<pupil>/<device>`).
    pub path: String,
}

impl Refusal {
    fn at(code: RefusalCode, path: &[String]) -> Self {
        Self {
            code,
            path: bounded_path(&path.join("/")),
        }
    }
}

/// Longest refusal path kept (characters); a longer one is cut and ends with `…`.
pub const MAX_PATH_CHARS: usize = 256;
/// Longest id-like value: `by`, user, school, venue and slot ids, roles, methods.
pub const MAX_ID_CHARS: usize = 64;
/// Longest proof, pass or key text (the longest kepu code is 305 characters).
pub const MAX_PROOF_CHARS: usize = 512;
/// Longest free-text value: descriptions, topics, locations, labels, profile fields.
pub const MAX_TEXT_CHARS: usize = 500;
/// Longest map key (entry ids, `"<pupil>/<device>"` scan keys and the like).
pub const MAX_KEY_CHARS: usize = 200;
/// The longest scan record kept as one value (schema 4): a proof, an id and the rest of
/// its fields.
pub const MAX_RECORD_CHARS: usize = MAX_PROOF_CHARS + MAX_ID_CHARS + 128;

pub(crate) fn bounded_path(path: &str) -> String {
    if path.chars().count() <= MAX_PATH_CHARS {
        return path.to_owned();
    }
    let mut out: String = path.chars().take(MAX_PATH_CHARS - 1).collect();
    out.push('…');
    out
}

/// The longest text the value at `path` may hold: a scan record of schema 4 by where it
/// lies, any other field by its key.
fn max_chars(path: &[String]) -> usize {
    let field = path.last().map_or("", String::as_str);
    if let [c, _, _] = path
        && matches!(
            c.as_str(),
            booking::key::CHECK_IN_RECORDS | booking::key::CHECK_OUT_RECORDS
        )
    {
        return MAX_RECORD_CHARS;
    }
    match field {
        "by" | "cancelled_by" | "requested_by" | "volunteer" | "school" | "venue" | "slot"
        | "role" | "method" | "status" | "activity_kind" | "kind" => MAX_ID_CHARS,
        "proof" | "key" => MAX_PROOF_CHARS,
        _ => MAX_TEXT_CHARS,
    }
}

/// Every value now at the patched key (the visible one and concurrent ones) must fit.
fn check_lengths(doc: &Automerge, p: &Patch, path: &[String]) -> Rule {
    let limit = max_chars(path);
    let field = path.last().map_or("", String::as_str);
    // A put with no concurrent value carries the only value at the key: no lookup.
    if let PatchAction::PutMap {
        value: (Value::Scalar(s), _),
        conflict: false,
        ..
    } = &p.action
    {
        return fits(s, limit);
    }
    let Ok(values) = doc.get_all(&p.obj, field) else {
        return Ok(());
    };
    for (value, _) in values {
        if let Value::Scalar(s) = value {
            fits(&s, limit)?;
        }
    }
    Ok(())
}

fn fits(s: &ScalarValue, limit: usize) -> Rule {
    let too_long = match s {
        ScalarValue::Str(t) => t.chars().count() > limit,
        ScalarValue::Bytes(b) | ScalarValue::Unknown { bytes: b, .. } => b.len() > MAX_PROOF_CHARS,
        _ => false,
    };
    require(!too_long, RefusalCode::TooLong)
}

/// The server's answer to "which document does the server itself create at this id?":
/// the revocation list, venue documents at their venue's uuid and school logs at
/// [`DocumentId::school_log`]. Devices may not create a document at such an id.
pub trait DerivedIds: std::fmt::Debug + Send + Sync {
    /// The kind the server creates at `doc`, if `doc` is one of its derived ids.
    fn kind_at(&self, doc: &DocumentId) -> Option<DocKind>;
}

/// What the server checks beyond the rules of the document itself: check-in proofs are
/// verified again against the server's key, and passes against the revocation list.
#[derive(Debug, Clone, Default)]
pub struct ProofCheck {
    /// The server's public key; `None` skips proof checks (a phone trusts its own scans,
    /// which it verified before writing them).
    pub server_key: Option<crate::proof::ServerPublicKey>,
    /// Revoked passes as (pupil, serial) with the time of revocation: a pass scanned
    /// offline before it was revoked still counts.
    pub revoked: std::collections::BTreeMap<(PupilId, u32), i64>,
    /// The id of the document being validated, for the derived-id check on creation.
    pub doc: Option<DocumentId>,
    /// The ids the server derives; a device's creation at one is `may-not-create`.
    pub derived: Option<Arc<dyn DerivedIds>>,
}

/// What a patch does, reduced to what the rules care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    PutScalar,
    PutObject,
    /// A text object put at a key (how the JavaScript library writes a plain string).
    PutText,
    Delete,
    /// A concurrent write that lost (or tied) at a key: checked for rights like a put;
    /// its value is not visible in the patch.
    Conflict,
    Other,
}

struct Ctx<'a> {
    doc: &'a Automerge,
    writer: &'a Writer,
    /// The document's heads before this merge (empty when it creates the document).
    before: &'a [ChangeHash],
    /// Keys that held a value before this merge, by object, read once per object for the
    /// containers of scans (`held_before`).
    held: HashMap<ObjId, HashSet<String>>,
    new_objects: HashSet<ObjId>,
    /// The scans this merge wrote (`scan_ids_once`).
    new_ids: Vec<NewId>,
    /// The check-in records this merge created: (pupil, device, the record's path, the
    /// record).
    new_scans: Vec<(PupilId, DeviceId, String, NewRecord)>,
    /// May the writer write this booking at all (school or venue): the same for every
    /// patch of a merge, read from the document once.
    booking_scope: std::cell::OnceCell<Rule>,
}

/// May `writer` read `doc`? Deny looks exactly like unknown on the wire.
#[must_use]
pub fn can_read(writer: &Writer, doc: &Automerge) -> bool {
    let Some(kind) = schema::kind_of(doc) else {
        return writer.role == Role::Server;
    };
    if matches!(writer.role, Role::Server | Role::BureauAdmin) {
        return true;
    }
    match kind {
        DocKind::Venue | DocKind::Revocations => true,
        DocKind::Booking => match writer.role {
            Role::Teacher => same_school(doc, writer, booking::key::SCHOOL),
            Role::VenueStaff => same_venue(doc, writer, booking::key::VENUE),
            Role::Pupil => writer.pupil.is_some_and(|p| on_roster(doc, p)),
            _ => false,
        },
        DocKind::ActivityLog => match writer.role {
            Role::Volunteer => {
                r::parsed::<_, UserId>(doc, &ROOT, activity_log::key::VOLUNTEER)
                    == Some(writer.user)
            }
            Role::Teacher => same_school(doc, writer, activity_log::key::SCHOOL),
            Role::VenueStaff => writer
                .venue
                .is_some_and(|v| activity_venues(doc).contains(&v)),
            _ => false,
        },
        // The school and bureaus (DESIGN.md), and venue staff because a mobile museum's
        // tour tablet must hold a school's log offline to record its tour stops: an
        // automerge replica is the whole document. What venue staff may write in it is
        // confined to tour stops and their own tour attendance (`check_school_log`).
        DocKind::SchoolLog => match writer.role {
            Role::Teacher => same_school(doc, writer, school_log::key::SCHOOL),
            Role::VenueStaff => true,
            _ => false,
        },
    }
}

fn same_school(doc: &Automerge, writer: &Writer, key: &str) -> bool {
    writer.school.is_some() && r::parsed::<_, SchoolId>(doc, &ROOT, key) == writer.school
}

fn same_venue(doc: &Automerge, writer: &Writer, key: &str) -> bool {
    writer.venue.is_some() && r::parsed::<_, VenueId>(doc, &ROOT, key) == writer.venue
}

fn on_roster(doc: &Automerge, pupil: PupilId) -> bool {
    r::map(doc, &ROOT, booking::key::ROSTER)
        .is_some_and(|ro| doc.get(&ro, pupil.to_string()).ok().flatten().is_some())
}

fn activity_venues(doc: &Automerge) -> Vec<VenueId> {
    let Some(acts) = r::map(doc, &ROOT, activity_log::key::ACTIVITIES) else {
        return Vec::new();
    };
    r::keys(doc, &acts)
        .iter()
        .filter_map(|k| r::map(doc, &acts, k))
        .filter_map(|a| r::parsed(doc, &a, "venue"))
        .collect()
}

/// Validates the changes between `before_heads` and the current heads of `doc` (which
/// already contains them) as written by `writer`. `before_heads` empty means the batch
/// creates the document.
///
/// # Errors
/// The first [`Refusal`] found.
pub fn validate(
    doc: &Automerge,
    before_heads: &[ChangeHash],
    writer: &Writer,
) -> Result<(), Refusal> {
    let after_heads = doc.get_heads();
    if after_heads == before_heads {
        return Ok(());
    }
    let patches = doc.diff(before_heads, &after_heads);
    validate_patches(doc, before_heads, &patches, writer)
}

/// Validates already computed patches. See [`validate`].
///
/// # Errors
/// The first [`Refusal`] found.
pub fn validate_patches(
    doc: &Automerge,
    before: &[ChangeHash],
    patches: &[Patch],
    writer: &Writer,
) -> Result<(), Refusal> {
    validate_patches_with(doc, before, patches, writer, &ProofCheck::default())
}

/// Validates patches and, with a server key, the proofs of the new check-ins.
///
/// # Errors
/// The first [`Refusal`] found.
pub fn validate_patches_with(
    doc: &Automerge,
    before: &[ChangeHash],
    patches: &[Patch],
    writer: &Writer,
    proofs: &ProofCheck,
) -> Result<(), Refusal> {
    let Some(kind) = schema::kind_of(doc) else {
        // A JavaScript client's `doc.kind = "booking"` writes a text object.
        let text_kind = matches!(
            doc.get(ROOT, schema::KIND),
            Ok(Some((Value::Object(ObjType::Text), _)))
        );
        return Err(if text_kind {
            Refusal::at(RefusalCode::TextNotScalar, &[schema::KIND.to_owned()])
        } else {
            Refusal::at(RefusalCode::UnknownKind, &[])
        });
    };
    let mut ctx = Ctx {
        doc,
        writer,
        before,
        held: HashMap::new(),
        new_objects: HashSet::new(),
        new_ids: Vec::new(),
        new_scans: Vec::new(),
        booking_scope: std::cell::OnceCell::new(),
    };
    if ctx.created() {
        check_schema_version(doc)?;
        check_create(&ctx, kind, proofs)?;
    }
    for p in patches {
        let (path, act) = flatten(p, &mut ctx.new_objects);
        if act == Act::Other {
            return Err(Refusal::at(RefusalCode::UnknownField, &path));
        }
        if path.iter().any(|k| k.chars().count() > MAX_KEY_CHARS) {
            return Err(Refusal::at(RefusalCode::TooLong, &path));
        }
        if matches!(act, Act::PutScalar | Act::Conflict) && !path.is_empty() {
            check_lengths(doc, p, &path).map_err(|code| Refusal::at(code, &path))?;
        }
        // The object a put lands in, to tell new entries from edits of existing ones.
        let parent_is_new = ctx.new_objects.contains(&p.obj);
        if act == Act::PutText {
            // No field holds a text object. Where the same characters as a string would
            // pass, say so; otherwise refuse for whatever else is wrong.
            let as_string = text_as_string(doc, &p.action);
            check(&ctx, kind, &path, Act::PutScalar, parent_is_new, &as_string)
                .map_err(|code| Refusal::at(code, &path))?;
            return Err(Refusal::at(RefusalCode::TextNotScalar, &path));
        }
        check(&ctx, kind, &path, act, parent_is_new, &p.action)
            .map_err(|code| Refusal::at(code, &path))?;
        // A key in a container of scans is written once: written again, it would hide or
        // replace what the device recorded (ADR 0206). A concurrent write that lost at such
        // a key is refused by `check_scan` already (`malformed-value`).
        if kind == DocKind::Booking
            && !parent_is_new
            && matches!(act, Act::PutScalar | Act::PutObject)
            && let Some(code) = written_once(&path)
            && let Some(key) = path.last()
            && ctx.held_before(&p.obj, key)
        {
            return Err(Refusal::at(code, &path));
        }
        if kind == DocKind::Booking
            && let Some((out, device, id)) = new_scan_id(&path, act)
        {
            ctx.new_ids.push(NewId {
                out,
                device,
                id,
                path: path.clone(),
                in_new_map: parent_is_new,
            });
        }
        if kind == DocKind::Booking
            && act == Act::PutObject
            && let PatchAction::PutMap {
                value: (_, record), ..
            } = &p.action
            && let Some((pupil, device)) = new_check_in(&path)
        {
            ctx.new_scans.push((
                pupil,
                device,
                path.join("/"),
                NewRecord::Object(record.clone()),
            ));
        }
        // A record kept as one value is read again only for the server's proof check.
        if kind == DocKind::Booking
            && act == Act::PutScalar
            && proofs.server_key.is_some()
            && let [c, device, key] = path.as_slice()
            && c == booking::key::CHECK_IN_RECORDS
            && let (Some(device), Some((pupil, _))) = (
                booking::canonical::<DeviceId>(device),
                booking::split_record_key(key),
            )
            && let Some(record) = str_value(&p.action).and_then(|t| booking::ScanRecord::parse(&t))
        {
            ctx.new_scans
                .push((pupil, device, path.join("/"), NewRecord::Value(record)));
        }
    }
    scan_ids_once(doc, &ctx.new_objects, &ctx.new_ids)?;
    if let Some(server_key) = &proofs.server_key {
        let venue = std::cell::OnceCell::new();
        for (pupil, device, path, record) in &ctx.new_scans {
            let to_check = ScanToCheck {
                pupil: *pupil,
                device: *device,
                record,
                venue: &venue,
            };
            check_scan_proof(doc, writer, server_key, &proofs.revoked, &to_check).map_err(
                |code| Refusal {
                    code,
                    path: path.clone(),
                },
            )?;
        }
    }
    Ok(())
}

impl Ctx<'_> {
    /// Does this merge create the document?
    fn created(&self) -> bool {
        self.before.is_empty()
    }

    /// Did `key` of `obj` hold a value before this merge? Each object's keys are read
    /// once a merge, at the heads before it (a clock from automerge's cache, not a walk
    /// of the history).
    fn held_before(&mut self, obj: &ObjId, key: &str) -> bool {
        if self.created() {
            return false;
        }
        let (doc, before) = (self.doc, self.before);
        self.held
            .entry(obj.clone())
            .or_insert_with(|| {
                doc.map_range_at(obj, .., before)
                    .map(|item| item.key.into_owned())
                    .collect()
            })
            .contains(key)
    }
}

/// The family (check-outs or not), device and scan id of the scan a write at `path`
/// creates, in any layout; `None` for any other write. The path passed the rules.
fn new_scan_id(path: &[String], act: Act) -> Option<(bool, DeviceId, String)> {
    use booking::key::{
        CHECK_IN_RECORDS, CHECK_INS, CHECK_INS_BY_DEVICE, CHECK_OUT_RECORDS, CHECK_OUTS,
        CHECK_OUTS_BY_DEVICE,
    };
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (p.as_slice(), act) {
        ([c @ (CHECK_INS | CHECK_OUTS), key, id], Act::PutObject) => {
            let (_, device) = booking::split_scan_key(key)?;
            Some((*c == CHECK_OUTS, device, (*id).to_owned()))
        }
        (
            [
                c @ (CHECK_INS_BY_DEVICE | CHECK_OUTS_BY_DEVICE),
                device,
                _,
                id,
            ],
            Act::PutObject,
        ) => Some((
            *c == CHECK_OUTS_BY_DEVICE,
            device.parse().ok()?,
            (*id).to_owned(),
        )),
        ([c @ (CHECK_IN_RECORDS | CHECK_OUT_RECORDS), device, key], Act::PutScalar) => {
            let (_, id) = booking::split_record_key(key)?;
            Some((*c == CHECK_OUT_RECORDS, device.parse().ok()?, id.to_owned()))
        }
        _ => None,
    }
}

/// A scan a merge wrote, for `scan_ids_once`.
struct NewId {
    /// A check-out (else a check-in).
    out: bool,
    device: DeviceId,
    /// Its scan id.
    id: String,
    path: Vec<String>,
    /// Written into a map of scans this merge made.
    in_new_map: bool,
}

/// Each new scan's id names one scan of its device among its family's scans, in every
/// layout (ARCHITECTURE gap 78, ADR 0207): the server's rows of scans are keyed by device
/// and scan id, and a second scan under one id would be missing from them. Per device
/// and family the merge wrote scans for, the scan ids of the maps that existed before it
/// are read once (they hold the old scans and the merge's new ones there; nothing in them
/// is deleted or written again) and the new scans in maps the merge made are added.
fn scan_ids_once(
    doc: &Automerge,
    new_objects: &HashSet<ObjId>,
    new_ids: &[NewId],
) -> Result<(), Refusal> {
    let mut families: Vec<(bool, DeviceId)> = new_ids.iter().map(|n| (n.out, n.device)).collect();
    families.sort_unstable();
    families.dedup();
    for (out, device) in families {
        let mine: Vec<&NewId> = new_ids
            .iter()
            .filter(|n| (n.out, n.device) == (out, device))
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for n in &mine {
            *seen.entry(n.id.as_str()).or_default() += usize::from(n.in_new_map);
        }
        booking::device_scan_ids(
            doc,
            out,
            device,
            |obj| new_objects.contains(obj),
            |id| {
                if let Some(n) = seen.get_mut(id) {
                    *n += 1;
                }
            },
        );
        if let Some(n) = mine.iter().find(|n| seen[n.id.as_str()] > 1) {
            return Err(Refusal::at(RefusalCode::ScanImmutable, &n.path));
        }
    }
    Ok(())
}

/// What writing a key of a container of scans again is refused as, in every layout
/// (ADR 0203, 0205): a device's map, a pupil's map or a pupil's map by one device, made
/// again, would hide the scans in it (`no-delete`); a scan record written again would
/// replace a scan already taken (`scan-immutable`). `None` for any other path.
fn written_once(path: &[String]) -> Option<RefusalCode> {
    use booking::key::{
        CHECK_IN_RECORDS, CHECK_INS, CHECK_INS_BY_DEVICE, CHECK_OUT_RECORDS, CHECK_OUTS,
        CHECK_OUTS_BY_DEVICE,
    };
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        // "<pupil>/<device>"; "<device>"; "<device>" / "<pupil>"; "<device>" (records).
        [CHECK_INS | CHECK_OUTS, _]
        | [CHECK_INS_BY_DEVICE | CHECK_OUTS_BY_DEVICE, _]
        | [CHECK_INS_BY_DEVICE | CHECK_OUTS_BY_DEVICE, _, _]
        | [CHECK_IN_RECORDS | CHECK_OUT_RECORDS, _] => Some(RefusalCode::NoDelete),
        // A scan record: its object, or its one value (schema 4).
        [CHECK_INS | CHECK_OUTS, _, _]
        | [CHECK_INS_BY_DEVICE | CHECK_OUTS_BY_DEVICE, _, _, _]
        | [CHECK_IN_RECORDS | CHECK_OUT_RECORDS, _, _] => Some(RefusalCode::ScanImmutable),
        _ => None,
    }
}

/// The pupil and device of the check-in record a put of an object at `path` creates, in
/// either layout (ADR 0203); `None` for any other path. The path passed the rules.
fn new_check_in(path: &[String]) -> Option<(PupilId, DeviceId)> {
    match path {
        [c, key, _scan] if c == booking::key::CHECK_INS => booking::split_scan_key(key),
        [c, device, pupil, _scan] if c == booking::key::CHECK_INS_BY_DEVICE => {
            Some((pupil.parse().ok()?, device.parse().ok()?))
        }
        _ => None,
    }
}

/// A check-in record a merge created.
enum NewRecord {
    /// A record's object (schema 1 to 3), as its patch named it: checking it reads its
    /// fields and not the path down to it again.
    Object(ObjId),
    /// A record kept as one value (schema 4), as validation read it.
    Value(booking::ScanRecord),
}

/// A scan record this merge created.
struct ScanToCheck<'a> {
    pupil: PupilId,
    device: DeviceId,
    record: &'a NewRecord,
    /// The booking's venue, read once for every gate-code scan of the merge.
    venue: &'a std::cell::OnceCell<Option<VenueId>>,
}

/// The server's second look at a new check-in: the gate proof or pass must verify for
/// the scan's own time, name this booking's venue or this pupil, and not be revoked.
fn check_scan_proof(
    doc: &Automerge,
    writer: &Writer,
    server_key: &crate::proof::ServerPublicKey,
    revoked: &std::collections::BTreeMap<(PupilId, u32), i64>,
    scan: &ScanToCheck<'_>,
) -> Rule {
    let (pupil, device) = (scan.pupil, scan.device);
    let (at, method, proof) = match scan.record {
        NewRecord::Object(obj) => {
            // The record's fields in one read of its map, as the records read them: each
            // lookup by key is a search of the document's columns of its own.
            let rec = r::Fields::of(doc, obj);
            let at = rec.int("at").ok_or(RefusalCode::MalformedValue)?;
            let method = rec
                .string("method")
                .and_then(|m| booking::ScanMethod::parse(&m))
                .ok_or(RefusalCode::MalformedValue)?;
            (at, method, rec.string("proof"))
        }
        NewRecord::Value(rec) => (rec.at, rec.method, rec.proof.clone()),
    };
    match method {
        booking::ScanMethod::GateCode => {
            let venue = (*scan
                .venue
                .get_or_init(|| r::parsed::<_, VenueId>(doc, &ROOT, booking::key::VENUE)))
            .ok_or(RefusalCode::MalformedValue)?;
            let p = proof.ok_or(RefusalCode::BadProof)?;
            // Only a proof bound to this pupil, this device and this time counts: an
            // unbound gate proof could have been copied from a classmate's check-in.
            let g = crate::proof::verify_bound_gate_proof_at(&p, server_key, pupil, device, at)
                .map_err(|_| RefusalCode::BadProof)?;
            require(g.venue() == venue, RefusalCode::BadProof)
        }
        booking::ScanMethod::PassScan => {
            require(writer.role != Role::Pupil, RefusalCode::RoleMayNotWrite)?;
            let p = proof.ok_or(RefusalCode::BadProof)?;
            let pass = crate::proof::verify_pass(&p, server_key, at, &|pu, serial| {
                revoked.get(&(pu, serial)).is_some_and(|t| *t <= at)
            })
            .map_err(|_| RefusalCode::BadProof)?;
            require(pass.pupil == pupil, RefusalCode::BadProof)
        }
        booking::ScanMethod::Manual => {
            require(writer.role != Role::Pupil, RefusalCode::RoleMayNotWrite)
        }
    }
}

fn flatten(p: &Patch, new_objects: &mut HashSet<ObjId>) -> (Vec<String>, Act) {
    let mut path: Vec<String> = p
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => k.clone(),
            Prop::Seq(i) => format!("#{i}"),
        })
        .collect();
    let act = match &p.action {
        PatchAction::PutMap { key, value, .. } => {
            path.push(key.clone());
            match value {
                (Value::Object(ObjType::Text), id) => {
                    new_objects.insert(id.clone());
                    Act::PutText
                }
                (Value::Object(_), id) => {
                    new_objects.insert(id.clone());
                    Act::PutObject
                }
                (Value::Scalar(_), _) => Act::PutScalar,
            }
        }
        PatchAction::DeleteMap { key } => {
            path.push(key.clone());
            Act::Delete
        }
        PatchAction::Conflict { prop } => {
            path.push(match prop {
                Prop::Map(k) => k.clone(),
                Prop::Seq(i) => format!("#{i}"),
            });
            Act::Conflict
        }
        _ => Act::Other,
    };
    (path, act)
}

/// A document stamped with a schema version this engine does not know (newer than
/// [`schema::SCHEMA_VERSION`]) is not taken: this engine cannot tell which of its fields
/// are allowed or what they mean (ADR 0171). Checked on the creating change, the only
/// change a device stamps; a version below 1 is malformed.
fn check_schema_version(doc: &Automerge) -> Result<(), Refusal> {
    let version = schema::schema_of(doc);
    let code = if version > schema::SCHEMA_VERSION {
        RefusalCode::SchemaTooNew
    } else if version < 1 {
        RefusalCode::MalformedValue
    } else {
        return Ok(());
    };
    Err(Refusal::at(code, &[schema::SCHEMA.to_owned()]))
}

/// Who may create what. Venue documents, school logs and the revocation list live at
/// ids the server derives, and the server creates them; a device creates only bookings
/// (teachers, for their school) and its own activity log (volunteers, for their school),
/// and never at an id the server derives ([`DerivedIds`]).
fn check_create(ctx: &Ctx<'_>, kind: DocKind, server: &ProofCheck) -> Result<(), Refusal> {
    let w = ctx.writer;
    let doc = ctx.doc;
    let derived = match (&server.derived, &server.doc) {
        (Some(d), Some(id)) => d.kind_at(id).is_some(),
        _ => false,
    };
    let ok = match (kind, w.role) {
        (_, Role::Server) => true,
        _ if derived => false,
        (DocKind::Booking, Role::Teacher) => same_school(doc, w, booking::key::SCHOOL),
        (DocKind::ActivityLog, Role::Volunteer) => {
            r::parsed::<_, UserId>(doc, &ROOT, activity_log::key::VOLUNTEER) == Some(w.user)
                && r::parsed::<_, SchoolId>(doc, &ROOT, activity_log::key::SCHOOL) == w.school
                && (w.school.is_some()
                    || r::scalar(doc, &ROOT, activity_log::key::SCHOOL).is_none())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::at(
            RefusalCode::MayNotCreate,
            &[kind.as_str().to_owned()],
        ))
    }
}

fn is_int(action: &PatchAction) -> bool {
    matches!(action, PatchAction::Conflict { .. })
        || matches!(
            action,
            PatchAction::PutMap { value: (Value::Scalar(s), _), .. }
                if matches!(s.as_ref(), ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_))
        )
}

fn is_str(action: &PatchAction) -> bool {
    matches!(action, PatchAction::Conflict { .. })
        || matches!(action, PatchAction::PutMap { value: (Value::Scalar(s), _), .. } if matches!(s.as_ref(), ScalarValue::Str(_)))
}

fn str_value(action: &PatchAction) -> Option<String> {
    match action {
        PatchAction::PutMap {
            value: (Value::Scalar(s), _),
            ..
        } => match s.as_ref() {
            ScalarValue::Str(t) => Some(t.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The put of a text object as the put of a string with the same characters (a text
/// longer than any field allows reads as empty: it is refused either way).
fn text_as_string(doc: &Automerge, action: &PatchAction) -> PatchAction {
    let PatchAction::PutMap {
        key,
        value: (_, id),
        conflict,
    } = action
    else {
        return action.clone();
    };
    let text = if doc.length(id) <= MAX_PROOF_CHARS {
        doc.text(id).unwrap_or_default()
    } else {
        String::new()
    };
    PatchAction::PutMap {
        key: key.clone(),
        value: (
            Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Str(text.into()))),
            id.clone(),
        ),
        conflict: *conflict,
    }
}

type Rule = Result<(), RefusalCode>;

fn require(cond: bool, code: RefusalCode) -> Rule {
    if cond { Ok(()) } else { Err(code) }
}

fn check(
    ctx: &Ctx<'_>,
    kind: DocKind,
    path: &[String],
    act: Act,
    parent_is_new: bool,
    action: &PatchAction,
) -> Rule {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    // Root identity fields are fixed at creation, for everyone.
    if let [field] = p.as_slice()
        && (*field == schema::KIND || is_identity(kind, field))
    {
        return require(ctx.created(), RefusalCode::ImmutableField);
    }
    if let [field] = p.as_slice()
        && *field == schema::SCHEMA
    {
        require(is_int(action), RefusalCode::MalformedValue)?;
        return require(
            ctx.created() || ctx.writer.role == Role::Server,
            RefusalCode::ImmutableField,
        );
    }
    match kind {
        DocKind::Booking => check_booking(ctx, &p, act, parent_is_new, action),
        DocKind::Venue => check_venue(ctx, &p, act),
        DocKind::ActivityLog => check_activity_log(ctx, &p, act, parent_is_new, action),
        DocKind::SchoolLog => check_school_log(ctx, &p, act, parent_is_new, action),
        DocKind::Revocations => {
            require(
                ctx.writer.role == Role::Server,
                RefusalCode::RoleMayNotWrite,
            )?;
            require(
                p.first() == Some(&crate::schema::revocations::PASSES),
                RefusalCode::UnknownField,
            )
        }
    }
}

fn is_identity(kind: DocKind, field: &str) -> bool {
    match kind {
        DocKind::Booking => [
            booking::key::VENUE,
            booking::key::SLOT,
            booking::key::SCHOOL,
            booking::key::REQUESTED_BY,
            booking::key::REQUESTED_AT,
        ]
        .contains(&field),
        DocKind::Venue => field == venue::key::VENUE,
        DocKind::ActivityLog => {
            [activity_log::key::VOLUNTEER, activity_log::key::SCHOOL].contains(&field)
        }
        DocKind::SchoolLog => [school_log::key::SCHOOL, school_log::key::YEAR].contains(&field),
        DocKind::Revocations => false,
    }
}

fn is_container(kind: DocKind, field: &str) -> bool {
    match kind {
        DocKind::Booking => [
            booking::key::ROSTER,
            booking::key::CHECK_INS,
            booking::key::CHECK_OUTS,
            booking::key::CHECK_INS_BY_DEVICE,
            booking::key::CHECK_OUTS_BY_DEVICE,
            booking::key::CHECK_IN_RECORDS,
            booking::key::CHECK_OUT_RECORDS,
            booking::key::NOTES,
        ]
        .contains(&field),
        DocKind::Venue => [
            venue::key::PROFILE,
            venue::key::INSTRUMENTS,
            venue::key::SLOTS,
            venue::key::GATES,
        ]
        .contains(&field),
        DocKind::ActivityLog => [
            activity_log::key::ACTIVITIES,
            activity_log::key::CONFIRMATIONS,
        ]
        .contains(&field),
        DocKind::SchoolLog => [
            school_log::key::SESSIONS,
            school_log::key::LECTURES,
            school_log::key::TOUR_STOPS,
            school_log::key::TOUR_ATTENDANCE,
        ]
        .contains(&field),
        DocKind::Revocations => field == crate::schema::revocations::PASSES,
    }
}

/// Skeleton containers may only be created with the document.
fn container_rule(ctx: &Ctx<'_>, kind: DocKind, p: &[&str], act: Act) -> Option<Rule> {
    if let [field] = p
        && is_container(kind, field)
    {
        return Some(if act == Act::PutObject && ctx.created() {
            Ok(())
        } else if act == Act::Delete {
            Err(RefusalCode::NoDelete)
        } else {
            Err(RefusalCode::ImmutableField)
        });
    }
    None
}

fn booking_scope(ctx: &Ctx<'_>) -> Rule {
    ctx.booking_scope
        .get_or_init(|| booking_scope_of(ctx))
        .clone()
}

fn booking_scope_of(ctx: &Ctx<'_>) -> Rule {
    let w = ctx.writer;
    match w.role {
        Role::Server => Ok(()),
        Role::Teacher => require(
            same_school(ctx.doc, w, booking::key::SCHOOL),
            RefusalCode::OtherSchool,
        ),
        Role::VenueStaff => require(
            same_venue(ctx.doc, w, booking::key::VENUE),
            RefusalCode::OtherVenue,
        ),
        Role::Pupil => Ok(()),
        Role::Volunteer | Role::BureauAdmin => Err(RefusalCode::RoleMayNotWrite),
    }
}

fn check_booking(
    ctx: &Ctx<'_>,
    p: &[&str],
    act: Act,
    parent_is_new: bool,
    action: &PatchAction,
) -> Rule {
    use booking::key;
    if let Some(rule) = container_rule(ctx, DocKind::Booking, p, act) {
        return rule;
    }
    let w = ctx.writer;
    booking_scope(ctx)?;
    match p {
        [key::STATUS | key::DECIDED_AT | key::WAIT_POSITION] => {
            require(w.role == Role::Server, RefusalCode::StatusIsServerOnly)?;
            if p[0] == key::STATUS && act == Act::PutScalar {
                require(
                    str_value(action)
                        .and_then(|s| booking::Status::parse(&s))
                        .is_some(),
                    RefusalCode::MalformedValue,
                )?;
            }
            Ok(())
        }
        [key::PARTY_SIZE] => {
            require(
                matches!(w.role, Role::Teacher | Role::Server),
                RefusalCode::RoleMayNotWrite,
            )?;
            require(
                ctx.created() || w.role == Role::Server,
                RefusalCode::ImmutableField,
            )?;
            require(is_int(action), RefusalCode::MalformedValue)
        }
        [key::CANCELLED_AT | key::CANCELLED_BY] => {
            require(act != Act::Delete, RefusalCode::NoDelete)?;
            require(
                matches!(w.role, Role::Teacher | Role::VenueStaff | Role::Server),
                RefusalCode::RoleMayNotWrite,
            )
        }
        [key::GUIDE] => {
            require(
                matches!(w.role, Role::VenueStaff | Role::Server),
                RefusalCode::RoleMayNotWrite,
            )?;
            require(
                act == Act::Delete || is_str(action),
                RefusalCode::MalformedValue,
            )
        }
        [key::ROSTER, pupil] => {
            require(
                matches!(w.role, Role::Teacher | Role::Server),
                RefusalCode::RoleMayNotWrite,
            )?;
            require(
                pupil.parse::<PupilId>().is_ok(),
                RefusalCode::MalformedValue,
            )?;
            require(act != Act::PutObject, RefusalCode::MalformedValue)
        }
        [key::CHECK_INS | key::CHECK_OUTS, rest @ ..] => check_scan(
            ctx,
            booking::Layout::ByPupilDevice,
            rest,
            act,
            parent_is_new,
            action,
        ),
        [
            key::CHECK_INS_BY_DEVICE | key::CHECK_OUTS_BY_DEVICE,
            rest @ ..,
        ] => check_scan(
            ctx,
            booking::Layout::ByDevice,
            rest,
            act,
            parent_is_new,
            action,
        ),
        [key::CHECK_IN_RECORDS | key::CHECK_OUT_RECORDS, rest @ ..] => check_scan(
            ctx,
            booking::Layout::Records,
            rest,
            act,
            parent_is_new,
            action,
        ),
        [key::NOTES, _id, rest @ ..] => {
            require(w.role != Role::Pupil, RefusalCode::RoleMayNotWrite)?;
            require(act != Act::Delete, RefusalCode::NoDelete)?;
            match rest {
                [] => require(act == Act::PutObject, RefusalCode::MalformedValue),
                [field] => {
                    require(parent_is_new, RefusalCode::ScanImmutable)?;
                    match *field {
                        "at" => require(is_int(action), RefusalCode::MalformedValue),
                        "by" | "role" => require(is_str(action), RefusalCode::MalformedValue),
                        // Every rostered pupil reads the notes: codes only, no free text
                        // that could carry a name (ADR 0110).
                        "text" => require(
                            str_value(action)
                                .is_some_and(|t| booking::NOTE_CODES.contains(&t.as_str())),
                            RefusalCode::MalformedValue,
                        ),
                        _ => Err(RefusalCode::UnknownField),
                    }
                }
                _ => Err(RefusalCode::UnknownField),
            }
        }
        _ => Err(RefusalCode::UnknownField),
    }
}

/// A write below a container of scans: `rest` is the path below the container, in its
/// layout (ADR 0203). Either layout names a device and a pupil before the scan records;
/// the per-device layout's keys are ids as kepu spells them, one key per device and pupil.
fn check_scan(
    ctx: &Ctx<'_>,
    layout: booking::Layout,
    rest: &[&str],
    act: Act,
    parent_is_new: bool,
    action: &PatchAction,
) -> Rule {
    require(act != Act::Delete, RefusalCode::NoDelete)?;
    // The device and pupil the path names (the pupil once it is that deep), and the path
    // below the map of one pupil's scans by one device.
    let (device, pupil, below) = match (layout, rest) {
        (_, []) => return Err(RefusalCode::UnknownField),
        (booking::Layout::ByPupilDevice, [key, below @ ..]) => {
            let (pupil, device) =
                booking::split_scan_key(key).ok_or(RefusalCode::MalformedValue)?;
            (device, Some(pupil), below)
        }
        (booking::Layout::ByDevice, [device, rest @ ..]) => {
            let device =
                booking::canonical::<DeviceId>(device).ok_or(RefusalCode::MalformedValue)?;
            match rest {
                [] => (device, None, rest),
                [pupil, below @ ..] => {
                    let pupil =
                        booking::canonical::<PupilId>(pupil).ok_or(RefusalCode::MalformedValue)?;
                    (device, Some(pupil), below)
                }
            }
        }
        (booking::Layout::Records, [device, rest @ ..]) => {
            let device =
                booking::canonical::<DeviceId>(device).ok_or(RefusalCode::MalformedValue)?;
            match rest {
                [] => (device, None, rest),
                [key] => {
                    let (pupil, _) =
                        booking::split_record_key(key).ok_or(RefusalCode::MalformedValue)?;
                    check_owner(ctx, device, Some(pupil))?;
                    // A scan is one value: a record's text, read as every reader reads it.
                    require(act == Act::PutScalar, RefusalCode::MalformedValue)?;
                    return require(
                        str_value(action)
                            .and_then(|t| booking::ScanRecord::parse(&t))
                            .is_some_and(|r| {
                                r.by.as_ref()
                                    .is_none_or(|b| b.chars().count() <= MAX_ID_CHARS)
                                    && r.proof
                                        .as_ref()
                                        .is_none_or(|p| p.chars().count() <= MAX_PROOF_CHARS)
                            }),
                        RefusalCode::MalformedValue,
                    );
                }
                _ => return Err(RefusalCode::UnknownField),
            }
        }
    };
    check_owner(ctx, device, pupil)?;
    match (pupil, below) {
        (None, []) => {
            // A device's own map, made once: made again over the old one, it would hide
            // every scan the device recorded, which is a delete.
            // (Made again over the old one it is refused as `no-delete`: `written_once`.)
            require(act == Act::PutObject, RefusalCode::MalformedValue)
        }
        (Some(_), [] | [_]) => require(act == Act::PutObject, RefusalCode::MalformedValue),
        (Some(_), [_, field]) => {
            // Scan records are written once, in the change that creates them.
            require(parent_is_new, RefusalCode::ScanImmutable)?;
            match *field {
                "at" => require(is_int(action), RefusalCode::MalformedValue),
                "method" => require(
                    str_value(action)
                        .and_then(|m| booking::ScanMethod::parse(&m))
                        .is_some(),
                    RefusalCode::MalformedValue,
                ),
                "proof" | "by" => require(is_str(action), RefusalCode::MalformedValue),
                _ => Err(RefusalCode::UnknownField),
            }
        }
        _ => Err(RefusalCode::UnknownField),
    }
}

/// Only a device writes its scans (the server any device's), and a pupil's phone only
/// the pupil's own, who must be on the roster.
fn check_owner(ctx: &Ctx<'_>, device: DeviceId, pupil: Option<PupilId>) -> Rule {
    let w = ctx.writer;
    if w.role != Role::Server {
        require(device == w.device, RefusalCode::NotOwnDevice)?;
    }
    if w.role == Role::Pupil
        && let Some(pupil) = pupil
    {
        require(w.pupil == Some(pupil), RefusalCode::NotOwnPupil)?;
        require(on_roster(ctx.doc, pupil), RefusalCode::NotOnRoster)?;
    }
    Ok(())
}

fn check_venue(ctx: &Ctx<'_>, p: &[&str], act: Act) -> Rule {
    if let Some(rule) = container_rule(ctx, DocKind::Venue, p, act) {
        return rule;
    }
    let w = ctx.writer;
    match w.role {
        Role::Server | Role::BureauAdmin => {}
        Role::VenueStaff => require(
            same_venue(ctx.doc, w, venue::key::VENUE),
            RefusalCode::OtherVenue,
        )?,
        _ => return Err(RefusalCode::RoleMayNotWrite),
    }
    match p {
        [venue::key::PROFILE, field] => {
            let known = venue::PROFILE_TEXT_FIELDS.contains(field)
                || ["lat", "lon", "after_school", "updated_at"].contains(field);
            require(known, RefusalCode::UnknownField)
        }
        [
            venue::key::SLOTS | venue::key::INSTRUMENTS | venue::key::GATES,
            _id,
        ] => Ok(()),
        [
            venue::key::SLOTS,
            _id,
            "start" | "end" | "capacity" | "label",
        ]
        | [
            venue::key::INSTRUMENTS,
            _id,
            "name" | "value_yuan" | "bookable",
        ]
        | [venue::key::GATES, _id, "key"] => {
            require(act != Act::PutObject, RefusalCode::MalformedValue)
        }
        _ => Err(RefusalCode::UnknownField),
    }
}

fn check_activity_log(
    ctx: &Ctx<'_>,
    p: &[&str],
    act: Act,
    parent_is_new: bool,
    action: &PatchAction,
) -> Rule {
    use activity_log::key;
    if let Some(rule) = container_rule(ctx, DocKind::ActivityLog, p, act) {
        return rule;
    }
    let w = ctx.writer;
    require(act != Act::Delete, RefusalCode::NoDelete)?;
    let owner = r::parsed::<_, UserId>(ctx.doc, &ROOT, key::VOLUNTEER) == Some(w.user);
    match p {
        [key::ACTIVITIES, id, rest @ ..] => {
            require(
                w.role == Role::Server || (w.role == Role::Volunteer && owner),
                RefusalCode::NotOwner,
            )?;
            // Staff confirmed or declined what they saw: the claim is fixed from then on.
            require(
                w.role == Role::Server || !has_decision(ctx.doc, id),
                RefusalCode::ActivityConfirmed,
            )?;
            match rest {
                [] => require(act == Act::PutObject, RefusalCode::MalformedValue),
                ["venue"] => require(
                    str_value(action)
                        .and_then(|v| v.parse::<VenueId>().ok())
                        .is_some(),
                    RefusalCode::MalformedValue,
                ),
                ["start" | "minutes"] => require(is_int(action), RefusalCode::MalformedValue),
                ["activity_kind" | "description"] => {
                    require(is_str(action), RefusalCode::MalformedValue)
                }
                _ => Err(RefusalCode::UnknownField),
            }
        }
        [key::CONFIRMATIONS, ckey, rest @ ..] => {
            let Some((activity, device)) = ckey.rsplit_once('/') else {
                return Err(RefusalCode::MalformedValue);
            };
            if w.role != Role::Server {
                require(w.role == Role::VenueStaff, RefusalCode::RoleMayNotWrite)?;
                require(
                    device.parse().ok() == Some(w.device),
                    RefusalCode::NotOwnDevice,
                )?;
                let venue = r::map(ctx.doc, &ROOT, key::ACTIVITIES)
                    .and_then(|a| r::map(ctx.doc, &a, activity))
                    .and_then(|a| r::parsed::<_, VenueId>(ctx.doc, &a, "venue"));
                require(venue.is_some() && venue == w.venue, RefusalCode::OtherVenue)?;
            }
            match rest {
                [] => require(act == Act::PutObject, RefusalCode::MalformedValue),
                [_field] => require(parent_is_new, RefusalCode::ScanImmutable),
                _ => Err(RefusalCode::UnknownField),
            }
        }
        _ => Err(RefusalCode::UnknownField),
    }
}

/// A field of a school-log entry: the map itself, `at` and `by`, and the entry's own
/// text and number fields.
fn entry_field(
    rest: &[&str],
    act: Act,
    action: &PatchAction,
    texts: &[&str],
    numbers: &[&str],
) -> Rule {
    match rest {
        [] => require(act == Act::PutObject, RefusalCode::MalformedValue),
        ["at"] => require(is_int(action), RefusalCode::MalformedValue),
        ["by"] => require(is_str(action), RefusalCode::MalformedValue),
        [f] if texts.contains(f) => require(is_str(action), RefusalCode::MalformedValue),
        [f] if numbers.contains(f) => require(is_int(action), RefusalCode::MalformedValue),
        _ => Err(RefusalCode::UnknownField),
    }
}

/// Whether any staff confirmation or refusal of activity `id` is in the document.
fn has_decision(doc: &Automerge, id: &str) -> bool {
    let Some(c) = r::map(doc, &ROOT, activity_log::key::CONFIRMATIONS) else {
        return false;
    };
    r::keys(doc, &c)
        .iter()
        .any(|k| k.rsplit_once('/').is_some_and(|(a, _)| a == id))
}

fn check_school_log(
    ctx: &Ctx<'_>,
    p: &[&str],
    act: Act,
    parent_is_new: bool,
    action: &PatchAction,
) -> Rule {
    use school_log::key;
    if let Some(rule) = container_rule(ctx, DocKind::SchoolLog, p, act) {
        return rule;
    }
    let w = ctx.writer;
    require(act != Act::Delete, RefusalCode::NoDelete)?;
    let teacher = w.role == Role::Teacher && same_school(ctx.doc, w, key::SCHOOL);
    let tour_staff = w.role == Role::VenueStaff;
    // An entry names its writer: nobody records an entry in another user's name.
    if let [key::SESSIONS | key::LECTURES | key::TOUR_STOPS, _id, "by"] = p
        && w.role != Role::Server
    {
        require(
            str_value(action).is_some_and(|b| b == w.user.to_string()),
            RefusalCode::NotOwner,
        )?;
    }
    match p {
        [key::SESSIONS | key::LECTURES, _id, rest @ ..] => {
            require(
                teacher || w.role == Role::Server,
                if w.role == Role::Teacher {
                    RefusalCode::OtherSchool
                } else {
                    RefusalCode::RoleMayNotWrite
                },
            )?;
            require(rest.is_empty() || parent_is_new, RefusalCode::ScanImmutable)?;
            entry_field(rest, act, action, &["topic"], &["minutes"])
        }
        [key::TOUR_STOPS, _id, rest @ ..] => {
            require(
                teacher || tour_staff || w.role == Role::Server,
                RefusalCode::RoleMayNotWrite,
            )?;
            require(rest.is_empty() || parent_is_new, RefusalCode::ScanImmutable)?;
            entry_field(rest, act, action, &["location"], &["days"])
        }
        [key::TOUR_ATTENDANCE, akey] => {
            require(
                teacher || tour_staff || w.role == Role::Server,
                RefusalCode::RoleMayNotWrite,
            )?;
            // `"<stop>/<pupil>/<device>"` for a stop of this log, stamped with a time.
            let parts: Vec<&str> = akey.split('/').collect();
            let [stop, pupil, device] = parts.as_slice() else {
                return Err(RefusalCode::MalformedValue);
            };
            require(
                pupil.parse::<PupilId>().is_ok() && is_int(action),
                RefusalCode::MalformedValue,
            )?;
            require(
                r::map(ctx.doc, &ROOT, key::TOUR_STOPS)
                    .and_then(|s| r::map(ctx.doc, &s, stop))
                    .is_some(),
                RefusalCode::MalformedValue,
            )?;
            require(
                w.role == Role::Server || device.parse().ok() == Some(w.device),
                RefusalCode::NotOwnDevice,
            )
        }
        _ => Err(RefusalCode::UnknownField),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
