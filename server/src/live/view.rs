//! What the dashboard shows of one venue-day: the [`Snapshot`] and its parts, as the
//! JSON API and the event stream send them.

use serde::Serialize;

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

/// Counted check-ins over the day, in [`BUCKET_MS`](super::BUCKET_MS) bars.
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
/// for [`STALE_AFTER_MS`](super::STALE_AFTER_MS). While there are any, the counts are lower bounds.
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
