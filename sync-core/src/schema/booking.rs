//! The booking document: one visit of one school group to one venue slot.
//!
//! ```text
//! { kind: "booking", schema, venue, slot, school, party_size, requested_by, requested_at,
//!   status?: "confirmed" | "waitlisted" | "cancelled"   (server only; absent = requested)
//!   decided_at?, cancelled_at?, cancelled_by?, guide? (schema 2),
//!   roster:     { "<pupil>": <added_at> },
//!   check_ins:  { "<pupil>/<device>": { "<scan id>": { at, method, proof, by } } },
//!   check_outs: { "<pupil>/<device>": { "<scan id>": { at, method, by } } },
//!   check_ins_by_device:  { "<device>": { "<pupil>": { "<scan id>": { … } } } } (schema 3)
//!   check_outs_by_device: { "<device>": { "<pupil>": { "<scan id>": { … } } } } (schema 3)
//!   check_in_records:  { "<device>": { "<pupil>/<scan id>": "<record>" } }   (schema 4)
//!   check_out_records: { "<device>": { "<pupil>/<scan id>": "<record>" } }   (schema 4)
//!   notes:      { "<note id>": { at, by, role, text } } }   (text: one of NOTE_CODES)
//! ```
//!
//! A booking's scans are those of both layouts (ADR 0203): an engine of schema 3 writes
//! a scan into its device's own map when the booking has the per-device containers
//! (bookings created at schema 3), and under `"<pupil>/<device>"` otherwise, as devices
//! of schema 1 and 2 write everywhere. Each device creates its own map, never another's,
//! so two devices offline never create the same key; merging a scan into a booking walks
//! the scanning device's pupils instead of every scan key of the booking.
//!
//! Bookings created at schema 4 (ADR 0205) have a third layout, which engines of 4 write:
//! each scan is one text value in its device's map, the record's fields as a JSON object
//! (`{"at":…,"method":…,"by":…,"proof":…}`). A scan is then one operation and makes no
//! object: automerge merges operations into an existing map many times faster than it
//! makes objects and fills them.

use std::collections::BTreeMap;

use automerge::{ROOT, ReadDoc};

use crate::doc_read as r;
use crate::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};

/// Root keys of a booking.
pub mod key {
    /// Venue id.
    pub const VENUE: &str = "venue";
    /// Slot id.
    pub const SLOT: &str = "slot";
    /// School id.
    pub const SCHOOL: &str = "school";
    /// Number of places asked for.
    pub const PARTY_SIZE: &str = "party_size";
    /// The teacher who asked.
    pub const REQUESTED_BY: &str = "requested_by";
    /// When the teacher asked (device time, ms).
    pub const REQUESTED_AT: &str = "requested_at";
    /// Server decision.
    pub const STATUS: &str = "status";
    /// When the server decided.
    pub const DECIDED_AT: &str = "decided_at";
    /// Place in the wait list, when wait-listed.
    pub const WAIT_POSITION: &str = "wait_position";
    /// When the booking was cancelled by a teacher or the venue.
    pub const CANCELLED_AT: &str = "cancelled_at";
    /// Who cancelled.
    pub const CANCELLED_BY: &str = "cancelled_by";
    /// A guide group label chosen by the venue (schema 2).
    pub const GUIDE: &str = "guide";
    /// Pupils expected on the visit.
    pub const ROSTER: &str = "roster";
    /// Check-in scans.
    pub const CHECK_INS: &str = "check_ins";
    /// Check-out scans.
    pub const CHECK_OUTS: &str = "check_outs";
    /// Check-in scans, one map per device (schema 3, ADR 0203).
    pub const CHECK_INS_BY_DEVICE: &str = "check_ins_by_device";
    /// Check-out scans, one map per device (schema 3, ADR 0203).
    pub const CHECK_OUTS_BY_DEVICE: &str = "check_outs_by_device";
    /// Check-in scans, one map per device, each scan one value (schema 4, ADR 0205).
    pub const CHECK_IN_RECORDS: &str = "check_in_records";
    /// Check-out scans, one map per device, each scan one value (schema 4, ADR 0205).
    pub const CHECK_OUT_RECORDS: &str = "check_out_records";
    /// Notes.
    pub const NOTES: &str = "notes";
}

/// The status the server decided, or `Requested` until it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the server's decision (made offline, or not yet synced).
    Requested,
    /// The server confirmed places.
    Confirmed,
    /// The slot was full when the request reached the server.
    Waitlisted,
    /// Cancelled by the school or the venue.
    Cancelled,
}

impl Status {
    /// Text form stored in the document.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Confirmed => "confirmed",
            Self::Waitlisted => "waitlisted",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the text form.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "requested" => Self::Requested,
            "confirmed" => Self::Confirmed,
            "waitlisted" => Self::Waitlisted,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// How a pupil was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanMethod {
    /// The pupil's phone scanned the gate's rotating code.
    GateCode,
    /// A teacher or gate device scanned the pupil's pass.
    PassScan,
    /// A teacher ticked the pupil off by hand.
    Manual,
}

impl ScanMethod {
    /// Text form stored in the document.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GateCode => "gate_code",
            Self::PassScan => "pass_scan",
            Self::Manual => "manual",
        }
    }

    /// Parses the text form.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "gate_code" => Self::GateCode,
            "pass_scan" => Self::PassScan,
            "manual" => Self::Manual,
            _ => return None,
        })
    }
}

/// One scan, as recorded by one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scan {
    /// The scanned pupil.
    pub pupil: PupilId,
    /// The device that recorded it.
    pub device: DeviceId,
    /// The scan's own id (UUID v7 text).
    pub scan_id: String,
    /// Device time of the scan, unix ms.
    pub at: i64,
    /// How.
    pub method: ScanMethod,
    /// The encoded proof (gate proof or pass), if any.
    pub proof: Option<String>,
    /// The user of the device.
    pub by: Option<UserId>,
}

/// What a booking note may say. Notes are read by every pupil on the roster and live in
/// every replica's history, so they are codes, not free text that could carry a name
/// (ADR 0110). Anything else is refused as `malformed-value`.
pub const NOTE_CODES: &[&str] = &[
    "arrived_late",
    "left_early",
    "bus_delayed",
    "group_split",
    "weather",
    "accessibility_needs",
    "incident_reported",
    "rescheduled",
    "other",
];

/// A note on the booking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Note {
    /// Note id.
    pub id: String,
    /// Time, unix ms.
    pub at: i64,
    /// Author.
    pub by: Option<UserId>,
    /// Author's role.
    pub role: String,
    /// One of [`NOTE_CODES`] (older documents may hold free text).
    pub text: String,
}

/// A booking read from its merged document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Booking {
    /// Schema version the document was created with.
    pub schema: i64,
    /// Venue.
    pub venue: VenueId,
    /// Slot.
    pub slot: SlotId,
    /// School.
    pub school: SchoolId,
    /// Places asked for.
    pub party_size: u32,
    /// Teacher who asked.
    pub requested_by: Option<UserId>,
    /// When (device time).
    pub requested_at: i64,
    /// The server's decision, `Requested` if none yet. A cancellation wins over any.
    pub status: Status,
    /// Place on the wait list.
    pub wait_position: Option<u32>,
    /// When cancelled.
    pub cancelled_at: Option<i64>,
    /// Guide label (schema 2).
    pub guide: Option<String>,
    /// Pupils expected, with the time they were added.
    pub roster: BTreeMap<PupilId, i64>,
    /// Every check-in scan, in (pupil, device, scan id) order.
    pub check_ins: Vec<Scan>,
    /// Every check-out scan.
    pub check_outs: Vec<Scan>,
    /// Notes by id.
    pub notes: Vec<Note>,
}

/// Splits `"<pupil>/<device>"`.
#[must_use]
pub fn split_scan_key(key: &str) -> Option<(PupilId, DeviceId)> {
    let (p, d) = key.split_once('/')?;
    Some((p.parse().ok()?, d.parse().ok()?))
}

/// Builds `"<pupil>/<device>"`.
#[must_use]
pub fn scan_key(pupil: PupilId, device: DeviceId) -> String {
    format!("{pupil}/{device}")
}

/// How a container of scans is keyed (ADR 0203).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `{ "<pupil>/<device>": { "<scan id>": record } }` (every schema).
    ByPupilDevice,
    /// `{ "<device>": { "<pupil>": { "<scan id>": record } } }` (schema 3).
    ByDevice,
    /// `{ "<device>": { "<pupil>/<scan id>": "<record as JSON>" } }` (schema 4).
    Records,
}

/// The containers of scans: (root key, layout, holds check-ins).
pub(crate) const CONTAINERS: [(&str, Layout, bool); 6] = [
    (key::CHECK_INS, Layout::ByPupilDevice, true),
    (key::CHECK_OUTS, Layout::ByPupilDevice, false),
    (key::CHECK_INS_BY_DEVICE, Layout::ByDevice, true),
    (key::CHECK_OUTS_BY_DEVICE, Layout::ByDevice, false),
    (key::CHECK_IN_RECORDS, Layout::Records, true),
    (key::CHECK_OUT_RECORDS, Layout::Records, false),
];

/// The per-device container beside `container` (`check_ins` → `check_ins_by_device`).
#[must_use]
pub fn by_device(container: &str) -> Option<&'static str> {
    match container {
        key::CHECK_INS => Some(key::CHECK_INS_BY_DEVICE),
        key::CHECK_OUTS => Some(key::CHECK_OUTS_BY_DEVICE),
        _ => None,
    }
}

/// The container of one-value scan records beside `container` (`check_ins` →
/// `check_in_records`).
#[must_use]
pub fn records(container: &str) -> Option<&'static str> {
    match container {
        key::CHECK_INS => Some(key::CHECK_IN_RECORDS),
        key::CHECK_OUTS => Some(key::CHECK_OUT_RECORDS),
        _ => None,
    }
}

/// The key of a scan in its device's map of records: `"<pupil>/<scan id>"`.
#[must_use]
pub fn record_key(pupil: PupilId, scan_id: &str) -> String {
    format!("{pupil}/{scan_id}")
}

/// Splits a key of a device's map of records into the pupil (spelt as kepu writes ids)
/// and the scan id (not empty); `None` for any other key.
#[must_use]
pub fn split_record_key(key: &str) -> Option<(PupilId, &str)> {
    let pupil = key.get(..36)?;
    let scan_id = key.get(36..)?.strip_prefix('/')?;
    if scan_id.is_empty() {
        return None;
    }
    Some((canonical::<PupilId>(pupil)?, scan_id))
}

/// A scan's fields as one value (schema 4): the text of a JSON object, written by the
/// scanning device in the change that records the scan, and never written again
/// (`scan-immutable`, ADR 0206).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRecord {
    /// Device time of the scan, unix ms.
    pub at: i64,
    /// How (`gate_code`, `pass_scan`, `manual`).
    pub method: ScanMethod,
    /// The user of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The encoded proof (gate proof or pass), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

impl ScanRecord {
    /// The text stored in the document.
    #[must_use]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a scan record serializes")
    }

    /// Reads a stored record; `None` unless it is exactly such an object (no other
    /// field, `at` an integer, a known method, `by` and `proof` texts when present).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    fn scan(self, pupil: PupilId, device: DeviceId, scan_id: String) -> Scan {
        Scan {
            pupil,
            device,
            scan_id,
            at: self.at,
            method: self.method,
            proof: self.proof,
            by: self.by.and_then(|b| b.parse().ok()),
        }
    }
}

/// Calls `each` with the scan id of every key `device` holds in the containers of
/// check-ins (`out`: of check-outs), in all three layouts, whatever the key holds,
/// leaving out the maps of scans for which `skip` is true: the server's rows of scans
/// are keyed by device and scan id, and validation keeps one scan to each (ADR 0207).
/// The old layout's container is read whole (its keys start with the pupil); a record's
/// key is cut after the pupil, not parsed.
pub(crate) fn device_scan_ids<D: ReadDoc>(
    doc: &D,
    out: bool,
    device: DeviceId,
    skip: impl Fn(&automerge::ObjId) -> bool,
    mut each: impl FnMut(&str),
) {
    let (old, by_device, records) = if out {
        (
            key::CHECK_OUTS,
            key::CHECK_OUTS_BY_DEVICE,
            key::CHECK_OUT_RECORDS,
        )
    } else {
        (
            key::CHECK_INS,
            key::CHECK_INS_BY_DEVICE,
            key::CHECK_IN_RECORDS,
        )
    };
    let name = device.to_string();
    if let Some(c) = r::map(doc, &ROOT, old) {
        for (k, scans) in r::maps(doc, &c) {
            if !skip(&scans) && split_scan_key(&k).is_some_and(|(_, d)| d == device) {
                doc.map_range(&scans, ..).for_each(|item| each(&item.key));
            }
        }
    }
    if let Some(mine) = r::map(doc, &ROOT, by_device).and_then(|c| r::map(doc, &c, &name)) {
        for (_, scans) in r::maps(doc, &mine) {
            if !skip(&scans) {
                doc.map_range(&scans, ..).for_each(|item| each(&item.key));
            }
        }
    }
    if let Some(mine) = r::map(doc, &ROOT, records).and_then(|c| r::map(doc, &c, &name))
        && !skip(&mine)
    {
        for item in doc.map_range(&mine, ..) {
            let k = &item.key;
            if let Some(id) = k.get(37..).filter(|_| k.as_bytes().get(36) == Some(&b'/')) {
                each(id);
            }
        }
    }
}

/// The scans of `pupil` in `device`'s map of records `mine` (schema 4), in scan id
/// order: the pupil's keys, adjacent in key order ('/' is followed by '0').
pub(crate) fn pupils_records<D: ReadDoc>(
    doc: &D,
    mine: &automerge::ObjId,
    device: DeviceId,
    pupil: PupilId,
) -> Vec<Scan> {
    doc.map_range(mine, format!("{pupil}/")..format!("{pupil}0"))
        .filter_map(|item| match &item.value {
            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(t)) => {
                record_scan(device, &item.key, t).filter(|s| s.pupil == pupil)
            }
            _ => None,
        })
        .collect()
}

/// The scan a device's map of records holds at `key` with the value `value`, if both
/// make one.
pub(crate) fn record_scan(device: DeviceId, key: &str, value: &str) -> Option<Scan> {
    let (pupil, scan_id) = split_record_key(key)?;
    Some(ScanRecord::parse(value)?.scan(pupil, device, scan_id.to_owned()))
}

/// An id as kepu writes it: lower-case hyphenated text, the one spelling of each id.
/// A per-device map's keys must be spelt so (validation refuses any other), so that one
/// device or pupil is one key; readers skip any other spelling.
/// The spelling is checked byte by byte (hyphens at 8, 13, 18 and 23, lower-case hex
/// elsewhere: the text a UUID displays as), without writing the id out again: readers
/// and validation check every scan key they meet.
pub(crate) fn canonical<T: std::str::FromStr + std::fmt::Display>(key: &str) -> Option<T> {
    let well_spelt = key.len() == 36
        && key.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    let id: T = key.parse().ok().filter(|_| well_spelt)?;
    debug_assert_eq!(
        id.to_string(),
        key,
        "ids display as hyphenated lower-case UUIDs"
    );
    Some(id)
}

/// The scans of one kind (check-ins when `ins`) of every layout, in (pupil, device, scan
/// id) order.
fn read_scans<D: ReadDoc>(doc: &D, ins: bool) -> Vec<Scan> {
    let mut all = Vec::new();
    for (container, layout, _) in CONTAINERS.iter().filter(|c| c.2 == ins) {
        let mut part = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, container) {
            walk_scans(doc, &obj, *layout, |_, scan| part.push(scan));
        }
        all = together(all, part);
    }
    all
}

/// The scans of both layouts as one list: `old` (in `"<pupil>/<device>"` key order, then
/// scan id) as it is when there is nothing in the per-device layout, else both in
/// (pupil, device, scan id) order.
pub(crate) fn together(mut old: Vec<Scan>, new: Vec<Scan>) -> Vec<Scan> {
    if new.is_empty() {
        return old;
    }
    if old.is_empty() {
        return new;
    }
    old.extend(new);
    old.sort_by(|a, b| (a.pupil, a.device, &a.scan_id).cmp(&(b.pupil, b.device, &b.scan_id)));
    old
}

/// The scans of one kind read map by map, each by itself: what [`walk_scans`] must give.
#[cfg(test)]
pub(crate) fn read_scans_by_key<D: ReadDoc>(doc: &D, ins: bool) -> Vec<Scan> {
    let mut all = Vec::new();
    for (container, layout, _) in CONTAINERS.iter().filter(|c| c.2 == ins) {
        let Some(obj) = r::map(doc, &ROOT, container) else {
            continue;
        };
        let mut out = Vec::new();
        match layout {
            Layout::ByPupilDevice => {
                for (key, per_device) in r::maps(doc, &obj) {
                    read_key_scans(doc, &key, &per_device, &mut out);
                }
            }
            Layout::ByDevice => {
                for (device, mine) in r::maps(doc, &obj) {
                    let Some(device) = canonical::<DeviceId>(&device) else {
                        continue;
                    };
                    for (pupil, scans) in r::maps(doc, &mine) {
                        if let Some(pupil) = canonical::<PupilId>(&pupil) {
                            read_key_scans(doc, &scan_key(pupil, device), &scans, &mut out);
                        }
                    }
                }
            }
            Layout::Records => {
                for (device, mine) in r::maps(doc, &obj) {
                    let Some(device) = canonical::<DeviceId>(&device) else {
                        continue;
                    };
                    for key in r::keys(doc, &mine) {
                        if let Some(text) = r::string(doc, &mine, &key) {
                            out.extend(record_scan(device, &key, &text));
                        }
                    }
                }
            }
        }
        // Read device by device; listed by pupil, device and scan id.
        if *layout != Layout::ByPupilDevice {
            out.sort_by(|a, b| {
                (a.pupil, a.device, &a.scan_id).cmp(&(b.pupil, b.device, &b.scan_id))
            });
        }
        all = together(all, out);
    }
    all
}

/// The scans under the container `obj` of `layout`, each with its `"<pupil>/<device>"`
/// key (for the per-device layout the key its pupil and device would have), as
/// [`read_key_scans`] reads them map by map, in (key, scan id) order, read in one walk of
/// the container and every object below it (ADR 0197). Reading each map by itself starts
/// a new search of the document's columns for every map and every scan record; the walk
/// moves forward through them.
pub(crate) fn walk_scans<D: ReadDoc>(
    doc: &D,
    obj: &automerge::ObjId,
    layout: Layout,
    mut each: impl FnMut(&str, Scan),
) {
    use automerge::iter::DocItem;
    use automerge::{ObjId, ObjType, ScalarValue, Value, ValueRef};
    use std::collections::HashMap;

    /// A scan record: its map of one pupil's scans by one device, its scan id and the
    /// fields read so far.
    type Record = (ObjId, String, Vec<(String, ScalarValue)>);
    let is_map = |v: &ValueRef<'_>| matches!(v, ValueRef::Object(ObjType::Map | ObjType::Table));
    // Per-device maps (per-device layout), maps of one pupil's scans by one device, then
    // scan records, by object: a parent is always made before its children, and the walk
    // visits objects in the order they were made.
    let mut devices: HashMap<ObjId, DeviceId> = HashMap::new();
    let mut keys: HashMap<ObjId, (String, PupilId, DeviceId)> = HashMap::new();
    let mut records: HashMap<ObjId, Record> = HashMap::new();
    // Scans of one value each (schema 4), with their keys.
    let (mut flat_keys, mut flat): (Vec<String>, Vec<Scan>) = (Vec::new(), Vec::new());
    for item in doc.iter_at(obj, None) {
        let DocItem::Map(m) = item.item else {
            continue;
        };
        if *item.obj == *obj {
            if !is_map(&m.value) {
                continue;
            }
            match layout {
                Layout::ByPupilDevice => {
                    if let Some((pupil, device)) = split_scan_key(&m.key) {
                        keys.insert(m.id(), (m.key.into_owned(), pupil, device));
                    }
                }
                Layout::ByDevice | Layout::Records => {
                    if let Some(device) = canonical::<DeviceId>(&m.key) {
                        devices.insert(m.id(), device);
                    }
                }
            }
        } else if let Some(device) = devices.get(&item.obj) {
            if layout == Layout::Records {
                if let ValueRef::Scalar(automerge::ScalarValueRef::Str(text)) = &m.value
                    && let Some(scan) = record_scan(*device, &m.key, text)
                {
                    flat_keys.push(scan_key(scan.pupil, scan.device));
                    flat.push(scan);
                }
            } else if is_map(&m.value)
                && let Some(pupil) = canonical::<PupilId>(&m.key)
            {
                keys.insert(m.id(), (scan_key(pupil, *device), pupil, *device));
            }
        } else if keys.contains_key(&item.obj) {
            if is_map(&m.value) {
                let id = m.id();
                records.insert(id, ((*item.obj).clone(), m.key.into_owned(), Vec::new()));
            }
        } else if let Some((_, _, fields)) = records.get_mut(&item.obj)
            && let Value::Scalar(v) = m.value.into_value()
        {
            fields.push((m.key.into_owned(), v.into_owned()));
        }
    }
    let mut found: Vec<(&str, Scan)> = records
        .into_values()
        .filter_map(|(per_device, scan_id, fields)| {
            let (key, pupil, device) = keys.get(&per_device)?;
            let scan = scan_of(*pupil, *device, scan_id, &r::Fields::from(fields))?;
            Some((key.as_str(), scan))
        })
        .collect();
    found.extend(flat_keys.iter().map(String::as_str).zip(flat));
    found.sort_unstable_by(|(a, x), (b, y)| (*a, &x.scan_id).cmp(&(*b, &y.scan_id)));
    for (key, scan) in found {
        each(key, scan);
    }
}

/// The scan a record's fields make, if they make one (a time and a known method).
fn scan_of(pupil: PupilId, device: DeviceId, scan_id: String, rec: &r::Fields) -> Option<Scan> {
    Some(Scan {
        pupil,
        device,
        scan_id,
        at: rec.int("at")?,
        method: rec.string("method").and_then(|m| ScanMethod::parse(&m))?,
        proof: rec.string("proof"),
        by: rec.parsed("by"),
    })
}

/// The scans of one `"<pupil>/<device>"` entry whose map is `per_device`, in scan id
/// order; nothing when the key is not a scan key.
pub(crate) fn read_key_scans<D: ReadDoc>(
    doc: &D,
    key: &str,
    per_device: &automerge::ObjId,
    out: &mut Vec<Scan>,
) {
    let Some((pupil, device)) = split_scan_key(key) else {
        return;
    };
    for (scan_id, rec) in r::maps(doc, per_device) {
        out.extend(scan_of(pupil, device, scan_id, &r::Fields::of(doc, &rec)));
    }
}

/// Has any device recorded a check-in of `pupil` that [`Booking::read`] would list? Looks
/// up the pupil's keys (`"<pupil>/…"`, adjacent in key order, and the pupil in each
/// device's map) instead of reading every scan: a phone answers "already counted" at the
/// gate without walking the booking. Only a "no" in a booking holding scans of the oldest
/// layout looks at all of those, for ids spelt otherwise than kepu spells them.
pub fn has_check_in<D: ReadDoc>(doc: &D, pupil: PupilId) -> bool {
    let mut maps: Vec<automerge::ObjId> = Vec::new();
    let old = r::map(doc, &ROOT, key::CHECK_INS);
    if let Some(obj) = &old {
        // '/' is followed by '0' in byte order: the range holds exactly this pupil's keys
        // as kepu spells them.
        let (from, to) = (format!("{pupil}/"), format!("{pupil}0"));
        maps.extend(
            doc.map_range(obj, from..to)
                .filter(|item| split_scan_key(&item.key).is_some_and(|(p, _)| p == pupil))
                .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
                .map(|item| item.id()),
        );
    }
    if let Some(obj) = r::map(doc, &ROOT, key::CHECK_INS_BY_DEVICE) {
        let name = pupil.to_string();
        for (device, mine) in r::maps(doc, &obj) {
            if canonical::<DeviceId>(&device).is_some() {
                maps.extend(r::map(doc, &mine, &name));
            }
        }
    }
    if let Some(obj) = r::map(doc, &ROOT, key::CHECK_IN_RECORDS) {
        for (device, mine) in r::maps(doc, &obj) {
            if let Some(device) = canonical::<DeviceId>(&device)
                && !pupils_records(doc, &mine, device, pupil).is_empty()
            {
                return true;
            }
        }
    }
    let holds_a_scan = |scans: &automerge::ObjId| {
        r::maps(doc, scans).iter().any(|(_, rec)| {
            let rec = r::Fields::of(doc, rec);
            rec.int("at").is_some()
                && rec
                    .string("method")
                    .and_then(|m| ScanMethod::parse(&m))
                    .is_some()
        })
    };
    if maps.iter().any(holds_a_scan) {
        return true;
    }
    // The old layout's keys are read in any spelling that parses (a version-2 device
    // may have written an id in capitals): look at those too before answering no, as
    // `Booking::read` counts them. Only a "no" in a booking with old-layout scans pays
    // for the whole map.
    old.is_some_and(|obj| {
        let spelt = format!("{pupil}/");
        doc.map_range(&obj, ..)
            .filter(|item| !item.key.starts_with(&spelt))
            .filter(|item| split_scan_key(&item.key).is_some_and(|(p, _)| p == pupil))
            .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
            .any(|item| holds_a_scan(&item.id()))
    })
}

/// The venue of a booking, read without the rest (`None` if not a booking).
pub fn venue_of<D: ReadDoc>(doc: &D) -> Option<VenueId> {
    if crate::schema::kind_of(doc)? != crate::schema::DocKind::Booking {
        return None;
    }
    r::parsed(doc, &ROOT, key::VENUE)
}

impl Booking {
    /// Reads a booking; `None` if the document is not a well-formed booking.
    pub fn read<D: ReadDoc>(doc: &D) -> Option<Self> {
        Self::read_with(doc, |doc| (read_scans(doc, true), read_scans(doc, false)))
    }

    /// Reads a booking whose check-ins and check-outs `scans` reads.
    pub(crate) fn read_with<D: ReadDoc>(
        doc: &D,
        scans: impl FnOnce(&D) -> (Vec<Scan>, Vec<Scan>),
    ) -> Option<Self> {
        if crate::schema::kind_of(doc)? != crate::schema::DocKind::Booking {
            return None;
        }
        let cancelled_at = r::int(doc, &ROOT, key::CANCELLED_AT);
        let decided = r::string(doc, &ROOT, key::STATUS)
            .and_then(|s| Status::parse(&s))
            .unwrap_or(Status::Requested);
        let status = if cancelled_at.is_some() {
            Status::Cancelled
        } else {
            decided
        };
        let mut roster = BTreeMap::new();
        if let Some(obj) = r::map(doc, &ROOT, key::ROSTER) {
            for item in doc.map_range(&obj, ..) {
                if let Ok(p) = item.key.parse::<PupilId>() {
                    let n = match item.value.into_value() {
                        automerge::Value::Scalar(s) => r::as_int(&s),
                        automerge::Value::Object(_) => None,
                    };
                    roster.insert(p, n.unwrap_or(0));
                }
            }
        }
        let (check_ins, check_outs) = scans(doc);
        let mut notes = Vec::new();
        if let Some(obj) = r::map(doc, &ROOT, key::NOTES) {
            for id in r::keys(doc, &obj) {
                if let Some(n) = r::map(doc, &obj, &id) {
                    notes.push(Note {
                        at: r::int(doc, &n, "at").unwrap_or(0),
                        by: r::parsed(doc, &n, "by"),
                        role: r::string(doc, &n, "role").unwrap_or_default(),
                        text: r::string(doc, &n, "text").unwrap_or_default(),
                        id,
                    });
                }
            }
        }
        Some(Self {
            schema: crate::schema::schema_of(doc),
            venue: r::parsed(doc, &ROOT, key::VENUE)?,
            slot: r::parsed(doc, &ROOT, key::SLOT)?,
            school: r::parsed(doc, &ROOT, key::SCHOOL)?,
            party_size: r::int(doc, &ROOT, key::PARTY_SIZE)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            requested_by: r::parsed(doc, &ROOT, key::REQUESTED_BY),
            requested_at: r::int(doc, &ROOT, key::REQUESTED_AT).unwrap_or(0),
            status,
            wait_position: r::int(doc, &ROOT, key::WAIT_POSITION)
                .and_then(|n| u32::try_from(n).ok()),
            cancelled_at,
            guide: r::string(doc, &ROOT, key::GUIDE),
            roster,
            check_ins,
            check_outs,
            notes,
        })
    }

    /// The server-decided status alone, ignoring cancellation.
    pub fn decided_status<D: ReadDoc>(doc: &D) -> Status {
        r::string(doc, &ROOT, key::STATUS)
            .and_then(|s| Status::parse(&s))
            .unwrap_or(Status::Requested)
    }
}

#[cfg(test)]
mod spelling_tests {
    use super::canonical;
    use crate::ids::PupilId;

    /// One spelling per id: the hyphenated lower-case text; every other text a UUID
    /// parser takes, and every near miss of 36 characters, is not an id here.
    #[test]
    fn only_the_hyphenated_lower_case_spelling_is_an_id() {
        let id = "0190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            canonical::<PupilId>(id).map(|p| p.to_string()).as_deref(),
            Some(id)
        );
        for other in [
            "0190AA5B-2C3D-7E4F-8A9B-0C1D2E3F4A5B",
            "0190aa5b2c3d7e4f8a9b0c1d2e3f4a5b",
            "{0190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5b}",
            "urn:uuid:0190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "0190aa5b2-c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "0190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5-",
            "0190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5g",
            "-190aa5b-2c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "",
        ] {
            assert!(canonical::<PupilId>(other).is_none(), "{other}");
        }
    }
}
