//! A crash right after a WAL directory is first created keeps the directory: the
//! segments synced into it are worth nothing if its own entry (or its parent's) is
//! lost.

mod common;

use std::path::Path;

use common::{batch, ents, hs, small_opts};
use wal::fs::{CrashMode, FileSystem, SimFs};
use wal::{LogBatch, LogStore, Wal};

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
