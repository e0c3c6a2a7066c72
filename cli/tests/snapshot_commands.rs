//! `keel snapshot ls|verify` on a store with valid and damaged snapshots, an empty
//! `snap/`, and a data directory whose node never stored a snapshot.

mod common;

use common::{contents, flip_byte, keel_at, make_wal};
use keel_fs::StdFs;
use keel_raft::{ConfState, SnapshotMetadata};
use keel_snapshot::memory::Map;
use keel_snapshot::{SnapshotStore, StoreOptions};

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..ConfState::default()
        },
    }
}

/// Two snapshots (index 10 term 1, index 20 term 2) in `data/snap`.
fn store(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let opts = StoreOptions {
        chunk_size_bytes: 64,
        ..StoreOptions::default()
    };
    let store = SnapshotStore::open(StdFs::shared(), data.join("snap"), opts).expect("open");
    let mut map = Map::new();
    let mut paths = Vec::new();
    for (index, term) in [(10, 1), (20, 2)] {
        for k in 0..index {
            map.insert(format!("key{k}").into_bytes(), vec![b'v'; 30]);
        }
        paths.push(store.save(&meta(index, term), &map).expect("save").path);
    }
    paths
}

#[test]
fn ls_and_verify_valid_snapshots() {
    let data = tempfile::tempdir().expect("tempdir");
    store(data.path());
    let before = contents(data.path());
    for path in [data.path().to_path_buf(), data.path().join("snap")] {
        let ls = keel_at(&["snapshot", "ls"], &path);
        assert_eq!(ls.code, 0, "{}", ls.all());
        let lines: Vec<&str> = ls.stdout.lines().collect();
        assert!(
            lines[0].contains("TERM") && lines[0].contains("INDEX"),
            "{}",
            ls.stdout
        );
        // Newest first.
        assert!(
            lines[1].contains("0000000000000002-0000000000000014.snap"),
            "{}",
            ls.stdout
        );
        assert!(
            lines[2].contains("0000000000000001-000000000000000a.snap"),
            "{}",
            ls.stdout
        );
        for l in &lines[1..3] {
            assert!(
                l.contains("valid") && l.contains("voters=[1,2,3] learners=[4]"),
                "{l}"
            );
        }
        let verify = keel_at(&["snapshot", "verify"], &path);
        assert_eq!(verify.code, 0, "{}", verify.all());
        assert_eq!(
            verify
                .stdout
                .lines()
                .filter(|l| l.starts_with("ok: "))
                .count(),
            2
        );
    }
    assert_eq!(contents(data.path()), before, "reading changed nothing");
}

#[test]
fn damaged_snapshot_is_reported() {
    let data = tempfile::tempdir().expect("tempdir");
    let paths = store(data.path());
    let len = std::fs::metadata(&paths[1]).expect("meta").len();
    flip_byte(&paths[1], len / 2);
    let before = contents(data.path());

    let ls = keel_at(&["snapshot", "ls"], data.path());
    assert_eq!(ls.code, 0, "{}", ls.all());
    let newest = ls.stdout.lines().nth(1).expect("a row");
    assert!(newest.contains("INVALID"), "{}", ls.stdout);
    assert!(ls
        .stdout
        .lines()
        .nth(2)
        .is_some_and(|l| l.contains("valid") && !l.contains("INVALID")));

    let verify = keel_at(&["snapshot", "verify"], data.path());
    assert_eq!(verify.code, 1, "{}", verify.all());
    assert!(
        verify
            .stdout
            .contains("corrupt: 0000000000000002-0000000000000014.snap: "),
        "{}",
        verify.stdout
    );
    assert!(verify
        .stdout
        .contains("ok: 0000000000000001-000000000000000a.snap"));
    assert!(!verify.stderr.is_empty());
    assert_eq!(contents(data.path()), before, "nothing renamed or removed");
}

#[test]
fn truncated_and_garbage_snapshot_files() {
    let data = tempfile::tempdir().expect("tempdir");
    let snap = data.path().join("snap");
    std::fs::create_dir(&snap).expect("mkdir");
    std::fs::write(snap.join("0000000000000001-0000000000000005.snap"), b"").expect("write");
    std::fs::write(
        snap.join("0000000000000001-0000000000000006.snap"),
        vec![0xab; 5000],
    )
    .expect("write");
    std::fs::write(
        snap.join("0000000000000001-0000000000000004.snap.broken"),
        b"x",
    )
    .expect("write");
    let ls = keel_at(&["snapshot", "ls"], data.path());
    assert_eq!(ls.code, 0, "{}", ls.all());
    assert_eq!(ls.stdout.matches("INVALID").count(), 2, "{}", ls.stdout);
    assert!(ls
        .stdout
        .contains(".snap.broken (a damaged snapshot set aside by the node)"));
    let verify = keel_at(&["snapshot", "verify"], data.path());
    assert_eq!(verify.code, 1, "{}", verify.all());
    assert_eq!(
        verify.stdout.matches("corrupt: ").count(),
        2,
        "{}",
        verify.stdout
    );
}

#[test]
fn no_snapshots_yet() {
    let data = tempfile::tempdir().expect("tempdir");
    make_wal(data.path(), 2);
    // A data directory without snap/: the node never stored a snapshot.
    for cmd in ["ls", "verify"] {
        let run = keel_at(&["snapshot", cmd], data.path());
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stdout.starts_with("no snapshots in "), "{}", run.stdout);
    }
    std::fs::create_dir(data.path().join("snap")).expect("mkdir");
    for cmd in ["ls", "verify"] {
        let run = keel_at(&["snapshot", cmd], &data.path().join("snap"));
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stdout.starts_with("no snapshots in "), "{}", run.stdout);
    }
}
