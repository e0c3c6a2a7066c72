//! Who an encoded Raft message says it is from and to, read from the first bytes of
//! raft-core's codec without decoding the rest. The receiver compares the sender with
//! the one the connection's handshake proved, so a peer cannot speak for another.

use keel_raft::codec::Reader;
use keel_raft::MessageType;

/// The head of an encoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) msg_type: MessageType,
    pub(crate) to: u64,
    pub(crate) from: u64,
}

/// Reads the head of `bytes`, or `None` if they do not start like a message of this
/// build's format (version byte, type tag, `to`, `from`; see raft-core's codec).
pub(crate) fn route_of(bytes: &[u8]) -> Option<Route> {
    let mut r = Reader::new(bytes);
    if r.u8().ok()? != keel_raft::codec::FORMAT_VERSION {
        return None;
    }
    let tag = r.u8().ok()?;
    let msg_type = *MessageType::ALL.get(usize::from(tag))?;
    let to = r.varint().ok()?;
    let from = r.varint().ok()?;
    Some(Route { msg_type, to, from })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{codec, Message};

    #[test]
    fn reads_the_head_of_real_messages() {
        for (i, ty) in MessageType::ALL.iter().enumerate() {
            let m = Message {
                msg_type: *ty,
                to: 300 + i as u64,
                from: 1 << 40,
                term: 9,
                ..Message::default()
            };
            let route = route_of(&codec::encode(&m)).unwrap();
            assert_eq!(route.msg_type, *ty);
            assert_eq!((route.to, route.from), (m.to, m.from));
        }
        assert_eq!(route_of(b""), None);
        assert_eq!(route_of(&[codec::FORMAT_VERSION, 250, 1, 1]), None);
        assert_eq!(route_of(&[codec::FORMAT_VERSION + 1, 0, 1, 1]), None);
    }
}
