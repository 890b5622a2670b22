//! The rows of a booking that the live dashboard reads (its check-in scans, anomalies and
//! the devices that scanned), kept in memory with the token of the records write they
//! belong to (ADR 0193).
//!
//! Every dashboard refresh read the venue's whole day again: every scan of every booking,
//! and every scan twice more to find the devices that scanned. In the live day that was a
//! quarter of the server's CPU and most of the observer's tail. A booking's rows now come
//! from memory while the token stored beside its records (`records_writes`, ADR 0180) is
//! the one they were kept with:
//!
//! - the records writer of this process keeps the rows it has just committed, with the
//!   token it committed, for the bookings of venues someone is watching ([`VenueWatch`]);
//! - a dashboard that finds no rows, or rows kept with another token (another node, a
//!   rebuild or a restore wrote since), reads them from the records and keeps them while
//!   the venue is watched, if the token is still the stored one after the read.
//!
//! Every write of a booking's records stores a new random token, so rows kept with the
//! stored token are what the records hold. A dashboard reads the token before the rows:
//! rows newer than their token are read again at the next refresh, never kept as current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kepu_sync_core::rules::attendance::Attendance;
use kepu_sync_core::schema::booking::Booking;
use prometheus::{IntCounterVec, Opts};

use super::live::{DayAnomaly, DayScan};

/// Rows kept at most, over every booking (about 200 bytes each); past it, everything is
/// forgotten and read again when needed.
const MAX_ROWS: usize = 100_000;

/// One booking's rows as the dashboard reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BookingDay {
    /// Check-in scans, by pupil, time, device and scan id.
    pub(super) scans: Vec<DayScan>,
    /// Anomalies, by time, pupil and kind.
    pub(super) anomalies: Vec<DayAnomaly>,
    /// Every device that recorded a check-in or a check-out, once each, sorted.
    pub(super) devices: Vec<String>,
}

impl BookingDay {
    /// What the records writer writes for booking `doc` (the rows of `booking_tables`,
    /// the first of a key kept, as the records writer keeps it).
    pub(super) fn of(doc: &str, b: &Booking, a: &Attendance) -> Self {
        let doc: Arc<str> = doc.into();
        let mut keys = std::collections::HashSet::new();
        let mut scans: Vec<(DayScan, String)> = Vec::new();
        for p in &a.pupils {
            let all = p
                .counted
                .iter()
                .map(|s| (s, true))
                .chain(p.duplicates.iter().map(|s| (s, false)));
            for (s, counted) in all {
                if !keys.insert((s.device, s.scan_id.as_str())) {
                    continue;
                }
                scans.push((
                    DayScan {
                        doc_id: doc.clone(),
                        pupil_id: s.pupil.to_string().into(),
                        device_id: s.device.to_string().into(),
                        at: s.at,
                        method: s.method.as_str().into(),
                        counted,
                    },
                    s.scan_id.clone(),
                ));
            }
        }
        let mut kinds = std::collections::HashSet::new();
        let anomalies = a
            .anomalies
            .iter()
            .filter(|an| kinds.insert((an.pupil, an.kind.as_str())))
            .map(|an| DayAnomaly {
                doc_id: doc.clone(),
                pupil_id: an.pupil.to_string().into(),
                device_id: an.device.to_string().into(),
                kind: an.kind.as_str().into(),
                at: an.at,
            })
            .collect();
        let devices = scans
            .iter()
            .map(|(s, _)| s.device_id.to_string())
            .chain(b.check_outs.iter().map(|s| s.device.to_string()))
            .collect();
        Self::sorted(Unsorted {
            scans,
            anomalies,
            devices,
        })
    }

    /// Puts rows read or computed in any order into the order the dashboard reads them.
    pub(super) fn sorted(rows: Unsorted) -> Self {
        let Unsorted {
            mut scans,
            mut anomalies,
            mut devices,
        } = rows;
        scans.sort_by(|(a, a_id), (b, b_id)| {
            (&a.pupil_id, a.at, &a.device_id, a_id).cmp(&(&b.pupil_id, b.at, &b.device_id, b_id))
        });
        anomalies.sort_by(|a, b| (a.at, &a.pupil_id, &a.kind).cmp(&(b.at, &b.pupil_id, &b.kind)));
        devices.sort_unstable();
        devices.dedup();
        Self {
            scans: scans.into_iter().map(|(s, _)| s).collect(),
            anomalies,
            devices,
        }
    }

    fn rows(&self) -> usize {
        self.scans.len() + self.anomalies.len() + self.devices.len()
    }
}

/// A booking's rows in any order, each scan with its scan id (the last key of the order).
#[derive(Debug, Default)]
pub(super) struct Unsorted {
    pub(super) scans: Vec<(DayScan, String)>,
    pub(super) anomalies: Vec<DayAnomaly>,
    pub(super) devices: Vec<String>,
}

/// Bookings' rows by document, each with the token of the records write it belongs to,
/// and the venues watched now. Cheap to share (`Arc`).
#[derive(Debug)]
pub(super) struct DayRows {
    inner: Mutex<Inner>,
    /// `kepu_live_booking_rows_total{from}`: bookings whose rows a dashboard took from
    /// `memory` or read from the `records`.
    taken: IntCounterVec,
}

impl Default for DayRows {
    fn default() -> Self {
        let taken = IntCounterVec::new(
            Opts::new(
                "kepu_live_booking_rows_total",
                "Bookings whose scans, anomalies and devices a live dashboard took from memory or read from the records",
            ),
            &["from"],
        )
        .unwrap_or_else(|_| unreachable!("the metric's name and label are valid"));
        for from in ["memory", "records"] {
            taken.with_label_values(&[from]);
        }
        Self {
            inner: Mutex::default(),
            taken,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Open dashboards per venue id.
    watched: HashMap<String, u32>,
    /// Document id → the versions of its rows kept.
    by_doc: HashMap<String, Kept>,
    rows: usize,
}

/// A booking's rows as of its last two records writes known here: the one committed
/// and one about to be (a writer keeps its rows before its commit), newest last.
#[derive(Debug)]
struct Kept {
    venue: String,
    versions: Vec<(i64, Arc<BookingDay>)>,
}

impl Kept {
    fn rows(&self) -> usize {
        self.versions.iter().map(|(_, d)| d.rows()).sum()
    }
}

impl DayRows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Is someone watching `venue` (its records writes keep their rows)?
    pub(super) fn watched(&self, venue: &str) -> bool {
        self.lock().watched.contains_key(venue)
    }

    /// A dashboard of `venue` opened.
    fn watch(&self, venue: &str) {
        *self.lock().watched.entry(venue.to_owned()).or_insert(0) += 1;
    }

    /// A dashboard of `venue` closed; the last one takes the venue's rows with it.
    fn unwatch(&self, venue: &str) {
        let mut inner = self.lock();
        let Some(n) = inner.watched.get_mut(venue) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n > 0 {
            return;
        }
        inner.watched.remove(venue);
        let mut freed = 0;
        inner.by_doc.retain(|_, k| {
            let keep = k.venue != venue;
            if !keep {
                freed += k.rows();
            }
            keep
        });
        inner.rows = inner.rows.saturating_sub(freed);
    }

    /// The rows of `doc` kept with `token`, if any.
    pub(super) fn get(&self, doc: &str, token: i64) -> Option<Arc<BookingDay>> {
        self.lock()
            .by_doc
            .get(doc)?
            .versions
            .iter()
            .find(|(t, _)| *t == token)
            .map(|(_, d)| Arc::clone(d))
    }

    /// Keeps the rows of `doc` (of `venue`) as of the records write that stores `token`,
    /// as the newest of its two versions, while someone watches the venue (checked here,
    /// so that nothing is kept after its last stream closed). A token that is never
    /// committed is never asked for: its rows only take a place until the next write.
    pub(super) fn keep(&self, doc: &str, venue: &str, token: i64, day: Arc<BookingDay>) {
        let mut inner = self.lock();
        let add = day.rows();
        if !inner.watched.contains_key(venue) || add > MAX_ROWS {
            return;
        }
        if inner.rows + add > MAX_ROWS {
            inner.by_doc.clear();
            inner.rows = 0;
        }
        let kept = inner.by_doc.entry(doc.to_owned()).or_insert_with(|| Kept {
            venue: venue.to_owned(),
            versions: Vec::with_capacity(2),
        });
        let mut freed = 0;
        kept.versions.retain(|(t, d)| {
            let keep = *t != token;
            if !keep {
                freed += d.rows();
            }
            keep
        });
        if kept.versions.len() >= 2 {
            freed += kept.versions.remove(0).1.rows();
        }
        kept.versions.push((token, day));
        inner.rows = (inner.rows + add).saturating_sub(freed);
    }

    /// Counts a booking whose rows were taken from memory (`true`) or read.
    pub(super) fn count(&self, from_memory: bool) {
        let from = if from_memory { "memory" } else { "records" };
        self.taken.with_label_values(&[from]).inc();
    }

    /// Bookings whose rows were read from the records so far.
    pub(super) fn reads(&self) -> u64 {
        self.taken.with_label_values(&["records"]).get()
    }

    /// The `kepu_live_booking_rows_total` counter, to register with the server's metrics.
    pub(super) fn metric(&self) -> IntCounterVec {
        self.taken.clone()
    }
}

/// While held, the records writes of a venue's bookings keep their rows for its
/// dashboards ([`super::Store::watch_venue`]).
#[derive(Debug)]
pub struct VenueWatch {
    rows: Arc<DayRows>,
    venue: String,
}

impl VenueWatch {
    pub(super) fn new(rows: Arc<DayRows>, venue: String) -> Self {
        rows.watch(&venue);
        Self { rows, venue }
    }
}

impl Drop for VenueWatch {
    fn drop(&mut self) {
        self.rows.unwatch(&self.venue);
    }
}
