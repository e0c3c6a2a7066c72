//! The chunk stream: the one byte format of a snapshot, both on disk and on the wire.
//!
//! A snapshot is a sequence of frames. Each frame is
//!
//! ```text
//! kind: u8 | seq: u64 LE | payload_len: u32 LE | payload | crc32: u32 LE
//! ```
//!
//! where the CRC-32 covers every byte before it in the frame. Frame 0 is the header
//! (magic, stream version, chunk size, the codec-encoded [`SnapshotMetadata`](keel_raft::SnapshotMetadata)
//! and the members' addresses: see [`StreamHeader`] for its layout); frames
//! `1..=n` carry state-machine bytes, each at most the header's chunk size; frame `n + 1`
//! is the trailer (total data bytes, data chunk count, and a CRC-32 over the payloads of
//! every frame before it, metadata included).
//!
//! Why this shape: the writer never needs the total size up front (the counts come last),
//! neither side holds more than one chunk in memory, each chunk can be checked as it
//! arrives, and a stored snapshot file can be sent by copying its frames verbatim, so
//! the receiver's installed file is byte-for-byte what the sender stored.

mod frame;
mod limits;
mod reader;
mod validator;
mod writer;

#[cfg(test)]
mod tests;

pub use frame::{Chunk, ChunkKind, StreamHeader, StreamTrailer};
pub use limits::{
    DEFAULT_CHUNK_SIZE_BYTES, FRAME_HEAD_BYTES, FRAME_OVERHEAD_BYTES, MAX_CHUNK_SIZE_BYTES,
    MAX_HEADER_BYTES,
};
pub use reader::{FrameReader, SnapshotReader};
pub use validator::{Accepted, StreamValidator};
pub use writer::ChunkWriter;
