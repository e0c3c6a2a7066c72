//! The rules of a chunk stream, checked one frame at a time.

use super::frame::{ChunkKind, StreamHeader, StreamTrailer};
use super::limits::MAX_HEADER_BYTES;
use crate::error::{Result, SnapshotError};

/// What [`StreamValidator::accept`] found in a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted<'a> {
    /// The header was accepted.
    Header(&'a StreamHeader),
    /// A data chunk was accepted; here are its bytes.
    Data(&'a [u8]),
    /// The trailer was accepted and every final check passed: the stream is complete.
    End(StreamTrailer),
}

/// Checks a chunk stream one frame at a time: sequence, kinds, sizes, totals and the
/// whole-snapshot checksum. Shared by the file reader and the network receiver so both
/// apply exactly the same rules.
///
/// After any error the validator stays where it was; callers abort the stream.
#[derive(Debug)]
pub struct StreamValidator {
    next_seq: u64,
    header: Option<StreamHeader>,
    whole: crc32fast::Hasher,
    data_bytes: u64,
    data_chunks: u64,
    complete: bool,
}

impl Default for StreamValidator {
    fn default() -> Self {
        StreamValidator::new()
    }
}

impl StreamValidator {
    /// A validator expecting the header.
    pub fn new() -> StreamValidator {
        StreamValidator {
            next_seq: 0,
            header: None,
            whole: crc32fast::Hasher::new(),
            data_bytes: 0,
            data_chunks: 0,
            complete: false,
        }
    }

    /// The sequence number of the next chunk this validator accepts.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The header, once accepted.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Whether the trailer has been accepted.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// State-machine bytes accepted so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Checks the next frame (whose own CRC the caller has already verified).
    pub fn accept<'a>(
        &'a mut self,
        seq: u64,
        kind: ChunkKind,
        payload: &'a [u8],
    ) -> Result<Accepted<'a>> {
        if self.complete {
            return Err(SnapshotError::TrailingData);
        }
        if seq < self.next_seq {
            return Err(SnapshotError::DuplicateChunk {
                seq,
                expected: self.next_seq,
            });
        }
        if seq > self.next_seq {
            return Err(SnapshotError::ChunkOutOfOrder {
                expected: self.next_seq,
                got: seq,
            });
        }
        let malformed = |reason: String| SnapshotError::Malformed { seq, reason };
        match (kind, &self.header) {
            (ChunkKind::Header, None) => {
                if payload.len() > MAX_HEADER_BYTES as usize {
                    return Err(malformed(format!("header of {} bytes", payload.len())));
                }
                let header = StreamHeader::decode_payload(seq, payload)?;
                self.whole.update(payload);
                self.next_seq += 1;
                Ok(Accepted::Header(self.header.insert(header)))
            }
            (_, None) => Err(malformed(format!(
                "{kind:?} chunk where the header belongs"
            ))),
            (ChunkKind::Header, Some(_)) => Err(malformed("a second header".into())),
            (ChunkKind::Data, Some(header)) => {
                if payload.is_empty() {
                    // An empty chunk carries nothing; allowing it would let a stream grow
                    // without bound while making no progress.
                    return Err(malformed("empty data chunk".into()));
                }
                if payload.len() > header.chunk_size_bytes as usize {
                    return Err(malformed(format!(
                        "data chunk of {} bytes exceeds the chunk size {}",
                        payload.len(),
                        header.chunk_size_bytes
                    )));
                }
                self.whole.update(payload);
                self.data_bytes += payload.len() as u64;
                self.data_chunks += 1;
                self.next_seq += 1;
                Ok(Accepted::Data(payload))
            }
            (ChunkKind::Trailer, Some(_)) => {
                let trailer = StreamTrailer::decode_payload(seq, payload)?;
                let checksum = self.whole.clone().finalize();
                if trailer.data_bytes != self.data_bytes || trailer.data_chunks != self.data_chunks
                {
                    return Err(SnapshotError::FinalCheck(format!(
                        "trailer counts {} bytes in {} chunks, received {} bytes in {} chunks",
                        trailer.data_bytes, trailer.data_chunks, self.data_bytes, self.data_chunks
                    )));
                }
                if trailer.checksum != checksum {
                    return Err(SnapshotError::FinalCheck(format!(
                        "whole-snapshot checksum {:#010x} does not match computed {checksum:#010x}",
                        trailer.checksum
                    )));
                }
                self.next_seq += 1;
                self.complete = true;
                Ok(Accepted::End(trailer))
            }
        }
    }
}
