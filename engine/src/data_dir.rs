//! The data directory's lock: one process per data directory.
//!
//! Two nodes writing one WAL and one snapshot directory would each take the other's
//! files for their own and destroy the log; `keel wal repair` beside a live node would
//! cut records the node just synced. So a node holds an exclusive `flock` on
//! `DATA_DIR/LOCK` from [`Db::open`](crate::Db::open) until it is closed (or its
//! last handle dropped): once its threads are joined and its log's background work
//! is stopped, so handles that outlive `close` write nothing. `keel wal repair` takes
//! the same lock; read-only tools take none. A process that ends, however it ends,
//! drops the lock with it.
//!
//! The lock goes through the node's [`FileSystem`]: on the real one it is a `flock`,
//! which the kernel releases when the process ends however it ends (so a crashed node
//! leaves no stale lock to clean up); a simulated file system has no other processes
//! and locks nothing.

use std::io;
use std::path::{Path, PathBuf};

use keel_fs::{FileLock, FileSystem};

use crate::error::{Error, Result};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a data directory; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: FileLock,
}

/// Locks the data directory `dir` (which must exist), creating its `LOCK` file if
/// missing. Fails with [`Error::DataDirLocked`] if another process, or another open
/// node in this one, holds it.
pub fn lock(fs: &dyn FileSystem, dir: &Path) -> Result<DataDirLock> {
    match fs.lock_file(&dir.join(LOCK_FILE)) {
        Ok(lock) => Ok(DataDirLock { _lock: lock }),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(Error::DataDirLocked { dir: shown(dir) })
        }
        Err(e) => Err(Error::Io(e)),
    }
}

/// Like [`lock`], but only if `dir` has a `LOCK` file already; `None` (nothing
/// locked, nothing written) if not. For tools that must not run beside a node but
/// must not write into a directory no node has run on: a node creates the file when
/// it opens, so a live node's directory always has one.
pub fn lock_if_present(fs: &dyn FileSystem, dir: &Path) -> Result<Option<DataDirLock>> {
    if !fs.exists(&dir.join(LOCK_FILE))? {
        return Ok(None);
    }
    lock(fs, dir).map(Some)
}

// A relative path's parent can be "": name it as the working directory.
fn shown(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    }
}
