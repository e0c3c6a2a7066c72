//! keel's snapshots.
//!
//! Owns: the durable snapshot store and chunked snapshot transfer. Must not: touch the
//! Raft log (it does not depend on `wal`; the caller purges the log through
//! [`Retention::wal_purge_through`]) or run threads of its own.
//!
//! | module | holds |
//! |---|---|
//! | [`chunk`] | the chunk stream format (on disk and on the wire), its writer, reader and validator |
//! | [`info`] | a snapshot's description: raft's metadata and the members' peer addresses |
//! | [`store`] | the snapshot directory: atomic save, newest-valid load, `.broken` quarantine, retention |
//! | [`transfer`] | sending a stored snapshot chunk by chunk and receiving one into a store |
//! | [`state_machine`] | the traits a state machine implements to produce and consume snapshot bytes |
//! | [`memory`] | the map record layout both engine state machines write, and those traits for a reference `BTreeMap` |
//!
//! All file I/O goes through `keel_fs`, so the crash tests run on its simulated file
//! system. Nothing here holds a whole snapshot in memory: at most one chunk
//! ([`StoreOptions::chunk_size_bytes`], default 1 MiB) per stream.
//!
//! ```
//! use std::sync::Arc;
//! use keel_fs::SimFs;
//! use keel_raft::SnapshotMetadata;
//! use keel_snapshot::memory::{Map, MapConsumer};
//! use keel_snapshot::{ReceiveStatus, SnapshotStore, StoreOptions};
//!
//! # fn main() -> keel_snapshot::Result<()> {
//! let leader = SnapshotStore::open(SimFs::new(1).shared(), "/n1/snap", StoreOptions::default())?;
//! let follower = Arc::new(SnapshotStore::open(SimFs::new(2).shared(), "/n2/snap", StoreOptions::default())?);
//!
//! // The apply stage saves the state machine at an applied index...
//! let mut map = Map::new();
//! map.insert(b"k".to_vec(), b"v".to_vec());
//! let meta = SnapshotMetadata { index: 42, term: 3, ..Default::default() };
//! let saved = leader.save(&meta, &map)?;
//! let purge = leader.retain()?.wal_purge_through; // the WAL may drop entries <= this
//! assert_eq!(purge, 42);
//!
//! // ...the leader streams it to a follower that fell behind...
//! let mut sender = leader.sender(saved.id, 0)?;
//! let mut receiver = follower.receiver_for(&meta)?;
//! let mut status = None;
//! while let Some(chunk) = sender.next_chunk()? {
//!     status = Some(receiver.receive_frame(&chunk.encode())?);
//! }
//! assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
//!
//! // ...and on restart the newest valid snapshot is loaded.
//! let loaded = follower.load_newest(&MapConsumer::default())?.expect("a snapshot");
//! assert_eq!(loaded.metadata, meta);
//! assert_eq!(loaded.image, map);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod chunk;
mod error;
mod file_io;
pub mod info;
pub mod memory;
pub mod state_machine;
pub mod store;
pub mod transfer;

pub use error::{Result, SnapshotError};
pub use info::{MemberAddresses, SnapshotInfo};
pub use state_machine::{SnapshotConsumer, SnapshotProducer};
pub use store::{
    list_snapshots, verify_file, Loaded, Retention, SavedSnapshot, SnapshotId, SnapshotStore,
    StoreOptions, DEFAULT_MAX_RECEIVE_BYTES,
};
pub use transfer::{ReceiveStatus, SnapshotReceiver, SnapshotSender};

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
