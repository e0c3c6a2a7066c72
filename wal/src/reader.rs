//! The read-only scanner: walks segment files and reports every record or the exact
//! damage found, without locks and without writing. Recovery is built on it, and so are
//! the `keel wal dump|verify|stat|repair` tools.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_fs::FileSystem;

use crate::record::{
    decode_payload, parse_frame, EntrySpan, FrameAt, SegmentHeader, WalRecord, FRAME_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::segment::{SegmentName, BROKEN_SUFFIX, PREALLOC_SUFFIX};
use crate::LogError;

/// Damage found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file's name.
    pub file: String,
    /// Byte offset of the damaged frame (or header) in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte offset {}: {}",
            self.file, self.offset, self.reason
        )
    }
}

/// One valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Offset of the frame in the file.
    pub offset: u64,
    /// Offset just past the frame (and its padding).
    pub end_offset: u64,
    /// Length of the frame's payload in bytes (without frame header and padding).
    pub payload_len: u64,
    /// The decoded record.
    pub record: WalRecord,
    /// For an entries record, where each entry's encoding sits in the payload.
    pub entry_spans: Vec<EntrySpan>,
}

impl ScannedRecord {
    /// File offset of the `i`th entry's encoding (entries records only).
    pub fn entry_offset(&self, span: &EntrySpan) -> u64 {
        self.offset + FRAME_HEADER_BYTES + u64::from(span.payload_offset)
    }
}

/// What the scanner found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A valid record.
    Record(ScannedRecord),
    /// Damage; scanning resumed at the next valid frame, if any.
    Damage(Damage),
}

/// Everything found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's name.
    pub name: SegmentName,
    /// The file's length in bytes (including preallocated space).
    pub file_len: u64,
    /// The header, if it is intact and agrees with the file name.
    pub header: Option<SegmentHeader>,
    /// Records and damage, in file order.
    pub events: Vec<ScanEvent>,
    /// Offset just past the last non-zero byte: everything after it is preallocated
    /// space (or never written).
    pub nonzero_end: u64,
}

impl SegmentScan {
    /// Whether the segment is free of damage.
    pub fn is_clean(&self) -> bool {
        self.header.is_some()
            && !self
                .events
                .iter()
                .any(|e| matches!(e, ScanEvent::Damage(_)))
    }
}

/// Scans the bytes of a segment named `name`. Never panics, whatever `data` holds.
pub fn scan_segment_bytes(name: SegmentName, data: &[u8]) -> SegmentScan {
    let file = name.to_string();
    let mut events = Vec::new();
    let damage = |offset: u64, reason: String| {
        ScanEvent::Damage(Damage {
            file: file.clone(),
            offset,
            reason,
        })
    };
    let header = match SegmentHeader::decode(data) {
        Ok(h) if h.seq == name.seq && h.first_index == name.first_index => Some(h),
        Ok(h) => {
            events.push(damage(
                0,
                format!(
                    "header says seq {} first index {}, file name says seq {} first index {}",
                    h.seq, h.first_index, name.seq, name.first_index
                ),
            ));
            None
        }
        Err(reason) => {
            events.push(damage(0, reason));
            None
        }
    };
    let nonzero_end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1);
    let len = data.len() as u64;
    // Frames are bound to the seq in the name, so records stay readable (in the
    // tolerant mode and in tools) even when only the header is damaged.
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos + FRAME_HEADER_BYTES <= len {
        match parse_frame(data, name.seq, pos) {
            FrameAt::Frame {
                rtype,
                payload_start,
                payload_len,
                next,
            } => {
                // In range: parse_frame checked the frame lies within `data`.
                let payload = &data[payload_start as usize..(payload_start + payload_len) as usize];
                match decode_payload(rtype, payload) {
                    Ok((record, entry_spans)) => events.push(ScanEvent::Record(ScannedRecord {
                        offset: pos,
                        end_offset: next,
                        payload_len,
                        record,
                        entry_spans,
                    })),
                    Err(reason) => events.push(damage(
                        pos,
                        format!("{rtype:?} record passes its CRC but does not decode: {reason}"),
                    )),
                }
                pos = next;
            }
            FrameAt::ZeroWord if pos >= nonzero_end => break,
            FrameAt::ZeroWord => {
                events.push(damage(
                    pos,
                    format!("zeroed range followed by non-zero bytes up to offset {nonzero_end}"),
                ));
                match resync(data, name.seq, pos + 8) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            FrameAt::Invalid(reason) => {
                events.push(damage(pos, reason));
                match resync(data, name.seq, pos + 8) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    if pos < len && pos < nonzero_end && pos + FRAME_HEADER_BYTES > len {
        events.push(damage(
            pos,
            "partial frame header at the end of the file".into(),
        ));
    }
    SegmentScan {
        name,
        file_len: len,
        header,
        events,
        nonzero_end,
    }
}

/// The next offset at or after `from` (8-aligned) holding a valid frame.
fn resync(data: &[u8], seq: u64, from: u64) -> Option<u64> {
    let mut pos = from;
    while pos + FRAME_HEADER_BYTES <= data.len() as u64 {
        if let FrameAt::Frame { .. } = parse_frame(data, seq, pos) {
            return Some(pos);
        }
        pos += 8;
    }
    None
}

/// The files found in a WAL directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalDirListing {
    /// Segments, in sequence order.
    pub segments: Vec<SegmentName>,
    /// Preallocated files not yet in use.
    pub preallocated: Vec<String>,
    /// Copies of cut tails.
    pub broken: Vec<String>,
    /// Anything else.
    pub other: Vec<String>,
}

/// Read-only access to a WAL directory for inspection tools. Opens files read-only,
/// takes no locks and never writes, so it is safe to run next to a live log (records
/// being appended may show as a damaged tail).
#[derive(Debug, Clone)]
pub struct WalScanner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

impl WalScanner {
    /// A scanner for the WAL in `dir`.
    pub fn new(fs: Arc<dyn FileSystem>, dir: impl AsRef<Path>) -> WalScanner {
        WalScanner {
            fs,
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Lists and classifies the directory's files.
    pub fn list(&self) -> Result<WalDirListing, LogError> {
        list_dir(self.fs.as_ref(), &self.dir)
    }

    /// Scans one segment.
    pub fn scan(&self, name: SegmentName) -> Result<SegmentScan, LogError> {
        let bytes = self.fs.read_file(&self.dir.join(name.to_string()))?;
        Ok(scan_segment_bytes(name, &bytes))
    }

    /// Scans every segment and returns all damage found, including gaps in the
    /// segment sequence; empty means every header and record checks out. (A torn tail
    /// of the last segment, which recovery would cut, is reported here too.)
    pub fn verify(&self) -> Result<Vec<Damage>, LogError> {
        let listing = self.list()?;
        let mut found = Vec::new();
        for pair in listing.segments.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                found.push(Damage {
                    file: pair[1].to_string(),
                    offset: 0,
                    reason: format!("segment sequence jumps from {}", pair[0].seq),
                });
            }
        }
        for name in listing.segments {
            let scan = self.scan(name)?;
            found.extend(scan.events.into_iter().filter_map(|e| match e {
                ScanEvent::Damage(d) => Some(d),
                ScanEvent::Record(_) => None,
            }));
        }
        Ok(found)
    }
}

pub(crate) fn list_dir(fs: &dyn FileSystem, dir: &Path) -> Result<WalDirListing, LogError> {
    let mut out = WalDirListing::default();
    for name in fs.list_dir(dir)? {
        if let Some(seg) = SegmentName::parse(&name) {
            out.segments.push(seg);
        } else if name.ends_with(PREALLOC_SUFFIX) {
            out.preallocated.push(name);
        } else if name.ends_with(BROKEN_SUFFIX) {
            out.broken.push(name);
        } else {
            out.other.push(name);
        }
    }
    out.segments.sort();
    Ok(out)
}
