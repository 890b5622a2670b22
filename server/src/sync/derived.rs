//! The ids at which the server creates documents itself (the revocation list, venue
//! documents, school logs), shared by the hub's engine, which refuses devices creating
//! documents there, and the loop that creates them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{SchoolId, VenueId};
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::validate::DerivedIds;

/// The fixed id of the pass revocation list.
pub const REVOCATIONS_DOC: DocumentId = DocumentId::from_bytes(*b"kepu:revocations");

/// The venue document of a venue.
#[must_use]
pub const fn venue_doc(venue: VenueId) -> DocumentId {
    DocumentId::from_bytes(*venue.as_bytes())
}

/// School logs are derived for these years around the current one: last year's (still
/// written in January), this year's and the next ones, so that no device can create a
/// document today at the id of a log the server will create at a coming new year.
pub const DERIVED_YEARS_BEFORE: i64 = 1;
/// See [`DERIVED_YEARS_BEFORE`].
pub const DERIVED_YEARS_AFTER: i64 = 5;

/// The schools, venues and year a [`DerivedRegistry`] was computed from.
type Basis = (Vec<SchoolId>, Vec<VenueId>, i64);

/// The ids at which the server creates documents itself, by the kind it creates there:
/// the revocation list, one venue document per venue record and each school's log for
/// the years around the current one. The engine asks it on every creation by a device
/// (`may-not-create` there); [`ensure`] keeps it up to date.
#[derive(Debug, Default)]
pub struct DerivedRegistry {
    ids: RwLock<HashMap<DocumentId, DocKind>>,
    /// What the map was computed from (schools, venues, year), to skip recomputing.
    basis: RwLock<Option<Basis>>,
    /// Misplaced documents already logged (each is logged once).
    pub(crate) warned: std::sync::Mutex<HashSet<DocumentId>>,
}

impl DerivedIds for DerivedRegistry {
    fn kind_at(&self, doc: &DocumentId) -> Option<DocKind> {
        if *doc == REVOCATIONS_DOC {
            return Some(DocKind::Revocations);
        }
        self.ids.read().ok()?.get(doc).copied()
    }
}

impl DerivedRegistry {
    /// A registry shared with the engine.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Recomputes the ids from the current schools, venues and year (only if they
    /// changed).
    pub fn refresh(&self, mut schools: Vec<SchoolId>, mut venues: Vec<VenueId>, year: i64) {
        schools.sort_unstable();
        venues.sort_unstable();
        let basis = (schools, venues, year);
        if self.basis.read().is_ok_and(|b| b.as_ref() == Some(&basis)) {
            return;
        }
        let (schools, venues, year) = &basis;
        let mut ids = HashMap::with_capacity(
            venues.len()
                + schools.len()
                    * usize::try_from(DERIVED_YEARS_BEFORE + DERIVED_YEARS_AFTER + 1).unwrap_or(1),
        );
        ids.insert(REVOCATIONS_DOC, DocKind::Revocations);
        for v in venues {
            ids.insert(venue_doc(*v), DocKind::Venue);
        }
        for s in schools {
            for y in year - DERIVED_YEARS_BEFORE..=year + DERIVED_YEARS_AFTER {
                ids.insert(DocumentId::school_log(*s, y), DocKind::SchoolLog);
            }
        }
        if let Ok(mut w) = self.ids.write() {
            *w = ids;
        }
        if let Ok(mut b) = self.basis.write() {
            *b = Some(basis);
        }
    }
}
