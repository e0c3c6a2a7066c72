//! `keel bench wal`: synced appends to one log — the raw `write` + `fdatasync` loop,
//! keel's WAL, or (feature `rocksdb`) keel's RocksDB log — by N writers that each
//! append one entry at a time and wait until it is durable; optionally swept over
//! writer counts and backends, with an SVG chart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel_load::{Load, RawFile, Target, WalTarget};

use keel_wal::WalOptions;

pub use super::WalRow;
use super::{check_size, num, round1, table, with_progress, BenchDir, Progress};
use crate::error::{CliError, Result};
use crate::output::Out;

/// The log a `bench wal` run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Backend {
    /// `pwrite` + `fdatasync` on a preallocated file, writers serialized by a mutex.
    Raw,
    /// keel's segmented WAL with group commit.
    Wal,
    /// keel's RocksDB log (`--log rocksdb`); needs the `rocksdb` cargo feature.
    Rocksdb,
}

impl Backend {
    /// The name used in output and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Raw => "raw",
            Backend::Wal => "wal",
            Backend::Rocksdb => "rocksdb",
        }
    }
}

/// What `keel bench wal` was asked to do.
#[derive(Debug, Clone)]
pub struct WalBenchOptions {
    /// Backends to run (one, or several with a sweep).
    pub backends: Vec<Backend>,
    /// Where the logs go; a temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// Writer threads (without a sweep).
    pub writers: usize,
    /// Entries in total per run, split across the writers.
    pub entries: u64,
    /// Bytes per entry.
    pub size: usize,
    /// One JSON object a line instead of the table.
    pub json: bool,
    /// WAL segment size.
    pub segment_size: Option<u64>,
    /// Writer counts to sweep (empty: just `writers`).
    pub sweep: Vec<usize>,
    /// Where to draw the sweep's chart.
    pub svg: Option<PathBuf>,
    /// Stop each run after this many seconds even if not every entry was written.
    pub duration_secs: Option<f64>,
}

/// Largest file the raw loop preallocates; it wraps around (overwriting) past this.
const RAW_FILE_MAX_BYTES: u64 = 1 << 30;
/// Most writer threads one run may start.
pub const MAX_WRITERS: usize = 4096;

fn check(o: &WalBenchOptions) -> Result<()> {
    check_size(o.size)?;
    let counts: Vec<usize> = if o.sweep.is_empty() {
        vec![o.writers]
    } else {
        o.sweep.clone()
    };
    for &w in &counts {
        if w == 0 || w > MAX_WRITERS {
            return Err(CliError::Usage(format!(
                "{w} writers is out of range; pass 1..={MAX_WRITERS}"
            )));
        }
        if o.entries < w as u64 {
            return Err(CliError::Usage(format!(
                "--entries {} is fewer than {w} writers; every writer needs at least one entry",
                o.entries
            )));
        }
    }
    if o.backends.is_empty() {
        return Err(CliError::Usage("--backend names no backend".into()));
    }
    if o.backends.contains(&Backend::Rocksdb) && !cfg!(feature = "rocksdb") {
        return Err(CliError::Usage(
            "--backend rocksdb needs a keel built with the `rocksdb` cargo feature \
             (cargo build --release -p keel-cli --features rocksdb; it compiles RocksDB)"
                .into(),
        ));
    }
    if let Some(s) = o.segment_size {
        if s < 4096 {
            return Err(CliError::Usage(format!(
                "--segment-size {s} is below the WAL's 4096-byte minimum"
            )));
        }
    }
    if let Some(d) = o.duration_secs {
        if !(d > 0.0 && d <= 86_400.0) {
            return Err(CliError::Usage(format!(
                "--duration {d} is out of range; pass seconds in (0, 86400]"
            )));
        }
    }
    if o.svg.is_some() && o.sweep.is_empty() {
        return Err(CliError::Usage(
            "--svg draws a sweep; pass --sweep too".into(),
        ));
    }
    Ok(())
}

/// Runs `keel bench wal`.
pub fn run(o: &WalBenchOptions) -> Result<crate::error::Status> {
    check(o)?;
    let base = BenchDir::prepare(o.dir.as_deref())?;
    let mut backends = o.backends.clone();
    backends.sort();
    backends.dedup();
    let counts: Vec<usize> = if o.sweep.is_empty() {
        vec![o.writers]
    } else {
        o.sweep.clone()
    };
    let several = backends.len() > 1 || counts.len() > 1;
    let mut out = Out::stdout();
    if !o.json && base.is_temporary() {
        crate::output::warn(format!(
            "writing in {} (removed at the end; pass --dir to keep it)",
            base.path.display()
        ));
    }
    let mut rows = Vec::new();
    // Backends take turns at each writer count, so a change in the shared disk's
    // speed during the sweep hits them alike.
    for &writers in &counts {
        for &backend in &backends {
            // One run: D/<backend>; several: D/<backend>-w<writers>/<backend>.
            let dir = if several {
                let d = base.path.join(format!("{}-w{writers}", backend.name()));
                std::fs::create_dir(&d).map_err(|e| CliError::io(&d, e))?;
                d
            } else {
                base.path.clone()
            };
            let row = run_one(o, backend, writers, &dir)?;
            if o.json {
                out.json(&row)?;
                out.flush()?;
            }
            rows.push(row);
        }
    }
    if !o.json {
        for line in human_table(&rows) {
            out.line(line)?;
        }
    }
    out.flush()?;
    if let Some(svg) = &o.svg {
        super::svg::draw_sweep(svg, &rows, o.size)?;
        if !o.json {
            crate::output::warn(format!("chart written to {}", svg.display()));
        }
    }
    Ok(crate::error::Status::Ok)
}

fn open_target(o: &WalBenchOptions, backend: Backend, dir: &Path) -> Result<Box<dyn Target>> {
    let load_err = |source| CliError::Load {
        context: format!(
            "cannot set up the {} log in {}",
            backend.name(),
            dir.display()
        ),
        source,
    };
    Ok(match backend {
        Backend::Raw => {
            // Room for every entry, up to the cap; `check_size` keeps one entry below it,
            // so the bounds of `clamp` are in order.
            let bytes =
                (o.entries.saturating_mul(o.size as u64)).clamp(o.size as u64, RAW_FILE_MAX_BYTES);
            let d = dir.join("raw");
            std::fs::create_dir(&d).map_err(|e| CliError::io(&d, e))?;
            Box::new(RawFile::create(&d, bytes).map_err(load_err)?)
        }
        Backend::Wal => {
            let mut opts = WalOptions::default();
            if let Some(s) = o.segment_size {
                opts.segment_size_bytes = s;
            }
            Box::new(WalTarget::open(&dir.join("wal"), opts).map_err(load_err)?)
        }
        #[cfg(feature = "rocksdb")]
        Backend::Rocksdb => {
            let log = keel_wal::RocksLogStore::open(dir.join("rocksdb")).map_err(|e| {
                load_err(keel_load::LoadError::Log {
                    what: "open RocksDB".into(),
                    source: e,
                })
            })?;
            Box::new(keel_load::StoreTarget::new(log, |l| Some(l.syncs())))
        }
        #[cfg(not(feature = "rocksdb"))]
        Backend::Rocksdb => {
            // `check` refused this already; kept as an error rather than a panic.
            return Err(CliError::Usage(
                "--backend rocksdb needs the `rocksdb` cargo feature".into(),
            ));
        }
    })
}

fn run_one(o: &WalBenchOptions, backend: Backend, writers: usize, dir: &Path) -> Result<WalRow> {
    let target = open_target(o, backend, dir)?;
    let data = keel_load::payload(o.size);
    let done = AtomicU64::new(0);
    let progress = Progress::new(o.entries, &format!("{} {writers}w", backend.name()), o.json);
    let syncs_before = target.syncs().unwrap_or(0);
    let cpu_before = super::cpu_time();
    let load = Load {
        writers,
        entries: o.entries,
        max_duration: o.duration_secs.map(Duration::from_secs_f64),
    };
    let result = with_progress(
        &progress,
        || done.load(Ordering::Relaxed),
        || keel_load::run(target.as_ref(), load, &data, &done),
    );
    progress.finish();
    let r = result.map_err(|source| CliError::Load {
        context: format!("{} with {writers} writers failed", backend.name()),
        source,
    })?;
    let syncs = target.syncs().unwrap_or(0).saturating_sub(syncs_before);
    // Dropping the target syncs nothing more: every append was already durable.
    drop(target);
    let seconds = r.wall.as_secs_f64();
    Ok(WalRow {
        backend: backend.name(),
        writers,
        entries: r.entries,
        size: o.size,
        seconds: (seconds * 1000.0).round() / 1000.0,
        ops_per_sec: round1(r.ops_per_sec()),
        mb_per_sec: (r.ops_per_sec() * o.size as f64 / 1e6 * 100.0).round() / 100.0,
        syncs,
        entries_per_sync: if syncs == 0 {
            0.0
        } else {
            (r.entries as f64 / syncs as f64 * 100.0).round() / 100.0
        },
        p50_us: round1(r.latency_us(0.5)),
        p99_us: round1(r.latency_us(0.99)),
        p999_us: round1(r.latency_us(0.999)),
        cpu_percent: super::cpu_percent(cpu_before, r.wall),
        dir: dir.display().to_string(),
    })
}

fn human_table(rows: &[WalRow]) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.backend.to_string(),
                r.writers.to_string(),
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
                format!("{:.0}", r.cpu_percent),
            ]
        })
        .collect();
    table(
        &[
            "BACKEND",
            "WRITERS",
            "ENTRIES",
            "SIZE",
            "SECONDS",
            "OPS/S",
            "MB/S",
            "SYNCS",
            "ENTRIES/SYNC",
            "P50 µs",
            "P99 µs",
            "P99.9 µs",
            "CPU%",
        ],
        &cells,
    )
}
