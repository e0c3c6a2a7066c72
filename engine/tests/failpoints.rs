//! With the `failpoints` feature: a node that dies at one of etcd's points in the
//! pipeline (or around the WAL sync) loses no acknowledged write once restarted, and
//! a cluster node that dies there rejoins and catches up with the leader.
//!
//! Fail points are process-wide, so each point gets one callback (installed once) that
//! crashes only the thread of an armed node: the callback reads the node id from the
//! thread's name (`keel-persist-ID`, `keel-raft-ID`, ...) and panics that thread if
//! the id is armed for the point. Every test uses node ids no other test uses, so the
//! tests run in parallel without crashing each other's nodes. The node's disk is a
//! `SimFs` whose unsynced writes are dropped or torn right after the thread died, as
//! at power loss, before it restarts from what the disk kept.
//!
//! Every scenario runs on keel's key-value store (`kv::`) and on the harness's
//! `Registers` (`registers::`); the `Registers` runs use node ids 1000 above the
//! key-value runs' (`Model::OFFSET`).
#![cfg(feature = "failpoints")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{for_each_model, key, single, value, Model};
use keel_engine::testing::{wait_until, Cluster, KvClient, Options, ProcessFs, Storage};
use keel_engine::Config;
use keel_fs::{CrashMode, SimFs};

#[derive(Default)]
struct Armed {
    installed: HashSet<&'static str>,
    // (point, node id) -> set once that node's thread died there.
    nodes: HashMap<(&'static str, u64), Arc<AtomicBool>>,
}

fn armed() -> &'static Mutex<Armed> {
    static ARMED: OnceLock<Mutex<Armed>> = OnceLock::new();
    ARMED.get_or_init(Mutex::default)
}

// The node id at the end of a keel thread's name.
fn thread_node_id() -> Option<u64> {
    let t = std::thread::current();
    let name = t.name()?;
    if !name.starts_with("keel-") {
        return None;
    }
    name.rsplit('-').next()?.parse().ok()
}

/// Makes the next thread of node `id` that reaches `point` panic (once); the flag
/// tells whether it happened.
fn arm(point: &'static str, id: u64) -> Arc<AtomicBool> {
    let hit = Arc::new(AtomicBool::new(false));
    let mut a = armed().lock().unwrap();
    a.nodes.insert((point, id), Arc::clone(&hit));
    if a.installed.insert(point) {
        fail::cfg_callback(point, move || {
            let Some(me) = thread_node_id() else { return };
            let hit = armed().lock().unwrap().nodes.remove(&(point, me));
            if let Some(hit) = hit {
                hit.store(true, Ordering::SeqCst);
                panic!("failpoint {point}: crashing node {me}");
            }
        })
        .expect("configure failpoint");
    }
    hit
}

fn disarm(point: &'static str, id: u64) {
    armed().lock().unwrap().nodes.remove(&(point, id));
}

// Points a lone node passes on every write.
fn single_node_crash_at<M: Model>(point: &'static str, id: u64) {
    let id = id + M::OFFSET;
    let fs = SimFs::new(id);
    let config = |run: &ProcessFs| {
        let mut c = single(std::path::Path::new("/keel"));
        c.fs = Arc::new(run.clone());
        c.id = id;
        c.peers = vec![id];
        c
    };
    let mut acked = Vec::new();
    let hit = {
        let run = ProcessFs::new(&fs);
        let db = M::open_node(config(&run)).unwrap();
        for i in 0..20 {
            db.put(&key(i), &value(i)).unwrap();
            acked.push(i);
        }
        let hit = arm(point, id);
        for i in 20..30 {
            if db
                .put_timeout(&key(i), &value(i), Duration::from_millis(300))
                .is_ok()
            {
                acked.push(i);
            }
        }
        disarm(point, id);
        run.kill(CrashMode::Random);
        let _ = db.replica().close();
        hit
    };
    assert!(hit.load(Ordering::SeqCst), "{point} was not reached");
    let db = M::open_node(config(&ProcessFs::new(&fs))).unwrap();
    for &i in &acked {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "{point}: key {i}");
    }
    db.put(b"alive", b"yes").unwrap();
    db.replica().close().unwrap();
}

fn single_node_crashes_at_each_point<M: Model>() {
    for (n, point) in [
        "raftBeforeSave",
        "raftAfterSave",
        "walBeforeSync",
        "walAfterSync",
    ]
    .into_iter()
    .enumerate()
    {
        single_node_crash_at::<M>(point, 10 + n as u64);
    }
}

fn snapshot_often(mut c: Config) -> Config {
    c.snapshot_every = 20;
    // On the entry count alone: these tests need the log compacted soon.
    c.snapshot_log_percent = 0;
    c.catch_up_entries = 5;
    c
}

/// Which node of the cluster dies at the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Leader,
    Follower,
    /// A follower that was down while the leader compacted past it, so it receives a
    /// snapshot when it comes back.
    Lagging,
}

// Writes key `i` through whichever running node takes it; true if acknowledged.
fn write_anywhere<M: Model>(c: &Cluster<M>, avoid: u64, i: u64) -> bool {
    let nodes: Vec<u64> = c
        .running_ids()
        .into_iter()
        .filter(|&n| n != avoid)
        .collect();
    let Some(db) = nodes
        .get(i as usize % nodes.len().max(1))
        .and_then(|&n| c.node(n))
    else {
        return false;
    };
    db.put_timeout(&key(i), &value(i), Duration::from_millis(700))
        .is_ok()
}

/// In a 3-node cluster with ids `base+1..=base+3`, the `victim` dies at `point`; then
/// its disk loses what it had not synced, it restarts, and it must catch up: the same
/// applied index and the same value for every key as the rest, and no acknowledged
/// write missing anywhere.
fn cluster_crash_at<M: Model>(point: &'static str, victim: Victim, base: u64) {
    let base = base + M::OFFSET;
    let ids: Vec<u64> = (base + 1..=base + 3).collect();
    let options = Options::new(0)
        .ids(ids.clone())
        .storage(Storage::Simulated)
        .seed(base)
        .tweak(snapshot_often);
    let c = Cluster::<M>::open_model(options).expect("start the cluster");
    let leader = c.wait_leader();
    let target = match victim {
        Victim::Leader => leader,
        Victim::Follower | Victim::Lagging => ids.iter().copied().find(|&i| i != leader).unwrap(),
    };
    let mut acked = Vec::new();
    let mut i = 0u64;
    let mut write = |c: &Cluster<M>, acked: &mut Vec<u64>| {
        if write_anywhere(c, target, i) {
            acked.push(i);
        }
        i += 1;
    };
    for _ in 0..20 {
        write(&c, &mut acked);
    }
    if victim == Victim::Lagging {
        c.stop(target).unwrap();
        // Until snapshots and compaction pass everything the target has. Writes that
        // time out on a loaded machine add nothing, so this counts the leader's log,
        // not the attempts.
        let compacted = wait_until(Duration::from_secs(60), || {
            write(&c, &mut acked);
            let leader = c.leader()?;
            (leader.replica().status().first_index > 30).then_some(())
        });
        assert!(
            compacted.is_some(),
            "the leader compacted its log within 60 s"
        );
    }
    let hit = arm(point, target);
    if victim == Victim::Lagging {
        c.start(target).unwrap();
    }
    // Keep writing until the point is reached.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !hit.load(Ordering::SeqCst) && Instant::now() < deadline {
        write(&c, &mut acked);
    }
    disarm(point, target);
    assert!(
        hit.load(Ordering::SeqCst),
        "{point} ({victim:?}) was not reached"
    );
    // Power loss right after the thread died.
    c.crash(target, CrashMode::Random).unwrap();
    for _ in 0..20 {
        write(&c, &mut acked);
    }
    c.start(target).unwrap();
    c.wait_leader();
    for _ in 0..10 {
        write(&c, &mut acked);
    }
    let applied = c
        .try_wait_settled(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{point} ({victim:?}): {e}"));
    assert!(
        acked.len() >= 30,
        "{point}: only {} writes acknowledged",
        acked.len()
    );
    let leader = c.db(c.wait_leader());
    let restarted = c.db(target);
    for j in 0..i {
        let expected = leader.get_local(&key(j)).unwrap();
        if acked.contains(&j) {
            assert_eq!(
                expected,
                Some(value(j)),
                "{point}: acknowledged key {j} lost"
            );
        }
        for &id in &ids {
            assert_eq!(
                c.db(id).get_local(&key(j)).unwrap(),
                expected,
                "{point} ({victim:?}): node {id} differs from the leader on key {j} at {applied}"
            );
        }
    }
    let st = restarted.replica().status();
    assert_eq!(st.applied_index, applied, "{point}: {st:?}");
    if victim == Victim::Lagging {
        assert!(
            st.snapshot_index > 0,
            "{point}: the lagging follower caught up without a snapshot: {st:?}"
        );
    }
}

for_each_model! {
    single_node_crashes_around_the_save_and_the_sync => single_node_crashes_at_each_point();
    leader_crashes_before_sending => cluster_crash_at("raftBeforeLeaderSend", Victim::Leader, 100);
    leader_crashes_before_saving => cluster_crash_at("raftBeforeSave", Victim::Leader, 110);
    follower_crashes_before_saving => cluster_crash_at("raftBeforeSave", Victim::Follower, 120);
    leader_crashes_after_saving => cluster_crash_at("raftAfterSave", Victim::Leader, 130);
    follower_crashes_after_saving => cluster_crash_at("raftAfterSave", Victim::Follower, 140);
    leader_crashes_before_the_wal_sync => cluster_crash_at("walBeforeSync", Victim::Leader, 150);
    follower_crashes_before_the_wal_sync => cluster_crash_at("walBeforeSync", Victim::Follower, 210);
    leader_crashes_after_the_wal_sync => cluster_crash_at("walAfterSync", Victim::Leader, 220);
    follower_crashes_after_the_wal_sync => cluster_crash_at("walAfterSync", Victim::Follower, 160);
    follower_crashes_before_sending_its_acks => cluster_crash_at("raftBeforeFollowerSend", Victim::Follower, 170);
    follower_crashes_before_saving_a_snapshot => cluster_crash_at("raftBeforeSaveSnap", Victim::Lagging, 180);
    follower_crashes_after_saving_a_snapshot => cluster_crash_at("raftAfterSaveSnap", Victim::Lagging, 190);
    follower_crashes_after_applying_a_snapshot => cluster_crash_at("raftAfterApplySnap", Victim::Lagging, 200);
}
