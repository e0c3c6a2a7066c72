//! `keel snapshot ls|verify PATH`: the snapshots in a node's `snap/` directory, each
//! checked end to end (chunk CRCs, trailer totals, whole-file checksum, and that the
//! header names the snapshot the file name says). Reads only; never renames a damaged
//! file `.broken` as `SnapshotStore::load_newest` does.

use std::path::{Path, PathBuf};

use keel_fs::StdFs;
use keel_snapshot::{list_snapshots, verify_file, SnapshotError, SnapshotId};

use crate::error::{CliError, Result, Status};
use crate::output::{self, Out};
use crate::path;

/// One snapshot file, checked.
#[derive(Debug)]
struct Checked {
    id: SnapshotId,
    file: String,
    size: u64,
    outcome: std::result::Result<Valid, String>,
}

/// What a valid snapshot holds.
#[derive(Debug)]
struct Valid {
    conf: String,
    data_bytes: u64,
    chunks: u64,
    checksum: u32,
}

/// The snapshot directory, its snapshots (newest first, each checked) and its other
/// files.
fn check_all(user_path: &Path) -> Result<(PathBuf, Vec<Checked>, Vec<String>)> {
    let dir = match path::snap_dir(user_path) {
        // A node's data directory whose node never stored a snapshot.
        Err(CliError::NoSnapshotDir(_)) if user_path.join("wal").is_dir() => {
            return Ok((user_path.join("snap"), Vec::new(), Vec::new()));
        }
        other => other?,
    };
    let fs = StdFs::shared();
    let ids = list_snapshots(fs.as_ref(), &dir)?;
    let mut checked = Vec::with_capacity(ids.len());
    for id in ids {
        let file = id.file_name();
        let path = dir.join(&file);
        let size = std::fs::metadata(&path)
            .map_err(|e| CliError::io(&path, e))?
            .len();
        let outcome = match verify_file(fs.as_ref(), &path) {
            Ok((header, _)) if SnapshotId::of(&header.metadata) != id => Err(format!(
                "header says term {} index {} but the file name says term {} index {}",
                header.metadata.term, header.metadata.index, id.term, id.index
            )),
            Ok((header, trailer)) => Ok(Valid {
                conf: output::conf_state(&header.metadata.conf_state),
                data_bytes: trailer.data_bytes,
                chunks: trailer.data_chunks,
                checksum: trailer.checksum,
            }),
            Err(SnapshotError::Damaged { reason, .. }) => Err(reason.to_string()),
            Err(e) if e.is_corruption() => Err(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        checked.push(Checked {
            id,
            file,
            size,
            outcome,
        });
    }
    let others = fs
        .list_dir(&dir)
        .map_err(|e| CliError::io(&dir, e))?
        .into_iter()
        .filter(|n| SnapshotId::parse(n).is_none())
        .collect();
    Ok((dir, checked, others))
}

/// What an extra file in the snapshot directory is.
fn other_file_note(name: &str) -> &'static str {
    if name.ends_with(".broken") {
        "a damaged snapshot set aside by the node"
    } else if name.ends_with(".partial") {
        "a snapshot transfer in progress"
    } else if name.ends_with(".tmp") {
        "an unfinished save, removed when the node starts"
    } else {
        "not a snapshot"
    }
}

/// `keel snapshot ls PATH`: one line per snapshot, newest first. Exit 0 whenever the
/// directory could be read (invalid snapshots are marked; `verify` judges).
pub fn ls(user_path: &Path) -> Result<Status> {
    let (dir, checked, others) = check_all(user_path)?;
    let mut out = Out::stdout();
    if checked.is_empty() {
        out.line(format!("no snapshots in {}", dir.display()))?;
    } else {
        out.line(format!(
            "{:>6} {:>10} {:>12}  {:<8} {:<37} CONF STATE",
            "TERM", "INDEX", "SIZE", "STATUS", "FILE"
        ))?;
        for c in &checked {
            let (status, conf) = match &c.outcome {
                Ok(v) => ("valid".to_string(), v.conf.clone()),
                Err(reason) => ("INVALID".to_string(), format!("- ({reason})")),
            };
            out.line(format!(
                "{:>6} {:>10} {:>12}  {:<8} {:<37} {conf}",
                c.id.term, c.id.index, c.size, status, c.file
            ))?;
        }
    }
    for name in &others {
        out.line(format!("other file: {name} ({})", other_file_note(name)))?;
    }
    out.flush()?;
    Ok(Status::Ok)
}

/// `keel snapshot verify PATH`: `ok: ...` or `corrupt: <file>: <reason>` per snapshot;
/// exit 1 if any is damaged.
pub fn verify(user_path: &Path) -> Result<Status> {
    let (dir, checked, _) = check_all(user_path)?;
    let mut out = Out::stdout();
    if checked.is_empty() {
        out.line(format!(
            "no snapshots in {}: nothing to verify",
            dir.display()
        ))?;
    }
    let mut bad = 0;
    for c in &checked {
        match &c.outcome {
            Ok(v) => out.line(format!(
                "ok: {} (term {}, index {}, {} data bytes in {} chunk(s), checksum {:#010x})",
                c.file, c.id.term, c.id.index, v.data_bytes, v.chunks, v.checksum
            ))?,
            Err(reason) => {
                bad += 1;
                out.line(format!("corrupt: {}: {reason}", c.file))?;
            }
        }
    }
    out.flush()?;
    if bad == 0 {
        return Ok(Status::Ok);
    }
    output::warn(format!(
        "keel: {bad} snapshot(s) in {} are damaged; a node skips them and loads the newest \
         valid one (and a leader sends its own to a follower that needs one), so delete or \
         move the damaged files aside once you no longer need them for inspection",
        dir.display()
    ));
    Ok(Status::Damaged)
}
