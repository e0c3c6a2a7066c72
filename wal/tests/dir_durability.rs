//! A crash right after a WAL directory is first created keeps the directory: the
//! segments synced into it are worth nothing if its own entry (or its parent's) is
//! lost.

mod common;

use std::path::Path;

use common::{batch, ents, hs, small_opts};
use keel_fs::{CrashMode, FileSystem, SimFs};
use keel_wal::{LogBatch, LogStore, Wal};

#[test]
fn a_crash_right_after_creating_the_log_keeps_its_directories() {
    // Nothing exists yet on the simulated disk: the log creates /node/wal and /node.
    let fs = SimFs::new(1);
    let dir = Path::new("/node/wal");
    let wal = Wal::open(fs.shared(), dir, small_opts()).unwrap();
    let mut b: LogBatch = batch(ents(1, 4, 1, 64));
    b.hard_state = Some(hs(1, 3));
    wal.write(&b, true).unwrap();
    drop(wal);
    fs.crash_with(CrashMode::DropUnsynced);
    assert!(fs.list_dir(dir).is_ok(), "the log directory was lost");
    let wal = Wal::open(fs.shared(), dir, small_opts()).unwrap();
    assert_eq!(wal.last_index(), 3);
    assert_eq!(wal.hard_state(), hs(1, 3));
}

#[test]
fn a_relative_log_directory_is_synced_in_the_working_directory() {
    // "wal"'s parent is "": the simulated root, the working directory on a real disk.
    let fs = SimFs::new(2);
    let wal = Wal::open(fs.shared(), "n/wal", small_opts()).unwrap();
    wal.write(&batch(ents(1, 2, 1, 8)), true).unwrap();
    drop(wal);
    fs.crash_with(CrashMode::DropUnsynced);
    let wal = Wal::open(fs.shared(), "n/wal", small_opts()).unwrap();
    assert_eq!(wal.last_index(), 1);
}

#[test]
fn stopping_background_work_leaves_nothing_behind_and_writes_go_on() {
    // A closing node gives its directory up before its log is dropped: nothing may
    // write there afterwards, least of all the preallocation thread.
    let tmp = tempfile::tempdir().unwrap();
    let opts = keel_wal::WalOptions {
        preallocate: true,
        ..small_opts()
    };
    let wal = Wal::open(keel_fs::StdFs::shared(), tmp.path(), opts).unwrap();
    wal.write(&batch(ents(1, 2, 1, 8)), true).unwrap();
    let prealloc_files = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".prealloc")
            })
            .count()
    };
    // The thread keeps one file ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while prealloc_files() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no file was preallocated"
        );
        std::thread::yield_now();
    }
    wal.stop_background_work();
    assert_eq!(prealloc_files(), 0);
    // Writes that rotate segments still work, creating the files themselves.
    for i in 2..60 {
        wal.write(&batch(ents(i, i + 1, 1, 200)), true).unwrap();
    }
    assert_eq!(wal.last_index(), 59);
    assert_eq!(prealloc_files(), 0);
}
