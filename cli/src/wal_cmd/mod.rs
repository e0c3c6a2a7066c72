//! `keel wal ...`: the WAL inspection commands, and what they share: opening a WAL
//! directory read-only and scanning its segments in order.

pub mod check;
pub mod dump;
mod dump_rows;
mod overlay;
pub mod repair;
pub mod stat;
pub mod verify;

use std::path::{Path, PathBuf};

use keel_fs::StdFs;
use keel_wal::{Damage, SegmentName, SegmentScan, WalDirListing, WalScanner};

use crate::error::{CliError, Result};
use crate::path;

/// A WAL directory opened for reading: no file is opened for writing, no lock taken.
#[derive(Debug)]
pub struct WalDir {
    /// The directory holding the segments.
    pub dir: PathBuf,
    /// Its files, classified.
    pub listing: WalDirListing,
    scanner: WalScanner,
}

impl WalDir {
    /// Finds the WAL at the user's `path` and lists it; fails if it holds no segment.
    pub fn open(user_path: &Path) -> Result<WalDir> {
        let dir = path::wal_dir(user_path)?;
        let scanner = WalScanner::new(StdFs::shared(), &dir);
        let listing = scanner.list().map_err(|e| log_error(&dir, e))?;
        if listing.segments.is_empty() {
            return Err(CliError::NoSegments(dir));
        }
        Ok(WalDir {
            dir,
            listing,
            scanner,
        })
    }

    /// Scans the segments in log order, one at a time (a segment's records are in
    /// memory only while `f` looks at them). A gap in the segment sequence comes as
    /// damage before the segment after it.
    pub fn scan_each(
        &self,
        mut f: impl FnMut(Option<Damage>, SegmentScan) -> Result<()>,
    ) -> Result<()> {
        let mut prev: Option<SegmentName> = None;
        for &name in &self.listing.segments {
            let gap = prev.and_then(|p| sequence_gap(p, name));
            let scan = self
                .scanner
                .scan(name)
                .map_err(|e| log_error(&self.dir.join(name.to_string()), e))?;
            f(gap, scan)?;
            prev = Some(name);
        }
        Ok(())
    }
}

/// Damage for a jump in the segment sequence between `prev` and `next`, if any.
pub fn sequence_gap(prev: SegmentName, next: SegmentName) -> Option<Damage> {
    (next.seq != prev.seq.wrapping_add(1)).then(|| Damage {
        file: next.to_string(),
        offset: 0,
        reason: format!(
            "segment sequence jumps from {} ({prev}) to {}: segment(s) missing",
            prev.seq, next.seq
        ),
    })
}

/// `<segment file> offset <n>: <reason>`, as `verify` prints damage.
pub fn damage_text(d: &Damage) -> String {
    format!("{} offset {}: {}", d.file, d.offset, d.reason)
}

/// Parses the WAL library's `"<file> at byte offset <n>: <reason>"` back into damage.
pub fn parse_damage(text: &str) -> Option<Damage> {
    let (file, rest) = text.split_once(" at byte offset ")?;
    let (offset, reason) = rest.split_once(": ")?;
    Some(Damage {
        file: file.to_string(),
        offset: offset.parse().ok()?,
        reason: reason.to_string(),
    })
}

/// Turns a WAL library error into a command error naming `path`.
pub fn log_error(path: &Path, e: keel_wal::LogError) -> CliError {
    match e {
        keel_wal::LogError::Io(source) => CliError::io(path, source),
        other => CliError::Log {
            context: format!("cannot read the WAL in {}", path.display()),
            source: other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_text_round_trips_through_the_library_wording() {
        let d = Damage {
            file: "0000000000000001-0000000000000001.wal".into(),
            offset: 4096,
            reason: "record CRC mismatch: a: b".into(),
        };
        assert_eq!(parse_damage(&d.to_string()), Some(d.clone()));
        assert_eq!(
            damage_text(&d),
            "0000000000000001-0000000000000001.wal offset 4096: record CRC mismatch: a: b"
        );
        assert_eq!(parse_damage("entries from 5 are missing"), None);
    }

    #[test]
    fn only_jumps_in_the_sequence_are_gaps() {
        let name = |seq, first_index| SegmentName { seq, first_index };
        assert_eq!(sequence_gap(name(1, 1), name(2, 50)), None);
        let gap = sequence_gap(name(1, 1), name(3, 90)).expect("a gap");
        assert_eq!(gap.file, name(3, 90).to_string());
        assert_eq!(gap.offset, 0);
        assert!(gap.reason.contains("missing"));
        assert!(sequence_gap(name(u64::MAX, 1), name(u64::MAX, 2)).is_some());
    }
}
