//! Test data shared by the engine's integration tests. The cluster harness, the test
//! timing and the waits are `keel_engine::testing` (the `test-util` feature).
#![allow(dead_code)]

use std::path::Path;

use keel_engine::state_machine::KvStore;
use keel_engine::testing::{fast, KvModel, Registers};
use keel_engine::Config;

pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

pub fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// A single node in `dir`, with the test timing.
pub fn single(dir: &Path) -> Config {
    fast(Config::single_node(dir))
}

/// A state machine the generic tests run on (see [`for_each_model!`]).
pub trait Model: KvModel {
    /// The module its tests are in (`kv::name`, `registers::name`): what a replay
    /// command filters on.
    const MODULE: &'static str;
    /// Added to the node ids (and so the seeds) of its fail-point tests, so the two
    /// runs of a scenario, in parallel, never arm each other's nodes at the
    /// process-wide fail points.
    const OFFSET: u64;
}

impl Model for KvStore {
    const MODULE: &'static str = "kv";
    const OFFSET: u64 = 0;
}

impl Model for Registers {
    const MODULE: &'static str = "registers";
    const OFFSET: u64 = 1_000;
}

/// Runs each scenario on both state machines, without copying its body:
///
/// ```ignore
/// for_each_model! {
///     leader_crashes => cluster_crash_at("raftBeforeSave", Victim::Leader, 110);
/// }
/// ```
///
/// defines the tests `kv::leader_crashes`, calling `cluster_crash_at::<KvStore>(...)`,
/// and `registers::leader_crashes`, calling `cluster_crash_at::<Registers>(...)`.
/// Attributes before a name (`#[ignore]`, a comment) go on both tests.
// Not every test crate that includes this module uses it.
#[allow(unused_macros)]
macro_rules! for_each_model {
    ($($(#[$meta:meta])* $name:ident => $scenario:ident($($arg:expr),* $(,)?);)+) => {
        mod kv {
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $scenario::<keel_engine::state_machine::KvStore>($($arg),*)
                }
            )+
        }
        mod registers {
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $scenario::<keel_engine::testing::Registers>($($arg),*)
                }
            )+
        }
    };
}
// Unused, like the macro, in the test crates that do not run a scenario on both.
#[allow(unused_imports)]
pub(crate) use for_each_model;

pub mod linearizable;
