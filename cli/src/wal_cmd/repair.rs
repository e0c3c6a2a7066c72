//! `keel wal repair PATH`: cuts a torn tail of the last segment, keeping the cut bytes
//! in a `.broken` file next to it, and refuses (exit 1) any other damage.
//!
//! The cut is made by the WAL's own recovery ([`keel_wal::Wal::open`] with
//! [`keel_wal::RecoveryMode::TolerateTailCorruption`]), the same code a node runs when it
//! starts; a dry run through the copy-on-write overlay decides first, so damage that
//! recovery would refuse is never half-repaired.
//!
//! Repair holds the data directory's lock (`DATA_DIR/LOCK`, see [`keel_engine::data_dir`])
//! from before the dry run to the end, so it refuses (exit 2) to run beside a live node,
//! and a node cannot start while it runs. The data directory is the parent of the WAL
//! directory when that is named `wal/`, as a node lays it out; a WAL directory by
//! another name is not a node's, and nothing is locked for it. Nor is anything locked
//! (or written outside `wal/`) when the data directory has no `LOCK` file: no node has
//! run there since nodes began to lock, so none is running.

use std::path::Path;

use keel_fs::StdFs;
use keel_wal::{LogError, Wal};

use super::check::{inspect, recovery_options, view, Verdict};
use super::verify::entries_text;
use super::{damage_text, log_error, WalDir};
use crate::error::{CliError, Result, Status};
use crate::output::{self, Out};

/// Runs the command.
pub fn run(path: &Path) -> Result<Status> {
    let wal_dir = WalDir::open(path)?;
    let _lock = lock_data_dir(&wal_dir.dir)?;
    let (verdict, _) = inspect(&wal_dir)?;
    let mut out = Out::stdout();
    match verdict {
        Verdict::Clean(log) => {
            out.line(format!("clean: nothing to repair ({})", entries_text(&log)))?;
            out.flush()?;
            Ok(Status::Ok)
        }
        Verdict::Corrupt(found) => {
            for d in &found {
                out.line(format!("corrupt: {}", damage_text(d)))?;
            }
            out.flush()?;
            refuse(&wal_dir, found.len());
            Ok(Status::Damaged)
        }
        Verdict::TornTail { .. } => cut(&wal_dir, &mut out),
    }
}

fn cut(wal_dir: &WalDir, out: &mut Out) -> Result<Status> {
    let wal = match Wal::open(StdFs::shared(), &wal_dir.dir, recovery_options()) {
        Ok(wal) => wal,
        Err(LogError::Corrupt(text)) => {
            // The files changed since the dry run (is the node still running?).
            out.line(format!("corrupt: {text}"))?;
            out.flush()?;
            refuse(wal_dir, 1);
            return Ok(Status::Damaged);
        }
        Err(e) => return Err(log_error(&wal_dir.dir, e)),
    };
    let log = view(&wal);
    match &wal.recovery_report().tail_cut {
        Some(cut) => {
            out.line(format!(
                "cut torn tail: {} offset {}: {} bytes moved to {}",
                cut.file, cut.offset, cut.bytes_cut, cut.broken_file
            ))?;
            out.line(format!(
                "the log now holds {}; hard state {}",
                entries_text(&log),
                output::hard_state(&log.hard_state)
            ))?;
        }
        None => out.line(format!("clean: nothing to repair ({})", entries_text(&log)))?,
    }
    wal.close().map_err(|e| log_error(&wal_dir.dir, e))?;
    out.flush()?;
    Ok(Status::Ok)
}

fn refuse(wal_dir: &WalDir, places: usize) {
    output::warn(format!(
        "keel: refusing to repair {}: {places} damaged place(s) are not a torn tail of the \
         last segment, and cutting there would drop records that had been synced; restore \
         this node's data from a healthy replica (copy the directory aside first)",
        wal_dir.dir.display()
    ));
}

/// Locks the data directory holding `wal_dir`, as a node does; `None` when `wal_dir`
/// is not a node's `wal/` directory or its data directory has no `LOCK` file.
fn lock_data_dir(wal_dir: &Path) -> Result<Option<keel_engine::data_dir::DataDirLock>> {
    if wal_dir.file_name().is_none_or(|n| n != "wal") {
        return Ok(None);
    }
    let Some(data_dir) = wal_dir.parent() else {
        return Ok(None);
    };
    keel_engine::data_dir::lock_if_present(&StdFs, data_dir).map_err(|source| CliError::Engine {
        context: format!("refusing to repair {}", wal_dir.display()),
        source,
    })
}
