//! The frame layout: kinds, the frame head and CRC, and the header and trailer payloads.

use keel_raft::codec;
use keel_raft::SnapshotMetadata;

use super::limits::{
    FRAME_HEAD_BYTES, FRAME_OVERHEAD_BYTES, MAX_CHUNK_SIZE_BYTES, MAX_HEADER_BYTES,
};
use crate::error::{Result, SnapshotError};
use crate::info::{check_member, check_members, MemberAddresses, MAX_MEMBERS};

const MAGIC: &[u8; 8] = b"KEELSNAP";
/// The header layout this build writes. Version 1 (read, never written) had no
/// member addresses and no metadata length.
pub(super) const STREAM_VERSION: u8 = 2;
const STREAM_VERSION_1: u8 = 1;
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
///
/// Payload layout (version 2; integers little-endian):
///
/// ```text
/// magic "KEELSNAP" | version u8 = 2 | chunk_size u32 | metadata_len u32 |
/// metadata (raft-core codec) | member_count u32 |
/// { node_id u64 | addr_len u16 | addr (UTF-8) } * member_count
/// ```
///
/// Members come in strictly increasing id order and nothing follows them. Version 1
/// (written before member addresses existed) ends with the metadata, unprefixed;
/// it still reads, with no members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Where the snapshot sits in the log and the membership there.
    pub metadata: SnapshotMetadata,
    /// The largest data chunk payload in this stream.
    pub chunk_size_bytes: u32,
    /// The members' peer addresses as of `metadata.index` (empty in version 1).
    pub members: MemberAddresses,
}

impl StreamHeader {
    /// The payload, or why this header cannot be written (member addresses out of
    /// bounds, a payload over [`MAX_HEADER_BYTES`], which no reader would accept).
    pub(super) fn encode_payload(&self) -> Result<Vec<u8>> {
        let invalid = |why: String| SnapshotError::InvalidArgument(why);
        check_members(&self.members).map_err(invalid)?;
        let metadata = codec::encode(&self.metadata);
        let members_bytes: usize = self.members.values().map(|a| 8 + 2 + a.len()).sum();
        let len = HEADER_FIXED_BYTES + 4 + metadata.len() + 4 + members_bytes;
        if len > MAX_HEADER_BYTES as usize {
            return Err(invalid(format!(
                "a snapshot header of {len} bytes exceeds {MAX_HEADER_BYTES}"
            )));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.push(STREAM_VERSION);
        out.extend_from_slice(&self.chunk_size_bytes.to_le_bytes());
        // Both fit: the whole payload is at most MAX_HEADER_BYTES (checked above) and
        // the member count at most MAX_MEMBERS.
        out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        out.extend_from_slice(&metadata);
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for (id, addr) in &self.members {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(addr.len() as u16).to_le_bytes());
            out.extend_from_slice(addr.as_bytes());
        }
        debug_assert_eq!(out.len(), len, "header payload length");
        Ok(out)
    }

    pub(super) fn decode_payload(seq: u64, payload: &[u8]) -> Result<StreamHeader> {
        let malformed = |reason: String| SnapshotError::Malformed { seq, reason };
        if payload.len() < HEADER_FIXED_BYTES {
            return Err(malformed(format!("header of {} bytes", payload.len())));
        }
        if &payload[..8] != MAGIC {
            return Err(malformed("bad magic: not a keel snapshot".into()));
        }
        let version = payload[8];
        if version != STREAM_VERSION && version != STREAM_VERSION_1 {
            return Err(malformed(format!(
                "unsupported stream version {version} (this build reads {STREAM_VERSION_1} \
                 and {STREAM_VERSION})"
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
        let rest = &payload[HEADER_FIXED_BYTES..];
        let (metadata, members) = if version == STREAM_VERSION_1 {
            (rest, None)
        } else {
            let mut r = FieldReader { buf: rest, pos: 0 };
            let len = r.u32().map_err(&malformed)? as usize;
            let metadata = r.bytes(len, "metadata").map_err(&malformed)?;
            (metadata, Some(read_members(&mut r).map_err(&malformed)?))
        };
        let metadata = codec::decode::<SnapshotMetadata>(metadata)
            .map_err(|e| malformed(format!("metadata: {e}")))?;
        Ok(StreamHeader {
            metadata,
            chunk_size_bytes,
            members: members.unwrap_or_default(),
        })
    }
}

// The member list of a version 2 header, which ends the payload.
fn read_members(r: &mut FieldReader<'_>) -> std::result::Result<MemberAddresses, String> {
    let count = r.u32()? as usize;
    if count > MAX_MEMBERS {
        return Err(format!("{count} member addresses, at most {MAX_MEMBERS}"));
    }
    let mut members = MemberAddresses::new();
    let mut last = 0u64;
    for _ in 0..count {
        let id = r.u64()?;
        if id <= last {
            return Err(format!(
                "member {id} out of order or repeated (after {last})"
            ));
        }
        last = id;
        let len = usize::from(r.u16()?);
        let addr = std::str::from_utf8(r.bytes(len, "member address")?)
            .map_err(|_| format!("the address of member {id} is not UTF-8"))?;
        check_member(id, addr)?;
        members.insert(id, addr.to_string());
    }
    if r.pos != r.buf.len() {
        return Err(format!(
            "{} bytes after the member addresses",
            r.buf.len() - r.pos
        ));
    }
    Ok(members)
}

// A cursor over header bytes: every read checked against what is left.
struct FieldReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldReader<'a> {
    fn bytes(&mut self, len: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = self.buf.len() - self.pos;
        if len > left {
            return Err(format!("{what} of {len} bytes, {left} left in the header"));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, "a field")?);
        Ok(out)
    }

    fn u16(&mut self) -> std::result::Result<u16, String> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        self.array().map(u64::from_le_bytes)
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
