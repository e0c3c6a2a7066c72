//! The default state machine: a map in memory, snapshotted with `snapshot::memory`'s
//! streaming map format and rebuilt from the newest snapshot plus the log at start.
//!
//! The map is `imbl::HashMap`, a persistent hash trie: cloning it shares every node,
//! and the live map copies only the nodes it changes afterwards. That makes
//! [`StateMachine::freeze`] a pointer copy, so a snapshot of any size is written on
//! its own thread while applying goes on (a `BTreeMap` would have to be copied whole,
//! or held still for the whole write). It is a hash map rather than an ordered one
//! because applying is on every write's path and ordering only matters to snapshots:
//! with an ordered map, key comparisons were a fifth of a 3-node cluster's CPU time;
//! the snapshot thread sorts the keys instead, once per snapshot.

use std::io::{self, Write};
use std::sync::Arc;

use imbl::HashMap;
use raft_core::SnapshotMetadata;
use snapshot::memory::{write_records, MapConsumer};
use snapshot::{SavedSnapshot, SnapshotId, SnapshotProducer, SnapshotStore};

use super::{FrozenState, StateMachine};
use crate::command::Op;
use crate::error::Result;

// Keys and values are shared, not owned: after a freeze, the first write into each
// node of the trie copies that node, and copying a node copies its entries. With
// owned bytes that meant copying every key and value of the state once per snapshot,
// on the apply thread; with shared ones it is a reference count per entry.
type Bytes = Arc<[u8]>;
type Map = HashMap<Bytes, Bytes>;

/// An in-memory map.
#[derive(Debug, Default)]
pub struct MemoryStateMachine {
    map: Map,
    applied_index: u64,
}

/// The map as of one applied index, detached from the live one.
#[derive(Debug)]
struct FrozenMap {
    map: Map,
    applied_index: u64,
}

impl SnapshotProducer for FrozenMap {
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        // The layout wants keys in increasing order (so the RocksDB state machine
        // writes the same bytes for the same state, and either restores the other's).
        let mut records: Vec<(&Bytes, &Bytes)> = self.map.iter().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_records(records.len() as u64, records, out)
    }
}

impl FrozenState for FrozenMap {
    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn save_snapshot(
        &self,
        store: &SnapshotStore,
        metadata: &SnapshotMetadata,
    ) -> Result<SavedSnapshot> {
        assert_eq!(metadata.index, self.applied_index, "snapshot metadata");
        Ok(store.save(metadata, self)?)
    }
}

impl MemoryStateMachine {
    fn frozen(&self) -> FrozenMap {
        FrozenMap {
            map: self.map.clone(),
            applied_index: self.applied_index,
        }
    }
}

impl MemoryStateMachine {
    // The operation's key and value move into the map.
    fn apply_owned(&mut self, index: u64, op: Op) {
        if index <= self.applied_index {
            return;
        }
        match op {
            Op::Put { key, value } => {
                self.map.insert(Bytes::from(key), Bytes::from(value));
            }
            Op::Delete { key } => {
                self.map.remove(key.as_slice());
            }
        }
        self.applied_index = index;
    }

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
        self.apply_owned(index, op.clone());
        Ok(())
    }

    fn apply_batch(&mut self, ops: Vec<(u64, Op)>) -> Result<()> {
        for (index, op) in ops {
            self.apply_owned(index, op);
        }
        Ok(())
    }

    fn skip_to(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).map(|v| v.to_vec()))
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn save_snapshot(
        &self,
        store: &SnapshotStore,
        metadata: &SnapshotMetadata,
    ) -> Result<SavedSnapshot> {
        self.frozen().save_snapshot(store, metadata)
    }

    fn restore_snapshot(
        &mut self,
        store: &SnapshotStore,
        id: SnapshotId,
    ) -> Result<SnapshotMetadata> {
        let (metadata, map) = store.load(id, &MapConsumer::default())?;
        self.map = map
            .into_iter()
            .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
            .collect();
        self.applied_index = metadata.index;
        Ok(metadata)
    }

    fn freeze(&self) -> Option<Box<dyn FrozenState>> {
        Some(Box::new(self.frozen()))
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

    #[test]
    fn a_frozen_image_does_not_see_later_applies() {
        let mut sm = MemoryStateMachine::new();
        let put = |k: &str, v: &str| Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        sm.apply(1, &put("a", "1")).unwrap();
        sm.apply(2, &put("b", "2")).unwrap();
        let frozen = sm.freeze().expect("the memory map freezes");
        assert_eq!(frozen.applied_index(), 2);
        sm.apply(3, &put("a", "changed")).unwrap();
        sm.apply(4, &Op::Delete { key: b"b".to_vec() }).unwrap();
        sm.apply(5, &put("c", "3")).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(
            wal::fs::StdFs::shared(),
            dir.path(),
            snapshot::StoreOptions::default(),
        )
        .unwrap();
        let meta = SnapshotMetadata {
            index: 2,
            term: 1,
            ..SnapshotMetadata::default()
        };
        let saved = frozen.save_snapshot(&store, &meta).unwrap();
        let mut restored = MemoryStateMachine::new();
        restored.restore_snapshot(&store, saved.id).unwrap();
        assert_eq!(restored.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(restored.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(restored.get(b"c").unwrap(), None);
        assert_eq!(restored.applied_index(), 2);
        // The live map kept every later apply.
        assert_eq!(sm.get(b"a").unwrap(), Some(b"changed".to_vec()));
        assert_eq!(sm.len(), 2);
    }
}
