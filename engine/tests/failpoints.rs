//! With the `failpoints` feature: a node that dies at one of etcd's points in the
//! pipeline (or around the WAL sync) loses no acknowledged write once restarted.
//!
//! One test function only: fail points are process-wide, so in a cluster test every
//! node that reaches the point dies there. Each point is checked to be reached.
#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{key, single, value, Cluster};
use keel::{Config, Db};

// Makes `point` panic the thread that reaches it; returns whether it was reached.
fn arm(point: &str) -> Arc<AtomicBool> {
    let hit = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&hit);
    fail::cfg_callback(point, move || {
        h.store(true, Ordering::SeqCst);
        panic!("failpoint crash");
    })
    .unwrap();
    hit
}

// Points a lone node passes on every write.
fn single_node_points() {
    for point in [
        "raftBeforeSave",
        "raftAfterSave",
        "walBeforeSync",
        "walAfterSync",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut acked = Vec::new();
        let hit = {
            let db = Db::open(single(dir.path())).unwrap();
            for i in 0..20 {
                db.put(&key(i), &value(i)).unwrap();
                acked.push(i);
            }
            let hit = arm(point);
            for i in 20..30 {
                if db
                    .put_timeout(&key(i), &value(i), Duration::from_millis(300))
                    .is_ok()
                {
                    acked.push(i);
                }
            }
            fail::remove(point);
            hit
        };
        assert!(hit.load(Ordering::SeqCst), "{point} was not reached");
        let db = Db::open(single(dir.path())).unwrap();
        for &i in &acked {
            assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "{point}: key {i}");
        }
        db.put(b"alive", b"yes").unwrap();
        db.close().unwrap();
    }
}

fn snapshot_often(mut c: Config) -> Config {
    c.snapshot_every = 20;
    c.catch_up_entries = 5;
    c
}

// Points only a cluster reaches: sending, and receiving a snapshot.
fn cluster_points() {
    for point in [
        "raftBeforeLeaderSend",
        "raftBeforeFollowerSend",
        "raftBeforeSaveSnap",
        "raftAfterSaveSnap",
        "raftAfterApplySnap",
    ] {
        let mut c = Cluster::with(3, snapshot_often);
        let leader = c.wait_leader();
        let lagging = c.followers(leader)[0];
        let mut acked: Vec<u64> = Vec::new();
        let snapshot_point = point.contains("Snap");
        if snapshot_point {
            // The follower comes back after the leader compacted past it.
            c.stop(lagging);
        }
        for i in 0..60 {
            c.db(leader).put(&key(i), &value(i)).unwrap();
            acked.push(i);
        }
        let hit = arm(point);
        if snapshot_point {
            c.start(lagging);
        }
        for i in 60..70 {
            if c.db(leader)
                .put_timeout(&key(i), &value(i), Duration::from_millis(500))
                .is_ok()
            {
                acked.push(i);
            }
        }
        common::wait_until(Duration::from_secs(5), || {
            hit.load(Ordering::SeqCst).then_some(())
        })
        .unwrap_or_else(|| panic!("{point} was not reached"));
        fail::remove(point);
        // Restart every node, as after a crash of all that died.
        for id in [1, 2, 3] {
            c.kill(id);
        }
        for id in [1, 2, 3] {
            c.start(id);
        }
        c.wait_leader();
        c.wait_converged();
        for id in [1, 2, 3] {
            for &i in &acked {
                assert_eq!(
                    c.db(id).get_local(&key(i)).unwrap(),
                    Some(value(i)),
                    "{point}: node {id} key {i}"
                );
            }
        }
    }
}

#[test]
fn a_crash_at_each_failpoint_loses_no_acknowledged_write() {
    let scenario = fail::FailScenario::setup();
    single_node_points();
    cluster_points();
    scenario.teardown();
}
