//! Prometheus metrics, served at `/metrics`. The sync engine feeds them; the names are
//! part of the operations contract (see the crate docs).

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open websocket connections (`kepu_ws_connections`).
    pub ws_connections: IntGauge,
    /// Sync protocol messages by direction `in`/`out` (`kepu_sync_messages_total`).
    pub sync_messages_total: IntCounterVec,
    /// Refused changes by reason code (`kepu_refusals_total`).
    pub refusals_total: IntCounterVec,
    /// The engines' dearer steps (`kepu_engine_work_total{step}`): `history_walk` (an
    /// append found by walking a document's history), `whole_save` (a whole document
    /// saved for peers far behind), `whole_reused` (one sent from the save kept for an
    /// earlier peer at the same heads).
    pub engine_work_total: IntCounterVec,
    /// Time to validate and merge one incoming sync message (`kepu_merge_seconds`).
    pub merge_seconds: Histogram,
    /// Time to persist one batch of changes (`kepu_persist_seconds`).
    pub persist_seconds: Histogram,
    /// Documents held in memory (`kepu_docs_in_memory`).
    pub docs_in_memory: IntGauge,
    /// Changes per persisted batch (`kepu_batch_size`).
    pub batch_size: Histogram,
    /// Sync messages of one document from several devices merged with one apply
    /// (`kepu_merged_together`, ADR 0191).
    pub merged_together: Histogram,
    /// HTTP API requests by status class (`kepu_http_requests_total`).
    pub http_requests_total: IntCounterVec,
    /// Connections closed because their outbound queue was full
    /// (`kepu_slow_peers_closed_total`).
    pub slow_peers_closed_total: IntCounter,
    /// Stored snapshots and change rows that did not parse when their document was
    /// loaded (`kepu_stored_unreadable_total`); anything above zero needs a look.
    pub stored_unreadable_total: IntCounter,
    /// Documents whose records were computed (`kepu_projections_total`), by `source`:
    /// `memory` (the merged document in the hub; a burst of merges is computed once) or
    /// `store` (the document left memory first and was read back).
    pub projections_total: IntCounterVec,
    /// Bookings projected from memory, by how their scans were read
    /// (`kepu_booking_reads_total`): `whole`, or `changed` (only the keys touched since
    /// the last projection, ADR 0181).
    pub booking_reads_total: IntCounterVec,
    /// Time from the oldest merge a document's records answer to until they are written
    /// (`kepu_records_lag_seconds`): how far the records, and the live dashboard, trail
    /// the merged documents.
    pub records_lag_seconds: Histogram,
    /// Time to write one transaction of records: one document, or several bookings
    /// (`kepu_records_write_seconds`).
    pub records_write_seconds: Histogram,
    /// Time to read one live dashboard snapshot (`kepu_live_snapshot_seconds`).
    pub live_snapshot_seconds: Histogram,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// A histogram of seconds with [`LATENCY_BUCKETS`].
fn latency(name: &str, help: &str) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
}

/// The labels of `kepu_engine_work_total`.
pub const ENGINE_STEPS: [&str; 6] = [
    "history_walk",
    "whole_save",
    "whole_reused",
    "change_reused",
    "document_split",
    "change_rebuilt",
];

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

impl Metrics {
    /// A fresh registry with every metric registered.
    ///
    /// # Panics
    /// Never in practice: the metric names and labels are constants checked by a test.
    #[must_use]
    pub fn new() -> Self {
        Self::try_new().expect("metric definitions are valid constants")
    }

    fn try_new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let ws_connections = IntGauge::new("kepu_ws_connections", "Open websocket connections")?;
        let sync_messages_total = IntCounterVec::new(
            Opts::new("kepu_sync_messages_total", "Sync protocol messages"),
            &["direction"],
        )?;
        let refusals_total = IntCounterVec::new(
            Opts::new("kepu_refusals_total", "Changes refused before merge"),
            &["code"],
        )?;
        let merge_seconds = latency("kepu_merge_seconds", "Validate and merge one sync message")?;
        let engine_work_total = IntCounterVec::new(
            Opts::new(
                "kepu_engine_work_total",
                "The sync engines' dearer steps: history walks, whole documents saved and reused",
            ),
            &["step"],
        )?;
        registry.register(Box::new(engine_work_total.clone()))?;
        let persist_seconds = latency("kepu_persist_seconds", "Persist one batch of changes")?;
        let docs_in_memory = IntGauge::new("kepu_docs_in_memory", "Documents held in memory")?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("kepu_batch_size", "Changes per persisted batch")
                .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        let merged_together = Histogram::with_opts(
            HistogramOpts::new(
                "kepu_merged_together",
                "Sync messages of one document from several devices merged with one apply",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        let http_requests_total = IntCounterVec::new(
            Opts::new("kepu_http_requests_total", "HTTP requests by status class"),
            &["class"],
        )?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(sync_messages_total.clone()))?;
        registry.register(Box::new(refusals_total.clone()))?;
        registry.register(Box::new(merge_seconds.clone()))?;
        registry.register(Box::new(persist_seconds.clone()))?;
        registry.register(Box::new(docs_in_memory.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(merged_together.clone()))?;
        let slow_peers_closed_total = IntCounter::new(
            "kepu_slow_peers_closed_total",
            "Connections closed because their outbound queue was full",
        )?;
        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(slow_peers_closed_total.clone()))?;
        let stored_unreadable_total = IntCounter::new(
            "kepu_stored_unreadable_total",
            "Stored snapshots and change rows that did not parse when loaded",
        )?;
        registry.register(Box::new(stored_unreadable_total.clone()))?;
        let projections_total = IntCounterVec::new(
            Opts::new(
                "kepu_projections_total",
                "Documents whose records were computed, by where the document was read",
            ),
            &["source"],
        )?;
        registry.register(Box::new(projections_total.clone()))?;
        let booking_reads_total = IntCounterVec::new(
            Opts::new(
                "kepu_booking_reads_total",
                "Bookings projected from memory, by how their scans were read",
            ),
            &["read"],
        )?;
        registry.register(Box::new(booking_reads_total.clone()))?;
        let records_lag_seconds = latency(
            "kepu_records_lag_seconds",
            "From the oldest merge a document's records answer to until they are written",
        )?;
        registry.register(Box::new(records_lag_seconds.clone()))?;
        let records_write_seconds = latency(
            "kepu_records_write_seconds",
            "Write one transaction of records",
        )?;
        registry.register(Box::new(records_write_seconds.clone()))?;
        let live_snapshot_seconds = latency(
            "kepu_live_snapshot_seconds",
            "Read one live dashboard snapshot",
        )?;
        registry.register(Box::new(live_snapshot_seconds.clone()))?;
        // Make the labelled series visible before the first event.
        for direction in ["in", "out"] {
            sync_messages_total.with_label_values(&[direction]);
        }
        for source in ["memory", "store"] {
            projections_total.with_label_values(&[source]);
        }
        for read in ["whole", "changed"] {
            booking_reads_total.with_label_values(&[read]);
        }
        for step in ENGINE_STEPS {
            engine_work_total.with_label_values(&[step]);
        }
        Ok(Self {
            registry,
            ws_connections,
            sync_messages_total,
            refusals_total,
            engine_work_total,
            merge_seconds,
            persist_seconds,
            docs_in_memory,
            batch_size,
            merged_together,
            http_requests_total,
            slow_peers_closed_total,
            stored_unreadable_total,
            projections_total,
            booking_reads_total,
            records_lag_seconds,
            records_write_seconds,
            live_snapshot_seconds,
        })
    }

    /// Adds a metric kept elsewhere (e.g. by the accounts service). A second metric of
    /// the same name is ignored.
    pub fn register(&self, metric: impl prometheus::core::Collector + 'static) {
        let _ = self.registry.register(Box::new(metric));
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported() {
        let metrics = Metrics::new();
        metrics
            .refusals_total
            .with_label_values(&["forbidden"])
            .inc();
        metrics.batch_size.observe(3.0);
        let text = metrics.render();
        for name in [
            "kepu_ws_connections",
            "kepu_sync_messages_total",
            "kepu_refusals_total",
            "kepu_merge_seconds",
            "kepu_persist_seconds",
            "kepu_docs_in_memory",
            "kepu_batch_size",
            "kepu_merged_together",
            "kepu_engine_work_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
