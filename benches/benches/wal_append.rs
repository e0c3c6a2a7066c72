//! Synced append throughput and latency of the Raft log, against the disk's own limit.
//!
//! For 1, 4, 16 and 64 concurrent writers × 128 B, 1 KiB and 16 KiB entries, each writer
//! appends one entry at a time and waits until it is durable:
//!
//! * `raw`: a `write` + `fdatasync` loop on a file preallocated with `fallocate` (as the
//!   WAL's segments are); each writer's append is serialized behind one mutex, so this
//!   is one log's limit on this disk: one sync per entry.
//! * `wal`: [`keel_wal::Wal`] with default options (64 MiB preallocated segments, sync
//!   always). Writers take the next index under a lock and release it once their batch
//!   is queued ([`Wal::write_queued`]), so indexes are appended in order while group
//!   commit merges concurrent appends into one write and one `fdatasync`.
//! * `rocksdb` (feature `rocksdb`): RocksDB's own synced writes: one `WriteBatch` of one
//!   entry keyed by big-endian index, `sync = true`; RocksDB's write groups merge them.
//! * `rocks_log` (feature `rocksdb`): [`keel_wal::RocksLogStore`], the RocksDB `LogStore`
//!   (ordered unsynced write, then a shared `flush_wal(true)`).
//!
//! The targets and the writer loop are [`keel_load`]'s, which `keel bench wal` runs
//! too.
//!
//! Criterion measures one iteration as "every writer appends one entry" (throughput in
//! entries). Beside criterion's output the bench prints a table with entries/s, syncs/s,
//! entries per sync (WAL only) and p50/p99 append latency, over every append made.
//!
//! ```text
//! cargo bench -p keel-benches --bench wal_append
//! KEEL_BENCH_QUICK=1 cargo bench -p keel-benches --bench wal_append        # ~1 minute
//! KEEL_BENCH_QUICK=1 cargo bench -p keel-benches --features rocksdb --bench wal_append
//! KEEL_BENCH_DIR=/some/disk ...   # where the files go (default: the temp dir)
//! cargo bench -p keel-benches --bench wal_append -- 16w_1024B/wal   # a filter
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use keel_load::{payload, LoadError, RawFile, Target, WalTarget};
use keel_wal::WalOptions;
use tempfile::TempDir;

const WRITERS: [usize; 4] = [1, 4, 16, 64];
const SIZES: [usize; 3] = [128, 1024, 16 * 1024];
/// Preallocated size of the raw loop's file; it wraps around (overwriting) past this.
const RAW_FILE_BYTES: u64 = 1 << 30;

fn quick() -> bool {
    std::env::var_os("KEEL_BENCH_QUICK").is_some_and(|v| v != "0")
}

fn tempdir() -> TempDir {
    match std::env::var_os("KEEL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("KEEL_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// A target together with the temporary directory its files live in.
struct InTemp<T> {
    target: T,
    _dir: TempDir,
}

impl<T: Target> Target for InTemp<T> {
    fn append(&self, data: &[u8]) -> Result<(), LoadError> {
        self.target.append(data)
    }
    fn syncs(&self) -> Option<u64> {
        self.target.syncs()
    }
    fn batches(&self) -> Option<u64> {
        self.target.batches()
    }
}

fn in_temp<T: Target + 'static>(make: impl FnOnce(&std::path::Path) -> T) -> Arc<dyn Target> {
    let dir = tempdir();
    let target = make(dir.path());
    Arc::new(InTemp { target, _dir: dir })
}

fn raw() -> Arc<dyn Target> {
    in_temp(|d| RawFile::create(d, RAW_FILE_BYTES).expect("create raw file"))
}

fn wal() -> Arc<dyn Target> {
    in_temp(|d| WalTarget::open(d, WalOptions::default()).expect("open wal"))
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use std::sync::atomic::Ordering;

    use keel_load::StoreTarget;
    use keel_raft::{codec, Entry};
    use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

    /// RocksDB's synced writes, merged by its own write groups.
    pub struct RocksRaw {
        db: DB,
        next: AtomicU64,
    }

    impl RocksRaw {
        pub fn open(dir: &std::path::Path) -> RocksRaw {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            opts.set_use_fsync(false);
            let cfs = ["entries"]
                .into_iter()
                .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
            let db = DB::open_cf_descriptors(&opts, dir, cfs).expect("open rocksdb");
            RocksRaw {
                db,
                next: AtomicU64::new(1),
            }
        }
    }

    impl Target for RocksRaw {
        fn append(&self, data: &[u8]) -> Result<(), LoadError> {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let cf = self.db.cf_handle("entries").expect("cf");
            let mut wb = WriteBatch::default();
            wb.put_cf(
                &cf,
                index.to_be_bytes(),
                codec::encode(&Entry::new(1, index, data.to_vec())),
            );
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db.write_opt(wb, &wo).expect("rocksdb write");
            Ok(())
        }

        fn syncs(&self) -> Option<u64> {
            None
        }
    }

    pub fn raw() -> Arc<dyn Target> {
        in_temp(RocksRaw::open)
    }

    /// keel's RocksDB `LogStore`.
    pub fn log() -> Arc<dyn Target> {
        in_temp(|d| {
            let log = keel_wal::RocksLogStore::open(d).expect("open rocks log");
            StoreTarget::new(log, |l| Some(l.syncs()))
        })
    }
}

/// Everything measured for one (backend, writers, size), over all of criterion's runs.
#[derive(Default)]
struct Tally {
    entries: u64,
    wall: Duration,
    latency_ns: Option<Histogram<u64>>,
    batches_syncs: Option<(u64, u64)>,
}

type Key = (usize, &'static str, usize, usize); // (backend order, name, writers, size)

/// Runs `per_writer` appends on each of `writers` threads; returns the wall time from
/// the moment all threads are ready until the last append is durable.
fn run(
    target: &Arc<dyn Target>,
    writers: usize,
    per_writer: u64,
    data: &[u8],
) -> (Duration, Histogram<u64>) {
    let load = keel_load::Load {
        writers,
        entries: per_writer * writers as u64,
        max_duration: None,
    };
    let r = keel_load::run(target.as_ref(), load, data, &AtomicU64::new(0)).expect("append");
    (r.wall, r.latency_ns)
}

/// (batches, syncs) so far, if the target counts both.
fn counters(t: &dyn Target) -> Option<(u64, u64)> {
    Some((t.batches()?, t.syncs()?))
}

fn pct(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_quantile(p) as f64 / 1000.0
}

fn main() {
    let quick = quick();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 700 } else { 3000 }))
        .configure_from_args();

    type Make = fn() -> Arc<dyn Target>;
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
    let mut backends: Vec<(&'static str, Make)> = vec![("raw", raw), ("wal", wal)];
    #[cfg(feature = "rocksdb")]
    {
        backends.push(("rocksdb", rocks::raw));
        backends.push(("rocks_log", rocks::log));
    }

    let tallies: Arc<Mutex<BTreeMap<Key, Tally>>> = Arc::default();
    // Backends take turns within each (writers, size), so the noisy shared disk affects
    // the rows that are compared with each other alike.
    for &writers in &WRITERS {
        for &size in &SIZES {
            let mut group = c.benchmark_group(format!("wal_append/{writers}w_{size}B"));
            group.sampling_mode(SamplingMode::Flat);
            group.throughput(Throughput::Elements(writers as u64));
            for (order, (name, make)) in backends.iter().enumerate() {
                if !filter_matches(&format!("wal_append/{writers}w_{size}B/{name}")) {
                    continue;
                }
                let target = make();
                let before = counters(target.as_ref());
                let data = Arc::new(payload(size));
                let key: Key = (order, name, writers, size);
                let tallies2 = tallies.clone();
                group.bench_function(*name, |b| {
                    b.iter_custom(|iters| {
                        let (wall, lat) = run(&target, writers, iters, &data);
                        let mut t = tallies2.lock().unwrap();
                        let t = t.entry(key).or_default();
                        t.entries += iters * writers as u64;
                        t.wall += wall;
                        match &mut t.latency_ns {
                            // Both auto-resize, so adding cannot fail.
                            Some(h) => drop(h.add(&lat)),
                            None => t.latency_ns = Some(lat),
                        }
                        wall
                    })
                });
                if let (Some((b0, s0)), Some((b1, s1))) = (before, counters(target.as_ref())) {
                    if let Some(t) = tallies.lock().unwrap().get_mut(&key) {
                        t.batches_syncs = Some((b1 - b0, s1 - s0));
                    }
                }
            }
            group.finish();
        }
    }
    c.final_summary();
    print_table(&tallies.lock().unwrap());
    if filter_matches("wal_append/paired") {
        paired_one_writer(if quick { 4 } else { 10 });
    }
}

/// The 1-writer WAL ÷ raw ratio, measured with the two alternating in short slices so
/// that the shared disk's swings hit both alike (criterion runs each row as one block).
fn paired_one_writer(rounds: u32) {
    const SLICE: u64 = 100;
    println!();
    println!(
        "## wal_append/paired: 1 writer, raw and WAL alternating, {rounds} × {SLICE} appends each"
    );
    println!();
    println!("| entry | raw entries/s | WAL entries/s | WAL ÷ raw |");
    println!("|---:|---:|---:|---:|");
    for &size in &SIZES {
        let raw = raw();
        let wal = wal();
        let data = Arc::new(payload(size));
        // One slice each to warm up (first segment, page cache), not counted.
        run(&raw, 1, SLICE / 4, &data);
        run(&wal, 1, SLICE / 4, &data);
        let (mut t_raw, mut t_wal) = (Duration::ZERO, Duration::ZERO);
        for round in 0..rounds {
            // Alternate who goes first, too.
            let order: [(&Arc<dyn Target>, &mut Duration); 2] = if round % 2 == 0 {
                [(&raw, &mut t_raw), (&wal, &mut t_wal)]
            } else {
                [(&wal, &mut t_wal), (&raw, &mut t_raw)]
            };
            for (target, total) in order {
                *total += run(target, 1, SLICE, &data).0;
            }
        }
        let n = f64::from(rounds) * SLICE as f64;
        let (r, w) = (n / t_raw.as_secs_f64(), n / t_wal.as_secs_f64());
        println!("| {size} B | {r:.0} | {w:.0} | {:.2}× |", w / r);
    }
}

/// Criterion applies its own filter inside `bench_function`; this skips building the
/// target (files, threads, RocksDB) for benchmarks the filter excludes.
fn filter_matches(id: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

fn print_table(tallies: &BTreeMap<Key, Tally>) {
    println!();
    println!("## wal_append: synced appends, every append measured (warm-up included)");
    println!();
    println!(
        "| backend | writers | entry | entries/s | syncs/s | entries/sync | p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut rate: BTreeMap<(&str, usize, usize), f64> = BTreeMap::new();
    for ((_, name, writers, size), t) in tallies {
        let lat = t
            .latency_ns
            .clone()
            .unwrap_or_else(keel_load::new_histogram);
        let secs = t.wall.as_secs_f64().max(1e-9);
        let eps = t.entries as f64 / secs;
        rate.insert((name, *writers, *size), eps);
        let (syncs, per_sync) = match (*name, t.batches_syncs) {
            ("raw", _) => (format!("{eps:.0}"), "1.0".to_string()),
            (_, Some((batches, syncs))) if syncs > 0 => (
                format!("{:.0}", syncs as f64 / secs),
                format!("{:.1}", batches as f64 / syncs as f64),
            ),
            _ => ("–".to_string(), "–".to_string()),
        };
        let size = if *size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        println!(
            "| {name} | {writers} | {size} | {eps:.0} | {syncs} | {per_sync} | {:.0} | {:.0} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    println!();
    println!("| ratio | 128 B | 1 KiB | 16 KiB |");
    println!("|---|---:|---:|---:|");
    let ratio = |label: &str, a: (&str, usize), b: (&str, usize)| {
        let cells: Vec<String> = SIZES
            .iter()
            .map(
                |&s| match (rate.get(&(a.0, a.1, s)), rate.get(&(b.0, b.1, s))) {
                    (Some(x), Some(y)) if *y > 0.0 => format!("{:.2}×", x / y),
                    _ => "–".to_string(),
                },
            )
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    ratio("WAL 1w ÷ raw 1w", ("wal", 1), ("raw", 1));
    ratio("WAL 64w ÷ raw 1w", ("wal", 64), ("raw", 1));
    ratio("WAL 64w ÷ RocksDB 64w", ("wal", 64), ("rocksdb", 64));
    ratio(
        "WAL 64w ÷ RocksLogStore 64w",
        ("wal", 64),
        ("rocks_log", 64),
    );
    ratio("RocksDB 1w ÷ raw 1w", ("rocksdb", 1), ("raw", 1));
    ratio("RocksDB 64w ÷ RocksDB 1w", ("rocksdb", 64), ("rocksdb", 1));
}
