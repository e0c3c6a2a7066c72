//! What a normal log entry carries: one write to the map, plus who proposed it so the
//! proposing node can answer its caller once the entry is applied.
//!
//! Layout (raft-core's varint and length-prefixed bytes):
//! `version u8 | origin varint | request id varint | op u8 | key bytes | value bytes`.

use keel_raft::codec::{put_bytes, put_varint, DecodeError, Reader};

const VERSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One state-machine operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// Bytes of key and value, checked against `max_entry_bytes`.
    pub fn size_bytes(&self) -> u64 {
        match self {
            Op::Put { key, value } => (key.len() + value.len()) as u64,
            Op::Delete { key } => key.len() as u64,
        }
    }
}

/// An operation by reference, for encoding a caller's write without copying its key
/// and value first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpRef<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
}

impl OpRef<'_> {
    /// Bytes of key and value, checked against `max_entry_bytes`.
    pub(crate) fn size_bytes(self) -> u64 {
        match self {
            OpRef::Put { key, value } => (key.len() + value.len()) as u64,
            OpRef::Delete { key } => key.len() as u64,
        }
    }
}

impl<'a> From<&'a Op> for OpRef<'a> {
    fn from(op: &'a Op) -> OpRef<'a> {
        match op {
            Op::Put { key, value } => OpRef::Put { key, value },
            Op::Delete { key } => OpRef::Delete { key },
        }
    }
}

/// An operation tagged with the node and request that proposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The node whose caller waits for this entry.
    pub origin: u64,
    /// That node's request id (never reused, not even across restarts; see `proposals`).
    pub request_id: u64,
    /// The operation.
    pub op: Op,
}

impl Command {
    /// The entry payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.origin, self.request_id, OpRef::from(&self.op))
    }

    /// Parses an entry payload; damaged or unknown payloads are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let origin = r.varint()?;
        let request_id = r.varint()?;
        let op_offset = bytes.len() - r.remaining();
        let op = match r.u8()? {
            OP_PUT => Op::Put {
                key: r.bytes()?,
                value: r.bytes()?,
            },
            OP_DELETE => Op::Delete { key: r.bytes()? },
            tag => {
                return Err(DecodeError::BadTag {
                    what: "command op",
                    tag,
                    offset: op_offset,
                })
            }
        };
        r.finish()?;
        Ok(Command {
            origin,
            request_id,
            op,
        })
    }
}

/// The entry payload of `op` proposed by node `origin` under `request_id`.
pub(crate) fn encode(origin: u64, request_id: u64, op: OpRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + op.size_bytes() as usize);
    out.push(VERSION);
    put_varint(&mut out, origin);
    put_varint(&mut out, request_id);
    match op {
        OpRef::Put { key, value } => {
            out.push(OP_PUT);
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        OpRef::Delete { key } => {
            out.push(OP_DELETE);
            put_bytes(&mut out, key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncations_fail() {
        let c = Command {
            origin: 3,
            request_id: 77,
            op: Op::Put {
                key: b"k".to_vec(),
                value: b"value".to_vec(),
            },
        };
        let bytes = c.encode();
        assert_eq!(Command::decode(&bytes).ok(), Some(c));
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err());
        }
        let d = Command {
            origin: 1,
            request_id: 1,
            op: Op::Delete { key: b"k".to_vec() },
        };
        assert_eq!(Command::decode(&d.encode()).ok(), Some(d));
    }
}
