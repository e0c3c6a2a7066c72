//! `keel wal verify PATH`: checks every segment header, every record CRC and the log's
//! index continuity. Exit 0 when clean; otherwise one `corrupt: <segment file> offset
//! <n>: <reason>` line per damaged place (or one `torn tail: ...` line) and exit 1.

use std::path::Path;

use super::check::{inspect, LogView, Verdict};
use super::{damage_text, WalDir};
use crate::error::{Result, Status};
use crate::output::{self, Out};

/// Runs the command.
pub fn run(path: &Path) -> Result<Status> {
    let wal = WalDir::open(path)?;
    let (verdict, records) = inspect(&wal)?;
    let segments = wal.listing.segments.len();
    let mut out = Out::stdout();
    let status = match verdict {
        Verdict::Clean(log) => {
            out.line(format!(
                "ok: {segments} segment(s), {records} records, {}, no damage",
                entries_text(&log)
            ))?;
            Status::Ok
        }
        Verdict::TornTail {
            file,
            offset,
            bytes,
            reason,
            log,
        } => {
            out.line(format!(
                "torn tail: {file} offset {offset}: {reason} (the last complete batch ends at \
                 offset {offset}; cutting the {bytes} bytes after it keeps {})",
                entries_text(&log)
            ))?;
            out.flush()?;
            output::warn(format!(
                "keel: the WAL ends in a torn write (a crash during an unsynced write, or \
                 garbage after the last record); run `keel wal repair {}` to cut it, keeping \
                 the cut bytes in a .broken file",
                path.display()
            ));
            Status::Damaged
        }
        Verdict::Corrupt(found) => {
            for d in &found {
                out.line(format!("corrupt: {}", damage_text(d)))?;
            }
            out.flush()?;
            output::warn(format!(
                "keel: the WAL in {} is damaged in {} place(s) that cannot be cut off safely, \
                 so `keel wal repair` will refuse; restore this node's data from a healthy \
                 replica (or copy the directory aside before salvaging it)",
                wal.dir.display(),
                found.len()
            ));
            Status::Damaged
        }
    };
    out.flush()?;
    Ok(status)
}

/// `entries 1..40` or `no entries (log starts after index 12)`.
pub fn entries_text(log: &LogView) -> String {
    if log.last_index < log.first_index {
        format!(
            "no entries (the log continues after index {})",
            log.last_index
        )
    } else {
        format!("entries {}..{}", log.first_index, log.last_index)
    }
}
