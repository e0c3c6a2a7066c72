//! The RocksDB state machine (feature `rocksdb`): idempotent applies across restarts,
//! streaming snapshots shared with the memory state machine, all-or-nothing restores,
//! damaged directories, and whole nodes and clusters running on it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{key, single, value};
use keel_engine::state_machine::{
    restore_from_store, save_to_store, MemoryStateMachine, RocksStateMachine, StateMachine,
};
use keel_engine::testing::{fast, wait_until, Cluster};
use keel_engine::{Config, Db, Error, LogBackend, Op, StateMachineKind};
use keel_fs::StdFs;
use keel_raft::SnapshotMetadata;
use keel_snapshot::{SnapshotInfo, SnapshotStore, StoreOptions};

fn put(k: &[u8], v: &[u8]) -> Op {
    Op::Put {
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

fn del(k: &[u8]) -> Op {
    Op::Delete { key: k.to_vec() }
}

/// A store with small chunks, so a few thousand keys make many chunks.
fn store(dir: &Path) -> SnapshotStore {
    let opts = StoreOptions {
        chunk_size_bytes: 16 << 10,
        ..StoreOptions::default()
    };
    SnapshotStore::open(StdFs::shared(), dir, opts).unwrap()
}

// With a member address, so restores are checked to hand it back.
fn meta(index: u64) -> SnapshotInfo {
    SnapshotInfo {
        metadata: SnapshotMetadata {
            index,
            term: 2,
            ..SnapshotMetadata::default()
        },
        members: [(4, "127.0.0.1:7004".to_string())].into(),
    }
}

/// `n` puts at indexes 1..=n, then deletes of every seventh key.
fn workload(n: u64) -> Vec<(u64, Op)> {
    let mut ops: Vec<(u64, Op)> = (1..=n)
        .map(|i| (i, put(&key(i), &[value(i), vec![i as u8; 100]].concat())))
        .collect();
    let mut index = n;
    for i in (1..=n).step_by(7) {
        index += 1;
        ops.push((index, del(&key(i))));
    }
    ops
}

/// Both maps, read the same way.
trait Map {
    fn value(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn count(&self) -> u64;
    fn applied(&self) -> u64;
}

impl Map for MemoryStateMachine {
    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }
    fn count(&self) -> u64 {
        self.len()
    }
    fn applied(&self) -> u64 {
        self.applied_index()
    }
}

impl Map for RocksStateMachine {
    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key).unwrap()
    }
    fn count(&self) -> u64 {
        self.len()
    }
    fn applied(&self) -> u64 {
        self.applied_index()
    }
}

fn assert_same(a: &dyn Map, b: &dyn Map, n: u64) {
    assert_eq!(a.count(), b.count());
    assert_eq!(a.applied(), b.applied());
    for i in 1..=n {
        assert_eq!(a.value(&key(i)), b.value(&key(i)), "key {i}");
    }
}

fn data_families(path: &Path) -> Vec<String> {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    cfs.into_iter().filter(|n| n.starts_with("data-")).collect()
}

#[test]
fn apply_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = RocksStateMachine::open(dir.path()).unwrap();
    assert_eq!((sm.applied_index(), sm.len()), (0, 0));
    sm.apply(1, put(b"a", b"1")).unwrap();
    sm.apply_batch(vec![
        (2, put(b"b", b"2")),
        (3, put(b"c", b"3")),
        (4, del(b"a")),
    ])
    .unwrap();
    assert_eq!(sm.get(b"a").unwrap(), None);
    assert_eq!(sm.get(b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(sm.get(b"c").unwrap(), Some(b"3".to_vec()));
    assert_eq!((sm.applied_index(), sm.len()), (4, 2));
    // An empty key and an empty value are ordinary data.
    sm.apply(5, put(b"", b"")).unwrap();
    assert_eq!(sm.get(b"").unwrap(), Some(Vec::new()));
    assert_eq!(sm.len(), 3);
}

#[test]
fn a_restart_never_applies_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = RocksStateMachine::open(dir.path()).unwrap();
        sm.apply_batch(vec![
            (1, put(b"k", b"old")),
            (2, put(b"k", b"new")),
            (3, del(b"gone")),
        ])
        .unwrap();
        sm.apply(4, put(b"gone", b"back")).unwrap();
        sm.apply(5, del(b"gone")).unwrap();
        // No close: dropping is all a killed process would have done.
    }
    let mut sm = RocksStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied_index(), 5);
    // The log replays everything again after a restart; nothing at or below 5 may act.
    sm.apply_batch(vec![
        (1, put(b"k", b"old")),
        (4, put(b"gone", b"back")),
        (6, put(b"fresh", b"6")),
    ])
    .unwrap();
    sm.apply(2, put(b"k", b"replayed")).unwrap();
    assert_eq!(sm.get(b"k").unwrap(), Some(b"new".to_vec()));
    assert_eq!(sm.get(b"gone").unwrap(), None);
    assert_eq!(sm.get(b"fresh").unwrap(), Some(b"6".to_vec()));
    assert_eq!(sm.applied_index(), 6);

    // Entries without an operation are not written; after a restart they replay
    // harmlessly, and the index never goes below the last written batch.
    sm.mark_applied(9);
    assert_eq!(sm.applied_index(), 9);
    drop(sm);
    let mut sm = RocksStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied_index(), 6);
    sm.mark_applied(9);
    sm.apply(10, put(b"k", b"ten")).unwrap();
    drop(sm);
    let sm = RocksStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied_index(), 10);
    assert_eq!(sm.get(b"k").unwrap(), Some(b"ten".to_vec()));
}

#[test]
fn snapshot_restores_into_a_fresh_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3_000;
    let mut a = RocksStateMachine::open(dir.path().join("a")).unwrap();
    let ops = workload(n);
    for run in ops.chunks(500) {
        a.apply_batch(run.to_vec()).unwrap();
    }
    let applied = a.applied_index();
    let store = store(&dir.path().join("snap"));
    let saved = save_to_store(&a, &store, &meta(applied)).unwrap();
    assert!(saved.trailer.data_chunks > 10, "{saved:?}");
    // A snapshot must be of the applied index.
    assert!(matches!(
        save_to_store(&a, &store, &meta(applied - 1)),
        Err(keel_snapshot::SnapshotError::InvalidArgument(_))
    ));

    let mut b = RocksStateMachine::open(dir.path().join("b")).unwrap();
    b.apply(1, put(b"stale", b"replaced by the snapshot"))
        .unwrap();
    let loaded = restore_from_store(&mut b, &store, saved.id).unwrap();
    assert_eq!(loaded, meta(applied));
    assert_eq!(b.get(b"stale").unwrap(), None);
    assert_same(&a, &b, n);
    assert_eq!(b.len(), n - n.div_ceil(7));
    // The restored generation is the live one after a restart, and the old one is gone.
    let b_path = b.path().to_path_buf();
    drop(b);
    assert_eq!(data_families(&b_path), vec!["data-1".to_string()]);
    let b = RocksStateMachine::open(&b_path).unwrap();
    assert_same(&a, &b, n);
}

#[test]
fn memory_and_rocksdb_snapshots_are_interchangeable() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2_000;
    let ops = workload(n);
    let mut mem = MemoryStateMachine::new();
    let mut rocks = RocksStateMachine::open(dir.path().join("rocks")).unwrap();
    mem.apply_batch(ops.clone()).unwrap();
    rocks.apply_batch(ops).unwrap();
    let applied = rocks.applied_index();
    assert_same(&mem, &rocks, n);

    // Memory → RocksDB.
    let from_mem = store(&dir.path().join("from-mem"));
    let id = save_to_store(&mem, &from_mem, &meta(applied)).unwrap().id;
    let mut r2 = RocksStateMachine::open(dir.path().join("r2")).unwrap();
    restore_from_store(&mut r2, &from_mem, id).unwrap();
    assert_same(&mem, &r2, n);

    // RocksDB → memory.
    let from_rocks = store(&dir.path().join("from-rocks"));
    let id = save_to_store(&rocks, &from_rocks, &meta(applied))
        .unwrap()
        .id;
    let mut m2 = MemoryStateMachine::new();
    restore_from_store(&mut m2, &from_rocks, id).unwrap();
    assert_same(&rocks, &m2, n);

    // Byte for byte the same image.
    let a = std::fs::read(from_mem.dir().join(id.file_name())).unwrap();
    let b = std::fs::read(from_rocks.dir().join(id.file_name())).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_damaged_snapshot_leaves_the_live_state_whole() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2_000;
    let mut src = MemoryStateMachine::new();
    src.apply_batch(workload(n)).unwrap();
    let store = store(&dir.path().join("snap"));
    let saved = save_to_store(&src, &store, &meta(src.applied_index())).unwrap();
    // Damage a byte well inside the data, after many records were already streamed.
    let mut bytes = std::fs::read(&saved.path).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x5a;
    std::fs::write(&saved.path, &bytes).unwrap();

    let path = dir.path().join("sm");
    let mut sm = RocksStateMachine::open(&path).unwrap();
    sm.apply_batch(vec![(1, put(b"live", b"1")), (2, put(b"state", b"2"))])
        .unwrap();
    let err = restore_from_store(&mut sm, &store, saved.id).unwrap_err();
    assert!(
        matches!(err, keel_snapshot::SnapshotError::Damaged { .. }),
        "{err}"
    );
    assert_eq!(sm.applied_index(), 2);
    assert_eq!(sm.len(), 2);
    assert_eq!(sm.get(b"live").unwrap(), Some(b"1".to_vec()));
    drop(sm);
    assert_eq!(data_families(&path), vec!["data-0".to_string()]);
    let sm = RocksStateMachine::open(&path).unwrap();
    assert_eq!((sm.applied_index(), sm.len()), (2, 2));
}

#[test]
fn a_restore_interrupted_by_a_crash_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm");
    {
        let mut sm = RocksStateMachine::open(&path).unwrap();
        sm.apply(1, put(b"k", b"v")).unwrap();
    }
    {
        // What a crash in the middle of a restore leaves: the next generation's family,
        // partly filled, never named in meta.
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let mut db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &cfs).unwrap();
        db.create_cf("data-1", &rocksdb::Options::default())
            .unwrap();
        let cf = db.cf_handle("data-1").unwrap();
        db.put_cf(cf, b"half", b"restored").unwrap();
        db.put_cf(cf, b"k", b"other").unwrap();
    }
    let mut sm = RocksStateMachine::open(&path).unwrap();
    assert_eq!(sm.applied_index(), 1);
    assert_eq!(sm.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(sm.get(b"half").unwrap(), None);
    assert_eq!(data_families(sm.path()), vec!["data-0".to_string()]);
    // And the next restore goes through.
    let mut src = MemoryStateMachine::new();
    src.apply(7, put(b"from", b"snapshot")).unwrap();
    let store = store(&dir.path().join("snap"));
    let id = save_to_store(&src, &store, &meta(7)).unwrap().id;
    restore_from_store(&mut sm, &store, id).unwrap();
    assert_eq!(sm.get(b"k").unwrap(), None);
    assert_eq!(sm.get(b"from").unwrap(), Some(b"snapshot".to_vec()));
    assert_eq!(sm.applied_index(), 7);
}

#[test]
fn a_damaged_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm");
    {
        let mut sm = RocksStateMachine::open(&path).unwrap();
        sm.apply(1, put(b"k", b"v")).unwrap();
    }
    // A CURRENT file that names no manifest.
    std::fs::write(path.join("CURRENT"), b"MANIFEST-999999\n").unwrap();
    let err = RocksStateMachine::open(&path).unwrap_err();
    assert!(matches!(err, Error::StateMachine(_)), "{err}");
    // No CURRENT at all: RocksDB would take this for a new database; keel refuses.
    std::fs::remove_file(path.join("CURRENT")).unwrap();
    let err = RocksStateMachine::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::StateMachine(m) if m.contains("CURRENT")),
        "{err}"
    );
    // Still refused the second time: nothing was recreated over the remains.
    assert!(RocksStateMachine::open(&path).is_err());
}

fn config(dir: &Path, log: LogBackend, sm: StateMachineKind) -> Config {
    let mut c = single(dir);
    c.log_backend = log;
    c.state_machine = sm;
    c
}

// Concurrent writers, dropped without `close`, reopened: every acknowledged write is
// there.
fn kill_and_reopen_keeps_every_write(log: LogBackend, sm: StateMachineKind) {
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    {
        let db = Db::open(config(dir.path(), log, sm)).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in (t..n).step_by(4) {
                        db.put(&key(i), &value(i)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        db.delete(&key(3)).unwrap();
    }
    let db = Db::open(config(dir.path(), log, sm)).unwrap();
    for i in 0..n {
        let want = (i != 3).then(|| value(i));
        assert_eq!(db.get(&key(i)).unwrap(), want, "key {i}");
    }
    db.put(b"after", b"restart").unwrap();
    assert_eq!(db.get(b"after").unwrap(), Some(b"restart".to_vec()));
    db.close().unwrap();
}

#[test]
fn kill_and_reopen_rocksdb_log_and_rocksdb_state() {
    kill_and_reopen_keeps_every_write(LogBackend::RocksDb, StateMachineKind::RocksDb);
}

#[test]
fn kill_and_reopen_rocksdb_log_and_memory_state() {
    kill_and_reopen_keeps_every_write(LogBackend::RocksDb, StateMachineKind::Memory);
}

#[test]
fn kill_and_reopen_wal_and_rocksdb_state() {
    kill_and_reopen_keeps_every_write(LogBackend::Wal, StateMachineKind::RocksDb);
}

#[test]
fn snapshots_compaction_and_restarts_with_the_rocksdb_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = config(dir.path(), LogBackend::Wal, StateMachineKind::RocksDb);
        c.snapshot_every = 20;
        c.catch_up_entries = 5;
        c
    };
    let db = Db::open(cfg()).unwrap();
    for i in 0..100 {
        db.put(&key(i % 30), &value(i)).unwrap();
    }
    wait_until(Duration::from_secs(10), || {
        let st = db.status();
        (st.snapshot_index >= 80 && st.first_index > 1).then_some(())
    })
    .expect("snapshot taken and log compacted");
    // The state machine is usually past the newest snapshot here; the restart keeps
    // it and replays only the log above it.
    drop(db);
    let db = Db::open(cfg()).unwrap();
    for i in 70..100 {
        assert_eq!(db.get(&key(i % 30)).unwrap(), Some(value(i)));
    }
    for i in 100..150 {
        db.put(&key(i % 30), &value(i)).unwrap();
    }
    db.close().unwrap();
    drop(db);
    let db = Db::open(cfg()).unwrap();
    for i in 120..150 {
        assert_eq!(db.get(&key(i % 30)).unwrap(), Some(value(i)));
    }
    db.close().unwrap();
}

#[test]
fn a_removed_state_machine_is_rebuilt_from_the_snapshot_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = config(dir.path(), LogBackend::RocksDb, StateMachineKind::RocksDb);
        c.snapshot_every = 20;
        c.catch_up_entries = 5;
        c
    };
    let db = Db::open(cfg()).unwrap();
    for i in 0..100 {
        db.put(&key(i % 30), &value(i)).unwrap();
    }
    wait_until(Duration::from_secs(10), || {
        let st = db.status();
        (st.snapshot_index >= 80 && st.first_index > 1).then_some(())
    })
    .expect("snapshot taken and log compacted");
    db.close().unwrap();
    drop(db);
    // What the refusal above advises, and what a lost state machine amounts to: the
    // newest snapshot restores it, the log replays the rest.
    std::fs::remove_dir_all(cfg().rocksdb_sm_dir()).unwrap();
    let db = Db::open(cfg()).unwrap();
    for i in 70..100 {
        assert_eq!(db.get(&key(i % 30)).unwrap(), Some(value(i)));
    }
    db.close().unwrap();
}

#[test]
fn a_state_machine_ahead_of_its_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(dir.path(), LogBackend::Wal, StateMachineKind::RocksDb);
    let db = Db::open(cfg()).unwrap();
    for i in 0..10 {
        db.put(&key(i), &value(i)).unwrap();
    }
    db.close().unwrap();
    drop(db);
    // Someone removed the log and the snapshots but kept the state machine: new
    // entries would land at indexes the state machine skips as already applied.
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    std::fs::remove_dir_all(dir.path().join("snap")).unwrap();
    let Err(err) = Db::open(cfg()) else {
        panic!("a state machine ahead of the log was opened");
    };
    assert!(
        matches!(&err, Error::Config(m) if m.contains("rocksdb")),
        "{err}"
    );
}

fn rocks_state_snapshot_often(mut c: Config) -> Config {
    c.state_machine = StateMachineKind::RocksDb;
    c.snapshot_every = 20;
    c.catch_up_entries = 5;
    c
}

#[test]
fn a_follower_catches_up_through_a_rocksdb_snapshot() {
    let c = Cluster::with(3, rocks_state_snapshot_often);
    let leader = c.wait_leader();
    let down = c.followers(leader)[0];
    c.db(leader).put(b"before", b"stop").unwrap();
    c.wait_converged();
    c.stop(down).expect("stop node");
    for i in 0..120 {
        c.db(leader).put(&key(i % 40), &value(i)).unwrap();
    }
    let st = wait_until(Duration::from_secs(10), || {
        let st = c.db(leader).status();
        (st.first_index > 30).then_some(st)
    })
    .expect("leader compacted its log");
    assert!(st.snapshot_index >= st.first_index - 1);

    c.start(down).expect("start node");
    c.wait_converged();
    let st = c.db(down).status();
    assert!(
        st.snapshot_index >= 30,
        "follower installed a snapshot: {st:?}"
    );
    for i in 80..120 {
        assert_eq!(c.db(down).get_local(&key(i % 40)).unwrap(), Some(value(i)));
    }
    assert_eq!(
        c.db(down).get_local(b"before").unwrap(),
        Some(b"stop".to_vec())
    );
    // It restarts on the restored database and keeps following.
    c.kill(down).expect("kill node");
    c.start(down).expect("start node");
    c.wait_leader();
    c.db(down).put(b"after", b"snapshot").unwrap();
    assert_eq!(
        c.db(down).get(b"after").unwrap(),
        Some(b"snapshot".to_vec())
    );
    for i in 80..120 {
        assert_eq!(c.db(down).get(&key(i % 40)).unwrap(), Some(value(i)));
    }
}

#[test]
fn membership_changes_behind_a_persistent_state_survive_restarts() {
    use keel_engine::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

    let c = Cluster::with(3, rocks_state_snapshot_often);
    let leader = c.wait_leader();
    let gone = c.followers(leader)[0];
    let cc = ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::RemoveNode,
            node_id: gone,
        }],
        ..ConfChangeV2::default()
    };
    c.db(leader).change_membership(cc).unwrap();
    c.stop(gone).expect("stop node");
    let stay = c.followers(leader)[0];
    for i in 0..5 {
        c.db(leader).put(&key(i), &value(i)).unwrap();
    }
    c.wait_converged();
    // Restart both: no snapshot yet, so each state machine is ahead of its (absent)
    // snapshot and raft must see the removal again from the log.
    for id in [leader, stay] {
        c.stop(id).expect("stop node");
    }
    for id in [leader, stay] {
        c.start(id).expect("start node");
    }
    let now = c.wait_leader();
    wait_until(Duration::from_secs(10), || {
        [leader, stay]
            .iter()
            .all(|id| c.db(*id).status().voters.len() == 2)
            .then_some(())
    })
    .expect("the removal is in effect again after the restart");
    // Now snapshots: they must carry the two-voter membership even though the state
    // machines skipped the removal's entry as already applied.
    for i in 5..60 {
        c.db(now).put(&key(i), &value(i)).unwrap();
    }
    c.wait_converged();
    wait_until(Duration::from_secs(10), || {
        [leader, stay]
            .iter()
            .all(|id| c.db(*id).status().snapshot_index >= 20)
            .then_some(())
    })
    .expect("both took a snapshot");
    for id in [leader, stay] {
        c.stop(id).expect("stop node");
    }
    for id in [leader, stay] {
        c.start(id).expect("start node");
    }
    c.wait_leader();
    for id in [leader, stay] {
        // From the snapshot alone: nothing after it changes the membership.
        let st = c.db(id).status();
        assert_eq!(st.voters.len(), 2, "node {id}: {st:?}");
        assert!(st.snapshot_index >= 20, "node {id}: {st:?}");
        assert_eq!(c.db(id).get(&key(59)).unwrap(), Some(value(59)));
    }
}

#[test]
fn config_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let c = fast(Config::single_node(dir.path()));
    assert_eq!(c.rocksdb_sm_dir(), dir.path().join("rocksdb").join("sm"));
    let db = Db::open(config(
        dir.path(),
        LogBackend::RocksDb,
        StateMachineKind::RocksDb,
    ))
    .unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    drop(db);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["LOCK", "rocksdb", "snap"]);
    assert!(dir.path().join("rocksdb/sm/CURRENT").exists());
    assert!(dir.path().join("rocksdb/CURRENT").exists());
}
