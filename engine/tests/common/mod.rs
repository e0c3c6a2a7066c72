//! Test data shared by the engine's integration tests. The cluster harness, the test
//! timing and the waits are `keel_engine::testing` (the `test-util` feature).
#![allow(dead_code)]

use std::path::Path;

use keel_engine::testing::fast;
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

pub mod linearizable;
