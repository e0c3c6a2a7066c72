//! Recovery: a valid log whose last segment is overwritten with fuzzer bytes (after a
//! valid header, so the fuzzer explores records rather than headers) opens or fails
//! with an error in every mode, never panics, and every entry it returns is one that
//! was written.
#![no_main]

use std::path::Path;

use keel_fs::{FileSystem, SimFs};
use libfuzzer_sys::fuzz_target;
use keel_raft::Entry;
use keel_wal::{LogBatch, LogStore, RecoveryMode, SyncPolicy, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateAnyCorruption,
    ] {
        let fs = SimFs::new(0);
        let dir = Path::new("/wal");
        fs.create_dir_all(dir).unwrap();
        let opts = WalOptions {
            segment_size_bytes: 4096,
            sync_policy: SyncPolicy::Always,
            recovery_mode: mode,
            preallocate: false,
        };
        let written: Vec<Entry> = (1..=10).map(|i| Entry::new(1, i, vec![i as u8; 50])).collect();
        let wal = Wal::open(fs.shared(), dir, opts.clone()).unwrap();
        let batch = LogBatch {
            entries: written.clone(),
            ..LogBatch::default()
        };
        wal.write(&batch, true).unwrap();
        let last = *wal.segment_names().last().unwrap();
        wal.close().unwrap();
        fs.mutate_file(&dir.join(last.to_string()), |b| {
            let start = keel_wal::SEGMENT_HEADER_BYTES as usize;
            let end = (start + data.len()).min(b.len());
            b[start..end].copy_from_slice(&data[..end - start]);
        })
        .unwrap();
        if let Ok(wal) = Wal::open(fs.shared(), dir, opts) {
            let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
            if let Ok(got) = wal.entries(lo, hi, u64::MAX) {
                for e in got {
                    assert_eq!(Some(&e), written.get((e.index as usize).wrapping_sub(1)));
                }
            }
        }
    }
});
