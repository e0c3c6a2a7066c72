//! The data directory: one process (one open node) at a time, and directory entries
//! that survive a power loss right after they were created.

mod common;

use common::{key, single, value};
use keel_engine::testing::wait_until;
use keel_engine::{Db, Error};
use keel_fs::{CrashMode, SimFs};

#[test]
fn a_second_open_of_a_data_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(single(dir.path())).unwrap();
    db.put(b"k", b"v").unwrap();
    match Db::open(single(dir.path())) {
        Err(Error::DataDirLocked { dir: locked }) => assert_eq!(locked, dir.path()),
        Err(e) => panic!("expected DataDirLocked, got {e}"),
        Ok(_) => panic!("two nodes opened one data directory"),
    }
    // The refused open changed nothing: the first node goes on.
    db.put(b"k2", b"v2").unwrap();
    // Closing releases the lock, even while handles to the closed node remain.
    let stale = db.clone();
    db.close().unwrap();
    let again = Db::open(single(dir.path())).unwrap();
    assert_eq!(again.get(b"k2").unwrap(), Some(b"v2".to_vec()));
    // A stale handle is refused and writes nothing.
    assert!(matches!(stale.put(b"k3", b"v3"), Err(Error::Stopped(_))));
    drop(stale);
    drop(db);
    assert_eq!(again.get(b"k3").unwrap(), None);
    // Dropping the last handle without close (a crash, to the directory) releases it
    // too.
    drop(again);
    Db::open(single(dir.path())).unwrap().close().unwrap();
}

#[test]
fn a_crash_right_after_the_first_open_keeps_the_new_directories() {
    // Nothing exists on the simulated disk: the node creates /keel, /keel/wal and
    // /keel/snap. A crash keeps a directory only if its parent was synced after it was
    // created; otherwise the synced segments and snapshots inside it go with it.
    let fs = SimFs::new(3);
    let config = || {
        let mut c = single(std::path::Path::new("/keel"));
        c.fs = fs.shared();
        c.snapshot_every = 5;
        c.catch_up_entries = 2;
        c
    };
    let db = Db::open(config()).unwrap();
    for i in 0..20 {
        db.put(&key(i), &value(i)).unwrap();
    }
    wait_until(std::time::Duration::from_secs(10), || {
        (db.status().snapshot_index > 0).then_some(())
    })
    .expect("a snapshot was taken");
    db.close().unwrap();
    drop(db);
    fs.crash_with(CrashMode::DropUnsynced);
    let db = Db::open(config()).unwrap();
    for i in 0..20 {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert!(db.status().snapshot_index > 0);
    db.close().unwrap();
}
