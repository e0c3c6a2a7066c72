//! The pluggable Raft log: the one trait every log backend implements and the engine
//! writes and reads the log through. Implemented by the segmented WAL, by the in-memory
//! model, and (feature `rocksdb`) by RocksDB.
//!
//! Who calls what on a running node: the persist stage writes every batch (entries,
//! hard state, snapshot markers) and syncs; the apply stage compacts behind a
//! snapshot; the log cache reads entries and terms that have left its window; closing
//! the node syncs a last time. Before
//! the stages start, the engine's recovery writes a new node's bootstrap entries and
//! brings the log in line with the newest snapshot.
//!
//! It lives here, in the crate that owns durable log storage, rather than in raft-core
//! (which must stay free of I/O concerns) or in the engine (which would force the log
//! cache, `keel_log_cache`, to depend on the whole engine).

use keel_raft::{Entry, HardState, SnapshotMetadata};

/// Why a log operation failed. A failed write or sync leaves the log unusable: the
/// caller must stop rather than retry, since a retried fsync can falsely report success.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error from the file system; the log is now closed to writes.
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data failed a check (CRC, framing, index continuity).
    #[error("log corrupt: {0}")]
    Corrupt(String),
    /// The requested index is below the first index (compacted).
    #[error("index {0} is compacted")]
    Compacted(u64),
    /// The requested index is above the last index.
    #[error("index {0} is beyond the last index")]
    Unavailable(u64),
    /// The write is invalid (e.g. it leaves a gap in the log).
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// An earlier write or sync failed; the log refuses further writes.
    #[error("log is poisoned by an earlier failed write or sync")]
    Poisoned,
    /// Any other backend failure.
    #[error("log backend error: {0}")]
    Backend(String),
}

/// One atomic unit of log mutation, written (and, if durable, synced) as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    /// Entries to append; the first may be at or below the last index, in which case the
    /// conflicting suffix is replaced. Must be contiguous.
    pub entries: Vec<Entry>,
    /// A new hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot that was installed or taken: the log before it is no longer needed
    /// and, if the snapshot is ahead of the log, the log restarts after it.
    pub snapshot: Option<SnapshotMetadata>,
}

impl LogBatch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.hard_state.is_none() && self.snapshot.is_none()
    }
}

/// A durable Raft log. Every method takes `&self` so concurrent writers can be merged
/// by the implementation (group commit); implementations are `Send + Sync`.
///
/// Whether a write is synced is the store's decision alone: it is opened with a
/// [`SyncPolicy`](crate::SyncPolicy), and callers only mark the writes that must be
/// durable before they are acknowledged.
///
/// # Example
///
/// Code written against the trait runs on any backend: here the in-memory
/// [`MemLogStore`](crate::MemLogStore); [`Wal`](crate::Wal) in production.
///
/// ```
/// use keel_raft::{Entry, SnapshotMetadata};
/// use keel_wal::{LogBatch, LogError, LogStore, MemLogStore};
///
/// /// Appends `payloads` after the log's last entry, in `term`, and waits until durable.
/// fn append(log: &dyn LogStore, term: u64, payloads: &[&[u8]]) -> Result<u64, LogError> {
///     let first = log.last_index() + 1;
///     let entries = payloads
///         .iter()
///         .zip(first..)
///         .map(|(data, index)| Entry::new(term, index, data.to_vec()))
///         .collect();
///     log.write(&LogBatch { entries, ..LogBatch::default() }, true)
/// }
///
/// # fn main() -> Result<(), LogError> {
/// let log = MemLogStore::new();
/// assert_eq!(append(&log, 1, &[b"a", b"b", b"c"])?, 3);
/// assert_eq!(log.durable_index(), 3);
///
/// // A leader in term 2 overwrites the uncommitted entry 3.
/// log.write(&LogBatch { entries: vec![Entry::new(2, 3, b"c2".to_vec())], ..LogBatch::default() }, true)?;
/// assert_eq!(log.term(3)?, 2);
///
/// // A snapshot at 2 lets the entries it covers go.
/// let snapshot = SnapshotMetadata { index: 2, term: 1, ..SnapshotMetadata::default() };
/// log.write(&LogBatch { snapshot: Some(snapshot), ..LogBatch::default() }, true)?;
/// log.compact(2)?;
/// assert_eq!(log.first_index(), 3);
/// assert!(matches!(log.entries(1, 2, u64::MAX), Err(LogError::Compacted(1))));
/// # Ok(())
/// # }
/// ```
pub trait LogStore: Send + Sync {
    /// Writes `batch`. With `durable`, the batch and everything written before it are
    /// made durable as the store's sync policy says before the call returns: under
    /// `SyncPolicy::Always` they are synced (sharing one sync with concurrent durable
    /// writes), under `SyncPolicy::Never` they are not. An empty durable batch makes
    /// what was written before durable the same way. Returns the highest index
    /// durable after the call.
    fn write(&self, batch: &LogBatch, durable: bool) -> Result<u64, LogError>;
    /// Forces everything written so far to stable storage, whatever the sync policy
    /// (for a clean close and for tools). Does nothing when nothing written is
    /// unsynced, so a sync right after a synced durable write costs no fdatasync.
    fn sync(&self) -> Result<(), LogError>;
    /// How many times the store synced (fdatasync or the backend's equivalent) since
    /// it was opened, for whatever reason. Lets a caller tell whether a write it timed
    /// really synced.
    fn syncs(&self) -> u64;
    /// The highest index known durable (written and synced, along with every index
    /// before it). Replacing or truncating a suffix lowers it to just below the change
    /// until the next sync makes the change durable.
    fn durable_index(&self) -> u64;
    /// Removes entries from `index` onward (durably, at the next sync).
    fn truncate_suffix(&self, index: u64) -> Result<(), LogError>;
    /// Makes entries up to and including `index` purgeable; whole segments (or ranges)
    /// below it are removed.
    fn compact(&self, index: u64) -> Result<(), LogError>;
    /// Entries in `[lo, hi)`, at most `max_size` bytes but at least one.
    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, LogError>;
    /// The term of entry `index`, or of the snapshot marker at `first_index() - 1`.
    fn term(&self, index: u64) -> Result<u64, LogError>;
    /// The first index held (snapshot index + 1 after a compaction).
    fn first_index(&self) -> u64;
    /// The last index held (the snapshot index when no entries follow it).
    fn last_index(&self) -> u64;
    /// The last hard state written.
    fn hard_state(&self) -> HardState;
    /// The last snapshot marker written, if any.
    fn snapshot_marker(&self) -> Option<SnapshotMetadata>;
    /// Stops the work the store does in the background in its directory (the WAL's
    /// segment preallocation) and removes what that work left unused, so that an owner
    /// that is closing can hand the directory to another process while this value
    /// still exists. Later writes still work, without that help. The default does
    /// nothing.
    fn stop_background_work(&self) {}
}
