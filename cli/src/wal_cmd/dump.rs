//! `keel wal dump PATH [--from I] [--to I] [--type ...] [--json]`: every record in log
//! order, as a table or one JSON object a line, then a summary.
//!
//! The dump is raw: it shows records as written, including ones a later record
//! replaced or truncated, batches a torn tail left without their commit, and — with
//! a `damage` row where it happened — everything the scanner could still read past
//! damage (it resynchronizes at the next intact frame).
//!
//! JSON rows: `segment, offset, type, term, index, len` on every row (`null` where a
//! record has no such value); `offset` is where the record's frame starts (the entries
//! of one record share it) and `len` the payload size (for entries, of the entry's
//! data). Entries add `entry_type` and `data`; states `vote, commit`; snapshot markers
//! `conf_state`; commits `records, synced_through`; damage rows `reason, resumed_at`.
//! The summary row has `type: "summary"` and no `segment`.

use std::path::PathBuf;

use keel_raft::{Entry, EntryType, HardState, SnapshotMetadata};
use keel_wal::{Damage, ScanEvent, ScannedRecord, SegmentScan, WalRecord};

pub use super::dump_rows::TypeFilter;
use super::dump_rows::{
    Counts, DamageRow, JsonDamage, JsonHardState, JsonSnapshot, RecordRow, Summary,
};
use super::{damage_text, WalDir};
use crate::error::{Result, Status};
use crate::output::{self, Out};

/// What to dump.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The user's PATH.
    pub path: PathBuf,
    /// Lowest index shown.
    pub from: Option<u64>,
    /// Highest index shown.
    pub to: Option<u64>,
    /// Types shown (all when empty).
    pub types: Vec<TypeFilter>,
    /// JSON lines instead of a table.
    pub json: bool,
}

impl DumpOptions {
    fn shows(&self, category: TypeFilter, index: Option<u64>) -> bool {
        if !self.types.is_empty() && !self.types.contains(&category) {
            return false;
        }
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        index.is_some_and(|i| {
            self.from.is_none_or(|from| i >= from) && self.to.is_none_or(|to| i <= to)
        })
    }
}

/// Everything the dump has seen so far.
struct Dumper<'o> {
    opts: &'o DumpOptions,
    out: Out,
    counts: Counts,
    first_index: Option<u64>,
    last_index: Option<u64>,
    hard_state: Option<HardState>,
    snapshot: Option<SnapshotMetadata>,
    damage: Vec<JsonDamage>,
}

/// Runs the command. Exit 0 whenever the WAL could be read, damaged or not (damage
/// is in the output; `keel wal verify` is the command that judges).
pub fn run(opts: &DumpOptions) -> Result<Status> {
    let wal = WalDir::open(&opts.path)?;
    let mut d = Dumper {
        opts,
        out: Out::stdout(),
        counts: Counts::default(),
        first_index: None,
        last_index: None,
        hard_state: None,
        snapshot: None,
        damage: Vec::new(),
    };
    if !opts.json {
        d.out.line(format!(
            "{:<37} {:>9} {:<8} {:>6} {:>10} {:>7}  DATA",
            "SEGMENT", "OFFSET", "TYPE", "TERM", "INDEX", "SIZE"
        ))?;
    }
    wal.scan_each(|gap, scan| d.segment(gap, scan))?;
    d.finish(&wal)?;
    Ok(Status::Ok)
}

impl Dumper<'_> {
    fn segment(&mut self, gap: Option<Damage>, scan: SegmentScan) -> Result<()> {
        let file = scan.name.to_string();
        let first_record = |from: usize| {
            scan.events[from..].iter().find_map(|e| match e {
                ScanEvent::Record(r) => Some(r.offset),
                ScanEvent::Damage(_) => None,
            })
        };
        if let Some(g) = gap {
            self.damage(&g, first_record(0))?;
        }
        for (k, event) in scan.events.iter().enumerate() {
            match event {
                ScanEvent::Damage(dmg) => self.damage(dmg, first_record(k + 1))?,
                ScanEvent::Record(r) => self.record(&file, r)?,
            }
        }
        Ok(())
    }

    /// Emits the rows of one intact record (one per entry for an entries record).
    fn record(&mut self, file: &str, r: &ScannedRecord) -> Result<()> {
        let row = |kind| RecordRow::blank(file, r.offset, kind, r.payload_len);
        match &r.record {
            WalRecord::Entries(entries) => {
                for e in entries {
                    self.entry(file, r.offset, e)?;
                }
            }
            WalRecord::HardState(hs) => {
                self.hard_state = Some(*hs);
                if self.opts.shows(TypeFilter::State, None) {
                    let mut row = row("state");
                    row.term = Some(hs.term);
                    row.vote = Some(hs.vote);
                    row.commit = Some(hs.commit);
                    row.detail = output::hard_state(hs);
                    self.emit(TypeFilter::State, &row)?;
                }
            }
            WalRecord::SnapshotMarker(meta) => {
                if self.snapshot.as_ref().is_none_or(|s| meta.index >= s.index) {
                    self.snapshot = Some(meta.clone());
                }
                if self.opts.shows(TypeFilter::Snapshot, Some(meta.index)) {
                    let mut row = row("snapshot");
                    row.term = Some(meta.term);
                    row.index = Some(meta.index);
                    row.conf_state = Some((&meta.conf_state).into());
                    row.detail = output::conf_state(&meta.conf_state);
                    self.emit(TypeFilter::Snapshot, &row)?;
                }
            }
            WalRecord::Truncate { from_index } => {
                if self.opts.shows(TypeFilter::Truncate, Some(*from_index)) {
                    let mut row = row("truncate");
                    row.index = Some(*from_index);
                    row.detail = format!("entries from index {from_index} removed");
                    self.emit(TypeFilter::Truncate, &row)?;
                }
            }
            WalRecord::Compact { index, term } => {
                if self.opts.shows(TypeFilter::Compact, Some(*index)) {
                    let mut row = row("compact");
                    row.term = Some(*term);
                    row.index = Some(*index);
                    row.detail = format!("entries through index {index} compacted");
                    self.emit(TypeFilter::Compact, &row)?;
                }
            }
            WalRecord::Commit {
                records,
                synced_through,
            } => {
                if self.opts.shows(TypeFilter::Commit, None) {
                    let mut row = row("commit");
                    row.records = Some(*records);
                    row.synced_through = Some(*synced_through);
                    row.detail = format!(
                        "closes a batch of {records} record(s); synced through {synced_through}"
                    );
                    self.emit(TypeFilter::Commit, &row)?;
                }
            }
        }
        Ok(())
    }

    /// Emits one entry of an entries record starting at `offset`.
    fn entry(&mut self, file: &str, offset: u64, e: &Entry) -> Result<()> {
        let (category, label, entry_type) = match e.entry_type {
            EntryType::Normal => (TypeFilter::Normal, "normal", "normal"),
            EntryType::ConfChange => (TypeFilter::Conf, "conf", "conf_change"),
            EntryType::ConfChangeV2 => (TypeFilter::Conf, "conf-v2", "conf_change_v2"),
        };
        if !self.opts.shows(category, Some(e.index)) {
            return Ok(());
        }
        let preview = output::entry_preview(e.entry_type, &e.data);
        let mut row = RecordRow::blank(file, offset, "entry", e.data.len() as u64);
        row.term = Some(e.term);
        row.index = Some(e.index);
        row.entry_type = Some(entry_type);
        row.detail = preview.clone();
        row.data = Some(preview);
        row.label = label;
        self.first_index = Some(self.first_index.map_or(e.index, |f| f.min(e.index)));
        self.last_index = Some(self.last_index.map_or(e.index, |l| l.max(e.index)));
        self.emit(category, &row)
    }

    fn emit(&mut self, category: TypeFilter, row: &RecordRow<'_>) -> Result<()> {
        self.counts.add(category);
        if self.opts.json {
            return self.out.json(row);
        }
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        self.out.line(format!(
            "{:<37} {:>9} {:<8} {:>6} {:>10} {:>7}  {}",
            row.segment,
            row.offset,
            row.label,
            opt(row.term),
            opt(row.index),
            row.len,
            row.detail
        ))
    }

    fn damage(&mut self, d: &Damage, resumed_at: Option<u64>) -> Result<()> {
        self.counts.damage += 1;
        self.damage.push(JsonDamage {
            segment: d.file.clone(),
            offset: d.offset,
            reason: d.reason.clone(),
            resumed_at,
        });
        if self.opts.json {
            return self.out.json(&DamageRow {
                segment: &d.file,
                offset: d.offset,
                kind: "damage",
                term: None,
                index: None,
                len: None,
                reason: &d.reason,
                resumed_at,
            });
        }
        self.out.line(format!(
            "{:<37} {:>9} {:<8} {:>6} {:>10} {:>7}  {} ({})",
            d.file,
            d.offset,
            "DAMAGE",
            "-",
            "-",
            "-",
            d.reason,
            resumed_text(resumed_at)
        ))
    }

    fn finish(mut self, wal: &WalDir) -> Result<()> {
        let summary = Summary {
            kind: "summary",
            dir: wal.dir.display().to_string(),
            segments: wal.listing.segments.len(),
            records: self.counts.shown(),
            first_index: self.first_index,
            last_index: self.last_index,
            hard_state: self.hard_state.map(|hs| JsonHardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            }),
            snapshot: self.snapshot.as_ref().map(|m| JsonSnapshot {
                index: m.index,
                term: m.term,
                conf_state: (&m.conf_state).into(),
            }),
            complete: self.damage.is_empty(),
            damage: std::mem::take(&mut self.damage),
            counts: std::mem::take(&mut self.counts),
        };
        if self.opts.json {
            self.out.json(&summary)?;
        } else {
            self.table_summary(&summary)?;
        }
        self.out.flush()?;
        if !summary.damage.is_empty() {
            output::warn(format!(
                "keel: warning: the WAL is damaged in {} place(s); the dump read past them \
                 where it could (see the damage rows); run `keel wal verify {}` for the verdict",
                summary.damage.len(),
                self.opts.path.display()
            ));
        }
        Ok(())
    }

    fn table_summary(&mut self, s: &Summary) -> Result<()> {
        let c = &s.counts;
        self.out.line("")?;
        self.out.line(format!(
            "summary: {} segment(s) in {}; {} record(s) shown: normal {}, conf {}, state {}, \
             snapshot {}, truncate {}, compact {}, commit {}",
            s.segments,
            s.dir,
            s.records,
            c.normal,
            c.conf,
            c.state,
            c.snapshot,
            c.truncate,
            c.compact,
            c.commit
        ))?;
        self.out.line(match (s.first_index, s.last_index) {
            (Some(a), Some(b)) => format!("entries shown: index {a}..{b}"),
            _ => "entries shown: none".to_string(),
        })?;
        self.out.line(match &self.hard_state {
            Some(hs) => format!("last hard state: {}", output::hard_state(hs)),
            None => "last hard state: none".to_string(),
        })?;
        self.out.line(match &self.snapshot {
            Some(m) => format!(
                "latest snapshot marker: index={} term={} {}",
                m.index,
                m.term,
                output::conf_state(&m.conf_state)
            ),
            None => "latest snapshot marker: none".to_string(),
        })?;
        if s.damage.is_empty() {
            self.out.line("damage: none")?;
        }
        for d in &s.damage {
            let dmg = Damage {
                file: d.segment.clone(),
                offset: d.offset,
                reason: d.reason.clone(),
            };
            self.out.line(format!(
                "damage: {} ({})",
                damage_text(&dmg),
                resumed_text(d.resumed_at)
            ))?;
        }
        Ok(())
    }
}

fn resumed_text(resumed_at: Option<u64>) -> String {
    match resumed_at {
        Some(at) => format!("reading resumed at offset {at}"),
        None => "reading stopped: nothing intact after it in this segment".to_string(),
    }
}
