//! The Raft-log bookkeeping shared by every backend: which indexes exist, their terms,
//! where each entry lives (`T`: the entry itself in memory, a file location in the WAL),
//! and the rules for appending, replacing a suffix, compacting and installing a
//! snapshot. One implementation keeps [`MemLogStore`](crate::MemLogStore) and the WAL
//! semantically identical, which the model test relies on.

use std::collections::VecDeque;

use keel_raft::{Entry, SnapshotMetadata};

use crate::LogError;

/// Log positions `base_index + 1 ..= base_index + slots.len()`, each with its term and
/// a payload `T`; `base_index` is the last compacted (or snapshotted) index.
#[derive(Debug, Clone)]
pub(crate) struct LogIndex<T> {
    base_index: u64,
    /// The term at `base_index`; `None` when unknown (only after recovering a log whose
    /// oldest segments were purged and no compaction record said what it was).
    base_term: Option<u64>,
    slots: VecDeque<(u64, T)>,
}

/// What a validated batch of entries will do to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AppendPlan {
    /// How many leading entries are already compacted and must be skipped.
    pub skip: usize,
    /// The index the suffix is replaced from (`last_index + 1` when nothing conflicts).
    pub from_index: u64,
}

impl<T> Default for LogIndex<T> {
    fn default() -> Self {
        LogIndex {
            base_index: 0,
            base_term: Some(0),
            slots: VecDeque::new(),
        }
    }
}

impl<T> LogIndex<T> {
    pub fn first_index(&self) -> u64 {
        self.base_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.base_index + self.slots.len() as u64
    }

    pub fn base_index(&self) -> u64 {
        self.base_index
    }

    pub fn base_term(&self) -> Option<u64> {
        self.base_term
    }

    /// The slot at `index` (term and payload).
    pub fn get(&self, index: u64) -> Result<&(u64, T), LogError> {
        if index <= self.base_index {
            return Err(LogError::Compacted(index));
        }
        let pos = usize::try_from(index - self.base_index - 1)
            .map_err(|_| LogError::Unavailable(index))?;
        self.slots.get(pos).ok_or(LogError::Unavailable(index))
    }

    pub fn term(&self, index: u64) -> Result<u64, LogError> {
        if index == self.base_index {
            return self.base_term.ok_or(LogError::Compacted(index));
        }
        self.get(index).map(|(term, _)| *term)
    }

    /// Checks a batch (optional snapshot marker, then entries) against the log as it
    /// stands, without changing it, and says how the entries will apply.
    pub fn plan_batch(
        &self,
        snapshot: Option<&SnapshotMetadata>,
        entries: &[Entry],
    ) -> Result<Option<AppendPlan>, LogError> {
        let (base, last) = match snapshot {
            Some(m) if m.index > self.base_index => {
                if self.term(m.index).ok() == Some(m.term) {
                    (m.index, self.last_index().max(m.index))
                } else {
                    (m.index, m.index)
                }
            }
            _ => (self.base_index, self.last_index()),
        };
        plan_append(base, last, entries)
    }

    /// Replaces everything from `from_index` with `items` (terms and payloads).
    /// `from_index` must come from [`plan_batch`](Self::plan_batch)'s plan (or be checked
    /// by the caller): `base_index < from_index <= last_index + 1`.
    pub fn append(&mut self, from_index: u64, items: impl IntoIterator<Item = (u64, T)>) {
        self.truncate_from(from_index);
        self.slots.extend(items);
    }

    /// Drops entries at `index` and above (no-op beyond the last index).
    pub fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.base_index + 1);
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        self.slots.truncate(keep);
    }

    /// Checks a suffix truncation at `index`; `Ok(false)` when it changes nothing.
    pub fn check_truncate(&self, index: u64) -> Result<bool, LogError> {
        if index <= self.base_index {
            return Err(LogError::Compacted(index));
        }
        Ok(index <= self.last_index())
    }

    /// Checks a compaction to `index`; `Ok(Some(term))` when it changes something.
    pub fn check_compact(&self, index: u64) -> Result<Option<u64>, LogError> {
        if index <= self.base_index {
            return Ok(None);
        }
        if index > self.last_index() {
            return Err(LogError::Unavailable(index));
        }
        self.term(index).map(Some)
    }

    /// Makes `index` (with `term`) the new base, dropping entries up to it; if `index`
    /// is beyond the last index the log becomes empty after it. No-op at or below the
    /// current base.
    pub fn compact_to(&mut self, index: u64, term: Option<u64>) {
        if index <= self.base_index {
            return;
        }
        let drop_n = usize::try_from(index - self.base_index).unwrap_or(usize::MAX);
        if drop_n >= self.slots.len() {
            self.slots.clear();
        } else {
            self.slots.drain(..drop_n);
        }
        self.base_index = index;
        self.base_term = term;
    }

    /// Applies a snapshot marker: an older one changes nothing; one that matches an
    /// entry in the log compacts up to it (a snapshot *taken*); otherwise the log is
    /// discarded and restarts after it (a snapshot *installed*). Returns whether the
    /// log was discarded.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> bool {
        if meta.index <= self.base_index {
            return false;
        }
        let matches = self.term(meta.index).ok() == Some(meta.term);
        if !matches {
            self.slots.clear();
        }
        self.compact_to(meta.index, Some(meta.term));
        !matches
    }

    /// Converts every payload with `f`, keeping the longest prefix for which `f`
    /// returns `Some`; also returns the first index where it returned `None`.
    pub fn convert<U>(self, mut f: impl FnMut(T) -> Option<U>) -> (LogIndex<U>, Option<u64>) {
        let mut slots = VecDeque::with_capacity(self.slots.len());
        let mut cut = None;
        for (pos, (term, t)) in self.slots.into_iter().enumerate() {
            match f(t) {
                Some(u) => slots.push_back((term, u)),
                None => {
                    cut = Some(self.base_index + 1 + pos as u64);
                    break;
                }
            }
        }
        let log = LogIndex {
            base_index: self.base_index,
            base_term: self.base_term,
            slots,
        };
        (log, cut)
    }

    /// Restarts the log empty after `index` (with `term` there, if known).
    // Used by the RocksDB backend (`rocksdb_log.rs`, feature `rocksdb`) when it
    // rebuilds its index on open; unused in the default build.
    #[allow(dead_code)]
    pub fn reset_after(&mut self, index: u64, term: Option<u64>) {
        self.slots.clear();
        self.base_index = index;
        self.base_term = term;
    }

    /// Iterates slots from `lo` (which must be in the log) upward.
    pub fn iter_from(&self, lo: u64) -> impl Iterator<Item = (u64, &(u64, T))> {
        let skip = usize::try_from(lo.saturating_sub(self.base_index + 1)).unwrap_or(usize::MAX);
        self.slots
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(pos, slot)| (self.base_index + 1 + pos as u64, slot))
    }

    /// Checks a read range `[lo, hi)`.
    pub fn check_range(&self, lo: u64, hi: u64) -> Result<(), LogError> {
        if lo <= self.base_index {
            return Err(LogError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(LogError::Unavailable(hi - 1));
        }
        if lo > hi {
            return Err(LogError::Unavailable(lo));
        }
        Ok(())
    }
}

/// The bookkeeping that decides what `durable_index` reports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durability {
    durable_index: u64,
}

impl Durability {
    pub fn get(&self) -> u64 {
        self.durable_index
    }

    /// An unsynced write replaced or dropped entries from `index` onward: whatever was
    /// durable there is no longer what the log holds.
    pub fn invalidate_from(&mut self, index: u64) {
        self.durable_index = self.durable_index.min(index.saturating_sub(1));
    }

    /// Everything in the log up to `last_index` is now synced.
    pub fn synced(&mut self, last_index: u64) {
        self.durable_index = last_index;
    }
}

/// Checks `entries` against a log holding `base + 1 ..= last` and says how they apply.
fn plan_append(base: u64, last: u64, entries: &[Entry]) -> Result<Option<AppendPlan>, LogError> {
    let Some(first) = entries.first() else {
        return Ok(None);
    };
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index.wrapping_add(1) {
            return Err(LogError::InvalidWrite(format!(
                "entries not contiguous: {} follows {}",
                pair[1].index, pair[0].index
            )));
        }
    }
    if first.index == 0 {
        return Err(LogError::InvalidWrite("entry index 0".into()));
    }
    if first.index > last + 1 {
        return Err(LogError::InvalidWrite(format!(
            "entries start at {} leaving a gap after last index {last}",
            first.index
        )));
    }
    // Entries at or below the base were committed and compacted; they can only be
    // identical to what was there, so they are skipped (as etcd's MemoryStorage does).
    let skip = usize::try_from(base.saturating_sub(first.index - 1))
        .unwrap_or(usize::MAX)
        .min(entries.len());
    if skip == entries.len() {
        return Ok(None);
    }
    Ok(Some(AppendPlan {
        skip,
        from_index: entries[skip].index,
    }))
}
