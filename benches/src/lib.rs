//! Shared helpers for keel's criterion benchmarks (the benchmarks live in `benches/`)
//! and the synced-append load generator that `keel bench` runs too ([`load`]).

pub mod load;
pub mod raft_group;
