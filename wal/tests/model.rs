//! Property tests: the WAL behaves exactly like the in-memory model for any sequence of
//! operations (including across reopen), and neither the scanner nor recovery panics
//! on arbitrary bytes.

mod common;

use std::path::Path;

use common::*;
use keel_fs::FileSystem;
use keel_raft::Entry;
use keel_wal::{LogBatch, LogStore, MemLogStore, SegmentName, Wal};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` entries starting `back` positions before last + 1.
    Append {
        back: u64,
        n: u64,
        len: usize,
        bump_term: bool,
        sync: bool,
    },
    HardState,
    Truncate {
        back: u64,
    },
    Compact {
        back: u64,
    },
    SnapshotAhead {
        ahead: u64,
    },
    SnapshotInside {
        back: u64,
    },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..6, 1u64..6, 0usize..400, any::<bool>(), any::<bool>()).prop_map(
            |(back, n, len, bump_term, sync)| Op::Append { back, n, len, bump_term, sync }
        ),
        1 => Just(Op::HardState),
        1 => (0u64..8).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..30).prop_map(|back| Op::Compact { back }),
        1 => (1u64..5).prop_map(|ahead| Op::SnapshotAhead { ahead }),
        1 => (0u64..10).prop_map(|back| Op::SnapshotInside { back }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// Applies `op` to both logs and checks they answer alike.
fn step(model: &MemLogStore, wal: &Wal, op: &Op, term: &mut u64) {
    let (first, last) = (model.first_index(), model.last_index());
    let pick = |back: u64| last.saturating_sub(back).max(first);
    match op {
        Op::Append {
            back,
            n,
            len,
            bump_term,
            sync,
        } => {
            if *bump_term {
                *term += 1;
            }
            let start = (last + 1).saturating_sub(*back).max(first);
            let b = batch(ents(start, start + n, *term, *len));
            let m = model.write(&b, *sync).map_err(|e| e.to_string());
            let w = wal.write(&b, *sync).map_err(|e| e.to_string());
            assert_eq!(m.is_ok(), w.is_ok(), "{m:?} vs {w:?}");
        }
        Op::HardState => {
            let b = LogBatch {
                hard_state: Some(hs(*term, last)),
                ..LogBatch::default()
            };
            model.write(&b, true).unwrap();
            wal.write(&b, true).unwrap();
        }
        Op::Truncate { back } => {
            let at = pick(*back).max(first);
            assert_eq!(
                model.truncate_suffix(at).is_ok(),
                wal.truncate_suffix(at).is_ok()
            );
        }
        Op::Compact { back } => {
            let at = pick(*back);
            assert_eq!(model.compact(at).is_ok(), wal.compact(at).is_ok());
        }
        Op::SnapshotAhead { ahead } => {
            *term += 1;
            let b = LogBatch {
                snapshot: Some(snap(last + ahead, *term)),
                ..LogBatch::default()
            };
            model.write(&b, true).unwrap();
            wal.write(&b, true).unwrap();
        }
        Op::SnapshotInside { back } => {
            if last >= first {
                let at = pick(*back);
                let b = LogBatch {
                    snapshot: Some(snap(at, model.term(at).unwrap())),
                    ..LogBatch::default()
                };
                model.write(&b, true).unwrap();
                wal.write(&b, true).unwrap();
            }
        }
        Op::Sync => {
            model.sync().unwrap();
            wal.sync().unwrap();
            assert_eq!(model.durable_index(), wal.durable_index());
        }
        Op::Reopen => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let fs = sim(0);
        let model = MemLogStore::new();
        let mut wal = open_sim(&fs, small_opts());
        let mut term = 1;
        for op in &ops {
            if let Op::Reopen = op {
                wal.close().unwrap();
                model.sync().unwrap();
                wal = open_sim(&fs, small_opts());
            } else {
                step(&model, &wal, op, &mut term);
            }
            assert_same_log(&wal, &model);
            // Ranged reads with a size limit agree too.
            let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
            let mid = lo + (hi - lo) / 2;
            assert_eq!(
                wal.entries(mid, hi, 500).unwrap(),
                model.entries(mid, hi, 500).unwrap()
            );
        }
    }

    #[test]
    fn scanner_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), seq in 0u64..4) {
        let _ = keel_wal::scan_segment_bytes(SegmentName { seq, first_index: 1 }, &data);
    }

    #[test]
    fn recovery_never_panics_on_damaged_segments(
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..20),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let fs = sim(1);
        let wal = open_sim(&fs, small_opts());
        let all: Vec<Entry> = ents(1, 40, 1, 150);
        for e in &all {
            wal.write(&batch(vec![e.clone()]), true).unwrap();
        }
        let names = wal.segment_names();
        wal.close().unwrap();
        let target = Path::new(DIR).join(names[flips[0].0 % names.len()].to_string());
        fs.mutate_file(&target, |b| {
            for (at, mask) in &flips {
                if let Some(x) = b.get_mut(*at) {
                    *x ^= *mask;
                }
            }
            b.extend_from_slice(&extra);
        }).unwrap();
        for mode in [
            keel_wal::RecoveryMode::TolerateTailCorruption,
            keel_wal::RecoveryMode::AbsoluteConsistency,
            keel_wal::RecoveryMode::TolerateAnyCorruption,
        ] {
            let opts = keel_wal::WalOptions { recovery_mode: mode, ..small_opts() };
            // Work on a copy so each mode sees the same damage.
            let copy = sim(2);
            for n in fs.list_dir(Path::new(DIR)).unwrap() {
                let p = Path::new(DIR).join(&n);
                let f = copy.create(&p).unwrap();
                f.write_at(&fs.file_bytes(&p).unwrap(), 0).unwrap();
                f.sync_data().unwrap();
            }
            copy.sync_dir(Path::new(DIR)).unwrap();
            if let Ok(w) = Wal::open(copy.shared(), DIR, opts) {
                // Whatever comes back is real data: each entry read is one written.
                let (lo, hi) = (w.first_index(), w.last_index() + 1);
                if let Ok(got) = w.entries(lo, hi, u64::MAX) {
                    for e in got {
                        prop_assert_eq!(&e, &all[(e.index - 1) as usize]);
                    }
                }
            }
        }
    }
}
