//! Who this install is: what enrollment returned plus the install's storage id,
//! persisted in the store's `meta` table, and the automerge actor id of this opening of
//! the store (fresh and random each time; see [`Identity::actor`]).

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{DeviceId, PupilId, SchoolId, UserId, VenueId};
use kepu_sync_core::writer::{Role, Writer};

use super::error::{Error, Result};
use super::store::Store;

/// The enrolled identity of this install.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Device id (from the server).
    pub device: DeviceId,
    /// Bearer token for the websocket (never logged, never shown).
    pub token: String,
    /// User.
    pub user: UserId,
    /// Role.
    pub role: Role,
    /// School of a pupil, volunteer or teacher.
    pub school: Option<SchoolId>,
    /// Venue of venue staff.
    pub venue: Option<VenueId>,
    /// Pseudonymous pupil id of a pupil.
    pub pupil: Option<PupilId>,
    /// The automerge actor id this opening of the store writes with: 16 random bytes,
    /// chosen again at every open and never stored. A copy of the store (a backup
    /// restored onto a second phone, a second writer) therefore never writes under an
    /// actor id another copy uses, so no two changes share an actor and sequence number
    /// (automerge would refuse the second). Changes made under earlier actor ids stay in
    /// the documents and are read like any other.
    pub actor: [u8; 16],
    /// This install's storage id (peers persist sync states against it).
    pub storage_id: String,
    /// The server's pass revocation list (from enrollment; synced like any document).
    pub revocations_doc: Option<DocumentId>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device", &self.device)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The writer the engine validates our edits as.
    #[must_use]
    pub fn writer(&self) -> Writer {
        Writer {
            device: self.device,
            user: self.user,
            role: self.role,
            school: self.school,
            venue: self.venue,
            pupil: self.pupil,
        }
    }

    /// The venue's own document (its profile, slots and gates), for venue staff.
    #[must_use]
    pub fn venue_doc(&self) -> Option<DocumentId> {
        self.venue.map(|v| DocumentId::from_bytes(*v.as_bytes()))
    }

    /// Our peer id on the wire.
    #[must_use]
    pub fn peer_id(&self) -> String {
        format!("device-{}", self.device)
    }

    /// Writes the identity, with `extra` meta values and the documents to fetch first,
    /// in one transaction: a kill during enrollment leaves the phone enrolled with all of
    /// it, or not enrolled at all.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn save(
        &self,
        store: &mut Store,
        extra: &[(&str, Option<&str>)],
        want: &[DocumentId],
        now: i64,
    ) -> Result<()> {
        let device = self.device.to_string();
        let user = self.user.to_string();
        let school = self.school.map(|s| s.to_string());
        let venue = self.venue.map(|v| v.to_string());
        let pupil = self.pupil.map(|p| p.to_string());
        let revocations = self.revocations_doc.map(|d| d.to_string());
        let mut values: Vec<(&str, Option<&str>)> = vec![
            ("device_id", Some(&device)),
            ("token", Some(&self.token)),
            ("user_id", Some(&user)),
            ("role", Some(self.role.as_str())),
            ("school_id", school.as_deref()),
            ("venue_id", venue.as_deref()),
            ("pupil_id", pupil.as_deref()),
            // Actor ids are per open, never stored (earlier versions stored one).
            ("actor", None),
            ("storage_id", Some(&self.storage_id)),
            ("revocations_doc", revocations.as_deref()),
        ];
        values.extend_from_slice(extra);
        store.set_meta_and_want(&values, want, now)
    }

    /// Reads the identity, if the device is enrolled.
    ///
    /// # Errors
    /// SQLite failed or the stored identity is corrupt.
    pub fn load(store: &Store) -> Result<Option<Self>> {
        let Some(device) = store.meta("device_id")? else {
            return Ok(None);
        };
        let corrupt = |what: &str| Error::Storage(format!("stored identity: bad {what}"));
        let parse_opt = |key: &str| -> Result<Option<String>> { store.meta(key) };
        Ok(Some(Self {
            device: device.parse().map_err(|_| corrupt("device"))?,
            token: store.meta("token")?.ok_or_else(|| corrupt("token"))?,
            user: store
                .meta("user_id")?
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| corrupt("user"))?,
            role: store
                .meta("role")?
                .and_then(|r| Role::parse(&r))
                .ok_or_else(|| corrupt("role"))?,
            school: parse_opt("school_id")?.and_then(|s| s.parse().ok()),
            venue: parse_opt("venue_id")?.and_then(|s| s.parse().ok()),
            pupil: parse_opt("pupil_id")?.and_then(|s| s.parse().ok()),
            actor: fresh_actor(),
            storage_id: store
                .meta("storage_id")?
                .ok_or_else(|| corrupt("storage id"))?,
            revocations_doc: parse_opt("revocations_doc")?.and_then(|d| d.parse().ok()),
        }))
    }
}

/// A new random actor id: every open of a store writes under its own, so that two copies
/// of one store never write the same (actor, sequence number).
fn fresh_actor() -> [u8; 16] {
    let mut actor = [0u8; 16];
    rand::fill(&mut actor);
    actor
}
