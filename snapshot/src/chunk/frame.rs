//! The frame layout: kinds, the frame head and CRC, and the header and trailer payloads.

use raft_core::codec;
use raft_core::SnapshotMetadata;

use super::{FRAME_HEAD_BYTES, FRAME_OVERHEAD_BYTES, MAX_CHUNK_SIZE_BYTES};
use crate::error::{Result, SnapshotError};

const MAGIC: &[u8; 8] = b"KEELSNAP";
const STREAM_VERSION: u8 = 1;
pub(super) const TRAILER_PAYLOAD_BYTES: usize = 8 + 8 + 4;
// Header payload bytes before the metadata: magic, version, chunk size.
const HEADER_FIXED_BYTES: usize = 8 + 1 + 4;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    /// Frame 0: magic, version, chunk size and snapshot metadata.
    Header,
    /// State-machine bytes.
    Data,
    /// The last frame: totals and the whole-snapshot checksum.
    Trailer,
}

impl ChunkKind {
    pub(super) fn tag(self) -> u8 {
        match self {
            ChunkKind::Header => 1,
            ChunkKind::Data => 2,
            ChunkKind::Trailer => 3,
        }
    }

    pub(super) fn from_tag(tag: u8) -> Option<ChunkKind> {
        match tag {
            1 => Some(ChunkKind::Header),
            2 => Some(ChunkKind::Data),
            3 => Some(ChunkKind::Trailer),
            _ => None,
        }
    }
}

/// One frame of a snapshot stream, as sent between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the stream: 0 for the header, then 1, 2, ...
    pub seq: u64,
    /// What the payload holds.
    pub kind: ChunkKind,
    /// The frame's payload.
    pub payload: Vec<u8>,
}

impl Chunk {
    /// The frame's bytes (head, payload, CRC).
    ///
    /// Payloads are produced by this crate and bounded by [`MAX_CHUNK_SIZE_BYTES`]; a
    /// longer one is truncated in the length field and so fails the receiver's CRC
    /// rather than panicking here.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_OVERHEAD_BYTES + self.payload.len());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&frame_head(self.kind, self.seq, len));
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses one whole frame, checking its length and CRC. Never panics and never
    /// allocates more than `frame` holds.
    pub fn decode(frame: &[u8]) -> Result<Chunk> {
        if frame.len() < FRAME_OVERHEAD_BYTES {
            return Err(SnapshotError::Malformed {
                seq: 0,
                reason: format!(
                    "frame of {} bytes is shorter than a frame head",
                    frame.len()
                ),
            });
        }
        let (head, rest) = frame.split_at(FRAME_HEAD_BYTES);
        let (kind_tag, seq, len) = parse_head(head);
        if rest.len() != len as usize + 4 {
            return Err(SnapshotError::Malformed {
                seq,
                reason: format!(
                    "payload length field says {len} bytes but the frame holds {}",
                    rest.len().saturating_sub(4)
                ),
            });
        }
        let (body, crc_bytes) = frame.split_at(frame.len() - 4);
        check_crc(seq, body, crc_bytes)?;
        let kind = ChunkKind::from_tag(kind_tag).ok_or_else(|| SnapshotError::Malformed {
            seq,
            reason: format!("unknown chunk kind {kind_tag}"),
        })?;
        Ok(Chunk {
            seq,
            kind,
            payload: rest[..len as usize].to_vec(),
        })
    }
}

pub(super) fn frame_head(kind: ChunkKind, seq: u64, payload_len: u32) -> [u8; FRAME_HEAD_BYTES] {
    let mut head = [0u8; FRAME_HEAD_BYTES];
    head[0] = kind.tag();
    head[1..9].copy_from_slice(&seq.to_le_bytes());
    head[9..13].copy_from_slice(&payload_len.to_le_bytes());
    head
}

// `head` is exactly FRAME_HEAD_BYTES long at every call site.
pub(super) fn parse_head(head: &[u8]) -> (u8, u64, u32) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[1..9]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[9..13]);
    (head[0], u64::from_le_bytes(seq), u32::from_le_bytes(len))
}

fn check_crc(seq: u64, body: &[u8], crc_bytes: &[u8]) -> Result<()> {
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc_bytes);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(SnapshotError::ChunkCrc {
            seq,
            stored,
            computed,
        });
    }
    Ok(())
}

/// The header frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Where the snapshot sits in the log and the membership there.
    pub metadata: SnapshotMetadata,
    /// The largest data chunk payload in this stream.
    pub chunk_size_bytes: u32,
}

impl StreamHeader {
    pub(super) fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_FIXED_BYTES + 32);
        out.extend_from_slice(MAGIC);
        out.push(STREAM_VERSION);
        out.extend_from_slice(&self.chunk_size_bytes.to_le_bytes());
        codec::encode_into(&self.metadata, &mut out);
        out
    }

    pub(super) fn decode_payload(seq: u64, payload: &[u8]) -> Result<StreamHeader> {
        let malformed = |reason: String| SnapshotError::Malformed { seq, reason };
        if payload.len() < HEADER_FIXED_BYTES {
            return Err(malformed(format!("header of {} bytes", payload.len())));
        }
        if &payload[..8] != MAGIC {
            return Err(malformed("bad magic: not a keel snapshot".into()));
        }
        if payload[8] != STREAM_VERSION {
            return Err(malformed(format!(
                "unsupported stream version {} (this build reads {STREAM_VERSION})",
                payload[8]
            )));
        }
        let mut size = [0u8; 4];
        size.copy_from_slice(&payload[9..13]);
        let chunk_size_bytes = u32::from_le_bytes(size);
        if chunk_size_bytes == 0 || chunk_size_bytes > MAX_CHUNK_SIZE_BYTES {
            return Err(malformed(format!(
                "chunk size {chunk_size_bytes} outside 1..={MAX_CHUNK_SIZE_BYTES}"
            )));
        }
        let metadata = codec::decode::<SnapshotMetadata>(&payload[HEADER_FIXED_BYTES..])
            .map_err(|e| malformed(format!("metadata: {e}")))?;
        Ok(StreamHeader {
            metadata,
            chunk_size_bytes,
        })
    }
}

/// The trailer frame's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTrailer {
    /// Total state-machine bytes in the data chunks.
    pub data_bytes: u64,
    /// Number of data chunks.
    pub data_chunks: u64,
    /// CRC-32 over the payloads of the header and every data chunk, in order.
    pub checksum: u32,
}

impl StreamTrailer {
    pub(super) fn encode_payload(&self) -> [u8; TRAILER_PAYLOAD_BYTES] {
        let mut out = [0u8; TRAILER_PAYLOAD_BYTES];
        out[0..8].copy_from_slice(&self.data_bytes.to_le_bytes());
        out[8..16].copy_from_slice(&self.data_chunks.to_le_bytes());
        out[16..20].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }

    pub(super) fn decode_payload(seq: u64, payload: &[u8]) -> Result<StreamTrailer> {
        if payload.len() != TRAILER_PAYLOAD_BYTES {
            return Err(SnapshotError::Malformed {
                seq,
                reason: format!("trailer of {} bytes", payload.len()),
            });
        }
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&payload[0..8]);
        let data_bytes = u64::from_le_bytes(b8);
        b8.copy_from_slice(&payload[8..16]);
        let data_chunks = u64::from_le_bytes(b8);
        let mut b4 = [0u8; 4];
        b4.copy_from_slice(&payload[16..20]);
        Ok(StreamTrailer {
            data_bytes,
            data_chunks,
            checksum: u32::from_le_bytes(b4),
        })
    }
}
