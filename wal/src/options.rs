//! How a [`Wal`](crate::Wal) is configured.

/// When a write asked to be synced is actually fdatasync'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every group containing a write with `sync = true` is synced before any of its
    /// writers returns. The only policy under which `sync = true` means durable.
    #[default]
    Always,
    /// A group containing a write with `sync = true` is synced only if at least this
    /// many milliseconds passed since the last sync; otherwise the write returns
    /// unsynced (the returned durable index says so). Data written during a quiet
    /// period stays unsynced until the next write or an explicit `sync()`: the log
    /// runs no timer thread.
    EveryMs(u64),
    /// Writes are never synced, only explicit `sync()`, compaction and segment
    /// rotation sync. For benchmarks and throwaway logs.
    Never,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Target size of a segment file; a segment is allocated to this size up front and
    /// rotated when the next batch would not fit (a single larger batch gets a segment
    /// of its own, grown past this size).
    pub segment_size_bytes: u64,
    /// When syncs happen.
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
