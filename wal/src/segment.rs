//! Segment files: their names and the open handles the WAL reads and writes through.

use std::fmt;
use std::io;
use std::sync::Arc;

use keel_fs::{FsFile, ReadView};
use parking_lot::RwLock;

/// Suffix of a live segment file.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a preallocated file not yet in use (deleted on open).
pub const PREALLOC_SUFFIX: &str = ".prealloc";
/// Suffix of the copy of bytes cut from a damaged tail.
pub const BROKEN_SUFFIX: &str = ".broken";

/// A segment's identity as spelled in its file name: `{seq:016x}-{first_index:016x}.wal`,
/// so a plain `ls` lists segments in log order and shows where each starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// Sequence number: segments are replayed in increasing order, with no gaps.
    pub seq: u64,
    /// The log's next index when the segment was started.
    pub first_index: u64,
}

impl SegmentName {
    /// Parses a file name; `None` if it isn't a segment's.
    pub fn parse(file_name: &str) -> Option<SegmentName> {
        let stem = file_name.strip_suffix(SEGMENT_SUFFIX)?;
        let (seq, first) = stem.split_once('-')?;
        if seq.len() != 16 || first.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(seq, 16).ok()?,
            first_index: u64::from_str_radix(first, 16).ok()?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:016x}{SEGMENT_SUFFIX}",
            self.seq, self.first_index
        )
    }
}

/// Where one entry's encoding lives: enough to read it back and verify it without
/// touching the record around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryLoc {
    pub seq: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// An open segment: the handle the writer appends through and a read-only view that
/// readers use (memory-mapped on a real file system).
#[derive(Debug)]
pub(crate) struct Segment {
    pub name: SegmentName,
    pub file: Arc<dyn FsFile>,
    view: RwLock<Arc<dyn ReadView>>,
}

impl Segment {
    pub fn open(name: SegmentName, file: Arc<dyn FsFile>) -> io::Result<Segment> {
        let view = file.map_readonly()?;
        Ok(Segment {
            name,
            file,
            view: RwLock::new(view),
        })
    }

    /// Makes sure the view covers `end` bytes (a batch larger than the preallocated
    /// space grew the file past the mapping).
    pub fn ensure_mapped(&self, end: u64) -> io::Result<()> {
        if self.view.read().len() >= end {
            return Ok(());
        }
        let fresh = self.file.map_readonly()?;
        *self.view.write() = fresh;
        Ok(())
    }

    /// Calls `f` with the bytes `[offset, offset + len)`, zero-copy when mapped.
    pub fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        let view = self.view.read().clone();
        if let Some(slice) = view.as_slice() {
            let bytes = usize::try_from(offset)
                .ok()
                .and_then(|o| slice.get(o..o.checked_add(len)?))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "entry beyond mapped range")
                })?;
            return Ok(f(bytes));
        }
        scratch.clear();
        scratch.resize(len, 0);
        view.read_at(scratch, offset)?;
        Ok(f(scratch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_log_order() {
        let a = SegmentName {
            seq: 2,
            first_index: 0x1f,
        };
        let s = a.to_string();
        assert_eq!(s, "0000000000000002-000000000000001f.wal");
        assert_eq!(SegmentName::parse(&s), Some(a));
        let b = SegmentName {
            seq: 10,
            first_index: 1,
        };
        assert!(a.to_string() < b.to_string());
        for bad in [
            "x.wal",
            "2-1f.wal",
            "0000000000000002-000000000000001f.tmp",
            "",
        ] {
            assert_eq!(SegmentName::parse(bad), None);
        }
    }
}
