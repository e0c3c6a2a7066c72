//! keel's bounded log cache: what stands where etcd has `MemoryStorage`.
//!
//! Owns: [`LogCache`], the engine's raft-core [`Storage`]: the latest snapshot
//! metadata, the compaction point and a byte-bounded window of the newest entries in
//! front of a durable log, and the protocol by which the log's writer keeps the two in
//! step (below). Must not: write the log (on a running node the engine's persist stage
//! appends to it and its apply stage compacts it, through the same `LogStore`; recovery
//! writes it before the stages start), touch a file itself, or run threads of its own.
//!
//! [`LogCache`] implements raft-core's [`Storage`] in front of a durable
//! [`keel_wal::LogStore`]. It keeps the latest snapshot metadata, the compaction point and a
//! window of the most recent entries whose payload bytes stay within
//! [`LogCacheOptions::max_bytes`]; reads inside the window are answered from memory,
//! older ones from the log.
//!
//! # Protocol
//!
//! The cache never writes the log. The persist stage writes each `LogBatch` to the
//! `LogStore` first and then tells the cache the same thing:
//!
//! | durable write | then call |
//! |---|---|
//! | entries (maybe replacing a suffix) | [`LogCache::append`] |
//! | a snapshot marker (received from the leader, or taken locally) | [`LogCache::apply_snapshot`] |
//! | `truncate_suffix(i)` | [`LogCache::truncate_suffix`] |
//!
//! A snapshot taken locally whose marker is *not* logged yet is announced with
//! [`LogCache::record_snapshot`], so `snapshot()` can serve it while the entries behind
//! it stay as a catch-up margin.
//!
//! Compaction is the one step in the other order: call [`LogCache::compact`] *before*
//! `LogStore::compact`, so the term of the compaction point can still be read if it
//! has left the window.
//!
//! # Sharing
//!
//! `LogCache` is a handle: clones share one cache. Every method takes `&self`; state
//! sits behind a `parking_lot::RwLock` and the counters are atomics, so each of the
//! engine's threads can hold a clone: the raft thread reads through raft-core's
//! `Storage` and sets the membership when a change takes effect, the persist thread
//! mirrors each durable write, and the apply thread records the snapshots it takes and
//! compacts. A read that misses holds the read lock while it reads the log, so a
//! concurrent truncation can never hand a reader a mix of old and new entries.

#![deny(missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_raft::{
    ConfState, Entry, Error, RaftState, Result, Snapshot, SnapshotMetadata, Storage, StorageError,
};
use keel_wal::{LogError, LogStore};
use parking_lot::RwLock;

/// How the cache is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCacheOptions {
    /// Upper bound on the bytes (as counted by [`Entry::size_bytes`]) of the entries
    /// kept in memory. The newest entries are kept; the oldest are evicted first.
    pub max_bytes: u64,
}

impl Default for LogCacheOptions {
    /// 16 MiB: thousands of typical entries, enough for followers a little behind and
    /// for the apply stage, small next to the state machine.
    fn default() -> Self {
        LogCacheOptions {
            max_bytes: 16 << 20,
        }
    }
}

/// A point-in-time view of the cache's counters and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Reads (`entries`, `term`) answered from memory.
    pub hits: u64,
    /// Reads that had to go to the durable log (even partly).
    pub misses: u64,
    /// Entries held in the window.
    pub window_entries: u64,
    /// Bytes of the entries held in the window.
    pub window_bytes: u64,
    /// The configured bound on `window_bytes`.
    pub max_bytes: u64,
    /// Index of the oldest entry in the window, if any.
    pub window_first_index: Option<u64>,
    /// The first index served (compaction point + 1).
    pub first_index: u64,
    /// The last index in the log.
    pub last_index: u64,
    /// Index of the latest snapshot (0 for none).
    pub snapshot_index: u64,
}

impl CacheStats {
    /// Fraction of reads answered from memory (0 when nothing was read yet).
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Debug)]
struct Inner {
    snapshot: SnapshotMetadata,
    conf_state: ConfState,
    // The last entry no longer served and its term; `first_index` is one past it. It
    // never passes the snapshot index, so a catch-up margin can be kept behind a
    // snapshot (as in raft-core's MemoryStorage).
    compacted_index: u64,
    compacted_term: u64,
    last_index: u64,
    // Contiguous entries ending at `last_index` (when non-empty), all above
    // `compacted_index`, whose sizes sum to `window_bytes` <= max_bytes.
    window: VecDeque<Entry>,
    window_bytes: u64,
}

impl Inner {
    fn window_first(&self) -> Option<u64> {
        self.window.front().map(|e| e.index)
    }

    fn window_get(&self, index: u64) -> Option<&Entry> {
        let first = self.window_first()?;
        let offset = usize::try_from(index.checked_sub(first)?).ok()?;
        self.window.get(offset)
    }

    fn evict_to(&mut self, max_bytes: u64) {
        while self.window_bytes > max_bytes {
            match self.window.pop_front() {
                Some(e) => self.window_bytes -= e.size_bytes(),
                None => break,
            }
        }
    }

    fn clear_window(&mut self) {
        self.window.clear();
        self.window_bytes = 0;
    }
}

#[derive(Debug)]
struct Shared<L: ?Sized> {
    max_bytes: u64,
    inner: RwLock<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    log: Arc<L>,
}

/// A bounded, shareable cache of the Raft log that implements [`Storage`]. See the
/// module documentation for the calling protocol.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use keel_log_cache::{LogCache, LogCacheOptions};
/// use keel_raft::{Entry, Storage};
/// use keel_wal::{LogBatch, LogStore, MemLogStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = Arc::new(MemLogStore::new()); // a `Wal` on a real node
/// // Room for about four 100-byte entries (each counts its payload plus 24 bytes).
/// let cache = LogCache::open(Arc::clone(&log), LogCacheOptions { max_bytes: 4 * 124 })?;
///
/// for index in 1..=10 {
///     let entries = vec![Entry::new(1, index, vec![0; 100])];
///     // The persist stage's order: the durable log first, then the cache.
///     log.write(&LogBatch { entries: entries.clone(), ..LogBatch::default() }, true)?;
///     cache.append(&entries)?;
/// }
///
/// // Raft reads through `Storage`: the newest entries come from memory, older ones
/// // from the log.
/// assert_eq!(cache.entries(8, 11, u64::MAX)?.len(), 3);
/// assert_eq!(cache.entries(1, 3, u64::MAX)?.len(), 2);
/// let stats = cache.stats();
/// assert_eq!((stats.window_entries, stats.hits, stats.misses), (4, 1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LogCache<L: LogStore + ?Sized> {
    shared: Arc<Shared<L>>,
}

impl<L: LogStore + ?Sized> Clone for LogCache<L> {
    fn clone(&self) -> Self {
        LogCache {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Maps a log failure onto the error raft-core understands.
pub fn storage_error(e: LogError) -> Error {
    match e {
        LogError::Compacted(_) => StorageError::Compacted.into(),
        LogError::Unavailable(_) => StorageError::Unavailable.into(),
        other => StorageError::Other(other.to_string()).into(),
    }
}

fn other(msg: String) -> Error {
    StorageError::Other(msg).into()
}

impl<L: LogStore + ?Sized> LogCache<L> {
    /// A cache over `log`, starting from what the log holds now (its bounds, snapshot
    /// marker and hard state). The window starts empty and fills as entries are
    /// appended.
    pub fn open(log: Arc<L>, options: LogCacheOptions) -> Result<LogCache<L>> {
        let snapshot = log.snapshot_marker().unwrap_or_default();
        let first = log.first_index().max(1);
        let last = log.last_index();
        let compacted_index = first - 1;
        let compacted_term = if compacted_index == 0 {
            0
        } else if compacted_index == snapshot.index {
            snapshot.term
        } else {
            log.term(compacted_index).map_err(storage_error)?
        };
        if last < compacted_index {
            return Err(other(format!(
                "log bounds inverted: first index {first}, last index {last}"
            )));
        }
        let inner = Inner {
            conf_state: snapshot.conf_state.clone(),
            snapshot,
            compacted_index,
            compacted_term,
            last_index: last,
            window: VecDeque::new(),
            window_bytes: 0,
        };
        Ok(LogCache {
            shared: Arc::new(Shared {
                max_bytes: options.max_bytes,
                inner: RwLock::new(inner),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                log,
            }),
        })
    }

    /// The durable log behind the cache.
    pub fn log(&self) -> &Arc<L> {
        &self.shared.log
    }

    /// Counters and bounds, for metrics.
    pub fn stats(&self) -> CacheStats {
        let inner = self.shared.inner.read();
        CacheStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            window_entries: inner.window.len() as u64,
            window_bytes: inner.window_bytes,
            max_bytes: self.shared.max_bytes,
            window_first_index: inner.window_first(),
            first_index: inner.compacted_index.saturating_add(1),
            last_index: inner.last_index,
            snapshot_index: inner.snapshot.index,
        }
    }

    /// The latest snapshot's metadata (index 0 when there is none).
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.shared.inner.read().snapshot.clone()
    }

    /// Records the membership `initial_state` reports (after a conf change is applied).
    pub fn set_conf_state(&self, conf_state: ConfState) {
        self.shared.inner.write().conf_state = conf_state;
    }

    /// Mirrors an append that the log has durably written: `entries` (contiguous) replace
    /// any suffix from their first index on. Entries at or below the compaction point
    /// are ignored; a first index past `last_index + 1` is a gap and is refused.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        self.append_owned(entries.to_vec())
    }

    /// [`append`](Self::append), taking the entries instead of copying them (the
    /// persist stage's path: every entry would otherwise be copied once more).
    pub fn append_owned(&self, mut entries: Vec<Entry>) -> Result<()> {
        let Some(first_new) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        if first_new == 0 {
            return Err(other("append of an entry at index 0".into()));
        }
        if entries
            .windows(2)
            .any(|w| w[0].index.checked_add(1) != Some(w[1].index))
        {
            return Err(other("append of non-contiguous entries".into()));
        }
        let mut inner = self.shared.inner.write();
        // Contiguous from first_new, so the last index did not overflow above either.
        let last_new = first_new + (entries.len() as u64 - 1);
        if last_new <= inner.compacted_index {
            return Ok(());
        }
        if first_new > inner.last_index.saturating_add(1) {
            return Err(other(format!(
                "append leaves a gap: first new index {first_new}, last index {}",
                inner.last_index
            )));
        }
        // Skip what is already compacted.
        let skip = inner.compacted_index.saturating_sub(first_new - 1);
        entries.drain(..skip as usize);
        let first_new = first_new + skip;

        // Drop the replaced suffix; the window then ends at first_new - 1 or is empty.
        while inner.window.back().is_some_and(|e| e.index >= first_new) {
            if let Some(e) = inner.window.pop_back() {
                inner.window_bytes -= e.size_bytes();
            }
        }
        if inner
            .window
            .back()
            .is_some_and(|e| e.index.checked_add(1) != Some(first_new))
        {
            // Cannot happen while the window ends at last_index; keep it contiguous
            // regardless.
            inner.clear_window();
        }
        inner.last_index = last_new;

        // Only the newest entries that fit the bound are worth copying.
        let max_bytes = self.shared.max_bytes;
        let mut fit_bytes = 0u64;
        let fit = entries
            .iter()
            .rev()
            .take_while(|e| {
                fit_bytes += e.size_bytes();
                fit_bytes <= max_bytes
            })
            .count();
        if fit < entries.len() {
            inner.clear_window();
        }
        let unfit = entries.len() - fit;
        for e in entries.into_iter().skip(unfit) {
            inner.window_bytes += e.size_bytes();
            inner.window.push_back(e);
        }
        inner.evict_to(max_bytes);
        Ok(())
    }

    /// Stops serving entries up to and including `index`, which must not pass the
    /// snapshot index (a follower that needs them is sent the snapshot). Call it before
    /// `LogStore::compact(index)`.
    pub fn compact(&self, index: u64) -> Result<()> {
        let mut inner = self.shared.inner.write();
        if index <= inner.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if index > inner.snapshot.index {
            return Err(other(format!(
                "cannot compact to {index}: past the snapshot at {}",
                inner.snapshot.index
            )));
        }
        if index > inner.last_index {
            return Err(StorageError::Unavailable.into());
        }
        let term = if index == inner.snapshot.index {
            inner.snapshot.term
        } else if let Some(e) = inner.window_get(index) {
            e.term
        } else {
            self.shared.log.term(index).map_err(storage_error)?
        };
        while inner.window.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = inner.window.pop_front() {
                inner.window_bytes -= e.size_bytes();
            }
        }
        inner.compacted_index = index;
        inner.compacted_term = term;
        Ok(())
    }

    /// Records a snapshot the local state machine took at `metadata.index` (which must
    /// be in the log with that term) without touching the log: entries are kept as a
    /// catch-up margin until [`compact`](Self::compact). Use
    /// [`apply_snapshot`](Self::apply_snapshot) instead when the snapshot's marker is
    /// written to the log (which compacts it).
    pub fn record_snapshot(&self, metadata: SnapshotMetadata) -> Result<()> {
        let mut inner = self.shared.inner.write();
        if metadata.index <= inner.snapshot.index {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        if metadata.index > inner.last_index {
            return Err(StorageError::Unavailable.into());
        }
        let term = self.term_locked(&inner, metadata.index).map(|(t, _)| t)?;
        if term != metadata.term {
            return Err(other(format!(
                "snapshot at {} claims term {} but the log has term {term}",
                metadata.index, metadata.term
            )));
        }
        inner.snapshot = metadata;
        Ok(())
    }

    /// Mirrors a durable `LogBatch { snapshot: Some(metadata), .. }` (a snapshot received
    /// from the leader, or a local one whose marker the engine logs), with the log's own
    /// rule: if the log holds `metadata.index` with `metadata.term`, entries up to it are
    /// compacted and the rest kept; otherwise the whole log is discarded and restarts
    /// after the snapshot. Either way it becomes the snapshot `snapshot()` reports and
    /// its membership the one `initial_state()` reports.
    pub fn apply_snapshot(&self, metadata: SnapshotMetadata) -> Result<()> {
        let mut inner = self.shared.inner.write();
        if metadata.index <= inner.snapshot.index {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        if metadata.index > inner.compacted_index {
            let matches = metadata.index <= inner.last_index
                && self
                    .term_locked(&inner, metadata.index)
                    .is_ok_and(|(t, _)| t == metadata.term);
            if matches {
                while inner
                    .window
                    .front()
                    .is_some_and(|e| e.index <= metadata.index)
                {
                    if let Some(e) = inner.window.pop_front() {
                        inner.window_bytes -= e.size_bytes();
                    }
                }
            } else {
                inner.clear_window();
                inner.last_index = metadata.index;
            }
            inner.compacted_index = metadata.index;
            inner.compacted_term = metadata.term;
        }
        inner.conf_state = metadata.conf_state.clone();
        inner.snapshot = metadata;
        Ok(())
    }

    /// Mirrors `LogStore::truncate_suffix(index)`: entries from `index` on are gone.
    /// A no-op past the last index; refused at or below the compaction point.
    pub fn truncate_suffix(&self, index: u64) -> Result<()> {
        let mut inner = self.shared.inner.write();
        if index <= inner.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if index > inner.last_index {
            return Ok(());
        }
        while inner.window.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = inner.window.pop_back() {
                inner.window_bytes -= e.size_bytes();
            }
        }
        inner.last_index = index - 1;
        Ok(())
    }

    /// Compares the cache with the durable log and reports the first disagreement:
    /// bounds, and every windowed entry against the log's copy. For tests and debug
    /// checks; it reads the whole window from the log.
    pub fn check_against_log(&self) -> std::result::Result<(), String> {
        let inner = self.shared.inner.read();
        let log = &self.shared.log;
        if log.last_index() != inner.last_index {
            return Err(format!(
                "last index: cache {} log {}",
                inner.last_index,
                log.last_index()
            ));
        }
        if log.first_index() > inner.compacted_index.saturating_add(1) {
            return Err(format!(
                "log first index {} is past the cache's {}",
                log.first_index(),
                inner.compacted_index.saturating_add(1)
            ));
        }
        if let Some(first) = inner.window_first() {
            let from_log = log
                .entries(first, inner.last_index.saturating_add(1), u64::MAX)
                .map_err(|e| format!("reading the window's range from the log: {e}"))?;
            if !from_log.iter().eq(inner.window.iter()) {
                return Err(format!("window from {first} differs from the log"));
            }
        }
        Ok(())
    }

    // The term of `index`, and whether it came from memory.
    fn term_locked(&self, inner: &Inner, index: u64) -> Result<(u64, bool)> {
        if index == inner.compacted_index {
            return Ok((inner.compacted_term, true));
        }
        if index < inner.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if index > inner.last_index {
            return Err(StorageError::Unavailable.into());
        }
        if let Some(e) = inner.window_get(index) {
            return Ok((e.term, true));
        }
        if index == inner.snapshot.index {
            return Ok((inner.snapshot.term, true));
        }
        let term = self.shared.log.term(index).map_err(storage_error)?;
        Ok((term, false))
    }

    fn count(&self, hit: bool) {
        let counter = if hit {
            &self.shared.hits
        } else {
            &self.shared.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl<L: LogStore + ?Sized> Storage for LogCache<L> {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(RaftState {
            hard_state: self.shared.log.hard_state(),
            conf_state: self.shared.inner.read().conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>> {
        let inner = self.shared.inner.read();
        if low <= inner.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if high > inner.last_index.saturating_add(1) || low > high {
            return Err(StorageError::Unavailable.into());
        }
        if low == high {
            return Ok(Vec::new());
        }
        let window_first = inner
            .window_first()
            .unwrap_or(inner.last_index.saturating_add(1));
        let mut out = Vec::new();
        let mut size = 0u64;
        if low < window_first {
            // The older part comes from the log, already limited to max_size.
            let log_high = high.min(window_first);
            out = self
                .shared
                .log
                .entries(low, log_high, max_size)
                .map_err(storage_error)?;
            let expected = log_high - low;
            if out.len() as u64 > expected
                || out.first().is_some_and(|e| e.index != low)
                || out.is_empty()
            {
                return Err(other(format!(
                    "log returned {} entries for [{low}, {log_high})",
                    out.len()
                )));
            }
            self.count(false);
            if (out.len() as u64) < expected || log_high == high {
                return Ok(out);
            }
            size = keel_raft::util::entries_size(&out);
        } else {
            self.count(true);
        }
        // The rest is in the window: continue while the running total stays within
        // max_size, always returning at least one entry (raft-core's limit_size rule).
        let start = low.max(window_first);
        for index in start..high {
            let Some(e) = inner.window_get(index) else {
                return Err(other(format!("window lost entry {index}")));
            };
            size = size.saturating_add(e.size_bytes());
            if !out.is_empty() && max_size != u64::MAX && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64> {
        let inner = self.shared.inner.read();
        let (term, hit) = self.term_locked(&inner, index)?;
        self.count(hit);
        Ok(term)
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.shared.inner.read().compacted_index.saturating_add(1))
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.shared.inner.read().last_index)
    }

    /// The latest snapshot's metadata with empty `data`: the engine streams the
    /// state-machine bytes from the snapshot store itself.
    fn snapshot(&self, request_index: u64, _to: u64) -> Result<Snapshot> {
        let inner = self.shared.inner.read();
        if inner.snapshot.index == 0 || inner.snapshot.index < request_index {
            return Err(StorageError::SnapshotTemporarilyUnavailable.into());
        }
        Ok(Snapshot {
            metadata: inner.snapshot.clone(),
            data: Vec::new(),
        })
    }
}

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
