//! Paths that hold no WAL or snapshots: a nonexistent path, an empty directory, a file
//! instead of a directory, an empty `wal/`. Exit 2 with an actionable sentence on
//! stderr, nothing on stdout, never a panic; bad arguments exit 2 too (clap).

mod common;

use common::{keel, keel_at};

const COMMANDS: [&[&str]; 7] = [
    &["wal", "dump"],
    &["wal", "dump", "--json"],
    &["wal", "verify"],
    &["wal", "stat"],
    &["wal", "repair"],
    &["snapshot", "ls"],
    &["snapshot", "verify"],
];

#[test]
fn nonexistent_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-node");
    for cmd in COMMANDS {
        let run = keel_at(cmd, &missing);
        assert_eq!(run.code, 2, "{cmd:?}: {}", run.all());
        assert!(run.stdout.is_empty(), "{cmd:?}: {}", run.stdout);
        assert!(
            run.stderr.contains("does not exist"),
            "{cmd:?}: {}",
            run.stderr
        );
    }
    assert!(!missing.exists(), "nothing was created");
}

#[test]
fn empty_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    for cmd in COMMANDS {
        let run = keel_at(cmd, dir.path());
        assert_eq!(run.code, 2, "{cmd:?}: {}", run.all());
        assert!(
            run.stderr.contains("no WAL found") || run.stderr.contains("no snapshots found"),
            "{cmd:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("data directory"),
            "says what to pass: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read").count(),
        0,
        "nothing was created"
    );
}

#[test]
fn empty_wal_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("wal")).expect("mkdir");
    for cmd in &COMMANDS[..5] {
        let run = keel_at(cmd, dir.path());
        assert_eq!(run.code, 2, "{cmd:?}: {}", run.all());
        assert!(
            run.stderr.contains("holds no WAL segment files"),
            "{cmd:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn file_instead_of_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("0000000000000001-0000000000000001.wal");
    std::fs::write(&file, b"not a directory").expect("write");
    for cmd in COMMANDS {
        let run = keel_at(cmd, &file);
        assert_eq!(run.code, 2, "{cmd:?}: {}", run.all());
        assert!(
            run.stderr.contains("is a file, not a directory"),
            "{cmd:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["wal"][..],
        &["wal", "dump"],
        &["wal", "dump", ".", "--type", "bogus"],
        &["wal", "dump", ".", "--from", "minus-one"],
        &["snapshot", "rm", "."],
        &["serve"],
        &["bench"],
    ] {
        let run = keel(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
    }
    let help = keel(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("wal") && help.stdout.contains("snapshot"));
}
