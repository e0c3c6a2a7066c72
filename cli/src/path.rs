//! Finding the WAL or snapshot directory a user meant: PATH may be a node's data
//! directory (holding `wal/` and `snap/`) or one of those directories itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// The WAL directory for `path`.
pub fn wal_dir(path: &Path) -> Result<PathBuf> {
    resolve(path, "wal", |name| {
        keel_wal::SegmentName::parse(name).is_some()
    })
    .and_then(|found| found.ok_or_else(|| CliError::NoWal(path.to_path_buf())))
}

/// The snapshot directory for `path`.
pub fn snap_dir(path: &Path) -> Result<PathBuf> {
    resolve(path, "snap", |name| name.contains(".snap"))
        .and_then(|found| found.ok_or_else(|| CliError::NoSnapshotDir(path.to_path_buf())))
}

/// `path/<sub>` if it is a directory; `path` itself if it is named `<sub>` or holds a
/// file `looks_right` accepts; `None` otherwise.
fn resolve(
    path: &Path,
    sub: &'static str,
    looks_right: impl Fn(&str) -> bool,
) -> Result<Option<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CliError::NotFound(path.to_path_buf()),
        _ => CliError::io(path, e),
    })?;
    if !meta.is_dir() {
        return Err(CliError::NotADirectory(path.to_path_buf(), sub));
    }
    let nested = path.join(sub);
    if nested.is_dir() {
        return Ok(Some(nested));
    }
    if path.file_name().is_some_and(|n| n == sub) {
        return Ok(Some(path.to_path_buf()));
    }
    let entries = fs::read_dir(path).map_err(|e| CliError::io(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(path, e))?;
        if entry.file_name().to_str().is_some_and(&looks_right) {
            return Ok(Some(path.to_path_buf()));
        }
    }
    Ok(None)
}
