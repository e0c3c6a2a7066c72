//! `Config::fsync` has one home, the sync policy the log is opened with: start-up
//! writes each state to disk with exactly one fdatasync when it is on, and syncs no
//! durable write when it is off (only a clean close still syncs, as it always did).

use std::sync::Arc;

use keel_engine::transport::InProcessNetwork;
use keel_engine::{Config, Db};
use keel_fs::SimFs;

/// Node 1 of two voters on `fs`, whose peer never answers. With ticks an hour apart
/// it never campaigns, so the only log writes are the start-up ones.
fn quiet_node(fs: &SimFs, fsync: bool) -> Config {
    let mut c = Config::cluster(1, vec![1, 2], "/keel", Arc::new(InProcessNetwork::new(1)));
    c.fs = fs.shared();
    c.fsync = fsync;
    c.tick_ms = 3_600_000;
    c.request_timeout_ms = 3_600_000;
    c.scheduler_hints = false;
    // Small segments: the simulated disk holds every byte in memory.
    c.wal_segment_size_bytes = 64 << 10;
    c
}

/// Runs `op` and returns its result and the fdatasyncs `fs` saw during it.
fn on_disk<T>(fs: &SimFs, op: impl FnOnce() -> T) -> (T, u64) {
    let before = fs.sync_count();
    let out = op();
    (out, fs.sync_count() - before)
}

#[test]
fn with_fsync_each_start_up_state_is_synced_once() {
    let fs = SimFs::new(1);
    let (db, n) = on_disk(&fs, || Db::open(quiet_node(&fs, true)).unwrap());
    // The new log's first segment, then the bootstrap entries.
    assert_eq!(n, 2, "a brand-new node");
    let (closed, n) = on_disk(&fs, || db.close());
    closed.unwrap();
    assert_eq!(
        n, 0,
        "a clean close after synced writes has nothing to sync"
    );

    let (db, n) = on_disk(&fs, || Db::open(quiet_node(&fs, true)).unwrap());
    // What the log recovered; recovery has nothing to correct without a snapshot.
    assert_eq!(n, 1, "a restarted node");
    assert_eq!(db.status().last_index, 2, "the bootstrap entries survived");
    db.close().unwrap();
}

#[test]
fn without_fsync_no_durable_write_is_synced() {
    let fs = SimFs::new(2);
    let (db, n) = on_disk(&fs, || Db::open(quiet_node(&fs, false)).unwrap());
    // The new log's first segment only (the WAL's own format needs it synced).
    assert_eq!(n, 1, "a brand-new node");
    let (closed, n) = on_disk(&fs, || db.close());
    closed.unwrap();
    assert_eq!(n, 1, "a clean close still syncs what was written");

    let db = Db::open(quiet_node(&fs, false)).unwrap();
    assert_eq!(db.status().last_index, 2, "the bootstrap entries survived");
    db.close().unwrap();
}
