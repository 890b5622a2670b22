//! The uniffi API: thin wrappers over [`crate::client::Core`] that convert ids to text,
//! views to records and errors to [`ApiError`] (in one place, [`From<Error>`]).
//!
//! Synchronous methods write to the device's SQLite file and return once the write is
//! durable; call them off the UI thread (a Kotlin `Dispatchers.IO` coroutine, a Swift
//! `Task`). `enroll` and `sync_now` are async and run on the library's own tokio runtime.

// uniffi lifts arguments as owned values; borrowing them is not an option at the FFI.
#![allow(clippy::needless_pass_by_value)]

use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError, Weak};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::rules::attendance::Attendance;
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::schema::booking::Booking;
use tokio::sync::watch;

use crate::client::actions::{Receipt, parse_doc};
use crate::client::core::{Core, DocListener, Status, SyncListener};
use crate::client::error::Error;
use crate::client::identity::Identity as CoreIdentity;
use crate::client::net::{self, Until};

/// The library's runtime: two worker threads, started on first use.
static RUNTIME: LazyLock<Result<tokio::runtime::Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kepu-rt")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

fn runtime() -> Result<&'static tokio::runtime::Runtime, ApiError> {
    RUNTIME.as_ref().map_err(|e| ApiError::Other {
        reason: format!("cannot start the runtime: {e}"),
    })
}

/// What went wrong, one variant per thing an app does differently. Never carries
/// personal data (names, tokens, codes).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ApiError {
    /// No network, the server did not answer, the connection broke: the work is kept;
    /// retry later (background sync does).
    #[error("offline: {reason}")]
    Offline {
        /// What happened (no address, no token).
        reason: String,
    },
    /// This device's clock disagrees with the gate's: a genuine gate code is outside
    /// its 30-second window here. `offset_ms` is about what to add to the device's
    /// clock; ask the user to set the time automatically.
    #[error("the device clock is off by {offset_ms} ms")]
    ClockSkew {
        /// Gate time minus device time, milliseconds.
        offset_ms: i64,
    },
    /// Something the call needs has not reached this device yet: `booking`,
    /// `venue document`, `school log`, `revocation list`. Sync, then try again.
    #[error("not synced yet: {what}")]
    NotSyncedYet {
        /// What is missing.
        what: String,
    },
    /// The server revoked this device; its local data has been wiped. Show enrollment.
    #[error("device revoked")]
    Revoked,
    /// The device is not enrolled (or was wiped): enroll first.
    #[error("not enrolled")]
    NotEnrolled,
    /// This install is already enrolled (`enroll` again is refused; nothing changed).
    #[error("already enrolled")]
    AlreadyEnrolled,
    /// The device's storage is full: nothing was written. Free space and retry.
    #[error("storage full")]
    StorageFull,
    /// The document rules refused the edit (the same rules the server applies):
    /// `code` is machine-readable (`not-own-pupil`, `role-may-not-write`, …) and `path`
    /// says where in the document (`check_ins/<pupil>/<device>`), never a value.
    #[error("refused: {code} at {path}")]
    Refused {
        /// The refusal code.
        code: String,
        /// Where.
        path: String,
    },
    /// The server refused a request: `invalid_enrollment_code`,
    /// `server_public_key_mismatch`, or another code of the server's.
    #[error("rejected: {reason}")]
    Rejected {
        /// Machine-readable reason.
        reason: String,
    },
    /// The local store failed (a corrupt file, an I/O error).
    #[error("storage: {reason}")]
    Storage {
        /// What happened.
        reason: String,
    },
    /// Bad input: a forged or expired code, a malformed id, a booking never added.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// Why.
        reason: String,
    },
    /// The server did not accept this device's credentials and did not say that the
    /// device is revoked (a proxy that drops the header, a server restored from an older
    /// backup): `missing_token`, `invalid_token` or `http-<status>`. Nothing local is
    /// touched; retry later, and tell the operator if it persists.
    #[error("not accepted by the server: {reason}")]
    Auth {
        /// The server's code.
        reason: String,
    },
    /// The app is below the minimum version the server set for this device's role
    /// (`app-too-old`): nothing local is touched, and the work waits until the updated
    /// app calls `set_app_version` with its new version. Ask the user to update.
    #[error("this app is too old; the server needs version {minimum} or later")]
    AppTooOld {
        /// The lowest version the server accepts for this role (`?` if it did not say).
        minimum: String,
    },
    /// `sign_out` found local changes the server has not acknowledged yet: nothing was
    /// touched. Sync (or keep the user signed in) and try again.
    #[error("{pending} changes are not synced yet")]
    UnsyncedWork {
        /// Local changes waiting for the server.
        pending: u64,
    },
    /// Another client has this store open (another process such as an app extension or
    /// a background worker, or a second `open` in this one): one writer per store.
    #[error("store in use: {reason}")]
    StoreInUse {
        /// What happened.
        reason: String,
    },
    /// Anything else.
    #[error("{reason}")]
    Other {
        /// What happened.
        reason: String,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if crate::client::store::is_full(&e) {
            return Self::StorageFull;
        }
        match e {
            Error::Sqlite(err) => {
                tracing::error!(error = %err, "storage failed");
                Self::Storage {
                    reason: "the local store failed".into(),
                }
            }
            Error::Storage(reason) => {
                tracing::error!(%reason, "storage failed");
                Self::Storage { reason }
            }
            Error::StorageFull => Self::StorageFull,
            Error::Network(reason) => Self::Offline { reason },
            Error::Rejected(reason) => Self::Rejected { reason },
            Error::Refused { code, path } => Self::Refused {
                code: code.as_str().to_owned(),
                path,
            },
            Error::ClockSkew(offset_ms) => Self::ClockSkew { offset_ms },
            Error::NotSynced(what) => Self::NotSyncedYet {
                what: what.to_owned(),
            },
            Error::AlreadyEnrolled => Self::AlreadyEnrolled,
            Error::InvalidInput(reason) => Self::InvalidInput { reason },
            Error::NotEnrolled => Self::NotEnrolled,
            Error::Auth(reason) => Self::Auth { reason },
            Error::AppTooOld { minimum } => Self::AppTooOld { minimum },
            Error::UnsyncedWork(pending) => Self::UnsyncedWork { pending },
            Error::StoreInUse => Self::StoreInUse {
                reason: "another client has this store open".into(),
            },
            Error::Revoked => Self::Revoked,
            Error::Other(reason) => {
                tracing::warn!(%reason, "client error");
                Self::Other { reason }
            }
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ApiError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Other {
            reason: format!("callback failed: {}", e.reason),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Who a device acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Role {
    /// A pupil's own phone.
    Pupil,
    /// A junior science volunteer.
    Volunteer,
    /// A teacher of one school.
    Teacher,
    /// Staff of one venue (gate tablets, tour tablets).
    VenueStaff,
    /// An education bureau or science association analyst.
    BureauAdmin,
    /// The server itself (never a phone; listed so every role has a name).
    Server,
}

impl From<kepu_sync_core::writer::Role> for Role {
    fn from(r: kepu_sync_core::writer::Role) -> Self {
        use kepu_sync_core::writer::Role as R;
        match r {
            R::Pupil => Self::Pupil,
            R::Volunteer => Self::Volunteer,
            R::Teacher => Self::Teacher,
            R::VenueStaff => Self::VenueStaff,
            R::BureauAdmin => Self::BureauAdmin,
            R::Server => Self::Server,
        }
    }
}

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum DocumentKind {
    /// A venue: profile, slots.
    Venue,
    /// One visit of one school group to one venue slot.
    Booking,
    /// One volunteer's activities.
    ActivityLog,
    /// One school's year.
    SchoolLog,
    /// The server's list of revoked pupil passes.
    Revocations,
}

impl From<DocKind> for DocumentKind {
    fn from(k: DocKind) -> Self {
        match k {
            DocKind::Venue => Self::Venue,
            DocKind::Booking => Self::Booking,
            DocKind::ActivityLog => Self::ActivityLog,
            DocKind::SchoolLog => Self::SchoolLog,
            DocKind::Revocations => Self::Revocations,
        }
    }
}

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum BookingStatus {
    /// Waiting for the server's decision (made offline, or not synced yet).
    Requested,
    /// The server confirmed places.
    Confirmed,
    /// The slot was full; on the wait list.
    Waitlisted,
    /// Cancelled by the school or the venue.
    Cancelled,
}

impl From<kepu_sync_core::schema::booking::Status> for BookingStatus {
    fn from(s: kepu_sync_core::schema::booking::Status) -> Self {
        use kepu_sync_core::schema::booking::Status as S;
        match s {
            S::Requested => Self::Requested,
            S::Confirmed => Self::Confirmed,
            S::Waitlisted => Self::Waitlisted,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// What is odd about a counted check-in (shown, never dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum AnomalyKind {
    /// The pupil is not on the roster.
    WalkIn,
    /// The booking was cancelled.
    CancelledBooking,
    /// The booking is requested or wait-listed, not confirmed.
    UnconfirmedBooking,
    /// The scan's time is outside the slot.
    OutsideSlot,
    /// One proof was used by several pupils.
    SharedProof,
}

impl From<kepu_sync_core::rules::attendance::AnomalyKind> for AnomalyKind {
    fn from(k: kepu_sync_core::rules::attendance::AnomalyKind) -> Self {
        use kepu_sync_core::rules::attendance::AnomalyKind as A;
        match k {
            A::WalkIn => Self::WalkIn,
            A::CancelledBooking => Self::CancelledBooking,
            A::UnconfirmedBooking => Self::UnconfirmedBooking,
            A::OutsideSlot => Self::OutsideSlot,
            A::SharedProof => Self::SharedProof,
        }
    }
}

/// Who this device is enrolled as (the token stays inside the library).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Identity {
    /// Device id.
    pub device_id: String,
    /// User id.
    pub user_id: String,
    /// The role.
    pub role: Role,
    /// School of a pupil, volunteer or teacher.
    pub school_id: Option<String>,
    /// Venue of venue staff.
    pub venue_id: Option<String>,
    /// Pseudonymous pupil id of a pupil.
    pub pupil_id: Option<String>,
    /// The venue's document (profile, slots), for venue staff.
    pub venue_doc: Option<String>,
}

impl From<CoreIdentity> for Identity {
    fn from(i: CoreIdentity) -> Self {
        Self {
            device_id: i.device.to_string(),
            user_id: i.user.to_string(),
            role: i.role.into(),
            school_id: i.school.map(|s| s.to_string()),
            venue_id: i.venue.map(|v| v.to_string()),
            pupil_id: i.pupil.map(|p| p.to_string()),
            venue_doc: i.venue_doc().map(|d| d.to_string()),
        }
    }
}

/// A document on this device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentInfo {
    /// Document id (bs58check, as in `automerge:` URLs).
    pub doc_id: String,
    /// `None` while asked for and not yet received.
    pub kind: Option<DocumentKind>,
}

/// A scan recorded by this device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CheckInReceipt {
    /// The pupil.
    pub pupil_id: String,
    /// The scan's id.
    pub scan_id: String,
    /// Device time, unix ms.
    pub at_ms: i64,
    /// The pupil was already counted; this scan is kept as a duplicate.
    pub already_counted: bool,
}

impl From<Receipt> for CheckInReceipt {
    fn from(r: Receipt) -> Self {
        Self {
            pupil_id: r.pupil.to_string(),
            scan_id: r.scan_id,
            at_ms: r.at,
            already_counted: r.already_counted,
        }
    }
}

/// One pupil on a visit.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PupilRow {
    /// Pseudonymous pupil id.
    pub pupil_id: String,
    /// On the roster (false: a walk-in).
    pub on_roster: bool,
    /// Counted as arrived.
    pub arrived: bool,
    /// Inside now.
    pub inside: bool,
    /// The check-in that counts (the earliest), unix ms.
    pub checked_in_at_ms: Option<i64>,
    /// Device that recorded it.
    pub counted_by_device: Option<String>,
    /// Latest check-out, unix ms.
    pub checked_out_at_ms: Option<i64>,
    /// Every check-in scan of this pupil (1 + duplicates).
    pub scans: u32,
}

/// An anomaly on a counted check-in (shown, never dropped).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Anomaly {
    /// What is odd.
    pub kind: AnomalyKind,
    /// The pupil.
    pub pupil_id: String,
}

/// Attendance of a visit, the same on every device that holds the same merged booking.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Roster {
    /// Booking document.
    pub booking_doc: String,
    /// Where the booking stands.
    pub status: BookingStatus,
    /// Pupils on the roster.
    pub expected: u32,
    /// Pupils counted as arrived, each once.
    pub arrived: u32,
    /// Inside now.
    pub inside_now: u32,
    /// Checked in, then out.
    pub left: u32,
    /// Roster pupils not arrived.
    pub missing: Vec<String>,
    /// Per pupil.
    pub pupils: Vec<PupilRow>,
    /// Anomalies.
    pub anomalies: Vec<Anomaly>,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn roster_record(doc: &DocumentId, b: &Booking, a: &Attendance) -> Roster {
    Roster {
        booking_doc: doc.to_string(),
        status: b.status.into(),
        expected: count(a.expected),
        arrived: count(a.arrived),
        inside_now: count(a.inside_now),
        left: count(a.left),
        missing: a.missing.iter().map(ToString::to_string).collect(),
        pupils: a
            .pupils
            .iter()
            .map(|p| PupilRow {
                pupil_id: p.pupil.to_string(),
                on_roster: p.on_roster,
                arrived: p.counted.is_some(),
                inside: p.inside,
                checked_in_at_ms: p.counted.as_ref().map(|s| s.at),
                counted_by_device: p.counted.as_ref().map(|s| s.device.to_string()),
                checked_out_at_ms: p.last_check_out.as_ref().map(|s| s.at),
                scans: count(usize::from(p.counted.is_some()) + p.duplicates.len()),
            })
            .collect(),
        anomalies: a
            .anomalies
            .iter()
            .map(|x| Anomaly {
                kind: x.kind.into(),
                pupil_id: x.pupil.to_string(),
            })
            .collect(),
    }
}

/// A booking as this device sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct BookingInfo {
    /// Booking document.
    pub doc_id: String,
    /// Venue.
    pub venue_id: String,
    /// Slot.
    pub slot_id: String,
    /// School.
    pub school_id: String,
    /// Places asked for.
    pub party_size: u32,
    /// `Requested` until the server decides, then `Confirmed` or `Waitlisted`;
    /// `Cancelled`.
    pub status: BookingStatus,
    /// Place on the wait list.
    pub wait_position: Option<u32>,
}

fn booking_record(doc: &DocumentId, b: &Booking) -> BookingInfo {
    BookingInfo {
        doc_id: doc.to_string(),
        venue_id: b.venue.to_string(),
        slot_id: b.slot.to_string(),
        school_id: b.school.to_string(),
        party_size: b.party_size,
        status: b.status.into(),
        wait_position: b.wait_position,
    }
}

/// One of a pupil's visits.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Visit {
    /// The booking.
    pub booking: BookingInfo,
    /// When this pupil's counted check-in was.
    pub checked_in_at_ms: Option<i64>,
    /// Latest check-out.
    pub checked_out_at_ms: Option<i64>,
}

/// A school's programme year on this device: sessions, lectures, tour coverage.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SchoolYearInfo {
    /// The school log document.
    pub doc_id: String,
    /// Calendar year.
    pub year: i64,
    /// In-school science sessions logged.
    pub sessions: u32,
    /// Weeks (7-day weeks from 1 January, China time) with at least one session.
    pub weeks_with_session: u32,
    /// Weeks of the year begun so far.
    pub weeks_so_far: u32,
    /// Expert lectures logged.
    pub lectures: u32,
    /// Mobile-museum tour stops.
    pub tour_stops: u32,
    /// Different pupils who attended a tour stop.
    pub pupils_reached: u32,
}

/// A volunteer's minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct VolunteerMinutes {
    /// Confirmed by venue staff.
    pub confirmed: u64,
    /// Not yet decided.
    pub unconfirmed: u64,
    /// Declined.
    pub declined: u64,
    /// Activities logged.
    pub activities: u32,
}

/// Changes the server refused (kept on the device, shown to the user).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Refusal {
    /// Document.
    pub doc_id: String,
    /// Machine-readable reason (`not-on-roster`, `role-may-not-write`, …).
    pub code: String,
    /// Where in the document.
    pub path: String,
    /// How many changes.
    pub changes: u64,
    /// When the device learnt of it, unix ms.
    pub at_ms: i64,
}

/// The sync status an app shows.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// Local changes the server has not acknowledged yet.
    pub pending_changes: u64,
    /// Last sync that reached every document, unix ms.
    pub last_sync_ms: Option<i64>,
    /// Refusals with their reasons.
    pub refusals: Vec<Refusal>,
    /// Connected to the server now.
    pub connected: bool,
    /// The last network problem, if the last attempt failed.
    pub last_error: Option<String>,
    /// The server revoked this device; the local data was wiped.
    pub revoked: bool,
    /// The device is enrolled.
    pub enrolled: bool,
    /// Frame bytes sent since the app started.
    pub bytes_sent: u64,
    /// Frame bytes received since the app started.
    pub bytes_received: u64,
}

impl From<&Status> for SyncStatus {
    fn from(s: &Status) -> Self {
        Self {
            pending_changes: s.pending_changes,
            last_sync_ms: s.last_sync_ms,
            refusals: s
                .refusals
                .iter()
                .map(|r| Refusal {
                    doc_id: r.doc.to_string(),
                    code: r.code.clone(),
                    path: r.path.clone(),
                    changes: r.changes,
                    at_ms: r.at,
                })
                .collect(),
            connected: s.connected,
            last_error: s.last_error.clone(),
            revoked: s.revoked,
            enrolled: s.enrolled,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
        }
    }
}

/// What one `sync_now` reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Documents in sync with the server.
    pub synced: u32,
    /// Documents the server does not have (yet) or this device may not read.
    pub unavailable: u32,
    /// Batches of changes the server refused (see `sync_status().refusals`).
    pub refused: u32,
}

/// Told when a document changed (locally or from the server). After a revocation wipe
/// the sync observer reports `revoked`; every document is gone.
#[uniffi::export(with_foreign)]
pub trait DocumentObserver: Send + Sync {
    /// A document changed; `kind` is `None` when it was dropped.
    ///
    /// # Errors
    /// Whatever the app's callback throws; it is ignored.
    fn on_document_changed(
        &self,
        doc_id: String,
        kind: Option<DocumentKind>,
    ) -> Result<(), ApiError>;
}

/// Told when the sync status may have changed.
#[uniffi::export(with_foreign)]
pub trait SyncObserver: Send + Sync {
    /// The new status.
    ///
    /// # Errors
    /// Whatever the app's callback throws; it is ignored.
    fn on_sync_status(&self, status: SyncStatus) -> Result<(), ApiError>;
}

/// Calls to one observer are at least this far apart; what happened in between is
/// coalesced into the next call (each document once, the status as it is then).
const OBSERVER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// What waits for one observer's delivery thread.
#[derive(Default)]
struct Inbox {
    /// Documents that changed, each once, in the order they first changed.
    docs: Vec<(DocumentId, Option<DocKind>)>,
    /// The sync status may have changed.
    status: bool,
    /// The observer was cancelled or the client released.
    closed: bool,
}

/// Between the core, which posts on whatever thread changed something (cheaply, no
/// foreign call), and one observer's own delivery thread, which calls the app.
struct Mailbox {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    /// Held while the app's callback runs: `cancel` waits for it.
    delivering: Mutex<()>,
    /// The delivery thread (a callback that cancels its own observer must not wait).
    thread: std::sync::OnceLock<std::thread::ThreadId>,
}

impl Mailbox {
    fn new(inbox: Inbox) -> Arc<Self> {
        Arc::new(Self {
            inbox: Mutex::new(inbox),
            wake: Condvar::new(),
            delivering: Mutex::new(()),
            thread: std::sync::OnceLock::new(),
        })
    }

    fn post(&self, f: impl FnOnce(&mut Inbox)) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if !inbox.closed {
            f(&mut inbox);
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.wake.notify_one();
    }

    /// Waits for what to deliver next; `None` once closed.
    fn next(&self) -> Option<Inbox> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        while !inbox.closed && inbox.docs.is_empty() && !inbox.status {
            inbox = self
                .wake
                .wait(inbox)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if inbox.closed {
            return None;
        }
        Some(std::mem::take(&mut *inbox))
    }
}

/// The app's observer, one of two kinds.
enum Target {
    Docs(Arc<dyn DocumentObserver>),
    Sync(Arc<dyn SyncObserver>),
}

/// One observer's delivery thread: waits for posts, calls the app with what gathered,
/// at most once per [`OBSERVER_INTERVAL`], until the observer is cancelled or the client
/// released.
fn deliver(mailbox: &Mailbox, core: &Weak<Core>, target: &Target) {
    let _ = mailbox.thread.set(std::thread::current().id());
    loop {
        let started = std::time::Instant::now();
        let Some(batch) = mailbox.next() else {
            return;
        };
        {
            let _busy = mailbox
                .delivering
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if mailbox
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed
            {
                return;
            }
            match target {
                Target::Docs(o) => {
                    for (doc, kind) in batch.docs {
                        if let Err(e) = o.on_document_changed(doc.to_string(), kind.map(Into::into))
                        {
                            tracing::debug!(error = %e, "document observer failed");
                        }
                    }
                }
                Target::Sync(o) => {
                    let status = core.upgrade().map(|c| c.status());
                    match status {
                        Some(Ok(status)) => {
                            if let Err(e) = o.on_sync_status((&status).into()) {
                                tracing::debug!(error = %e, "sync observer failed");
                            }
                        }
                        Some(Err(e)) => tracing::debug!(error = %e, "sync status unreadable"),
                        None => return,
                    }
                }
            }
        }
        std::thread::sleep(OBSERVER_INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// The core's side of an observer: posts into its mailbox.
struct Poster(Arc<Mailbox>);

impl Drop for Poster {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl DocListener for Poster {
    fn changed(&self, doc: DocumentId, kind: Option<DocKind>) {
        self.0.post(|inbox| {
            if let Some(seen) = inbox.docs.iter_mut().find(|(d, _)| *d == doc) {
                seen.1 = kind;
            } else {
                inbox.docs.push((doc, kind));
            }
        });
    }
}

impl SyncListener for Poster {
    fn changed(&self) {
        self.0.post(|inbox| inbox.status = true);
    }
}

/// Returned by `observe_*`: call `cancel()` to stop the callbacks.
#[derive(uniffi::Object)]
pub struct ObserverHandle {
    core: Weak<Core>,
    id: u64,
    mailbox: Arc<Mailbox>,
}

#[uniffi::export]
impl ObserverHandle {
    /// Stops the callbacks (idempotent). Once it returns, no callback of this observer
    /// runs or starts (called from inside the observer's own callback, the running one
    /// finishes and no other starts).
    pub fn cancel(&self) {
        if let Some(core) = self.core.upgrade() {
            core.remove_listener(self.id);
        }
        self.mailbox.close();
        if self.mailbox.thread.get() != Some(&std::thread::current().id()) {
            drop(
                self.mailbox
                    .delivering
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// Quiet time after the last edit before housekeeping (compaction) runs.
const IDLE_BEFORE_MAINTENANCE_MS: i64 = 2_000;

/// Runs [`Core::maintain`] when no edit came for a while, until the client is released.
/// It holds the store's lock only while it works, on the library's runtime, never on a
/// caller's thread.
async fn maintenance(core: Weak<Core>) {
    let period = std::time::Duration::from_millis(1_000);
    let mut last_done = i64::MIN;
    loop {
        tokio::time::sleep(period).await;
        let Some(core) = core.upgrade() else {
            return;
        };
        let last_edit = core.last_edit_ms();
        let quiet = crate::client::core::now_ms().saturating_sub(last_edit);
        if last_edit == 0 || last_edit == last_done || quiet < IDLE_BEFORE_MAINTENANCE_MS {
            continue;
        }
        last_done = last_edit;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = core.maintain() {
                tracing::debug!(error = %e, "maintenance skipped");
            }
        })
        .await;
    }
}

struct Background {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// One install of the app: its local store, identity and sync.
#[derive(uniffi::Object)]
pub struct KepuClient {
    core: Arc<Core>,
    background: Mutex<Option<Background>>,
}

impl std::fmt::Debug for KepuClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KepuClient").finish_non_exhaustive()
    }
}

impl KepuClient {
    /// The core (Rust tests and benchmarks).
    #[must_use]
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

#[uniffi::export]
impl KepuClient {
    /// Opens (creating or upgrading) the store in `dir`, for the server at `server_url`
    /// (`https://host`). `server_public_key` (base64url, 43 characters) verifies gate
    /// codes and pupil passes offline; without it the key stored at enrollment is used.
    ///
    /// # Errors
    /// The store cannot be opened, or the key is malformed.
    #[uniffi::constructor(default(server_public_key = None))]
    pub fn open(
        dir: String,
        server_url: String,
        server_public_key: Option<String>,
    ) -> ApiResult<Arc<Self>> {
        let core = Arc::new(Core::open(
            std::path::Path::new(&dir),
            &server_url,
            server_public_key.as_deref(),
        )?);
        runtime()?.spawn(maintenance(Arc::downgrade(&core)));
        Ok(Arc::new(Self {
            core,
            background: Mutex::new(None),
        }))
    }

    /// Enrolls this install with the one-time code scanned from a QR (online, once).
    ///
    /// # Errors
    /// `Network`, or `Rejected { reason: "invalid_enrollment_code" }`.
    pub async fn enroll(&self, code: String) -> ApiResult<Identity> {
        let core = Arc::clone(&self.core);
        let identity = runtime()?
            .spawn(async move { core.enroll(&code).await })
            .await
            .map_err(|_| ApiError::Other {
                reason: "enrollment was interrupted".into(),
            })??;
        Ok(identity.into())
    }

    /// Reconnects this install with the reconnect code an administrator made for it on
    /// the fleet page, after its token was rotated (syncs then fail with `Auth`): the same
    /// device, a new token, and everything on the phone, unsynced work included, stays
    /// and syncs. Online, once per code.
    ///
    /// # Errors
    /// `NotEnrolled`, `Network`, or `Rejected { reason: "invalid_enrollment_code" }` (not
    /// a live code of this device; nothing changes).
    pub async fn reconnect(&self, code: String) -> ApiResult<Identity> {
        let core = Arc::clone(&self.core);
        let identity = runtime()?
            .spawn(async move { core.reenroll(&code).await })
            .await
            .map_err(|_| ApiError::Other {
                reason: "reconnection was interrupted".into(),
            })??;
        Ok(identity.into())
    }

    /// Sets the app version this install reports at enrollment and at every sync (the
    /// app's own version; call it at each start, before syncing). Below the minimum the
    /// server set for the device's role, syncs fail with `Auth { reason: "app-too-old" }`
    /// and every document and unsynced change stays on the phone until the app is updated.
    ///
    /// # Errors
    /// `InvalidInput` for an empty or overlong version.
    pub fn set_app_version(&self, version: String) -> ApiResult<()> {
        Ok(self.core.set_app_version(&version)?)
    }

    /// Signs the user out so that another can enroll on this install (switch user): the
    /// store is emptied (identity, token, documents) — but only once the server holds
    /// every change made here. With unsynced work it refuses and touches nothing: sync
    /// first (`sync_now`), then sign out. Stops background sync. Async: emptying the
    /// file (and overwriting its freed pages) runs on the library's threads.
    ///
    /// # Errors
    /// `UnsyncedWork { pending }` (nothing touched), `NotEnrolled`, `Storage`.
    pub async fn sign_out(&self) -> ApiResult<()> {
        let core = Arc::clone(&self.core);
        let pending = runtime()?
            .spawn_blocking(move || core.status().map(|s| s.pending_changes))
            .await
            .map_err(|_| ApiError::Other {
                reason: "sign-out was interrupted".into(),
            })??;
        if pending > 0 {
            return Err(ApiError::UnsyncedWork { pending });
        }
        self.stop_background_sync();
        let core = Arc::clone(&self.core);
        Ok(runtime()?
            .spawn_blocking(move || core.sign_out())
            .await
            .map_err(|_| ApiError::Other {
                reason: "sign-out was interrupted".into(),
            })??)
    }

    /// Who this device is, if enrolled.
    pub fn identity(&self) -> Option<Identity> {
        self.core.identity().ok().flatten().map(Into::into)
    }

    /// Documents this device holds (and those asked for, with no kind yet).
    ///
    /// # Errors
    /// Not enrolled, storage.
    pub fn documents(&self) -> ApiResult<Vec<DocumentInfo>> {
        Ok(self
            .core
            .documents()?
            .into_iter()
            .map(|(d, k)| DocumentInfo {
                doc_id: d.to_string(),
                kind: k.map(Into::into),
            })
            .collect())
    }

    /// Asks for a document shared with this device (a booking from a QR); fetched on the
    /// next sync.
    ///
    /// # Errors
    /// Malformed id, not enrolled.
    pub fn add_document(&self, doc_id: String) -> ApiResult<()> {
        Ok(self.core.want(parse_doc(&doc_id)?)?)
    }

    /// Pupil: check in by scanning the venue gate's rotating code (verified offline).
    ///
    /// # Errors
    /// `InvalidInput` for a forged, expired or other venue's code.
    pub fn check_in_with_gate_code(
        &self,
        booking_doc: String,
        code: String,
    ) -> ApiResult<CheckInReceipt> {
        let doc = parse_doc(&booking_doc)?;
        Ok(self.core.check_in_with_gate_code(doc, &code)?.into())
    }

    /// Check a pupil out (a pupil's device: themselves; others name `pupil_id`).
    ///
    /// # Errors
    /// Booking not held, bad pupil id.
    #[uniffi::method(default(pupil_id = None))]
    pub fn check_out(
        &self,
        booking_doc: String,
        pupil_id: Option<String>,
    ) -> ApiResult<CheckInReceipt> {
        let doc = parse_doc(&booking_doc)?;
        Ok(self.core.check_out(doc, pupil_id.as_deref())?.into())
    }

    /// Pupil: own visits.
    ///
    /// # Errors
    /// Not a pupil's device.
    pub fn my_visits(&self) -> ApiResult<Vec<Visit>> {
        let me = self.core.require_identity()?;
        Ok(self
            .core
            .my_visits()?
            .into_iter()
            .map(|(doc, b)| {
                let a = kepu_sync_core::rules::attendance::attendance(&b, None);
                let row = a.pupils.iter().find(|p| Some(p.pupil) == me.pupil);
                Visit {
                    booking: booking_record(&doc, &b),
                    checked_in_at_ms: row.and_then(|r| r.counted.as_ref().map(|s| s.at)),
                    checked_out_at_ms: row.and_then(|r| r.last_check_out.as_ref().map(|s| s.at)),
                }
            })
            .collect())
    }

    /// Teacher or gate: scan a pupil's pass (verified offline) and check them in.
    ///
    /// # Errors
    /// `InvalidInput` for a forged, expired or revoked pass.
    pub fn scan_pupil_pass(
        &self,
        booking_doc: String,
        pass_code: String,
    ) -> ApiResult<CheckInReceipt> {
        let doc = parse_doc(&booking_doc)?;
        Ok(self.core.scan_pupil_pass(doc, &pass_code)?.into())
    }

    /// Who is in, who is missing, who left.
    ///
    /// # Errors
    /// Booking not held.
    pub fn roster(&self, booking_doc: String) -> ApiResult<Roster> {
        let doc = parse_doc(&booking_doc)?;
        let (b, a) = self.core.roster(&doc)?;
        Ok(roster_record(&doc, &b, &a))
    }

    /// A booking held on this device.
    ///
    /// # Errors
    /// Booking not held.
    pub fn booking(&self, booking_doc: String) -> ApiResult<BookingInfo> {
        let doc = parse_doc(&booking_doc)?;
        Ok(booking_record(&doc, &self.core.booking(&doc)?))
    }

    /// Teacher: ask for places on a slot (offline is fine). Returns the new booking
    /// document; its status is `requested` until the server decides.
    ///
    /// # Errors
    /// Bad ids, not a teacher.
    pub fn request_booking(
        &self,
        venue_id: String,
        slot_id: String,
        party_size: u32,
        roster: Vec<String>,
    ) -> ApiResult<String> {
        Ok(self
            .core
            .request_booking(&venue_id, &slot_id, party_size, &roster)?
            .to_string())
    }

    /// Venue staff: publish a bookable slot (unix ms, places, label) in the venue's
    /// document once it has synced here; returns the slot id.
    ///
    /// # Errors
    /// `InvalidInput`: not venue staff, venue document not synced yet, bad range.
    pub fn publish_slot(
        &self,
        start_ms: i64,
        end_ms: i64,
        capacity: u32,
        label: String,
    ) -> ApiResult<String> {
        Ok(self
            .core
            .publish_slot(start_ms, end_ms, capacity, &label)?
            .to_string())
    }

    /// Gate (venue staff device): certify a fresh day key with the server (online, once a
    /// day, for today's UTC day and the coming one); afterwards [`KepuClient::gate_code`]
    /// works offline until the returned time (unix ms: the later certificate's expiry).
    ///
    /// # Errors
    /// `InvalidInput` (not venue staff), `Network`, `Rejected`.
    pub async fn certify_gate_day(&self) -> ApiResult<i64> {
        let core = Arc::clone(&self.core);
        Ok(runtime()?
            .spawn(async move { core.certify_gate_day().await })
            .await
            .map_err(|_| ApiError::Other {
                reason: "gate certification was interrupted".into(),
            })??)
    }

    /// Gate: the rotating code to show now (a QR), made offline; changes every 30 s.
    ///
    /// # Errors
    /// `InvalidInput` when there is no certificate for today.
    pub fn gate_code(&self) -> ApiResult<String> {
        Ok(self.core.gate_code()?)
    }

    /// A pupil's current pass (online): `pupil_id` `None` is this pupil device's own; a
    /// teacher names a pupil of the school.
    ///
    /// # Errors
    /// `Network`, `Rejected` (not allowed), `InvalidInput` (malformed id).
    #[uniffi::method(default(pupil_id = None))]
    pub async fn fetch_pupil_pass(&self, pupil_id: Option<String>) -> ApiResult<String> {
        let core = Arc::clone(&self.core);
        Ok(runtime()?
            .spawn(async move { core.fetch_pupil_pass(pupil_id.as_deref()).await })
            .await
            .map_err(|_| ApiError::Other {
                reason: "fetching the pass was interrupted".into(),
            })??)
    }

    /// Volunteer: log an activity; returns its id.
    ///
    /// # Errors
    /// Not a volunteer, bad venue id, out-of-range minutes.
    pub fn log_activity(
        &self,
        venue_id: String,
        activity_kind: String,
        start_ms: i64,
        minutes: u32,
        description: String,
    ) -> ApiResult<String> {
        Ok(self
            .core
            .log_activity(&venue_id, &activity_kind, start_ms, minutes, &description)?)
    }

    /// Volunteer: the id of their activity log document (share it with venue staff).
    ///
    /// # Errors
    /// Not a volunteer.
    pub fn activity_log_doc(&self) -> ApiResult<String> {
        Ok(self.core.own_activity_log()?.to_string())
    }

    /// Venue staff: confirm (or decline) an activity, optionally with fewer minutes.
    ///
    /// # Errors
    /// Log not held, another venue's activity.
    #[uniffi::method(default(minutes = None))]
    pub fn confirm_activity(
        &self,
        log_doc: String,
        activity_id: String,
        approved: bool,
        minutes: Option<u32>,
    ) -> ApiResult<()> {
        let doc = parse_doc(&log_doc)?;
        Ok(self
            .core
            .confirm_activity(doc, &activity_id, approved, minutes)?)
    }

    /// A volunteer's minutes (their own log when `log_doc` is `None`).
    ///
    /// # Errors
    /// Log not held.
    #[uniffi::method(default(log_doc = None))]
    pub fn volunteer_minutes(&self, log_doc: Option<String>) -> ApiResult<VolunteerMinutes> {
        let doc = log_doc.as_deref().map(parse_doc).transpose()?;
        let (_, m) = self.core.volunteer_minutes(doc)?;
        Ok(VolunteerMinutes {
            confirmed: m.confirmed,
            unconfirmed: m.unconfirmed,
            declined: m.declined,
            activities: count(m.activities),
        })
    }

    /// The school log of a school (the teacher's own when `school_id` is `None`) for a
    /// year (this year when `None`); the next sync fetches it if it is not here yet.
    ///
    /// # Errors
    /// Malformed id, no school, not enrolled.
    #[uniffi::method(default(school_id = None, year = None))]
    pub fn school_log_doc(
        &self,
        school_id: Option<String>,
        year: Option<i64>,
    ) -> ApiResult<String> {
        Ok(self
            .core
            .school_log_doc(school_id.as_deref(), year)?
            .to_string())
    }

    /// Teacher: log an in-school science session held at `at_ms`; returns its id.
    ///
    /// # Errors
    /// Not a teacher, bad topic or minutes, the year's log not synced to this phone yet.
    pub fn log_science_session(
        &self,
        topic: String,
        minutes: u32,
        at_ms: i64,
    ) -> ApiResult<String> {
        Ok(self.core.log_science_session(&topic, minutes, at_ms)?)
    }

    /// Teacher: log an expert lecture held at `at_ms`; returns its id.
    ///
    /// # Errors
    /// As `log_science_session`.
    pub fn log_expert_lecture(&self, topic: String, minutes: u32, at_ms: i64) -> ApiResult<String> {
        Ok(self.core.log_expert_lecture(&topic, minutes, at_ms)?)
    }

    /// Teacher or tour staff: add a mobile-museum tour stop at a school; returns its id.
    ///
    /// # Errors
    /// Wrong role, bad location or days, the log not synced to this device yet.
    #[uniffi::method(default(school_id = None))]
    pub fn add_tour_stop(
        &self,
        location: String,
        days: u32,
        at_ms: i64,
        school_id: Option<String>,
    ) -> ApiResult<String> {
        Ok(self
            .core
            .add_tour_stop(school_id.as_deref(), &location, days, at_ms)?)
    }

    /// Teacher or tour staff: a pupil's pass was scanned at a tour stop (verified offline).
    /// Returns true if the pupil was already recorded there.
    ///
    /// # Errors
    /// Forged, expired or revoked pass, another school's pupil, unknown stop.
    #[uniffi::method(default(school_id = None))]
    pub fn record_tour_attendance(
        &self,
        stop_id: String,
        pass: String,
        school_id: Option<String>,
    ) -> ApiResult<bool> {
        Ok(self
            .core
            .record_tour_attendance(school_id.as_deref(), &stop_id, &pass)?)
    }

    /// A school's year on this device: sessions, weeks with a session, lectures, tour
    /// stops, pupils reached.
    ///
    /// # Errors
    /// Malformed id; the log not synced to this device yet.
    #[uniffi::method(default(school_id = None, year = None))]
    pub fn school_year(
        &self,
        school_id: Option<String>,
        year: Option<i64>,
    ) -> ApiResult<SchoolYearInfo> {
        let y = self.core.school_year(school_id.as_deref(), year)?;
        Ok(SchoolYearInfo {
            doc_id: y.doc.to_string(),
            year: y.year,
            sessions: y.sessions,
            weeks_with_session: y.weeks_with_session,
            weeks_so_far: y.weeks_so_far,
            lectures: y.lectures,
            tour_stops: y.tour_stops,
            pupils_reached: y.pupils_reached,
        })
    }

    /// Connects, syncs every document, and returns once they are in sync. Cancelling
    /// the call (a cancelled coroutine, a cancelled Swift task) stops the sync: the
    /// connection closes within moments; what was already exchanged is kept.
    ///
    /// # Errors
    /// `Offline`, `Auth`, `AppTooOld`, or `Revoked` (the store was wiped).
    pub async fn sync_now(&self) -> ApiResult<SyncReport> {
        /// Stops the sync when the caller's future is dropped (cancelled).
        struct StopOnDrop(watch::Sender<bool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                let _ = self.0.send(true);
            }
        }
        let core = Arc::clone(&self.core);
        let (stop, stopped) = watch::channel(false);
        let _stop_on_drop = StopOnDrop(stop);
        let result = runtime()?
            .spawn(async move {
                let r = net::connect_and_sync(&core, Until::Synced, Some(stopped)).await;
                if let Err(e) = &r {
                    core.set_error(Some(e.to_string()));
                }
                r
            })
            .await
            .map_err(|_| ApiError::Other {
                reason: "sync was interrupted".into(),
            })??;
        Ok(SyncReport {
            synced: result.synced,
            unavailable: result.unavailable,
            refused: result.refused,
        })
    }

    /// Keeps a connection open while the network allows, reconnecting with backoff.
    ///
    /// # Errors
    /// The runtime could not start.
    pub fn start_background_sync(&self) -> ApiResult<()> {
        let mut bg = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if bg.as_ref().is_some_and(|b| !b.task.is_finished()) {
            return Ok(());
        }
        let (stop, rx) = watch::channel(false);
        let task = runtime()?.spawn(net::background(Arc::clone(&self.core), rx));
        *bg = Some(Background { stop, task });
        Ok(())
    }

    /// Stops background sync (the open connection closes cleanly).
    pub fn stop_background_sync(&self) {
        let bg = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(bg) = bg {
            let _ = bg.stop.send(true);
            if let Ok(rt) = runtime() {
                let task = bg.task;
                rt.spawn(async move {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
                });
            }
        }
    }

    /// Pending changes, last successful sync, refusals with reasons.
    ///
    /// # Errors
    /// Storage.
    pub fn sync_status(&self) -> ApiResult<SyncStatus> {
        Ok((&self.core.status()?).into())
    }

    /// Calls `observer` with every document this device holds (the initial value), then
    /// whenever a document changes (a local edit or changes from the server; `kind`
    /// `None` when it was dropped). Calls come on the observer's own thread, never the
    /// caller's, at most every 50 ms: what changed in between is coalesced (each
    /// document once).
    ///
    /// # Errors
    /// The delivery thread could not start.
    pub fn observe_documents(
        &self,
        observer: Arc<dyn DocumentObserver>,
    ) -> ApiResult<Arc<ObserverHandle>> {
        let initial = self.core.documents().unwrap_or_default();
        self.observe(
            Inbox {
                docs: initial,
                ..Inbox::default()
            },
            Target::Docs(observer),
        )
    }

    /// Calls `observer` with the current sync status (the initial value), then whenever
    /// it may have changed. Calls come on the observer's own thread, never the caller's,
    /// at most every 50 ms, each with the status as it is then (coalesced).
    ///
    /// # Errors
    /// The delivery thread could not start.
    pub fn observe_sync(&self, observer: Arc<dyn SyncObserver>) -> ApiResult<Arc<ObserverHandle>> {
        self.observe(
            Inbox {
                status: true,
                ..Inbox::default()
            },
            Target::Sync(observer),
        )
    }
}

impl KepuClient {
    fn observe(&self, initial: Inbox, target: Target) -> ApiResult<Arc<ObserverHandle>> {
        let mailbox = Mailbox::new(initial);
        let poster = Arc::new(Poster(Arc::clone(&mailbox)));
        let id = match target {
            Target::Docs(_) => self.core.add_doc_listener(poster),
            Target::Sync(_) => self.core.add_sync_listener(poster),
        };
        let core = Arc::downgrade(&self.core);
        let (m, c) = (Arc::clone(&mailbox), core.clone());
        let started = std::thread::Builder::new()
            .name("kepu-observer".into())
            .spawn(move || deliver(&m, &c, &target));
        if let Err(e) = started {
            self.core.remove_listener(id);
            return Err(ApiError::Other {
                reason: format!("cannot start the observer's thread: {e}"),
            });
        }
        Ok(Arc::new(ObserverHandle { core, id, mailbox }))
    }
}

impl Drop for KepuClient {
    fn drop(&mut self) {
        self.stop_background_sync();
    }
}
