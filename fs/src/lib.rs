//! keel's file-system seam.
//!
//! Owns: the [`FileSystem`] and [`FsFile`] traits through which keel's own storage code
//! reads and writes every byte it keeps on disk (the WAL, the snapshot store, a node's
//! data directory and its lock; RocksDB, behind the `rocksdb` feature, does its own
//! I/O); their implementation over the real file system ([`StdFs`]: `pread` and
//! `pwrite`, `fdatasync`, `fallocate`, memory maps, `flock`); a simulated file system
//! ([`SimFs`]) that loses unsynced data on a [`crash`](SimFs::crash), tears writes, flips
//! bytes and fails writes or syncs on demand, so the crash tests of every crate above it
//! run in one process and replay from a seed; and [`write_file_durably`] (write a
//! temporary file, sync it, rename it into place, sync the directory).
//!
//! Must not: depend on any other keel crate or know any of keel's file formats (`wal`,
//! `snapshot` and the engine all build on it); retry or hide a failed write or sync (the
//! caller decides what a failure means); or start threads.
//!
//! The traits are object-safe (`Arc<dyn FileSystem>`) so callers don't become generic
//! over the file system. Paths are ordinary `Path`s; the simulated file system treats
//! them as plain keys.

#![deny(missing_docs)]

mod sim;
mod std_fs;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use sim::{CrashMode, SimFault, SimFs};
pub use std_fs::StdFs;

/// A file system holding files and directories. Directory mutations (create, rename,
/// remove) are only durable after [`sync_dir`](FileSystem::sync_dir) on the parent.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents. The new entries are not durable until
    /// their parents are synced; [`create_dir_all_durably`](Self::create_dir_all_durably)
    /// does both.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new, empty file open for reading and writing; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reading only (inspection tools use this so they can
    /// never modify a log).
    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the regular files in `dir`, sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Creates `dir` and its missing parents and makes their entries durable: a
    /// crash afterwards cannot lose a directory that files synced later rely on.
    /// Always syncs `dir`'s parent (an earlier run may have created `dir` and died
    /// before syncing it). This default does not know which levels already existed, so
    /// it syncs every ancestor; [`StdFs`] syncs only the parents of what it created.
    fn create_dir_all_durably(&self, dir: &Path) -> io::Result<()> {
        self.create_dir_all(dir)?;
        for parent in dir.ancestors().skip(1) {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Takes an exclusive lock on the file at `path` (created if missing), held until
    /// the returned [`FileLock`] is dropped. Fails with
    /// [`io::ErrorKind::WouldBlock`] if it is held already, by another process or by
    /// another open of it in this one. This default locks nothing: a simulated file
    /// system has no other processes to keep out.
    fn lock_file(&self, path: &Path) -> io::Result<FileLock> {
        let _ = path;
        Ok(FileLock { file: None })
    }

    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open_readonly(path)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::other("file too large to read into memory"))?;
        let mut buf = vec![0; len];
        file.read_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file. Offsets are absolute (`pread`/`pwrite` style), so one handle can be
/// shared between a writer and readers without a cursor.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` if the file is too short.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed. On error an
    /// unknown prefix of `buf` may have been written.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or zero-extends the file to `len_bytes`.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// Reserves space so the file is at least `len_bytes` long and writes below that
    /// cannot fail for lack of space. New bytes read as zero.
    fn allocate(&self, len_bytes: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// A read-only view of the file's first `len()` bytes (memory-mapped on a real file
    /// system). Bytes written later within that range are visible through the view.
    fn map_readonly(&self) -> io::Result<Arc<dyn ReadView>>;
}

/// A read-only window onto a file, fixed in length when it was made.
pub trait ReadView: Send + Sync + fmt::Debug {
    /// Length of the window in bytes.
    fn len(&self) -> u64;
    /// Whether the window is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The window as a slice, when it is memory-mapped (zero-copy reads).
    fn as_slice(&self) -> Option<&[u8]>;
    /// Fills `buf` from `offset`; fails if the range leaves the window.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let slice = self
            .as_slice()
            .ok_or_else(|| io::Error::other("view is not memory-mapped"))?;
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = slice.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// An exclusive lock taken by [`FileSystem::lock_file`]; released when dropped (or
/// when the process ends, however it ends).
#[derive(Debug)]
pub struct FileLock {
    // The open file whose `flock` holds the lock; `None` when nothing was locked.
    file: Option<std::fs::File>,
}

impl FileLock {
    /// Whether a lock is actually held (false on a simulated file system).
    pub fn is_held(&self) -> bool {
        self.file.is_some()
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the view",
    )
}

/// Durably writes `bytes` as `dir/name`: written to a temporary file, synced, renamed
/// over `name`, and the directory synced. After a crash `name` holds either the old
/// content or all of `bytes`, never a mix.
pub fn write_file_durably(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if fs.exists(&tmp)? {
        fs.remove_file(&tmp)?;
    }
    let file = fs.create(&tmp)?;
    file.write_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, &dir.join(name))?;
    fs.sync_dir(dir)
}

#[cfg(test)]
mod tests;

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
