//! The default state machine: a `BTreeMap` in memory, snapshotted with
//! `snapshot::memory`'s streaming map format and rebuilt from the newest snapshot plus
//! the log at start.

use raft_core::SnapshotMetadata;
use snapshot::memory::{Map, MapConsumer};
use snapshot::{SavedSnapshot, SnapshotId, SnapshotStore};

use super::StateMachine;
use crate::command::Op;
use crate::error::Result;

/// An in-memory map.
#[derive(Debug, Default)]
pub struct MemoryStateMachine {
    map: Map,
    applied_index: u64,
}

impl MemoryStateMachine {
    /// An empty map at index 0.
    pub fn new() -> MemoryStateMachine {
        MemoryStateMachine::default()
    }
}

impl StateMachine for MemoryStateMachine {
    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn apply(&mut self, index: u64, op: &Op) -> Result<()> {
        if index <= self.applied_index {
            return Ok(());
        }
        match op {
            Op::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                self.map.remove(key);
            }
        }
        self.applied_index = index;
        Ok(())
    }

    fn skip_to(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn save_snapshot(
        &self,
        store: &SnapshotStore,
        metadata: &SnapshotMetadata,
    ) -> Result<SavedSnapshot> {
        Ok(store.save(metadata, &self.map)?)
    }

    fn restore_snapshot(
        &mut self,
        store: &SnapshotStore,
        id: SnapshotId,
    ) -> Result<SnapshotMetadata> {
        let (metadata, map) = store.load(id, &MapConsumer::default())?;
        self.map = map;
        self.applied_index = metadata.index;
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_is_idempotent_by_index() {
        let mut sm = MemoryStateMachine::new();
        let put = |v: &str| Op::Put {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
        };
        sm.apply(1, &put("a")).unwrap();
        sm.apply(2, &put("b")).unwrap();
        // A replay of index 1 must not roll the value back.
        sm.apply(1, &put("a")).unwrap();
        assert_eq!(sm.get(b"k").unwrap(), Some(b"b".to_vec()));
        assert_eq!(sm.applied_index(), 2);
        sm.apply(3, &Op::Delete { key: b"k".to_vec() }).unwrap();
        assert_eq!(sm.get(b"k").unwrap(), None);
    }
}
