//! `keel bench cluster`: puts of B-byte values by N client threads for S seconds
//! against an in-process cluster (real disk, fsync on), each client waiting for its
//! write to be committed and applied before the next. With `--baseline` (always with
//! `--sweep`) the same run also measures keel's WAL alone at the same concurrency, so
//! the cost of replication can be stated as a ratio from one run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_engine::testing::{Cluster, ClusterError, Options, Storage, Timing, POLL};
use keel_load::{Load, WalTarget};
use keel_wal::WalOptions;
use serde::Serialize;

use super::{
    check_size, num, round1, table, tenths_since, timed_progress, with_progress, BenchDir,
};
use crate::error::{CliError, Result, Status};
use crate::output::Out;

/// What `keel bench cluster` was asked to do.
#[derive(Debug, Clone)]
pub struct ClusterBenchOptions {
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Client threads (without a sweep).
    pub clients: usize,
    /// Seconds of load per run.
    pub duration_secs: f64,
    /// Bytes per value.
    pub size: usize,
    /// One JSON object a line instead of the table.
    pub json: bool,
    /// Where the nodes' data goes; a temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// Client counts to sweep (empty: just `clients`).
    pub sweep: Vec<usize>,
    /// Also measure the WAL alone at the same concurrency.
    pub baseline: bool,
}

/// One run's results; the JSON object of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    /// Always `cluster`.
    pub backend: &'static str,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Writes acknowledged.
    pub entries: u64,
    /// Bytes per value.
    pub size: usize,
    /// Wall time of the load.
    pub seconds: f64,
    /// Acknowledged writes per second.
    pub ops_per_sec: f64,
    /// Value bytes per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// fsyncs of the Raft log made by all nodes together during the run.
    pub syncs: u64,
    /// Log entries made durable per fsync on each node (entries × nodes ÷ syncs).
    pub entries_per_sync: f64,
    /// Write latency percentiles (put until applied on the leader), microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Writes that failed (timeouts, leader changes); not counted in `entries`.
    pub errors: u64,
    /// keel's WAL alone, same writers and duration: entries/s (with the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_ops_per_sec: Option<f64>,
    /// `ops_per_sec ÷ wal_ops_per_sec` (with the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_wal: Option<f64>,
    /// CPU time of this process (every node and client) during the load ÷ wall time,
    /// in percent (200 = two cores busy).
    pub cpu_percent: f64,
    /// Where the nodes' data was written.
    pub dir: String,
}

/// Most client threads one run may start.
pub const MAX_CLIENTS: usize = 4096;
/// Timeout of one put.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new cluster may take to elect its first leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest value: the engine's default entry limit (1 MiB) less room for the key and
/// the command's framing.
pub const MAX_VALUE_BYTES: usize = (1 << 20) - 4096;

fn check(o: &ClusterBenchOptions) -> Result<()> {
    check_size(o.size)?;
    if o.size > MAX_VALUE_BYTES {
        return Err(CliError::Usage(format!(
            "--size {} is above the engine's entry limit; pass at most {MAX_VALUE_BYTES} bytes",
            o.size
        )));
    }
    if !(1..=7).contains(&o.nodes) {
        return Err(CliError::Usage(format!(
            "--nodes {} is out of range; pass 1..=7",
            o.nodes
        )));
    }
    let counts = if o.sweep.is_empty() {
        vec![o.clients]
    } else {
        o.sweep.clone()
    };
    if let Some(c) = counts.iter().find(|&&c| c == 0 || c > MAX_CLIENTS) {
        return Err(CliError::Usage(format!(
            "{c} clients is out of range; pass 1..={MAX_CLIENTS}"
        )));
    }
    if !(o.duration_secs > 0.0 && o.duration_secs <= 3600.0) {
        return Err(CliError::Usage(format!(
            "--duration {} is out of range; pass seconds in (0, 3600]",
            o.duration_secs
        )));
    }
    Ok(())
}

/// Runs `keel bench cluster`.
pub fn run(o: &ClusterBenchOptions) -> Result<Status> {
    check(o)?;
    let base = BenchDir::prepare(o.dir.as_deref())?;
    let counts = if o.sweep.is_empty() {
        vec![o.clients]
    } else {
        o.sweep.clone()
    };
    let baseline = o.baseline || !o.sweep.is_empty();
    let mut out = Out::stdout();
    let mut rows = Vec::new();
    for &clients in &counts {
        let dir = if counts.len() > 1 {
            let d = base.path.join(format!("c{clients}"));
            std::fs::create_dir(&d).map_err(|e| CliError::io(&d, e))?;
            d
        } else {
            base.path.clone()
        };
        let mut row = run_cluster(o, clients, &dir)?;
        if baseline {
            let wal_ops = run_baseline(o, clients, &dir)?;
            row.wal_ops_per_sec = Some(round1(wal_ops));
            row.ratio_to_wal =
                Some((row.ops_per_sec / wal_ops.max(1e-9) * 1000.0).round() / 1000.0);
        }
        if o.json {
            out.json(&row)?;
            out.flush()?;
        }
        rows.push(row);
    }
    if !o.json {
        for line in human_table(&rows) {
            out.line(line)?;
        }
    }
    out.flush()?;
    Ok(Status::Ok)
}

/// The in-process cluster `keel bench cluster` and `keel demo` run: nodes `1..=nodes`
/// in `dir/node-<id>`, fsync on, with failover a person can watch
/// ([`Timing::Interactive`]).
pub(crate) fn start_cluster(dir: &Path, nodes: u64) -> Result<Cluster> {
    let options = Options::new(nodes)
        .storage(Storage::Dir(dir.to_path_buf()))
        .timing(Timing::Interactive)
        .seed(1);
    Cluster::open(options).map_err(cluster_error)
}

/// The cli's error for a failed operation of the in-process cluster.
pub(crate) fn cluster_error(e: ClusterError) -> CliError {
    match e {
        ClusterError::Start { id, source } => CliError::Engine {
            context: format!("cannot start node {id}"),
            source,
        },
        ClusterError::Close { id, source } => CliError::Engine {
            context: format!("node {id} did not close cleanly"),
            source,
        },
        other => CliError::Usage(other.to_string()),
    }
}

fn run_cluster(o: &ClusterBenchOptions, clients: usize, dir: &Path) -> Result<ClusterRow> {
    let cluster = start_cluster(dir, o.nodes)?;
    let result = drive(o, clients, &cluster);
    // Close even when the load failed; report the load's error first.
    let closed = cluster.close().map_err(cluster_error);
    let row = result?;
    closed?;
    Ok(ClusterRow {
        dir: dir.display().to_string(),
        ..row
    })
}

fn drive(o: &ClusterBenchOptions, clients: usize, cluster: &Cluster) -> Result<ClusterRow> {
    if cluster.try_wait_leader(ELECTION_TIMEOUT).is_err() {
        return Err(CliError::Usage(format!(
            "the in-process cluster elected no leader within {} s; is the machine overloaded?",
            ELECTION_TIMEOUT.as_secs()
        )));
    }
    let duration = Duration::from_secs_f64(o.duration_secs);
    let value = keel_load::payload(o.size);
    let errors = AtomicU64::new(0);
    let syncs_before = cluster.metric_sum("keel_disk_wal_fsync_duration_seconds_count");
    let cpu_before = super::cpu_time();
    let progress = timed_progress(duration, &format!("cluster {clients}c"), o.json);
    let started = Instant::now();
    let (wall, latency_ns) = with_progress(
        &progress,
        || tenths_since(started),
        || {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..clients)
                    .map(|c| {
                        let (value, errors) = (&value, &errors);
                        s.spawn(move || client(c, cluster, value, started + duration, errors))
                    })
                    .collect();
                let mut all = keel_load::new_histogram();
                for h in handles {
                    if let Ok(lat) = h.join() {
                        // Both auto-resize, so adding cannot fail.
                        let _ = all.add(&lat);
                    }
                }
                (started.elapsed(), all)
            })
        },
    );
    progress.finish();
    let syncs = (cluster.metric_sum("keel_disk_wal_fsync_duration_seconds_count") - syncs_before)
        .max(0.0) as u64;
    let entries = latency_ns.len();
    let secs = wall.as_secs_f64().max(1e-9);
    let ops = entries as f64 / secs;
    let q = |p: f64| round1(latency_ns.value_at_quantile(p) as f64 / 1000.0);
    Ok(ClusterRow {
        backend: "cluster",
        nodes: o.nodes,
        clients,
        entries,
        size: o.size,
        seconds: (secs * 1000.0).round() / 1000.0,
        ops_per_sec: round1(ops),
        mb_per_sec: (ops * o.size as f64 / 1e6 * 100.0).round() / 100.0,
        syncs,
        entries_per_sync: if syncs == 0 {
            0.0
        } else {
            ((entries * o.nodes) as f64 / syncs as f64 * 100.0).round() / 100.0
        },
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        errors: errors.load(Ordering::Relaxed),
        wal_ops_per_sec: None,
        ratio_to_wal: None,
        cpu_percent: super::cpu_percent(cpu_before, wall),
        dir: String::new(),
    })
}

/// One client: puts to the leader until `until`; returns its latencies.
fn client(
    c: usize,
    cluster: &Cluster,
    value: &[u8],
    until: Instant,
    errors: &AtomicU64,
) -> Histogram<u64> {
    let mut lat = keel_load::new_histogram();
    let mut leader = cluster.leader();
    let mut i = 0u64;
    while Instant::now() < until {
        let Some(db) = leader.clone() else {
            std::thread::sleep(POLL);
            leader = cluster.leader();
            continue;
        };
        i += 1;
        let key = format!("bench/c{c}/{i}");
        let t = Instant::now();
        match db.put_timeout(key.as_bytes(), value, PUT_TIMEOUT) {
            Ok(()) => {
                keel_load::record(&mut lat, t.elapsed());
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                leader = cluster.leader();
            }
        }
    }
    lat
}

/// keel's WAL alone in `dir/wal-baseline`, `writers` writers for the same duration.
fn run_baseline(o: &ClusterBenchOptions, writers: usize, dir: &Path) -> Result<f64> {
    let d = dir.join("wal-baseline");
    let load_err = |context: String| move |source| CliError::Load { context, source };
    let target = WalTarget::open(&d, WalOptions::default()).map_err(load_err(format!(
        "cannot open the baseline WAL in {}",
        d.display()
    )))?;
    let load = Load {
        writers,
        entries: u64::MAX,
        max_duration: Some(Duration::from_secs_f64(o.duration_secs)),
    };
    let done = AtomicU64::new(0);
    let duration = Duration::from_secs_f64(o.duration_secs);
    let progress = timed_progress(duration, &format!("wal {writers}w"), o.json);
    let started = Instant::now();
    let r = with_progress(
        &progress,
        || tenths_since(started),
        || keel_load::run(&target, load, &keel_load::payload(o.size), &done),
    );
    progress.finish();
    let r = r.map_err(load_err(format!(
        "the baseline WAL with {writers} writers failed"
    )))?;
    target
        .close()
        .map_err(load_err("cannot close the baseline WAL".into()))?;
    Ok(r.ops_per_sec())
}

fn human_table(rows: &[ClusterRow]) -> Vec<String> {
    let baseline = rows.iter().any(|r| r.wal_ops_per_sec.is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.nodes.to_string(),
                r.clients.to_string(),
                r.entries.to_string(),
                format!("{} B", r.size),
                format!("{:.2}", r.seconds),
                num(r.ops_per_sec),
                num(r.mb_per_sec),
                r.syncs.to_string(),
                num(r.entries_per_sync),
                num(r.p50_us),
                num(r.p99_us),
                num(r.p999_us),
                r.errors.to_string(),
                format!("{:.0}", r.cpu_percent),
            ];
            if baseline {
                row.push(r.wal_ops_per_sec.map_or("-".into(), num));
                row.push(r.ratio_to_wal.map_or("-".into(), |x| format!("{x:.2}x")));
            }
            row
        })
        .collect();
    let mut header = vec![
        "NODES",
        "CLIENTS",
        "WRITES",
        "SIZE",
        "SECONDS",
        "OPS/S",
        "MB/S",
        "SYNCS",
        "ENTRIES/SYNC",
        "P50 µs",
        "P99 µs",
        "P99.9 µs",
        "ERRORS",
        "CPU%",
    ];
    if baseline {
        header.extend(["WAL OPS/S", "CLUSTER/WAL"]);
    }
    table(&header, &cells)
}
