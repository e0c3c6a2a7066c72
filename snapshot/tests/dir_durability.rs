//! A crash right after the snapshot directory is first created keeps it: a snapshot
//! synced into it is worth nothing if the directory's own entry is lost.

mod common;

use std::path::Path;

use common::{meta, sample_map};
use keel_fs::{CrashMode, SimFs};
use keel_snapshot::{SnapshotStore, StoreOptions};

#[test]
fn a_crash_right_after_creating_the_store_keeps_its_directories() {
    // Nothing exists yet on the simulated disk: the store creates /node/snap and /node.
    let sim = SimFs::new(1);
    let dir = Path::new("/node/snap");
    let store = SnapshotStore::open(sim.shared(), dir, StoreOptions::default()).unwrap();
    let m = meta(1, 10);
    store.save(&m, &sample_map(1, 20)).unwrap();
    drop(store);
    sim.crash_with(CrashMode::DropUnsynced);
    let store = SnapshotStore::open(sim.shared(), dir, StoreOptions::default()).unwrap();
    let ids = store.list().unwrap();
    assert_eq!(
        ids.len(),
        1,
        "the synced snapshot was lost with its directory"
    );
    assert_eq!(store.metadata(ids[0]).unwrap(), m);
}
