//! Documents the server creates itself: one venue document per venue (its id is the
//! venue's uuid, so any device can compute it), one school log per school for the current
//! year (its id derived from the school and the year, [`DocumentId::school_log`]) and the
//! pass revocation list.

use std::collections::{HashMap, HashSet};

use kepu_sync_core::calendar::china_year;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{SchoolId, SlotId, VenueId};
use kepu_sync_core::schema::DocKind;
use kepu_sync_core::validate::DerivedIds;

use super::inbox::SyncHub;
use crate::error::Result;
use crate::store::Store;

pub use super::derived::{
    DERIVED_YEARS_AFTER, DERIVED_YEARS_BEFORE, DerivedRegistry, REVOCATIONS_DOC, venue_doc,
};

/// A document found at a derived id that is not of the kind the server creates there
/// (written before devices were kept off derived ids). The server does not use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    /// The derived id.
    pub doc: DocumentId,
    /// The kind the server creates there.
    pub expected: DocKind,
    /// The kind stored there (its text, possibly unknown).
    pub found: String,
}

/// The documents of the wrong kind at ids this server derives (see [`DerivedRegistry`]).
///
/// # Errors
/// A database failure.
pub async fn misplaced(store: &Store, registry: &DerivedRegistry) -> Result<Vec<Misplaced>> {
    Ok(store
        .document_ids()
        .await?
        .into_iter()
        .filter_map(|(doc, found)| {
            let expected = registry.kind_at(&doc)?;
            (found != expected.as_str()).then_some(Misplaced {
                doc,
                expected,
                found,
            })
        })
        .collect())
}

/// Creates the documents that do not exist yet: the revocation list, one venue
/// document per venue record (with its directory profile) and each school's log for the
/// year of `now` in China time (so that no two devices ever create the same school log
/// concurrently, which would hide one's entries). With `demo_slots`, venues
/// without a document also get bookable slots over the next days.
///
/// # Errors
/// A database failure.
pub async fn ensure(store: &Store, hub: &SyncHub, now: i64, demo_slots: bool) -> Result<usize> {
    let year = china_year(now);
    let schools: Vec<SchoolId> = store
        .school_ids()
        .await?
        .into_iter()
        .map(SchoolId)
        .collect();
    let venues = store.list_venues().await?;
    let registry = hub.derived_ids();
    registry.refresh(
        schools.clone(),
        venues.iter().map(|v| VenueId(v.id)).collect(),
        year,
    );
    let stored: HashMap<DocumentId, String> = store.document_ids().await?.into_iter().collect();
    let existing: HashSet<DocumentId> = stored.keys().copied().collect();
    // A document of another kind at a derived id is never used as the server's own:
    // say so (ids and kinds only) and leave it alone.
    for (doc, found) in &stored {
        if let Some(expected) = registry.kind_at(doc)
            && found != expected.as_str()
            && registry.warned.lock().is_ok_and(|mut w| w.insert(*doc))
        {
            tracing::warn!(
                doc = %doc,
                expected = expected.as_str(),
                found = found.as_str(),
                "a document of another kind holds an id the server derives; not used"
            );
        }
    }
    let mut created = 0;
    if !existing.contains(&REVOCATIONS_DOC) {
        hub.edit(REVOCATIONS_DOC, Edit::CreateRevocations);
        created += 1;
    }
    for school in schools {
        let doc = DocumentId::school_log(school, year);
        if !existing.contains(&doc) {
            hub.edit(doc, Edit::CreateSchoolLog { school, year });
            created += 1;
        }
    }
    for v in venues {
        let venue = VenueId(v.id);
        let doc = venue_doc(venue);
        if existing.contains(&doc) {
            continue;
        }
        hub.edit(doc, Edit::CreateVenue { venue });
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("name".to_owned(), v.name.clone());
        fields.insert("venue_kind".to_owned(), v.kind.clone());
        hub.edit(
            doc,
            Edit::SetProfile {
                fields,
                location: None,
                after_school: Some(true),
            },
        );
        if demo_slots {
            let day = 86_400_000;
            let today = now - now.rem_euclid(day);
            for d in 0..3i64 {
                // 15:30–17:30 Beijing time = 07:30–09:30 UTC, after school.
                let start = today + d * day + 7 * 3_600_000 + 30 * 60_000;
                let slot = SlotId(kepu_sync_core::ids::uuid_v7(start, slot_random(v.id, d)));
                hub.edit(
                    doc,
                    Edit::PutSlot {
                        slot,
                        start,
                        end: start + 2 * 3_600_000,
                        capacity: 60,
                        label: format!("课后 第{}天 15:30", d + 1),
                    },
                );
            }
        }
        created += 1;
    }
    Ok(created)
}

/// Keeps the server's documents in step with the records: venues and schools created
/// since start (and every school at the turn of the year) get their document, revoked
/// passes reach the revocation list. Runs every `every`, on the leading node only.
pub fn keep_in_step(
    store: Store,
    hub: SyncHub,
    leader: crate::cluster::Leadership,
    every: std::time::Duration,
) {
    tokio::spawn(async move {
        let mut written: std::collections::HashSet<(uuid::Uuid, i64)> =
            std::collections::HashSet::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if !leader.confirm(&store).await {
                // What another leader wrote is not remembered here: it is in the list.
                written.clear();
                continue;
            }
            if let Err(e) = ensure(&store, &hub, crate::clock::now_ms(), false).await {
                tracing::warn!(error = %e, "could not create server documents");
            }
            match store.pass_revocations().await {
                Ok(list) => {
                    for (pupil, serial) in list {
                        if written.insert((pupil, serial)) {
                            let serial = u32::try_from(serial).unwrap_or(u32::MAX);
                            hub.edit(
                                REVOCATIONS_DOC,
                                Edit::RevokePass {
                                    pupil: kepu_sync_core::ids::PupilId(pupil),
                                    serial,
                                },
                            );
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read pass revocations"),
            }
        }
    });
}

fn slot_random(venue: uuid::Uuid, day: i64) -> [u8; 10] {
    let mut r = [0u8; 10];
    r[..8].copy_from_slice(&venue.as_bytes()[8..]);
    r[8..].copy_from_slice(&u16::try_from(day).unwrap_or(0).to_be_bytes());
    r
}
