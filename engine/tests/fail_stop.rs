//! With the `failpoints` feature: a node fails as a whole. A panic in any of its
//! threads (raft, persist, apply, snapshot saver, snapshot sender) stops the node: the
//! call waiting at that moment and every later call fail with the cause (typed: a
//! `Fatal` of kind `Panic` naming the thread), `status()` shows it, `close()` reports
//! it, and every thread of the node ends without anyone closing it.
//!
//! Fail points are process-wide, so (as in `failpoints.rs`) one callback per point acts
//! only on the threads of the node a test armed, picked out by the id at the end of the
//! thread's name. Each test uses node ids no other test here uses. Ids are single
//! digits so a thread's name fits the kernel's 15 bytes (`/proc/self/task/*/comm`),
//! where the test looks for the node's threads.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use common::{key, single, value};
use keel_engine::testing::{wait_until, Cluster, Options, Storage};
use keel_engine::{Config, Db, Error, FatalKind, StopReason};

/// Generous: the machine is small and shared.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Armed,
    /// A thread of the node reached the point and waits there.
    Reached,
    Released {
        panic: bool,
    },
}

/// Holds the first thread of one node that reaches one point until the test releases
/// it, with or without a panic.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn wait_reached(&self) {
        let st = self.state.lock().unwrap();
        let (st, timeout) = self
            .changed
            .wait_timeout_while(st, WAIT, |s| *s == GateState::Armed)
            .unwrap();
        assert!(!timeout.timed_out(), "the point was not reached: {:?}", *st);
    }

    fn release(&self, panic: bool) {
        *self.state.lock().unwrap() = GateState::Released { panic };
        self.changed.notify_all();
    }

    // On the node's thread: waits for the release; true to panic.
    fn hold(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        *st = GateState::Reached;
        self.changed.notify_all();
        // Bounded: a test that never releases fails its own wait first.
        let (st, _) = self
            .changed
            .wait_timeout_while(st, 2 * WAIT, |s| *s == GateState::Reached)
            .unwrap();
        matches!(*st, GateState::Released { panic: true })
    }
}

#[derive(Default)]
struct Armed {
    installed: HashSet<&'static str>,
    gates: HashMap<(&'static str, u64), Arc<Gate>>,
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

/// Arms a gate at `point` for node `id`: the first of its threads to get there waits.
fn arm(point: &'static str, id: u64) -> Arc<Gate> {
    let gate = Arc::new(Gate {
        state: Mutex::new(GateState::Armed),
        changed: Condvar::new(),
    });
    let mut a = armed().lock().unwrap();
    a.gates.insert((point, id), Arc::clone(&gate));
    if a.installed.insert(point) {
        fail::cfg_callback(point, move || {
            let Some(me) = thread_node_id() else { return };
            let gate = armed().lock().unwrap().gates.remove(&(point, me));
            if let Some(gate) = gate {
                if gate.hold() {
                    panic!("failpoint {point}: crashing node {me}");
                }
            }
        })
        .expect("configure failpoint");
    }
    gate
}

// The names of node `id`'s threads still alive.
fn threads_of(id: u64) -> Vec<String> {
    let names: Vec<String> = ["raft", "persist", "apply", "snapsave", "snapsend"]
        .iter()
        .map(|stage| format!("keel-{stage}-{id}"))
        .collect();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .filter(|comm| names.contains(comm))
        .collect()
}

/// Everything that must hold once node `db` stopped because `thread` panicked at
/// `point`; `waiting` is the outcome of a call that waited at that moment.
fn assert_failed_as_a_whole(db: &Db, point: &str, thread: &str, waiting: keel_engine::Result<()>) {
    let fatal = wait_until(WAIT, || db.status().fatal).expect("status shows the cause");
    assert_eq!(fatal.kind, FatalKind::Panic, "{fatal}");
    assert_eq!(fatal.thread, thread, "{fatal}");
    assert!(fatal.detail.contains(point), "{fatal}");

    let err = waiting.expect_err("the waiting call failed");
    assert_eq!(err.fatal(), Some(&fatal), "waiting call: {err}");
    assert!(
        matches!(err, Error::Stopped(_) | Error::Indeterminate(_)),
        "{err}"
    );

    // Every new call fails with the cause, never proposed.
    let expect_stopped = |what: &str, r: keel_engine::Result<()>| {
        let err = r.expect_err(what);
        assert!(
            matches!(&err, Error::Stopped(StopReason::Fatal(f)) if *f == fatal),
            "{what}: {err}"
        );
    };
    expect_stopped("put", db.put(b"after", b"x"));
    expect_stopped("delete", db.delete(b"after"));
    expect_stopped("get", db.get(b"after").map(|_| ()));
    expect_stopped("get_local", db.get_local(b"after").map(|_| ()));
    expect_stopped(
        "change_membership",
        db.change_membership(keel_engine::ConfChangeV2 {
            changes: vec![keel_engine::ConfChangeSingle {
                change_type: keel_engine::ConfChangeType::AddLearnerNode,
                node_id: 99,
            }],
            ..keel_engine::ConfChangeV2::default()
        })
        .map(|_| ()),
    );
    expect_stopped("transfer_leadership", db.transfer_leadership(db.id()));

    // No thread limps on, though nobody closed the node.
    let left = wait_until(WAIT, || {
        let left = threads_of(db.id());
        left.is_empty().then_some(())
    });
    assert!(left.is_some(), "threads left: {:?}", threads_of(db.id()));
    assert_eq!(db.status().fatal.as_ref(), Some(&fatal));
    let err = db.close().expect_err("close reports the cause");
    assert_eq!(err.fatal(), Some(&fatal), "{err}");
}

fn single_node(id: u64, tweak: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = single(dir.path());
    c.id = id;
    c.peers = vec![id];
    tweak(&mut c);
    let db = Db::open(c).unwrap();
    // Leading, and every stage has run once.
    db.put(b"warm", b"up").unwrap();
    (dir, db)
}

/// A single node `id` (a snapshot every 10 entries) whose first snapshot's saver thread
/// is held at `snapshotBeforeSave`: the gate holding it.
fn saving_first_snapshot(id: u64) -> (tempfile::TempDir, Db, Arc<Gate>) {
    let (dir, db) = single_node(id, |c| {
        c.snapshot_every = 10;
        c.snapshot_log_percent = 0;
    });
    let saver = arm("snapshotBeforeSave", id);
    for i in 0..12 {
        db.put(&key(i), &value(i)).unwrap();
    }
    saver.wait_reached();
    (dir, db, saver)
}

// A write started in the background; its outcome once the node stopped.
fn put_in_background(db: &Db, k: &[u8]) -> std::thread::JoinHandle<keel_engine::Result<()>> {
    let (db, k) = (db.clone(), k.to_vec());
    std::thread::spawn(move || db.put_timeout(&k, b"v", 2 * WAIT))
}

/// A panic at `point` while a client write is held there.
fn panic_on_the_write_path(point: &'static str, id: u64, stage: &str) {
    let (_dir, db) = single_node(id, |_| {});
    let gate = arm(point, id);
    let write = put_in_background(&db, b"doomed");
    gate.wait_reached();
    // A linearizable read now waits too (or is refused once the node stopped).
    let read = {
        let db = db.clone();
        std::thread::spawn(move || db.get_timeout(b"warm", 2 * WAIT).map(|_| ()))
    };
    gate.release(true);
    let written = write.join().unwrap();
    let thread = format!("keel-{stage}-{id}");
    assert_failed_as_a_whole(&db, point, &thread, written);
    // A read served before the panic is fine; one still waiting must fail with it.
    if let Err(e) = read.join().unwrap() {
        assert_eq!(e.fatal(), db.status().fatal.as_ref(), "read: {e}");
    }
}

#[test]
fn a_panic_in_the_raft_stage_stops_the_node() {
    panic_on_the_write_path("raftBeforePropose", 1, "raft");
}

#[test]
fn a_panic_in_the_persist_stage_stops_the_node() {
    panic_on_the_write_path("raftBeforeSave", 2, "persist");
}

#[test]
fn a_panic_in_the_apply_stage_stops_the_node() {
    panic_on_the_write_path("applyBeforeEntries", 3, "apply");
}

#[test]
fn a_panic_in_the_snapshot_saver_stops_the_node() {
    let id = 4;
    let (_dir, db, saver) = saving_first_snapshot(id);
    // Hold the apply stage so that a write is surely waiting when the saver dies.
    let apply = arm("applyBeforeEntries", id);
    let write = put_in_background(&db, b"doomed");
    apply.wait_reached();
    saver.release(true);
    wait_until(WAIT, || db.status().fatal).expect("the node stopped");
    let written = write.join().unwrap();
    apply.release(false);
    assert_failed_as_a_whole(&db, "snapshotBeforeSave", "keel-snapsave-4", written);
}

/// Not a failure: a snapshot that is still being written when the writes stop. The
/// entries applied meanwhile are due for the next snapshot, which is taken once the
/// first is done, not only when another write comes (an idle node's log stayed
/// uncompacted; the sender test below waited on that compaction).
#[test]
fn a_snapshot_due_while_one_was_written_follows_it_without_new_writes() {
    let id = 8;
    let (_dir, db, saver) = saving_first_snapshot(id);
    // Due again while the first is held; then no more writes.
    for i in 12..30 {
        db.put(&key(i), &value(i)).unwrap();
    }
    let applied = db.status().applied_index;
    assert!(
        applied >= db.status().snapshot_index + 10,
        "{:?}",
        db.status()
    );
    saver.release(false);
    let caught_up = wait_until(WAIT, || {
        let st = db.status();
        (st.snapshot_index >= applied).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "no snapshot at {applied}: {:?}",
        db.status()
    );
    db.close().unwrap();
}

#[test]
fn a_panic_in_the_snapshot_sender_stops_the_node() {
    let ids = vec![5, 6, 7];
    let options = Options::new(0)
        .ids(ids.clone())
        .storage(Storage::Simulated)
        .seed(5)
        .tweak(|mut c: Config| {
            c.snapshot_every = 20;
            c.snapshot_log_percent = 0;
            c.catch_up_entries = 5;
            c
        });
    let c = Cluster::open(options).expect("start the cluster");
    let leader = c.try_wait_leader(WAIT).expect("a leader").id;
    let lagging = ids.iter().copied().find(|&i| i != leader).unwrap();
    let db = c.db(leader);
    // Applied on the leader, so in its log after its own first entry of the term; it
    // proposes nothing more until the writes below, so the lagging follower stops with
    // at most `held` entries.
    db.put(b"before", b"stop").unwrap();
    let held = db.status().last_index;
    c.stop(lagging).unwrap();
    for i in 0..100 {
        db.put(&key(i), &value(i)).unwrap();
    }
    // Past the follower's log, so only a snapshot can catch it up. Not a fixed index:
    // snapshots are written at a low priority, so on a busy machine they fall behind
    // the writes, and with three kept the compaction point trails by two of them.
    wait_until(WAIT, || (db.status().first_index > held + 1).then_some(()))
        .expect("the leader compacted its log");
    // The lagging follower comes back and can only catch up from a snapshot.
    let sender = arm("snapshotBeforeSend", leader);
    c.start(lagging).unwrap();
    sender.wait_reached();
    let apply = arm("applyBeforeEntries", leader);
    let write = put_in_background(&db, b"doomed");
    apply.wait_reached();
    sender.release(true);
    wait_until(WAIT, || db.status().fatal).expect("the node stopped");
    let written = write.join().unwrap();
    apply.release(false);
    let thread = format!("keel-snapsend-{leader}");
    assert_failed_as_a_whole(&db, "snapshotBeforeSend", &thread, written);
    // The others go on without it.
    c.crash(leader, keel_fs::CrashMode::DropUnsynced).unwrap();
    let survivors: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = c.try_wait_leader(WAIT).expect("a new leader").id;
    assert!(survivors.contains(&new_leader));
    c.db(new_leader).put(b"still", b"serving").unwrap();
}
