//! The one rule for syncing, pinned for every backend: callers mark writes durable,
//! the store's `SyncPolicy` alone decides whether that syncs, and nothing is synced
//! twice (an explicit `sync()` after a synced write, or a durable write with nothing
//! new, costs no fdatasync). On the simulated file system the store's own sync count
//! is checked against the fdatasyncs that reached the disk.

mod common;

use common::*;
use keel_fs::SimFs;
use keel_wal::{LogBatch, LogStore, MemLogStore, SyncPolicy, WalOptions};

/// A store under test, and how to read the fdatasyncs that really reached its disk
/// (where there is a simulated disk to ask).
struct Subject {
    name: &'static str,
    log: Box<dyn LogStore>,
    disk_syncs: Option<Box<dyn Fn() -> u64>>,
    // Where a store on the real file system lives, removed after the test.
    _dir: Option<tempfile::TempDir>,
}

fn subjects(policy: SyncPolicy) -> Vec<Subject> {
    let fs = sim(1);
    let wal = open_sim(
        &fs,
        WalOptions {
            sync_policy: policy,
            ..small_opts()
        },
    );
    #[allow(unused_mut)]
    let mut subjects = vec![
        Subject {
            name: "mem",
            log: Box::new(MemLogStore::with_sync_policy(policy)),
            disk_syncs: None,
            _dir: None,
        },
        Subject {
            name: "wal",
            log: Box::new(wal),
            disk_syncs: Some(Box::new(move || fs.sync_count())),
            _dir: None,
        },
    ];
    #[cfg(feature = "rocksdb")]
    {
        let dir = tempfile::tempdir().unwrap();
        let log = keel_wal::RocksLogStore::open_with_sync_policy(dir.path(), policy).unwrap();
        subjects.push(Subject {
            name: "rocksdb",
            log: Box::new(log),
            disk_syncs: None,
            _dir: Some(dir),
        });
    }
    subjects
}

/// Runs `op` and returns how many syncs the store counted during it, after checking
/// that the disk (if there is one) saw exactly those.
fn syncs_during(s: &Subject, op: impl FnOnce(&dyn LogStore)) -> u64 {
    let disk_before = s.disk_syncs.as_ref().map(|f| f());
    let store_before = s.log.syncs();
    op(s.log.as_ref());
    let store = s.log.syncs() - store_before;
    if let (Some(disk_syncs), Some(before)) = (&s.disk_syncs, disk_before) {
        assert_eq!(
            store,
            disk_syncs() - before,
            "{}: the store's count is the disk's",
            s.name
        );
    }
    store
}

#[test]
fn under_always_a_durable_write_syncs_once_and_nothing_syncs_twice() {
    for s in subjects(SyncPolicy::Always) {
        let name = s.name;
        let n = syncs_during(&s, |log| {
            assert_eq!(log.write(&batch(ents(1, 4, 1, 10)), true).unwrap(), 3);
        });
        assert_eq!(n, 1, "{name}: a durable write is synced");
        let n = syncs_during(&s, |log| log.sync().unwrap());
        assert_eq!(n, 0, "{name}: a sync right after a synced write is free");
        let n = syncs_during(&s, |log| {
            log.write(&LogBatch::default(), true).unwrap();
        });
        assert_eq!(n, 0, "{name}: a durable write of nothing new is free");

        let n = syncs_during(&s, |log| {
            assert_eq!(log.write(&batch(ents(4, 6, 1, 10)), false).unwrap(), 3);
            let hard_state_only = LogBatch {
                hard_state: Some(hs(1, 5)),
                ..LogBatch::default()
            };
            log.write(&hard_state_only, false).unwrap();
        });
        assert_eq!(n, 0, "{name}: writes not marked durable are not synced");
        let n = syncs_during(&s, |log| {
            assert_eq!(log.write(&LogBatch::default(), true).unwrap(), 5);
        });
        assert_eq!(n, 1, "{name}: a durable empty write syncs what came before");
        assert_eq!(s.log.durable_index(), 5, "{name}");
    }
}

#[test]
fn under_never_a_durable_write_is_not_synced_but_an_explicit_sync_is() {
    for s in subjects(SyncPolicy::Never) {
        let name = s.name;
        let n = syncs_during(&s, |log| {
            assert_eq!(log.write(&batch(ents(1, 4, 1, 10)), true).unwrap(), 0);
            let mut b = batch(ents(4, 6, 1, 10));
            b.hard_state = Some(hs(1, 5));
            assert_eq!(log.write(&b, true).unwrap(), 0);
            assert_eq!(log.write(&LogBatch::default(), true).unwrap(), 0);
        });
        assert_eq!(n, 0, "{name}: no durable write is synced under Never");
        assert_eq!(s.log.durable_index(), 0, "{name}");
        // A clean close (or a tool) still gets everything to disk, once.
        let n = syncs_during(&s, |log| {
            log.sync().unwrap();
            log.sync().unwrap();
        });
        assert_eq!(
            n, 1,
            "{name}: sync() syncs whatever the policy, and only once"
        );
        assert_eq!(s.log.durable_index(), 5, "{name}");
    }
}

/// Runs `op` and returns its result and the fdatasyncs `fs` saw during it.
fn on_disk<T>(fs: &SimFs, op: impl FnOnce() -> T) -> (T, u64) {
    let before = fs.sync_count();
    let out = op();
    (out, fs.sync_count() - before)
}

/// What a node does at start: open its log (a brand-new one gets its first segment;
/// an existing one has what it recovered synced), write its first entries or the
/// hard state recovery corrects durably, and close cleanly. Each of those states
/// reaches the disk with exactly one fdatasync.
#[test]
fn wal_start_up_syncs_each_state_once() {
    let fs = sim(2);
    let (wal, n) = on_disk(&fs, || open_sim(&fs, small_opts()));
    assert_eq!(n, 1, "a new log's first segment is synced once");
    let mut first = batch(ents(1, 4, 1, 10));
    first.hard_state = Some(hs(1, 3));
    let (_, n) = on_disk(&fs, || wal.write(&first, true).unwrap());
    assert_eq!(n, 1, "the bootstrap entries are synced once");
    let (_, n) = on_disk(&fs, || wal.sync().unwrap());
    assert_eq!(n, 0, "and not again");
    drop(wal);
    fs.crash();

    let (wal, n) = on_disk(&fs, || open_sim(&fs, small_opts()));
    assert_eq!(n, 1, "what a reopened log recovered is synced once");
    assert_eq!(wal.durable_index(), 3);
    let corrected = LogBatch {
        hard_state: Some(hs(2, 3)),
        ..LogBatch::default()
    };
    let (_, n) = on_disk(&fs, || wal.write(&corrected, true).unwrap());
    assert_eq!(n, 1, "the corrected hard state is synced once");
    let (_, n) = on_disk(&fs, || wal.close().unwrap());
    assert_eq!(n, 0, "a clean close after it has nothing left to sync");
}
