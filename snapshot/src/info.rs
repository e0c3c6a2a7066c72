//! What a snapshot says about itself besides the state machine's bytes: where it sits
//! in the log and the membership there (raft-core's [`SnapshotMetadata`]), and the
//! peer address of each member as the log recorded it ([`MemberAddresses`]).
//!
//! Raft's `ConfState` names members by id only. A member added at runtime is reachable
//! only through the address its membership change carried, and once the log below a
//! snapshot is compacted that change is gone; so the snapshot carries the addresses
//! too (in its header, see [`crate::chunk`]). What the addresses mean is the engine's
//! business: this crate stores them and checks their bounds.

use std::collections::BTreeMap;

use keel_raft::SnapshotMetadata;

/// Node id → peer address (`HOST:PORT` for keel's TCP transport), for the members
/// whose membership change carried one.
pub type MemberAddresses = BTreeMap<u64, String>;

/// Most members with an address one snapshot carries.
pub const MAX_MEMBERS: usize = 1024;

/// Longest address one member may have, in bytes (a DNS name is at most 253 bytes;
/// with a port it fits with room to spare).
pub const MAX_MEMBER_ADDRESS_BYTES: usize = 512;

/// A snapshot's description: raft's metadata and the members' addresses as of
/// `metadata.index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Where the snapshot sits in the log and the membership there.
    pub metadata: SnapshotMetadata,
    /// The members' peer addresses at that point.
    pub members: MemberAddresses,
}

impl From<SnapshotMetadata> for SnapshotInfo {
    /// A description without addresses.
    fn from(metadata: SnapshotMetadata) -> SnapshotInfo {
        SnapshotInfo {
            metadata,
            members: MemberAddresses::new(),
        }
    }
}

/// Why `members` cannot be written into a snapshot, if it cannot: more than
/// [`MAX_MEMBERS`], an id 0, or an address empty or longer than
/// [`MAX_MEMBER_ADDRESS_BYTES`].
pub fn check_members(members: &MemberAddresses) -> Result<(), String> {
    if members.len() > MAX_MEMBERS {
        return Err(format!(
            "{} member addresses, at most {MAX_MEMBERS}",
            members.len()
        ));
    }
    for (&id, addr) in members {
        check_member(id, addr)?;
    }
    Ok(())
}

/// Why one member's address cannot be written into a snapshot, if it cannot.
pub fn check_member(id: u64, addr: &str) -> Result<(), String> {
    if id == 0 {
        return Err("a member address for node id 0".into());
    }
    if addr.is_empty() || addr.len() > MAX_MEMBER_ADDRESS_BYTES {
        return Err(format!(
            "the address of node {id} has {} bytes, allowed 1..={MAX_MEMBER_ADDRESS_BYTES}",
            addr.len()
        ));
    }
    Ok(())
}
