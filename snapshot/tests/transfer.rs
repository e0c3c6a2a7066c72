//! Chunked transfer between two stores on simulated file systems: the happy path,
//! resume, and every way a chunk stream can go wrong.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{meta, sample_map};
use keel_fs::SimFs;
use keel_snapshot::chunk::{Chunk, ChunkKind};
use keel_snapshot::memory::MapConsumer;
use keel_snapshot::{ReceiveStatus, SnapshotError, SnapshotId, SnapshotStore, StoreOptions};

const DIR: &str = "/data/snap";

struct Pair {
    source: SnapshotStore,
    source_fs: SimFs,
    dest: Arc<SnapshotStore>,
    dest_fs: SimFs,
    id: SnapshotId,
}

fn pair(options: StoreOptions) -> Pair {
    let source_fs = SimFs::new(11);
    let dest_fs = SimFs::new(12);
    let source = SnapshotStore::open(source_fs.shared(), DIR, options).unwrap();
    let dest = Arc::new(SnapshotStore::open(dest_fs.shared(), DIR, options).unwrap());
    let saved = source.save(&meta(3, 300), &sample_map(7, 200)).unwrap();
    Pair {
        source,
        source_fs,
        dest,
        dest_fs,
        id: saved.id,
    }
}

fn small() -> StoreOptions {
    StoreOptions {
        chunk_size_bytes: 256,
        ..StoreOptions::default()
    }
}

fn all_chunks(p: &Pair) -> Vec<Chunk> {
    let mut sender = p.source.sender(p.id, 0).unwrap();
    let mut out = Vec::new();
    while let Some(c) = sender.next_chunk().unwrap() {
        out.push(c);
    }
    out
}

fn dest_names(p: &Pair) -> Vec<String> {
    p.dest_fs.shared().list_dir(Path::new(DIR)).unwrap()
}

#[test]
fn a_full_transfer_installs_an_identical_loadable_snapshot() {
    let p = pair(small());
    let chunks = all_chunks(&p);
    assert!(chunks.len() > 10);
    assert_eq!(chunks[0].kind, ChunkKind::Header);
    assert_eq!(chunks.last().unwrap().kind, ChunkKind::Trailer);
    let mut rx = p.dest.receiver().unwrap();
    assert!(rx.header().is_none());
    let mut last = None;
    for c in &chunks {
        // Over the wire as encoded frames.
        last = Some(rx.receive_frame(&c.encode()).unwrap());
    }
    let Some(ReceiveStatus::Installed { id, metadata, path }) = last else {
        panic!("not installed: {last:?}");
    };
    assert_eq!(id, p.id);
    assert_eq!(metadata, meta(3, 300));
    assert_eq!(
        p.dest_fs.file_bytes(&path),
        p.source_fs.file_bytes(&p.source.path_of(p.id))
    );
    let loaded = p
        .dest
        .load_newest(&MapConsumer::default())
        .unwrap()
        .unwrap();
    assert_eq!(loaded.image, sample_map(7, 200));
    // Finished receivers refuse more chunks, and leave no temporary file.
    assert!(matches!(
        rx.receive(&chunks[0]),
        Err(SnapshotError::TransferEnded(_))
    ));
    drop(rx);
    assert_eq!(dest_names(&p), vec![p.id.file_name()]);
}

/// Feeds `chunks` in order; returns the first error.
fn feed(p: &Pair, chunks: &[Chunk]) -> Result<ReceiveStatus, SnapshotError> {
    let mut rx = p.dest.receiver().unwrap();
    let mut status = None;
    for c in chunks {
        match rx.receive(c) {
            Ok(s) => status = Some(s),
            Err(e) => {
                // Aborted: the temporary file is gone and the receiver stays closed.
                assert!(dest_names(p).is_empty(), "{:?}", dest_names(p));
                assert!(matches!(
                    rx.receive(c),
                    Err(SnapshotError::TransferEnded(_))
                ));
                return Err(e);
            }
        }
    }
    Ok(status.expect("at least one chunk"))
}

#[test]
fn a_damaged_chunk_aborts() {
    let p = pair(small());
    let chunks = all_chunks(&p);
    for victim in [0, 1, 5, chunks.len() - 1] {
        let mut frames: Vec<Vec<u8>> = chunks.iter().map(Chunk::encode).collect();
        let mid = frames[victim].len() / 2;
        frames[victim][mid] ^= 0x10;
        let mut rx = p.dest.receiver().unwrap();
        let mut err = None;
        for f in &frames {
            if let Err(e) = rx.receive_frame(f) {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(SnapshotError::ChunkCrc { .. })),
            "victim {victim}: {err:?}"
        );
        assert!(dest_names(&p).is_empty());
    }
    assert!(p.dest.list().unwrap().is_empty());
}

#[test]
fn a_missing_chunk_aborts() {
    let p = pair(small());
    let mut chunks = all_chunks(&p);
    chunks.remove(4);
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::ChunkOutOfOrder {
            expected: 4,
            got: 5
        })
    ));
    // Dropping the header is caught as well.
    let chunks = all_chunks(&p);
    assert!(matches!(
        feed(&p, &chunks[1..]),
        Err(SnapshotError::ChunkOutOfOrder {
            expected: 0,
            got: 1
        })
    ));
}

#[test]
fn a_duplicated_chunk_aborts() {
    let p = pair(small());
    let mut chunks = all_chunks(&p);
    let dup = chunks[3].clone();
    chunks.insert(4, dup);
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::DuplicateChunk {
            seq: 3,
            expected: 4
        })
    ));
}

#[test]
fn reordered_chunks_abort() {
    let p = pair(small());
    let mut chunks = all_chunks(&p);
    chunks.swap(2, 3);
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::ChunkOutOfOrder {
            expected: 2,
            got: 3
        })
    ));
}

#[test]
fn a_renumbered_stream_with_a_chunk_missing_fails_the_final_check() {
    let p = pair(small());
    let mut chunks = all_chunks(&p);
    chunks.remove(4);
    for (seq, c) in chunks.iter_mut().enumerate() {
        c.seq = seq as u64;
    }
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::FinalCheck(_))
    ));
    // Same with a payload altered and its CRC recomputed by re-encoding.
    let mut chunks = all_chunks(&p);
    chunks[2].payload[0] ^= 1;
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::FinalCheck(_))
    ));
}

#[test]
fn an_unfinished_transfer_installs_nothing_and_cleans_up() {
    let p = pair(small());
    let chunks = all_chunks(&p);
    let mut rx = p.dest.receiver().unwrap();
    for c in &chunks[..chunks.len() - 1] {
        assert!(matches!(
            rx.receive(c).unwrap(),
            ReceiveStatus::NeedMore { .. }
        ));
    }
    assert_eq!(dest_names(&p).len(), 1); // the temporary file
    assert!(p.dest.list().unwrap().is_empty());
    drop(rx);
    assert!(dest_names(&p).is_empty());
}

#[test]
fn a_broken_transfer_resumes_from_the_next_chunk() {
    let p = pair(small());
    let total = all_chunks(&p).len() as u64;
    let mut rx = p.dest.receiver().unwrap();
    let mut sender = p.source.sender(p.id, 0).unwrap();
    for _ in 0..7 {
        rx.receive(&sender.next_chunk().unwrap().unwrap()).unwrap();
    }
    drop(sender); // the connection breaks
    assert_eq!(rx.next_seq(), 7);
    let mut sender = p.source.sender(p.id, rx.next_seq()).unwrap();
    let mut status = None;
    while let Some(c) = sender.next_chunk().unwrap() {
        status = Some(rx.receive(&c).unwrap());
    }
    assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
    assert_eq!(sender.next_seq(), total);
    let loaded = p
        .dest
        .load_newest(&MapConsumer::default())
        .unwrap()
        .unwrap();
    assert_eq!(loaded.image, sample_map(7, 200));
}

#[test]
fn a_runaway_stream_is_cut_off() {
    let options = StoreOptions {
        max_receive_bytes: 2_000,
        ..small()
    };
    let p = pair(options);
    let chunks = all_chunks(&p);
    assert!(matches!(
        feed(&p, &chunks),
        Err(SnapshotError::TooLarge { limit_bytes: 2_000 })
    ));
}

#[test]
fn sending_a_damaged_or_missing_snapshot_fails_naming_the_file() {
    let p = pair(small());
    let path = p.source.path_of(p.id);
    p.source_fs.flip_byte(&path, 600, 1).unwrap();
    let mut sender = p.source.sender(p.id, 0).unwrap();
    let err = loop {
        match sender.next_chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("damage not noticed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SnapshotError::Damaged { .. }));
    assert!(err.to_string().contains(&path.display().to_string()));
    assert!(matches!(
        p.source.sender(SnapshotId { index: 1, term: 1 }, 0),
        Err(SnapshotError::NotFound { .. })
    ));
}

#[test]
fn garbage_frames_are_rejected_without_panicking() {
    let p = pair(small());
    for garbage in [&b""[..], b"x", &[0u8; 17], &[0xffu8; 64]] {
        let mut rx = p.dest.receiver().unwrap();
        assert!(rx.receive_frame(garbage).is_err());
    }
    assert!(dest_names(&p).is_empty());
}

mod crash {
    use super::*;
    use common::CrashFs;
    use keel_fs::CrashMode;

    /// Receives the whole stream on a file system that dies after `limit` mutating
    /// calls, crashes it, and checks the destination's older snapshot or the new one
    /// loads — never neither, never a damaged file under a real name.
    fn crash_during_receive(p: &Pair, chunks: &[Chunk], limit: u64, mode: CrashMode) -> bool {
        let dest_fs = SimFs::new(limit + 100);
        let old = sample_map(1, 30);
        SnapshotStore::open(dest_fs.shared(), DIR, small())
            .unwrap()
            .save(&meta(1, 100), &old)
            .unwrap();
        let crash_fs = CrashFs::new(dest_fs.shared(), limit);
        let mut installed = false;
        if let Ok(store) = SnapshotStore::open(crash_fs, DIR, small()) {
            let store = Arc::new(store);
            if let Ok(mut rx) = store.receiver() {
                for c in chunks {
                    match rx.receive(c) {
                        Ok(ReceiveStatus::Installed { .. }) => installed = true,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        dest_fs.crash_with(mode);
        let store = SnapshotStore::open(dest_fs.shared(), DIR, small()).unwrap();
        let loaded = store
            .load_newest(&MapConsumer::default())
            .unwrap()
            .unwrap_or_else(|| panic!("nothing loads after a crash at step {limit}"));
        assert!(
            loaded.skipped.is_empty(),
            "step {limit}: {:?}",
            loaded.skipped
        );
        match loaded.metadata.index {
            100 => assert_eq!(loaded.image, old),
            300 => assert_eq!(loaded.image, sample_map(7, 200)),
            other => panic!("unknown snapshot {other}"),
        }
        if installed {
            assert_eq!(loaded.metadata.index, 300, "an installed snapshot was lost");
        }
        let _ = p;
        installed
    }

    #[test]
    fn a_crash_at_every_step_of_receiving_leaves_old_or_new_loadable() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        // Opening the store syncs its directory's parents (/data and /), then: create
        // + one write per chunk + sync + rename + directory sync.
        let steps = 2 + 1 + chunks.len() as u64 + 3;
        let mut installs = 0;
        for limit in 0..=steps {
            for mode in [
                CrashMode::DropUnsynced,
                CrashMode::TearUnsynced,
                CrashMode::TearWithGarbage,
            ] {
                installs += u32::from(crash_during_receive(&p, &chunks, limit, mode));
            }
        }
        assert!(installs >= 3, "the last step must complete the install");
    }
}

mod mangled {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Mangle {
        Drop(usize),
        Duplicate(usize),
        Swap(usize, usize),
        Flip(usize, usize, u8),
    }

    fn mangle() -> impl Strategy<Value = Mangle> {
        prop_oneof![
            any::<usize>().prop_map(Mangle::Drop),
            any::<usize>().prop_map(Mangle::Duplicate),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mangle::Swap(a, b)),
            (any::<usize>(), any::<usize>(), 1u8..=255)
                .prop_map(|(i, at, m)| Mangle::Flip(i, at, m)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any change to the sequence of frames is rejected; only the untouched stream
        /// installs (followed by anything: the receiver stops at the trailer).
        #[test]
        fn any_mangled_stream_is_rejected(mangles in prop::collection::vec(mangle(), 1..4)) {
            let p = pair(small());
            let original: Vec<Vec<u8>> = all_chunks(&p).iter().map(Chunk::encode).collect();
            let mut frames = original.clone();
            for m in mangles {
                let n = frames.len();
                if n == 0 {
                    break;
                }
                match m {
                    Mangle::Drop(i) => {
                        frames.remove(i % n);
                    }
                    Mangle::Duplicate(i) => {
                        let f = frames[i % n].clone();
                        frames.insert(i % n, f);
                    }
                    Mangle::Swap(a, b) => frames.swap(a % n, b % n),
                    Mangle::Flip(i, at, mask) => {
                        let f = &mut frames[i % n];
                        let at = at % f.len();
                        f[at] ^= mask;
                    }
                }
            }
            let mut rx = p.dest.receiver().unwrap();
            // Frames taken when the snapshot installed; nothing after the trailer is
            // read (a duplicated trailer is a whole stream followed by a stray frame).
            let mut installed_after = None;
            for (taken, f) in frames.iter().enumerate() {
                match rx.receive_frame(f) {
                    Ok(ReceiveStatus::Installed { .. }) => {
                        installed_after = Some(taken + 1);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            prop_assert_eq!(installed_after.is_some(), frames.starts_with(&original));
            if let Some(taken) = installed_after {
                prop_assert_eq!(taken, original.len());
            }
        }
    }
}

mod resume {
    use super::*;
    use keel_fs::CrashMode;

    #[test]
    fn a_resumable_receiver_survives_being_dropped() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        let announced = meta(3, 300);
        {
            let mut rx = p.dest.receiver_for(&announced).unwrap();
            for c in &chunks[..9] {
                rx.receive(c).unwrap();
            }
        } // the receiving task goes away; the partial file stays
        assert!(p.dest.list().unwrap().is_empty());
        let mut rx = p.dest.receiver_for(&announced).unwrap();
        assert_eq!(rx.next_seq(), 9);
        let mut sender = p.source.sender(p.id, rx.next_seq()).unwrap();
        let mut status = None;
        while let Some(c) = sender.next_chunk().unwrap() {
            status = Some(rx.receive(&c).unwrap());
        }
        assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
        assert_eq!(dest_names(&p), vec![p.id.file_name()]);
        let loaded = p
            .dest
            .load_newest(&MapConsumer::default())
            .unwrap()
            .unwrap();
        assert_eq!(loaded.image, sample_map(7, 200));
    }

    #[test]
    fn a_resumable_receiver_resumes_after_a_crash_from_what_survived() {
        let options = StoreOptions {
            // Sync every few chunks so some progress is durable.
            receive_sync_every_bytes: 1_000,
            ..small()
        };
        let p = pair(options);
        let chunks = all_chunks(&p);
        let announced = meta(3, 300);
        for (i, mode) in [
            CrashMode::DropUnsynced,
            CrashMode::TearUnsynced,
            CrashMode::TearWithGarbage,
        ]
        .into_iter()
        .enumerate()
        {
            let dest_fs = SimFs::new(40 + i as u64);
            let dest = Arc::new(SnapshotStore::open(dest_fs.shared(), DIR, options).unwrap());
            let mut rx = dest.receiver_for(&announced).unwrap();
            for c in &chunks[..chunks.len() - 3] {
                rx.receive(c).unwrap();
            }
            let before = rx.next_seq();
            std::mem::forget(rx); // the process dies: no cleanup runs
            dest_fs.crash_with(mode);

            let dest = Arc::new(SnapshotStore::open(dest_fs.shared(), DIR, options).unwrap());
            let mut rx = dest.receiver_for(&announced).unwrap();
            let resumed_at = rx.next_seq();
            assert!(resumed_at > 1, "{mode:?}: synced progress was lost");
            assert!(resumed_at <= before);
            let mut status = None;
            for c in &chunks[resumed_at as usize..] {
                status = Some(rx.receive(c).unwrap());
            }
            assert!(
                matches!(status, Some(ReceiveStatus::Installed { .. })),
                "{mode:?}"
            );
            let loaded = dest.load_newest(&MapConsumer::default()).unwrap().unwrap();
            assert_eq!(loaded.image, sample_map(7, 200));
        }
    }

    #[test]
    fn a_stream_of_another_snapshot_is_refused() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        let mut rx = p.dest.receiver_for(&meta(3, 301)).unwrap();
        assert!(matches!(
            rx.receive(&chunks[0]),
            Err(SnapshotError::WrongSnapshot {
                expected_index: 301,
                got_index: 300,
                ..
            })
        ));
        drop(rx);
        assert!(dest_names(&p).is_empty());
    }

    #[test]
    fn a_bad_chunk_discards_the_partial_file() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        let announced = meta(3, 300);
        let mut rx = p.dest.receiver_for(&announced).unwrap();
        for c in &chunks[..4] {
            rx.receive(c).unwrap();
        }
        assert!(rx.receive(&chunks[6]).is_err());
        drop(rx);
        assert!(dest_names(&p).is_empty());
        assert_eq!(p.dest.receiver_for(&announced).unwrap().next_seq(), 0);
    }

    #[test]
    fn a_newer_transfer_supersedes_older_partial_files() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        let mut rx = p.dest.receiver_for(&meta(3, 300)).unwrap();
        rx.receive(&chunks[0]).unwrap();
        drop(rx);
        assert_eq!(dest_names(&p).len(), 1);
        let rx = p.dest.receiver_for(&meta(3, 350)).unwrap();
        assert_eq!(
            dest_names(&p),
            vec![format!(
                "{}.partial",
                SnapshotId {
                    index: 350,
                    term: 3
                }
                .file_name()
            )]
        );
        rx.abort();
        assert!(dest_names(&p).is_empty());
    }

    #[test]
    fn retention_removes_stale_partial_files() {
        let p = pair(small());
        let chunks = all_chunks(&p);
        let mut rx = p.dest.receiver_for(&meta(3, 300)).unwrap();
        rx.receive(&chunks[0]).unwrap();
        drop(rx);
        // A newer snapshot lands by other means: the partial one is now useless.
        p.dest.save(&meta(4, 400), &sample_map(1, 3)).unwrap();
        p.dest.retain().unwrap();
        assert_eq!(
            dest_names(&p),
            vec![SnapshotId {
                index: 400,
                term: 4
            }
            .file_name()]
        );
    }
}

#[test]
fn the_store_and_its_streams_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<keel_snapshot::SnapshotStore>();
    fn assert_send<T: Send>() {}
    assert_send::<keel_snapshot::SnapshotReceiver>();
    assert_send::<keel_snapshot::SnapshotSender>();
}
