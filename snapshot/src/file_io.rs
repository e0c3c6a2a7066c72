//! `std::io` adapters over `keel_fs` files, so the chunk stream code (written against
//! `Read`/`Write`) runs on the real and the simulated file system alike.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use keel_fs::FsFile;

/// Appends to a file through positional writes, remembering whether the file itself
/// failed so a caller can tell a disk error from a producer's own error.
#[derive(Debug)]
pub(crate) struct FileWriter {
    file: Arc<dyn FsFile>,
    offset: u64,
    failed: bool,
    // 0: never synced here (the caller syncs at the end).
    sync_every_bytes: u64,
    unsynced_bytes: u64,
}

impl FileWriter {
    pub(crate) fn new(file: Arc<dyn FsFile>) -> FileWriter {
        FileWriter::syncing_every(file, 0)
    }

    /// A writer that syncs the file each time `sync_every_bytes` more were written.
    pub(crate) fn syncing_every(file: Arc<dyn FsFile>, sync_every_bytes: u64) -> FileWriter {
        FileWriter {
            file,
            offset: 0,
            failed: false,
            sync_every_bytes,
            unsynced_bytes: 0,
        }
    }

    /// Bytes written so far (the file's length, as this writer only appends).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a write to the file failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    pub(crate) fn file(&self) -> &Arc<dyn FsFile> {
        &self.file
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.file.write_at(buf, self.offset) {
            self.failed = true;
            return Err(e);
        }
        self.offset += buf.len() as u64;
        self.unsynced_bytes += buf.len() as u64;
        if self.sync_every_bytes > 0 && self.unsynced_bytes >= self.sync_every_bytes {
            if let Err(e) = self.file.sync_data() {
                self.failed = true;
                return Err(e);
            }
            self.unsynced_bytes = 0;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a file through positional reads, with a cursor.
#[derive(Debug)]
pub(crate) struct FileReader {
    file: Arc<dyn FsFile>,
    offset: u64,
    len: u64,
}

impl FileReader {
    pub(crate) fn new(file: Arc<dyn FsFile>) -> io::Result<FileReader> {
        let len = file.len()?;
        Ok(FileReader {
            file,
            offset: 0,
            len,
        })
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.offset);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..n], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Seek for FileReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.offset.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.offset = target;
        Ok(target)
    }
}
