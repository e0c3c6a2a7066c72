//! Snapshots and the messages Raft nodes exchange.

use super::{ConfState, Entry};

/// Where a snapshot sits in the log and the membership at that point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    /// Membership as of `index`.
    pub conf_state: ConfState,
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
}

/// A point-in-time image of the state machine plus its position in the log.
///
/// raft-core never looks inside `data`; an engine that streams snapshots may put a
/// small descriptor here instead of the state itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Position and membership.
    pub metadata: SnapshotMetadata,
    /// Opaque state-machine bytes.
    pub data: Vec<u8>,
}

impl Snapshot {
    /// Whether this is the empty placeholder snapshot (index 0).
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// Every kind of message a Raft node sends, receives, or steps into itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// Local: start an election.
    #[default]
    Hup,
    /// Local: the leader should broadcast heartbeats.
    Beat,
    /// Local or forwarded: append entries to the log.
    Propose,
    /// Leader → follower: entries to append.
    Append,
    /// Follower → leader: result of an append.
    AppendResponse,
    /// Candidate → all: vote for me.
    RequestVote,
    /// Answer to a vote request.
    RequestVoteResponse,
    /// Leader → follower: install this snapshot.
    Snapshot,
    /// Leader → follower: I am still leader; here is the commit index.
    Heartbeat,
    /// Follower → leader: answer to a heartbeat.
    HeartbeatResponse,
    /// Local: a peer could not be reached.
    Unreachable,
    /// Local: the outcome of sending a snapshot.
    SnapStatus,
    /// Local: the leader should check it still has a quorum.
    CheckQuorum,
    /// Local or forwarded: hand leadership to `from`.
    TransferLeader,
    /// Leader → transferee: start an election now.
    TimeoutNow,
    /// Local or forwarded: request a linearizable read index.
    ReadIndex,
    /// Leader → follower: the read index for a forwarded request.
    ReadIndexResp,
    /// Pre-candidate → all: would you vote for me?
    RequestPreVote,
    /// Answer to a pre-vote request.
    RequestPreVoteResponse,
}

impl MessageType {
    /// All message types, in codec tag order.
    pub const ALL: [MessageType; 19] = [
        MessageType::Hup,
        MessageType::Beat,
        MessageType::Propose,
        MessageType::Append,
        MessageType::AppendResponse,
        MessageType::RequestVote,
        MessageType::RequestVoteResponse,
        MessageType::Snapshot,
        MessageType::Heartbeat,
        MessageType::HeartbeatResponse,
        MessageType::Unreachable,
        MessageType::SnapStatus,
        MessageType::CheckQuorum,
        MessageType::TransferLeader,
        MessageType::TimeoutNow,
        MessageType::ReadIndex,
        MessageType::ReadIndexResp,
        MessageType::RequestPreVote,
        MessageType::RequestPreVoteResponse,
    ];

    /// Whether the message is generated and consumed inside one node only.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            MessageType::Hup
                | MessageType::Beat
                | MessageType::Unreachable
                | MessageType::SnapStatus
                | MessageType::CheckQuorum
        )
    }

    /// Whether this is a response to another message.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::AppendResponse
                | MessageType::RequestVoteResponse
                | MessageType::HeartbeatResponse
                | MessageType::ReadIndexResp
                | MessageType::RequestPreVoteResponse
        )
    }

    /// Whether a node may relay this message on behalf of another: a follower passes
    /// proposals, read requests and leadership-transfer requests on to its leader with
    /// `from` left as the node that asked (as etcd does), so the leader answers a read
    /// to the asker and hands leadership to the requested node. A transport that checks
    /// `from` against the connection's peer must accept any member as `from` for these.
    pub fn is_relayable(self) -> bool {
        matches!(
            self,
            MessageType::Propose | MessageType::ReadIndex | MessageType::TransferLeader
        )
    }

    /// The response type that answers a (pre-)vote request.
    pub fn vote_response(self) -> MessageType {
        match self {
            MessageType::RequestPreVote => MessageType::RequestPreVoteResponse,
            _ => MessageType::RequestVoteResponse,
        }
    }
}

/// A Raft message. Which fields are meaningful depends on `msg_type`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The kind of message.
    pub msg_type: MessageType,
    /// Recipient id.
    pub to: u64,
    /// Sender id.
    pub from: u64,
    /// Sender's term (0 for local messages and proposals).
    pub term: u64,
    /// Term of the entry at `index` (append), or of the candidate's last entry (vote).
    pub log_term: u64,
    /// Index preceding `entries` (append), the matched/rejected index (append response),
    /// or the candidate's last index (vote).
    pub index: u64,
    /// Entries carried (append, propose; read-index context in `entries[0].data`).
    pub entries: Vec<Entry>,
    /// The sender's commit index.
    pub commit: u64,
    /// Snapshot carried by `Snapshot` messages.
    pub snapshot: Option<Snapshot>,
    /// Whether the request is rejected.
    pub reject: bool,
    /// On a rejected append: the follower's hint of its last index for fast backtracking.
    pub reject_hint: u64,
    /// Opaque context (campaign kind for votes, read context for heartbeats).
    pub context: Vec<u8>,
}

impl Message {
    /// A message of the given type addressed from `from` to `to`.
    pub fn new(msg_type: MessageType, from: u64, to: u64) -> Message {
        Message {
            msg_type,
            from,
            to,
            ..Message::default()
        }
    }
}
