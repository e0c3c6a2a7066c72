//! Log cache read throughput, hit vs miss, in entries/s (group `log_cache_64x256B`).
//!
//! 100 000 entries of 256-byte payload are written to a real `keel_wal::Wal` (`StdFs`, in a
//! temporary directory under `KEEL_BENCH_DIR`, default `/var/tmp`; `SyncPolicy::Never`,
//! synced once at the end) and mirrored into a `LogCache` whose window (default 16 MiB)
//! holds the newest ~60 000 of them.
//! Each iteration reads one range of 64 entries (a typical replication batch) through
//! raft-core's `Storage::entries`, cycling through start positions spread over:
//!
//! * `hit` — ranges inside the window (cloned from memory);
//! * `miss_wal` — ranges below the window, read from the real WAL (index lookup,
//!   memory-mapped segment, per-entry CRC, index and term checks, decoding);
//! * `miss_memlog` — the same ranges with a `keel_wal::MemLogStore` behind the cache: the
//!   cache's own miss path without the WAL's decoding and checks, for reference.
//!
//! ```text
//! cargo bench -p keel-benches --bench log_cache
//! ```

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_fs::StdFs;
use keel_log_cache::{LogCache, LogCacheOptions};
use keel_raft::{Entry, Storage};
use keel_wal::{LogBatch, LogStore, MemLogStore, SyncPolicy, Wal, WalOptions};

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let root = std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&root).expect("bench root");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .expect("temporary directory")
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
criterion_group!(benches, log_cache_benches);
criterion_main!(benches);
