//! The data Raft keeps and exchanges: entries, hard state, membership, snapshots and
//! messages. Plain structs with public fields, like raft-rs's `eraftpb`; the binary form
//! lives in [`crate::codec`].

mod conf;
mod entry;
mod message;

pub use conf::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};
pub use entry::{Entry, EntryType, HardState};
pub use message::{Message, MessageType, Snapshot, SnapshotMetadata};
