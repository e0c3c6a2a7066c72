//! The handshake that opens every connection: the dialer sends a hello (magic,
//! protocol version, connection kind, its id, the id it means to reach, the cluster
//! id) and the acceptor answers accept or reject-with-reason. Identity is what the
//! hello says and the acceptor checks, never the address a connection came from.
//!
//! ```text
//! hello: magic "KEEL" | version: u16 LE | kind: u8 | from: u64 LE | to: u64 LE
//!        | cluster_id_len: u8 | cluster_id (UTF-8)
//! ack:   status: u8 (0 accepted, 1 rejected) | from: u64 LE | reason_len: u16 LE | reason
//! ```

use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

use super::frame::{self, DeadlineReader, FrameError, FrameType, MAX_HANDSHAKE_FRAME_BYTES};

/// The first bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"KEEL";
/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u16 = 1;
/// Longest cluster id (it travels with a one-byte length).
pub(crate) const MAX_CLUSTER_ID_BYTES: usize = 255;
// Longest rejection reason sent; longer ones are cut (at a character boundary).
const MAX_REASON_BYTES: usize = 512;

/// What a connection carries after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// Raft messages (and pings), dialer to acceptor, for as long as it lives.
    Messages,
    /// One snapshot: its message, its chunks, then the acceptor's result.
    Snapshot,
}

impl ConnKind {
    fn to_u8(self) -> u8 {
        match self {
            ConnKind::Messages => 1,
            ConnKind::Snapshot => 2,
        }
    }

    fn from_u8(b: u8) -> Option<ConnKind> {
        match b {
            1 => Some(ConnKind::Messages),
            2 => Some(ConnKind::Snapshot),
            _ => None,
        }
    }
}

/// The dialer's introduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) kind: ConnKind,
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) cluster_id: String,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Reading or writing a frame failed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The bytes are not a hello or ack of this protocol.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    /// The peer speaks another protocol version.
    #[error("protocol version {got}, this node speaks {PROTOCOL_VERSION}")]
    Version {
        /// The peer's version.
        got: u16,
    },
    /// The acceptor refused us.
    #[error("rejected by the peer: {0}")]
    Rejected(String),
    /// The acceptor is not the node we meant to reach.
    #[error("answered by node {got}, expected node {expected}")]
    WrongPeer {
        /// The id we dialled for.
        expected: u64,
        /// The id that answered.
        got: u64,
    },
}

fn encode_hello(h: &Hello) -> Vec<u8> {
    debug_assert!(
        h.cluster_id.len() <= MAX_CLUSTER_ID_BYTES,
        "checked by TcpConfig"
    );
    let mut p = Vec::with_capacity(32 + h.cluster_id.len());
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    p.push(h.kind.to_u8());
    p.extend_from_slice(&h.from.to_le_bytes());
    p.extend_from_slice(&h.to.to_le_bytes());
    p.push(h.cluster_id.len() as u8);
    p.extend_from_slice(h.cluster_id.as_bytes());
    p
}

// A cursor that fails instead of panicking on short input.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(HandshakeError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HandshakeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, HandshakeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn end(&self) -> Result<(), HandshakeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed("trailing bytes"))
        }
    }
}

fn decode_hello(p: &[u8]) -> Result<Hello, HandshakeError> {
    let mut b = Bytes(p);
    if b.take(4)? != MAGIC {
        return Err(HandshakeError::Malformed("bad magic"));
    }
    let version = b.u16()?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { got: version });
    }
    let kind = ConnKind::from_u8(b.u8()?).ok_or(HandshakeError::Malformed("unknown kind"))?;
    let from = b.u64()?;
    let to = b.u64()?;
    let len = usize::from(b.u8()?);
    let cluster_id = std::str::from_utf8(b.take(len)?)
        .map_err(|_| HandshakeError::Malformed("cluster id is not UTF-8"))?
        .to_string();
    b.end()?;
    Ok(Hello {
        kind,
        from,
        to,
        cluster_id,
    })
}

fn encode_ack(accepted: bool, from: u64, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut p = Vec::with_capacity(11 + reason.len());
    p.push(u8::from(!accepted));
    p.extend_from_slice(&from.to_le_bytes());
    p.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    p.extend_from_slice(reason);
    p
}

fn decode_ack(p: &[u8]) -> Result<(bool, u64, String), HandshakeError> {
    let mut b = Bytes(p);
    let accepted = match b.u8()? {
        0 => true,
        1 => false,
        _ => return Err(HandshakeError::Malformed("bad ack status")),
    };
    let from = b.u64()?;
    let len = usize::from(b.u16()?);
    let reason = String::from_utf8_lossy(b.take(len)?).into_owned();
    b.end()?;
    Ok((accepted, from, reason))
}

/// Dialer side: sends `hello` and waits, until `deadline`, for the acceptor to accept.
/// The stream's write timeout must already be set.
pub(crate) fn introduce(
    stream: &TcpStream,
    hello: &Hello,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let bytes = frame::encoded(FrameType::Hello, &encode_hello(hello));
    let mut w = stream;
    w.write_all(&bytes).map_err(FrameError::from)?;
    let mut r = DeadlineReader::new(stream, deadline);
    let (ty, payload) = frame::read_frame(&mut r, MAX_HANDSHAKE_FRAME_BYTES)?;
    if ty != FrameType::HelloAck {
        return Err(HandshakeError::Malformed("expected an ack"));
    }
    let (accepted, from, reason) = decode_ack(&payload)?;
    if !accepted {
        return Err(HandshakeError::Rejected(reason));
    }
    if from != hello.to {
        return Err(HandshakeError::WrongPeer {
            expected: hello.to,
            got: from,
        });
    }
    Ok(())
}

/// Acceptor side: reads the hello, which must arrive whole before `deadline`.
pub(crate) fn read_hello(stream: &TcpStream, deadline: Instant) -> Result<Hello, HandshakeError> {
    let mut r = DeadlineReader::new(stream, deadline);
    let (ty, payload) = frame::read_frame(&mut r, MAX_HANDSHAKE_FRAME_BYTES)?;
    if ty != FrameType::Hello {
        return Err(HandshakeError::Malformed("expected a hello"));
    }
    decode_hello(&payload)
}

/// Acceptor side: answers a hello (`reason` is ignored when accepting). The stream's
/// write timeout must already be set.
pub(crate) fn answer(
    stream: &TcpStream,
    accepted: bool,
    own_id: u64,
    reason: &str,
) -> Result<(), FrameError> {
    let bytes = frame::encoded(
        FrameType::HelloAck,
        &encode_ack(accepted, own_id, if accepted { "" } else { reason }),
    );
    let mut w = stream;
    w.write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_ack_round_trip_and_refuse_damage() {
        let h = Hello {
            kind: ConnKind::Snapshot,
            from: 3,
            to: u64::MAX,
            cluster_id: "prod-ü".into(),
        };
        let p = encode_hello(&h);
        assert_eq!(decode_hello(&p).unwrap(), h);
        for cut in 0..p.len() {
            assert!(decode_hello(&p[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = p.clone();
        long.push(0);
        assert!(decode_hello(&long).is_err());
        let mut v2 = p.clone();
        v2[4] = 2;
        assert!(matches!(
            decode_hello(&v2),
            Err(HandshakeError::Version { got: 2 })
        ));

        let a = encode_ack(false, 7, &"é".repeat(400));
        let (ok, from, reason) = decode_ack(&a).unwrap();
        assert!(!ok);
        assert_eq!(from, 7);
        assert!(reason.len() <= MAX_REASON_BYTES && reason.starts_with('é'));
        assert_eq!(
            decode_ack(&encode_ack(true, 1, "")).unwrap(),
            (true, 1, String::new())
        );
    }
}
