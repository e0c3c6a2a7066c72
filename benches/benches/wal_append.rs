//! Synced append throughput and latency of the Raft log, against the disk's own limit.
//!
//! For 1, 4, 16 and 64 concurrent writers × 128 B, 1 KiB and 16 KiB entries, each writer
//! appends one entry at a time and waits until it is durable:
//!
//! * `raw`: a `write` + `fdatasync` loop on a file preallocated with `fallocate` (as the
//!   WAL's segments are); each writer's append is serialized behind one mutex, so this
//!   is one log's limit on this disk: one sync per entry.
//! * `wal`: [`wal::Wal`] with default options (64 MiB preallocated segments, sync
//!   always). Writers take the next index under a lock and release it once their batch
//!   is queued ([`Wal::write_queued`]), so indexes are appended in order while group
//!   commit merges concurrent appends into one write and one `fdatasync`.
//! * `rocksdb` (feature `rocksdb`): RocksDB's own synced writes: one `WriteBatch` of one
//!   entry keyed by big-endian index, `sync = true`; RocksDB's write groups merge them.
//! * `rocks_log` (feature `rocksdb`): [`wal::RocksLogStore`], the RocksDB `LogStore`
//!   (ordered unsynced write, then a shared `flush_wal(true)`).
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
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use raft_core::Entry;
use tempfile::TempDir;
use wal::fs::StdFs;
use wal::{LogBatch, Wal, WalOptions};

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

fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One log under test: `append` makes one entry durable and may be called from many
/// threads at once.
trait Target: Send + Sync {
    fn append(&self, data: &[u8]);
    /// (batches, syncs) so far, if the target counts them.
    fn counters(&self) -> Option<(u64, u64)> {
        None
    }
}

/// `write` + `fdatasync` on a preallocated file, one append at a time.
struct Raw {
    file: Mutex<(File, u64)>,
    _dir: TempDir,
}

impl Raw {
    fn new() -> Raw {
        let dir = tempdir();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("raw.log"))
            .expect("create raw file");
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: fallocate reads only its integer arguments on a descriptor we own.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, RAW_FILE_BYTES as i64) };
            assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
        }
        file.sync_all().expect("sync raw file");
        // The file's directory entry is durable too, as the WAL's are.
        File::open(dir.path())
            .and_then(|d| d.sync_all())
            .expect("sync dir");
        Raw {
            file: Mutex::new((file, 0)),
            _dir: dir,
        }
    }
}

impl Target for Raw {
    fn append(&self, data: &[u8]) {
        let mut g = self.file.lock().unwrap();
        let (file, off) = &mut *g;
        if *off + data.len() as u64 > RAW_FILE_BYTES {
            *off = 0;
        }
        file.write_all_at(data, *off).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        *off += data.len() as u64;
    }
}

/// The segmented WAL; indexes are taken under `next` and released once queued.
struct WalTarget {
    wal: Wal,
    next: Mutex<u64>,
    _dir: TempDir,
}

impl WalTarget {
    fn new() -> WalTarget {
        let dir = tempdir();
        let wal = Wal::open(StdFs::shared(), dir.path(), WalOptions::default()).expect("open wal");
        WalTarget {
            wal,
            next: Mutex::new(1),
            _dir: dir,
        }
    }
}

impl Target for WalTarget {
    fn append(&self, data: &[u8]) {
        let data = data.to_vec();
        let mut guard = self.next.lock().unwrap();
        let index = *guard;
        *guard += 1;
        let batch = LogBatch {
            entries: vec![Entry::new(1, index, data)],
            ..LogBatch::default()
        };
        let durable = self
            .wal
            .write_queued(&batch, true, move || drop(guard))
            .expect("wal append");
        assert!(durable >= index, "entry {index} not durable ({durable})");
    }

    fn counters(&self) -> Option<(u64, u64)> {
        let s = self.wal.stats();
        Some((s.batches, s.syncs))
    }
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use wal::LogStore;

    use raft_core::codec;
    use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

    /// RocksDB's synced writes, merged by its own write groups.
    pub struct RocksRaw {
        db: DB,
        next: AtomicU64,
        _dir: TempDir,
    }

    impl RocksRaw {
        pub fn new() -> RocksRaw {
            let dir = tempdir();
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            opts.set_use_fsync(false);
            let cfs = ["entries"]
                .into_iter()
                .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
            let db = DB::open_cf_descriptors(&opts, dir.path(), cfs).expect("open rocksdb");
            RocksRaw {
                db,
                next: AtomicU64::new(1),
                _dir: dir,
            }
        }
    }

    impl Target for RocksRaw {
        fn append(&self, data: &[u8]) {
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
        }
    }

    /// keel's RocksDB `LogStore`.
    pub struct RocksLog {
        log: wal::RocksLogStore,
        next: Mutex<u64>,
        _dir: TempDir,
    }

    impl RocksLog {
        pub fn new() -> RocksLog {
            let dir = tempdir();
            let log = wal::RocksLogStore::open(dir.path()).expect("open rocks log");
            RocksLog {
                log,
                next: Mutex::new(1),
                _dir: dir,
            }
        }
    }

    impl Target for RocksLog {
        fn append(&self, data: &[u8]) {
            let data = data.to_vec();
            {
                let mut next = self.next.lock().unwrap();
                let index = *next;
                *next += 1;
                let batch = LogBatch {
                    entries: vec![Entry::new(1, index, data)],
                    ..LogBatch::default()
                };
                self.log.write(&batch, false).expect("rocks log write");
            }
            self.log.sync().expect("rocks log sync");
        }
    }
}

/// Everything measured for one (backend, writers, size), over all of criterion's runs.
#[derive(Default)]
struct Tally {
    entries: u64,
    wall: Duration,
    latencies_ns: Vec<u64>,
    batches_syncs: Option<(u64, u64)>,
}

type Key = (usize, &'static str, usize, usize); // (backend order, name, writers, size)

/// Runs `per_writer` appends on each of `writers` threads; returns the wall time from
/// the moment all threads are ready until the last append is durable.
fn run(
    target: &Arc<dyn Target>,
    writers: usize,
    per_writer: u64,
    data: &Arc<Vec<u8>>,
) -> (Duration, Vec<u64>) {
    let start = Arc::new(Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (target, start, data) = (target.clone(), start.clone(), data.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_writer as usize);
                start.wait();
                for _ in 0..per_writer {
                    let t = Instant::now();
                    target.append(&data);
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().expect("writer thread"));
    }
    (t0.elapsed(), lat)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
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
    let mut backends: Vec<(&'static str, Make)> = vec![
        ("raw", || Arc::new(Raw::new())),
        ("wal", || Arc::new(WalTarget::new())),
    ];
    #[cfg(feature = "rocksdb")]
    {
        backends.push(("rocksdb", || Arc::new(rocks::RocksRaw::new())));
        backends.push(("rocks_log", || Arc::new(rocks::RocksLog::new())));
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
                let before = target.counters();
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
                        t.latencies_ns.extend(lat);
                        wall
                    })
                });
                if let (Some((b0, s0)), Some((b1, s1))) = (before, target.counters()) {
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
        let raw: Arc<dyn Target> = Arc::new(Raw::new());
        let wal: Arc<dyn Target> = Arc::new(WalTarget::new());
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
        let mut lat = t.latencies_ns.clone();
        lat.sort_unstable();
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
