//! `keel wal stat PATH`: segments with their sizes and index ranges, terms seen, entry
//! counts and bytes by type, preallocated-but-unused space, the hard state, the latest
//! snapshot marker, and what opening the log would do. Exit 0 whenever the WAL could
//! be read (damage is summarized; `keel wal verify` judges it).

use std::collections::BTreeMap;
use std::path::Path;

use keel_raft::{EntryType, HardState, SnapshotMetadata};
use keel_wal::{Damage, ScanEvent, SegmentScan, WalRecord};

use super::check::{dry_run, Recovery};
use super::verify::entries_text;
use super::{damage_text, WalDir};
use crate::error::{Result, Status};
use crate::output::{self, Out};

/// Terms listed one by one before the list is cut.
const TERMS_LISTED: usize = 12;

#[derive(Debug)]
struct SegmentStat {
    name: String,
    file_len: u64,
    data_end: u64,
    records: u64,
    damaged: usize,
    header_ok: bool,
    first: Option<u64>,
    last: Option<u64>,
}

/// Count and bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

#[derive(Debug, Default)]
struct Totals {
    segments: Vec<SegmentStat>,
    /// Entries by type: data bytes.
    entries: BTreeMap<&'static str, Tally>,
    /// Records by type: bytes on disk, frame included.
    records: BTreeMap<&'static str, Tally>,
    terms: BTreeMap<u64, u64>,
    first: Option<u64>,
    last: Option<u64>,
    hard_state: Option<HardState>,
    snapshot: Option<SnapshotMetadata>,
    damage: Vec<Damage>,
}

impl Totals {
    fn segment(&mut self, gap: Option<Damage>, scan: SegmentScan) {
        self.damage.extend(gap);
        let mut seg = SegmentStat {
            name: scan.name.to_string(),
            file_len: scan.file_len,
            data_end: scan.nonzero_end,
            records: 0,
            damaged: 0,
            header_ok: scan.header.is_some(),
            first: None,
            last: None,
        };
        for event in scan.events {
            let r = match event {
                ScanEvent::Damage(d) => {
                    seg.damaged += 1;
                    self.damage.push(d);
                    continue;
                }
                ScanEvent::Record(r) => r,
            };
            seg.records += 1;
            seg.data_end = seg.data_end.max(r.end_offset);
            let kind = match &r.record {
                WalRecord::Entries(entries) => {
                    for e in entries {
                        let kind = match e.entry_type {
                            EntryType::Normal => "normal",
                            EntryType::ConfChange => "conf",
                            EntryType::ConfChangeV2 => "conf-v2",
                        };
                        self.entries
                            .entry(kind)
                            .or_default()
                            .add(e.data.len() as u64);
                        *self.terms.entry(e.term).or_default() += 1;
                        for (lo, hi) in [
                            (&mut seg.first, &mut seg.last),
                            (&mut self.first, &mut self.last),
                        ] {
                            *lo = Some(lo.map_or(e.index, |v| v.min(e.index)));
                            *hi = Some(hi.map_or(e.index, |v| v.max(e.index)));
                        }
                    }
                    "entries"
                }
                WalRecord::HardState(hs) => {
                    self.hard_state = Some(*hs);
                    "state"
                }
                WalRecord::SnapshotMarker(meta) => {
                    if self.snapshot.as_ref().is_none_or(|s| meta.index >= s.index) {
                        self.snapshot = Some(meta.clone());
                    }
                    "snapshot"
                }
                WalRecord::Truncate { .. } => "truncate",
                WalRecord::Compact { .. } => "compact",
                WalRecord::Commit { .. } => "commit",
            };
            self.records
                .entry(kind)
                .or_default()
                .add(r.end_offset - r.offset);
        }
        seg.data_end = seg.data_end.min(seg.file_len);
        self.segments.push(seg);
    }
}

/// Runs the command.
pub fn run(path: &Path) -> Result<Status> {
    let wal = WalDir::open(path)?;
    let mut t = Totals::default();
    wal.scan_each(|gap, scan| {
        t.segment(gap, scan);
        Ok(())
    })?;
    let first = wal
        .listing
        .segments
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let recovery = dry_run(&wal.dir, &first)?;

    let mut out = Out::stdout();
    let on_disk: u64 = t.segments.iter().map(|s| s.file_len).sum();
    let used: u64 = t.segments.iter().map(|s| s.data_end).sum();
    out.line(format!("WAL: {}", wal.dir.display()))?;
    out.line(format!(
        "segments: {}, {on_disk} bytes on disk: {used} used, {} preallocated but unused",
        t.segments.len(),
        on_disk - used
    ))?;
    out.line("")?;
    out.line(format!(
        "{:<37} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}  STATUS",
        "SEGMENT", "SIZE", "USED", "UNUSED", "FIRST", "LAST", "RECORDS"
    ))?;
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    for s in &t.segments {
        let status = match (s.header_ok, s.damaged) {
            (true, 0) => "ok".to_string(),
            (false, n) => format!("bad header, {n} damaged place(s)"),
            (true, n) => format!("{n} damaged place(s)"),
        };
        out.line(format!(
            "{:<37} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}  {status}",
            s.name,
            s.file_len,
            s.data_end,
            s.file_len - s.data_end,
            opt(s.first),
            opt(s.last),
            s.records
        ))?;
    }
    out.line("")?;

    let entry_count: u64 = t.entries.values().map(|e| e.count).sum();
    out.line(match (t.first, t.last) {
        (Some(a), Some(b)) => format!("entries: {entry_count} written, index {a}..{b}"),
        _ => "entries: none written".to_string(),
    })?;
    for kind in ["normal", "conf", "conf-v2"] {
        let e = t.entries.get(kind).copied().unwrap_or_default();
        out.line(format!(
            "  {kind:<9} {:>10} entries {:>12} bytes of data",
            e.count, e.bytes
        ))?;
    }
    out.line("records (bytes on disk, frame headers and padding included):")?;
    for kind in [
        "entries", "state", "snapshot", "truncate", "compact", "commit",
    ] {
        let r = t.records.get(kind).copied().unwrap_or_default();
        out.line(format!(
            "  {kind:<9} {:>10} records {:>12} bytes",
            r.count, r.bytes
        ))?;
    }
    out.line(terms_text(&t.terms))?;

    let recovered = match &recovery {
        Recovery::Clean(log) | Recovery::TornTail { log, .. } => Some(log),
        Recovery::Fails(_) => None,
    };
    out.line(match (recovered, &t.hard_state) {
        (Some(log), _) => format!("hard state: {}", output::hard_state(&log.hard_state)),
        (None, Some(hs)) => format!("hard state (last written): {}", output::hard_state(hs)),
        (None, None) => "hard state: none".to_string(),
    })?;
    let snapshot = match recovered {
        Some(log) => log.snapshot.as_ref(),
        None => t.snapshot.as_ref(),
    };
    out.line(match snapshot {
        Some(m) => format!(
            "latest snapshot marker: index={} term={} {}",
            m.index,
            m.term,
            output::conf_state(&m.conf_state)
        ),
        None => "latest snapshot marker: none".to_string(),
    })?;
    out.line(match &recovery {
        Recovery::Clean(log) => format!("on open: {}", entries_text(log)),
        Recovery::TornTail { cut, log } => format!(
            "on open: a torn tail would be cut ({} offset {}, {} bytes; `keel wal repair` \
             does it), leaving {}",
            cut.file,
            cut.offset,
            cut.bytes_cut,
            entries_text(log)
        ),
        Recovery::Fails(d) => format!("on open: recovery refuses: {}", damage_text(d)),
    })?;
    let l = &wal.listing;
    for (names, what) in [
        (&l.broken, "bytes cut from a torn tail"),
        (&l.preallocated, "preallocated, not yet in use"),
        (&l.other, "not part of the WAL"),
    ] {
        for name in names {
            out.line(format!("other file: {name} ({what})"))?;
        }
    }
    out.line(if t.damage.is_empty() {
        "damage: none".to_string()
    } else {
        format!(
            "damage: {} place(s), first at {}; run `keel wal verify {}` for the verdict",
            t.damage.len(),
            damage_text(&t.damage[0]),
            path.display()
        )
    })?;
    out.flush()?;
    Ok(Status::Ok)
}

/// `terms seen: 1-3 (entries: 1:10 2:30 3:2)`, cut after [`TERMS_LISTED`] terms.
fn terms_text(terms: &BTreeMap<u64, u64>) -> String {
    if terms.is_empty() {
        return "terms seen: none".to_string();
    }
    let mut per_term: Vec<String> = terms
        .iter()
        .take(TERMS_LISTED)
        .map(|(term, n)| format!("{term}:{n}"))
        .collect();
    if terms.len() > TERMS_LISTED {
        per_term.push(format!("... {} more", terms.len() - TERMS_LISTED));
    }
    format!(
        "terms seen: {} (entries per term: {})",
        output::ranges(terms.keys().copied()),
        per_term.join(" ")
    )
}
