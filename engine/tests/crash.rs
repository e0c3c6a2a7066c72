//! Power loss on keel-fs's simulated file system: unsynced bytes are dropped, torn or
//! garbled, and directory changes not synced are undone. Nothing acknowledged may be
//! lost, and a failed fsync must stop the node rather than be retried. Each scenario
//! runs on keel's key-value store (`kv::`) and on the harness's `Registers`
//! (`registers::`), a state machine that snapshots in place rather than freezing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{for_each_model, key, single, value};
use keel_engine::testing::{wait_until, KvClient, KvModel, ProcessFs};
use keel_engine::{Config, Error, FatalKind};
use keel_fs::{CrashMode, SimFault, SimFs};

// A run of the node's process on `fs` (see `ProcessFs`: a crash also ends the run's
// I/O, as it ends the process).
fn on_sim(fs: &SimFs) -> (Config, ProcessFs) {
    let run = ProcessFs::new(fs);
    let mut c = single(std::path::Path::new("/keel"));
    c.fs = Arc::new(run.clone());
    // Snapshots and compaction run during the workload too.
    c.snapshot_every = 40;
    c.catch_up_entries = 10;
    c.wal_segment_size_bytes = 64 << 10;
    (c, run)
}

for_each_model! {
    power_loss_mid_workload_keeps_every_acknowledged_write => power_loss_mid_workload();
    a_failed_fsync_stops_the_node_loudly => a_failed_fsync_stops_the_node();
}

fn power_loss_mid_workload<M: KvModel>() {
    for seed in 1..=4u64 {
        let fs = SimFs::new(seed);
        let acked = Arc::new(Mutex::new(Vec::new()));
        {
            let (config, run) = on_sim(&fs);
            let db = Arc::new(M::open_node(config).unwrap());
            let stop = Arc::new(AtomicBool::new(false));
            let writers: Vec<_> = (0..4u64)
                .map(|t| {
                    let (db, stop, acked) =
                        (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&acked));
                    std::thread::spawn(move || {
                        let mut i = t * 1_000_000;
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            match db.put_timeout(&key(i), &value(i), Duration::from_millis(500)) {
                                Ok(()) => acked.lock().unwrap().push(i),
                                Err(_) => break,
                            }
                        }
                    })
                })
                .collect();
            // The point of the test: power fails at an arbitrary moment of the load,
            // a different one per seed.
            std::thread::sleep(Duration::from_millis(150 + 20 * seed));
            run.kill(CrashMode::Random);
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                w.join().unwrap();
            }
        }
        let acked = acked.lock().unwrap().clone();
        assert!(!acked.is_empty(), "seed {seed}: nothing acknowledged");
        let db = M::open_node(on_sim(&fs).0).unwrap();
        for &i in &acked {
            assert_eq!(
                db.get(&key(i)).unwrap(),
                Some(value(i)),
                "seed {seed}: key {i}"
            );
        }
        // The workload spanned snapshots and compactions, so recovery went through them.
        let st = db.replica().status();
        assert!(
            st.snapshot_index > 0 && st.first_index > 1,
            "seed {seed}: {st:?}"
        );
        db.put(b"after", b"crash").unwrap();
        db.replica().close().unwrap();
    }
}

fn a_failed_fsync_stops_the_node<M: KvModel>() {
    let fs = SimFs::new(9);
    let db = M::open_node(on_sim(&fs).0).unwrap();
    for i in 0..5 {
        db.put(&key(i), &value(i)).unwrap();
    }
    fs.fail_sync_after(0, SimFault::Eio);
    let err = db.put(b"doomed", b"x").unwrap_err();
    // Proposed and written, but not known to be durable: it may or may not survive.
    assert!(matches!(err, Error::Indeterminate(_)), "{err}");
    let fatal = wait_until(Duration::from_secs(2), || db.replica().status().fatal)
        .expect("the node reports why it stopped");
    assert_eq!(fatal.kind, FatalKind::LogWrite, "{fatal}");
    assert!(fatal.detail.contains("sync"), "{fatal}");
    assert!(fatal.thread.starts_with("keel-persist-"), "{fatal}");
    let err = db.put(b"k", b"v").unwrap_err();
    assert_eq!(err.fatal(), Some(&fatal), "{err}");
    assert!(matches!(err, Error::Stopped(_)), "{err}");
    assert!(db.replica().close().is_err());
    drop(db);
    // After the crash that a real failed fsync implies, the acknowledged writes are there.
    fs.crash();
    let db = M::open_node(on_sim(&fs).0).unwrap();
    for i in 0..5 {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)));
    }
    db.replica().close().unwrap();
}
