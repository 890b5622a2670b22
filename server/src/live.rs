//! The live venue dashboard (`/venues/{id}/live`): what the gate staff of a venue see of
//! today's visits while pupils arrive.
//!
//! - [`LiveFeed`] lives in [`AppState`](crate::AppState). The storage worker publishes
//!   "venue V changed" on it after it writes a document's records; the hub tells it which
//!   devices hold an open connection.
//! - [`snapshot`] reads one venue-day from the records (`proj_*`, `devices`, `users`)
//!   and the rosters of the day's booking documents, and [`assemble`] (pure) turns those
//!   rows into a [`Snapshot`]: slots and bookings with their numbers, arrivals over time,
//!   missing pupils per group, the duplicate and anomaly ledger and the uncertainty band.
//!
//! Snapshots never carry a pupil's name unless [`may_see_names`] allows it for the
//! viewer; otherwise a pupil is shown by a short pseudonym. Nothing here logs a name.

mod sql;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use kepu_sync_core::calendar::{self, DAY_MS};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::accounts::Role;
use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::store::Store;

/// Venue days are counted in China Standard Time (UTC+8, no daylight saving).
pub const VENUE_UTC_OFFSET_MS: i64 = calendar::CHINA_UTC_OFFSET_MS;
/// A device that is not connected and last synced longer ago than this may hold scans
/// the server has not seen: it widens the uncertainty band.
pub const STALE_AFTER_MS: i64 = 10 * 60_000;
/// Width of one bar of the arrivals chart.
pub const BUCKET_MS: i64 = 10 * 60_000;

/// Rosters kept in memory at most (one per booking document).
const ROSTER_CACHE_MAX: usize = 20_000;

/// Change notifications for the dashboard and the set of devices connected right now.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    changes: broadcast::Sender<Uuid>,
    connected: Arc<Mutex<HashMap<Uuid, u32>>>,
    rosters: Arc<Mutex<HashMap<String, CachedRoster>>>,
}

#[derive(Debug, Clone)]
struct CachedRoster {
    updated_at: i64,
    expected: i64,
    pupils: Arc<Vec<Uuid>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    /// A feed with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            changes,
            connected: Arc::new(Mutex::new(HashMap::new())),
            rosters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Tells every dashboard of `venue` that its records changed.
    pub fn publish(&self, venue: Uuid) {
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(venue);
    }

    /// Publishes the venue a document's records belong to, if it has one.
    pub fn publish_projection(&self, projection: &Projection) {
        if let Some(venue) = venue_of(projection) {
            self.publish(venue);
        }
    }

    /// Receives the ids of venues whose records changed.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    /// A device opened a sync connection.
    pub fn device_connected(&self, device: Uuid) {
        let mut c = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *c.entry(device).or_insert(0) += 1;
    }

    /// A device's sync connection closed.
    pub fn device_disconnected(&self, device: Uuid) {
        let mut c = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = c.get_mut(&device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&device);
            }
        }
    }

    /// Does the device hold an open sync connection now?
    #[must_use]
    pub fn is_connected(&self, device: Uuid) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&device)
    }

    fn cached_roster(&self, doc: &str, updated_at: i64, expected: i64) -> Option<Arc<Vec<Uuid>>> {
        let r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        r.get(doc)
            .filter(|c| c.updated_at == updated_at && c.expected == expected)
            .map(|c| Arc::clone(&c.pupils))
    }

    fn keep_roster(&self, doc: &str, updated_at: i64, expected: i64, pupils: Arc<Vec<Uuid>>) {
        let mut r = self.rosters.lock().unwrap_or_else(PoisonError::into_inner);
        if r.len() >= ROSTER_CACHE_MAX {
            r.clear();
        }
        r.insert(
            doc.to_owned(),
            CachedRoster {
                updated_at,
                expected,
                pupils,
            },
        );
    }
}

/// The venue whose dashboard a document's records feed: a venue document's own venue,
/// a booking's venue.
#[must_use]
pub fn venue_of(projection: &Projection) -> Option<Uuid> {
    match projection {
        Projection::Venue(v) => Some(v.venue.0),
        Projection::Booking(b) => Some(b.venue.0),
        _ => None,
    }
}

/// A calendar day at the venue (China Standard Time), as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(i64);

impl Day {
    /// The venue day that contains the instant `ms` (unix milliseconds).
    #[must_use]
    pub fn containing(ms: i64) -> Self {
        Self(calendar::china_day(ms))
    }

    /// Parses `YYYY-MM-DD` (a real calendar date between the years 2000 and 2200).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let day = Self(calendar::parse_date(text)?);
        (2000..=2200).contains(&day.civil().0).then_some(day)
    }

    /// The day's first and one-past-last instant, unix milliseconds.
    #[must_use]
    pub fn bounds(self) -> (i64, i64) {
        let start = calendar::china_day_start(self.0);
        (start, start + DAY_MS)
    }

    fn civil(self) -> (i64, i64, i64) {
        calendar::civil_from_days(self.0)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Who is looking at a dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Their role.
    pub role: Role,
    /// Their venue (venue staff).
    pub venue_id: Option<Uuid>,
}

/// May `viewer` watch the dashboard of `venue`? Its own staff and bureau administrators.
#[must_use]
pub fn may_watch(viewer: Viewer, venue: Uuid) -> bool {
    match viewer.role {
        Role::BureauAdmin => true,
        Role::VenueStaff => viewer.venue_id == Some(venue),
        Role::Pupil | Role::Volunteer | Role::Teacher => false,
    }
}

/// May `viewer` see the display names schools chose for their pupils on the dashboard of
/// `venue`? The venue's own staff (they call the missing pupils at the gate) and bureau
/// administrators; everyone else sees pseudonyms.
#[must_use]
pub fn may_see_names(viewer: Viewer, venue: Uuid) -> bool {
    may_watch(viewer, venue)
}

/// A short pseudonym for a pupil: `#` and the last six hex digits of the pupil id (the
/// random part of the uuid). Not secret, only not a name.
#[must_use]
pub fn pseudonym(pupil: &str) -> String {
    let hex: String = pupil.chars().filter(char::is_ascii_hexdigit).collect();
    let tail = hex.get(hex.len().saturating_sub(6)..).unwrap_or(&hex);
    format!("#{tail}")
}

/// A short device id: the last six hex digits of its uuid.
#[must_use]
pub fn short_device(device: &str) -> String {
    let hex: String = device.chars().filter(char::is_ascii_hexdigit).collect();
    hex.get(hex.len().saturating_sub(6)..)
        .unwrap_or(&hex)
        .to_owned()
}

/// Everything the dashboard shows for one venue-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Venue id.
    pub venue_id: String,
    /// Venue name.
    pub venue_name: String,
    /// The venue day shown, `YYYY-MM-DD`.
    pub day: String,
    /// Minutes the venue's clock is ahead of UTC (480).
    pub utc_offset_minutes: i64,
    /// When this snapshot was read (unix ms).
    pub generated_at: i64,
    /// Whether pupils are shown by the name their school chose (else by pseudonym).
    pub names_shown: bool,
    /// Sums over the day's bookings.
    pub totals: Totals,
    /// The day's slots with their bookings, earliest first.
    pub slots: Vec<SlotView>,
    /// Counted check-ins over time.
    pub arrivals: Arrivals,
    /// Pupils scanned more than once: every scan, which one counted.
    pub duplicates: Vec<Duplicate>,
    /// Anomalies of counted scans (walk-in, cancelled, unconfirmed, outside the slot).
    pub anomalies: Vec<AnomalyView>,
    /// Devices that may hold scans the server has not seen yet.
    pub band: Band,
}

/// Sums over the day's bookings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Bookings.
    pub bookings: i64,
    /// Places booked (party sizes).
    pub party_size: i64,
    /// Pupils on the rosters.
    pub expected: i64,
    /// Pupils arrived, each once (walk-ins included).
    pub arrived: i64,
    /// Pupils inside now.
    pub inside: i64,
    /// Roster pupils not arrived yet.
    pub missing: i64,
}

/// A slot of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    /// Slot id.
    pub slot_id: String,
    /// Label the venue gave it.
    pub label: String,
    /// Start (unix ms).
    pub start: i64,
    /// End (unix ms).
    pub end: i64,
    /// Places.
    pub capacity: i64,
    /// Sums over the slot's bookings.
    pub totals: Totals,
    /// The slot's bookings in the order the server received them.
    pub bookings: Vec<BookingView>,
}

/// One school's booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingView {
    /// Booking document id.
    pub doc_id: String,
    /// School id.
    pub school_id: String,
    /// School name.
    pub school_name: String,
    /// Places booked.
    pub party_size: i64,
    /// `requested`, `confirmed`, `waitlisted` or `cancelled`.
    pub status: String,
    /// Wait-list position.
    pub wait_position: Option<i64>,
    /// Pupils on the roster.
    pub expected: i64,
    /// Pupils arrived.
    pub arrived: i64,
    /// Pupils inside now.
    pub inside: i64,
    /// Roster pupils not arrived yet.
    pub missing: Vec<PupilLabel>,
}

/// How a pupil is shown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PupilLabel {
    /// The school's display name, or a pseudonym.
    pub label: String,
    /// Whether `label` is a name.
    pub named: bool,
}

/// Counted check-ins over the day, in [`BUCKET_MS`] bars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arrivals {
    /// Bar width in minutes.
    pub bucket_minutes: i64,
    /// Bars from the first arrival (or the first slot's start, if earlier) to the last
    /// arrival (or now, if later and still today).
    pub buckets: Vec<Bucket>,
}

/// One bar of the arrivals chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start of the bar (unix ms).
    pub start: i64,
    /// Pupils counted in it.
    pub count: i64,
    /// Pupils counted up to its end.
    pub cumulative: i64,
}

/// A device as the dashboard shows it: role and short id, never a person.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DeviceLabel {
    /// The owner's role (`teacher`, `venue_staff`, …; `unknown` for a device the server
    /// has no record of).
    pub role: String,
    /// Last six hex digits of the device id.
    pub short_id: String,
}

/// A pupil scanned more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    /// Booking document.
    pub doc_id: String,
    /// School name.
    pub school_name: String,
    /// The pupil.
    pub pupil: PupilLabel,
    /// Every check-in scan, earliest first.
    pub scans: Vec<ScanView>,
}

/// One check-in scan in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanView {
    /// Scanning device.
    pub device: DeviceLabel,
    /// Scan time (unix ms).
    pub at: i64,
    /// `gate_code`, `pass_scan` or `manual`.
    pub method: String,
    /// The scan that counts.
    pub counted: bool,
}

/// An anomaly of a counted scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnomalyView {
    /// `walk_in`, `cancelled_booking`, `unconfirmed_booking` or `outside_slot`.
    pub kind: String,
    /// Booking document.
    pub doc_id: String,
    /// School name.
    pub school_name: String,
    /// The pupil.
    pub pupil: PupilLabel,
    /// The device whose scan counted.
    pub device: DeviceLabel,
    /// Scan time (unix ms).
    pub at: i64,
}

/// The uncertainty band: relevant devices that are not connected and have not synced
/// for [`STALE_AFTER_MS`]. While there are any, the counts are lower bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Band {
    /// The staleness threshold in minutes (10).
    pub threshold_minutes: i64,
    /// Devices relevant to the venue's day (scanned there, its staff, teachers of the
    /// schools booked) that have synced at least once.
    pub relevant_devices: i64,
    /// Of those, how many hold an open connection now.
    pub connected_devices: i64,
    /// The stale devices, longest silent first.
    pub stale: Vec<StaleDevice>,
    /// Whether the counts are lower bounds (any stale device).
    pub counts_are_lower_bounds: bool,
    /// Shortest silence among the stale devices, minutes.
    pub min_minutes: Option<i64>,
    /// Longest silence among the stale devices, minutes.
    pub max_minutes: Option<i64>,
    /// An upper bound for arrivals: the rosters plus walk-ins seen so far.
    pub arrived_at_most: i64,
}

/// A device that may hold unseen scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleDevice {
    /// Role and short id.
    pub device: DeviceLabel,
    /// Its last sync (unix ms).
    pub last_sync_at: i64,
    /// Minutes since then.
    pub minutes: i64,
}

/// A slot row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    /// Slot id.
    pub slot_id: String,
    /// Start.
    pub start: i64,
    /// End.
    pub end: i64,
    /// Places.
    pub capacity: i64,
    /// Label.
    pub label: String,
}

/// A booking row with its school's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRow {
    /// Document id.
    pub doc_id: String,
    /// Slot id.
    pub slot_id: String,
    /// School id.
    pub school_id: String,
    /// School name (empty if unknown).
    pub school_name: String,
    /// Places.
    pub party_size: i64,
    /// Status.
    pub status: String,
    /// Wait-list position.
    pub wait_position: Option<i64>,
    /// Roster size.
    pub expected: i64,
    /// Arrived.
    pub arrived: i64,
    /// Inside now.
    pub inside: i64,
    /// When the records were written (cache key of the roster).
    pub updated_at: i64,
}

/// A check-in scan row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    /// Booking document.
    pub doc_id: String,
    /// Pupil.
    pub pupil_id: String,
    /// Device.
    pub device_id: String,
    /// Time.
    pub at: i64,
    /// Method.
    pub method: String,
    /// The scan that counts.
    pub counted: bool,
}

/// An anomaly row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRow {
    /// Booking document.
    pub doc_id: String,
    /// Pupil.
    pub pupil_id: String,
    /// Device.
    pub device_id: String,
    /// Kind.
    pub kind: String,
    /// Time.
    pub at: i64,
}

/// A device row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Owner's role.
    pub role: String,
    /// Last sync (unix ms), if ever.
    pub last_sync_at: Option<i64>,
    /// Revoked devices are labelled but are not in the band.
    pub revoked: bool,
    /// Relevant to the day (see [`Band`]); other rows only label scans.
    pub relevant: bool,
    /// Holds an open sync connection now.
    pub connected: bool,
}

/// What [`assemble`] needs, read from the store.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Venue name.
    pub venue_name: String,
    /// The day's slots.
    pub slots: Vec<SlotRow>,
    /// The day's bookings.
    pub bookings: Vec<BookingRow>,
    /// Their rosters, by document id.
    pub rosters: HashMap<String, Arc<Vec<Uuid>>>,
    /// Their check-in scans.
    pub scans: Vec<ScanRow>,
    /// Their anomalies.
    pub anomalies: Vec<AnomalyRow>,
    /// Devices that scanned, and every relevant device.
    pub devices: Vec<DeviceRow>,
    /// Pupil id to (display name, school id), only when names may be shown.
    pub names: HashMap<String, (String, String)>,
}

fn device_label(devices: &HashMap<&str, &DeviceRow>, id: &str) -> DeviceLabel {
    DeviceLabel {
        role: devices
            .get(id)
            .map_or_else(|| "unknown".to_owned(), |d| d.role.clone()),
        short_id: short_device(id),
    }
}

fn pupil_label(names: &HashMap<String, (String, String)>, pupil: &str, school: &str) -> PupilLabel {
    // A name is shown only for a pupil of the booking's own school.
    match names.get(pupil) {
        Some((name, s)) if s == school => PupilLabel {
            label: name.clone(),
            named: true,
        },
        _ => PupilLabel {
            label: pseudonym(pupil),
            named: false,
        },
    }
}

/// Builds the snapshot of `day` from its rows, as of `now`. Pure.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn assemble(venue: Uuid, day: Day, rows: &Rows, names_shown: bool, now: i64) -> Snapshot {
    let devices: HashMap<&str, &DeviceRow> = rows
        .devices
        .iter()
        .map(|d| (d.device_id.as_str(), d))
        .collect();
    let bookings: HashMap<&str, &BookingRow> = rows
        .bookings
        .iter()
        .map(|b| (b.doc_id.as_str(), b))
        .collect();
    let empty = HashMap::new();
    let names = if names_shown { &rows.names } else { &empty };

    // Pupils counted per booking.
    let mut counted: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for s in rows.scans.iter().filter(|s| s.counted) {
        counted
            .entry(s.doc_id.as_str())
            .or_default()
            .insert(s.pupil_id.as_str());
    }

    let mut totals = Totals::default();
    let mut slots: Vec<SlotView> = rows
        .slots
        .iter()
        .map(|s| SlotView {
            slot_id: s.slot_id.clone(),
            label: s.label.clone(),
            start: s.start,
            end: s.end,
            capacity: s.capacity,
            totals: Totals::default(),
            bookings: Vec::new(),
        })
        .collect();
    let slot_index: HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.slot_id.clone(), i))
        .collect();
    for b in &rows.bookings {
        let Some(&i) = slot_index.get(&b.slot_id) else {
            continue;
        };
        let arrived_pupils = counted.get(b.doc_id.as_str());
        let mut missing: Vec<PupilLabel> = rows
            .rosters
            .get(&b.doc_id)
            .map(|r| {
                r.iter()
                    .map(Uuid::to_string)
                    .filter(|p| !arrived_pupils.is_some_and(|a| a.contains(p.as_str())))
                    .map(|p| pupil_label(names, &p, &b.school_id))
                    .collect()
            })
            .unwrap_or_default();
        missing.sort();
        let missing_count = i64::try_from(missing.len()).unwrap_or(i64::MAX);
        let slot = &mut slots[i];
        for t in [&mut slot.totals, &mut totals] {
            t.bookings += 1;
            t.party_size += b.party_size;
            t.expected += b.expected;
            t.arrived += b.arrived;
            t.inside += b.inside;
            t.missing += missing_count;
        }
        slot.bookings.push(BookingView {
            doc_id: b.doc_id.clone(),
            school_id: b.school_id.clone(),
            school_name: b.school_name.clone(),
            party_size: b.party_size,
            status: b.status.clone(),
            wait_position: b.wait_position,
            expected: b.expected,
            arrived: b.arrived,
            inside: b.inside,
            missing,
        });
    }

    let (day_start, day_end) = day.bounds();
    let arrivals = arrivals(
        rows.scans
            .iter()
            .filter(|s| s.counted && s.at >= day_start && s.at < day_end)
            .map(|s| s.at),
        rows.slots.iter().map(|s| s.start).min(),
        now.clamp(day_start, day_end - 1),
    );

    // Duplicates: every pupil of a booking with more than one check-in scan.
    let mut per_pupil: BTreeMap<(&str, &str), Vec<&ScanRow>> = BTreeMap::new();
    for s in &rows.scans {
        per_pupil
            .entry((s.doc_id.as_str(), s.pupil_id.as_str()))
            .or_default()
            .push(s);
    }
    let mut duplicates: Vec<Duplicate> = per_pupil
        .into_iter()
        .filter(|(_, scans)| scans.len() > 1)
        .map(|((doc, pupil), mut scans)| {
            scans.sort_by(|a, b| (a.at, &a.device_id).cmp(&(b.at, &b.device_id)));
            let school = bookings.get(doc).map_or("", |b| b.school_id.as_str());
            Duplicate {
                doc_id: doc.to_owned(),
                school_name: bookings
                    .get(doc)
                    .map(|b| b.school_name.clone())
                    .unwrap_or_default(),
                pupil: pupil_label(names, pupil, school),
                scans: scans
                    .iter()
                    .map(|s| ScanView {
                        device: device_label(&devices, &s.device_id),
                        at: s.at,
                        method: s.method.clone(),
                        counted: s.counted,
                    })
                    .collect(),
            }
        })
        .collect();
    duplicates.sort_by_key(|d| std::cmp::Reverse(d.scans.last().map_or(0, |s| s.at)));

    let mut anomalies: Vec<AnomalyView> = rows
        .anomalies
        .iter()
        .map(|a| {
            let booking = bookings.get(a.doc_id.as_str());
            // A walk-in is not on the booking's roster: shown by pseudonym.
            let school = if a.kind == "walk_in" {
                ""
            } else {
                booking.map_or("", |b| b.school_id.as_str())
            };
            AnomalyView {
                kind: a.kind.clone(),
                doc_id: a.doc_id.clone(),
                school_name: booking.map(|b| b.school_name.clone()).unwrap_or_default(),
                pupil: pupil_label(names, &a.pupil_id, school),
                device: device_label(&devices, &a.device_id),
                at: a.at,
            }
        })
        .collect();
    anomalies.sort_by(|a, b| (b.at, &a.kind).cmp(&(a.at, &b.kind)));

    let band = band(&rows.devices, &rows.anomalies, &totals, now);
    Snapshot {
        venue_id: venue.to_string(),
        venue_name: rows.venue_name.clone(),
        day: day.to_string(),
        utc_offset_minutes: VENUE_UTC_OFFSET_MS / 60_000,
        generated_at: now,
        names_shown,
        totals,
        slots,
        arrivals,
        duplicates,
        anomalies,
        band,
    }
}

/// Bars from the earlier of the first arrival and the first slot's start, to the later
/// of the last arrival and `now`.
fn arrivals(times: impl Iterator<Item = i64>, first_slot: Option<i64>, now: i64) -> Arrivals {
    let mut bars: BTreeMap<i64, i64> = BTreeMap::new();
    for at in times {
        *bars
            .entry(at.div_euclid(BUCKET_MS) * BUCKET_MS)
            .or_default() += 1;
    }
    let mut buckets = Vec::new();
    if let (Some(&first), Some(&last)) = (bars.keys().next(), bars.keys().next_back()) {
        let end = last.max(now.div_euclid(BUCKET_MS) * BUCKET_MS);
        let first = first_slot.map_or(first, |s| first.min(s.div_euclid(BUCKET_MS) * BUCKET_MS));
        let mut cumulative = 0;
        let mut t = first;
        while t <= end {
            let count = bars.get(&t).copied().unwrap_or(0);
            cumulative += count;
            buckets.push(Bucket {
                start: t,
                count,
                cumulative,
            });
            t += BUCKET_MS;
        }
    }
    Arrivals {
        bucket_minutes: BUCKET_MS / 60_000,
        buckets,
    }
}

fn band(devices: &[DeviceRow], anomalies: &[AnomalyRow], totals: &Totals, now: i64) -> Band {
    let relevant: Vec<&DeviceRow> = devices
        .iter()
        .filter(|d| d.relevant && !d.revoked && d.last_sync_at.is_some())
        .collect();
    let connected = relevant.iter().filter(|d| d.connected).count();
    let mut stale: Vec<StaleDevice> = relevant
        .iter()
        .filter_map(|d| {
            let last = d.last_sync_at?;
            (!d.connected && now - last > STALE_AFTER_MS).then(|| StaleDevice {
                device: DeviceLabel {
                    role: d.role.clone(),
                    short_id: short_device(&d.device_id),
                },
                last_sync_at: last,
                minutes: (now - last) / 60_000,
            })
        })
        .collect();
    stale.sort_by(|a, b| {
        (a.last_sync_at, &a.device.short_id).cmp(&(b.last_sync_at, &b.device.short_id))
    });
    let walk_ins = anomalies.iter().filter(|a| a.kind == "walk_in").count();
    Band {
        threshold_minutes: STALE_AFTER_MS / 60_000,
        relevant_devices: i64::try_from(relevant.len()).unwrap_or(i64::MAX),
        connected_devices: i64::try_from(connected).unwrap_or(i64::MAX),
        counts_are_lower_bounds: !stale.is_empty(),
        min_minutes: stale.iter().map(|s| s.minutes).min(),
        max_minutes: stale.iter().map(|s| s.minutes).max(),
        stale,
        arrived_at_most: totals.expected + i64::try_from(walk_ins).unwrap_or(0),
    }
}

/// Is there a venue with this id?
///
/// # Errors
/// A database failure.
pub async fn venue_exists(store: &Store, venue: Uuid) -> Result<bool> {
    Ok(sql::venue_name(store, venue).await?.is_some())
}

/// Reads the snapshot of `venue` on `day` for `viewer`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown venue; [`Error::Forbidden`] when the viewer may
/// not watch it; a database failure.
pub async fn snapshot(
    store: &Store,
    feed: &LiveFeed,
    venue: Uuid,
    day: Day,
    viewer: Viewer,
    now: i64,
) -> Result<Snapshot> {
    let Some(venue_name) = sql::venue_name(store, venue).await? else {
        return Err(Error::not_found("venue", venue));
    };
    if !may_watch(viewer, venue) {
        return Err(Error::Forbidden(
            "only this venue's staff and bureau administrators",
        ));
    }
    let names_shown = may_see_names(viewer, venue);
    let mut rows = sql::day_rows(store, venue, day, names_shown).await?;
    rows.venue_name = venue_name;
    for d in &mut rows.devices {
        d.connected = d
            .device_id
            .parse::<Uuid>()
            .is_ok_and(|id| feed.is_connected(id));
    }
    for b in &rows.bookings {
        let roster = match feed.cached_roster(&b.doc_id, b.updated_at, b.expected) {
            Some(r) => r,
            None => {
                let r = Arc::new(sql::roster(store, &b.doc_id).await?);
                feed.keep_roster(&b.doc_id, b.updated_at, b.expected, Arc::clone(&r));
                r
            }
        };
        rows.rosters.insert(b.doc_id.clone(), roster);
    }
    Ok(assemble(venue, day, &rows, names_shown, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_counted_in_china_standard_time() {
        let d = Day::parse("2026-11-28").expect("a date");
        // 2026-11-28 00:00 +08:00 = 2026-11-27 16:00 UTC.
        assert_eq!(d.bounds(), (1_795_795_200_000, 1_795_881_600_000));
        assert_eq!(d.to_string(), "2026-11-28");
        assert_eq!(Day::containing(1_795_795_200_000), d);
        assert_eq!(Day::containing(1_795_795_199_999).to_string(), "2026-11-27");
        assert_eq!(
            Day::parse("2028-02-29").map(|d| d.to_string()).as_deref(),
            Some("2028-02-29")
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "",
            "2026-11-28T00",
            "+026-11-28",
            "1999-12-31",
            "２０２６-11-28",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pseudonyms_and_short_ids_carry_no_name() {
        assert_eq!(pseudonym("0192f0c4-7a1b-7c3d-8e4f-5a6b7c8d9e0f"), "#8d9e0f");
        assert_eq!(
            short_device("0192f0c4-7a1b-7c3d-8e4f-5a6b7c8d9e0f"),
            "8d9e0f"
        );
        assert_eq!(pseudonym("ab"), "#ab");
    }

    fn scan(doc: &str, pupil: &str, device: &str, at: i64, counted: bool) -> ScanRow {
        ScanRow {
            doc_id: doc.into(),
            pupil_id: pupil.into(),
            device_id: device.into(),
            at,
            method: "manual".into(),
            counted,
        }
    }

    #[test]
    fn the_snapshot_counts_lists_the_missing_and_bands_stale_devices() {
        let venue = Uuid::from_u128(1);
        let day = Day::parse("2026-11-28").expect("a date");
        let (start, _) = day.bounds();
        let nine = start + 9 * 3_600_000;
        let now = nine + 3_600_000;
        let p = |i: u128| Uuid::from_u128(0x100 + i);
        let mut rows = Rows {
            venue_name: "湖南省科技馆".into(),
            slots: vec![SlotRow {
                slot_id: "s1".into(),
                start: nine,
                end: nine + 7_200_000,
                capacity: 60,
                label: "上午".into(),
            }],
            bookings: vec![BookingRow {
                doc_id: "b1".into(),
                slot_id: "s1".into(),
                school_id: "school".into(),
                school_name: "博才小学".into(),
                party_size: 4,
                status: "confirmed".into(),
                wait_position: None,
                expected: 3,
                arrived: 2,
                inside: 2,
                updated_at: 1,
            }],
            scans: vec![
                scan("b1", &p(0).to_string(), "dev-a", nine + 60_000, true),
                scan("b1", &p(0).to_string(), "dev-b", nine + 700_000, false),
                scan("b1", &p(1).to_string(), "dev-a", nine + 720_000, true),
            ],
            devices: vec![
                DeviceRow {
                    device_id: "dev-a".into(),
                    role: "venue_staff".into(),
                    last_sync_at: Some(now - 3_600_000),
                    revoked: false,
                    relevant: true,
                    connected: true,
                },
                DeviceRow {
                    device_id: "dev-b".into(),
                    role: "teacher".into(),
                    last_sync_at: Some(now - 14 * 60_000),
                    revoked: false,
                    relevant: true,
                    connected: false,
                },
                DeviceRow {
                    device_id: "dev-c".into(),
                    role: "teacher".into(),
                    last_sync_at: Some(now - 60_000),
                    revoked: false,
                    relevant: true,
                    connected: false,
                },
            ],
            ..Rows::default()
        };
        rows.rosters
            .insert("b1".into(), Arc::new(vec![p(0), p(1), p(2)]));
        rows.names
            .insert(p(2).to_string(), ("小明".to_owned(), "school".to_owned()));
        let s = assemble(venue, day, &rows, true, now);
        assert_eq!(s.totals.expected, 3);
        assert_eq!(s.totals.arrived, 2);
        assert_eq!(s.totals.missing, 1);
        assert_eq!(s.slots[0].bookings[0].missing[0].label, "小明");
        assert_eq!(s.duplicates.len(), 1);
        assert_eq!(s.duplicates[0].scans.len(), 2);
        assert!(s.duplicates[0].scans[0].counted);
        assert_eq!(s.duplicates[0].scans[1].device.role, "teacher");
        let total: i64 = s.arrivals.buckets.iter().map(|b| b.count).sum();
        assert_eq!(total, 2);
        assert_eq!(s.arrivals.buckets.last().map(|b| b.cumulative), Some(2));
        assert_eq!(s.band.stale.len(), 1);
        assert_eq!(s.band.stale[0].minutes, 14);
        assert!(s.band.counts_are_lower_bounds);
        assert_eq!(s.band.connected_devices, 1);

        let hidden = assemble(venue, day, &rows, false, now);
        assert_eq!(
            hidden.slots[0].bookings[0].missing[0].label,
            pseudonym(&p(2).to_string())
        );
        assert!(!format!("{hidden:?}").contains("小明"));
    }
}
