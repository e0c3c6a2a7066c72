//! The file-system seam: every byte the WAL (and the snapshot store) reads or writes goes
//! through [`FileSystem`] and [`FsFile`], so tests can swap the real file system
//! ([`StdFs`]) for a simulated one ([`SimFs`]) that loses unsynced data, tears writes,
//! flips bytes and fails writes or syncs on demand.
//!
//! The traits are object-safe (`Arc<dyn FileSystem>`) so callers don't become generic
//! over the file system. Paths are ordinary `Path`s; the simulated file system treats
//! them as plain keys.

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
    /// Creates `dir` and its missing parents.
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
