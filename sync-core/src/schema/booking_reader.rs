//! Reading one booking again and again as it grows, without reading every scan each time.
//!
//! [`Booking::read`] walks every scan record: about 6 µs a scan, so a booking of 2,500
//! scans costs 15 ms to read, and the server reads a busy booking again after every burst
//! of merged check-ins (ADR 0118). A [`BookingReader`] keeps the scans it read, by their
//! `"<pupil>/<device>"` key, with the heads it read them at. The next read asks automerge
//! for the changes made since those heads and reads again only the keys those changes
//! touched; the rest of the booking (its root fields, roster and notes: small) is read
//! whole each time. The result is always what [`Booking::read`] gives (ADR 0181).
//!
//! Scans kept in a device's own map (schema 3, ADR 0203) are kept by the key their pupil
//! and device would have in `check_ins`: an operation on a device's map touches the key
//! of the pupil it names, and one on the per-device container itself touches every key
//! of the device it names.
//!
//! Why the keys touched are enough: what a key shows can only change by an operation on
//! the key itself (in `check_ins` or `check_outs`, or the pupil in a device's map), on
//! the device's map in the per-device containers, or on an object below the key, and
//! each such operation is in a change made since the heads. An operation on a container
//! of scans at the root, anything the reader cannot place, or more than [`MAX_CHANGES`]
//! changes since the last read (placing each costs more than a whole read then) make it
//! read everything again.
//!
//! Placing an object by asking the document for its path is the dear part, so the reader
//! keeps each object's place: an object never moves, and one a change creates lies where
//! the operation creating it says (under the key it was made at in a container, or
//! wherever its parent lies). An operation on a container itself touches the key it
//! names, whatever key an earlier operation on the container named.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{Automerge, ChangeHash, ObjId, Prop, ROOT, ReadDoc, legacy};

use super::booking::{
    Booking, CONTAINERS, Layout, Scan, canonical, pupils_records, read_key_scans, scan_key,
    split_record_key, split_scan_key, together, walk_scans,
};
use crate::doc_read as r;
use crate::ids::{DeviceId, PupilId};

/// Past this many changes since the last read, the booking is read whole.
pub const MAX_CHANGES: usize = 64;

/// Places a reader keeps between reads: at most this many a scan it keeps, plus
/// [`MIN_PLACES`].
const MAX_PLACES_PER_SCAN: usize = 4;
/// See [`MAX_PLACES_PER_SCAN`].
const MIN_PLACES: usize = 256;

/// The scans of one container, by `"<pupil>/<device>"` key (in the per-device layout,
/// the key its pupil and device would have), and the container's object.
#[derive(Debug, Default, Clone)]
struct Scans {
    obj: Option<ObjId>,
    by_key: BTreeMap<String, Vec<Scan>>,
    count: usize,
}

impl Scans {
    fn read_all(doc: &Automerge, (container, layout): (&str, Layout)) -> Self {
        let mut out = Self {
            obj: r::map(doc, &ROOT, container),
            ..Self::default()
        };
        if let Some(obj) = out.obj.clone() {
            // In key order: each key's scans come together.
            let mut current: Option<(String, Vec<Scan>)> = None;
            walk_scans(doc, &obj, layout, |k: &str, scan| match current.as_mut() {
                Some((key, scans)) if key == k => scans.push(scan),
                _ => {
                    if let Some((key, scans)) = current.replace((k.to_owned(), vec![scan])) {
                        out.put(key, scans);
                    }
                }
            });
            if let Some((key, scans)) = current {
                out.put(key, scans);
            }
        }
        out
    }

    /// Reads `k` again.
    fn reread(&mut self, doc: &Automerge, layout: Layout, k: &str) {
        let mut scans = Vec::new();
        let Some(c) = self.obj.as_ref() else {
            return self.put(k.to_owned(), scans);
        };
        let per_device = match layout {
            Layout::ByPupilDevice => r::map(doc, c, k),
            Layout::ByDevice => split_scan_key(k).and_then(|(pupil, device)| {
                r::map(
                    doc,
                    &r::map(doc, c, &device.to_string())?,
                    &pupil.to_string(),
                )
            }),
            Layout::Records => {
                if let Some((pupil, device)) = split_scan_key(k)
                    && let Some(mine) = r::map(doc, c, &device.to_string())
                {
                    scans = pupils_records(doc, &mine, device, pupil);
                }
                None
            }
        };
        if let Some(per_device) = per_device {
            read_key_scans(doc, k, &per_device, &mut scans);
        }
        self.put(k.to_owned(), scans);
    }

    /// Reads again every key of `device` in a per-device layout: those kept, and those
    /// its map now holds.
    fn reread_device(&mut self, doc: &Automerge, layout: Layout, device: DeviceId) {
        let mut keys: BTreeSet<String> = self
            .by_key
            .keys()
            .filter(|k| split_scan_key(k).is_some_and(|(_, d)| d == device))
            .cloned()
            .collect();
        if let Some(mine) = self
            .obj
            .as_ref()
            .and_then(|c| r::map(doc, c, &device.to_string()))
        {
            keys.extend(
                r::keys(doc, &mine)
                    .iter()
                    .filter_map(|k| pupil_of(layout, k))
                    .map(|p| scan_key(p, device)),
            );
        }
        for k in keys {
            self.reread(doc, layout, &k);
        }
    }

    fn put(&mut self, k: String, scans: Vec<Scan>) {
        if scans.is_empty() {
            if let Some(old) = self.by_key.remove(&k) {
                self.count -= old.len();
            }
            return;
        }
        self.count += scans.len();
        if let Some(old) = self.by_key.insert(k, scans) {
            self.count -= old.len();
        }
    }

    fn list(&self) -> Vec<Scan> {
        self.by_key.values().flatten().cloned().collect()
    }
}

/// Reads one booking repeatedly; see the module.
#[derive(Debug, Default, Clone)]
pub struct BookingReader {
    heads: Vec<ChangeHash>,
    /// Whether `scans` holds the booking's scans at `heads`.
    kept: bool,
    /// The scans of each of [`CONTAINERS`].
    scans: [Scans; 6],
    /// Where the objects the changes read so far operated on or created lie. An object
    /// stays where it was created, so a place once known holds; kept while `scans` is.
    places: HashMap<legacy::OpId, Place>,
}

/// Where an object lies in a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Outside the containers of scans (the roster, the notes, …), or below a key of
    /// theirs that holds no scans.
    Outside,
    /// The container `CONTAINERS[i]` itself: an operation on it touches the key it names
    /// (every key of the device it names, in the per-device layout).
    Container(usize),
    /// The map of one device in the per-device container `i`: an operation on it
    /// touches the key of the pupil it names.
    Device(usize, DeviceId),
    /// Under the scan key of container `i`.
    Under(usize, String),
}

/// What the changes since a read touched.
#[derive(Debug, Default)]
struct Touched {
    /// `(container, key)` pairs.
    keys: BTreeSet<(usize, String)>,
    /// `(container, device)` pairs of per-device containers: every key of the device.
    devices: BTreeSet<(usize, DeviceId)>,
}

/// How a read went: for the server's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Every scan was read.
    Whole,
    /// Only the keys changed since the last read were read.
    Changed,
}

impl BookingReader {
    /// A reader that has read nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The scans it keeps (for bounding the memory of many readers).
    #[must_use]
    pub fn scans_kept(&self) -> usize {
        self.scans.iter().map(|s| s.count).sum()
    }

    /// Reads `doc`: the same as [`Booking::read`], at the cost of what changed since this
    /// reader last read it. Any document may be given; one that does not hold the heads
    /// of the last read (another document, or one rolled back) is read whole.
    ///
    /// The scans are kept only once a read follows the last one by at most
    /// [`MAX_CHANGES`] changes: a booking that only ever takes large bursts (the end of
    /// day) is read whole each time and costs no memory between reads.
    pub fn read(&mut self, doc: &Automerge) -> (Option<Booking>, ReadKind) {
        let small = self.small_step(doc);
        let since = std::mem::replace(&mut self.heads, doc.get_heads());
        if small && self.kept && self.refresh(doc, &since) {
            return (self.booking(doc), ReadKind::Changed);
        }
        self.places.clear();
        if small {
            self.scans = CONTAINERS.map(|(c, layout, _)| Scans::read_all(doc, (c, layout)));
            self.kept = true;
            return (self.booking(doc), ReadKind::Whole);
        }
        self.scans = Default::default();
        self.kept = false;
        (Booking::read(doc), ReadKind::Whole)
    }

    fn booking(&self, doc: &Automerge) -> Option<Booking> {
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for (scans, (_, _, is_in)) in self.scans.iter().zip(CONTAINERS) {
            if is_in {
                ins = together(ins, scans.list());
            } else {
                outs = together(outs, scans.list());
            }
        }
        Booking::read_with(doc, |_| (ins, outs))
    }

    /// Does `doc` hold the heads of the last read, with at most [`MAX_CHANGES`] changes
    /// made since?
    fn small_step(&self, doc: &Automerge) -> bool {
        !self.heads.is_empty()
            && self
                .heads
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some())
            && doc.get_changes_meta(&self.heads).len() <= MAX_CHANGES
    }

    /// Reads again the keys that the changes since `since` touched. False when the
    /// whole must be read instead.
    fn refresh(&mut self, doc: &Automerge, since: &[ChangeHash]) -> bool {
        // The containers must still be the objects the scans were read from.
        for (i, (c, _, _)) in CONTAINERS.iter().enumerate() {
            if r::map(doc, &ROOT, c) != self.scans[i].obj {
                return false;
            }
        }
        let Some(touched) = touched_keys(doc, since, &mut self.places) else {
            return false;
        };
        // A scan makes an object or two: past a few a scan kept, the changes made many
        // objects no scan needs (a hostile device's, say), and the places are forgotten.
        if self.places.len() > MAX_PLACES_PER_SCAN * self.scans_kept() + MIN_PLACES {
            self.places.clear();
        }
        for (i, device) in touched.devices {
            self.scans[i].reread_device(doc, CONTAINERS[i].1, device);
        }
        for (i, k) in touched.keys {
            self.scans[i].reread(doc, CONTAINERS[i].1, &k);
        }
        true
    }
}

/// The keys of scans that the changes since `heads` touched; `None` when one of them
/// cannot be placed, or touches a container as a whole. An object's place comes from
/// `places`, from the operation that created it (a child lies where its parent lies, or
/// under the key it was made at in a container or a device's map), or else from the
/// document; each found is kept in `places`.
fn touched_keys(
    doc: &Automerge,
    heads: &[ChangeHash],
    places: &mut HashMap<legacy::OpId, Place>,
) -> Option<Touched> {
    let mut touched = Touched::default();
    for change in doc.get_changes(heads) {
        let actor = change.actor_id().clone();
        let start = change.start_op().get();
        for (n, op) in change.decode().operations.into_iter().enumerate() {
            let place = match &op.obj {
                legacy::ObjectId::Root => {
                    // An operation on the root: a container replaced or removed is read
                    // whole; anything else made at the root lies outside.
                    if let legacy::Key::Map(k) = &op.key
                        && CONTAINERS.iter().any(|(c, _, _)| c == k)
                    {
                        return None;
                    }
                    Place::Outside
                }
                legacy::ObjectId::Id(id) => match places.get(id) {
                    Some(p) => p.clone(),
                    None => {
                        let p = place_of(doc, id)?;
                        places.insert(id.clone(), p.clone());
                        p
                    }
                },
            };
            let legacy::Key::Map(k) = &op.key else {
                match place {
                    Place::Outside | Place::Under(..) => {}
                    Place::Container(_) | Place::Device(..) => return None,
                }
                if let Place::Under(i, k) = place {
                    if matches!(op.action, legacy::OpType::Make(_)) {
                        let made = legacy::OpId::new(start + n as u64, &actor);
                        places.insert(made, Place::Under(i, k.clone()));
                    }
                    touched.keys.insert((i, k));
                }
                continue;
            };
            // Where an object the operation makes lies, and what the operation touches.
            let made = match place {
                Place::Outside => Place::Outside,
                Place::Container(i) => match CONTAINERS[i].1 {
                    Layout::ByPupilDevice => {
                        touched.keys.insert((i, k.to_string()));
                        Place::Under(i, k.to_string())
                    }
                    Layout::ByDevice | Layout::Records => match canonical::<DeviceId>(k) {
                        Some(device) => {
                            touched.devices.insert((i, device));
                            Place::Device(i, device)
                        }
                        None => Place::Outside,
                    },
                },
                Place::Device(i, device) => match pupil_of(CONTAINERS[i].1, k) {
                    Some(pupil) => {
                        let key = scan_key(pupil, device);
                        touched.keys.insert((i, key.clone()));
                        Place::Under(i, key)
                    }
                    None => Place::Outside,
                },
                Place::Under(i, key) => {
                    touched.keys.insert((i, key.clone()));
                    Place::Under(i, key)
                }
            };
            // An object made in a container of scans lies where it was made; one made
            // outside is placed only if an operation on it comes (the roster's, the
            // notes': few).
            if matches!(op.action, legacy::OpType::Make(_)) && made != Place::Outside {
                places.insert(legacy::OpId::new(start + n as u64, &actor), made);
            }
        }
    }
    Some(touched)
}

/// Where object `id` lies, from the document; `None` when it cannot be placed (not
/// visible, or under a list in a container).
fn place_of(doc: &Automerge, id: &legacy::OpId) -> Option<Place> {
    let obj = doc
        .import_obj(&format!("{}@{}", id.counter(), id.actor()))
        .ok()?;
    let path = doc.parents(&obj).ok()?.path();
    let Some((_, Prop::Map(top))) = path.first() else {
        return Some(Place::Outside);
    };
    let Some(i) = CONTAINERS.iter().position(|(c, _, _)| c == top) else {
        return Some(Place::Outside);
    };
    let key = |n: usize| match path.get(n) {
        Some((_, Prop::Map(k))) => Some(Some(k.as_str())),
        Some(_) => None,
        None => Some(None),
    };
    Some(match (CONTAINERS[i].1, key(1)?) {
        (_, None) => Place::Container(i),
        (Layout::ByPupilDevice, Some(k)) => Place::Under(i, k.to_owned()),
        (layout @ (Layout::ByDevice | Layout::Records), Some(d)) => {
            match (canonical::<DeviceId>(d), key(2)?) {
                (None, _) => Place::Outside,
                (Some(device), None) => Place::Device(i, device),
                (Some(device), Some(p)) => match pupil_of(layout, p) {
                    Some(pupil) => Place::Under(i, scan_key(pupil, device)),
                    None => Place::Outside,
                },
            }
        }
    })
}

/// The pupil a key of a device's map names: the key itself (schema 3), or the pupil of
/// `"<pupil>/<scan id>"` (schema 4).
fn pupil_of(layout: Layout, key: &str) -> Option<PupilId> {
    match layout {
        Layout::Records => split_record_key(key).map(|(pupil, _)| pupil),
        _ => canonical::<PupilId>(key),
    }
}

#[cfg(test)]
#[path = "booking_reader_tests.rs"]
mod tests;
