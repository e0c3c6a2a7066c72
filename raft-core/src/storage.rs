//! The read side of the Raft log that the core consults, and an in-memory
//! implementation for tests and for engines that keep the whole log in memory.

use crate::errors::{Result, StorageError};
use crate::types::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use crate::util::limit_size;

/// What a node recovers with: its hard state and its membership.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftState {
    /// Term, vote and commit as last persisted.
    pub hard_state: HardState,
    /// Membership as of the last applied configuration (or the snapshot).
    pub conf_state: ConfState,
}

/// Read access to the stable log. The application writes to the log itself (after each
/// `Ready`); raft-core only reads through this trait.
///
/// Invariant: `first_index() - 1` is the snapshot index, whose term `term()` still
/// answers, and entries `first_index()..=last_index()` are all present.
pub trait Storage {
    /// The persisted hard state and membership, read when a node starts.
    fn initial_state(&self) -> Result<RaftState>;
    /// Entries in `[low, high)`, stopping early once their total size exceeds
    /// `max_size` bytes (at least one entry is always returned if the range is
    /// non-empty). `u64::MAX` means unlimited.
    fn entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>>;
    /// The term of entry `index`, which may be the snapshot index.
    fn term(&self, index: u64) -> Result<u64>;
    /// The first index still available (snapshot index + 1).
    fn first_index(&self) -> Result<u64>;
    /// The last index in the log (the snapshot index if the log is empty).
    fn last_index(&self) -> Result<u64>;
    /// The latest snapshot, to send to peer `to` that needs entries from at least
    /// `request_index`. May return `SnapshotTemporarilyUnavailable`.
    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot>;
}

/// A [`Storage`] that keeps everything in memory, like etcd's `MemoryStorage`.
///
/// It holds the latest snapshot and the log after a compaction point, which is at or
/// below the snapshot index (a catch-up margin of entries may be kept behind a snapshot).
///
/// # Example
///
/// ```
/// use keel_raft::{Entry, MemoryStorage, Storage};
///
/// # fn main() -> keel_raft::Result<()> {
/// let mut store = MemoryStorage::new_with_conf_state(vec![1, 2, 3], vec![]);
/// let entries: Vec<Entry> = (1..=5).map(|index| Entry::new(1, index, vec![])).collect();
/// store.append(&entries)?;
/// assert_eq!((store.first_index()?, store.last_index()?), (1, 5));
/// assert_eq!(store.initial_state()?.conf_state.voters, vec![1, 2, 3]);
///
/// // Snapshot the state machine at 3, then drop the entries the snapshot covers.
/// store.create_snapshot(3, None, b"state at 3".to_vec())?;
/// store.compact(3)?;
/// assert_eq!(store.first_index()?, 4);
/// assert_eq!(store.term(3)?, 1); // the compaction point's term is still known
/// assert_eq!(store.snapshot(0, 2)?.metadata.index, 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    // Index and term of the last compacted entry; `entries` continue right after it.
    compacted_index: u64,
    compacted_term: u64,
    entries: Vec<Entry>,
    // The membership reported by `initial_state`.
    conf_state: ConfState,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// A storage whose initial membership is `voters` (and `learners`), as a brand-new
    /// cluster is bootstrapped.
    pub fn new_with_conf_state(voters: Vec<u64>, learners: Vec<u64>) -> MemoryStorage {
        let mut s = MemoryStorage::new();
        let cs = ConfState {
            voters,
            learners,
            ..ConfState::default()
        };
        s.snapshot.metadata.conf_state = cs.clone();
        s.conf_state = cs;
        s
    }

    /// Records the persisted hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The recorded hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Records the membership reported by `initial_state`.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Sets only the commit index of the hard state.
    pub fn commit_to(&mut self, index: u64) {
        self.hard_state.commit = index;
    }

    /// Replaces the whole contents with `snapshot`; all entries are dropped.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let meta = &snapshot.metadata;
        if self.snapshot.metadata.index >= meta.index {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.conf_state.clone();
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        self.entries.clear();
        self.snapshot = snapshot;
        Ok(())
    }

    /// Makes a snapshot at `index` (which must still be in the log) with membership
    /// `cs` (or the previous snapshot's if `None`) and state-machine bytes `data`.
    /// Entries are kept; call [`compact`](Self::compact) to drop them.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        cs: Option<ConfState>,
        data: Vec<u8>,
    ) -> Result<Snapshot> {
        if index <= self.snapshot.metadata.index {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        let term = self.term(index)?;
        let conf_state = cs.unwrap_or_else(|| self.snapshot.metadata.conf_state.clone());
        self.snapshot = Snapshot {
            metadata: SnapshotMetadata {
                conf_state,
                index,
                term,
            },
            data,
        };
        Ok(self.snapshot.clone())
    }

    /// Discards entries up to and including `compact_index`, which must not pass the
    /// snapshot index: a follower that needs discarded entries is sent the snapshot.
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        if compact_index <= self.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if compact_index > self.snapshot.metadata.index {
            return Err(StorageError::Other(format!(
                "cannot compact to {compact_index}: past the snapshot at {}",
                self.snapshot.metadata.index
            ))
            .into());
        }
        let term = self.term(compact_index)?;
        let drop = (compact_index - self.compacted_index) as usize;
        self.entries.drain(..drop);
        self.compacted_index = compact_index;
        self.compacted_term = term;
        Ok(())
    }

    /// Appends `ents`, replacing any conflicting suffix. Entries already compacted are
    /// ignored. Fails if the first new entry would leave a gap.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first_new) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        let first = self.compacted_index + 1;
        let last = self.compacted_index + self.entries.len() as u64;
        let last_new = first_new + ents.len() as u64 - 1;
        if last_new < first {
            return Ok(());
        }
        if first_new > last + 1 {
            return Err(StorageError::Other(format!(
                "append leaves a gap: first new index {first_new}, last index {last}"
            ))
            .into());
        }
        let ents = &ents[first.saturating_sub(first_new) as usize..];
        self.entries.truncate((ents[0].index - first) as usize);
        self.entries.extend_from_slice(ents);
        debug_assert!(self
            .entries
            .windows(2)
            .all(|w| w[1].index == w[0].index + 1));
        Ok(())
    }
}

impl Storage for MemoryStorage {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>> {
        if low <= self.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if high > self.compacted_index + self.entries.len() as u64 + 1 || low > high {
            return Err(StorageError::Unavailable.into());
        }
        let lo = (low - self.compacted_index - 1) as usize;
        let hi = (high - self.compacted_index - 1) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index < self.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        match self
            .entries
            .get((index - self.compacted_index - 1) as usize)
        {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable.into()),
        }
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.compacted_index + 1)
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.compacted_index + self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}
