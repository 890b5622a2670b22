//! Typed edits: every write a kepu device or the server makes, as data. An edit is one
//! automerge transaction; [`apply`] writes it following the merge-safety rules of
//! `docs/conflict-rules.md`. Ids inside edits (scan ids, entry ids) are chosen by the
//! caller (UUID v7 from the device's clock and randomness).

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::ids::{DeviceId, PupilId, SchoolId, SlotId, UserId, VenueId};
use crate::schema::booking::{self, ScanMethod, Status};
use crate::schema::{self, DocKind, activity_log, revocations, school_log, venue};
use crate::writer::Writer;

/// An edit of one document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum Edit {
    /// Create a venue document's skeleton.
    CreateVenue {
        /// Venue id.
        venue: VenueId,
    },
    /// Create a booking request (a teacher, usually offline).
    CreateBooking {
        /// Venue.
        venue: VenueId,
        /// Slot.
        slot: SlotId,
        /// School.
        school: SchoolId,
        /// Places.
        party_size: u32,
        /// Pupils on the trip roster.
        roster: Vec<PupilId>,
    },
    /// Create a volunteer's activity log.
    CreateActivityLog {
        /// The volunteer.
        volunteer: UserId,
        /// Their school.
        school: Option<SchoolId>,
    },
    /// Create a school's log for a year.
    CreateSchoolLog {
        /// School.
        school: SchoolId,
        /// Year.
        year: i64,
    },
    /// Create the revocation list (server).
    CreateRevocations,
    /// Add pupils to a booking's roster.
    AddToRoster {
        /// Pupils.
        pupils: Vec<PupilId>,
    },
    /// Remove a pupil from a roster.
    RemoveFromRoster {
        /// Pupil.
        pupil: PupilId,
    },
    /// Record a check-in scan by this device.
    CheckIn {
        /// Pupil scanned.
        pupil: PupilId,
        /// Scan id.
        scan_id: String,
        /// How.
        method: ScanMethod,
        /// Encoded proof.
        proof: Option<String>,
    },
    /// Record a check-out scan by this device.
    CheckOut {
        /// Pupil scanned.
        pupil: PupilId,
        /// Scan id.
        scan_id: String,
        /// How.
        method: ScanMethod,
    },
    /// Add a note to a booking.
    AddNote {
        /// Note id.
        note_id: String,
        /// One of [`booking::NOTE_CODES`]: notes are read by every pupil on the roster,
        /// so they hold no free text that could carry a name (ADR 0110).
        text: String,
    },
    /// Cancel a booking (teacher or venue).
    CancelBooking,
    /// The server's capacity decision.
    Decide {
        /// Confirmed or wait-listed.
        status: Status,
        /// Position on the wait list.
        wait_position: Option<u32>,
    },
    /// Set the guide label (schema 2).
    SetGuide {
        /// Label.
        guide: String,
    },
    /// Edit venue profile fields for the directory.
    SetProfile {
        /// Text fields (`name`, `address`, `phone`, …).
        fields: BTreeMap<String, String>,
        /// Latitude, longitude.
        location: Option<(f64, f64)>,
        /// Opening hours aligned with after-school time (schema 2).
        after_school: Option<bool>,
    },
    /// Create or update a slot.
    PutSlot {
        /// Slot id.
        slot: SlotId,
        /// Start, unix ms.
        start: i64,
        /// End, unix ms.
        end: i64,
        /// Places.
        capacity: u32,
        /// Label.
        label: String,
    },
    /// Register a gate device's public key.
    PutGate {
        /// Gate device.
        device: DeviceId,
        /// Base64 public key.
        key: String,
    },
    /// Register a bookable instrument.
    PutInstrument {
        /// Id.
        id: String,
        /// Name.
        name: String,
        /// Value in yuan.
        value_yuan: i64,
        /// Open to reservation.
        bookable: bool,
    },
    /// A volunteer logs an activity.
    LogActivity {
        /// Activity id.
        activity_id: String,
        /// Venue.
        venue: VenueId,
        /// Kind of activity.
        activity_kind: String,
        /// Start, unix ms.
        start: i64,
        /// Minutes.
        minutes: u32,
        /// Description.
        description: String,
    },
    /// Venue staff confirm (or decline) an activity.
    ConfirmActivity {
        /// Activity id.
        activity_id: String,
        /// Approved.
        approved: bool,
        /// Minutes confirmed, if fewer than claimed.
        minutes: Option<u32>,
    },
    /// A teacher logs an in-school science session.
    LogSession {
        /// Entry id.
        id: String,
        /// When.
        at: i64,
        /// Topic.
        topic: String,
        /// Minutes.
        minutes: u32,
    },
    /// A teacher logs an expert lecture.
    LogLecture {
        /// Entry id.
        id: String,
        /// When.
        at: i64,
        /// Topic.
        topic: String,
        /// Minutes.
        minutes: u32,
    },
    /// A mobile-museum tour stop at the school.
    AddTourStop {
        /// Entry id.
        id: String,
        /// When.
        at: i64,
        /// Location.
        location: String,
        /// Days.
        days: u32,
    },
    /// A pupil attended a tour stop (recorded by this device).
    TourAttendance {
        /// Tour stop id.
        stop: String,
        /// Pupil.
        pupil: PupilId,
    },
    /// Revoke a pupil pass (server).
    RevokePass {
        /// Pupil.
        pupil: PupilId,
        /// Pass serial.
        serial: u32,
    },
}

/// Why an edit could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The edit does not apply to this kind of document.
    #[error("edit {edit} does not apply to a {kind} document")]
    WrongKind {
        /// Edit name.
        edit: &'static str,
        /// Document kind (or "empty").
        kind: &'static str,
    },
    /// A creation edit on a document that already has content.
    #[error("document already exists")]
    AlreadyExists,
    /// Validation refused the edit (the device would be refused by the server).
    #[error("refused: {0}")]
    Refused(crate::validate::Refusal),
    /// Automerge failed.
    #[error("document error: {0}")]
    Automerge(String),
}

impl Edit {
    /// The edit's name, for errors and logs.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::CreateVenue { .. } => "create_venue",
            Self::CreateBooking { .. } => "create_booking",
            Self::CreateActivityLog { .. } => "create_activity_log",
            Self::CreateSchoolLog { .. } => "create_school_log",
            Self::CreateRevocations => "create_revocations",
            Self::AddToRoster { .. } => "add_to_roster",
            Self::RemoveFromRoster { .. } => "remove_from_roster",
            Self::CheckIn { .. } => "check_in",
            Self::CheckOut { .. } => "check_out",
            Self::AddNote { .. } => "add_note",
            Self::CancelBooking => "cancel_booking",
            Self::Decide { .. } => "decide",
            Self::SetGuide { .. } => "set_guide",
            Self::SetProfile { .. } => "set_profile",
            Self::PutSlot { .. } => "put_slot",
            Self::PutGate { .. } => "put_gate",
            Self::PutInstrument { .. } => "put_instrument",
            Self::LogActivity { .. } => "log_activity",
            Self::ConfirmActivity { .. } => "confirm_activity",
            Self::LogSession { .. } => "log_session",
            Self::LogLecture { .. } => "log_lecture",
            Self::AddTourStop { .. } => "add_tour_stop",
            Self::TourAttendance { .. } => "tour_attendance",
            Self::RevokePass { .. } => "revoke_pass",
        }
    }

    /// The document kind a creation edit creates.
    #[must_use]
    pub const fn creates(&self) -> Option<DocKind> {
        match self {
            Self::CreateVenue { .. } => Some(DocKind::Venue),
            Self::CreateBooking { .. } => Some(DocKind::Booking),
            Self::CreateActivityLog { .. } => Some(DocKind::ActivityLog),
            Self::CreateSchoolLog { .. } => Some(DocKind::SchoolLog),
            Self::CreateRevocations => Some(DocKind::Revocations),
            _ => None,
        }
    }

    const fn applies_to(&self) -> &'static [DocKind] {
        match self {
            Self::AddToRoster { .. }
            | Self::RemoveFromRoster { .. }
            | Self::CheckIn { .. }
            | Self::CheckOut { .. }
            | Self::AddNote { .. }
            | Self::CancelBooking
            | Self::Decide { .. }
            | Self::SetGuide { .. } => &[DocKind::Booking],
            Self::SetProfile { .. }
            | Self::PutSlot { .. }
            | Self::PutGate { .. }
            | Self::PutInstrument { .. } => &[DocKind::Venue],
            Self::LogActivity { .. } | Self::ConfirmActivity { .. } => &[DocKind::ActivityLog],
            Self::LogSession { .. }
            | Self::LogLecture { .. }
            | Self::AddTourStop { .. }
            | Self::TourAttendance { .. } => &[DocKind::SchoolLog],
            Self::RevokePass { .. } => &[DocKind::Revocations],
            _ => &[],
        }
    }
}

type TxResult = Result<(), automerge::AutomergeError>;

fn ts(at: i64) -> ScalarValue {
    ScalarValue::Timestamp(at)
}

fn ensure_map<T: Transactable>(
    tx: &mut T,
    parent: &ObjId,
    key: &str,
) -> Result<ObjId, automerge::AutomergeError> {
    if let Some(id) = crate::doc_read::map(tx, parent, key) {
        return Ok(id);
    }
    tx.put_object(parent, key, ObjType::Map)
}

fn root_map(tx: &impl Transactable, key: &str) -> Result<ObjId, automerge::AutomergeError> {
    crate::doc_read::map(tx, &ROOT, key)
        .ok_or_else(|| automerge::AutomergeError::InvalidObjId(key.to_owned()))
}

fn skeleton<T: Transactable>(
    tx: &mut T,
    kind: DocKind,
    containers: &[&str],
    schema_version: i64,
) -> TxResult {
    tx.put(ROOT, schema::KIND, kind.as_str())?;
    tx.put(ROOT, schema::SCHEMA, schema_version)?;
    for c in containers {
        tx.put_object(ROOT, *c, ObjType::Map)?;
    }
    Ok(())
}

#[allow(clippy::too_many_lines)]
fn write<T: Transactable>(
    tx: &mut T,
    writer: &Writer,
    now: i64,
    edit: &Edit,
    schema_version: i64,
) -> TxResult {
    let dev = writer.device.to_string();
    let by = writer.user.to_string();
    match edit {
        Edit::CreateVenue { venue } => {
            skeleton(
                tx,
                DocKind::Venue,
                &[
                    venue::key::PROFILE,
                    venue::key::INSTRUMENTS,
                    venue::key::SLOTS,
                    venue::key::GATES,
                ],
                schema_version,
            )?;
            tx.put(ROOT, venue::key::VENUE, venue.to_string())?;
        }
        Edit::CreateBooking {
            venue,
            slot,
            school,
            party_size,
            roster,
        } => {
            use booking::key;
            // Schema 3 adds a container per kind of scan keyed by device (ADR 0203),
            // schema 4 one of scans kept as one value each (ADR 0205).
            let containers: &[&str] = if schema_version >= 4 {
                &[
                    key::ROSTER,
                    key::CHECK_INS,
                    key::CHECK_OUTS,
                    key::CHECK_INS_BY_DEVICE,
                    key::CHECK_OUTS_BY_DEVICE,
                    key::CHECK_IN_RECORDS,
                    key::CHECK_OUT_RECORDS,
                    key::NOTES,
                ]
            } else if schema_version >= 3 {
                &[
                    key::ROSTER,
                    key::CHECK_INS,
                    key::CHECK_OUTS,
                    key::CHECK_INS_BY_DEVICE,
                    key::CHECK_OUTS_BY_DEVICE,
                    key::NOTES,
                ]
            } else {
                &[key::ROSTER, key::CHECK_INS, key::CHECK_OUTS, key::NOTES]
            };
            skeleton(tx, DocKind::Booking, containers, schema_version)?;
            tx.put(ROOT, key::VENUE, venue.to_string())?;
            tx.put(ROOT, key::SLOT, slot.to_string())?;
            tx.put(ROOT, key::SCHOOL, school.to_string())?;
            tx.put(ROOT, key::PARTY_SIZE, i64::from(*party_size))?;
            tx.put(ROOT, key::REQUESTED_BY, by)?;
            tx.put(ROOT, key::REQUESTED_AT, ts(now))?;
            let r = root_map(tx, key::ROSTER)?;
            for p in roster {
                tx.put(&r, p.to_string(), ts(now))?;
            }
        }
        Edit::CreateActivityLog { volunteer, school } => {
            skeleton(
                tx,
                DocKind::ActivityLog,
                &[
                    activity_log::key::ACTIVITIES,
                    activity_log::key::CONFIRMATIONS,
                ],
                schema_version,
            )?;
            tx.put(ROOT, activity_log::key::VOLUNTEER, volunteer.to_string())?;
            if let Some(s) = school {
                tx.put(ROOT, activity_log::key::SCHOOL, s.to_string())?;
            }
        }
        Edit::CreateSchoolLog { school, year } => {
            use school_log::key;
            skeleton(
                tx,
                DocKind::SchoolLog,
                &[
                    key::SESSIONS,
                    key::LECTURES,
                    key::TOUR_STOPS,
                    key::TOUR_ATTENDANCE,
                ],
                schema_version,
            )?;
            tx.put(ROOT, key::SCHOOL, school.to_string())?;
            tx.put(ROOT, key::YEAR, *year)?;
        }
        Edit::CreateRevocations => skeleton(
            tx,
            DocKind::Revocations,
            &[revocations::PASSES],
            schema_version,
        )?,
        Edit::AddToRoster { pupils } => {
            let r = root_map(tx, booking::key::ROSTER)?;
            for p in pupils {
                tx.put(&r, p.to_string(), ts(now))?;
            }
        }
        Edit::RemoveFromRoster { pupil } => {
            let r = root_map(tx, booking::key::ROSTER)?;
            tx.delete(&r, pupil.to_string())?;
        }
        Edit::CheckIn {
            pupil,
            scan_id,
            method,
            proof,
        } => {
            write_scan(
                tx,
                (writer, schema_version),
                now,
                booking::key::CHECK_INS,
                *pupil,
                scan_id,
                *method,
                proof.as_deref(),
            )?;
        }
        Edit::CheckOut {
            pupil,
            scan_id,
            method,
        } => {
            write_scan(
                tx,
                (writer, schema_version),
                now,
                booking::key::CHECK_OUTS,
                *pupil,
                scan_id,
                *method,
                None,
            )?;
        }
        Edit::AddNote { note_id, text } => {
            let n = root_map(tx, booking::key::NOTES)?;
            let rec = tx.put_object(&n, note_id.as_str(), ObjType::Map)?;
            tx.put(&rec, "at", ts(now))?;
            tx.put(&rec, "by", by)?;
            tx.put(&rec, "role", writer.role.as_str())?;
            tx.put(&rec, "text", text.as_str())?;
        }
        Edit::CancelBooking => {
            tx.put(ROOT, booking::key::CANCELLED_AT, ts(now))?;
            tx.put(ROOT, booking::key::CANCELLED_BY, by)?;
        }
        Edit::Decide {
            status,
            wait_position,
        } => {
            tx.put(ROOT, booking::key::STATUS, status.as_str())?;
            tx.put(ROOT, booking::key::DECIDED_AT, ts(now))?;
            match wait_position {
                Some(p) => tx.put(ROOT, booking::key::WAIT_POSITION, i64::from(*p))?,
                None => {
                    if crate::doc_read::scalar(tx, &ROOT, booking::key::WAIT_POSITION).is_some() {
                        tx.delete(ROOT, booking::key::WAIT_POSITION)?;
                    }
                }
            }
        }
        Edit::SetGuide { guide } => tx.put(ROOT, booking::key::GUIDE, guide.as_str())?,
        Edit::SetProfile {
            fields,
            location,
            after_school,
        } => {
            let p = root_map(tx, venue::key::PROFILE)?;
            for (k, v) in fields {
                tx.put(&p, k.as_str(), v.as_str())?;
            }
            if let Some((lat, lon)) = location {
                tx.put(&p, "lat", *lat)?;
                tx.put(&p, "lon", *lon)?;
            }
            if let Some(a) = after_school {
                tx.put(&p, "after_school", *a)?;
            }
            tx.put(&p, "updated_at", ts(now))?;
        }
        Edit::PutSlot {
            slot,
            start,
            end,
            capacity,
            label,
        } => {
            let s = root_map(tx, venue::key::SLOTS)?;
            let rec = ensure_map(tx, &s, &slot.to_string())?;
            tx.put(&rec, "start", ts(*start))?;
            tx.put(&rec, "end", ts(*end))?;
            tx.put(&rec, "capacity", i64::from(*capacity))?;
            tx.put(&rec, "label", label.as_str())?;
        }
        Edit::PutGate { device, key } => {
            let g = root_map(tx, venue::key::GATES)?;
            let rec = ensure_map(tx, &g, &device.to_string())?;
            tx.put(&rec, "key", key.as_str())?;
        }
        Edit::PutInstrument {
            id,
            name,
            value_yuan,
            bookable,
        } => {
            let i = root_map(tx, venue::key::INSTRUMENTS)?;
            let rec = ensure_map(tx, &i, id)?;
            tx.put(&rec, "name", name.as_str())?;
            tx.put(&rec, "value_yuan", *value_yuan)?;
            tx.put(&rec, "bookable", *bookable)?;
        }
        Edit::LogActivity {
            activity_id,
            venue,
            activity_kind,
            start,
            minutes,
            description,
        } => {
            let a = root_map(tx, activity_log::key::ACTIVITIES)?;
            let rec = tx.put_object(&a, activity_id.as_str(), ObjType::Map)?;
            tx.put(&rec, "venue", venue.to_string())?;
            tx.put(&rec, "activity_kind", activity_kind.as_str())?;
            tx.put(&rec, "start", ts(*start))?;
            tx.put(&rec, "minutes", i64::from(*minutes))?;
            tx.put(&rec, "description", description.as_str())?;
        }
        Edit::ConfirmActivity {
            activity_id,
            approved,
            minutes,
        } => {
            let c = root_map(tx, activity_log::key::CONFIRMATIONS)?;
            let rec = tx.put_object(
                &c,
                activity_log::confirmation_key(activity_id, writer.device),
                ObjType::Map,
            )?;
            tx.put(&rec, "at", ts(now))?;
            tx.put(&rec, "by", by)?;
            tx.put(&rec, "approved", *approved)?;
            // Approving without a figure approves the minutes claimed as this device sees
            // them now, written down, so a later claim is never approved by it.
            let seen = crate::doc_read::map(&*tx, &ROOT, activity_log::key::ACTIVITIES)
                .and_then(|acts| crate::doc_read::map(&*tx, &acts, activity_id))
                .and_then(|act| crate::doc_read::int(&*tx, &act, "minutes"));
            let minutes = minutes
                .map(i64::from)
                .or(if *approved { seen } else { None });
            if let Some(m) = minutes {
                tx.put(&rec, "minutes", m)?;
            }
        }
        Edit::LogSession {
            id,
            at,
            topic,
            minutes,
        }
        | Edit::LogLecture {
            id,
            at,
            topic,
            minutes,
        } => {
            let container = if matches!(edit, Edit::LogSession { .. }) {
                school_log::key::SESSIONS
            } else {
                school_log::key::LECTURES
            };
            let c = root_map(tx, container)?;
            let rec = tx.put_object(&c, id.as_str(), ObjType::Map)?;
            tx.put(&rec, "at", ts(*at))?;
            tx.put(&rec, "topic", topic.as_str())?;
            tx.put(&rec, "minutes", i64::from(*minutes))?;
            tx.put(&rec, "by", by)?;
        }
        Edit::AddTourStop {
            id,
            at,
            location,
            days,
        } => {
            let c = root_map(tx, school_log::key::TOUR_STOPS)?;
            let rec = tx.put_object(&c, id.as_str(), ObjType::Map)?;
            tx.put(&rec, "at", ts(*at))?;
            tx.put(&rec, "location", location.as_str())?;
            tx.put(&rec, "days", i64::from(*days))?;
            tx.put(&rec, "by", by)?;
        }
        Edit::TourAttendance { stop, pupil } => {
            let c = root_map(tx, school_log::key::TOUR_ATTENDANCE)?;
            tx.put(&c, format!("{stop}/{pupil}/{dev}"), ts(now))?;
        }
        Edit::RevokePass { pupil, serial } => {
            let c = root_map(tx, revocations::PASSES)?;
            tx.put(&c, format!("{pupil}/{serial}"), ts(now))?;
        }
    }
    Ok(())
}

/// Writes a scan by `writer`, an engine of `schema_version`, into the newest layout both
/// the booking and the engine know: one value in the device's map of records (schema 4,
/// ADR 0205), a record in the device's own map (schema 3, ADR 0203), else under
/// `"<pupil>/<device>"` in `container`, as every version writes.
#[allow(clippy::too_many_arguments)]
fn write_scan<T: Transactable>(
    tx: &mut T,
    (writer, schema_version): (&Writer, i64),
    now: i64,
    container: &str,
    pupil: PupilId,
    scan_id: &str,
    method: ScanMethod,
    proof: Option<&str>,
) -> TxResult {
    // A gate proof is stored bound to this pupil, device and time, so that a classmate
    // who reads the booking cannot reuse it (docs/proofs.md).
    let proof = proof.map(|p| {
        (method == ScanMethod::GateCode)
            .then(|| crate::proof::GateProof::decode(p).ok())
            .flatten()
            .and_then(|g| g.bind(pupil, writer.device, now))
            .map_or_else(|| p.to_owned(), |b| b.encode())
    });
    if let Some(records) = booking::records(container)
        .filter(|_| schema_version >= 4)
        .and_then(|c| crate::doc_read::map(tx, &ROOT, c))
    {
        let mine = ensure_map(tx, &records, &writer.device.to_string())?;
        let record = booking::ScanRecord {
            at: now,
            method,
            by: Some(writer.user.to_string()),
            proof,
        };
        tx.put(&mine, booking::record_key(pupil, scan_id), record.encode())?;
        return Ok(());
    }
    let per_device = match booking::by_device(container)
        .filter(|_| schema_version >= 3)
        .and_then(|c| crate::doc_read::map(tx, &ROOT, c))
    {
        Some(by_device) => {
            let mine = ensure_map(tx, &by_device, &writer.device.to_string())?;
            ensure_map(tx, &mine, &pupil.to_string())?
        }
        None => {
            let c = root_map(tx, container)?;
            ensure_map(tx, &c, &booking::scan_key(pupil, writer.device))?
        }
    };
    let rec = tx.put_object(&per_device, scan_id, ObjType::Map)?;
    tx.put(&rec, "at", ts(now))?;
    tx.put(&rec, "method", method.as_str())?;
    tx.put(&rec, "by", writer.user.to_string())?;
    if let Some(p) = proof {
        tx.put(&rec, "proof", p)?;
    }
    Ok(())
}

/// Checks that `edit` fits `doc`'s kind (or creates it on an empty document).
///
/// # Errors
/// [`EditError::WrongKind`] or [`EditError::AlreadyExists`].
pub fn check_applies(doc: &Automerge, edit: &Edit) -> Result<(), EditError> {
    let kind = schema::kind_of(doc);
    match (edit.creates(), kind) {
        (Some(_), None) if doc.get_heads().is_empty() || doc.keys(ROOT).next().is_none() => Ok(()),
        (Some(_), _) => Err(EditError::AlreadyExists),
        (None, Some(k)) if edit.applies_to().contains(&k) => Ok(()),
        (None, k) => Err(EditError::WrongKind {
            edit: edit.name(),
            kind: k.map_or("empty", DocKind::as_str),
        }),
    }
}

/// Writes `edit` into `doc` as one change by `writer` at `now` (unix ms) without
/// validating it. Returns the change hash (`None` if the edit changed nothing).
///
/// # Errors
/// When the edit does not fit the document, or automerge fails.
pub fn apply_unchecked(
    doc: &mut Automerge,
    writer: &Writer,
    now: i64,
    edit: &Edit,
) -> Result<Option<ChangeHash>, EditError> {
    check_applies(doc, edit)?;
    doc.transact_with(
        |_| {
            CommitOptions::default()
                .with_message(edit.name())
                .with_time(now / 1000)
        },
        |tx| write(tx, writer, now, edit, schema::SCHEMA_VERSION),
    )
    .map(|ok| ok.hash)
    .map_err(|f| EditError::Automerge(f.error.to_string()))
}

/// Like [`apply_unchecked`], as an engine of another schema version would write it: a
/// creating edit stamps `schema_version` in the document's first change instead of
/// [`schema::SCHEMA_VERSION`]. Only the golden-fixture recorder (a version-1 writer, ADR
/// 0170) and tests of a newer device's documents use it; which fields an edit writes is
/// the caller's concern (a version-1 writer never sets a version-2 field).
///
/// # Errors
/// When the edit does not fit the document, or automerge fails.
#[cfg(feature = "testing")]
pub fn apply_unchecked_as_schema(
    doc: &mut Automerge,
    writer: &Writer,
    now: i64,
    edit: &Edit,
    schema_version: i64,
) -> Result<Option<ChangeHash>, EditError> {
    check_applies(doc, edit)?;
    doc.transact_with(
        |_| {
            CommitOptions::default()
                .with_message(edit.name())
                .with_time(now / 1000)
        },
        |tx| write(tx, writer, now, edit, schema_version),
    )
    .map(|ok| ok.hash)
    .map_err(|f| EditError::Automerge(f.error.to_string()))
}

/// Like [`apply_unchecked`], and also returns the patches of the transaction itself, so
/// that validating the edit does not need a diff that walks the document (ADR 0125).
///
/// # Errors
/// When the edit does not fit the document, or automerge fails.
pub fn apply_logged(
    doc: &mut Automerge,
    writer: &Writer,
    now: i64,
    edit: &Edit,
) -> Result<(Option<ChangeHash>, Vec<automerge::Patch>), EditError> {
    check_applies(doc, edit)?;
    let mut done = doc
        .transact_and_log_patches_with(
            |_| {
                CommitOptions::default()
                    .with_message(edit.name())
                    .with_time(now / 1000)
            },
            |tx| write(tx, writer, now, edit, schema::SCHEMA_VERSION),
        )
        .map_err(|f| EditError::Automerge(f.error.to_string()))?;
    let patches = doc.make_patches(&mut done.patch_log);
    Ok((done.hash, patches))
}

#[cfg(test)]
#[path = "edits_tests.rs"]
mod tests;
