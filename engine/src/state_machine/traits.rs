//! The contract between the apply stage and a state machine: [`StateMachine`], and the
//! [`FrozenState`] image one hands out to be written while it goes on applying.

use keel_snapshot::{SavedSnapshot, SnapshotId, SnapshotInfo, SnapshotStore};

use crate::command::Op;
use crate::error::Result;

/// A replicated state machine: a map from keys to values.
pub trait StateMachine: Send + Sync + 'static {
    /// The highest log index whose effect is in the state.
    fn applied_index(&self) -> u64;
    /// Applies `op` committed at `index`; skipped if `index <= applied_index()`.
    fn apply(&mut self, index: u64, op: &Op) -> Result<()>;
    /// Applies a run of operations committed at increasing indexes, skipping those at
    /// or below `applied_index()`; all or nothing where the state machine can do that
    /// (one RocksDB `WriteBatch`). Takes the operations by value, so a state machine
    /// that keeps them (the memory map) does not copy every key and value again.
    fn apply_batch(&mut self, ops: Vec<(u64, Op)>) -> Result<()> {
        for (index, op) in ops {
            self.apply(index, &op)?;
        }
        Ok(())
    }
    /// Records that `index` (an entry without an operation: a leader's no-op, a
    /// membership change, a damaged payload) was applied.
    fn skip_to(&mut self, index: u64);
    /// The value of `key`, as of `applied_index()`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Number of keys.
    fn len(&self) -> u64;
    /// Whether the map is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Streams the state as of `info.metadata.index` (which must be
    /// `applied_index()`) into `store` durably, described by `info` (its metadata and
    /// member addresses).
    fn save_snapshot(&self, store: &SnapshotStore, info: &SnapshotInfo) -> Result<SavedSnapshot>;
    /// Replaces the whole state with snapshot `id` from `store`; the live state is kept
    /// if the snapshot fails any check. Returns the snapshot's description.
    fn restore_snapshot(&mut self, store: &SnapshotStore, id: SnapshotId) -> Result<SnapshotInfo>;
    /// An immutable image of the state as of `applied_index()` that can be written
    /// on another thread while this state machine goes on applying, if this state
    /// machine can make one cheaply; `None` means snapshots are written in place with
    /// [`save_snapshot`](Self::save_snapshot).
    fn freeze(&mut self) -> Option<Box<dyn FrozenState>> {
        None
    }
}

/// A point-in-time image of a state machine, detached from it (see
/// [`StateMachine::freeze`]).
pub trait FrozenState: Send + 'static {
    /// The applied index the image is as of.
    fn applied_index(&self) -> u64;
    /// Streams the image into `store` durably, described by `info` (whose index must
    /// be [`applied_index`](Self::applied_index)).
    fn save_snapshot(&self, store: &SnapshotStore, info: &SnapshotInfo) -> Result<SavedSnapshot>;
}
