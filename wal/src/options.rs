//! How a log store is configured: the [`SyncPolicy`] every store is opened with, and
//! the [`WalOptions`] of the segmented WAL.

use std::time::Instant;

/// Whether a `durable` write ([`LogStore::write`](crate::LogStore::write) with
/// `durable = true`) is synced before it returns. Every store is opened with one, and
/// the store alone applies it: callers only say which writes must be durable before
/// they acknowledge them, never whether that means an fdatasync.
///
/// Whatever the policy, [`LogStore::sync`](crate::LogStore::sync) syncs (it is for a
/// clean close and for tools), and the WAL syncs on its own where its format needs it
/// (at segment rotation, before deleting compacted segments, and what it recovered at
/// open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// A durable write returns only once it (and everything before it) is synced;
    /// concurrent durable writes share one sync. The only policy under which a durable
    /// write is durable when it returns.
    #[default]
    Always,
    /// A durable write is synced only if at least this many milliseconds passed since
    /// the last sync; otherwise it returns unsynced (the returned durable index says
    /// so). Data written during a quiet period stays unsynced until the next durable
    /// write or an explicit `sync()`: the store runs no timer thread.
    EveryMs(u64),
    /// Durable writes are not synced: they return as soon as they are written, and a
    /// crash may lose them. For benchmarks and throwaway logs.
    Never,
}

impl SyncPolicy {
    /// Whether a durable write arriving now is synced, given when the store last
    /// synced (`None`: never since it was opened). The one place every store asks.
    pub(crate) fn syncs_now(self, last_sync: Option<Instant>) -> bool {
        match self {
            SyncPolicy::Always => true,
            SyncPolicy::EveryMs(ms) => {
                last_sync.is_none_or(|t| t.elapsed().as_millis() >= u128::from(ms))
            }
            SyncPolicy::Never => false,
        }
    }
}

/// What to do about damage found when opening a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// A torn or garbage tail of the last segment (what a crash during an unsynced
    /// write leaves) is cut, and a copy of the cut bytes kept as `<segment>.broken`.
    /// Any other damage is an error naming the segment file and byte offset.
    #[default]
    TolerateTailCorruption,
    /// Any damage, including a torn tail, is an error.
    AbsoluteConsistency,
    /// Damaged records are skipped and reported in the
    /// [`RecoveryReport`](crate::RecoveryReport); if that removed entries from the
    /// middle of the log, the log restarts after the hole. A last resort that can lose
    /// acknowledged data; use it only to salvage what is left.
    TolerateAnyCorruption,
}

/// Configuration of a [`Wal`](crate::Wal).
///
/// # Example
///
/// Small segments synced at most every 5 ms, no background thread, and every kind of
/// damage refused at open:
///
/// ```
/// use keel_fs::SimFs;
/// use keel_wal::{LogStore, RecoveryMode, SyncPolicy, Wal, WalOptions};
///
/// # fn main() -> Result<(), keel_wal::LogError> {
/// let opts = WalOptions {
///     segment_size_bytes: 1 << 20,
///     sync_policy: SyncPolicy::EveryMs(5),
///     recovery_mode: RecoveryMode::AbsoluteConsistency,
///     preallocate: false,
/// };
/// let wal = Wal::open(SimFs::new(7).shared(), "/node/wal", opts)?;
/// assert_eq!(wal.last_index(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Target size of a segment file; a segment is allocated to this size up front and
    /// rotated when the next batch would not fit (a single larger batch gets a segment
    /// of its own, grown past this size).
    pub segment_size_bytes: u64,
    /// Whether durable writes are synced.
    pub sync_policy: SyncPolicy,
    /// How damage found at open is handled.
    pub recovery_mode: RecoveryMode,
    /// Whether a background thread prepares the next segment file ahead of time. Off,
    /// rotation creates and allocates the file itself (deterministic for tests).
    pub preallocate: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: 64 << 20,
            sync_policy: SyncPolicy::Always,
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            preallocate: true,
        }
    }
}
