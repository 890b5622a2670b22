//! Memory: evicting idle documents (and the least recently used ones beyond the bound),
//! keeping their connected peers as watchers to attach again on reload.

use super::{DocEntry, Engine, Event, StorageTask, TaskPurpose};
use crate::doc_id::DocumentId;

impl Engine {
    pub(super) fn evict(&mut self) {
        let idle_ms = self.config.idle_evict_ms;
        let now = self.now;
        let busy = |e: &DocEntry| {
            !e.loaded
                || e.appends_in_flight > 0
                || e.compacting
                || !e.pending.is_empty()
                || e.load_task.is_some()
        };
        let revocations = self.config.revocations_doc;
        let mut candidates: Vec<(i64, DocumentId)> = self
            .docs
            .iter()
            .filter(|(id, e)| !busy(e) && Some(**id) != revocations)
            .map(|(id, e)| (e.last_used, *id))
            .collect();
        // Pinned documents go last, and only to get under the bound.
        let pinned = &self.pinned;
        candidates.retain(|(_, id)| !pinned.contains(id));
        let spare: Vec<(i64, DocumentId)> = self
            .docs
            .iter()
            .filter(|(id, e)| !busy(e) && pinned.contains(id))
            .map(|(id, e)| (e.last_used, *id))
            .collect();
        let over = self
            .docs
            .len()
            .saturating_sub(self.config.max_docs_in_memory);
        if over == 0 && !candidates.iter().any(|(t, _)| now - *t >= idle_ms) {
            return;
        }
        candidates.sort_unstable();
        let mut evicted = 0;
        for (last, doc) in candidates {
            if evicted >= over && now - last < idle_ms {
                break;
            }
            self.evict_one(doc);
            evicted += 1;
        }
        let mut spare = spare;
        spare.sort_unstable();
        for (_, doc) in spare.into_iter().take(over.saturating_sub(evicted)) {
            self.evict_one(doc);
        }
    }

    pub(super) fn evict_one(&mut self, doc: DocumentId) {
        let Some(e) = self.docs.remove(&doc) else {
            return;
        };
        for (conn, p) in e.peers {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let state = p.state.encode();
            // The connection stays subscribed: it is attached again on reload.
            self.watchers
                .entry(doc)
                .or_default()
                .push((conn, state.clone()));
            if let Some(storage) = c.remote_storage.clone() {
                self.task(
                    TaskPurpose::Other(doc),
                    StorageTask::SaveSyncState {
                        doc,
                        peer: storage,
                        state,
                    },
                );
            }
        }
        self.fx.events.push(Event::Evicted { doc });
    }
}
