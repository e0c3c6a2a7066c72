//! [`FileSystem`] over `std::fs`, with `fdatasync` and `fallocate`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{FileLock, FileSystem, FsFile, ReadView};

/// The real file system.
///
/// # Example
///
/// ```
/// use keel_fs::{write_file_durably, FileSystem, StdFs};
///
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let fs = StdFs::shared();
/// let data = dir.path().join("data");
/// fs.create_dir_all_durably(&data)?;
///
/// // Replace a file atomically: after a crash it holds the old bytes or the new ones.
/// write_file_durably(&*fs, &data, "config", b"version 2")?;
/// assert_eq!(fs.read_file(&data.join("config"))?, b"version 2");
///
/// // One process per data directory: a second lock on the same file fails.
/// let lock = fs.lock_file(&data.join("LOCK"))?;
/// assert!(lock.is_held());
/// assert!(fs.lock_file(&data.join("LOCK")).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl StdFs {
    /// A shareable handle to the real file system.
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(StdFs)
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced; this persists the
        // directory entries (hashicorp/raft-wal's crash harness found this one missing).
        // A relative path's last parent is "": the working directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }

    fn create_dir_all_durably(&self, dir: &Path) -> io::Result<()> {
        // The levels that do not exist yet, deepest first. Only their parents (and
        // `dir`'s own) are synced: syncing every ancestor up to `/` would need read
        // access to each, which a data directory's owner may lack on some of them.
        let missing = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.is_dir())
            .count();
        std::fs::create_dir_all(dir)?;
        for parent in dir.ancestors().skip(1).take(missing.max(1)) {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn lock_file(&self, path: &Path) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock, not fcntl: an fcntl lock belongs to the process and is dropped when
        // any descriptor of the file closes, so a second open in this process would
        // neither fail nor keep the lock. A flock belongs to the open file.
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock only reads its integer arguments; the descriptor is owned by
        // `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                io::Error::new(io::ErrorKind::WouldBlock, "locked by another process")
            } else {
                err
            });
        }
        Ok(FileLock { file: Some(file) })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
}

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        allocate(&self.file, len_bytes)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map_readonly(&self) -> io::Result<Arc<dyn ReadView>> {
        if self.len()? == 0 {
            // mmap of zero bytes is an error on Linux; an empty view needs no mapping.
            return Ok(Arc::new(MmapView { map: None }));
        }
        // SAFETY: the mapping is read-only and shared. The WAL never truncates a segment
        // below a length that a live view covers while the view exists (segments are
        // only cut during recovery, once its scanning view is dropped and before the
        // segment is opened for use, and deleted files stay mapped until the view is
        // dropped), so no access can fault with SIGBUS. Nor do mapped bytes change under
        // a reader: the WAL writes a segment only past its last entry, and readers slice
        // only entries already written.
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Arc::new(MmapView { map: Some(map) }))
    }
}

/// Reserves blocks with `fallocate(2)` so that ENOSPC surfaces here, in the background
/// preallocation thread, rather than in the middle of a commit, and so that appends
/// into the region don't need block allocation (cheaper fdatasync). `set_len` alone
/// would only make a sparse file. Falls back to `set_len` where fallocate is not
/// supported (e.g. some tmpfs or non-Linux systems).
fn allocate(file: &File, len_bytes: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let len = libc::off_t::try_from(len_bytes)
            .map_err(|_| io::Error::other("allocation length out of range"))?;
        use std::os::unix::io::AsRawFd;
        // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by
        // `file` and open for writing.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err);
        }
    }
    if file.metadata()?.len() < len_bytes {
        file.set_len(len_bytes)?;
    }
    Ok(())
}

#[derive(Debug)]
struct MmapView {
    map: Option<memmap2::Mmap>,
}

impl ReadView for MmapView {
    fn len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self.map.as_deref().unwrap_or(&[]))
    }
}
