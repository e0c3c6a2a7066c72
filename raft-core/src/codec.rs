//! A versioned, hand-written binary codec for every raft-core type.
//!
//! Used on the wire between nodes and inside WAL records. A top-level encoding is one
//! format-version byte followed by the value's body. Integers are LEB128 varints (most
//! indexes and terms are small), byte strings and lists are length-prefixed, enums are
//! one tag byte, and an optional value is a presence byte.
//!
//! Decoding is total: any byte string yields a value or a [`DecodeError`], never a
//! panic, and a length prefix can never make the decoder allocate more than the input
//! could hold.
//!
//! ```
//! use keel_raft::{codec, Entry};
//! let e = Entry::new(3, 7, b"hello".to_vec());
//! let bytes = codec::encode(&e);
//! assert_eq!(codec::decode::<Entry>(&bytes).unwrap(), e);
//! ```

use crate::types::*;

/// The format version written by this build. Bump it when a layout changes and keep
/// decoding the older versions.
pub const FORMAT_VERSION: u8 = 1;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("input truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset at which more bytes were needed.
        offset: usize,
        /// How many more bytes.
        needed: usize,
    },
    /// The leading format-version byte is not one this build understands.
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// A varint ran past 10 bytes or overflowed 64 bits.
    #[error("malformed varint at offset {0}")]
    BadVarint(usize),
    /// An enum tag has no meaning.
    #[error("invalid {what} tag {tag} at offset {offset}")]
    BadTag {
        /// Which enum.
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Where.
        offset: usize,
    },
    /// A length or count prefix exceeds what the rest of the input could hold.
    #[error("length {len} at offset {offset} exceeds the {remaining} bytes remaining")]
    BadLength {
        /// The declared length.
        len: u64,
        /// Where the prefix was.
        offset: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Types with a binary body form. Use [`encode`] and [`decode`] for the versioned
/// top-level form.
pub trait Codec: Sized {
    /// Appends the body of `self` to `buf`.
    fn encode_body(&self, buf: &mut Vec<u8>);
    /// Reads one body from `r`.
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Encodes `value` with a leading format-version byte.
pub fn encode<T: Codec>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    encode_into(value, &mut buf);
    buf
}

/// Appends the versioned encoding of `value` to `buf`.
pub fn encode_into<T: Codec>(value: &T, buf: &mut Vec<u8>) {
    buf.push(FORMAT_VERSION);
    value.encode_body(buf);
}

/// Decodes a versioned value that must span all of `bytes`.
pub fn decode<T: Codec>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let value = T::decode_body(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// A cursor over input bytes that checks every read.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            offset: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            // The tenth byte may only contribute the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint(start));
            }
            value |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint(start))
    }

    /// Reads a boolean byte (0 or 1).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag {
                what: "bool",
                tag,
                offset,
            }),
        }
    }

    /// Reads a length prefix that promises at least `min_item_bytes` per item.
    pub fn len_prefix(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let len = self.varint()?;
        let remaining = self.remaining();
        let fits = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes.max(1)))
            .is_some_and(|bytes| bytes <= remaining);
        if !fits {
            return Err(DecodeError::BadLength {
                len,
                offset,
                remaining,
            });
        }
        Ok(len as usize)
    }

    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.len_prefix(1)?;
        let out = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(out)
    }

    /// Reads a length-prefixed list of varints.
    pub fn varint_list(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.len_prefix(1)?;
        (0..n).map(|_| self.varint()).collect()
    }

    /// Reads an enum tag and maps it through `table`.
    fn tag<T: Copy>(&mut self, what: &'static str, table: &[T]) -> Result<T, DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        table
            .get(usize::from(tag))
            .copied()
            .ok_or(DecodeError::BadTag { what, tag, offset })
    }
}

/// Appends a LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn put_varint_list(buf: &mut Vec<u8>, list: &[u64]) {
    put_varint(buf, list.len() as u64);
    for &v in list {
        put_varint(buf, v);
    }
}

fn put_list<T: Codec>(buf: &mut Vec<u8>, list: &[T]) {
    put_varint(buf, list.len() as u64);
    for item in list {
        item.encode_body(buf);
    }
}

fn read_list<T: Codec>(r: &mut Reader<'_>, min_item_bytes: usize) -> Result<Vec<T>, DecodeError> {
    let n = r.len_prefix(min_item_bytes)?;
    (0..n).map(|_| T::decode_body(r)).collect()
}

const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::Normal,
    EntryType::ConfChange,
    EntryType::ConfChangeV2,
];
const CONF_CHANGE_TYPES: [ConfChangeType; 3] = [
    ConfChangeType::AddNode,
    ConfChangeType::RemoveNode,
    ConfChangeType::AddLearnerNode,
];
const TRANSITIONS: [ConfChangeTransition; 3] = [
    ConfChangeTransition::Auto,
    ConfChangeTransition::JointImplicit,
    ConfChangeTransition::JointExplicit,
];

fn tag_of<T: PartialEq>(table: &[T], value: &T) -> u8 {
    // Every enum value is listed in its table, so the position always exists.
    table.iter().position(|t| t == value).unwrap() as u8
}

impl Codec for Entry {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        buf.push(tag_of(&ENTRY_TYPES, &self.entry_type));
        put_varint(buf, self.term);
        put_varint(buf, self.index);
        put_bytes(buf, &self.data);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            entry_type: r.tag("entry type", &ENTRY_TYPES)?,
            term: r.varint()?,
            index: r.varint()?,
            data: r.bytes()?,
        })
    }
}

impl Codec for HardState {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.term);
        put_varint(buf, self.vote);
        put_varint(buf, self.commit);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HardState {
            term: r.varint()?,
            vote: r.varint()?,
            commit: r.varint()?,
        })
    }
}

impl Codec for ConfState {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        put_varint_list(buf, &self.voters);
        put_varint_list(buf, &self.learners);
        put_varint_list(buf, &self.voters_outgoing);
        put_varint_list(buf, &self.learners_next);
        buf.push(u8::from(self.auto_leave));
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfState {
            voters: r.varint_list()?,
            learners: r.varint_list()?,
            voters_outgoing: r.varint_list()?,
            learners_next: r.varint_list()?,
            auto_leave: r.bool()?,
        })
    }
}

impl Codec for ConfChange {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        buf.push(tag_of(&CONF_CHANGE_TYPES, &self.change_type));
        put_varint(buf, self.node_id);
        put_bytes(buf, &self.context);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfChange {
            change_type: r.tag("conf change type", &CONF_CHANGE_TYPES)?,
            node_id: r.varint()?,
            context: r.bytes()?,
        })
    }
}

impl Codec for ConfChangeSingle {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        buf.push(tag_of(&CONF_CHANGE_TYPES, &self.change_type));
        put_varint(buf, self.node_id);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfChangeSingle {
            change_type: r.tag("conf change type", &CONF_CHANGE_TYPES)?,
            node_id: r.varint()?,
        })
    }
}

impl Codec for ConfChangeV2 {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        buf.push(tag_of(&TRANSITIONS, &self.transition));
        put_list(buf, &self.changes);
        put_bytes(buf, &self.context);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfChangeV2 {
            transition: r.tag("conf change transition", &TRANSITIONS)?,
            changes: read_list(r, 2)?,
            context: r.bytes()?,
        })
    }
}

impl Codec for SnapshotMetadata {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.index);
        put_varint(buf, self.term);
        self.conf_state.encode_body(buf);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SnapshotMetadata {
            index: r.varint()?,
            term: r.varint()?,
            conf_state: ConfState::decode_body(r)?,
        })
    }
}

impl Codec for Snapshot {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        self.metadata.encode_body(buf);
        put_bytes(buf, &self.data);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Snapshot {
            metadata: SnapshotMetadata::decode_body(r)?,
            data: r.bytes()?,
        })
    }
}

impl Codec for Message {
    fn encode_body(&self, buf: &mut Vec<u8>) {
        buf.push(tag_of(&MessageType::ALL, &self.msg_type));
        put_varint(buf, self.to);
        put_varint(buf, self.from);
        put_varint(buf, self.term);
        put_varint(buf, self.log_term);
        put_varint(buf, self.index);
        put_list(buf, &self.entries);
        put_varint(buf, self.commit);
        match &self.snapshot {
            None => buf.push(0),
            Some(s) => {
                buf.push(1);
                s.encode_body(buf);
            }
        }
        buf.push(u8::from(self.reject));
        put_varint(buf, self.reject_hint);
        put_bytes(buf, &self.context);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Message {
            msg_type: r.tag("message type", &MessageType::ALL)?,
            to: r.varint()?,
            from: r.varint()?,
            term: r.varint()?,
            log_term: r.varint()?,
            index: r.varint()?,
            // An entry body is at least 4 bytes: tag, term, index, data length.
            entries: read_list(r, 4)?,
            commit: r.varint()?,
            snapshot: if r.bool()? {
                Some(Snapshot::decode_body(r)?)
            } else {
                None
            },
            reject: r.bool()?,
            reject_hint: r.varint()?,
            context: r.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let buf = [0xff; 11];
        assert!(matches!(
            Reader::new(&buf).varint(),
            Err(DecodeError::BadVarint(0))
        ));
        // Ten bytes whose last contributes more than the top bit overflow.
        let mut buf = [0xff; 10];
        buf[9] = 0x02;
        assert!(Reader::new(&buf).varint().is_err());
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        let mut buf = vec![FORMAT_VERSION, 0, 1, 1];
        put_varint(&mut buf, u64::MAX);
        assert!(matches!(
            decode::<Entry>(&buf),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_errors() {
        let mut bytes = encode(&HardState::default());
        bytes[0] = 9;
        assert_eq!(
            decode::<HardState>(&bytes),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut bytes = encode(&HardState::default());
        bytes.push(0);
        assert_eq!(
            decode::<HardState>(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}
