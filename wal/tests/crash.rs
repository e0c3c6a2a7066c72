//! Seeded crash tests on the simulated file system: random appends (with suffix
//! replacement), hard states, snapshots, truncations, compactions and syncs, injected
//! write/sync failures, then a crash that drops or tears unsynced data, then reopen.
//!
//! The log that comes back must be exactly the log as it stood after some prefix of
//! the operations, no shorter than the last one reported durable: every durable entry is
//! present and identical, indexes are contiguous, and nothing unsynced comes back
//! half-applied or corrupted. Recovery must never fail or panic after a plain crash.

mod common;

use common::*;
use keel_fs::{CrashMode, SimFault};
use keel_raft::{Entry, HardState, SnapshotMetadata};
use keel_wal::{LogBatch, LogStore, MemLogStore, SyncPolicy, Wal, WalOptions};

/// Everything observable about a log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogImage {
    first: u64,
    last: u64,
    base_term: Option<u64>,
    entries: Vec<Entry>,
    hard_state: HardState,
    snapshot: Option<SnapshotMetadata>,
}

fn image(log: &dyn LogStore) -> LogImage {
    let (first, last) = (log.first_index(), log.last_index());
    LogImage {
        first,
        last,
        base_term: log.term(first - 1).ok(),
        entries: log.entries(first, last + 1, u64::MAX).unwrap(),
        hard_state: log.hard_state(),
        snapshot: log.snapshot_marker(),
    }
}

/// raft-core's seeded generator, with the one draw this test needs.
struct Rng(keel_raft::Rng);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
}

/// Runs one seed; returns a description of the failure instead of panicking so the
/// caller can name the seed.
fn run_seed(seed: u64, sync_policy: SyncPolicy) -> Result<(), String> {
    let fs = sim(seed);
    let mut rng = Rng(keel_raft::Rng::new(seed ^ 0xA5A5));
    let opts = WalOptions {
        segment_size_bytes: 4096,
        sync_policy,
        preallocate: false,
        ..small_opts()
    };
    let wal = Wal::open(fs.shared(), DIR, opts.clone()).map_err(|e| e.to_string())?;
    let model = MemLogStore::new();
    // images[k] is the log after k operations; `durable_k` the newest image known
    // durable.
    let mut images = vec![image(&model)];
    let mut durable_k = 0usize;
    let mut term = 1u64;
    let ops = 10 + rng.below(60);
    let fault_at = if rng.below(4) == 0 {
        Some(rng.below(ops))
    } else {
        None
    };
    for op in 0..ops {
        if fault_at == Some(op) {
            if rng.below(2) == 0 {
                fs.fail_write_after(rng.below(2), SimFault::Enospc);
            } else {
                fs.fail_sync_after(rng.below(2), SimFault::Eio);
            }
        }
        let sync = rng.below(3) != 0;
        let (first, last) = (model.first_index(), model.last_index());
        let kind = rng.below(20);
        let result = match kind {
            0..=11 => {
                // Append, sometimes replacing a suffix.
                if rng.below(5) == 0 {
                    term += 1;
                }
                let start = if rng.below(4) == 0 && last >= first {
                    last - rng.below((last - first + 1).min(8))
                } else {
                    last + 1
                };
                let n = 1 + rng.below(6);
                let len = rng.below(300) as usize;
                let mut b = batch(ents(start, start + n, term, len));
                if rng.below(3) == 0 {
                    b.hard_state = Some(hs(term, start));
                }
                model.write(&b, sync).map(|_| ()).unwrap();
                wal.write(&b, sync).map(|_| ())
            }
            12 => {
                let b = LogBatch {
                    hard_state: Some(hs(term, last)),
                    ..LogBatch::default()
                };
                model.write(&b, sync).unwrap();
                wal.write(&b, sync).map(|_| ())
            }
            13 if last >= first => {
                let at = first + rng.below(last - first + 1);
                model.truncate_suffix(at).unwrap();
                wal.truncate_suffix(at)
            }
            14 | 15 if last >= first => {
                let at = first + rng.below(last - first + 1);
                model.compact(at).unwrap();
                wal.compact(at)
            }
            16 => {
                // A snapshot: taken inside the log, or installed ahead of it.
                let meta = if last >= first && rng.below(2) == 0 {
                    let at = first + rng.below(last - first + 1);
                    snap(at, model.term(at).unwrap())
                } else {
                    term += 1;
                    snap(last + 1 + rng.below(5), term)
                };
                let b = LogBatch {
                    snapshot: Some(meta),
                    ..LogBatch::default()
                };
                model.write(&b, true).unwrap();
                wal.write(&b, true).map(|_| ())
            }
            _ => {
                model.sync().unwrap();
                wal.sync()
            }
        };
        images.push(image(&model));
        match result {
            Ok(()) => {
                // A synced write, an explicit sync and a compaction return only once
                // durable (under the Always policy); so does whatever the WAL says.
                // A truncation alone is durable only at the next sync.
                let always = sync_policy == SyncPolicy::Always;
                let synced = match kind {
                    0..=12 => always && sync,
                    13 => false,
                    14 | 15 => true,
                    16 => always,
                    _ => true,
                };
                if synced {
                    if wal.durable_index() != model.last_index() {
                        return Err(format!("op {op}: synced but durable_index lags"));
                    }
                    durable_k = images.len() - 1;
                }
            }
            Err(_) => {
                if !wal.is_poisoned() {
                    return Err(format!("op {op}: error without poisoning"));
                }
                break;
            }
        }
    }
    let mode = match rng.below(4) {
        0 => CrashMode::DropUnsynced,
        1 => CrashMode::TearUnsynced,
        2 => CrashMode::TearWithGarbage,
        _ => CrashMode::LoseRandomSectors,
    };
    fs.crash_with(mode);
    drop(wal);

    let wal = Wal::open(fs.shared(), DIR, opts.clone())
        .map_err(|e| format!("reopen after {mode:?} failed: {e}"))?;
    let got = image(&wal);
    if std::env::var("CRASH_DEBUG").is_ok() {
        for (k, im) in images.iter().enumerate() {
            eprintln!(
                "k={k} first={} last={} base_term={:?} hs={:?} snap={:?} terms={:?}",
                im.first,
                im.last,
                im.base_term,
                im.hard_state,
                im.snapshot.as_ref().map(|s| (s.index, s.term)),
                im.entries.iter().map(|e| e.term).collect::<Vec<_>>()
            );
        }
        eprintln!(
            "got first={} last={} base_term={:?} hs={:?} snap={:?} terms={:?}",
            got.first,
            got.last,
            got.base_term,
            got.hard_state,
            got.snapshot.as_ref().map(|s| (s.index, s.term)),
            got.entries.iter().map(|e| e.term).collect::<Vec<_>>()
        );
    }
    if !images[durable_k..].contains(&got) {
        return Err(format!(
            "recovered log matches no state at or after the last durable one (op {durable_k} \
             of {}); got first {} last {} hs {:?}",
            images.len() - 1,
            got.first,
            got.last,
            got.hard_state
        ));
    }
    if wal.durable_index() != wal.last_index() {
        return Err("recovered log not fully durable".into());
    }
    // The recovered log accepts writes and survives a clean reopen.
    let next = wal.last_index() + 1;
    wal.write(&batch(ents(next, next + 3, term + 1, 40)), true)
        .map_err(|e| format!("append after recovery: {e}"))?;
    let expect = image(&wal);
    wal.close().map_err(|e| e.to_string())?;
    let wal = Wal::open(fs.shared(), DIR, opts).map_err(|e| format!("second reopen: {e}"))?;
    if image(&wal) != expect {
        return Err("second reopen differs".into());
    }
    Ok(())
}

/// Seeds that once failed; kept forever. 1078 and 26: replay after a purge met a
/// truncation referring to entries in deleted segments (fixed by placeholders).
const REGRESSION_SEEDS: &[u64] = &[26, 46, 1078, 1019, 1072];

#[test]
fn crash_debug_one_seed() {
    if let Ok(seed) = std::env::var("CRASH_DEBUG") {
        let seed: u64 = seed.parse().unwrap();
        let policy = if seed >= 1000 {
            SyncPolicy::Never
        } else {
            SyncPolicy::Always
        };
        run_seed(seed, policy).unwrap();
    }
}

#[test]
fn crash_seeds_always_policy() {
    let failures: Vec<String> = REGRESSION_SEEDS
        .iter()
        .copied()
        .chain(0..1000)
        .filter_map(|seed| {
            run_seed(seed, SyncPolicy::Always)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn crash_seeds_never_policy() {
    // Nothing is promised durable but explicit syncs and compactions; recovery must
    // still give back a consistent prefix.
    let failures: Vec<String> = (1000..1500)
        .filter_map(|seed| {
            run_seed(seed, SyncPolicy::Never)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn crash_with_background_preallocation() {
    // The preallocation thread makes file creation timing nondeterministic, so this
    // checks the invariants without exact replay.
    for seed in 0..30u64 {
        let fs = sim(seed);
        let opts = WalOptions {
            segment_size_bytes: 4096,
            preallocate: true,
            ..small_opts()
        };
        let wal = Wal::open(fs.shared(), DIR, opts.clone()).unwrap();
        for i in 1..=120u64 {
            wal.write(&batch(ents(i, i + 1, 1, 90)), i % 7 != 0)
                .unwrap();
        }
        let durable = wal.durable_index();
        fs.crash();
        drop(wal);
        let wal = Wal::open(fs.shared(), DIR, opts).unwrap();
        assert!(wal.last_index() >= durable, "seed {seed}");
        let got = wal.entries(1, wal.last_index() + 1, u64::MAX).unwrap();
        assert_eq!(got, ents(1, wal.last_index() + 1, 1, 90), "seed {seed}");
    }
}
