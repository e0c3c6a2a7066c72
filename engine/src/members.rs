//! The member address book: each member's peer address, as the membership change that
//! added it carried it. Replicated state like the map itself: the apply stage keeps it
//! from the changes it applies, every snapshot carries it (`keel_snapshot::SnapshotInfo`),
//! and a node restores it from its own newest snapshot at start and from each
//! snapshot the leader installs, then replays the log above as usual. So a member
//! added at runtime stays reachable after the changes that added it are compacted.
//!
//! Owns the context format of a change that adds a node ([`member_context`]): the JSON
//! object `{"addr":"HOST:PORT","id":4}` (`keel serve` has written exactly these
//! bytes since membership changes existed, so existing logs decode). Any other
//! context (none, or an embedder's own bytes) simply carries no address.

use std::collections::BTreeMap;

use keel_raft::{ConfChangeType, ConfChangeV2, ConfState};
use keel_snapshot::info::{check_member, MAX_MEMBERS, MAX_MEMBER_ADDRESS_BYTES};

/// The membership as of one log index, with the members' peer addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// The log index of the membership change or snapshot this comes from.
    pub index: u64,
    /// Who the members are.
    pub conf_state: ConfState,
    /// Node id → peer address, for the members added by a change that carried one
    /// (see [`member_context`]); at most [`keel_snapshot::info::MAX_MEMBERS`] entries.
    pub addresses: BTreeMap<u64, String>,
}

// A context longer than this is not one of ours (ours is the address plus a few dozen
// bytes), so it is not parsed at all.
const MAX_CONTEXT_BYTES: usize = MAX_MEMBER_ADDRESS_BYTES * 2 + 64;

/// The context bytes of a change that adds node `id`, reachable at `addr`: what makes
/// every member, and every later snapshot, know the address.
pub fn member_context(id: u64, addr: &str) -> Vec<u8> {
    // serde_json's object keeps its keys sorted: `{"addr":…,"id":…}`, byte for byte
    // what earlier versions wrote.
    serde_json::json!({ "id": id, "addr": addr })
        .to_string()
        .into_bytes()
}

/// The node and address a change's context carries, if the context is a
/// [`member_context`] naming a node the change adds, with an address within
/// [`keel_snapshot::info::MAX_MEMBER_ADDRESS_BYTES`]. Never fails: anything else (no
/// context, another format, hostile bytes) carries no address.
pub fn member_address(change: &ConfChangeV2) -> Option<(u64, String)> {
    let (id, addr) = decode_context(&change.context)?;
    let adds = change.changes.iter().any(|c| {
        c.node_id == id
            && matches!(
                c.change_type,
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
            )
    });
    adds.then_some((id, addr))
}

fn decode_context(bytes: &[u8]) -> Option<(u64, String)> {
    if bytes.is_empty() || bytes.len() > MAX_CONTEXT_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let id = v.get("id")?.as_u64()?;
    let addr = v.get("addr")?.as_str()?;
    check_member(id, addr).ok()?;
    Some((id, addr.to_string()))
}

// Every id the membership names, joint configurations included.
fn is_member(cs: &ConfState, id: u64) -> bool {
    [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&id))
}

impl Members {
    /// The book restored from a snapshot's description, keeping only addresses of its
    /// members.
    pub(crate) fn from_snapshot(info: keel_snapshot::SnapshotInfo) -> Members {
        let mut members = Members {
            index: info.metadata.index,
            conf_state: info.metadata.conf_state,
            addresses: info.members,
        };
        let cs = &members.conf_state;
        members.addresses.retain(|&id, _| is_member(cs, id));
        members
    }

    /// Applies `change`, the entry at `index`, which left the membership
    /// `conf_state`: the address it carries is recorded, and addresses of nodes that
    /// are no longer members (removed, or out of a joint configuration that was left)
    /// are dropped. Deterministic, so every replica keeps the same book.
    pub(crate) fn apply(&mut self, index: u64, change: &ConfChangeV2, conf_state: &ConfState) {
        debug_assert!(index > self.index, "changes apply in log order");
        if let Some((id, addr)) = member_address(change) {
            if self.addresses.len() < MAX_MEMBERS || self.addresses.contains_key(&id) {
                self.addresses.insert(id, addr);
            } else {
                // Every replica skips it alike; the node stays reachable through the
                // addresses operators give (`keel serve --peers`).
                log::warn!(
                    "membership change at {index}: node {id}'s address not recorded, \
                     the book already holds {MAX_MEMBERS}"
                );
            }
        }
        self.addresses.retain(|&id, _| is_member(conf_state, id));
        self.index = index;
        self.conf_state = conf_state.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{ConfChangeSingle, ConfChangeTransition};

    fn change(change_type: ConfChangeType, node_id: u64, context: Vec<u8>) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type,
                node_id,
            }],
            context,
        }
    }

    fn voters(ids: &[u64]) -> ConfState {
        ConfState {
            voters: ids.to_vec(),
            ..ConfState::default()
        }
    }

    #[test]
    fn contexts_written_by_earlier_versions_decode() {
        // What `keel serve` stored before the engine owned the format.
        let old = br#"{"addr":"127.0.0.1:9","id":4}"#;
        assert_eq!(member_context(4, "127.0.0.1:9"), old.to_vec());
        let add = change(ConfChangeType::AddNode, 4, old.to_vec());
        assert_eq!(member_address(&add), Some((4, "127.0.0.1:9".into())));
        // Any key order, escapes included.
        let other = br#"{"id":5,"addr":"h\"x:1"}"#.to_vec();
        let add = change(ConfChangeType::AddLearnerNode, 5, other);
        assert_eq!(member_address(&add), Some((5, "h\"x:1".into())));
    }

    #[test]
    fn anything_else_carries_no_address() {
        let ctx = member_context(4, "h:1");
        for cc in [
            change(ConfChangeType::AddNode, 5, ctx.clone()), // names another node
            change(ConfChangeType::RemoveNode, 4, ctx),
            change(ConfChangeType::AddNode, 4, b"addr-of-4".to_vec()),
            change(ConfChangeType::AddNode, 4, Vec::new()),
            change(ConfChangeType::AddNode, 4, br#"{"id":4}"#.to_vec()),
            change(
                ConfChangeType::AddNode,
                4,
                br#"{"id":-4,"addr":"h:1"}"#.to_vec(),
            ),
            change(ConfChangeType::AddNode, 0, member_context(0, "h:1")),
            change(ConfChangeType::AddNode, 4, member_context(4, "")),
            change(
                ConfChangeType::AddNode,
                4,
                member_context(4, &"h".repeat(MAX_MEMBER_ADDRESS_BYTES + 1)),
            ),
            change(ConfChangeType::AddNode, 4, vec![b'['; 100_000]),
        ] {
            assert_eq!(member_address(&cc), None, "{cc:?}");
        }
    }

    #[test]
    fn the_book_follows_the_membership() {
        let mut book = Members::default();
        let add4 = change(ConfChangeType::AddNode, 4, member_context(4, "h4:1"));
        book.apply(5, &add4, &voters(&[1, 2, 3, 4]));
        assert_eq!(book.addresses, [(4, "h4:1".to_string())].into());
        // Promoting without a context keeps the address; a new one replaces it.
        let promote = change(ConfChangeType::AddNode, 4, Vec::new());
        book.apply(6, &promote, &voters(&[1, 2, 3, 4]));
        assert_eq!(book.addresses[&4], "h4:1");
        let moved = change(ConfChangeType::AddNode, 4, member_context(4, "h4:2"));
        book.apply(7, &moved, &voters(&[1, 2, 3, 4]));
        assert_eq!(book.addresses[&4], "h4:2");
        // Leaving a joint configuration keeps the outgoing voter until it is left.
        let joint = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![1, 2, 3, 4],
            ..ConfState::default()
        };
        let remove = change(ConfChangeType::RemoveNode, 4, Vec::new());
        book.apply(8, &remove, &joint);
        assert_eq!(book.addresses[&4], "h4:2");
        let leave = ConfChangeV2::default();
        book.apply(9, &leave, &voters(&[1, 2, 3]));
        assert!(book.addresses.is_empty());
        assert_eq!(
            (book.index, book.conf_state.clone()),
            (9, voters(&[1, 2, 3]))
        );
    }

    #[test]
    fn a_restored_book_keeps_only_members() {
        let info = keel_snapshot::SnapshotInfo {
            metadata: keel_raft::SnapshotMetadata {
                index: 40,
                term: 3,
                conf_state: voters(&[1, 4]),
            },
            members: [(4, "h4:1".to_string()), (9, "h9:1".to_string())].into(),
        };
        let book = Members::from_snapshot(info);
        assert_eq!(book.index, 40);
        assert_eq!(book.addresses, [(4, "h4:1".to_string())].into());
    }
}
