use std::path::Path;

use super::*;

fn setup(seed: u64) -> (SimFs, &'static Path) {
    let fs = SimFs::new(seed);
    let dir = Path::new("/d");
    fs.create_dir_all_durably(dir).unwrap();
    (fs, dir)
}

#[test]
fn sim_crash_drops_unsynced_writes_and_keeps_synced_ones() {
    let (fs, dir) = setup(1);
    let p = dir.join("f");
    let f = fs.create(&p).unwrap();
    fs.sync_dir(dir).unwrap();
    f.write_at(b"hello", 0).unwrap();
    f.sync_data().unwrap();
    f.write_at(b" world", 5).unwrap();
    fs.crash_with(CrashMode::DropUnsynced);
    assert_eq!(fs.read_file(&p).unwrap(), b"hello");
    // The old handle belongs to the dead process.
    assert!(f.write_at(b"x", 0).is_err());
}

#[test]
fn sim_tear_keeps_a_prefix_of_unsynced_writes() {
    for seed in 0..50 {
        let (fs, dir) = setup(seed);
        let p = dir.join("f");
        let f = fs.create(&p).unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(b"abc", 0).unwrap();
        f.write_at(b"defgh", 3).unwrap();
        fs.crash_with(CrashMode::TearUnsynced);
        let got = fs.read_file(&p).unwrap();
        assert!(b"abcdefgh".starts_with(&got), "seed {seed}: {got:?}");
    }
}

#[test]
fn sim_garbage_tail_differs_from_a_clean_prefix_sometimes() {
    let mut saw_garbage = false;
    for seed in 0..50 {
        let (fs, dir) = setup(seed);
        let p = dir.join("f");
        let f = fs.create(&p).unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(&[7u8; 100], 0).unwrap();
        fs.crash_with(CrashMode::TearWithGarbage);
        let got = fs.read_file(&p).unwrap();
        saw_garbage |= got.iter().any(|&b| b != 7);
    }
    assert!(saw_garbage);
}

#[test]
fn sim_directory_changes_need_a_dir_sync() {
    let (fs, dir) = setup(2);
    let a = dir.join("a");
    let f = fs.create(&a).unwrap();
    f.write_at(b"x", 0).unwrap();
    f.sync_data().unwrap();
    fs.crash();
    assert!(!fs.exists(&a).unwrap(), "creation was not made durable");

    let f = fs.create(&a).unwrap();
    f.write_at(b"x", 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    fs.rename(&a, &dir.join("b")).unwrap();
    fs.crash();
    assert!(fs.exists(&a).unwrap(), "rename was not made durable");
    fs.remove_file(&a).unwrap();
    fs.crash();
    assert_eq!(
        fs.read_file(&a).unwrap(),
        b"x",
        "removal was not made durable"
    );
    fs.remove_file(&a).unwrap();
    fs.sync_dir(dir).unwrap();
    fs.crash();
    assert_eq!(fs.list_dir(dir).unwrap(), Vec::<String>::new());
}

#[test]
fn sim_faults_fire_once_with_the_right_errno() {
    let (fs, dir) = setup(3);
    let f = fs.create(&dir.join("f")).unwrap();
    fs.fail_write_after(1, SimFault::Enospc);
    f.write_at(b"ok", 0).unwrap();
    let err = f.write_at(b"fails", 2).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    f.write_at(b"ok again", 0).unwrap();
    fs.fail_sync_after(0, SimFault::Eio);
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    f.sync_data().unwrap();
    assert_eq!(fs.sync_count(), 1);
}

#[test]
fn sim_flip_and_views() {
    let (fs, dir) = setup(4);
    let p = dir.join("f");
    let f = fs.create(&p).unwrap();
    f.allocate(16).unwrap();
    f.write_at(b"abcd", 0).unwrap();
    let view = f.map_readonly().unwrap();
    assert_eq!(view.len(), 16);
    f.write_at(b"e", 4).unwrap();
    let mut buf = [0u8; 5];
    view.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abcde", "later writes are visible through a view");
    fs.flip_byte(&p, 0, 0x20).unwrap();
    view.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Abcde");
    assert!(view.read_at(&mut buf, 14).is_err());
    let ro = fs.open_readonly(&p).unwrap();
    assert!(ro.write_at(b"x", 0).is_err());
}

#[test]
fn std_fs_round_trip_allocate_map_and_durable_write() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = StdFs;
    let dir = tmp.path();
    let p = dir.join("seg");
    let f = fs.create(&p).unwrap();
    assert!(fs.create(&p).is_err(), "create must not clobber");
    f.allocate(4096).unwrap();
    assert_eq!(f.len().unwrap(), 4096);
    f.write_at(b"keel", 8).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    let view = f.map_readonly().unwrap();
    assert_eq!(&view.as_slice().unwrap()[8..12], b"keel");
    f.write_at(b"KEEL", 8).unwrap();
    assert_eq!(&view.as_slice().unwrap()[8..12], b"KEEL", "shared mapping");
    let mut buf = [0u8; 4];
    f.read_at(&mut buf, 8).unwrap();
    assert_eq!(&buf, b"KEEL");

    write_file_durably(&fs, dir, "meta", b"v1").unwrap();
    write_file_durably(&fs, dir, "meta", b"v2").unwrap();
    assert_eq!(fs.read_file(&dir.join("meta")).unwrap(), b"v2");
    assert_eq!(fs.list_dir(dir).unwrap(), vec!["meta", "seg"]);
    fs.rename(&p, &dir.join("seg2")).unwrap();
    fs.remove_file(&dir.join("seg2")).unwrap();
    assert!(!fs.exists(&dir.join("seg2")).unwrap());
}

#[test]
fn sim_crash_loses_a_directory_whose_parent_was_not_synced() {
    let fs = SimFs::new(1);
    let dir = Path::new("/data/wal");
    fs.create_dir_all(dir).unwrap();
    let p = dir.join("f");
    let f = fs.create(&p).unwrap();
    f.write_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    // The file and its entry are durable, the directories holding it are not.
    fs.crash_with(CrashMode::DropUnsynced);
    assert!(!fs.exists(&p).unwrap());
    assert!(fs.list_dir(dir).is_err());
    assert!(fs.list_dir(Path::new("/data")).is_err());

    // Synced parents keep them.
    fs.create_dir_all_durably(dir).unwrap();
    let f = fs.create(&p).unwrap();
    f.write_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    fs.crash_with(CrashMode::DropUnsynced);
    assert_eq!(fs.read_file(&p).unwrap(), b"synced");
}

#[test]
fn std_create_dir_all_durably_creates_every_level() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/c");
    StdFs.create_dir_all_durably(&dir).unwrap();
    assert!(dir.is_dir());
    // Again, when it exists: only its parent is synced.
    StdFs.create_dir_all_durably(&dir).unwrap();
}

#[test]
fn std_lock_file_is_exclusive_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("LOCK");
    let held = StdFs.lock_file(&path).unwrap();
    assert!(held.is_held());
    let err = StdFs.lock_file(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    drop(held);
    assert!(StdFs.lock_file(&path).unwrap().is_held());
    // The simulated file system has no other processes: nothing to lock.
    let sim = SimFs::new(1);
    assert!(!sim.lock_file(&path).unwrap().is_held());
    assert!(!sim.lock_file(&path).unwrap().is_held());
}
