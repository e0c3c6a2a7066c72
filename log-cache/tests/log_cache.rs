//! The log cache against a plain `Vec<Entry>` model, under random sequences of append,
//! truncate, compact, snapshot record/install and reads, for a tiny and a large byte
//! bound; plus targeted tests of hits, misses and eviction.

use std::sync::Arc;

use keel_log_cache::{LogCache, LogCacheOptions};
use keel_raft::util::limit_size;
use keel_raft::{ConfState, Entry, Error, SnapshotMetadata, Storage, StorageError};
use keel_wal::{LogBatch, LogStore, MemLogStore};
use proptest::prelude::*;

/// The model: entries `compacted + 1 ..= compacted + entries.len()`.
#[derive(Debug, Default)]
struct Model {
    compacted_index: u64,
    compacted_term: u64,
    snapshot_index: u64,
    entries: Vec<Entry>,
}

impl Model {
    fn last(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }
    fn max_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.compacted_term, |e| e.term)
            .max(self.compacted_term)
    }
    // The lowest index a write may replace: everything up to the snapshot is committed.
    fn floor(&self) -> u64 {
        self.compacted_index.max(self.snapshot_index) + 1
    }
    fn term(&self, i: u64) -> Result<u64, Error> {
        if i == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if i < self.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        self.entries
            .get((i - self.compacted_index - 1) as usize)
            .map(|e| e.term)
            .ok_or_else(|| StorageError::Unavailable.into())
    }
    fn read(&self, lo: u64, hi: u64, max: u64) -> Result<Vec<Entry>, Error> {
        if lo <= self.compacted_index {
            return Err(StorageError::Compacted.into());
        }
        if hi > self.last() + 1 || lo > hi {
            return Err(StorageError::Unavailable.into());
        }
        let base = self.compacted_index + 1;
        let mut out = self.entries[(lo - base) as usize..(hi - base) as usize].to_vec();
        limit_size(&mut out, max);
        Ok(out)
    }
    fn truncate_from(&mut self, index: u64) {
        self.entries
            .truncate((index - self.compacted_index - 1) as usize);
    }
    fn compact_to(&mut self, index: u64, term: u64) {
        let drop = ((index - self.compacted_index) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.compacted_index = index;
        self.compacted_term = term;
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append `sizes.len()` entries replacing from `back` entries before the end.
    Append {
        back: u64,
        sizes: Vec<usize>,
        bump_term: bool,
    },
    Truncate {
        back: u64,
    },
    /// Compact to a point `frac` of the way between the compaction point and the snapshot.
    Compact {
        frac: u8,
    },
    /// Record a locally taken snapshot `frac` of the way into the uncompacted log.
    Record {
        frac: u8,
    },
    /// Install a snapshot: matching an entry in the log, or `ahead` past its end.
    Install {
        matching: bool,
        frac: u8,
        ahead: u64,
    },
    Read {
        lo: u64,
        len: u64,
        max_size: u64,
    },
    Term {
        back: u64,
    },
}

// Sizes and limits drawn from small sets as well as ranges, so running totals often land
// exactly on a limit (the off-by-one cases of "at most max_size bytes").
fn entry_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(76), 0usize..120]
}

fn max_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(100),
        Just(200),
        Just(248),
        0u64..400,
        Just(u64::MAX)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, prop::collection::vec(entry_size(), 1..6), any::<bool>())
            .prop_map(|(back, sizes, bump_term)| Op::Append { back, sizes, bump_term }),
        1 => (0u64..4).prop_map(|back| Op::Truncate { back }),
        1 => any::<u8>().prop_map(|frac| Op::Compact { frac }),
        1 => any::<u8>().prop_map(|frac| Op::Record { frac }),
        1 => (any::<bool>(), any::<u8>(), 0u64..4)
            .prop_map(|(matching, frac, ahead)| Op::Install { matching, frac, ahead }),
        6 => (0u64..40, 0u64..12, max_size())
            .prop_map(|(lo, len, max_size)| Op::Read { lo, len, max_size }),
        3 => (0u64..30).prop_map(|back| Op::Term { back }),
    ]
}

fn pick(lo: u64, hi: u64, frac: u8) -> u64 {
    // A point in [lo, hi] (hi >= lo).
    lo + (hi - lo) * u64::from(frac) / 255
}

fn same_error(a: &Error, b: &Error) -> bool {
    a == b
}

fn run(ops: Vec<Op>, max_bytes: u64) -> Result<(), TestCaseError> {
    let log = Arc::new(MemLogStore::new());
    let cache = LogCache::open(Arc::clone(&log), LogCacheOptions { max_bytes }).unwrap();
    let mut model = Model::default();
    let mut counter = 0u8;
    for op in ops {
        match op {
            Op::Append {
                back,
                sizes,
                bump_term,
            } => {
                let first = (model.last() + 1).saturating_sub(back).max(model.floor());
                let term = model.max_term() + u64::from(bump_term || model.max_term() == 0);
                let ents: Vec<Entry> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &size)| {
                        counter = counter.wrapping_add(1);
                        Entry::new(term, first + k as u64, vec![counter; size])
                    })
                    .collect();
                log.write(
                    &LogBatch {
                        entries: ents.clone(),
                        ..LogBatch::default()
                    },
                    true,
                )
                .unwrap();
                cache.append(&ents).unwrap();
                model.truncate_from(first);
                model.entries.extend(ents);
            }
            Op::Truncate { back } => {
                let index = (model.last() + 1).saturating_sub(back).max(model.floor());
                log.truncate_suffix(index).unwrap();
                cache.truncate_suffix(index).unwrap();
                if index <= model.last() {
                    model.truncate_from(index);
                }
            }
            Op::Compact { frac } => {
                if model.snapshot_index > model.compacted_index {
                    let index = pick(model.compacted_index + 1, model.snapshot_index, frac);
                    let term = model.term(index).unwrap();
                    cache.compact(index).unwrap();
                    log.compact(index).unwrap();
                    model.compact_to(index, term);
                } else {
                    // Past the snapshot (or nothing to do): refused, nothing changes.
                    prop_assert!(cache.compact(model.snapshot_index + 1).is_err());
                }
            }
            Op::Record { frac } => {
                let lo = model.floor();
                if lo <= model.last() {
                    let index = pick(lo, model.last(), frac);
                    let meta = SnapshotMetadata {
                        index,
                        term: model.term(index).unwrap(),
                        conf_state: ConfState::default(),
                    };
                    cache.record_snapshot(meta).unwrap();
                    model.snapshot_index = index;
                }
            }
            Op::Install {
                matching,
                frac,
                ahead,
            } => {
                let lo = model.floor();
                let (index, term) = if matching && lo <= model.last() {
                    let index = pick(lo, model.last(), frac);
                    (index, model.term(index).unwrap())
                } else {
                    (model.last() + 1 + ahead, model.max_term() + 1)
                };
                let meta = SnapshotMetadata {
                    index,
                    term,
                    conf_state: ConfState {
                        voters: vec![index],
                        ..ConfState::default()
                    },
                };
                log.write(
                    &LogBatch {
                        snapshot: Some(meta.clone()),
                        ..LogBatch::default()
                    },
                    true,
                )
                .unwrap();
                cache.apply_snapshot(meta.clone()).unwrap();
                if model.term(index).ok() == Some(term) {
                    model.compact_to(index, term);
                } else {
                    model.entries.clear();
                    model.compacted_index = index;
                    model.compacted_term = term;
                }
                model.snapshot_index = index;
                prop_assert_eq!(&cache.initial_state().unwrap().conf_state, &meta.conf_state);
                prop_assert_eq!(cache.snapshot(0, 2).unwrap().metadata, meta);
            }
            Op::Read { lo, len, max_size } => {
                // Reads straddle the compaction point and the end of the log.
                let lo = (model.compacted_index + lo)
                    .saturating_sub(3)
                    .min(model.last() + 2);
                let hi = lo + len;
                let got = cache.entries(lo, hi, max_size);
                let want = model.read(lo, hi, max_size);
                match (&got, &want) {
                    (Ok(g), Ok(w)) => {
                        prop_assert_eq!(g, w, "entries({}, {}, {})", lo, hi, max_size)
                    }
                    (Err(g), Err(w)) => prop_assert!(same_error(g, w), "{} vs {}", g, w),
                    _ => prop_assert!(
                        false,
                        "entries({lo}, {hi}, {max_size}): cache {got:?} model {want:?}"
                    ),
                }
            }
            Op::Term { back } => {
                let i = (model.last() + 2).saturating_sub(back);
                let got = cache.term(i);
                let want = model.term(i);
                match (&got, &want) {
                    (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                    (Err(g), Err(w)) => prop_assert!(same_error(g, w), "{} vs {}", g, w),
                    _ => prop_assert!(false, "term({i}): cache {got:?} model {want:?}"),
                }
            }
        }
        // After every step: bounds agree with the model, the cache agrees with the log,
        // and the window respects its byte bound.
        prop_assert_eq!(cache.first_index().unwrap(), model.compacted_index + 1);
        prop_assert_eq!(cache.last_index().unwrap(), model.last());
        if let Err(e) = cache.check_against_log() {
            prop_assert!(false, "cache disagrees with the log: {}", e);
        }
        let stats = cache.stats();
        prop_assert!(stats.window_bytes <= max_bytes);
        if let Some(first) = stats.window_first_index {
            prop_assert!(first > model.compacted_index);
            prop_assert_eq!(first + stats.window_entries - 1, model.last());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cache_matches_model_with_a_tiny_bound(ops in prop::collection::vec(op(), 1..80)) {
        // Smaller than most single entries: nearly every read goes to the log.
        run(ops, 64)?;
    }

    #[test]
    fn cache_matches_model_with_a_large_bound(ops in prop::collection::vec(op(), 1..80)) {
        // Holds everything: nearly every read is served from memory.
        run(ops, 1 << 20)?;
    }

    #[test]
    fn cache_matches_model_with_a_middling_bound(ops in prop::collection::vec(op(), 1..80)) {
        // A few entries: reads often straddle the log and the window.
        run(ops, 400)?;
    }
}

fn entries(lo: u64, hi: u64, term: u64, size: usize) -> Vec<Entry> {
    (lo..hi)
        .map(|i| Entry::new(term, i, vec![i as u8; size]))
        .collect()
}

fn cache_over(log: &Arc<MemLogStore>, max_bytes: u64) -> LogCache<MemLogStore> {
    LogCache::open(Arc::clone(log), LogCacheOptions { max_bytes }).unwrap()
}

fn write(log: &MemLogStore, cache: &LogCache<MemLogStore>, ents: Vec<Entry>) {
    log.write(
        &LogBatch {
            entries: ents.clone(),
            ..LogBatch::default()
        },
        true,
    )
    .unwrap();
    cache.append(&ents).unwrap();
}

#[test]
fn recent_reads_hit_and_old_reads_miss() {
    let log = Arc::new(MemLogStore::new());
    // Each entry is 24 + 76 = 100 bytes; the window holds the last 10.
    let cache = cache_over(&log, 1_000);
    write(&log, &cache, entries(1, 101, 1, 76));
    let s = cache.stats();
    assert_eq!(s.window_entries, 10);
    assert_eq!(s.window_bytes, 1_000);
    assert_eq!(s.window_first_index, Some(91));
    assert_eq!(cache.entries(95, 101, u64::MAX).unwrap().len(), 6);
    assert_eq!(cache.term(91).unwrap(), 1);
    assert_eq!(cache.stats().hits, 2);
    assert_eq!(cache.entries(50, 95, u64::MAX).unwrap().len(), 45); // straddles
    assert_eq!(cache.term(10).unwrap(), 1);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (2, 2));
    assert!((s.hit_rate() - 0.5).abs() < 1e-9);
}

#[test]
fn reopening_over_an_existing_log_serves_it() {
    let log = Arc::new(MemLogStore::new());
    let meta = SnapshotMetadata {
        index: 5,
        term: 1,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    {
        let cache = cache_over(&log, 1_000);
        write(&log, &cache, entries(1, 21, 1, 10));
        log.write(
            &LogBatch {
                snapshot: Some(meta.clone()),
                ..LogBatch::default()
            },
            true,
        )
        .unwrap();
        cache.apply_snapshot(meta.clone()).unwrap();
    }
    // Also usable over a trait object, as the engine will hold it.
    let dyn_log: Arc<dyn LogStore> = log.clone();
    let cache = LogCache::open(dyn_log, LogCacheOptions::default()).unwrap();
    assert_eq!(cache.first_index().unwrap(), 6);
    assert_eq!(cache.last_index().unwrap(), 20);
    assert_eq!(cache.term(5).unwrap(), 1);
    assert_eq!(cache.initial_state().unwrap().conf_state, meta.conf_state);
    assert_eq!(cache.snapshot(0, 2).unwrap().metadata, meta);
    assert_eq!(
        cache.entries(6, 21, u64::MAX).unwrap(),
        entries(6, 21, 1, 10)
    );
    cache.check_against_log().unwrap();
}

#[test]
fn misuse_is_refused_without_panicking() {
    let log = Arc::new(MemLogStore::new());
    let cache = cache_over(&log, 1_000);
    // No snapshot yet.
    assert_eq!(
        cache.snapshot(0, 2).unwrap_err(),
        Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
    write(&log, &cache, entries(1, 11, 1, 1));
    // Gaps and non-contiguous batches.
    assert!(cache.append(&entries(20, 21, 1, 1)).is_err());
    let mut bad = entries(11, 13, 1, 1);
    bad[1].index = 15;
    assert!(cache.append(&bad).is_err());
    // Compaction past the snapshot, snapshots out of date or out of range.
    assert!(cache.compact(3).is_err());
    assert!(cache
        .record_snapshot(SnapshotMetadata {
            index: 50,
            term: 1,
            ..Default::default()
        })
        .is_err());
    assert!(cache
        .record_snapshot(SnapshotMetadata {
            index: 5,
            term: 9,
            ..Default::default()
        })
        .is_err());
    cache
        .record_snapshot(SnapshotMetadata {
            index: 5,
            term: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        cache
            .apply_snapshot(SnapshotMetadata {
                index: 4,
                term: 1,
                ..Default::default()
            })
            .unwrap_err(),
        Error::Store(StorageError::SnapshotOutOfDate)
    );
    assert_eq!(
        cache.snapshot(7, 2).unwrap_err(),
        Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
    cache.compact(5).unwrap();
    assert_eq!(
        cache.compact(5).unwrap_err(),
        Error::Store(StorageError::Compacted)
    );
    assert_eq!(
        cache.entries(3, 4, 0).unwrap_err(),
        Error::Store(StorageError::Compacted)
    );
    assert_eq!(
        cache.entries(8, 30, 0).unwrap_err(),
        Error::Store(StorageError::Unavailable)
    );
    assert_eq!(
        cache.entries(9, 8, 0).unwrap_err(),
        Error::Store(StorageError::Unavailable)
    );
    assert_eq!(
        cache.entries(u64::MAX, u64::MAX, 0).unwrap_err(),
        Error::Store(StorageError::Unavailable)
    );
    assert!(cache.term(u64::MAX).is_err());
    // Absurd indexes are refused, not overflowed.
    assert!(cache.append(&[Entry::new(1, 0, vec![])]).is_err());
    assert!(cache
        .append(&[Entry::new(1, u64::MAX, vec![]), Entry::new(1, 0, vec![])])
        .is_err());
    assert!(cache.append(&[Entry::new(1, u64::MAX, vec![])]).is_err());
    let far = SnapshotMetadata {
        index: u64::MAX,
        term: 2,
        ..Default::default()
    };
    cache.apply_snapshot(far).unwrap();
    assert_eq!(cache.last_index().unwrap(), u64::MAX);
    assert!(cache.entries(u64::MAX, u64::MAX, 0).is_err());
    assert!(cache.append(&[Entry::new(3, u64::MAX, vec![])]).is_ok());
    assert!(cache.term(u64::MAX).is_ok());
}

#[test]
fn readers_on_other_threads_see_consistent_entries() {
    let log = Arc::new(MemLogStore::new());
    let cache = cache_over(&log, 2_000);
    write(&log, &cache, entries(1, 2, 1, 8));
    let reader = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            for _ in 0..2_000 {
                let last = cache.last_index().unwrap();
                let first = cache.first_index().unwrap();
                if let Ok(got) = cache.entries(first, last + 1, u64::MAX) {
                    for w in got.windows(2) {
                        assert_eq!(w[1].index, w[0].index + 1);
                    }
                }
            }
        })
    };
    for i in 2..500 {
        write(&log, &cache, entries(i, i + 1, 1, 8));
    }
    reader.join().unwrap();
    cache.check_against_log().unwrap();
}

#[test]
fn handles_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LogCache<dyn LogStore>>();
    assert_send_sync::<LogCache<MemLogStore>>();
}

#[test]
fn appends_reaching_below_the_compaction_point_keep_only_the_new_part() {
    let log = Arc::new(MemLogStore::new());
    let cache = cache_over(&log, 10_000);
    write(&log, &cache, entries(1, 11, 1, 4));
    let snap = SnapshotMetadata {
        index: 8,
        term: 1,
        ..Default::default()
    };
    cache.record_snapshot(snap).unwrap();
    cache.compact(6).unwrap();
    log.compact(6).unwrap();
    // A leader resends 4..=12: 4..=6 are compacted and skipped, 7..=12 replace the rest.
    write(&log, &cache, entries(4, 13, 1, 4));
    assert_eq!(cache.first_index().unwrap(), 7);
    assert_eq!(cache.last_index().unwrap(), 12);
    assert_eq!(
        cache.entries(7, 13, u64::MAX).unwrap(),
        entries(7, 13, 1, 4)
    );
    cache.check_against_log().unwrap();
    // Entirely below the compaction point: nothing changes.
    cache.append(&entries(2, 5, 1, 4)).unwrap();
    assert_eq!(cache.last_index().unwrap(), 12);
}
