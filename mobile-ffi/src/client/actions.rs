//! What the people using the app do, as typed edits and reads over the merged documents.
//! Every rule that decides what is shown (who is in, minutes confirmed) is sync-core's,
//! so every device shows the same thing from the same merged document.

use std::sync::Arc;

use automerge::Automerge;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{EntryId, PupilId, SlotId, UserId, VenueId};
use kepu_sync_core::proof::{
    ProofError, RevocationList, WINDOW_MS, gate_code_time, verify_gate_code, verify_pass,
};
use kepu_sync_core::rules::attendance::{Attendance, attendance};
use kepu_sync_core::rules::volunteer::{Minutes, minutes};
use kepu_sync_core::schema::activity_log::ActivityLog;
use kepu_sync_core::schema::booking::{self, Booking, ScanMethod};
use kepu_sync_core::schema::venue::Venue;
use kepu_sync_core::schema::{DocKind, revocations};
use kepu_sync_core::writer::Role;

use super::core::{Core, now_ms, random};
use super::error::{Error, Result};

/// A check-in or check-out as recorded by this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The pupil.
    pub pupil: PupilId,
    /// The scan's id.
    pub scan_id: String,
    /// Device time of the scan.
    pub at: i64,
    /// The pupil had already been counted (this scan is kept as a duplicate).
    pub already_counted: bool,
}

/// Meta key holding a volunteer's own activity log document.
const ACTIVITY_LOG_KEY: &str = "activity_log_doc";

/// Parses a document id given by the app.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn parse_doc(text: &str) -> Result<DocumentId> {
    let text = text.trim();
    let text = text.strip_prefix("automerge:").unwrap_or(text);
    text.parse()
        .map_err(|_| Error::InvalidInput("malformed document id".into()))
}

/// Parses a UUID-based id given by the app.
///
/// # Errors
/// [`Error::InvalidInput`] naming the kind of id only.
pub fn parse_id<T: std::str::FromStr>(text: &str, kind: &str) -> Result<T> {
    text.trim()
        .parse()
        .map_err(|_| Error::InvalidInput(format!("malformed {kind} id")))
}

pub(crate) fn new_entry_id(now: i64) -> String {
    EntryId::new_v7(now, random()).to_string()
}

fn new_doc_id() -> DocumentId {
    let mut bytes = random::<16>();
    // Shape it as a random (v4) UUID, as automerge-repo does.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    DocumentId::from_bytes(bytes)
}

impl Core {
    /// Reads a booking held on this device.
    ///
    /// # Errors
    /// Not held, not a booking, or not enrolled.
    pub fn booking(&self, doc: &DocumentId) -> Result<Booking> {
        match self.read(doc, Booking::read)?.flatten() {
            Some(b) => Ok(b),
            None => Err(self.missing_booking(doc)),
        }
    }

    /// Why booking `doc` cannot be read: added but not synced yet, or never added.
    fn missing_booking(&self, doc: &DocumentId) -> Error {
        match self.holds(doc) {
            Ok(true) => Error::NotSynced("booking"),
            Ok(false) => Error::InvalidInput("no such booking on this device".into()),
            Err(e) => e,
        }
    }

    fn venue_of(&self, venue: VenueId) -> Result<Option<Venue>> {
        for (doc, kind) in self.documents()? {
            if kind != Some(DocKind::Venue) {
                continue;
            }
            if let Some(Some(v)) = self.read(&doc, Venue::read)?
                && v.venue == venue
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The revocation list, parsed once per version of its document (ADR 0125): the
    /// document named at enrollment, else every revocation document held. A list named
    /// at enrollment that has not arrived yet is [`Error::NotSynced`], never "nothing
    /// revoked".
    pub(crate) fn revocations(&self) -> Result<Arc<RevocationList>> {
        let named = self.require_identity()?.revocations_doc;
        let docs: Vec<DocumentId> = match named {
            Some(doc) => vec![doc],
            None => self
                .documents()?
                .into_iter()
                .filter(|(_, kind)| *kind == Some(DocKind::Revocations))
                .map(|(doc, _)| doc)
                .collect(),
        };
        let mut version = Vec::with_capacity(docs.len());
        for doc in &docs {
            version.push((
                *doc,
                self.read(doc, Automerge::get_heads)?.unwrap_or_default(),
            ));
        }
        if let Some(list) = self.cached_revocations(&version) {
            return Ok(list);
        }
        let mut list = RevocationList::new();
        for doc in &docs {
            let set = self.read(doc, revocations::read)?;
            if set.is_none() && named.is_some() {
                // The list named at enrollment has not arrived: a missing list does not
                // mean that nothing is revoked.
                return Err(Error::NotSynced("revocation list"));
            }
            if let Some(set) = set {
                for (p, s) in set {
                    list.revoke(p, s);
                }
            }
        }
        let list = Arc::new(list);
        self.cache_revocations(version, Arc::clone(&list));
        Ok(list)
    }

    /// Has `pupil` been counted in booking `doc`? A key lookup, not a read of the whole
    /// booking. [`Error::InvalidInput`] when the booking is not held.
    fn already_counted(&self, doc: &DocumentId, pupil: PupilId) -> Result<bool> {
        self.read(doc, |d| {
            booking::venue_of(d).map(|_| booking::has_check_in(d, pupil))
        })?
        .flatten()
        .ok_or_else(|| self.missing_booking(doc))
    }

    /// The venue of booking `doc`, read alone. [`Error::InvalidInput`] when not held.
    fn booking_venue(&self, doc: &DocumentId) -> Result<VenueId> {
        self.read(doc, booking::venue_of)?
            .flatten()
            .ok_or_else(|| self.missing_booking(doc))
    }

    fn scan(
        &self,
        doc: DocumentId,
        pupil: PupilId,
        method: ScanMethod,
        proof: Option<String>,
        check_out: bool,
    ) -> Result<Receipt> {
        let now = self.server_now();
        self.pin_active(doc);
        let already_counted = !check_out && self.already_counted(&doc, pupil)?;
        let scan_id = new_entry_id(now);
        let edit = if check_out {
            Edit::CheckOut {
                pupil,
                scan_id: scan_id.clone(),
                method,
            }
        } else {
            Edit::CheckIn {
                pupil,
                scan_id: scan_id.clone(),
                method,
                proof,
            }
        };
        self.edit(doc, edit)?;
        Ok(Receipt {
            pupil,
            scan_id,
            at: now,
            already_counted,
        })
    }

    /// A pupil checks in by scanning the venue gate's rotating code, verified offline
    /// against the server's public key.
    ///
    /// # Errors
    /// Not a pupil, booking not held, the code is forged, expired or for another venue.
    pub fn check_in_with_gate_code(&self, doc: DocumentId, code: &str) -> Result<Receipt> {
        let me = self.require_identity()?;
        let pupil = me.pupil.filter(|_| me.role == Role::Pupil).ok_or_else(|| {
            Error::InvalidInput("only a pupil's device checks in with a gate code".into())
        })?;
        let key = self
            .server_key()
            .ok_or_else(|| Error::InvalidInput("no server public key configured".into()))?;
        let venue = self.booking_venue(&doc)?;
        let code = code.trim();
        let now = self.server_now();
        let proof = verify_gate_code(code, &key, now, Some(venue)).map_err(|e| {
            // A genuine code outside its window: the gate's clock and ours disagree.
            match (e, gate_code_time(code, &key, Some(venue))) {
                (ProofError::OutsideWindow, Some(at)) => Error::ClockSkew(at + WINDOW_MS / 2 - now),
                _ => Error::InvalidInput(format!("gate code: {e}")),
            }
        })?;
        self.scan(
            doc,
            pupil,
            ScanMethod::GateCode,
            Some(proof.encode()),
            false,
        )
    }

    /// A teacher's or gate device scans a pupil's pass (verified offline, with the
    /// synced revocation list).
    ///
    /// # Errors
    /// The pass is forged, expired or revoked; the booking is not held.
    pub fn scan_pupil_pass(&self, doc: DocumentId, pass: &str) -> Result<Receipt> {
        self.require_identity()?;
        let key = self
            .server_key()
            .ok_or_else(|| Error::InvalidInput("no server public key configured".into()))?;
        let revoked = self.revocations()?;
        let pass_text = pass.trim();
        let proof = verify_pass(pass_text, &key, self.server_now(), &|p, s| {
            revoked.is_revoked(p, s)
        })
        .map_err(|e| Error::InvalidInput(format!("pupil pass: {e}")))?;
        self.scan(
            doc,
            proof.pupil,
            ScanMethod::PassScan,
            Some(pass_text.to_owned()),
            false,
        )
    }

    /// Checks a pupil out: a pupil checks themselves out (`pupil` ignored); a teacher or
    /// gate device names the pupil.
    ///
    /// # Errors
    /// Bad pupil id, booking not held, or refused by validation.
    pub fn check_out(&self, doc: DocumentId, pupil: Option<&str>) -> Result<Receipt> {
        let me = self.require_identity()?;
        let pupil = match (me.role, me.pupil, pupil) {
            (Role::Pupil, Some(p), _) => p,
            (_, _, Some(text)) => parse_id(text, "pupil")?,
            _ => return Err(Error::InvalidInput("which pupil?".into())),
        };
        self.booking_venue(&doc)?;
        self.scan(doc, pupil, ScanMethod::Manual, None, true)
    }

    /// The attendance of a visit: who is in, who is missing, who left.
    ///
    /// # Errors
    /// Booking not held.
    pub fn roster(&self, doc: &DocumentId) -> Result<(Booking, Attendance)> {
        let booking = self.booking(doc)?;
        let venue = self.venue_of(booking.venue)?;
        let slot = venue.as_ref().and_then(|v| v.slot(booking.slot));
        let a = attendance(&booking, slot);
        Ok((booking, a))
    }

    /// A pupil's visits: bookings held whose roster has them.
    ///
    /// # Errors
    /// Not a pupil or storage failed.
    pub fn my_visits(&self) -> Result<Vec<(DocumentId, Booking)>> {
        let me = self.require_identity()?;
        let pupil = me
            .pupil
            .ok_or_else(|| Error::InvalidInput("this device has no pupil".into()))?;
        let mut out = Vec::new();
        for (doc, kind) in self.documents()? {
            if kind != Some(DocKind::Booking) {
                continue;
            }
            if let Some(Some(b)) = self.read(&doc, Booking::read)?
                && (b.roster.contains_key(&pupil) || b.check_ins.iter().any(|s| s.pupil == pupil))
            {
                out.push((doc, b));
            }
        }
        Ok(out)
    }

    /// A teacher asks for places on a slot (offline is fine): a new booking document,
    /// "requested" until the server decides.
    ///
    /// # Errors
    /// Not a teacher of a school, bad ids, refused by validation.
    pub fn request_booking(
        &self,
        venue: &str,
        slot: &str,
        party_size: u32,
        roster: &[String],
    ) -> Result<DocumentId> {
        let me = self.require_identity()?;
        let school = me
            .school
            .ok_or_else(|| Error::InvalidInput("this device has no school".into()))?;
        let venue: VenueId = parse_id(venue, "venue")?;
        let slot: SlotId = parse_id(slot, "slot")?;
        let roster = roster
            .iter()
            .map(|p| parse_id::<PupilId>(p, "pupil"))
            .collect::<Result<Vec<_>>>()?;
        if party_size == 0 || party_size > 10_000 {
            return Err(Error::InvalidInput("party size must be 1 to 10000".into()));
        }
        let doc = new_doc_id();
        self.edit(
            doc,
            Edit::CreateBooking {
                venue,
                slot,
                school,
                party_size,
                roster,
            },
        )?;
        Ok(doc)
    }

    /// Venue staff: publish (or update) a bookable slot in the venue's document. The
    /// venue document (created by the server) must have synced to this device first, so
    /// the slot lands in the server's copy rather than in a second, conflicting one.
    /// Returns the slot id.
    ///
    /// # Errors
    /// Not venue staff, the venue document is not here yet, or a bad time range.
    pub fn publish_slot(
        &self,
        start_ms: i64,
        end_ms: i64,
        capacity: u32,
        label: &str,
    ) -> Result<SlotId> {
        let me = self.require_identity()?;
        let doc = me
            .venue_doc()
            .filter(|_| me.role == Role::VenueStaff)
            .ok_or_else(|| Error::InvalidInput("only venue staff publish slots".into()))?;
        if self.read(&doc, Venue::read)?.flatten().is_none() {
            return Err(Error::NotSynced("venue document"));
        }
        if start_ms <= 0 || end_ms <= start_ms || capacity == 0 || label.len() > 200 {
            return Err(Error::InvalidInput(
                "a slot needs start < end, places and a short label".into(),
            ));
        }
        let slot = SlotId(kepu_sync_core::ids::uuid_v7(start_ms, random()));
        self.edit(
            doc,
            Edit::PutSlot {
                slot,
                start: start_ms,
                end: end_ms,
                capacity,
                label: label.to_owned(),
            },
        )?;
        Ok(slot)
    }

    /// The volunteer's own activity log, created on first use.
    ///
    /// # Errors
    /// Not a volunteer, or storage failed.
    pub fn own_activity_log(&self) -> Result<DocumentId> {
        let me = self.require_identity()?;
        if let Some(doc) = self
            .meta(ACTIVITY_LOG_KEY)?
            .and_then(|d| parse_doc(&d).ok())
        {
            return Ok(doc);
        }
        if me.role != Role::Volunteer {
            return Err(Error::InvalidInput(
                "only a volunteer keeps an activity log".into(),
            ));
        }
        let doc = new_doc_id();
        self.edit(
            doc,
            Edit::CreateActivityLog {
                volunteer: me.user,
                school: me.school,
            },
        )?;
        self.set_meta(ACTIVITY_LOG_KEY, &doc.to_string())?;
        Ok(doc)
    }

    /// A volunteer logs an activity; returns its id.
    ///
    /// # Errors
    /// Not a volunteer, bad venue id, refused by validation.
    pub fn log_activity(
        &self,
        venue: &str,
        activity_kind: &str,
        start_ms: i64,
        minutes: u32,
        description: &str,
    ) -> Result<String> {
        let venue: VenueId = parse_id(venue, "venue")?;
        if minutes == 0 || minutes > 24 * 60 {
            return Err(Error::InvalidInput("minutes must be 1 to 1440".into()));
        }
        if activity_kind.is_empty() || activity_kind.len() > 64 || description.len() > 2_000 {
            return Err(Error::InvalidInput(
                "activity kind or description too long".into(),
            ));
        }
        let doc = self.own_activity_log()?;
        let activity_id = new_entry_id(now_ms());
        self.edit(
            doc,
            Edit::LogActivity {
                activity_id: activity_id.clone(),
                venue,
                activity_kind: activity_kind.to_owned(),
                start: start_ms,
                minutes,
                description: description.to_owned(),
            },
        )?;
        Ok(activity_id)
    }

    /// Venue staff confirm (or decline) a logged activity.
    ///
    /// # Errors
    /// Log not held, refused by validation (another venue's activity).
    pub fn confirm_activity(
        &self,
        log: DocumentId,
        activity_id: &str,
        approved: bool,
        minutes: Option<u32>,
    ) -> Result<()> {
        let known = self
            .read(&log, ActivityLog::read)?
            .flatten()
            .is_some_and(|l| l.activities.iter().any(|a| a.id == activity_id));
        if !known {
            return Err(Error::InvalidInput(
                "no such activity on this device".into(),
            ));
        }
        self.edit(
            log,
            Edit::ConfirmActivity {
                activity_id: activity_id.to_owned(),
                approved,
                minutes,
            },
        )
    }

    /// A volunteer's minutes (their own log when `log` is `None`).
    ///
    /// # Errors
    /// Log not held.
    pub fn volunteer_minutes(&self, log: Option<DocumentId>) -> Result<(UserId, Minutes)> {
        let doc = match log {
            Some(d) => d,
            None => self.own_activity_log()?,
        };
        let l = self
            .read(&doc, ActivityLog::read)?
            .flatten()
            .ok_or_else(|| Error::InvalidInput("no such activity log on this device".into()))?;
        Ok((l.volunteer, minutes(&l)))
    }
}
