//! The Raft consensus algorithm as a pure, deterministic state machine.
//!
//! Owns: elections (with PreVote, CheckQuorum and the leader lease), log replication
//! with flow control, snapshots, linearizable reads, membership changes (single-step and
//! joint consensus), leadership transfer, the binary codec of its types, and the
//! [`Storage`] trait it reads the log through.
//!
//! Must not: start threads, read clocks, do I/O, or draw randomness from anywhere but
//! [`Config::seed`]. Time advances only through [`RawNode::tick`]; everything the node
//! wants done comes out of [`RawNode::ready`].
//!
//! The shape follows etcd-io/raft and tikv/raft-rs: step messages in, take a
//! [`Ready`], persist and send it, then `advance`.
//!
//! # Driving a 3-node group in one thread
//!
//! ```
//! use std::collections::{HashMap, VecDeque};
//! use keel_raft::{Config, Message, MemoryStorage, RawNode, Ready, StateRole};
//!
//! // Three nodes, each with its own in-memory log, all knowing the membership {1, 2, 3}.
//! let mut nodes: HashMap<u64, RawNode<MemoryStorage>> = (1..=3)
//!     .map(|id| {
//!         let store = MemoryStorage::new_with_conf_state(vec![1, 2, 3], vec![]);
//!         (id, RawNode::new(&Config::new(id), store).unwrap())
//!     })
//!     .collect();
//! let mut network: VecDeque<Message> = VecDeque::new();
//! let mut applied: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
//!
//! // Handle one Ready the way an engine would: send what may go now, persist, send
//! // what had to wait for the disk, apply what committed, advance.
//! fn handle(id: u64, node: &mut RawNode<MemoryStorage>, mut rd: Ready,
//!           network: &mut VecDeque<Message>, applied: &mut Vec<Vec<u8>>) {
//!     network.extend(rd.take_messages());
//!     if !rd.snapshot().is_empty() {
//!         node.mut_store().apply_snapshot(rd.snapshot().clone()).unwrap();
//!     }
//!     node.mut_store().append(rd.entries()).unwrap();
//!     if let Some(hs) = rd.hs() {
//!         node.mut_store().set_hard_state(*hs);
//!     }
//!     network.extend(rd.take_persisted_messages());
//!     let mut committed = rd.take_committed_entries();
//!     let mut light = node.advance(rd);
//!     if let Some(commit) = light.commit_index() {
//!         node.mut_store().commit_to(commit);
//!     }
//!     network.extend(light.take_messages());
//!     committed.extend(light.take_committed_entries());
//!     applied.extend(committed.into_iter().filter(|e| !e.data.is_empty()).map(|e| e.data));
//!     node.advance_apply();
//! }
//!
//! nodes.get_mut(&1).unwrap().campaign().unwrap();
//! let mut proposed = false;
//! for _round in 0..50 {
//!     for id in 1..=3 {
//!         let node = nodes.get_mut(&id).unwrap();
//!         if node.has_ready() {
//!             let rd = node.ready();
//!             handle(id, node, rd, &mut network, applied.entry(id).or_default());
//!         }
//!     }
//!     while let Some(m) = network.pop_front() {
//!         nodes.get_mut(&m.to).unwrap().step(m).unwrap();
//!     }
//!     if !proposed && nodes[&1].role() == StateRole::Leader {
//!         nodes.get_mut(&1).unwrap().propose(b"hello".to_vec()).unwrap();
//!         proposed = true;
//!     }
//! }
//! for id in 1..=3 {
//!     assert_eq!(applied[&id], vec![b"hello".to_vec()]);
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod codec;
pub mod confchange;
mod config;
mod errors;
mod log_unstable;
pub mod quorum;
mod raft;
mod raft_log;
mod raw_node;
mod read_only;
mod rng;
mod status;
mod storage;
pub mod tracker;
mod types;
pub mod util;

pub use config::Config;
pub use errors::{Error, Result, StorageError};
pub use raft::{Raft, SnapshotStatus, SoftState, StateRole, CAMPAIGN_TRANSFER};
pub use raft_log::RaftLog;
pub use raw_node::{LightReady, RawNode, Ready, MAX_TERM_OR_INDEX};
pub use read_only::{ReadOnlyOption, ReadState};
pub use rng::Rng;
pub use status::Status;
pub use storage::{MemoryStorage, RaftState, Storage};
pub use types::*;

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
