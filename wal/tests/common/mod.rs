//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use keel_fs::{FileSystem, SimFs};
use keel_raft::{Entry, HardState, SnapshotMetadata};
use keel_wal::{LogBatch, LogStore, RecoveryMode, SyncPolicy, Wal, WalOptions};

pub const DIR: &str = "/wal";

/// Small segments so a few hundred entries span many files; no background thread so a
/// seed replays exactly.
pub fn small_opts() -> WalOptions {
    WalOptions {
        segment_size_bytes: 4096,
        sync_policy: SyncPolicy::Always,
        recovery_mode: RecoveryMode::TolerateTailCorruption,
        preallocate: false,
    }
}

pub fn sim(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs
}

pub fn open_sim(fs: &SimFs, opts: WalOptions) -> Wal {
    Wal::open(fs.shared(), DIR, opts).unwrap()
}

/// A deterministic payload for (index, term) so any mix-up shows.
pub fn payload(index: u64, term: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (index.wrapping_mul(31) ^ term.wrapping_mul(7) ^ i as u64) as u8)
        .collect()
}

pub fn ents(lo: u64, hi: u64, term: u64, len: usize) -> Vec<Entry> {
    (lo..hi)
        .map(|i| Entry::new(term, i, payload(i, term, len)))
        .collect()
}

pub fn batch(entries: Vec<Entry>) -> LogBatch {
    LogBatch {
        entries,
        ..LogBatch::default()
    }
}

pub fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

pub fn snap(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        ..Default::default()
    }
}

/// Every observable of `a` equals `b`'s.
pub fn assert_same_log(a: &dyn LogStore, b: &dyn LogStore) {
    assert_eq!(a.first_index(), b.first_index(), "first_index");
    assert_eq!(a.last_index(), b.last_index(), "last_index");
    assert_eq!(a.hard_state(), b.hard_state(), "hard_state");
    assert_eq!(a.snapshot_marker(), b.snapshot_marker(), "snapshot marker");
    let (lo, hi) = (a.first_index(), a.last_index() + 1);
    assert_eq!(
        a.entries(lo, hi, u64::MAX).unwrap(),
        b.entries(lo, hi, u64::MAX).unwrap(),
        "entries"
    );
    assert_eq!(a.term(lo - 1).ok(), b.term(lo - 1).ok(), "base term");
}

pub fn shared(fs: &SimFs) -> Arc<dyn FileSystem> {
    fs.shared()
}
