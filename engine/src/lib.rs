//! keel's engine: the raft, persist and apply stages joined by channels, the state
//! machines and the embedded `Db`.
//!
//! Owns: threads and their channels. Must not: reimplement consensus (that is
//! raft-core) or file formats (wal, snapshot).

#![deny(missing_docs)]
