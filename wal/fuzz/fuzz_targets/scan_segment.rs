//! The record decoder: any bytes, scanned as a segment, give records or damage, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use keel_wal::{scan_segment_bytes, SegmentName};

fuzz_target!(|data: &[u8]| {
    let name = SegmentName {
        seq: 1,
        first_index: 1,
    };
    let _ = scan_segment_bytes(name, data);
});
