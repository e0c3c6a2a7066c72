//! Writes a small WAL for trying the `keel wal` commands (the README's example output
//! comes from it): `cargo run -p keel-cli --example make_wal -- /tmp/node1` creates
//! `/tmp/node1/wal` with two small segments holding a membership entry, 24 writes
//! over two terms, their hard states and a snapshot marker.

use std::path::PathBuf;
use std::process::ExitCode;

use keel_fs::StdFs;
use keel_raft::{
    codec, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
    SnapshotMetadata,
};
use keel_wal::{LogBatch, LogStore, Wal, WalOptions};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: make_wal DATA_DIR");
        return ExitCode::from(2);
    };
    match write(&dir.join("wal")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_wal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &std::path::Path) -> Result<(), keel_wal::LogError> {
    let opts = WalOptions {
        segment_size_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    };
    let wal = Wal::open(StdFs::shared(), dir, opts)?;
    let conf = Entry {
        term: 1,
        index: 1,
        entry_type: EntryType::ConfChangeV2,
        data: codec::encode(&ConfChangeV2 {
            changes: [1, 2, 3]
                .map(|node_id| ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id,
                })
                .to_vec(),
            ..ConfChangeV2::default()
        }),
    };
    wal.write(
        &LogBatch {
            entries: vec![conf],
            hard_state: Some(HardState {
                term: 1,
                vote: 1,
                commit: 1,
            }),
            snapshot: None,
        },
        true,
    )?;
    let mut index = 2;
    for batch in 0..8u64 {
        let term = if batch < 3 { 1 } else { 2 };
        let entries: Vec<Entry> = (0..3)
            .map(|k| {
                let i = index + k;
                Entry::new(
                    term,
                    i,
                    format!("put user/{i:03}={}", "x".repeat(100)).into_bytes(),
                )
            })
            .collect();
        index += 3;
        wal.write(
            &LogBatch {
                entries,
                hard_state: Some(HardState {
                    term,
                    vote: 1,
                    commit: index - 1,
                }),
                snapshot: None,
            },
            true,
        )?;
    }
    // The state machine took a snapshot at index 10: the log before it is dropped.
    let snapshot = SnapshotMetadata {
        index: 10,
        term: 1,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    wal.write(
        &LogBatch {
            snapshot: Some(snapshot),
            ..LogBatch::default()
        },
        true,
    )?;
    wal.close()
}
