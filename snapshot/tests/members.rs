//! Member addresses in snapshots: they round-trip through the store and a transfer,
//! bounds are refused before anything is written, and a file written before they
//! existed (stream version 1, `tests/data/v1/`) still loads, verifies and transfers.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{meta, sample_map};
use keel_fs::SimFs;
use keel_raft::{ConfState, SnapshotMetadata};
use keel_snapshot::info::MAX_MEMBER_ADDRESS_BYTES;
use keel_snapshot::memory::{Map, MapConsumer};
use keel_snapshot::{
    MemberAddresses, ReceiveStatus, SnapshotError, SnapshotId, SnapshotInfo, SnapshotStore,
    StoreOptions,
};

const DIR: &str = "/data/snap";

fn members() -> MemberAddresses {
    [(4, "10.0.0.4:7004"), (17, "node-17.example:7017")]
        .into_iter()
        .map(|(id, a)| (id, a.to_string()))
        .collect()
}

fn store(fs: &SimFs) -> Arc<SnapshotStore> {
    Arc::new(SnapshotStore::open(fs.shared(), DIR, StoreOptions::default()).unwrap())
}

#[test]
fn member_addresses_round_trip_through_the_store() {
    let fs = SimFs::new(1);
    let store = store(&fs);
    let info = SnapshotInfo {
        metadata: meta(2, 20),
        members: members(),
    };
    let map = sample_map(3, 40);
    let saved = store.save_info(&info, &map).unwrap();
    assert_eq!(store.info(saved.id).unwrap(), info);
    assert_eq!(store.metadata(saved.id).unwrap(), info.metadata);
    let (back, image) = store.load_info(saved.id, &MapConsumer::default()).unwrap();
    assert_eq!((back, image), (info.clone(), map.clone()));
    let loaded = store.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert_eq!(loaded.members, members());
    assert_eq!(loaded.image, map);
    let (header, _) = keel_snapshot::verify_file(fs.shared().as_ref(), &saved.path).unwrap();
    assert_eq!(header.members, members());

    // Without addresses, as `save` writes.
    let plain = store.save(&meta(2, 30), &map).unwrap();
    assert!(store.info(plain.id).unwrap().members.is_empty());
}

#[test]
fn a_transfer_carries_the_member_addresses() {
    let (fs_a, fs_b) = (SimFs::new(2), SimFs::new(3));
    let (leader, follower) = (store(&fs_a), store(&fs_b));
    let info = SnapshotInfo {
        metadata: meta(5, 500),
        members: members(),
    };
    let saved = leader.save_info(&info, &sample_map(1, 100)).unwrap();
    let mut sender = leader.sender(saved.id, 0).unwrap();
    let mut receiver = follower.receiver_for(&info.metadata).unwrap();
    let mut status = None;
    while let Some(chunk) = sender.next_chunk().unwrap() {
        status = Some(receiver.receive_frame(&chunk.encode()).unwrap());
    }
    assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
    assert_eq!(
        receiver.header().map(|h| h.members.clone()),
        Some(members())
    );
    assert_eq!(follower.info(saved.id).unwrap(), info);
}

#[test]
fn member_addresses_out_of_bounds_are_refused_and_nothing_is_written() {
    let fs = SimFs::new(4);
    let store = store(&fs);
    let too_long = "h".repeat(MAX_MEMBER_ADDRESS_BYTES + 1);
    for members in [
        [(4, too_long)].into_iter().collect::<MemberAddresses>(),
        [(0, "h:1".to_string())].into_iter().collect(),
    ] {
        let info = SnapshotInfo {
            metadata: meta(1, 10),
            members,
        };
        let err = store.save_info(&info, &Map::new()).unwrap_err();
        assert!(matches!(err, SnapshotError::InvalidArgument(_)), "{err:?}");
    }
    assert!(
        fs.shared().list_dir(Path::new(DIR)).unwrap().is_empty(),
        "no file, temporary or not"
    );
}

// The snapshot in tests/data/v1/, written by keel before member addresses existed
// (commit 2841cb9): index 10, term 2, voters 1-3, learner 4, keys a b c.
const V1_NAME: &str = "0000000000000002-000000000000000a.snap";

fn v1_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/v1")
        .join(V1_NAME);
    std::fs::read(path).expect("the version 1 fixture")
}

fn v1_metadata() -> SnapshotMetadata {
    SnapshotMetadata {
        index: 10,
        term: 2,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..ConfState::default()
        },
    }
}

fn v1_map() -> Map {
    [("a", "1"), ("b", "2"), ("c", "3")]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

// A store holding only the version 1 file.
fn store_with_v1(fs: &SimFs) -> Arc<SnapshotStore> {
    let shared = fs.shared();
    shared.create_dir_all(Path::new(DIR)).unwrap();
    let file = shared.create(&Path::new(DIR).join(V1_NAME)).unwrap();
    file.write_at(&v1_bytes(), 0).unwrap();
    file.sync_data().unwrap();
    shared.sync_dir(Path::new(DIR)).unwrap();
    store(fs)
}

#[test]
fn a_version_1_snapshot_still_loads_verifies_and_transfers() {
    let fs = SimFs::new(5);
    let old = store_with_v1(&fs);
    let id = SnapshotId { index: 10, term: 2 };
    assert_eq!(old.list().unwrap(), vec![id]);
    let loaded = old.load_newest(&MapConsumer::default()).unwrap().unwrap();
    assert_eq!(loaded.metadata, v1_metadata());
    assert!(loaded.members.is_empty());
    assert_eq!(loaded.image, v1_map());
    assert!(loaded.skipped.is_empty());
    assert_eq!(old.info(id).unwrap(), SnapshotInfo::from(v1_metadata()));
    old.verify(id).unwrap();

    // An older leader's file streamed to a newer follower installs unchanged.
    let fs_b = SimFs::new(6);
    let follower = store(&fs_b);
    let mut sender = old.sender(id, 0).unwrap();
    let mut receiver = follower.receiver_for(&v1_metadata()).unwrap();
    let mut status = None;
    while let Some(chunk) = sender.next_chunk().unwrap() {
        status = Some(receiver.receive_frame(&chunk.encode()).unwrap());
    }
    assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
    let (info, map) = follower.load_info(id, &MapConsumer::default()).unwrap();
    assert_eq!(info, SnapshotInfo::from(v1_metadata()));
    assert_eq!(map, v1_map());
}
