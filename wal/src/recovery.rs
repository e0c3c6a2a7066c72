//! Opening a log: every segment scanned, every CRC checked, the index rebuilt by
//! replaying committed batches, and damage handled per [`RecoveryMode`].
//!
//! Replay applies exactly the rules the live log applied when it wrote each batch (the
//! shared [`LogIndex`]), so a replayed log is the log that was written. A batch only
//! takes effect when its commit record is found, so a crash inside a batch loses the
//! whole batch, never half of it.

use std::path::Path;
use std::sync::Arc;

use keel_fs::{write_file_durably, FileSystem, FsFile};
use keel_raft::{HardState, SnapshotMetadata};

use crate::log_index::LogIndex;
use crate::options::RecoveryMode;
use crate::reader::{list_dir, scan_segment_bytes, Damage, ScanEvent, ScannedRecord};
use crate::record::{WalRecord, SEGMENT_HEADER_BYTES};
use crate::segment::{EntryLoc, SegmentName, BROKEN_SUFFIX};
use crate::LogError;

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned.
    pub segments_scanned: usize,
    /// Committed batches replayed.
    pub batches_replayed: u64,
    /// Damage skipped (only in [`RecoveryMode::TolerateAnyCorruption`]).
    pub tolerated_damage: Vec<Damage>,
    /// Entry ranges `(first, last)` lost to tolerated damage.
    pub lost_entry_ranges: Vec<(u64, u64)>,
    /// The tail cut from the last segment, if any.
    pub tail_cut: Option<TailCut>,
    /// Leftover preallocated files removed.
    pub preallocated_removed: usize,
}

/// A torn or damaged tail removed from the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// The segment file.
    pub file: String,
    /// Offset the segment now ends at.
    pub offset: u64,
    /// How many non-zero bytes were removed.
    pub bytes_cut: u64,
    /// The file holding a copy of the removed bytes.
    pub broken_file: String,
    /// Why: the first damage found in the tail, or an unfinished batch.
    pub reason: String,
}

/// The log as recovered.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: Vec<(SegmentName, Arc<dyn FsFile>)>,
    pub log: LogIndex<EntryLoc>,
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMetadata>,
    /// Where the next record goes in the last segment.
    pub append_offset: u64,
    pub report: RecoveryReport,
}

/// Replays committed records into log state.
///
/// Compaction deletes old segments, so replay may start from a segment whose records
/// refer to entries that lived in deleted ones. Those entries are represented by
/// placeholders (`None`): replay then mirrors the live log exactly, and at the end every
/// placeholder must have been compacted away or replaced; one still in the log means a
/// segment that was needed is missing.
#[derive(Debug, Default)]
struct Replay {
    log: LogIndex<Option<EntryLoc>>,
    hard_state: HardState,
    snapshot: Option<SnapshotMetadata>,
}

impl Replay {
    fn apply(&mut self, seq: u64, r: &ScannedRecord) {
        match &r.record {
            WalRecord::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return;
                };
                let last = self.log.last_index();
                if first.index > last + 1 {
                    let missing = (last + 1..first.index).map(|_| (0, None));
                    self.log.append(last + 1, missing);
                }
                // Contiguity was checked when the payload was decoded and a gap filled
                // above, so planning cannot fail; if it somehow did, the record is
                // ignored rather than half-applied.
                if let Ok(Some(plan)) = self.log.plan_batch(None, entries) {
                    let locs = r.entry_spans[plan.skip..]
                        .iter()
                        .zip(&entries[plan.skip..])
                        .map(|(span, e)| {
                            (
                                e.term,
                                Some(EntryLoc {
                                    seq,
                                    offset: r.entry_offset(span),
                                    len: span.len,
                                    crc: span.crc,
                                }),
                            )
                        });
                    self.log.append(plan.from_index, locs);
                }
            }
            WalRecord::HardState(hs) => self.hard_state = *hs,
            WalRecord::SnapshotMarker(meta) => {
                // A snapshot at a placeholder matched when it was written (had it not,
                // the writer would have logged a truncation first), so it compacts.
                if let Ok((_, None)) = self.log.get(meta.index) {
                    self.log.compact_to(meta.index, Some(meta.term));
                } else {
                    self.log.apply_snapshot(meta);
                }
                if !matches!(&self.snapshot, Some(s) if s.index > meta.index) {
                    self.snapshot = Some(meta.clone());
                }
            }
            WalRecord::Truncate { from_index } => {
                if let Ok(true) = self.log.check_truncate(*from_index) {
                    self.log.truncate_from(*from_index);
                }
            }
            WalRecord::Compact { index, term } => self.log.compact_to(*index, Some(*term)),
            WalRecord::Commit { .. } => {}
        }
    }
}

fn corrupt(d: &Damage) -> LogError {
    LogError::Corrupt(d.to_string())
}

/// Opens every segment in `dir` and rebuilds the log.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: RecoveryMode,
) -> Result<Recovered, LogError> {
    let listing = list_dir(fs, dir)?;
    let mut report = RecoveryReport::default();
    for name in &listing.preallocated {
        fs.remove_file(&dir.join(name))?;
        report.preallocated_removed += 1;
    }
    if !listing.preallocated.is_empty() {
        fs.sync_dir(dir)?;
    }

    let names = &listing.segments;
    for pair in names.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            let d = Damage {
                file: pair[1].to_string(),
                offset: 0,
                reason: format!(
                    "segment sequence jumps from {} ({}) to {}: segment(s) missing",
                    pair[0].seq, pair[0], pair[1].seq
                ),
            };
            if mode == RecoveryMode::TolerateAnyCorruption {
                report.tolerated_damage.push(d);
            } else {
                return Err(corrupt(&d));
            }
        }
    }

    let mut replay = Replay::default();
    let mut segments = Vec::with_capacity(names.len());
    let mut append_offset = SEGMENT_HEADER_BYTES;
    for (i, &name) in names.iter().enumerate() {
        let is_last = i + 1 == names.len();
        let file_name = name.to_string();
        let path = dir.join(&file_name);
        let file = fs.open(&path)?;
        let file_len = file.len()?;
        let scan = {
            let view = file.map_readonly()?;
            match view.as_slice() {
                Some(bytes) => scan_segment_bytes(name, bytes),
                None => scan_segment_bytes(name, &fs.read_file(&path)?),
            }
            // The view is dropped here, before the tail may be cut below.
        };
        report.segments_scanned += 1;

        let mut pending: Vec<&ScannedRecord> = Vec::new();
        let mut last_commit_end = SEGMENT_HEADER_BYTES;
        let mut tail_reason: Option<String> = None;
        for (k, ev) in scan.events.iter().enumerate() {
            let damage = match ev {
                ScanEvent::Record(r) => match r.record {
                    WalRecord::Commit { records, .. } if records as usize == pending.len() => {
                        for rec in pending.drain(..) {
                            replay.apply(name.seq, rec);
                        }
                        report.batches_replayed += 1;
                        last_commit_end = r.end_offset;
                        continue;
                    }
                    WalRecord::Commit { records, .. } => Damage {
                        file: file_name.clone(),
                        offset: r.offset,
                        reason: format!(
                            "commit record closes {records} records but {} precede it",
                            pending.len()
                        ),
                    },
                    _ => {
                        pending.push(r);
                        continue;
                    }
                },
                ScanEvent::Damage(d) => d.clone(),
            };
            // Damage is a torn tail only in the last segment, past the header, and only
            // if no later commit record proves the damaged bytes had been synced: a
            // zeroed or garbage range followed by intact records written after it was
            // synced is damage in the middle of the log, not its end. (Intact records
            // after damage in the unsynced tail are legitimate: the kernel may write
            // the pages of an unsynced write in any order.)
            let synced_later = scan.events[k + 1..].iter().any(|e| {
                matches!(e, ScanEvent::Record(ScannedRecord {
                    record: WalRecord::Commit { synced_through, .. },
                    ..
                }) if *synced_through > damage.offset)
            });
            let is_tail = is_last && !synced_later && damage.offset >= SEGMENT_HEADER_BYTES;
            match mode {
                RecoveryMode::AbsoluteConsistency => return Err(corrupt(&damage)),
                RecoveryMode::TolerateTailCorruption if !is_tail => return Err(corrupt(&damage)),
                RecoveryMode::TolerateTailCorruption => {
                    tail_reason = Some(damage.to_string());
                    pending.clear();
                    break;
                }
                RecoveryMode::TolerateAnyCorruption => {
                    // A batch interrupted by damage is dropped whole.
                    pending.clear();
                    if is_tail {
                        tail_reason = Some(damage.to_string());
                        break;
                    }
                    report.tolerated_damage.push(damage);
                }
            }
        }
        if let Some(first) = pending.first() {
            let d = Damage {
                file: file_name.clone(),
                offset: first.offset,
                reason: format!("batch of {} records has no commit record", pending.len()),
            };
            match mode {
                RecoveryMode::AbsoluteConsistency => return Err(corrupt(&d)),
                _ if is_last => tail_reason = Some(d.to_string()),
                RecoveryMode::TolerateTailCorruption => return Err(corrupt(&d)),
                RecoveryMode::TolerateAnyCorruption => report.tolerated_damage.push(d),
            }
        }
        if is_last {
            append_offset = last_commit_end;
            if scan.nonzero_end > last_commit_end {
                let reason = tail_reason.unwrap_or_else(|| "bytes after the last batch".into());
                if mode == RecoveryMode::AbsoluteConsistency {
                    return Err(LogError::Corrupt(format!(
                        "{file_name} at byte offset {last_commit_end}: {reason}"
                    )));
                }
                report.tail_cut = Some(cut_tail(
                    fs,
                    dir,
                    &file_name,
                    file.as_ref(),
                    last_commit_end,
                    scan.nonzero_end,
                    file_len,
                    reason,
                )?);
            }
        }
        segments.push((name, file));
    }

    let replayed_last = replay.log.last_index();
    let (log, missing_from) = replay.log.convert(|loc| loc);
    if let Some(from) = missing_from {
        let to = replayed_last;
        let msg = format!(
            "entries from {from} are missing: a segment before {} is missing or damaged",
            names.first().map(|n| n.to_string()).unwrap_or_default()
        );
        if mode == RecoveryMode::TolerateAnyCorruption {
            // Keep the longest intact prefix; Raft refetches the rest from the leader.
            report.lost_entry_ranges.push((from, to));
            report.tolerated_damage.push(Damage {
                file: names.first().map(|n| n.to_string()).unwrap_or_default(),
                offset: 0,
                reason: msg,
            });
        } else {
            return Err(LogError::Corrupt(msg));
        }
    }

    Ok(Recovered {
        segments,
        log,
        hard_state: replay.hard_state,
        snapshot: replay.snapshot,
        append_offset,
        report,
    })
}

/// Copies `[cut_at, nonzero_end)` to a `.broken` file, then zeroes the segment from
/// `cut_at` (keeping its preallocated length) and syncs it.
#[allow(clippy::too_many_arguments)]
fn cut_tail(
    fs: &dyn FileSystem,
    dir: &Path,
    file_name: &str,
    file: &dyn FsFile,
    cut_at: u64,
    nonzero_end: u64,
    file_len: u64,
    reason: String,
) -> Result<TailCut, LogError> {
    let len = usize::try_from(nonzero_end - cut_at)
        .map_err(|_| LogError::Corrupt(format!("{file_name}: tail too large to copy")))?;
    let mut cut = vec![0u8; len];
    file.read_at(&mut cut, cut_at)?;
    let broken_file = format!("{file_name}.{cut_at:016x}{BROKEN_SUFFIX}");
    // The copy is durable before the original bytes are destroyed.
    write_file_durably(fs, dir, &broken_file, &cut)?;
    file.set_len(cut_at)?;
    file.allocate(file_len)?;
    file.sync_data()?;
    Ok(TailCut {
        file: file_name.to_string(),
        offset: cut_at,
        bytes_cut: len as u64,
        broken_file,
        reason,
    })
}
