//! What is wrong with a WAL, and what opening it would do.
//!
//! Two sources are combined: the scanner's list of every damaged byte range (exact
//! offsets, all of them, in every segment) and a dry run of the WAL's own recovery
//! ([`keel_wal::Wal::open`] through the copy-on-write [`OverlayFs`]), which decides what is
//! a torn tail it would cut and what is damage it refuses, and checks the index
//! continuity of the log it rebuilds. Nothing is written either way.

use std::path::Path;
use std::sync::Arc;

use keel_fs::StdFs;
use keel_raft::{HardState, SnapshotMetadata};
use keel_wal::{Damage, LogError, LogStore, RecoveryMode, TailCut, Wal, WalOptions};

use super::overlay::OverlayFs;
use super::{log_error, parse_damage};
use crate::error::Result;

/// The log as recovery rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogView {
    /// First live index.
    pub first_index: u64,
    /// Last live index (`first_index - 1` when the log is empty).
    pub last_index: u64,
    /// The recovered hard state.
    pub hard_state: HardState,
    /// The latest snapshot marker.
    pub snapshot: Option<SnapshotMetadata>,
}

/// What opening the WAL (with the default [`RecoveryMode::TolerateTailCorruption`])
/// would do.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// Open it as it is.
    Clean(LogView),
    /// Cut a torn tail, then open.
    TornTail {
        /// The cut recovery would make.
        cut: TailCut,
        /// The log after the cut.
        log: LogView,
    },
    /// Refuse: damage that is not a torn tail.
    Fails(Damage),
}

/// Runs the WAL's recovery on `dir` without writing anything.
pub fn dry_run(dir: &Path, first_segment: &str) -> Result<Recovery> {
    let fs = Arc::new(OverlayFs::new(StdFs::shared()));
    match Wal::open(fs, dir, recovery_options()) {
        Ok(wal) => {
            let log = view(&wal);
            Ok(match wal.recovery_report().tail_cut.clone() {
                Some(cut) => Recovery::TornTail { cut, log },
                None => Recovery::Clean(log),
            })
        }
        Err(LogError::Corrupt(text)) => {
            Ok(Recovery::Fails(parse_damage(&text).unwrap_or(Damage {
                file: first_segment.to_string(),
                offset: 0,
                reason: text,
            })))
        }
        Err(e) => Err(log_error(dir, e)),
    }
}

/// Options for opening a WAL only to recover (and, for `repair`, cut) it: no
/// preallocation thread, so no new file appears.
pub fn recovery_options() -> WalOptions {
    WalOptions {
        recovery_mode: RecoveryMode::TolerateTailCorruption,
        preallocate: false,
        ..WalOptions::default()
    }
}

/// The recovered log's shape.
pub fn view(wal: &Wal) -> LogView {
    LogView {
        first_index: wal.first_index(),
        last_index: wal.last_index(),
        hard_state: wal.hard_state(),
        snapshot: wal.snapshot_marker(),
    }
}

/// The verdict on a WAL.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Every header, record and index checks out.
    Clean(LogView),
    /// Only the end of the last segment is damaged: an unsynced write torn by a crash,
    /// or garbage after the last record. `keel wal repair` cuts it.
    TornTail {
        /// The segment file.
        file: String,
        /// Where the cut would be: the end of the last complete batch.
        offset: u64,
        /// Bytes that would be cut: from `offset` to the last non-zero byte.
        bytes: u64,
        /// What is wrong there.
        reason: String,
        /// The log after the cut.
        log: LogView,
    },
    /// Damage recovery refuses to cut: every place found, in log order.
    Corrupt(Vec<Damage>),
}

impl Verdict {
    /// Combines the scanner's `damage` (in log order) with the dry run's `recovery`.
    pub fn judge(damage: &[Damage], recovery: Recovery) -> Verdict {
        match recovery {
            Recovery::Clean(log) if damage.is_empty() => Verdict::Clean(log),
            Recovery::Clean(_) => Verdict::Corrupt(damage.to_vec()),
            Recovery::TornTail { cut, log } => {
                let in_tail = |d: &Damage| d.file == cut.file && d.offset >= cut.offset;
                if damage.iter().all(in_tail) {
                    let reason = damage
                        .iter()
                        .find(|d| in_tail(d))
                        .map(|d| {
                            if d.offset == cut.offset {
                                d.reason.clone()
                            } else {
                                format!("{} at offset {}", d.reason, d.offset)
                            }
                        })
                        .or_else(|| parse_damage(&cut.reason).map(|d| d.reason))
                        .unwrap_or_else(|| cut.reason.clone());
                    Verdict::TornTail {
                        file: cut.file,
                        offset: cut.offset,
                        bytes: cut.bytes_cut,
                        reason,
                        log,
                    }
                } else {
                    Verdict::Corrupt(damage.iter().filter(|d| !in_tail(d)).cloned().collect())
                }
            }
            Recovery::Fails(failure) => {
                let mut all = damage.to_vec();
                if !all
                    .iter()
                    .any(|d| d.file == failure.file && d.offset == failure.offset)
                {
                    all.push(failure);
                }
                Verdict::Corrupt(all)
            }
        }
    }
}

/// Scans every segment and dry-runs recovery: the verdict, and how many intact records
/// the scan found.
pub fn inspect(wal: &super::WalDir) -> Result<(Verdict, u64)> {
    let mut damage = Vec::new();
    let mut records = 0u64;
    wal.scan_each(|gap, scan| {
        damage.extend(gap);
        for event in scan.events {
            match event {
                keel_wal::ScanEvent::Record(_) => records += 1,
                keel_wal::ScanEvent::Damage(d) => damage.push(d),
            }
        }
        Ok(())
    })?;
    let first = wal
        .listing
        .segments
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let recovery = dry_run(&wal.dir, &first)?;
    Ok((Verdict::judge(&damage, recovery), records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> LogView {
        LogView {
            first_index: 1,
            last_index: 9,
            hard_state: HardState::default(),
            snapshot: None,
        }
    }

    fn damage(file: &str, offset: u64) -> Damage {
        Damage {
            file: file.into(),
            offset,
            reason: "record CRC mismatch".into(),
        }
    }

    fn cut(file: &str, offset: u64) -> TailCut {
        TailCut {
            file: file.into(),
            offset,
            bytes_cut: 100,
            broken_file: format!("{file}.broken"),
            reason: format!("{file} at byte offset {offset}: bytes after the last batch"),
        }
    }

    #[test]
    fn clean_only_when_nothing_is_damaged() {
        assert!(matches!(
            Verdict::judge(&[], Recovery::Clean(log())),
            Verdict::Clean(_)
        ));
        assert!(matches!(
            Verdict::judge(&[damage("a.wal", 40)], Recovery::Clean(log())),
            Verdict::Corrupt(d) if d.len() == 1
        ));
    }

    #[test]
    fn torn_tail_only_when_all_damage_is_past_the_cut() {
        let torn = Recovery::TornTail {
            cut: cut("b.wal", 400),
            log: log(),
        };
        match Verdict::judge(&[damage("b.wal", 440)], torn.clone()) {
            Verdict::TornTail { offset, reason, .. } => {
                assert_eq!(offset, 400);
                assert_eq!(reason, "record CRC mismatch at offset 440");
            }
            other => panic!("{other:?}"),
        }
        match Verdict::judge(&[], torn.clone()) {
            Verdict::TornTail { reason, .. } => assert_eq!(reason, "bytes after the last batch"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Verdict::judge(&[damage("a.wal", 40), damage("b.wal", 440)], torn),
            Verdict::Corrupt(d) if d == vec![damage("a.wal", 40)]
        ));
    }

    #[test]
    fn a_refusal_adds_what_the_scan_did_not_see() {
        let fails = |d: Damage| Recovery::Fails(d);
        let scanned = damage("a.wal", 40);
        assert!(matches!(
            Verdict::judge(std::slice::from_ref(&scanned), fails(scanned.clone())),
            Verdict::Corrupt(d) if d.len() == 1
        ));
        let logical = Damage {
            file: "a.wal".into(),
            offset: 0,
            reason: "entries from 1 are missing".into(),
        };
        assert!(matches!(
            Verdict::judge(&[], fails(logical.clone())),
            Verdict::Corrupt(d) if d == vec![logical]
        ));
    }
}
