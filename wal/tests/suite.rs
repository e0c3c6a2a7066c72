//! One behavioural suite run against every `LogStore` backend (the in-memory model
//! and the WAL on the simulated and on the real file system), plus WAL-specific tests:
//! rotation, reopen, suffix replacement across segments, purge, preallocation, group
//! commit and poisoning.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use keel_fs::{FileSystem, SimFault, StdFs};
use keel_wal::{LogBatch, LogError, LogStore, MemLogStore, SyncPolicy, Wal, WalOptions};

/// The generic suite: Raft-log semantics any backend must have.
fn suite(log: &dyn LogStore) {
    assert_eq!((log.first_index(), log.last_index()), (1, 0));
    assert_eq!(log.term(0).unwrap(), 0);
    // Round trip, with a hard state in the same batch.
    let mut b = batch(ents(1, 51, 1, 100));
    b.hard_state = Some(hs(1, 10));
    assert_eq!(log.write(&b, true).unwrap(), 50);
    assert_eq!(log.durable_index(), 50);
    assert_eq!(log.entries(1, 51, u64::MAX).unwrap(), ents(1, 51, 1, 100));
    assert_eq!(log.hard_state(), hs(1, 10));
    // Size limit: at least one entry, then whole entries up to the limit.
    assert_eq!(log.entries(5, 51, 0).unwrap().len(), 1);
    assert_eq!(log.entries(5, 51, 3 * 124).unwrap().len(), 3);
    assert!(matches!(
        log.entries(5, 52, u64::MAX),
        Err(LogError::Unavailable(_))
    ));
    assert!(matches!(log.term(51), Err(LogError::Unavailable(51))));
    // Gaps and non-contiguous batches are refused and change nothing.
    assert!(matches!(
        log.write(&batch(ents(52, 53, 1, 1)), true),
        Err(LogError::InvalidWrite(_))
    ));
    let mut bad = ents(51, 53, 1, 1);
    bad[1].index = 60;
    assert!(log.write(&batch(bad), true).is_err());
    assert_eq!(log.last_index(), 50);
    // Replacing a conflicting suffix.
    assert_eq!(log.write(&batch(ents(40, 45, 2, 200)), false).unwrap(), 39);
    assert_eq!(log.last_index(), 44);
    log.sync().unwrap();
    assert_eq!(log.durable_index(), 44);
    assert_eq!(log.term(39).unwrap(), 1);
    assert_eq!(log.term(40).unwrap(), 2);
    assert_eq!(
        log.entries(38, 45, u64::MAX).unwrap()[2],
        ents(40, 41, 2, 200)[0]
    );
    // Explicit suffix truncation.
    log.truncate_suffix(43).unwrap();
    assert_eq!(log.last_index(), 42);
    log.truncate_suffix(100).unwrap();
    assert_eq!(log.last_index(), 42);
    // Compaction.
    log.compact(20).unwrap();
    assert_eq!(log.first_index(), 21);
    assert_eq!(log.term(20).unwrap(), 1);
    assert!(matches!(log.term(19), Err(LogError::Compacted(19))));
    assert!(matches!(
        log.entries(20, 30, u64::MAX),
        Err(LogError::Compacted(20))
    ));
    assert!(matches!(
        log.truncate_suffix(20),
        Err(LogError::Compacted(20))
    ));
    assert!(matches!(log.compact(43), Err(LogError::Unavailable(43))));
    log.compact(10).unwrap(); // below the base: no-op
    assert_eq!(log.first_index(), 21);
    // Entries overlapping the compacted prefix: the compacted part is skipped.
    log.write(&batch(ents(15, 45, 2, 10)), true).unwrap();
    assert_eq!(log.first_index(), 21);
    assert_eq!(log.last_index(), 44);
    assert_eq!(log.term(21).unwrap(), 2);
    // A snapshot ahead of the log restarts it.
    let b = LogBatch {
        snapshot: Some(snap(100, 3)),
        entries: ents(101, 103, 3, 5),
        hard_state: Some(hs(3, 100)),
    };
    assert_eq!(log.write(&b, true).unwrap(), 102);
    assert_eq!((log.first_index(), log.last_index()), (101, 102));
    assert_eq!(log.term(100).unwrap(), 3);
    assert_eq!(log.snapshot_marker(), Some(snap(100, 3)));
    // A snapshot taken inside the log compacts up to it and keeps the rest.
    log.write(&batch(ents(103, 110, 3, 5)), true).unwrap();
    let b = LogBatch {
        snapshot: Some(snap(105, 3)),
        ..LogBatch::default()
    };
    log.write(&b, true).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (106, 109));
    assert_eq!(log.snapshot_marker(), Some(snap(105, 3)));
}

/// Opens the backend under test on the same storage each time it is called; the
/// previous instance is always dropped first.
type Opener<'a> = &'a dyn Fn() -> Box<dyn LogStore>;

/// The suite, then a reopen after a clean close: the same log comes back.
fn reopen_after_clean_close(open: Opener) {
    let log = open();
    suite(log.as_ref());
    log.sync().unwrap();
    drop(log);
    let model = MemLogStore::new();
    suite(&model);
    let log = open();
    assert_same_log(log.as_ref(), &model);
    assert_eq!(log.durable_index(), log.last_index());
    // Appending after reopen continues the log.
    log.write(&batch(ents(110, 111, 3, 5)), true).unwrap();
    drop(log);
    let log = open();
    assert_eq!(log.last_index(), 110);
    assert_eq!(
        log.entries(110, 111, u64::MAX).unwrap(),
        ents(110, 111, 3, 5)
    );
}

/// Replacing a suffix that reaches far back (several WAL segments), and a truncation,
/// survive reopen.
fn suffix_replacement_survives_reopen(open: Opener) {
    let log = open();
    for i in (1..=300u64).step_by(10) {
        log.write(&batch(ents(i, i + 10, 1, 50)), true).unwrap();
    }
    log.write(&batch(ents(50, 60, 2, 70)), true).unwrap();
    assert_eq!(log.last_index(), 59);
    let check = |log: &dyn LogStore| {
        let got = log.entries(1, 60, u64::MAX).unwrap();
        assert_eq!(got[..49], ents(1, 50, 1, 50)[..]);
        assert_eq!(got[49..], ents(50, 60, 2, 70)[..]);
        assert!(matches!(log.term(60), Err(LogError::Unavailable(60))));
    };
    check(log.as_ref());
    drop(log);
    let log = open();
    check(log.as_ref());
    log.truncate_suffix(55).unwrap();
    log.sync().unwrap();
    assert_eq!(log.durable_index(), 54);
    drop(log);
    let log = open();
    assert_eq!(log.last_index(), 54);
    // The log goes on after the truncation point with a new term.
    log.write(&batch(ents(55, 57, 3, 8)), true).unwrap();
    assert_eq!(
        log.entries(54, 57, u64::MAX).unwrap()[1..],
        ents(55, 57, 3, 8)[..]
    );
}

/// Compaction keeps what is needed across reopen: later entries, the base term, the
/// hard state; compacting everything leaves an empty log that can be appended to.
fn compaction_survives_reopen(open: Opener) {
    let log = open();
    let mut b = batch(Vec::new());
    for i in (1..=400u64).step_by(4) {
        b.entries = ents(i, i + 4, 1, 60);
        b.hard_state = Some(hs(1, i));
        log.write(&b, true).unwrap();
    }
    log.compact(300).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open();
    assert_eq!(log.first_index(), 301);
    assert_eq!(log.last_index(), 400);
    assert_eq!(log.term(300).unwrap(), 1);
    assert!(matches!(log.term(299), Err(LogError::Compacted(299))));
    assert_eq!(log.hard_state(), hs(1, 397));
    assert_eq!(
        log.entries(301, 401, u64::MAX).unwrap(),
        ents(301, 401, 1, 60)
    );
    log.compact(400).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open();
    assert_eq!((log.first_index(), log.last_index()), (401, 400));
    assert_eq!(log.term(400).unwrap(), 1);
    log.write(&batch(ents(401, 402, 2, 1)), true).unwrap();
    assert_eq!(log.term(401).unwrap(), 2);
}

/// The snapshot marker and hard state survive the compaction of the entries around
/// them, and a reopen.
fn snapshot_marker_survives_compaction(open: Opener) {
    let log = open();
    let b = LogBatch {
        snapshot: Some(snap(1000, 5)),
        entries: ents(1001, 1002, 5, 10),
        hard_state: Some(hs(5, 1000)),
    };
    log.write(&b, true).unwrap();
    for i in 1002..1200u64 {
        log.write(&batch(ents(i, i + 1, 5, 40)), true).unwrap();
    }
    log.compact(1150).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open();
    assert_eq!(log.snapshot_marker(), Some(snap(1000, 5)));
    assert_eq!(log.hard_state(), hs(5, 1000));
    assert_eq!(log.first_index(), 1151);
    assert_eq!(log.last_index(), 1199);
    assert_eq!(log.term(1150).unwrap(), 5);
}

/// Appenders that take indexes in order under a lock, write unsynced, release the lock
/// and then wait for durability (the pattern of a pipelined persist stage): every
/// entry is durable when its writer returns, and the log holds all of them in order.
fn concurrent_ordered_appenders(log: Arc<dyn LogStore>) {
    let next = Arc::new(parking_lot::Mutex::new(log.last_index() + 1));
    let start = log.last_index() + 1;
    let (writers, per_writer) = (8u64, 40u64);
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (log, next) = (log.clone(), next.clone());
            std::thread::spawn(move || {
                for _ in 0..per_writer {
                    let index = {
                        let mut n = next.lock();
                        let index = *n;
                        log.write(&batch(ents(index, index + 1, 1, 32)), false)
                            .unwrap();
                        *n += 1;
                        index
                    };
                    log.sync().unwrap();
                    assert!(log.durable_index() >= index);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let end = start + writers * per_writer;
    assert_eq!(log.last_index(), end - 1);
    assert_eq!(log.durable_index(), end - 1);
    assert_eq!(
        log.entries(start, end, u64::MAX).unwrap(),
        ents(start, end, 1, 32)
    );
}

/// Readers always see a consistent log while a writer appends and compacts.
fn readers_consistent_during_writes_and_compaction(log: Arc<dyn LogStore>) {
    log.write(&batch(ents(1, 2, 1, 30)), true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (log, stop, reads) = (log.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (lo, hi) = (log.first_index(), log.last_index() + 1);
                    match log.entries(lo, hi, u64::MAX) {
                        Ok(got) => {
                            for e in got {
                                assert_eq!(e.data, payload(e.index, e.term, 30));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        // Compaction may overtake the read; that is the only error allowed.
                        Err(LogError::Compacted(_)) => {}
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut i = 2u64;
    while i < 400 || (reads.load(Ordering::Relaxed) < 50 && i < 20_000) {
        log.write(&batch(ents(i, i + 1, 1, 30)), true).unwrap();
        if i.checked_rem(50) == Some(0) {
            log.compact(i - 20).unwrap();
        }
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
}

/// Every backend-generic case against one backend. `open` must open the same storage
/// each time; `fresh` makes a new empty storage and returns its opener.
fn generic_cases(fresh: &dyn Fn() -> Box<dyn Fn() -> Box<dyn LogStore>>) {
    reopen_after_clean_close(fresh().as_ref());
    suffix_replacement_survives_reopen(fresh().as_ref());
    compaction_survives_reopen(fresh().as_ref());
    snapshot_marker_survives_compaction(fresh().as_ref());
    concurrent_ordered_appenders(Arc::from(fresh()()));
    readers_consistent_during_writes_and_compaction(Arc::from(fresh()()));
}

#[test]
fn generic_cases_wal_sim() {
    let seed = AtomicU64::new(100);
    generic_cases(&|| {
        let fs = sim(seed.fetch_add(1, Ordering::Relaxed));
        Box::new(move || Box::new(open_sim(&fs, small_opts())) as Box<dyn LogStore>)
    });
}

#[test]
fn generic_cases_wal_real_fs() {
    let dirs = parking_lot::Mutex::new(Vec::new());
    generic_cases(&|| {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().to_path_buf();
        dirs.lock().push(tmp);
        Box::new(move || {
            let opts = WalOptions {
                segment_size_bytes: 8192,
                ..WalOptions::default()
            };
            Box::new(Wal::open(StdFs::shared(), &path, opts).unwrap()) as Box<dyn LogStore>
        })
    });
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use keel_wal::RocksLogStore;

    fn open_rocks(path: &Path) -> Box<dyn LogStore> {
        Box::new(RocksLogStore::open(path).unwrap())
    }

    #[test]
    fn suite_rocksdb() {
        let tmp = tempfile::tempdir().unwrap();
        suite(open_rocks(tmp.path()).as_ref());
    }

    #[test]
    fn generic_cases_rocksdb() {
        let dirs = parking_lot::Mutex::new(Vec::new());
        generic_cases(&|| {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().to_path_buf();
            dirs.lock().push(tmp);
            Box::new(move || open_rocks(&path))
        });
    }

    /// A second open of a directory in use is refused (RocksDB's lock file), rather
    /// than two logs writing one directory.
    #[test]
    fn rocksdb_refuses_a_second_open() {
        let tmp = tempfile::tempdir().unwrap();
        let log = open_rocks(tmp.path());
        assert!(RocksLogStore::open(tmp.path()).is_err());
        drop(log);
        assert!(RocksLogStore::open(tmp.path()).is_ok());
    }

    /// `sync` on a freshly opened (or reopened) log with nothing written returns.
    #[test]
    fn rocksdb_sync_without_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let log = open_rocks(tmp.path());
        log.sync().unwrap();
        log.write(&batch(ents(1, 3, 1, 10)), false).unwrap();
        drop(log);
        let log = open_rocks(tmp.path());
        log.sync().unwrap();
        assert_eq!(log.durable_index(), 2);
        assert_eq!(log.entries(1, 3, u64::MAX).unwrap(), ents(1, 3, 1, 10));
    }
}

#[test]
fn suite_mem() {
    suite(&MemLogStore::new());
}

#[test]
fn suite_wal_sim() {
    let fs = sim(1);
    let wal = open_sim(&fs, small_opts());
    suite(&wal);
    assert!(wal.segment_names().len() > 1 || wal.stats().segments_purged > 0);
    // Reopen after a clean close: the same log comes back.
    let model = MemLogStore::new();
    suite(&model);
    wal.close().unwrap();
    let wal = open_sim(&fs, small_opts());
    assert_same_log(&wal, &model);
}

#[test]
fn suite_wal_real_fs_with_preallocation() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 8192,
        ..WalOptions::default()
    };
    let wal = Wal::open(StdFs::shared(), tmp.path(), opts.clone()).unwrap();
    suite(&wal);
    let model = MemLogStore::new();
    suite(&model);
    wal.close().unwrap();
    let wal = Wal::open(StdFs::shared(), tmp.path(), opts).unwrap();
    assert_same_log(&wal, &model);
    // Leftover preallocated files are removed at open and never mistaken for segments.
    assert!(wal.recovery_report().preallocated_removed <= 1);
    assert!(wal.recovery_report().tail_cut.is_none());
}

#[test]
fn rotation_reopen_and_preallocated_space() {
    let fs = sim(2);
    let wal = open_sim(&fs, small_opts());
    for i in 1..=200u64 {
        wal.write(&batch(ents(i, i + 1, 1, 64)), true).unwrap();
    }
    let names = wal.segment_names();
    assert!(names.len() >= 4, "expected rotation, got {names:?}");
    // Names show order and first index; each starts where the previous one ended.
    for pair in names.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert!(pair[1].first_index > pair[0].first_index);
    }
    // Segments are allocated to their full size up front.
    for n in &names {
        let len = fs
            .file_bytes(&Path::new(DIR).join(n.to_string()))
            .unwrap()
            .len();
        assert_eq!(len, 4096, "{n}");
    }
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.last_index(), 200);
    assert_eq!(wal.entries(1, 201, u64::MAX).unwrap(), ents(1, 201, 1, 64));
    // Appending after reopen continues in the recovered last segment.
    wal.write(&batch(ents(201, 202, 1, 64)), true).unwrap();
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.last_index(), 201);
    assert!(wal.recovery_report().tail_cut.is_none());
}

#[test]
fn oversized_batch_gets_its_own_segment() {
    let fs = sim(3);
    let wal = open_sim(&fs, small_opts());
    wal.write(&batch(ents(1, 3, 1, 10)), true).unwrap();
    wal.write(&batch(ents(3, 6, 1, 3000)), true).unwrap();
    wal.write(&batch(ents(6, 7, 1, 10)), true).unwrap();
    assert_eq!(wal.entries(1, 7, u64::MAX).unwrap().len(), 6);
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.entries(3, 6, u64::MAX).unwrap(), ents(3, 6, 1, 3000));
}

#[test]
fn suffix_replacement_across_segments_survives_reopen() {
    let fs = sim(4);
    let wal = open_sim(&fs, small_opts());
    for i in (1..=300u64).step_by(10) {
        wal.write(&batch(ents(i, i + 10, 1, 50)), true).unwrap();
    }
    let before = wal.segment_names();
    // Index 50 lives several segments back.
    let seg_of_50 = before
        .iter()
        .rev()
        .find(|n| n.first_index <= 50)
        .copied()
        .unwrap();
    assert!(seg_of_50.seq + 2 < before.last().unwrap().seq);
    wal.write(&batch(ents(50, 60, 2, 70)), true).unwrap();
    assert_eq!(wal.last_index(), 59);
    let check = |wal: &Wal| {
        let got = wal.entries(1, 60, u64::MAX).unwrap();
        assert_eq!(got[..49], ents(1, 50, 1, 50)[..]);
        assert_eq!(got[49..], ents(50, 60, 2, 70)[..]);
        assert!(matches!(wal.term(60), Err(LogError::Unavailable(60))));
    };
    check(&wal);
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    check(&wal);
    // And a truncate record replays too.
    wal.truncate_suffix(55).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.last_index(), 54);
}

#[test]
fn compaction_deletes_whole_segments_and_survives_reopen() {
    let fs = sim(5);
    let wal = open_sim(&fs, small_opts());
    let mut b = batch(Vec::new());
    for i in (1..=400u64).step_by(4) {
        b.entries = ents(i, i + 4, 1, 60);
        b.hard_state = Some(hs(1, i));
        wal.write(&b, true).unwrap();
    }
    let before = wal.segment_names();
    wal.compact(300).unwrap();
    let after = wal.segment_names();
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(
        wal.stats().segments_purged as usize,
        before.len() - after.len()
    );
    // The files are gone from the directory, durably.
    fs.crash();
    let listing = fs.list_dir(Path::new(DIR)).unwrap();
    assert_eq!(
        listing.iter().filter(|n| n.ends_with(".wal")).count(),
        after.len()
    );
    // Everything needed survives: entries after 300, the base term, the hard state.
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.first_index(), 301);
    assert_eq!(wal.last_index(), 400);
    assert_eq!(wal.term(300).unwrap(), 1);
    assert_eq!(wal.hard_state(), hs(1, 397));
    assert_eq!(
        wal.entries(301, 401, u64::MAX).unwrap(),
        ents(301, 401, 1, 60)
    );
    // Compacting everything keeps only the active segment.
    wal.compact(400).unwrap();
    assert_eq!(wal.segment_names().len(), 1);
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!((wal.first_index(), wal.last_index()), (401, 400));
    assert_eq!(wal.term(400).unwrap(), 1);
    wal.write(&batch(ents(401, 402, 2, 1)), true).unwrap();
}

#[test]
fn snapshot_marker_survives_purge_of_its_segment() {
    let fs = sim(6);
    let wal = open_sim(&fs, small_opts());
    let b = LogBatch {
        snapshot: Some(snap(1000, 5)),
        entries: ents(1001, 1002, 5, 10),
        hard_state: Some(hs(5, 1000)),
    };
    wal.write(&b, true).unwrap();
    for i in 1002..1200u64 {
        wal.write(&batch(ents(i, i + 1, 5, 40)), true).unwrap();
    }
    wal.compact(1150).unwrap();
    drop(wal);
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.snapshot_marker(), Some(snap(1000, 5)));
    assert_eq!(wal.hard_state(), hs(5, 1000));
    assert_eq!(wal.first_index(), 1151);
    assert_eq!(wal.last_index(), 1199);
}

#[test]
fn group_commit_merges_concurrent_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Arc::new(
        Wal::open(
            StdFs::shared(),
            tmp.path(),
            WalOptions {
                segment_size_bytes: 1 << 20,
                ..WalOptions::default()
            },
        )
        .unwrap(),
    );
    // Each writer appends hard states only (entries from many writers would need
    // coordinated indexes); every call asks for a sync.
    let writers = 8;
    let per_writer = 40;
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    let b = LogBatch {
                        hard_state: Some(hs(t, i)),
                        ..LogBatch::default()
                    };
                    wal.write(&b, true).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = wal.stats();
    let writes = writers * per_writer;
    assert_eq!(stats.batches, writes);
    assert!(
        stats.syncs < writes,
        "group commit should merge syncs: {stats:?}"
    );
}

#[test]
fn write_queued_keeps_index_order_and_shares_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(StdFs::shared(), tmp.path(), opts.clone()).unwrap());
    let next = Arc::new(parking_lot::Mutex::new(1u64));
    let (writers, per_writer) = (16u64, 50u64);
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (wal, next) = (wal.clone(), next.clone());
            std::thread::spawn(move || {
                for _ in 0..per_writer {
                    let mut n = next.lock();
                    let index = *n;
                    *n += 1;
                    let b = batch(ents(index, index + 1, 1, 100));
                    let durable = wal.write_queued(&b, true, move || drop(n)).unwrap();
                    assert!(durable >= index, "{index} not durable: {durable}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = writers * per_writer;
    assert_eq!(wal.last_index(), total);
    assert_eq!(wal.durable_index(), total);
    let stats = wal.stats();
    assert_eq!(stats.batches, total);
    assert!(
        stats.syncs < total,
        "group commit should merge syncs: {stats:?}"
    );
    let wal = Arc::into_inner(wal).unwrap();
    wal.close().unwrap();
    let wal = Wal::open(StdFs::shared(), tmp.path(), opts).unwrap();
    assert_eq!(
        wal.entries(1, total + 1, u64::MAX).unwrap(),
        ents(1, total + 1, 1, 100)
    );
    // A refused batch still releases the caller's lock.
    let mut released = false;
    let err = wal.write_queued(&batch(ents(total + 5, total + 6, 1, 1)), true, || {
        released = true
    });
    assert!(matches!(err, Err(LogError::InvalidWrite(_))));
    assert!(released);
}

#[test]
fn readers_see_consistent_entries_while_a_writer_rotates_and_compacts() {
    let fs = sim(7);
    let wal = Arc::new(open_sim(&fs, small_opts()));
    wal.write(&batch(ents(1, 2, 1, 30)), true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let wal = wal.clone();
            let stop = stop.clone();
            let reads = reads.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
                    match wal.entries(lo, hi, u64::MAX) {
                        Ok(got) => {
                            for e in got {
                                assert_eq!(e.data, payload(e.index, e.term, 30));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        // Compaction may overtake the read; that is the only error allowed.
                        Err(LogError::Compacted(_)) => {}
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
            })
        })
        .collect();
    // Keep writing until the readers have overlapped with plenty of writes.
    let mut i = 2u64;
    while i < 400 || (reads.load(Ordering::Relaxed) < 50 && i < 20_000) {
        wal.write(&batch(ents(i, i + 1, 1, 30)), true).unwrap();
        if i.checked_rem(50) == Some(0) {
            wal.compact(i - 20).unwrap();
        }
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
}

#[test]
fn failed_sync_poisons_the_log() {
    let fs = sim(8);
    let wal = open_sim(&fs, small_opts());
    wal.write(&batch(ents(1, 3, 1, 10)), true).unwrap();
    fs.fail_sync_after(0, SimFault::Eio);
    let err = wal.write(&batch(ents(3, 4, 1, 10)), true).unwrap_err();
    assert!(
        matches!(err, LogError::Io(ref e) if e.raw_os_error() == Some(5)),
        "{err:?}"
    );
    assert!(wal.is_poisoned());
    // No retry: everything after is refused, and nothing pretends to be durable.
    assert!(matches!(wal.sync(), Err(LogError::Poisoned)));
    assert!(matches!(
        wal.write(&batch(ents(4, 5, 1, 10)), true),
        Err(LogError::Poisoned)
    ));
    assert_eq!(wal.durable_index(), 2);
}

#[test]
fn failed_write_poisons_the_log_and_recovery_drops_the_torn_batch() {
    let fs = sim(9);
    let wal = open_sim(&fs, small_opts());
    wal.write(&batch(ents(1, 3, 1, 10)), true).unwrap();
    fs.fail_write_after(0, SimFault::Enospc);
    assert!(matches!(
        wal.write(&batch(ents(3, 9, 1, 100)), true),
        Err(LogError::Io(_))
    ));
    assert!(matches!(wal.compact(1), Err(LogError::Poisoned)));
    drop(wal);
    fs.crash();
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.last_index(), 2);
}

#[test]
fn sync_policies() {
    for (policy, expect_durable) in [
        (SyncPolicy::Always, 1),
        (SyncPolicy::Never, 0),
        (SyncPolicy::EveryMs(60_000), 0),
    ] {
        let fs = sim(10);
        let wal = open_sim(
            &fs,
            WalOptions {
                sync_policy: policy,
                ..small_opts()
            },
        );
        let durable = wal.write(&batch(ents(1, 2, 1, 10)), true).unwrap();
        assert_eq!(durable, expect_durable, "{policy:?}");
        assert_eq!(
            wal.write(&batch(ents(2, 3, 1, 10)), false).unwrap(),
            expect_durable
        );
        wal.sync().unwrap();
        assert_eq!(wal.durable_index(), 2, "{policy:?}");
    }
}

#[test]
fn open_rejects_tiny_segments() {
    let fs = sim(11);
    let opts = WalOptions {
        segment_size_bytes: 100,
        ..small_opts()
    };
    assert!(Wal::open(fs.shared(), DIR, opts).is_err());
}
