//! The default state machine: a map in memory, snapshotted with `keel_snapshot::memory`'s
//! streaming map format and rebuilt from the newest snapshot plus the log at start.
//!
//! Snapshots are written on their own thread while applying goes on, so the state
//! has two layers. Normally everything is in `base`, a plain hash map the apply
//! thread owns. [`StateMachine::freeze`] hands the snapshot thread a shared handle to
//! `base` (a pointer copy) and from then on applies land in `delta`, an overlay of
//! the keys written since (a deletion is recorded as `None`). Once the snapshot
//! thread lets go of `base`, the next apply folds `delta` into it: work in proportion
//! to the writes made during the snapshot, not to the state.
//!
//! Earlier versions used a persistent hash trie (`imbl`), which also freezes in O(1)
//! but pays on every write: inserts copied trie paths and, after each freeze, every
//! node they touched. That was a tenth of a 3-node cluster's CPU time; a plain map
//! with an overlay pays only during snapshots, and then one extra lookup per write.
//! The map is a hash map rather than an ordered one because applying is on every
//! write's path and ordering matters only to snapshots: the snapshot thread sorts the
//! keys once per snapshot ([`sorted_records`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use keel_snapshot::memory::{write_records, MapLimits, RecordReader};

use super::{FrozenState, StateMachine};
use crate::command::Op;

type Map = HashMap<Vec<u8>, Vec<u8>>;
// Keys written since the freeze; `None` marks a deletion.
type Delta = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// An in-memory map.
#[derive(Debug, Default)]
pub struct MemoryStateMachine {
    base: Arc<Map>,
    // Some from a freeze until the snapshot thread has let go of `base` and the
    // overlay was folded back in.
    delta: Option<Delta>,
    // Keys in the combined view.
    len: u64,
    applied_index: u64,
}

/// The map as of one applied index, detached from the live one.
#[derive(Debug)]
struct FrozenMap {
    map: Arc<Map>,
}

impl FrozenState for FrozenMap {
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let records = sorted_records(self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        write_records(records.len() as u64, records, out)
    }
}

/// The records in increasing key order, as the snapshot layout wants them (so the
/// RocksDB state machine writes the same bytes for the same state, and either
/// restores the other's).
///
/// Comparing whole keys made sorting most of a snapshot's CPU time, with most
/// comparisons spent on the prefix all keys share (`users/…`). So the common prefix
/// is skipped and the next 8 bytes, zero-padded, are compared as an integer first;
/// that order never contradicts the byte order, and ties fall back to the whole key.
fn sorted_records<'a>(
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(&'a [u8], &'a [u8])> {
    let records: Vec<(&[u8], &[u8])> = records.collect();
    let Some(((first, _), rest)) = records.split_first() else {
        return records;
    };
    let mut common = first.len();
    for (k, _) in rest {
        common = common.min(
            k.iter()
                .zip(first.iter())
                .take_while(|(a, b)| a == b)
                .count(),
        );
        if common == 0 {
            break;
        }
    }
    let mut keyed: Vec<(u64, &[u8], &[u8])> = records
        .into_iter()
        .map(|(k, v)| (prefix_u64(&k[common..]), k, v))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    keyed.into_iter().map(|(_, k, v)| (k, v)).collect()
}

// The first 8 bytes of `bytes`, zero-padded, as a big-endian integer.
fn prefix_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

impl MemoryStateMachine {
    /// An empty map at index 0.
    pub fn new() -> MemoryStateMachine {
        MemoryStateMachine::default()
    }

    // The operation's key and value move into the map.
    fn apply_owned(&mut self, index: u64, op: Op) {
        if index <= self.applied_index {
            return;
        }
        self.fold_delta();
        match (Arc::get_mut(&mut self.base), &mut self.delta) {
            (Some(base), None) => match op {
                Op::Put { key, value } => {
                    if base.insert(key, value).is_none() {
                        self.len += 1;
                    }
                }
                Op::Delete { key } => {
                    if base.remove(&key).is_some() {
                        self.len -= 1;
                    }
                }
            },
            (_, delta) => {
                let delta = delta.get_or_insert_with(Delta::new);
                let (key, value) = match op {
                    Op::Put { key, value } => (key, Some(value)),
                    Op::Delete { key } => (key, None),
                };
                let had = match delta.get(&key) {
                    Some(v) => v.is_some(),
                    None => self.base.contains_key(&key),
                };
                match (had, value.is_some()) {
                    (false, true) => self.len += 1,
                    (true, false) => self.len -= 1,
                    _ => {}
                }
                delta.insert(key, value);
            }
        }
        self.applied_index = index;
    }

    // Folds the overlay into `base` once no snapshot holds `base` any more.
    fn fold_delta(&mut self) {
        if self.delta.is_none() {
            return;
        }
        let Some(base) = Arc::get_mut(&mut self.base) else {
            return;
        };
        for (key, value) in self.delta.take().unwrap_or_default() {
            match value {
                Some(value) => base.insert(key, value),
                None => base.remove(&key),
            };
        }
        debug_assert_eq!(
            base.len() as u64,
            self.len,
            "keys after folding the overlay"
        );
    }

    // The combined view, as a map of its own: only for a freeze while an earlier
    // image still holds `base`, which the apply stage never asks for (it writes one
    // snapshot at a time and waits for its thread).
    fn merged(&self) -> Map {
        let mut map = (*self.base).clone();
        for (key, value) in self.delta.iter().flatten() {
            match value {
                Some(value) => map.insert(key.clone(), value.clone()),
                None => map.remove(key),
            };
        }
        map
    }

    fn frozen(&mut self) -> FrozenMap {
        self.fold_delta();
        if self.delta.is_some() {
            self.base = Arc::new(self.merged());
            self.delta = None;
        }
        FrozenMap {
            map: Arc::clone(&self.base),
        }
    }
}

impl MemoryStateMachine {
    /// The value of `key`, as of `applied_index()`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(written) = self.delta.as_ref().and_then(|d| d.get(key)) {
            return written.clone();
        }
        self.base.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl StateMachine for MemoryStateMachine {
    type Command = Op;
    type Response = ();

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn apply(&mut self, index: u64, op: Op) -> io::Result<()> {
        self.apply_owned(index, op);
        Ok(())
    }

    fn apply_batch(&mut self, ops: Vec<(u64, Op)>) -> io::Result<Vec<()>> {
        let n = ops.len();
        for (index, op) in ops {
            self.apply_owned(index, op);
        }
        Ok(vec![(); n])
    }

    fn mark_applied(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let map = match &self.delta {
            None => Arc::clone(&self.base),
            Some(_) => Arc::new(self.merged()),
        };
        FrozenMap { map }.write_snapshot(out)
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        // Built beside the live map, swapped in whole.
        let mut records = RecordReader::new(input, MapLimits::default())?;
        let mut map =
            Map::with_capacity(usize::try_from(records.count()).unwrap_or(0).min(1 << 20));
        while let Some((key, value)) = records.next_record()? {
            map.insert(key, value);
        }
        self.len = map.len() as u64;
        self.base = Arc::new(map);
        self.delta = None;
        self.applied_index = index;
        Ok(())
    }

    fn freeze(&mut self) -> Option<Box<dyn FrozenState>> {
        Some(Box::new(self.frozen()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Writes `image` and restores it, as of `index`, into a new state machine.
    fn written_and_restored(image: &dyn FrozenState, index: u64) -> MemoryStateMachine {
        let mut bytes = Vec::new();
        image.write_snapshot(&mut bytes).unwrap();
        let mut restored = MemoryStateMachine::new();
        restored
            .restore_snapshot(index, &mut bytes.as_slice())
            .unwrap();
        restored
    }

    #[test]
    fn a_snapshot_written_in_place_or_frozen_restores_the_same_map() {
        let mut sm = MemoryStateMachine::new();
        sm.apply(
            1,
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        )
        .unwrap();
        let mut in_place = Vec::new();
        sm.write_snapshot(&mut in_place).unwrap();
        let mut frozen = Vec::new();
        sm.freeze().unwrap().write_snapshot(&mut frozen).unwrap();
        assert_eq!(in_place, frozen);
        let mut restored = MemoryStateMachine::new();
        restored
            .restore_snapshot(1, &mut frozen.as_slice())
            .unwrap();
        assert_eq!(restored.get(b"k"), Some(b"v".to_vec()));
        assert_eq!(restored.applied_index(), 1);
        // A damaged image leaves an error, not a panic.
        let cut = &frozen[..frozen.len() - 1];
        assert!(MemoryStateMachine::new()
            .restore_snapshot(1, &mut &cut[..])
            .is_err());
    }

    #[test]
    fn applying_is_idempotent_by_index() {
        let mut sm = MemoryStateMachine::new();
        let put = |v: &str| Op::Put {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
        };
        sm.apply(1, put("a")).unwrap();
        sm.apply(2, put("b")).unwrap();
        // A replay of index 1 must not roll the value back.
        sm.apply(1, put("a")).unwrap();
        assert_eq!(sm.get(b"k"), Some(b"b".to_vec()));
        assert_eq!(sm.applied_index(), 2);
        sm.apply(3, Op::Delete { key: b"k".to_vec() }).unwrap();
        assert_eq!(sm.get(b"k"), None);
    }

    #[test]
    fn a_frozen_image_does_not_see_later_applies() {
        let mut sm = MemoryStateMachine::new();
        let put = |k: &str, v: &str| Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        sm.apply(1, put("a", "1")).unwrap();
        sm.apply(2, put("b", "2")).unwrap();
        let frozen = sm.freeze().expect("the memory map freezes");
        sm.apply(3, put("a", "changed")).unwrap();
        sm.apply(4, Op::Delete { key: b"b".to_vec() }).unwrap();
        sm.apply(5, put("c", "3")).unwrap();

        let restored = written_and_restored(frozen.as_ref(), 2);
        assert_eq!(restored.get(b"a"), Some(b"1".to_vec()));
        assert_eq!(restored.get(b"b"), Some(b"2".to_vec()));
        assert_eq!(restored.get(b"c"), None);
        assert_eq!(restored.applied_index(), 2);
        // The live map kept every later apply.
        assert_eq!(sm.get(b"a"), Some(b"changed".to_vec()));
        assert_eq!(sm.len(), 2);
    }

    type Model = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

    // The two layers against a plain ordered map, through random writes, freezes and
    // releases of the frozen image; seeded, so a failure replays.
    #[test]
    fn the_overlay_matches_a_plain_map_across_freezes() {
        for seed in 1..=20u64 {
            let mut rng = keel_raft::Rng::new(seed);
            let mut next = move |n: u64| rng.next_u64() % n;
            let mut sm = MemoryStateMachine::new();
            let mut model = Model::new();
            let mut frozen: Option<(Box<dyn FrozenState>, Model, u64)> = None;
            for index in 1..=2_000u64 {
                let key = format!("k{}", next(64)).into_bytes();
                let op = if next(4) == 0 {
                    model.remove(&key);
                    Op::Delete { key }
                } else {
                    let value = index.to_le_bytes().to_vec();
                    model.insert(key.clone(), value.clone());
                    Op::Put { key, value }
                };
                sm.apply_batch(vec![(index, op)]).unwrap();
                match next(50) {
                    0 if frozen.is_none() => {
                        frozen = Some((sm.freeze().unwrap(), model.clone(), index));
                    }
                    1 => frozen = None,
                    _ => {}
                }
                assert_eq!(sm.len(), model.len() as u64, "seed {seed} index {index}");
                let probe = format!("k{}", next(64)).into_bytes();
                assert_eq!(sm.get(&probe), model.get(&probe).cloned(), "seed {seed}");
            }
            // A frozen image still writes the state as of its freeze.
            if let Some((image, at_freeze, index)) = frozen {
                let restored = written_and_restored(image.as_ref(), index);
                assert_eq!(restored.len(), at_freeze.len() as u64, "seed {seed}");
                for (k, v) in &at_freeze {
                    assert_eq!(restored.get(k).as_ref(), Some(v), "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn records_come_out_in_byte_order() {
        let keys: Vec<Vec<u8>> = vec![
            b"users/b".to_vec(),
            b"users/a".to_vec(),
            b"users/ab".to_vec(),
            b"users/ab\0".to_vec(),
            b"users/abcdefghij2".to_vec(),
            b"users/abcdefghij1".to_vec(),
            b"users/".to_vec(),
            b"users/\xff".to_vec(),
        ];
        let sorted = sorted_records(keys.iter().map(|k| (k.as_slice(), k.as_slice())));
        let mut expected = keys.clone();
        expected.sort();
        let got: Vec<Vec<u8>> = sorted.iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(got, expected);
        assert!(sorted_records(std::iter::empty()).is_empty());
    }
}
