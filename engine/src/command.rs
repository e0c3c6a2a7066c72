//! What a normal log entry carries: a state machine's command, plus who proposed it so
//! the proposing node can answer its caller once the entry is applied; and the
//! key-value store's command, [`Op`].
//!
//! Entry layout (keel-raft's varint and length-prefixed bytes):
//! `version u8 | origin varint | request id varint | command bytes (the rest)`.
//! An [`Op`] is `op u8 | key bytes | value bytes` (no value for a delete), so the
//! key-value store's entries are byte for byte what they were before state machines
//! became pluggable, and logs written then replay now.

use keel_raft::codec::{put_bytes, put_varint, DecodeError as CodecError, Reader};

use crate::state_machine::{Command, DecodeError};

const VERSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Bytes the entry framing adds to a command's encoding, at most: the format version
/// and the origin node and request id (varints).
pub(crate) const ENVELOPE_BYTES: u64 = 1 + 10 + 10;

/// Bytes a command may leave out of its [`Command::size_bytes`], at most: an [`Op`]'s
/// tag and its two length varints.
pub const COMMAND_FRAMING_MAX_BYTES: u64 = 1 + 10 + 10;

/// One write to the key-value store ([`KvStore`](crate::state_machine::KvStore)).
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

impl Command for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        // One allocation for the whole entry: tag, two length varints, key and value.
        out.reserve(COMMAND_FRAMING_MAX_BYTES as usize + Op::size_bytes(self) as usize);
        match self {
            Op::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(out, key);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Op, DecodeError> {
        let mut r = Reader::new(bytes);
        let op = match r.u8()? {
            OP_PUT => Op::Put {
                key: r.bytes()?,
                value: r.bytes()?,
            },
            OP_DELETE => Op::Delete { key: r.bytes()? },
            tag => {
                return Err(Box::new(CodecError::BadTag {
                    what: "command op",
                    tag,
                    offset: 0,
                }))
            }
        };
        r.finish()?;
        Ok(op)
    }

    /// Key and value bytes: the tag and lengths are framing.
    fn size_bytes(&self, _encoded_bytes: usize) -> u64 {
        Op::size_bytes(self)
    }
}

/// A decoded entry payload: who proposed it, and the command's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    /// The node whose caller waits for this entry.
    pub(crate) origin: u64,
    /// That node's request id (never reused, not even across restarts; see `proposals`).
    pub(crate) request_id: u64,
    /// The command, as [`Command::encode`] wrote it.
    pub(crate) command: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses an entry payload; a damaged or unknown one is an error, never a panic.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let origin = r.varint()?;
        let request_id = r.varint()?;
        let command = &bytes[bytes.len() - r.remaining()..];
        Ok(Envelope {
            origin,
            request_id,
            command,
        })
    }
}

/// The entry payload of `command` proposed by node `origin` under `request_id`, and
/// how many of its bytes are the command's.
pub(crate) fn encode<C: Command>(origin: u64, request_id: u64, command: &C) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(ENVELOPE_BYTES as usize);
    out.push(VERSION);
    put_varint(&mut out, origin);
    put_varint(&mut out, request_id);
    let header_bytes = out.len();
    command.encode(&mut out);
    let command_bytes = out.len() - header_bytes;
    (out, command_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Option<(u64, u64, Op)> {
        let env = Envelope::decode(bytes).ok()?;
        let op = Op::decode(env.command).ok()?;
        Some((env.origin, env.request_id, op))
    }

    #[test]
    fn round_trip_and_truncations_fail() {
        let put = Op::Put {
            key: b"k".to_vec(),
            value: b"value".to_vec(),
        };
        let (bytes, _) = encode(3, 77, &put);
        assert_eq!(decoded(&bytes), Some((3, 77, put)));
        for cut in 0..bytes.len() {
            assert!(decoded(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let del = Op::Delete { key: b"k".to_vec() };
        assert_eq!(decoded(&encode(1, 1, &del).0), Some((1, 1, del)));
    }

    // The layout from before state machines became pluggable: a log written then
    // must replay now.
    #[test]
    fn the_key_value_layout_is_unchanged() {
        let put = Op::Put {
            key: b"ab".to_vec(),
            value: b"c".to_vec(),
        };
        assert_eq!(
            encode(2, 5, &put).0,
            [1, 2, 5, OP_PUT, 2, b'a', b'b', 1, b'c']
        );
        let del = Op::Delete { key: b"x".to_vec() };
        assert_eq!(
            encode(1, 300, &del).0,
            [1, 1, 0xac, 0x02, OP_DELETE, 1, b'x']
        );
    }
}
