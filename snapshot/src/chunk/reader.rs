//! Reading a chunk stream: raw frames, or validated state-machine bytes through `Read`.

use std::io::{self, Read, Seek, SeekFrom};

use super::frame::{parse_head, Chunk, ChunkKind, StreamHeader, StreamTrailer};
use super::limits::{FRAME_HEAD_BYTES, MAX_CHUNK_SIZE_BYTES};
use super::validator::{Accepted, StreamValidator};
use crate::error::{Result, SnapshotError};

/// Reads frames from a byte stream, checking each frame's CRC but not the stream rules
/// (see [`StreamValidator`]). Used to send a stored snapshot chunk by chunk.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max_payload_bytes: u32,
    frames_read: u64,
}

impl<R: Read> FrameReader<R> {
    /// Reads frames from `inner`, refusing payloads over [`MAX_CHUNK_SIZE_BYTES`].
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            max_payload_bytes: MAX_CHUNK_SIZE_BYTES,
            frames_read: 0,
        }
    }

    /// Reads the next frame into `payload` (replacing its contents); `None` at a clean
    /// end of input. A frame cut short is [`SnapshotError::Truncated`].
    pub fn read_into(&mut self, payload: &mut Vec<u8>) -> Result<Option<(u64, ChunkKind)>> {
        let mut head = [0u8; FRAME_HEAD_BYTES];
        match read_full(&mut self.inner, &mut head)? {
            0 => return Ok(None),
            n if n < FRAME_HEAD_BYTES => {
                return Err(SnapshotError::Truncated {
                    next_seq: self.frames_read,
                })
            }
            _ => {}
        }
        let (kind_tag, seq, len) = parse_head(&head);
        if len > self.max_payload_bytes {
            return Err(SnapshotError::Malformed {
                seq,
                reason: format!(
                    "payload length {len} exceeds the limit {}",
                    self.max_payload_bytes
                ),
            });
        }
        payload.clear();
        // `take` + `read_to_end` grows the buffer only as bytes actually arrive, so a
        // damaged length never allocates more than the input holds.
        let got = (&mut self.inner)
            .take(u64::from(len) + 4)
            .read_to_end(payload)
            .map_err(SnapshotError::Stream)?;
        if got < len as usize + 4 {
            return Err(SnapshotError::Truncated {
                next_seq: self.frames_read,
            });
        }
        let crc_bytes = payload.split_off(len as usize);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(payload);
        let computed = hasher.finalize();
        let mut stored = [0u8; 4];
        stored.copy_from_slice(&crc_bytes);
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(SnapshotError::ChunkCrc {
                seq,
                stored,
                computed,
            });
        }
        let kind = ChunkKind::from_tag(kind_tag).ok_or_else(|| SnapshotError::Malformed {
            seq,
            reason: format!("unknown chunk kind {kind_tag}"),
        })?;
        self.frames_read += 1;
        Ok(Some((seq, kind)))
    }

    /// Reads the next frame as a [`Chunk`].
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut payload = Vec::new();
        Ok(self
            .read_into(&mut payload)?
            .map(|(seq, kind)| Chunk { seq, kind, payload }))
    }

    /// Whether the input has no bytes left (used to reject data after a trailer).
    pub fn at_end(&mut self) -> Result<bool> {
        let mut one = [0u8; 1];
        Ok(read_full(&mut self.inner, &mut one)? == 0)
    }
}

impl<R: Read + Seek> FrameReader<R> {
    /// Skips whole frames without reading their payloads until the next frame is
    /// `seq` (used to resume a transfer). Payload CRCs of skipped frames are not
    /// checked: the receiver already holds those chunks.
    pub fn skip_to(&mut self, seq: u64) -> Result<()> {
        loop {
            let mut head = [0u8; FRAME_HEAD_BYTES];
            let n = read_full(&mut self.inner, &mut head)?;
            if n == 0 {
                return Err(SnapshotError::InvalidArgument(format!(
                    "the stream ends before chunk {seq}"
                )));
            }
            if n < FRAME_HEAD_BYTES {
                return Err(SnapshotError::Truncated {
                    next_seq: self.frames_read,
                });
            }
            let (_, frame_seq, len) = parse_head(&head);
            if frame_seq == seq {
                self.inner
                    .seek(SeekFrom::Current(-(FRAME_HEAD_BYTES as i64)))
                    .map_err(SnapshotError::Stream)?;
                return Ok(());
            }
            if frame_seq > seq || len > self.max_payload_bytes {
                return Err(SnapshotError::Malformed {
                    seq: frame_seq,
                    reason: format!("while skipping to chunk {seq}"),
                });
            }
            self.inner
                .seek(SeekFrom::Current(i64::from(len) + 4))
                .map_err(SnapshotError::Stream)?;
            self.frames_read += 1;
        }
    }
}

// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapshotError::Stream(e)),
        }
    }
    Ok(filled)
}

/// Reads the state-machine bytes of a chunk stream through [`Read`], validating every
/// chunk and, at the end, the trailer and the absence of trailing bytes.
///
/// A stream error surfaces from `read` as an `io::Error` of kind `InvalidData`; the
/// typed error is kept and returned by [`take_failure`](Self::take_failure), so a caller
/// can tell a damaged stream from a consumer's own failure.
#[derive(Debug)]
pub struct SnapshotReader<R> {
    frames: FrameReader<R>,
    validator: StreamValidator,
    header: StreamHeader,
    buf: Vec<u8>,
    pos: usize,
    failure: Option<SnapshotError>,
    trailer: Option<StreamTrailer>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header; the state-machine bytes follow through `read`.
    pub fn new(inner: R) -> Result<SnapshotReader<R>> {
        let mut frames = FrameReader::new(inner);
        let mut validator = StreamValidator::new();
        let mut buf = Vec::new();
        let Some((seq, kind)) = frames.read_into(&mut buf)? else {
            return Err(SnapshotError::Truncated { next_seq: 0 });
        };
        let header = match validator.accept(seq, kind, &buf)? {
            Accepted::Header(h) => h.clone(),
            // The validator accepts nothing but a header as chunk 0.
            _ => {
                return Err(SnapshotError::Malformed {
                    seq,
                    reason: "stream does not start with a header".into(),
                })
            }
        };
        buf.clear();
        Ok(SnapshotReader {
            frames,
            validator,
            header,
            buf,
            pos: 0,
            failure: None,
            trailer: None,
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The trailer, once the whole stream has been read and checked.
    pub fn trailer(&self) -> Option<StreamTrailer> {
        self.trailer
    }

    /// The stream error that made `read` fail, if any.
    pub fn take_failure(&mut self) -> Option<SnapshotError> {
        self.failure.take()
    }

    /// Reads (and discards) whatever the consumer left unread, then checks the trailer
    /// and that nothing follows it. Returns the trailer.
    pub fn finish(mut self) -> Result<StreamTrailer> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        while self.trailer.is_none() {
            self.pos = self.buf.len();
            self.fill()?;
        }
        if !self.frames.at_end()? {
            return Err(SnapshotError::TrailingData);
        }
        // The loop above only ends once the trailer is set.
        self.trailer
            .ok_or(SnapshotError::TransferEnded("trailer missing"))
    }

    // Loads the next data chunk into `buf`, or records the trailer. Returns whether
    // any bytes are available.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if self.pos < self.buf.len() {
                return Ok(true);
            }
            if self.trailer.is_some() {
                return Ok(false);
            }
            let next_seq = self.validator.next_seq();
            let Some((seq, kind)) = self.frames.read_into(&mut self.buf)? else {
                return Err(SnapshotError::Truncated { next_seq });
            };
            self.pos = 0;
            match self.validator.accept(seq, kind, &self.buf)? {
                Accepted::Data(_) => {}
                Accepted::End(trailer) => {
                    self.trailer = Some(trailer);
                    self.buf.clear();
                }
                Accepted::Header(_) => {
                    // The validator refuses a second header, so this is unreachable;
                    // treat it as damage rather than panic.
                    return Err(SnapshotError::Malformed {
                        seq,
                        reason: "a second header".into(),
                    });
                }
            }
        }
    }
}

impl<R: Read> Read for SnapshotReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(e) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        match self.fill() {
            Ok(true) => {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
            Ok(false) => Ok(0),
            Err(e) => {
                let io_err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                self.failure = Some(e);
                Err(io_err)
            }
        }
    }
}
