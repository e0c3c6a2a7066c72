//! A single-node `Db`: the embedded API, restart, and a simulated kill.

mod common;

use std::time::Duration;

use common::{key, single, value};
use keel_engine::testing::wait_until;
use keel_engine::{Db, Error, Role};

#[test]
fn put_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(single(dir.path())).unwrap();
    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"2").unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get_local(b"b").unwrap(), Some(b"2".to_vec()));
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert_eq!(db.get(b"missing").unwrap(), None);

    let st = db.status();
    assert_eq!(st.role, Role::Leader);
    assert_eq!(st.leader, Some(1));
    assert_eq!(st.voters, vec![1]);
    assert!(st.applied_index >= 3 && st.commit_index >= st.applied_index);

    let text = db.metrics_text();
    assert!(text.contains("keel_server_is_leader"), "{text}");
    assert!(text.contains("keel_disk_wal_fsync_duration_seconds_count"));
    // The log cache's size is observable; four entries (and the leader's empty one)
    // were appended, so the window is not empty.
    let entries_line = text
        .lines()
        .find(|l| l.starts_with("keel_log_cache_entries"))
        .unwrap_or_else(|| panic!("no log cache gauge in {text}"));
    let entries: u64 = entries_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(entries >= 4, "{entries_line}");
    assert!(text.contains("keel_log_cache_hits_total"), "{text}");
    db.close().unwrap();
    assert!(matches!(db.put(b"x", b"y"), Err(Error::Stopped(_))));
}

#[test]
fn too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = single(dir.path());
    c.max_entry_bytes = 100;
    let db = Db::open(c).unwrap();
    let err = db.put(b"k", &[0u8; 200]).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { max_bytes: 100, .. }),
        "{err}"
    );
    db.close().unwrap();
}

#[test]
fn close_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(single(dir.path())).unwrap();
    for i in 0..50 {
        db.put(&key(i), &value(i)).unwrap();
    }
    db.delete(&key(7)).unwrap();
    db.close().unwrap();
    drop(db);
    // The documented layout: the log in wal/, snapshots in snap/, the lock file that
    // keeps a second process out, nothing else.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["LOCK", "snap", "wal"]);

    let db = Db::open(single(dir.path())).unwrap();
    for i in 0..50 {
        let want = (i != 7).then(|| value(i));
        assert_eq!(db.get(&key(i)).unwrap(), want, "key {i}");
    }
    db.put(b"after", b"restart").unwrap();
    db.close().unwrap();
}

#[test]
fn drop_without_close_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    {
        let db = Db::open(single(dir.path())).unwrap();
        // Concurrent writers, so persist batches hold several Readies.
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
        // No close: the handles drop, the threads stop, nothing more is synced.
    }
    let db = Db::open(single(dir.path())).unwrap();
    for i in 0..n {
        // Linearizable: waits until the restarted node applied everything committed.
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    db.close().unwrap();
}

#[test]
fn snapshots_and_compaction_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = single(dir.path());
        c.snapshot_every = 20;
        c.catch_up_entries = 5;
        c
    };
    let db = Db::open(config()).unwrap();
    for i in 0..100 {
        db.put(&key(i % 30), &value(i)).unwrap();
    }
    let st = wait_until(Duration::from_secs(5), || {
        let st = db.status();
        (st.snapshot_index >= 80 && st.first_index > 1).then_some(st)
    })
    .expect("snapshot taken and log compacted");
    assert!(st.first_index <= st.snapshot_index + 1);
    db.close().unwrap();
    drop(db);

    let db = Db::open(config()).unwrap();
    for i in 70..100 {
        assert_eq!(db.get(&key(i % 30)).unwrap(), Some(value(i)));
    }
    assert!(db.status().snapshot_index >= 80);
    db.close().unwrap();
}

#[test]
fn invalid_configs_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = single(dir.path());
    c.election_ticks = c.heartbeat_ticks;
    assert!(matches!(Db::open(c), Err(Error::Config(_))));
    let mut c = single(dir.path());
    c.peers = vec![2, 3];
    assert!(matches!(Db::open(c), Err(Error::Config(_))));
}

#[test]
fn fsync_off_still_serves_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = single(dir.path());
    c.fsync = false;
    let db = Db::open(c).unwrap();
    for i in 0..20 {
        db.put(&key(i), &value(i)).unwrap();
    }
    assert_eq!(db.get(&key(19)).unwrap(), Some(value(19)));
    // A clean close syncs, so even without fsync a closed node keeps its data.
    db.close().unwrap();
    drop(db);
    let db = Db::open(single(dir.path())).unwrap();
    assert_eq!(db.get(&key(19)).unwrap(), Some(value(19)));
    db.close().unwrap();
}

// Snapshots rewrite the whole state; with `snapshot_log_percent` they wait until the
// log since the previous one is a large enough share of its size, however many small
// entries were applied. With the guard off, the entry count alone decides.
#[test]
fn a_large_state_is_not_rewritten_for_a_little_log() {
    for (percent, expect_second) in [(100, false), (0, true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = single(dir.path());
        c.snapshot_every = 50;
        c.catch_up_entries = 0;
        c.snapshot_log_percent = percent;
        let db = Db::open(c).unwrap();
        // About 50 KiB of state: the first snapshot (nothing before it to compare).
        for i in 0..60 {
            db.put(&key(i), &[7u8; 1024]).unwrap();
        }
        let first = wait_until(Duration::from_secs(10), || {
            let st = db.status();
            (st.snapshot_index >= 50).then_some(st.snapshot_index)
        })
        .expect("a first snapshot after 50 entries");
        // Over 100 more entries, but only a few KiB of log.
        for i in 0..120 {
            db.put(b"counter", &i.to_string().into_bytes()).unwrap();
        }
        let second = wait_until(Duration::from_secs(3), || {
            let st = db.status();
            (st.snapshot_index > first).then_some(st.snapshot_index)
        });
        assert_eq!(
            second.is_some(),
            expect_second,
            "percent {percent}: first snapshot at {first}, then {second:?}"
        );
        // The state is whole either way.
        assert_eq!(db.get(&key(59)).unwrap(), Some(vec![7u8; 1024]));
        assert_eq!(db.get(b"counter").unwrap(), Some(b"119".to_vec()));
        db.close().unwrap();
    }
}
