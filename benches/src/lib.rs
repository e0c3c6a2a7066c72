//! Shared helpers for keel's criterion benchmarks (the benchmarks live in `benches/`).

pub mod raft_group;
