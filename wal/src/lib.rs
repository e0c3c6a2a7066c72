//! keel's Raft log storage.
//!
//! Owns: the [`LogStore`] trait every log backend implements; an in-memory reference
//! log ([`MemLogStore`]); and the segmented, CRC-checked write-ahead log ([`Wal`]) with
//! group commit, preallocation, recovery, and a read-only scanner ([`WalScanner`]) for
//! inspection tools. All of the WAL's durable I/O goes through `keel_fs`'s
//! [`FileSystem`](keel_fs::FileSystem), so the crash tests run it on a simulated file
//! system.
//!
//! Must not: know about Raft's rules beyond "replace a conflicting suffix, compact,
//! restart after a snapshot"; spawn anything but its own preallocation thread; or hide
//! a failed fsync (a failed write or sync poisons the log, it is never retried).
//!
//! # The WAL in one page
//!
//! - **Files.** `{seq:016x}-{first_index:016x}.wal` segments (default 64 MiB, allocated
//!   up front), replayed in `seq` order. Each starts with a 40-byte header (magic,
//!   version, seq, first index, CRC) and a *preamble* batch restating the hard state,
//!   snapshot marker and compaction point, so older segments can be deleted whole.
//!   `*.prealloc` files are spare segments made by the background thread (deleted on
//!   open); `*.broken` files hold bytes cut from a torn tail.
//! - **Records** ([`WalRecord`]): 8-byte aligned frames with length, type and a CRC32
//!   bound to the segment and offset. A [`LogBatch`] is written as its records followed
//!   by a commit record and takes effect on replay only if the commit is intact.
//!   Replacing a suffix, truncating and compacting are records too: nothing is ever
//!   overwritten in place.
//! - **Writes.** Concurrent `write` calls form groups (group commit): one
//!   leader writes every queued batch with one `write_at` and, per [`SyncPolicy`], one
//!   `fdatasync`. A segment is synced before the next one is started, so only the last
//!   segment can ever hold unsynced bytes.
//! - **Reads** go through an in-memory index (index → segment, offset, length, CRC)
//!   and a memory map; each entry's CRC, index and term are checked on every read.
//! - **Durability.** [`LogStore::durable_index`] is the highest index whose entry (and
//!   everything before it) is synced. Replacing or truncating a suffix lowers it until
//!   the next sync.
//! - **Recovery** ([`RecoveryMode`]) scans every frame. A damaged tail of the last
//!   segment that was never synced (commit records carry how far their segment was
//!   synced) is cut; any other damage is an error naming the file and byte offset.
//! - **Not protected against:** loss of the newest segment file(s) as a whole (it looks
//!   like a shorter log, as in every WAL), and two processes opening one directory:
//!   the log takes no lock itself; a node locks its data directory (the engine's
//!   `data_dir` module, through [`keel_fs::FileSystem::lock_file`]).

#![deny(missing_docs)]

mod log_index;
mod log_store;
mod mem_log;
mod options;
mod prealloc;
mod reader;
mod record;
mod recovery;
#[cfg(feature = "rocksdb")]
mod rocksdb_log;
mod segment;
mod wal;
mod write_barrier;

pub use log_store::{LogBatch, LogError, LogStore};
pub use mem_log::MemLogStore;
pub use options::{RecoveryMode, SyncPolicy, WalOptions};
pub use reader::{
    scan_segment_bytes, Damage, ScanEvent, ScannedRecord, SegmentScan, WalDirListing, WalScanner,
};
pub use record::{
    EntrySpan, RecordType, SegmentHeader, WalRecord, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};
pub use recovery::{RecoveryReport, TailCut};
#[cfg(feature = "rocksdb")]
pub use rocksdb_log::{has_rocksdb_files, RocksLogStore};
pub use segment::{SegmentName, BROKEN_SUFFIX, PREALLOC_SUFFIX, SEGMENT_SUFFIX};
pub use wal::{Wal, WalStats};

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
