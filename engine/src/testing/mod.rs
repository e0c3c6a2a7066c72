//! Test support behind the `test-util` feature: one in-process cluster harness shared by
//! the engine's integration tests, `keel bench cluster` and `keel demo`.
//!
//! Owns: starting, stopping, dropping, crashing and restarting nodes of a cluster in
//! this process ([`Cluster`]), on a real directory or each node on its own simulated
//! disk ([`Storage`]), over the in-process network or TCP on loopback ([`Transport`]);
//! the test timing ([`fast`], [`loopback_tcp`]); binding a TCP address given back
//! moments ago ([`start_tcp`]); waiting on a condition instead of a fixed sleep
//! ([`wait_until`], [`agreed_leader`]); reading metrics ([`metric_value`]).
//!
//! Over TCP each node's port is picked once, when the cluster opens; a node that
//! restarts gets a new transport on the same address, and stopping, killing or
//! crashing a node, or dropping the cluster, shuts its transport down. The two
//! file-system choices and the two transports combine freely (a simulated disk can
//! crash under a node on TCP). A cluster over TCP has no in-process network to cut:
//! [`Cluster::net`] panics on one ([`Cluster::try_net`] does not), and
//! [`Cluster::tcp`] gives a running node's transport.
//!
//! Must not: reach into the engine's internals. It uses only the public API (`Db`,
//! `Config`, the transports), so what it exercises is what an embedder gets.
//!
//! A few [`Cluster`] methods panic, which is what a test wants: `new` and `with` when a
//! node does not start, `db` when the node is not running, `net` over TCP, and
//! `wait_leader`, `wait_converged` and `wait_applied` when the wait times out. Each has
//! a twin that returns an `Option` or a [`ClusterError`] instead (`open`, `node`,
//! `try_net`, `try_wait_*`); `keel bench cluster` and `keel demo` use only those.
//!
//! ```
//! use keel_engine::testing::{Cluster, CrashMode, Options, Storage};
//!
//! let c = Cluster::open(Options::new(3).storage(Storage::Simulated).seed(42))?;
//! let leader = c.try_wait_leader(keel_engine::testing::WAIT)?;
//! c.node(leader.id).expect("it leads").put(b"k", b"v").expect("put");
//! c.crash(leader.id, CrashMode::DropUnsynced)?;
//! c.start(leader.id)?;
//! # Ok::<(), keel_engine::testing::ClusterError>(())
//! ```

mod cluster;
mod error;
mod metrics;
mod model;
mod options;
mod process_fs;
mod tcp;
mod wait;

pub use cluster::{Cluster, DATA_DIR, WAIT};
pub use error::{ClusterError, Result};
/// What a crash keeps of a simulated disk's unsynced writes ([`Cluster::crash`]).
pub use keel_fs::CrashMode;
pub use metrics::metric_value;
pub use model::{KvClient, KvModel, RegisterOp, Registers};
pub use options::{fast, Options, Storage, TcpTweak, Timing, Transport, Tweak};
pub use process_fs::ProcessFs;
pub use tcp::{loopback_tcp, start_tcp};
pub use wait::{agreed_leader, wait_until, Leader, POLL};
