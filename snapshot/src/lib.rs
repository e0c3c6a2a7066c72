//! keel's snapshots.
//!
//! Owns: the durable snapshot store, chunked snapshot transfer and the bounded in-memory
//! log cache that serves raft-core's `Storage`. Must not: write the Raft log (it only
//! reads it through `wal::LogStore`) or run threads of its own.

#![deny(missing_docs)]
