//! Test support behind the `test-util` feature: one in-process cluster harness shared by
//! the engine's integration tests, `keel bench cluster` and `keel demo`.
//!
//! Owns: starting, stopping, dropping, crashing and restarting nodes of a cluster in
//! this process ([`Cluster`]), on a real directory or each node on its own simulated
//! disk ([`Storage`]), over the in-process network ([`Transport`]); the test timing
//! ([`fast`]); waiting on a condition instead of a fixed sleep ([`wait_until`],
//! [`agreed_leader`]); reading metrics ([`metric_value`]).
//!
//! Must not: reach into the engine's internals. It uses only the public API (`Db`,
//! `Config`, the transports), so what it exercises is what an embedder gets.
//!
//! The methods named `wait_*` panic when the wait times out, which is what a test
//! wants; each has a `try_wait_*` twin returning [`ClusterError`] for callers that
//! must not panic, such as `keel demo`.

mod cluster;
mod error;
mod metrics;
mod options;
mod process_fs;
mod wait;

pub use cluster::{Cluster, DATA_DIR, WAIT};
pub use error::{ClusterError, Result};
pub use metrics::metric_value;
pub use options::{fast, Options, Storage, Timing, Transport, Tweak};
pub use process_fs::ProcessFs;
pub use wait::{agreed_leader, wait_until, Leader, POLL};
