//! keel's engine: the raft, persist and apply stages joined by bounded channels, the
//! state machines, and the embedded [`Db`].
//!
//! # Two ways to use keel
//!
//! The replicated key-value map, [`Db`]:
//!
//! ```no_run
//! let db = keel_engine::Db::open(keel_engine::Config::single_node("data/"))?;
//! db.put(b"k", b"v")?;
//! assert_eq!(db.get(b"k")?, Some(b"v".to_vec()));
//! db.close()?;
//! # Ok::<(), keel_engine::Error>(())
//! ```
//!
//! Or your own state machine, replicated by a [`Replica`]: a type implementing
//! [`StateMachine`](state_machine::StateMachine), with a command type implementing
//! [`Command`](state_machine::Command). `propose` returns the command's response once
//! it is applied; `read` runs a closure over the state, linearizably.
//!
//! ```
//! use std::io::{self, Read, Write};
//! use keel_engine::state_machine::{Command, DecodeError, StateMachine};
//! use keel_engine::{Config, Replica};
//!
//! #[derive(Default)]
//! struct Counter {
//!     total: u64,
//!     applied: u64, // the index of the newest log entry applied
//! }
//!
//! struct Add(u64);
//!
//! impl Command for Add {
//!     fn encode(&self, out: &mut Vec<u8>) {
//!         out.extend_from_slice(&self.0.to_le_bytes());
//!     }
//!     fn decode(bytes: &[u8]) -> Result<Add, DecodeError> {
//!         Ok(Add(u64::from_le_bytes(bytes.try_into()?)))
//!     }
//! }
//!
//! impl StateMachine for Counter {
//!     type Command = Add;
//!     type Response = u64; // the total after the addition
//!
//!     fn applied_index(&self) -> u64 {
//!         self.applied
//!     }
//!     fn apply(&mut self, index: u64, Add(n): Add) -> io::Result<u64> {
//!         self.total = self.total.wrapping_add(n);
//!         self.applied = index;
//!         Ok(self.total)
//!     }
//!     fn mark_applied(&mut self, index: u64) {
//!         self.applied = index;
//!     }
//!     fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
//!         out.write_all(&self.total.to_le_bytes())
//!     }
//!     fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
//!         let mut total = [0u8; 8];
//!         input.read_exact(&mut total)?;
//!         self.total = u64::from_le_bytes(total);
//!         self.applied = index;
//!         Ok(())
//!     }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! let counter = Replica::open(Config::single_node(dir.path()), Counter::default())?;
//! assert_eq!(counter.propose(Add(2))?, 2);
//! assert_eq!(counter.propose(Add(3))?, 5);
//! assert_eq!(counter.read(|c| c.total)?, 5);
//! counter.close()?;
//! # Ok::<(), keel_engine::Error>(())
//! ```
//!
//! In a cluster, each node opens its `Db` or `Replica` with [`Config::cluster`] and a
//! [`transport`]. The crate's examples (`engine/examples/`) are complete programs that
//! run three nodes in one process: `bank_ledger` (typed refusals, a crash, a restart
//! caught up through a snapshot) and `job_queue` (leases measured in log entries).
//!
//! # What the engine owns
//!
//! Owns: the node's threads and the channels between them, the order in which a `Ready`
//! is sent, persisted and applied (etcd's `raftNode.start`), the callers waiting for
//! their writes and reads, the state machine, snapshots taken and installed, log
//! compaction, metrics and failpoints.
//!
//! Must not: reimplement consensus (that is raft-core), define a log or snapshot format
//! of its own (the log is `wal`'s, snapshots are `snapshot`'s; the engine defines only
//! what an entry carries, the TCP wire frames and the RocksDB state machine's layout),
//! acknowledge a write before it is
//! durable on a quorum and applied locally, or block a stage on an unbounded queue.
//!
//! # The pipeline of one node
//!
//! ```text
//!  callers ──Request──▶ ┌────────────┐ ──PersistTask──▶ ┌───────────────┐ ──▶ LogStore (WAL)
//!  transport ─bytes──▶  │ raft stage │ ◀──Persisted──── │ persist stage │ ──▶ LogCache
//!                       │  RawNode   │                  └───────────────┘
//!                       │            │ ──ApplyTask────▶ ┌───────────────┐ ──▶ state machine,
//!                       │            │ ◀──wake (cap 1)─ │  apply stage  │     snapshot store,
//!                       └─────┬──────┘                  └───────────────┘     compaction
//!                             ├ Snapshot messages ──▶ snapshot sender thread ──▶ transport
//!                             └ leader messages ──▶ transport (follower messages leave
//!                               from the persist stage, once durable)
//! ```
//!
//! The raft stage alone owns the `RawNode` (and sets the log cache's membership when a
//! change takes effect); the persist stage alone appends to the log and the cache's
//! tail; the apply stage writes the state machine, takes snapshots, and compacts the
//! cache and then the log; recovery writes the log only before the stages start. Shared
//! behind locks: the waiting-write registry, the published status and stop reason, the
//! state machine (for readers), the member address book and the `LogCache` (its own
//! lock). Every channel is
//! bounded; see each stage's module for why none of them can deadlock.
//!
//! A node fails as a whole: every stage thread runs under a supervisor
//! (`supervisor.rs`), which turns a panic or a fatal error of any of them into one
//! [`StopReason::Fatal`] for the whole node; the other stages then end too, and every
//! waiting and later call reports it.
//!
//! Nodes reach each other through a [`transport::Transport`]: the in-process network
//! for tests, or [`transport::tcp::TcpTransport`] (one accept thread, a reader thread
//! per inbound connection, a writer thread and bounded queue per peer, snapshots on
//! connections of their own; `send` never blocks).

#![deny(missing_docs)]

mod apply_stage;
mod budget;
pub mod codec;
mod command;
mod config;
pub mod data_dir;
mod db;
mod error;
mod members;
mod metrics;
mod node;
mod outbox;
mod persist_stage;
mod proposals;
mod raft_stage;
mod recovery;
mod replica;
mod reply;
mod shared;
mod snapshot_transfer;
pub mod state_machine;
mod supervisor;
#[cfg(feature = "test-util")]
pub mod testing;
mod thread_policy;
pub mod transport;

pub use command::{Op, COMMAND_FRAMING_MAX_BYTES};
pub use config::{
    Config, LogBackend, MembershipObserver, StateMachineKind, COMMAND_OVERHEAD_BYTES,
    DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES,
};
pub use db::Db;
pub use error::{Error, Fatal, FatalKind, MembershipRefusal, Result, StopReason, UnknownOutcome};
/// Membership types used by [`Replica::change_membership`], from keel-raft.
pub use keel_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};
pub use members::{member_address, member_context, Members};
pub use replica::{Replica, Role, Status};
