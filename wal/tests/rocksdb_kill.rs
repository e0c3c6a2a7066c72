//! The RocksDB log (feature `rocksdb`) through a real process kill and a damaged
//! directory.
//!
//! RocksDB does its own file I/O, so it cannot run on the simulated file system the
//! segmented WAL's crash tests use. Instead a child process (this test binary, run
//! again) writes and syncs from one thread and reports each durable index, and the
//! parent kills it with SIGKILL at an arbitrary moment in the middle of that; the parent
//! then reopens the directory and checks that every entry the child saw durable is
//! there, intact. A killed process leaves the page cache behind, so this covers process
//! crashes, not power loss.

#![cfg(feature = "rocksdb")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{batch, ents, hs};
use keel_wal::{LogBatch, LogError, LogStore, RocksLogStore};

const CHILD_DIR_ENV: &str = "KEEL_ROCKS_KILL_CHILD_DIR";
const CHILD_TEST: &str = "child_writes_until_killed";
/// The parent kills the child once this many entries were reported durable.
const KILL_AFTER_DURABLE: u64 = 300;

fn entry_batch(i: u64) -> LogBatch {
    batch(ents(i, i + 1, 1 + i / 100, 64))
}

/// Not a test on its own: the body the parent runs in a child process.
#[test]
#[ignore = "run by a_killed_process_keeps_every_durable_entry in a child process"]
fn child_writes_until_killed() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the parent test only");
    let log = std::sync::Arc::new(RocksLogStore::open(&dir).expect("child open"));
    let (durable_tx, durable_rx) = crossbeam_channel::bounded::<u64>(1024);
    // Never joined: the process is killed while it writes.
    let _writer = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            // Bounded; the parent kills the process long before the end.
            for i in 1..=1_000_000u64 {
                // Every third batch synced, the others only written.
                let sync = i % 3 == 0;
                let mut b = entry_batch(i);
                if sync {
                    b.hard_state = Some(hs(1 + i / 100, i));
                }
                log.write(&b, sync).expect("child write");
                if sync && durable_tx.send(log.durable_index()).is_err() {
                    return;
                }
            }
        })
    };
    let mut out = std::io::stdout().lock();
    // Ends when the writer does (the parent failed to kill us) or stalls.
    while let Ok(durable) = durable_rx.recv_timeout(Duration::from_secs(60)) {
        writeln!(out, "durable {durable}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn a_killed_process_keeps_every_durable_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut durable = 0u64;
    // Bounded: the child reports at most a million lines, and stops after a 60 s stall.
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("durable ") {
            durable = durable.max(n.trim().parse().unwrap());
        }
        if durable >= KILL_AFTER_DURABLE {
            // SIGKILL while the writer is mid-flight: no destructor, no clean close.
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must die by the kill: {status:?}"
    );
    assert!(durable >= KILL_AFTER_DURABLE, "child reported {durable}");

    let log = RocksLogStore::open(tmp.path()).unwrap();
    assert!(
        log.last_index() >= durable,
        "{} < {durable}",
        log.last_index()
    );
    assert_eq!(log.first_index(), 1);
    let got = log.entries(1, durable + 1, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, durable);
    for (i, e) in (1..=durable).zip(&got) {
        assert_eq!(e, &entry_batch(i).entries[0], "entry {i}");
    }
    assert!(log.hard_state().commit >= durable);
    // And it takes writes again after the crash.
    let next = log.last_index() + 1;
    log.write(&batch(ents(next, next + 1, 99, 8)), true)
        .unwrap();
    assert_eq!(log.durable_index(), next);
}

fn write_some(path: &Path) {
    let log = RocksLogStore::open(path).unwrap();
    log.write(&batch(ents(1, 21, 1, 32)), true).unwrap();
    log.write(
        &LogBatch {
            hard_state: Some(hs(1, 20)),
            ..LogBatch::default()
        },
        true,
    )
    .unwrap();
}

fn file_names(path: &Path) -> Vec<String> {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_missing_current_file_is_refused_not_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    write_some(tmp.path());
    std::fs::remove_file(tmp.path().join("CURRENT")).unwrap();
    let err = RocksLogStore::open(tmp.path()).err().expect("refused");
    assert!(
        matches!(&err, LogError::Corrupt(m) if m.contains("CURRENT")),
        "{err}"
    );
    // Nothing was created over the remains, so a second attempt says the same.
    assert!(!tmp.path().join("CURRENT").exists());
    assert!(RocksLogStore::open(tmp.path()).is_err());
}

/// With its WAL files gone as well, RocksDB itself (11.8) would take the directory for
/// a new database, delete the old manifest and with it every data file.
#[test]
fn data_files_without_current_or_wal_are_kept_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    write_some(tmp.path());
    {
        // Move everything into data files, as a long-running log would have.
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            tmp.path(),
            ["entries", "meta"],
        )
        .unwrap();
        for cf in ["entries", "meta"] {
            db.flush_cf(db.cf_handle(cf).unwrap()).unwrap();
        }
    }
    std::fs::remove_file(tmp.path().join("CURRENT")).unwrap();
    for name in file_names(tmp.path()) {
        if name.ends_with(".log") {
            std::fs::remove_file(tmp.path().join(name)).unwrap();
        }
    }
    let data_files = |p: &Path| {
        let mut v: Vec<String> = file_names(p)
            .into_iter()
            .filter(|n| n.ends_with(".sst") || n.starts_with("MANIFEST-"))
            .collect();
        v.sort();
        v
    };
    let before = data_files(tmp.path());
    assert!(before.iter().any(|n| n.ends_with(".sst")), "{before:?}");
    let err = RocksLogStore::open(tmp.path()).err().expect("refused");
    assert!(matches!(err, LogError::Corrupt(_)), "{err}");
    assert_eq!(data_files(tmp.path()), before);
}

#[test]
fn a_garbled_current_file_is_an_error_not_a_panic() {
    for garbage in [
        &b"MANIFEST-999999\n"[..],
        b"",
        b"\xff\xfe not a name",
        b"MANIFEST-",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_some(tmp.path());
        std::fs::write(tmp.path().join("CURRENT"), garbage).unwrap();
        let err = RocksLogStore::open(tmp.path()).err();
        assert!(err.is_some(), "opened with CURRENT = {garbage:?}");
    }
}

#[test]
fn a_damaged_manifest_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    write_some(tmp.path());
    let manifest = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST-"))
        })
        .expect("a manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    for b in bytes.iter_mut().skip(8) {
        *b ^= 0xa5;
    }
    std::fs::write(&manifest, &bytes).unwrap();
    assert!(RocksLogStore::open(tmp.path()).is_err());
}
