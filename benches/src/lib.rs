//! Shared helpers for keel's criterion benchmarks (the benchmarks live in `benches/`).
