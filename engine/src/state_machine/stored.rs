//! A state machine's snapshots in a [`SnapshotStore`]: [`save_to_store`] frames, checksums
//! and durably stores what [`StateMachine::write_snapshot`] (or a [`FrozenState`])
//! writes, and [`restore_from_store`] streams a stored snapshot, checked as it is read,
//! into [`StateMachine::restore_snapshot`]. The apply stage and recovery go through
//! these; so can a tool that backs a state machine up or restores it offline.

use std::cell::RefCell;
use std::io::{Read, Write};

use keel_snapshot::{
    SavedSnapshot, SnapshotConsumer, SnapshotError, SnapshotId, SnapshotInfo, SnapshotProducer,
    SnapshotStore,
};

use super::{FrozenState, StateMachine};

/// Writes a snapshot of `sm`, which must be at `info.metadata.index`, into `store`
/// durably, described by `info` (raft's metadata and the member addresses).
///
/// ```
/// use keel_engine::state_machine::{restore_from_store, save_to_store, MemoryStateMachine, StateMachine};
/// use keel_engine::Op;
/// use keel_snapshot::{SnapshotStore, StoreOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SnapshotStore::open(keel_fs::SimFs::new(1).shared(), "/snap", StoreOptions::default())?;
/// let mut map = MemoryStateMachine::new();
/// map.apply(1, Op::Put { key: b"k".to_vec(), value: b"v".to_vec() })?;
/// let meta = keel_raft::SnapshotMetadata { index: 1, term: 1, ..Default::default() };
/// let saved = save_to_store(&map, &store, &meta.into())?;
///
/// let mut copy = MemoryStateMachine::new();
/// restore_from_store(&mut copy, &store, saved.id)?;
/// assert_eq!(copy.get(b"k"), Some(b"v".to_vec()));
/// # Ok(())
/// # }
/// ```
pub fn save_to_store<S: StateMachine + ?Sized>(
    sm: &S,
    store: &SnapshotStore,
    info: &SnapshotInfo,
) -> keel_snapshot::Result<SavedSnapshot> {
    let applied = sm.applied_index();
    if applied != info.metadata.index {
        return Err(SnapshotError::InvalidArgument(format!(
            "a snapshot at index {} asked of a state machine at {applied}",
            info.metadata.index
        )));
    }
    store.save_info(info, &Producer(&|out| sm.write_snapshot(out)))
}

/// Writes the frozen image `image` (as of `info.metadata.index`) into `store` durably.
pub fn save_frozen_to_store(
    image: &dyn FrozenState,
    store: &SnapshotStore,
    info: &SnapshotInfo,
) -> keel_snapshot::Result<SavedSnapshot> {
    store.save_info(info, &Producer(&|out| image.write_snapshot(out)))
}

/// Replaces the state of `sm` with snapshot `id` from `store`, checked chunk by chunk
/// as it is read; returns the snapshot's description. Damage found on the way is
/// [`SnapshotError::Damaged`], but the state machine may have replaced part of its
/// state by then: check the whole file first ([`SnapshotStore::verify`]) where a
/// fallback must find the old state intact.
pub fn restore_from_store<S: StateMachine>(
    sm: &mut S,
    store: &SnapshotStore,
    id: SnapshotId,
) -> keel_snapshot::Result<SnapshotInfo> {
    let consumer = Consumer {
        sm: RefCell::new(sm),
        index: id.index,
    };
    let (info, ()) = store.load_info(id, &consumer)?;
    let applied = consumer.sm.into_inner().applied_index();
    if applied != info.metadata.index {
        return Err(SnapshotError::StateMachine(std::io::Error::other(format!(
            "restored snapshot {} but the state machine reports applied index {applied}",
            info.metadata.index
        ))));
    }
    Ok(info)
}

// Whatever writes the image, as the store's producer.
struct Producer<'a>(&'a dyn Fn(&mut dyn Write) -> std::io::Result<()>);

impl SnapshotProducer for Producer<'_> {
    fn write_snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        (self.0)(out)
    }
}

// The state machine as the store's consumer: its restore reads the stream. The store
// hands the consumer out by shared reference; the restore needs it mutably.
struct Consumer<'a, S> {
    sm: RefCell<&'a mut S>,
    index: u64,
}

impl<S: StateMachine> SnapshotConsumer for Consumer<'_, S> {
    type Image = ();

    fn read_snapshot(&self, input: &mut dyn Read) -> std::io::Result<()> {
        self.sm.borrow_mut().restore_snapshot(self.index, input)
    }
}
