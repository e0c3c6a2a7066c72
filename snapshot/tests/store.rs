//! The snapshot store on the simulated file system: save/load, retention, damage, and a
//! crash at every step of saving.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{meta, sample_map, CrashFs};
use keel_fs::{CrashMode, FileSystem, SimFs};
use keel_snapshot::memory::{Map, MapConsumer};
use keel_snapshot::{SnapshotError, SnapshotId, SnapshotStore, StoreOptions};

const DIR: &str = "/data/snap";

/// Collects log records so tests can check what was reported.
struct Capture;

static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static LOGGER: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = LOG_LINES.lock() {
            lines.push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    // Tests share one logger; only the first call installs it.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}

fn logged(level: log::Level, needle: &str) -> bool {
    let prefix = level.to_string();
    LOG_LINES
        .lock()
        .map(|lines| {
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(needle))
        })
        .unwrap_or(false)
}

fn small_chunks() -> StoreOptions {
    StoreOptions {
        // Small chunks so even small test maps span many frames (and many crash points).
        chunk_size_bytes: 512,
        ..StoreOptions::default()
    }
}

fn open(fs: Arc<dyn FileSystem>, options: StoreOptions) -> SnapshotStore {
    SnapshotStore::open(fs, DIR, options).unwrap()
}

#[test]
fn save_load_round_trip_and_listing() {
    let sim = SimFs::new(1);
    let store = open(sim.shared(), small_chunks());
    assert!(store
        .load_newest(&MapConsumer::default())
        .unwrap()
        .is_none());
    let m1 = sample_map(1, 100);
    let m2 = sample_map(2, 120);
    let s1 = store.save(&meta(1, 10), &m1).unwrap();
    let s2 = store.save(&meta(2, 20), &m2).unwrap();
    assert_eq!(
        s2.path,
        Path::new(DIR).join("0000000000000002-0000000000000014.snap")
    );
    assert!(s1.trailer.data_chunks > 1);
    assert_eq!(store.list().unwrap(), vec![s2.id, s1.id]);
    let loaded = store.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert_eq!(loaded.metadata, meta(2, 20));
    assert_eq!(loaded.image, m2);
    assert!(loaded.skipped.is_empty());
    let (h, t) = store.verify(s1.id).unwrap();
    assert_eq!(h.metadata, meta(1, 10));
    assert_eq!(t, s1.trailer);
}

// A large snapshot is flushed as it is written, not all at the end, so the log's
// syncs on the same disk never wait behind the whole of it.
#[test]
fn a_save_syncs_as_it_goes() {
    let map = sample_map(3, 400);
    let mut syncs = Vec::new();
    for every in [0, 2048] {
        let sim = SimFs::new(4);
        let store = open(
            sim.shared(),
            StoreOptions {
                save_sync_every_bytes: every,
                ..small_chunks()
            },
        );
        let before = sim.sync_count();
        let saved = store.save(&meta(1, 10), &map).unwrap();
        assert!(saved.file_bytes > 10 * 2048, "{}", saved.file_bytes);
        syncs.push(sim.sync_count() - before);
        let loaded = store.load_newest(&MapConsumer::default()).unwrap().unwrap();
        assert_eq!(loaded.image, map);
    }
    // The file and its directory at the end; then one more per 2 KiB written.
    assert!(syncs[0] <= 2, "{syncs:?}");
    assert!(syncs[1] >= syncs[0] + 10, "{syncs:?}");
}

#[test]
fn empty_state_machine_snapshot() {
    let sim = SimFs::new(1);
    let store = open(sim.shared(), StoreOptions::default());
    store.save(&meta(1, 1), &Map::new()).unwrap();
    let loaded = store.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert!(loaded.image.is_empty());
}

#[test]
fn retention_keeps_newest_and_reports_purge_point() {
    let sim = SimFs::new(2);
    let store = open(sim.shared(), small_chunks());
    for i in 1..=5u64 {
        store.save(&meta(1, i * 10), &sample_map(i, 5)).unwrap();
    }
    let r = store.retain().unwrap();
    let ids = |v: &[u64]| -> Vec<SnapshotId> {
        v.iter()
            .map(|&index| SnapshotId { index, term: 1 })
            .collect()
    };
    assert_eq!(r.kept, ids(&[50, 40, 30]));
    assert_eq!(r.deleted, ids(&[20, 10]));
    assert_eq!(r.wal_purge_through, 30);
    assert_eq!(store.list().unwrap(), ids(&[50, 40, 30]));
    // Idempotent.
    assert!(store.retain().unwrap().deleted.is_empty());
}

#[test]
fn damaged_snapshots_are_renamed_broken_and_skipped() {
    let sim = SimFs::new(3);
    let store = open(sim.shared(), small_chunks());
    let m1 = sample_map(1, 50);
    store.save(&meta(1, 10), &m1).unwrap();
    let s2 = store.save(&meta(1, 20), &sample_map(2, 50)).unwrap();
    let s3 = store.save(&meta(2, 30), &sample_map(3, 50)).unwrap();
    // s3: a flipped byte in the middle; s2: cut short.
    sim.flip_byte(&s3.path, s3.file_bytes / 2, 0x40).unwrap();
    sim.mutate_file(&s2.path, |b| b.truncate(b.len() - 10))
        .unwrap();

    capture_logs();
    let loaded = store.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert_eq!(loaded.metadata, meta(1, 10));
    assert_eq!(loaded.image, m1);
    assert_eq!(loaded.skipped.len(), 2);
    for path in [&s3.path, &s2.path] {
        assert!(
            logged(log::Level::Error, &path.display().to_string()),
            "no error logged for {}",
            path.display()
        );
    }
    for (err, path) in loaded.skipped.iter().zip([&s3.path, &s2.path]) {
        match err {
            SnapshotError::Damaged { path: p, reason } => {
                assert_eq!(p, path);
                assert!(reason.is_corruption());
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains(&path.display().to_string()));
    }
    assert_eq!(
        store.list().unwrap(),
        vec![SnapshotId { index: 10, term: 1 }]
    );
    assert_eq!(
        store.broken_files().unwrap(),
        vec![
            "0000000000000001-0000000000000014.snap.broken".to_string(),
            "0000000000000002-000000000000001e.snap.broken".to_string(),
        ]
    );
    // And when the last one is damaged too, nothing loads (rather than garbage).
    sim.mutate_file(&store.path_of(loaded.id), |b| b[0] ^= 1)
        .unwrap();
    assert!(store
        .load_newest(&MapConsumer::default())
        .unwrap()
        .is_none());
}

#[test]
fn a_file_whose_name_disagrees_with_its_header_is_damaged() {
    let sim = SimFs::new(4);
    let store = open(sim.shared(), small_chunks());
    let s = store.save(&meta(1, 10), &sample_map(1, 5)).unwrap();
    let fake = Path::new(DIR).join(SnapshotId { index: 99, term: 1 }.file_name());
    sim.shared().rename(&s.path, &fake).unwrap();
    let loaded = store.load_newest(&MapConsumer::default()).unwrap();
    assert!(loaded.is_none());
    assert_eq!(store.broken_files().unwrap().len(), 1);
}

#[test]
fn consumer_errors_are_not_damage() {
    let sim = SimFs::new(5);
    let store = open(sim.shared(), small_chunks());
    store.save(&meta(1, 10), &sample_map(1, 50)).unwrap();
    // A consumer that refuses every key: the stream is sound, so the file stays.
    let strict = MapConsumer {
        limits: keel_snapshot::memory::MapLimits {
            max_key_bytes: 1,
            max_value_bytes: 1,
        },
    };
    let err = store.load_newest(&strict).unwrap_err();
    assert!(matches!(err, SnapshotError::StateMachine(_)), "{err}");
    assert!(store.broken_files().unwrap().is_empty());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn producer_failure_leaves_no_file() {
    struct Failing;
    impl keel_snapshot::SnapshotProducer for Failing {
        fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            out.write_all(&[0u8; 5000])?;
            Err(std::io::Error::other("state machine went away"))
        }
    }
    let sim = SimFs::new(6);
    let store = open(sim.shared(), small_chunks());
    let err = store.save(&meta(1, 10), &Failing).unwrap_err();
    assert!(matches!(err, SnapshotError::StateMachine(_)), "{err}");
    assert!(sim.shared().list_dir(Path::new(DIR)).unwrap().is_empty());
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let sim = SimFs::new(7);
    let fs = sim.shared();
    fs.create_dir_all(Path::new(DIR)).unwrap();
    let f = fs
        .create(&Path::new(DIR).join("0000000000000001-0000000000000001.snap.tmp"))
        .unwrap();
    f.write_at(b"partial", 0).unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    let store = open(fs.clone(), small_chunks());
    assert!(fs.list_dir(Path::new(DIR)).unwrap().is_empty());
    assert!(store
        .load_newest(&MapConsumer::default())
        .unwrap()
        .is_none());
}

#[test]
fn io_errors_are_reported_not_hidden() {
    let sim = SimFs::new(8);
    let store = open(sim.shared(), small_chunks());
    sim.fail_sync_after(0, keel_fs::SimFault::Eio);
    let err = store.save(&meta(1, 10), &sample_map(1, 50)).unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
    sim.fail_write_after(3, keel_fs::SimFault::Enospc);
    let err = store.save(&meta(1, 10), &sample_map(1, 50)).unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }), "{err}");
}

/// Saves a new snapshot (and runs retention keeping only one) on a file system that
/// dies after `limit` mutating calls, then crashes the simulated disk with `mode`, and
/// returns which snapshot loads after reopening.
fn crash_during_save(limit: u64, mode: CrashMode, seed: u64) -> (u64, bool) {
    let sim = SimFs::new(seed);
    let old = sample_map(1, 60);
    let new = sample_map(2, 80);
    let options = StoreOptions {
        retain_count: 1,
        ..small_chunks()
    };
    {
        let store = open(sim.shared(), options);
        store.save(&meta(1, 10), &old).unwrap();
    }
    let crash_fs = CrashFs::new(sim.shared(), limit);
    let completed = match SnapshotStore::open(crash_fs.clone(), DIR, options) {
        Ok(store) => store
            .save(&meta(2, 20), &new)
            .and_then(|_| store.retain())
            .is_ok(),
        Err(_) => false,
    };
    sim.crash_with(mode);

    let store = open(sim.shared(), options);
    let loaded = store
        .load_newest(&MapConsumer::default())
        .unwrap()
        .unwrap_or_else(|| panic!("nothing loadable after a crash at step {limit} ({mode:?})"));
    assert!(
        loaded.skipped.is_empty(),
        "a damaged snapshot under a real name after a crash at step {limit}: {:?}",
        loaded.skipped
    );
    match loaded.metadata.index {
        10 => assert_eq!(loaded.image, old),
        20 => assert_eq!(loaded.image, new),
        other => panic!("loaded unknown snapshot {other}"),
    }
    if completed {
        assert_eq!(loaded.metadata.index, 20, "a completed save was lost");
    }
    // No temporary file survives a reopen.
    let names = sim.shared().list_dir(Path::new(DIR)).unwrap();
    assert!(names.iter().all(|n| n.ends_with(".snap")), "{names:?}");
    (loaded.metadata.index, completed)
}

#[test]
fn a_crash_at_every_step_of_saving_leaves_old_or_new_loadable() {
    // Count the steps of an uninterrupted save + retention.
    let sim = SimFs::new(0);
    let options = StoreOptions {
        retain_count: 1,
        ..small_chunks()
    };
    open(sim.shared(), options)
        .save(&meta(1, 10), &sample_map(1, 60))
        .unwrap();
    let counting = CrashFs::new(sim.shared(), u64::MAX);
    let store = SnapshotStore::open(counting.clone(), DIR, options).unwrap();
    store.save(&meta(2, 20), &sample_map(2, 80)).unwrap();
    store.retain().unwrap();
    let steps = counting.ops();
    assert!(steps > 8, "expected many steps, got {steps}");

    let mut saw_old = false;
    let mut saw_new = false;
    for limit in 0..=steps {
        for (i, mode) in [
            CrashMode::DropUnsynced,
            CrashMode::TearUnsynced,
            CrashMode::TearWithGarbage,
        ]
        .into_iter()
        .enumerate()
        {
            let (index, completed) = crash_during_save(limit, mode, limit * 3 + i as u64);
            saw_old |= index == 10;
            saw_new |= index == 20;
            if limit == steps {
                assert!(completed);
            }
        }
    }
    assert!(saw_old && saw_new);
}

#[test]
fn works_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snap");
    let fs = keel_fs::StdFs::shared();
    let store = Arc::new(SnapshotStore::open(fs.clone(), &dir, small_chunks()).unwrap());
    let map = sample_map(9, 300);
    let saved = store.save(&meta(4, 44), &map).unwrap();
    assert_eq!(
        std::fs::metadata(&saved.path).unwrap().len(),
        saved.file_bytes
    );
    assert_eq!(
        keel_snapshot::list_snapshots(fs.as_ref(), &dir).unwrap(),
        vec![saved.id]
    );
    let (header, _) = keel_snapshot::verify_file(fs.as_ref(), &saved.path).unwrap();
    assert_eq!(header.metadata, meta(4, 44));

    // Transfer into a second directory and load it there.
    let other = Arc::new(
        SnapshotStore::open(fs.clone(), tmp.path().join("other"), small_chunks()).unwrap(),
    );
    let mut sender = store.sender(saved.id, 0).unwrap();
    let mut rx = other.receiver().unwrap();
    while let Some(c) = sender.next_chunk().unwrap() {
        rx.receive(&c).unwrap();
    }
    let loaded = other.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert_eq!(loaded.image, map);

    // Damage on a real file is caught and quarantined.
    let mut bytes = std::fs::read(&saved.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&saved.path, bytes).unwrap();
    assert!(matches!(
        keel_snapshot::verify_file(fs.as_ref(), &saved.path),
        Err(SnapshotError::Damaged { .. })
    ));
    assert!(store
        .load_newest(&MapConsumer::default())
        .unwrap()
        .is_none());
    assert!(dir
        .join(format!("{}.broken", saved.id.file_name()))
        .exists());
}

#[test]
fn index_zero_is_refused() {
    let sim = SimFs::new(9);
    let store = open(sim.shared(), small_chunks());
    assert!(matches!(
        store.save(&meta(0, 0), &Map::new()),
        Err(SnapshotError::InvalidArgument(_))
    ));
}
