//! The storage worker: runs the engine's storage tasks, many at a time in one
//! transaction, answers the hub, then writes changed documents' records and writes the
//! capacity decision of their slots back into the bookings (see `crate::records`).

use std::time::Instant;

use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::engine::{IoResult, StorageTask, TaskId};
use kepu_sync_core::ids::{DeviceId, SlotId};
use tokio::sync::{mpsc, oneshot};

use super::inbox::{HubMsg, SyncHub};
use crate::app_state::AppState;
use crate::clock::now_ms;
use crate::cluster::Tag;
use crate::records::Projection;

/// Work for the storage worker.
#[derive(Debug)]
pub enum Job {
    /// Storage tasks from the engine.
    Tasks(Vec<(TaskId, StorageTask)>),
    /// A document changed: rewrite its records.
    Project {
        /// Document.
        doc: DocumentId,
        /// Its records.
        projection: Box<Projection>,
        /// The heads of the state they were computed from.
        heads: Vec<automerge::ChangeHash>,
        /// When the oldest merge they answer to was made.
        since: Instant,
    },
    /// Compute and write the records of a document from the store: it left the hub's
    /// memory before its records were computed.
    Reproject {
        /// Document.
        doc: DocumentId,
    },
    /// Record a refusal for admins.
    Refusal {
        /// Device.
        device: DeviceId,
        /// Document.
        doc: DocumentId,
        /// Code.
        code: kepu_sync_core::refusal::RefusalCode,
        /// Detail (no personal data).
        detail: String,
    },
    /// Answer once everything before is written.
    Flush(oneshot::Sender<()>),
}

/// Storage and projection jobs waiting for the worker; the hub waits beyond this.
pub const MAX_QUEUED_JOBS: usize = 4_096;

/// Most tasks committed in one transaction.
const MAX_BATCH: usize = 512;

/// Starts the storage worker of engine shard `shard`: its completions go back to that
/// shard.
pub(crate) fn start(state: AppState, hub: SyncHub, shard: usize) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_JOBS);
    let (writes_tx, writes_rx) = mpsc::channel(MAX_QUEUED_JOBS);
    let back = Back { hub, shard };
    tokio::spawn(reads_first(state.clone(), back.clone(), rx, writes_tx));
    tokio::spawn(run(state, back, writes_rx));
    tx
}

/// The way back to the shard whose tasks a worker runs.
#[derive(Clone)]
struct Back {
    hub: SyncHub,
    shard: usize,
}

impl Back {
    fn done(&self, task: TaskId, result: IoResult) {
        self.hub
            .send_to(self.shard, HubMsg::IoDone { task, result });
    }
}

/// Starts every read (`Load`, `LoadChanges`) as soon as it arrives, each on its own
/// task, and passes the rest on to the writing loop in order: a read never waits behind
/// the records of earlier changes (a device on this node waits for a change another
/// node stored only as long as the read takes).
async fn reads_first(
    state: AppState,
    hub: Back,
    mut rx: mpsc::Receiver<Job>,
    writes: mpsc::Sender<Job>,
) {
    while let Some(job) = rx.recv().await {
        let job = match job {
            Job::Tasks(tasks) => {
                let mut rest = Vec::with_capacity(tasks.len());
                for (id, task) in tasks {
                    match task {
                        StorageTask::Load { doc } => spawn_read(&state, &hub, id, doc, true),
                        StorageTask::LoadChanges { doc } => {
                            spawn_read(&state, &hub, id, doc, false);
                        }
                        other => rest.push((id, other)),
                    }
                }
                if rest.is_empty() {
                    continue;
                }
                Job::Tasks(rest)
            }
            other => other,
        };
        if writes.send(job).await.is_err() {
            break;
        }
    }
}

fn spawn_read(state: &AppState, hub: &Back, task: TaskId, doc: DocumentId, whole: bool) {
    let store = state.store.clone();
    let hub = hub.clone();
    tokio::spawn(async move {
        let read = if whole {
            store.load_document(doc).await
        } else {
            store.load_changes(doc).await
        };
        let result = match read {
            Ok(l) => IoResult::Loaded(l),
            Err(e) => IoResult::Failed(e.to_string()),
        };
        hub.done(task, result);
    });
}

/// Records writes run between batches of storage tasks for at most about this long,
/// then the worker looks for new tasks again: an acknowledgement waits for one slice of
/// records at most, not for every document's (ADR 0189).
const RECORDS_SLICE: std::time::Duration = std::time::Duration::from_millis(5);

/// Where a due document's records come from.
enum Records {
    /// Computed by the hub from the state at `heads` (`Job::Project`).
    Computed {
        projection: Box<Projection>,
        heads: Vec<automerge::ChangeHash>,
        since: Instant,
    },
    /// To compute from the store (`Job::Reproject`).
    FromStore,
}

impl Records {
    /// The booking, when these are a booking's records computed by the hub.
    fn booking(&self) -> Option<&kepu_sync_core::schema::booking::Booking> {
        match self {
            Self::Computed { projection, .. } => match &**projection {
                Projection::Booking(b) => Some(b),
                _ => None,
            },
            Self::FromStore => None,
        }
    }
}

/// Bookings whose records are written together in one transaction at most, on SQLite
/// (ADR 0190). On PostgreSQL each is written alone: its records transactions do not take
/// turns with the appends, and a group only held the worker, and the acknowledgements
/// behind it, longer.
const RECORDS_GROUP: usize = 4;

/// Documents whose records are due, each with its newest records, in the order they
/// first became due.
#[derive(Default)]
struct Due {
    order: std::collections::VecDeque<DocumentId>,
    jobs: std::collections::HashMap<DocumentId, Records>,
}

impl Due {
    /// A document's records are due; records already due for it are replaced, so they
    /// are written once, from the newest state (and answer to the oldest merge of the
    /// two).
    fn put(&mut self, doc: DocumentId, mut records: Records) {
        if let (Records::Computed { since, .. }, Some(Records::Computed { since: before, .. })) =
            (&mut records, self.jobs.get(&doc))
        {
            *since = (*since).min(*before);
        }
        if self.jobs.insert(doc, records).is_none() {
            self.order.push_back(doc);
        }
    }

    fn pop(&mut self) -> Option<(DocumentId, Records)> {
        let doc = self.order.pop_front()?;
        self.jobs.remove(&doc).map(|j| (doc, j))
    }

    /// The next due document, with the bookings due right after it when it is a booking
    /// computed by the hub: at most `max` in all, written in one transaction (ADR 0190).
    fn pop_group(&mut self, max: usize) -> Vec<(DocumentId, Records)> {
        let mut group: Vec<(DocumentId, Records)> = self.pop().into_iter().collect();
        while group.len() < max
            && group.last().is_some_and(|(_, r)| r.booking().is_some())
            && self
                .order
                .front()
                .and_then(|d| self.jobs.get(d))
                .is_some_and(|r| r.booking().is_some())
        {
            group.extend(self.pop());
        }
        group
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

async fn run(state: AppState, back: Back, mut rx: mpsc::Receiver<Job>) {
    let hub = &back.hub;
    let mut due = Due::default();
    loop {
        // Wait for work only when no records are due.
        let mut jobs = Vec::new();
        if due.is_empty() {
            match rx.recv().await {
                Some(j) => jobs.push(j),
                None => break,
            }
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut writes: Vec<(TaskId, StorageTask)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut refusals: Vec<crate::store::Refusal> = Vec::new();
        for job in jobs {
            match job {
                Job::Tasks(tasks) => writes.extend(tasks),
                Job::Project {
                    doc,
                    projection,
                    heads,
                    since,
                } => due.put(
                    doc,
                    Records::Computed {
                        projection,
                        heads,
                        since,
                    },
                ),
                Job::Reproject { doc } => due.put(doc, Records::FromStore),
                Job::Flush(done) => flushes.push(done),
                Job::Refusal {
                    device,
                    doc,
                    code,
                    detail,
                } => refusals.push(crate::store::Refusal {
                    id: kepu_sync_core::ids::uuid_v7(now_ms(), rand::random()),
                    device_id: device.0,
                    doc_id: doc.to_string(),
                    code,
                    detail,
                    at: now_ms(),
                }),
            }
        }
        if !writes.is_empty() {
            let started = Instant::now();
            let refs: Vec<&StorageTask> = writes.iter().map(|(_, t)| t).collect();
            let results = state
                .store
                .run_document_tasks_isolated(&refs, now_ms())
                .await;
            state
                .metrics
                .persist_seconds
                .observe(started.elapsed().as_secs_f64());
            #[allow(clippy::cast_precision_loss)]
            state.metrics.batch_size.observe(writes.len() as f64);
            for ((id, _), result) in writes.into_iter().zip(results) {
                let result = match result {
                    Ok(()) => IoResult::Done,
                    Err(crate::error::Error::ActorClaimed(claims)) => {
                        // Another node gave these actor ids to other devices first: the
                        // engine learns it before it hears the append failed, so the
                        // device's next try is refused `foreign-actor`.
                        tracing::warn!(
                            actors = claims.len(),
                            "append refused: actor ids claimed by other devices"
                        );
                        hub.actor_claims(claims);
                        IoResult::Failed("an actor id belongs to another device".into())
                    }
                    Err(e) => IoResult::Failed(e.to_string()),
                };
                back.done(id, result);
            }
        }
        for r in refusals {
            if let Err(e) = state.store.record_refusal(&r).await {
                tracing::warn!(error = %e, "could not record refusal");
            }
        }
        // Records: every due document's before a flush is answered (it answers once
        // everything before it is written); otherwise one slice, then new tasks first.
        let started = Instant::now();
        let group = match state.store.backend() {
            crate::store::Backend::Sqlite => RECORDS_GROUP,
            crate::store::Backend::Postgres => 1,
        };
        while !due.is_empty() {
            write_group(&state, hub, due.pop_group(group)).await;
            if flushes.is_empty() && started.elapsed() >= RECORDS_SLICE {
                break;
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes the records of a group of due documents: several bookings in one transaction,
/// each alone if that fails (one booking's failure does not hold back the others), any
/// other document alone.
async fn write_group(state: &AppState, hub: &SyncHub, group: Vec<(DocumentId, Records)>) {
    if group.len() < 2 {
        for (doc, records) in group {
            write_due(state, hub, doc, records).await;
        }
        return;
    }
    let started = Instant::now();
    let writes: Vec<crate::store::BookingWrite<'_>> = group
        .iter()
        .filter_map(|(doc, records)| match records {
            Records::Computed { heads, .. } => Some(crate::store::BookingWrite {
                doc: *doc,
                booking: records.booking()?,
                at: Some(heads),
            }),
            Records::FromStore => None,
        })
        .collect();
    // Every document of a group is a booking computed by the hub (`Due::pop_group`).
    let written = if writes.len() == group.len() {
        Some(state.store.write_bookings_records(&writes, now_ms()).await)
    } else {
        None
    };
    drop(writes);
    match written {
        Some(Ok(decisions)) => {
            state
                .metrics
                .records_write_seconds
                .observe(started.elapsed().as_secs_f64());
            for ((doc, records), due) in group.into_iter().zip(decisions) {
                if let Records::Computed {
                    projection, since, ..
                } = records
                {
                    let slot = records_slot(&projection, due);
                    after_records(state, hub, doc, &projection, slot).await;
                    state
                        .metrics
                        .records_lag_seconds
                        .observe(since.elapsed().as_secs_f64());
                }
            }
        }
        failed => {
            if let Some(Err(e)) = failed {
                tracing::warn!(
                    bookings = group.len(),
                    error = %e,
                    "records written together failed; writing each alone"
                );
            }
            for (doc, records) in group {
                write_due(state, hub, doc, records).await;
            }
        }
    }
}

/// The slot whose decision is due after a booking's records were written.
fn records_slot(projection: &Projection, due: bool) -> Option<SlotId> {
    match projection {
        Projection::Booking(b) if due => Some(b.slot),
        _ => None,
    }
}

/// Writes a due document's records.
async fn write_due(state: &AppState, hub: &SyncHub, doc: DocumentId, records: Records) {
    let started = Instant::now();
    match records {
        Records::Computed {
            projection,
            heads,
            since,
        } => {
            if write_records(state, hub, doc, &projection, &heads).await {
                state
                    .metrics
                    .records_lag_seconds
                    .observe(since.elapsed().as_secs_f64());
            }
        }
        Records::FromStore => match crate::records::load(&state.store, doc).await {
            Ok(d) => {
                state
                    .metrics
                    .projections_total
                    .with_label_values(&["store"])
                    .inc();
                let projection = crate::records::project(doc, &d);
                let _ = write_records(state, hub, doc, &projection, &d.get_heads()).await;
            }
            Err(e) => tracing::error!(doc = %doc, error = %e, "projection failed"),
        },
    }
    state
        .metrics
        .records_write_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Tells the other nodes (PostgreSQL) that a venue's records or a slot's bookings
/// changed. False when they could not be told.
async fn tell_nodes(state: &AppState, tag: Tag, id: String) -> bool {
    if let Err(e) = state.store.notify_nodes(tag, &[id]).await {
        tracing::warn!(error = %e, "could not notify the other nodes");
        return false;
    }
    true
}

/// Writes a document's records computed from the state at `heads`, tells the live
/// dashboard (and the other nodes), and has the slot's bookings decided when a booking
/// changed. False when the records could not be written (the error is logged).
async fn write_records(
    state: &AppState,
    hub: &SyncHub,
    doc: DocumentId,
    projection: &Projection,
    heads: &[automerge::ChangeHash],
) -> bool {
    match crate::records::write(&state.store, doc, projection, Some(heads), now_ms()).await {
        Ok(slot) => {
            after_records(state, hub, doc, projection, slot).await;
            true
        }
        Err(e) => {
            tracing::error!(doc = %doc, error = %e, "projection failed");
            false
        }
    }
}

/// After a document's records were written: tells the live dashboard (and the other
/// nodes), and has the slot's bookings decided when `slot` is due.
async fn after_records(
    state: &AppState,
    hub: &SyncHub,
    doc: DocumentId,
    projection: &Projection,
    slot: Option<SlotId>,
) {
    state.live.publish_projection(projection);
    if let Some(venue) = crate::live::venue_of(projection) {
        tell_nodes(state, Tag::Venue, venue.to_string()).await;
    }
    if let Some(slot) = slot {
        let asked = if state.leader.confirm(&state.store).await {
            decide_slot(state, hub, slot).await
        } else {
            tell_nodes(state, Tag::Slot, slot.to_string()).await
        };
        if !asked {
            // The booking's next write asks again.
            state.store.forget_written(doc);
        }
    }
}

/// The capacity decision for a slot, first come first served, written back into the
/// bookings whose status or wait-list place changes as the server's own change. Only
/// the leading node decides (`crate::cluster`). False when it could not be made.
pub(crate) async fn decide_slot(state: &AppState, hub: &SyncHub, slot: SlotId) -> bool {
    match crate::records::capacity::slot_edits(&state.store, slot).await {
        Ok(edits) => {
            for (doc, edit) in edits {
                hub.edit(doc, edit);
            }
            true
        }
        Err(e) => {
            tracing::warn!(slot = %slot, error = %e, "could not decide the slot");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reproject(n: u8) -> (DocumentId, Records) {
        (DocumentId::from_bytes([n; 16]), Records::FromStore)
    }

    fn project(n: u8, heads: u8) -> (DocumentId, Records) {
        let records = Records::Computed {
            projection: Box::new(Projection::Nothing),
            heads: vec![automerge::ChangeHash([heads; 32])],
            since: Instant::now(),
        };
        (DocumentId::from_bytes([n; 16]), records)
    }

    /// A booking's records as the hub computes them.
    fn booking(n: u8) -> (DocumentId, Records) {
        use kepu_sync_core::edits::{Edit, apply_unchecked};
        use kepu_sync_core::ids::{DeviceId, SchoolId, SlotId, UserId, VenueId};
        use uuid::Uuid;
        let teacher = kepu_sync_core::writer::Writer {
            device: DeviceId(Uuid::from_u128(1)),
            user: UserId(Uuid::from_u128(2)),
            role: kepu_sync_core::writer::Role::Teacher,
            school: Some(SchoolId(Uuid::from_u128(3))),
            venue: None,
            pupil: None,
        };
        let mut d = automerge::Automerge::new();
        let create = Edit::CreateBooking {
            venue: VenueId(Uuid::from_u128(4)),
            slot: SlotId(Uuid::from_u128(5)),
            school: SchoolId(Uuid::from_u128(3)),
            party_size: 1,
            roster: Vec::new(),
        };
        apply_unchecked(&mut d, &teacher, 1, &create).unwrap();
        let doc = DocumentId::from_bytes([n; 16]);
        let records = Records::Computed {
            projection: Box::new(crate::records::project(doc, &d)),
            heads: d.get_heads(),
            since: Instant::now(),
        };
        (doc, records)
    }

    #[test]
    fn consecutive_due_bookings_are_written_together_and_other_documents_alone() {
        let mut due = Due::default();
        for (doc, records) in [
            booking(1),
            booking(2),
            booking(3),
            project(4, 1),
            booking(5),
            reproject(6),
            booking(7),
            booking(8),
        ] {
            due.put(doc, records);
        }
        let mut groups = Vec::new();
        while !due.is_empty() {
            let group: Vec<u8> = due
                .pop_group(2)
                .iter()
                .map(|(doc, _)| doc.as_bytes()[0])
                .collect();
            groups.push(group);
        }
        assert_eq!(
            groups,
            vec![vec![1, 2], vec![3], vec![4], vec![5], vec![6], vec![7, 8]]
        );
    }

    #[test]
    fn due_records_are_written_once_from_the_newest_job_in_the_order_first_due() {
        let mut due = Due::default();
        for (doc, records) in [project(1, 1), reproject(2), project(1, 2), project(3, 1)] {
            due.put(doc, records);
        }
        let mut out = Vec::new();
        while let Some((doc, records)) = due.pop() {
            let heads = match records {
                Records::Computed { heads, .. } => heads.first().map(|h| h.0[0]),
                Records::FromStore => None,
            };
            out.push((doc.as_bytes()[0], heads));
        }
        assert_eq!(out, vec![(1, Some(2)), (2, None), (3, Some(1))]);
        assert!(due.is_empty());
    }
}
