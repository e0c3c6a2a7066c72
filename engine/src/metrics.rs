//! A node's Prometheus metrics: etcd's leader and proposal series, WAL fsync and
//! snapshot save latency, apply lag, the log cache's hits, misses and size (copied from
//! the cache when the metrics are rendered), and what the node refused or dropped at its
//! limits (inbox messages, writes over the request queue's bytes, snapshots). Each node
//! has its own registry (several nodes can share one process); [`Metrics::text`]
//! renders the text exposition.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

use crate::error::{Error, Result};

/// The metrics of one node.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Times this node saw the leader change.
    pub leader_changes: IntCounter,
    /// 1 while a leader is known.
    pub has_leader: IntGauge,
    /// 1 while this node is the leader.
    pub is_leader: IntGauge,
    /// The commit index (etcd's `proposals_committed_total`).
    pub proposals_committed: IntGauge,
    /// The applied index (etcd's `proposals_applied_total`).
    pub proposals_applied: IntGauge,
    /// Writes waiting to be applied.
    pub proposals_pending: IntGauge,
    /// Writes that failed (dropped, overwritten, timed out).
    pub proposals_failed: IntCounter,
    /// Seconds per WAL write + fsync of one persist batch.
    pub wal_fsync_seconds: Histogram,
    /// Seconds per snapshot save.
    pub snapshot_save_seconds: Histogram,
    /// Committed minus applied entries.
    pub apply_lag: IntGauge,
    /// Log reads the in-memory cache answered (a counter kept by the cache, mirrored
    /// here when the metrics are rendered).
    pub log_cache_hits: IntGauge,
    /// Log reads that went to the durable log.
    pub log_cache_misses: IntGauge,
    /// Bytes of entries held in the log cache.
    pub log_cache_bytes: IntGauge,
    /// Entries held in the log cache.
    pub log_cache_entries: IntGauge,
    /// Peer messages dropped on arrival: the inbox was full in count
    /// (`inbox_queue_len`) or in bytes (`inbox_queue_max_bytes`).
    pub inbox_dropped: IntCounter,
    /// Writes refused with `Error::Busy` because the request queue was over its byte
    /// budget (`request_queue_max_bytes`).
    pub requests_over_queue_bytes: IntCounter,
    /// Snapshots from a leader refused or failed on arrival (over
    /// `max_snapshot_receive_bytes`, damaged, or not for this node).
    pub snapshots_refused: IntCounter,
    /// Snapshots from a leader installed into the state machine.
    pub snapshots_installed: IntCounter,
}

fn make<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn latency_buckets() -> Vec<f64> {
    // 100 µs to ~13 s, doubling: fsyncs take 0.1-2 ms here, snapshots much longer.
    prometheus::exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

impl Metrics {
    /// Metrics labelled with node `id`.
    pub fn new(id: u64) -> Result<Metrics> {
        Self::build(id).map_err(|e| Error::Config(format!("metrics: {e}")))
    }

    fn build(id: u64) -> prometheus::Result<Metrics> {
        let labels = std::iter::once(("node".to_string(), id.to_string())).collect();
        let registry = Registry::new_custom(Some("keel".into()), Some(labels))?;
        let r = &registry;
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
        };
        Ok(Metrics {
            leader_changes: make(
                r,
                IntCounter::with_opts(Opts::new(
                    "server_leader_changes_seen_total",
                    "Leader changes seen by this node.",
                )),
            )?,
            has_leader: make(
                r,
                IntGauge::new("server_has_leader", "1 while a leader is known."),
            )?,
            is_leader: make(
                r,
                IntGauge::new("server_is_leader", "1 while this node is the leader."),
            )?,
            proposals_committed: make(
                r,
                IntGauge::new("server_proposals_committed_total", "The commit index."),
            )?,
            proposals_applied: make(
                r,
                IntGauge::new("server_proposals_applied_total", "The applied index."),
            )?,
            proposals_pending: make(
                r,
                IntGauge::new("server_proposals_pending", "Writes waiting to be applied."),
            )?,
            proposals_failed: make(
                r,
                IntCounter::new("server_proposals_failed_total", "Writes that failed."),
            )?,
            wal_fsync_seconds: make(
                r,
                hist(
                    "disk_wal_fsync_duration_seconds",
                    "Write and fsync of one persist batch.",
                ),
            )?,
            snapshot_save_seconds: make(
                r,
                hist(
                    "disk_snapshot_save_duration_seconds",
                    "Saving one snapshot durably.",
                ),
            )?,
            apply_lag: make(
                r,
                IntGauge::new(
                    "server_apply_lag_entries",
                    "Committed but not applied entries.",
                ),
            )?,
            log_cache_hits: make(
                r,
                IntGauge::new(
                    "log_cache_hits_total",
                    "Raft log reads answered from the in-memory cache.",
                ),
            )?,
            log_cache_misses: make(
                r,
                IntGauge::new(
                    "log_cache_misses_total",
                    "Raft log reads that went to the durable log.",
                ),
            )?,
            log_cache_bytes: make(
                r,
                IntGauge::new("log_cache_bytes", "Bytes of entries in the log cache."),
            )?,
            log_cache_entries: make(
                r,
                IntGauge::new("log_cache_entries", "Entries in the log cache."),
            )?,
            inbox_dropped: make(
                r,
                IntCounter::new(
                    "server_inbox_dropped_total",
                    "Peer messages dropped because the inbox was full in count or bytes.",
                ),
            )?,
            requests_over_queue_bytes: make(
                r,
                IntCounter::new(
                    "server_request_queue_bytes_refused_total",
                    "Writes refused because the request queue was over its byte budget.",
                ),
            )?,
            snapshots_refused: make(
                r,
                IntCounter::new(
                    "snapshot_receive_refused_total",
                    "Snapshots from a leader refused or failed on arrival.",
                ),
            )?,
            snapshots_installed: make(
                r,
                IntCounter::new(
                    "snapshot_installed_total",
                    "Snapshots from a leader installed into the state machine.",
                ),
            )?,
            registry,
        })
    }

    /// The text exposition of every metric.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# metrics encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
