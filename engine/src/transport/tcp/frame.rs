//! The one frame format every TCP connection carries:
//! `len: u32 LE | type: u8 | crc32: u32 LE | payload`, where `len` counts the payload
//! bytes and the CRC-32 (crc32fast) covers `len`, `type` and the payload. Reading
//! checks the length against a limit before allocating, so a hostile length field
//! costs nothing.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

/// Bytes before a frame's payload.
pub(crate) const HEADER_BYTES: usize = 4 + 1 + 4;

/// The largest handshake frame accepted, whatever `max_frame_bytes` says: a hello is a
/// few dozen bytes, so garbage on a fresh connection is refused after reading little.
pub(crate) const MAX_HANDSHAKE_FRAME_BYTES: u32 = 1024;

// Payload buffer reserved before any payload byte arrived.
const INITIAL_PAYLOAD_BYTES: usize = 64 << 10;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FrameType {
    /// The dialer's handshake (`handshake::Hello`).
    Hello = 1,
    /// The acceptor's answer (`handshake::Ack`).
    HelloAck = 2,
    /// One encoded Raft message.
    Message = 3,
    /// Keeps an idle message connection inside the receiver's read deadline.
    Ping = 4,
    /// The encoded `Snapshot` Raft message that opens a snapshot stream.
    SnapshotMessage = 5,
    /// One snapshot chunk frame (`keel_snapshot::Chunk::encode` bytes).
    Chunk = 6,
    /// The end of the chunk stream.
    ChunkEnd = 7,
    /// The receiver's verdict on a snapshot: status byte then UTF-8 text.
    SnapshotResult = 8,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<FrameType> {
        Some(match b {
            1 => FrameType::Hello,
            2 => FrameType::HelloAck,
            3 => FrameType::Message,
            4 => FrameType::Ping,
            5 => FrameType::SnapshotMessage,
            6 => FrameType::Chunk,
            7 => FrameType::ChunkEnd,
            8 => FrameType::SnapshotResult,
            _ => return None,
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// Nothing arrived within the read deadline.
    #[error("read deadline passed")]
    TimedOut,
    /// The connection failed, or closed inside a frame.
    #[error("{0}")]
    Io(io::Error),
    /// The length field is over the limit.
    #[error("frame of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// What the length field said.
        len_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The CRC does not match the frame.
    #[error("frame CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc {
        /// The CRC in the frame.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The type byte names no frame type (with a good CRC: a newer or foreign peer).
    #[error("unknown frame type {0}")]
    UnknownType(u8),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        match e.kind() {
            // Linux reports an expired SO_RCVTIMEO as WouldBlock.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            _ => FrameError::Io(e),
        }
    }
}

fn crc_of(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

/// Appends one frame to `buf`. Callers keep payloads within `max_frame_bytes`, which
/// `TcpConfig` bounds below `u32::MAX`.
pub(crate) fn encode(buf: &mut Vec<u8>, ty: FrameType, payload: &[u8]) {
    debug_assert!(
        payload.len() <= u32::MAX as usize,
        "payload length fits u32"
    );
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(ty as u8);
    let crc = crc_of(&buf[start..start + 5], payload);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// One frame as a fresh buffer.
pub(crate) fn encoded(ty: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
    encode(&mut buf, ty, payload);
    buf
}

/// Reads one frame whose payload is at most `max_bytes`.
pub(crate) fn read_frame<R: Read>(
    r: &mut R,
    max_bytes: u32,
) -> Result<(FrameType, Vec<u8>), FrameError> {
    let mut head = [0u8; HEADER_BYTES];
    let mut filled = 0;
    // At most HEADER_BYTES successful reads; interrupted reads are retried, as
    // `read_exact` does.
    while filled < HEADER_BYTES {
        match r.read(&mut head[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            len_bytes: u64::from(len),
            max_bytes: u64::from(max_bytes),
        });
    }
    let stored = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    // Grows with what actually arrives, so a length field alone cannot make us
    // allocate up to the limit.
    let mut payload = Vec::with_capacity((len as usize).min(INITIAL_PAYLOAD_BYTES));
    r.by_ref().take(u64::from(len)).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    let computed = crc_of(&head[..5], &payload);
    if computed != stored {
        return Err(FrameError::BadCrc { stored, computed });
    }
    let ty = FrameType::from_u8(head[4]).ok_or(FrameError::UnknownType(head[4]))?;
    Ok((ty, payload))
}

/// Reads from a stream with one deadline for the whole exchange rather than one per
/// `read` call, so a peer dripping a byte at a time cannot stretch a handshake.
pub(crate) struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    pub(crate) fn new(stream: &'a TcpStream, deadline: Instant) -> DeadlineReader<'a> {
        DeadlineReader { stream, deadline }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, FrameType::Message, b"hello");
        encode(&mut buf, FrameType::Ping, b"");
        let mut r = &buf[..];
        let (ty, p) = read_frame(&mut r, 100).unwrap();
        assert_eq!((ty, p.as_slice()), (FrameType::Message, &b"hello"[..]));
        let (ty, p) = read_frame(&mut r, 100).unwrap();
        assert_eq!((ty, p.len()), (FrameType::Ping, 0));
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Closed)));

        // Every single-byte flip is caught by the length check, the CRC, or a short
        // read; none decodes as a different frame.
        let good = encoded(FrameType::Message, b"payload");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(read_frame(&mut &bad[..], 100).is_err(), "flip at {i}");
        }
        // Over the limit: refused before the payload is read.
        let big = encoded(FrameType::Message, &[0u8; 101]);
        assert!(matches!(
            read_frame(&mut &big[..HEADER_BYTES], 100),
            Err(FrameError::TooLarge { len_bytes: 101, .. })
        ));
        // Cut inside a frame.
        assert!(matches!(
            read_frame(&mut &good[..good.len() - 1], 100),
            Err(FrameError::Io(_))
        ));
        // A well-formed frame of an unknown type.
        let mut odd = encoded(FrameType::Message, b"x");
        odd[4] = 99;
        let crc = crc_of(&odd[..5], b"x");
        odd[5..9].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &odd[..], 100),
            Err(FrameError::UnknownType(99))
        ));
    }
}
