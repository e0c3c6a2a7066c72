//! Arbitrary bytes as a script of messages, ticks, proposals and Ready handling
//! against one RawNode in each role; the driver checks raft-core's invariants after
//! every operation. The driver is shared with the `cargo test` proptest
//! (`raft-core/tests/hostile.rs`).
#![no_main]

#[path = "../../tests/driver/mod.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
