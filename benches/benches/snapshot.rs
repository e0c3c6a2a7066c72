//! Snapshot store and log cache throughput.
//!
//! # `snapshot_<N>MiB`: save and load in MB/s, next to a plain write + fsync
//!
//! All three report `Throughput::Bytes` of the *state-machine* bytes (N MiB, default
//! 1024, set by `KEEL_BENCH_SNAPSHOT_MIB`), so their MB/s compare directly:
//!
//! * `plain_write_fsync` — the baseline: create a new file, write the same bytes in
//!   1 MiB `write` calls, `sync_data` (fdatasync), then fsync the directory.
//! * `save` — `SnapshotStore::save` on the real file system (`StdFs`): chunk framing,
//!   per-chunk CRC and whole-snapshot checksum, `.tmp` file, fdatasync, rename,
//!   directory fsync. The producer ([`StreamProducer`]) streams the state in 1 MiB
//!   slices from one reused buffer, so nothing near N MiB is ever held in memory.
//! * `load_warm` — `SnapshotStore::load_newest` reading and verifying the whole
//!   snapshot (every chunk CRC, the trailer's totals and checksum) into a consumer that
//!   only folds the bytes into a checksum ([`ChecksumConsumer`]). The file is in the
//!   page cache, so this is the CPU cost of reading a snapshot.
//! * `load_cold` — the same after `posix_fadvise(DONTNEED)` drops the file's pages
//!   from the page cache (not timed), so the bytes come from the disk (or from
//!   whatever cache the hypervisor keeps).
//!
//! Both writers produce the same bytes: one 1 MiB pseudo-random slice, generated once,
//! with its first 8 bytes replaced by the slice number. Deleting the files between
//! iterations (and syncing that) is outside the timed region. Each iteration is one whole
//! snapshot (flat sampling, 10 samples).
//!
//! Criterion runs the benchmarks one after another, so on a shared machine the
//! background load can differ between the baseline and `save`. After the group, the
//! bench therefore also runs `KEEL_BENCH_SNAPSHOT_PAIRS` (default 5; 0 skips it)
//! back-to-back baseline/save pairs (alternating which goes first) and prints each pair's ratio and the median
//! `save ÷ plain` ratio — the figure the "≥ 0.8×" goal is about.
//!
//! Files go to a temporary directory under `KEEL_BENCH_DIR` (default `/var/tmp`, which
//! is disk-backed here; `/tmp` may be tmpfs, where fsync costs nothing).
//!
//! # `log_cache`: read throughput, hit vs miss, in entries/s
//!
//! 100 000 entries of 256-byte payload are written to a real `wal::Wal` (`StdFs`, in the
//! same temporary directory, `SyncPolicy::Never`, synced once at the end) and mirrored
//! into a `LogCache` whose window (default 16 MiB) holds the newest ~60 000 of them.
//! Each iteration reads one range of 64 entries (a typical replication batch) through
//! raft-core's `Storage::entries`, cycling through start positions spread over:
//!
//! * `hit` — ranges inside the window (cloned from memory);
//! * `miss_wal` — ranges below the window, read from the real WAL (index lookup,
//!   memory-mapped segment, per-entry CRC, index and term checks, decoding);
//! * `miss_memlog` — the same ranges with a `wal::MemLogStore` behind the cache: the
//!   cache's own miss path without the WAL's decoding and checks, for reference.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p keel-benches --bench snapshot
//! KEEL_BENCH_SNAPSHOT_MIB=64 cargo bench -p keel-benches --bench snapshot   # quick
//! cargo bench -p keel-benches --bench snapshot -- log_cache                 # cache only
//! ```

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use raft_core::{Entry, SnapshotMetadata, Storage};
use snapshot::{LogCache, LogCacheOptions, SnapshotConsumer, SnapshotProducer, SnapshotStore};
use snapshot::{SnapshotId, StoreOptions};
use wal::fs::StdFs;
use wal::{LogBatch, LogStore, MemLogStore, SyncPolicy, Wal, WalOptions};

const MIB: usize = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn bench_root() -> PathBuf {
    std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .expect("temporary directory")
}

/// One MiB of cheap pseudo-random bytes (raft-core's seeded generator), the template of
/// every slice.
fn template_slice() -> Vec<u8> {
    let mut rng = raft_core::Rng::new(1);
    let mut out = Vec::with_capacity(MIB);
    while out.len() < MIB {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

/// Calls `write` with the state's bytes in 1 MiB slices (the last may be shorter): the
/// template with its first 8 bytes replaced by the slice number.
fn for_each_slice(
    template: &[u8],
    total_bytes: u64,
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = template.to_vec();
    let mut left = total_bytes;
    let mut slice_no = 0u64;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        buf[..8].copy_from_slice(&slice_no.to_le_bytes());
        write(&buf[..n])?;
        left -= n as u64;
        slice_no += 1;
    }
    Ok(())
}

/// A state machine whose image is `total_bytes` of generated bytes, streamed in 1 MiB
/// slices from one buffer.
struct StreamProducer {
    template: Vec<u8>,
    total_bytes: u64,
}

impl SnapshotProducer for StreamProducer {
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        for_each_slice(&self.template, self.total_bytes, |s| out.write_all(s))
    }
}

/// Reads the whole image, keeping only its length and an XOR fold of its 8-byte words.
struct ChecksumConsumer;

impl SnapshotConsumer for ChecksumConsumer {
    type Image = (u64, u64);

    fn read_snapshot(&self, input: &mut dyn Read) -> io::Result<(u64, u64)> {
        let mut buf = vec![0u8; 256 << 10];
        let (mut bytes, mut fold) = (0u64, 0u64);
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok((bytes, fold)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // A read not a multiple of 8 bytes only shifts which bytes are folded (the
            // ragged tail is folded as a short word), never the count.
            let words = buf[..n].chunks_exact(8);
            let tail = words.remainder();
            for w in words {
                fold ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
            }
            let mut last = [0u8; 8];
            last[..tail.len()].copy_from_slice(tail);
            fold ^= u64::from_le_bytes(last);
            bytes += n as u64;
        }
    }
}

/// The baseline: a new file, the same bytes in 1 MiB writes, fdatasync, directory fsync.
fn plain_write_fsync(dir: &Path, template: &[u8], total_bytes: u64) -> Duration {
    let path = dir.join("plain.dat");
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create baseline file");
    for_each_slice(template, total_bytes, |s| file.write_all(s)).expect("baseline write");
    file.sync_data().expect("baseline fdatasync");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("baseline directory fsync");
    let elapsed = start.elapsed();
    drop(file);
    remove_durably(&path);
    elapsed
}

/// Deletes a file and syncs its directory, so that freeing (and, with `-o discard`,
/// trimming) its blocks is committed now rather than inside the next timed fsync.
fn remove_durably(path: &Path) {
    std::fs::remove_file(path).expect("remove file");
    let dir = path.parent().expect("a parent directory");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("directory fsync after removal");
}

fn meta() -> SnapshotMetadata {
    SnapshotMetadata {
        index: 1_000_000,
        term: 7,
        ..Default::default()
    }
}

/// One `SnapshotStore::save` of the whole state, timed; the file is deleted afterwards.
fn save_once(store: &SnapshotStore, producer: &StreamProducer) -> Duration {
    let start = Instant::now();
    let saved = store.save(&meta(), producer).expect("save");
    let elapsed = start.elapsed();
    assert_eq!(saved.trailer.data_bytes, producer.total_bytes);
    remove_durably(&saved.path);
    elapsed
}

/// Drops a file's pages from the page cache (it must be clean: synced).
fn evict_from_page_cache(path: &Path) {
    use std::os::unix::io::AsRawFd;
    let file = File::open(path).expect("open for fadvise");
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is owned
    // by `file` and open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed: {rc}");
}

fn snapshot_benches(c: &mut Criterion) {
    let mib = env_u64("KEEL_BENCH_SNAPSHOT_MIB", 1024);
    let total_bytes = mib * MIB as u64;
    let template = template_slice();
    let producer = StreamProducer {
        template: template.clone(),
        total_bytes,
    };
    let tmp = temp_dir("keel-bench-snapshot-");
    let plain_dir = tmp.path().join("plain");
    std::fs::create_dir_all(&plain_dir).expect("plain dir");
    let store = SnapshotStore::open(
        StdFs::shared(),
        tmp.path().join("snap"),
        StoreOptions::default(),
    )
    .expect("open store");

    let mut g = c.benchmark_group(format!("snapshot_{mib}MiB"));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(total_bytes));

    g.bench_function("plain_write_fsync", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| plain_write_fsync(&plain_dir, &template, total_bytes))
                .sum()
        })
    });
    g.bench_function("save", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| save_once(&store, &producer)).sum())
    });

    // One stored snapshot for the loads.
    let saved = store.save(&meta(), &producer).expect("save for load");
    let check = |loaded: Option<snapshot::Loaded<(u64, u64)>>| {
        let loaded = loaded.expect("a snapshot");
        assert_eq!(loaded.id, SnapshotId::of(&meta()));
        assert_eq!(loaded.image.0, total_bytes);
        assert!(loaded.skipped.is_empty());
        black_box(loaded.image.1);
    };
    g.bench_function("load_warm", |b| {
        b.iter(|| check(store.load_newest(&ChecksumConsumer).expect("load")))
    });
    g.bench_function("load_cold", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                evict_from_page_cache(&saved.path);
                let start = Instant::now();
                check(store.load_newest(&ChecksumConsumer).expect("load"));
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    remove_durably(&saved.path);

    let pairs = env_u64("KEEL_BENCH_SNAPSHOT_PAIRS", 5);
    if pairs > 0 {
        let mut ratios = Vec::new();
        for i in 0..pairs {
            // Alternate which goes first, so neither always follows the other's delete.
            let (plain, save) = if i % 2 == 0 {
                let plain = plain_write_fsync(&plain_dir, &template, total_bytes);
                (plain, save_once(&store, &producer))
            } else {
                let save = save_once(&store, &producer);
                (plain_write_fsync(&plain_dir, &template, total_bytes), save)
            };
            let mibps = |d: Duration| mib as f64 / d.as_secs_f64();
            let ratio = plain.as_secs_f64() / save.as_secs_f64();
            println!(
                "snapshot_{mib}MiB pair {}: plain_write_fsync {:.1} MiB/s, save {:.1} MiB/s, save ÷ plain {ratio:.3}",
                i + 1,
                mibps(plain),
                mibps(save)
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "snapshot_{mib}MiB paired runs: median save ÷ plain_write_fsync = {:.3} (min {:.3}, max {:.3}, {pairs} pairs)",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

const CACHE_ENTRIES: u64 = 100_000;
const PAYLOAD_BYTES: usize = 256;
const RANGE: u64 = 64;

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    (lo..hi)
        .map(|i| {
            let mut data = vec![(i % 251) as u8; PAYLOAD_BYTES];
            data[..8].copy_from_slice(&i.to_le_bytes());
            Entry::new(3, i, data)
        })
        .collect()
}

/// Fills `log` and a cache over it with `CACHE_ENTRIES` entries, in batches of 1000.
fn fill<L: LogStore + ?Sized>(log: Arc<L>) -> LogCache<L> {
    let cache = LogCache::open(log.clone(), LogCacheOptions::default()).expect("open cache");
    let mut next = 1;
    while next <= CACHE_ENTRIES {
        let hi = (next + 1000).min(CACHE_ENTRIES + 1);
        let batch = LogBatch {
            entries: entries(next, hi),
            ..Default::default()
        };
        log.write(&batch, false).expect("log write");
        cache.append(&batch.entries).expect("cache append");
        next = hi;
    }
    log.sync().expect("log sync");
    cache
}

/// Start positions of 64-entry ranges spread evenly over `[lo, hi)`.
fn starts(lo: u64, hi: u64) -> Vec<u64> {
    let span = hi - lo - RANGE;
    (0..257).map(|k| lo + span * k / 256).collect()
}

fn read_ranges<L: LogStore + ?Sized>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    cache: &LogCache<L>,
    starts: &[u64],
    expect_hit: bool,
) {
    let before = cache.stats();
    let mut k = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            let lo = starts[k % starts.len()];
            k += 1;
            let got = cache.entries(lo, lo + RANGE, u64::MAX).expect("entries");
            debug_assert_eq!(got.len() as u64, RANGE);
            black_box(got)
        })
    });
    let after = cache.stats();
    let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
    assert!(
        if expect_hit { misses == 0 } else { hits == 0 },
        "{name}: {hits} hits, {misses} misses"
    );
}

fn log_cache_benches(c: &mut Criterion) {
    let tmp = temp_dir("keel-bench-log-cache-");
    let wal = Wal::open(
        StdFs::shared(),
        tmp.path().join("wal"),
        WalOptions {
            sync_policy: SyncPolicy::Never,
            preallocate: false,
            ..Default::default()
        },
    )
    .expect("open wal");
    let wal_cache = fill(Arc::new(wal));
    let mem_cache = fill(Arc::new(MemLogStore::new()));

    let stats = wal_cache.stats();
    let window_first = stats.window_first_index.expect("a window");
    assert!(
        window_first > RANGE + 1 && window_first + RANGE < CACHE_ENTRIES,
        "window starts at {window_first}"
    );
    let hit_starts = starts(window_first, CACHE_ENTRIES + 1);
    let miss_starts = starts(1, window_first);

    let mut g = c.benchmark_group("log_cache_64x256B");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(RANGE));
    read_ranges(&mut g, "hit", &wal_cache, &hit_starts, true);
    read_ranges(&mut g, "miss_wal", &wal_cache, &miss_starts, false);
    read_ranges(&mut g, "miss_memlog", &mem_cache, &miss_starts, false);
    g.finish();
    println!(
        "log_cache: window holds entries {window_first}..={} ({} entries, {} bytes of {} max)",
        CACHE_ENTRIES, stats.window_entries, stats.window_bytes, stats.max_bytes
    );
}

criterion_group!(benches, snapshot_benches, log_cache_benches);
criterion_main!(benches);
