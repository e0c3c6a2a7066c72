//! keel's Raft log storage.
//!
//! Owns: the [`LogStore`] trait every log backend implements, and (as it lands) the
//! segmented, CRC-checked write-ahead log. Must not: know about Raft's rules beyond
//! "replace a conflicting suffix", spawn anything but its own preallocation thread,
//! or hide a failed fsync.

#![deny(missing_docs)]

mod log_store;

pub use log_store::{LogBatch, LogError, LogStore};
