//! [`MemLogStore`]: a [`LogStore`] held entirely in memory, for tests and as the model
//! the WAL is checked against.

use std::time::Instant;

use keel_raft::{Entry, HardState, SnapshotMetadata};
use parking_lot::RwLock;

use crate::log_index::{Durability, LogIndex};
use crate::{LogBatch, LogError, LogStore, SyncPolicy};

/// An in-memory [`LogStore`] with the same Raft semantics as the WAL. "Durable" and
/// "synced" are simulated with the same rules as the WAL's: a write is durable once a
/// durable write the [`SyncPolicy`] syncs or a [`LogStore::sync`] follows it, so
/// callers can test their handling of `durable_index` and of the policy.
#[derive(Debug, Default)]
pub struct MemLogStore {
    sync_policy: SyncPolicy,
    state: RwLock<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    log: LogIndex<Entry>,
    hard_state: HardState,
    snapshot: Option<SnapshotMetadata>,
    durability: Durability,
    /// Whether something was written since the last (simulated) sync.
    unsynced: bool,
    syncs: u64,
    last_sync: Option<Instant>,
}

impl MemLogStore {
    /// An empty log (first index 1, last index 0) under [`SyncPolicy::Always`].
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    /// An empty log whose durable writes follow `sync_policy`.
    pub fn with_sync_policy(sync_policy: SyncPolicy) -> MemLogStore {
        MemLogStore {
            sync_policy,
            // As the WAL's: `EveryMs` counts from the open.
            state: RwLock::new(MemState {
                last_sync: Some(Instant::now()),
                ..MemState::default()
            }),
        }
    }
}

impl MemState {
    fn apply(&mut self, batch: &LogBatch) -> Result<(), LogError> {
        // Validate everything before changing anything, so a rejected batch is a no-op.
        let plan = self
            .log
            .plan_batch(batch.snapshot.as_ref(), &batch.entries)?;
        if let Some(meta) = &batch.snapshot {
            if self.log.apply_snapshot(meta) {
                self.durability.invalidate_from(meta.index + 1);
            }
        }
        if let Some(plan) = plan {
            self.durability.invalidate_from(plan.from_index);
            let items = batch.entries[plan.skip..]
                .iter()
                .map(|e| (e.term, e.clone()));
            self.log.append(plan.from_index, items);
        }
        if let Some(meta) = &batch.snapshot {
            if !matches!(&self.snapshot, Some(s) if s.index > meta.index) {
                self.snapshot = Some(meta.clone());
            }
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
        self.unsynced |= !batch.is_empty();
        Ok(())
    }

    /// A simulated sync: everything written becomes durable. Counted only if something
    /// was unsynced, as the WAL counts only real fdatasyncs.
    fn sync(&mut self) {
        if self.unsynced {
            self.unsynced = false;
            self.syncs += 1;
            self.last_sync = Some(Instant::now());
        }
        let last = self.log.last_index();
        self.durability.synced(last);
    }
}

impl LogStore for MemLogStore {
    fn write(&self, batch: &LogBatch, durable: bool) -> Result<u64, LogError> {
        let mut s = self.state.write();
        s.apply(batch)?;
        if durable && self.sync_policy.syncs_now(s.last_sync) {
            s.sync();
        }
        Ok(s.durability.get())
    }

    fn sync(&self) -> Result<(), LogError> {
        self.state.write().sync();
        Ok(())
    }

    fn syncs(&self) -> u64 {
        self.state.read().syncs
    }

    fn durable_index(&self) -> u64 {
        self.state.read().durability.get()
    }

    fn truncate_suffix(&self, index: u64) -> Result<(), LogError> {
        let mut s = self.state.write();
        if s.log.check_truncate(index)? {
            s.log.truncate_from(index);
            s.durability.invalidate_from(index);
            s.unsynced = true;
        }
        Ok(())
    }

    fn compact(&self, index: u64) -> Result<(), LogError> {
        let mut s = self.state.write();
        if let Some(term) = s.log.check_compact(index)? {
            s.log.compact_to(index, Some(term));
            s.unsynced = true;
        }
        Ok(())
    }

    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, LogError> {
        let s = self.state.read();
        s.log.check_range(lo, hi)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for (index, (_, entry)) in s.log.iter_from(lo) {
            if index >= hi {
                break;
            }
            size = size.saturating_add(entry.size_bytes());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, LogError> {
        self.state.read().log.term(index)
    }

    fn first_index(&self) -> u64 {
        self.state.read().log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.state.read().log.last_index()
    }

    fn hard_state(&self) -> HardState {
        self.state.read().hard_state
    }

    fn snapshot_marker(&self) -> Option<SnapshotMetadata> {
        self.state.read().snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..hi)
            .map(|i| Entry::new(term, i, vec![i as u8]))
            .collect()
    }

    fn batch(entries: Vec<Entry>) -> LogBatch {
        LogBatch {
            entries,
            ..LogBatch::default()
        }
    }

    #[test]
    fn append_replace_compact_snapshot() {
        let log = MemLogStore::new();
        assert_eq!((log.first_index(), log.last_index()), (1, 0));
        assert_eq!(log.write(&batch(ents(1, 6, 1)), true).unwrap(), 5);
        assert_eq!(log.write(&batch(ents(4, 8, 2)), false).unwrap(), 3);
        assert_eq!(log.term(3).unwrap(), 1);
        assert_eq!(log.term(4).unwrap(), 2);
        assert_eq!(log.last_index(), 7);
        log.sync().unwrap();
        assert_eq!(log.durable_index(), 7);
        assert!(matches!(
            log.write(&batch(ents(9, 10, 2)), true),
            Err(LogError::InvalidWrite(_))
        ));
        log.compact(3).unwrap();
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3).unwrap(), 1);
        assert!(matches!(log.term(2), Err(LogError::Compacted(2))));
        assert!(matches!(
            log.entries(3, 5, u64::MAX),
            Err(LogError::Compacted(3))
        ));
        assert_eq!(log.entries(4, 8, 0).unwrap().len(), 1, "at least one entry");
        assert_eq!(log.entries(4, 8, u64::MAX).unwrap().len(), 4);
        log.truncate_suffix(6).unwrap();
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.durable_index(), 5);

        // A snapshot that matches the log compacts it; one ahead of it resets it.
        let snap = SnapshotMetadata {
            index: 5,
            term: 2,
            ..Default::default()
        };
        log.write(
            &LogBatch {
                snapshot: Some(snap.clone()),
                ..Default::default()
            },
            true,
        )
        .unwrap();
        assert_eq!((log.first_index(), log.last_index()), (6, 5));
        let ahead = SnapshotMetadata {
            index: 20,
            term: 4,
            ..Default::default()
        };
        log.write(
            &LogBatch {
                snapshot: Some(ahead.clone()),
                entries: ents(21, 23, 4),
                hard_state: Some(HardState {
                    term: 4,
                    vote: 1,
                    commit: 20,
                }),
            },
            true,
        )
        .unwrap();
        assert_eq!((log.first_index(), log.last_index()), (21, 22));
        assert_eq!(log.term(20).unwrap(), 4);
        assert_eq!(log.snapshot_marker(), Some(ahead));
        assert_eq!(log.hard_state().commit, 20);
    }
}
