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
//! Why the keys touched are enough: what a key shows can only change by an operation on
//! the key itself (in `check_ins` or `check_outs`) or on an object below it, and each such
//! operation is in a change made since the heads. An operation on the root's `check_ins`
//! or `check_outs`, anything the reader cannot place, or more than [`MAX_CHANGES`]
//! changes since the last read (placing each costs more than a whole read then) make it
//! read everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{Automerge, ChangeHash, ObjId, Prop, ROOT, ReadDoc, legacy};

use super::booking::{Booking, Scan, key, read_key_scans};
use crate::doc_read as r;

/// Past this many changes since the last read, the booking is read whole.
pub const MAX_CHANGES: usize = 64;

/// The two containers of scans.
const CONTAINERS: [&str; 2] = [key::CHECK_INS, key::CHECK_OUTS];

/// The scans of one container, by `"<pupil>/<device>"` key, and the container's object.
#[derive(Debug, Default, Clone)]
struct Scans {
    obj: Option<ObjId>,
    by_key: BTreeMap<String, Vec<Scan>>,
    count: usize,
}

impl Scans {
    fn read_all(doc: &Automerge, container: &str) -> Self {
        let mut out = Self {
            obj: r::map(doc, &ROOT, container),
            ..Self::default()
        };
        if let Some(obj) = out.obj.clone() {
            for (k, per_device) in r::maps(doc, &obj) {
                let mut scans = Vec::new();
                read_key_scans(doc, &k, &per_device, &mut scans);
                out.put(k, scans);
            }
        }
        out
    }

    /// Reads `k` again.
    fn reread(&mut self, doc: &Automerge, k: &str) {
        let mut scans = Vec::new();
        if let Some(per_device) = self.obj.as_ref().and_then(|c| r::map(doc, c, k)) {
            read_key_scans(doc, k, &per_device, &mut scans);
        }
        self.put(k.to_owned(), scans);
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
    scans: [Scans; 2],
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
        if small {
            self.scans = CONTAINERS.map(|c| Scans::read_all(doc, c));
            self.kept = true;
            return (self.booking(doc), ReadKind::Whole);
        }
        self.scans = Default::default();
        self.kept = false;
        (Booking::read(doc), ReadKind::Whole)
    }

    fn booking(&self, doc: &Automerge) -> Option<Booking> {
        Booking::read_with(doc, |_| (self.scans[0].list(), self.scans[1].list()))
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
        for (i, c) in CONTAINERS.iter().enumerate() {
            if r::map(doc, &ROOT, c) != self.scans[i].obj {
                return false;
            }
        }
        let Some(touched) = touched_keys(doc, since) else {
            return false;
        };
        for (i, k) in touched {
            self.scans[i].reread(doc, &k);
        }
        true
    }
}

/// The `(container, key)` pairs of scans that the changes since `heads` touched; `None`
/// when one of them cannot be placed, or touches a container as a whole.
fn touched_keys(doc: &Automerge, heads: &[ChangeHash]) -> Option<BTreeSet<(usize, String)>> {
    let mut touched = BTreeSet::new();
    // Where each object lies: the container and key it is under, if any.
    let mut placed: HashMap<legacy::OpId, Option<(usize, String)>> = HashMap::new();
    for change in doc.get_changes(heads) {
        for op in change.decode().operations {
            let legacy::ObjectId::Id(id) = &op.obj else {
                // An operation on the root: a container replaced or removed is read whole.
                if let legacy::Key::Map(k) = &op.key
                    && CONTAINERS.contains(&k.as_str())
                {
                    return None;
                }
                continue;
            };
            let place = match placed.get(id) {
                Some(p) => p.clone(),
                None => {
                    let p = place_of(doc, id, &op.key)?;
                    placed.insert(id.clone(), p.clone());
                    p
                }
            };
            if let Some(p) = place {
                touched.insert(p);
            }
        }
    }
    Some(touched)
}

/// The container and key an operation on object `id` at `op_key` touches, `Some(None)`
/// when it lies outside both containers, `None` when it cannot be placed.
fn place_of(
    doc: &Automerge,
    id: &legacy::OpId,
    op_key: &legacy::Key,
) -> Option<Option<(usize, String)>> {
    let obj = doc
        .import_obj(&format!("{}@{}", id.counter(), id.actor()))
        .ok()?;
    let path = doc.parents(&obj).ok()?.path();
    let Some((_, Prop::Map(top))) = path.first() else {
        return Some(None);
    };
    let Some(i) = CONTAINERS.iter().position(|c| c == top) else {
        return Some(None);
    };
    match path.get(1) {
        Some((_, Prop::Map(k))) => Some(Some((i, k.clone()))),
        Some(_) => None,
        // The operation is on the container itself: its key is the scan key.
        None => match op_key {
            legacy::Key::Map(k) => Some(Some((i, k.to_string()))),
            legacy::Key::Seq(_) => None,
        },
    }
}

#[cfg(test)]
#[path = "booking_reader_tests.rs"]
mod tests;
