//! What callers (`Db`) ask of the raft stage, and how a request that will never be
//! handled is answered.

use crate::budget::Charged;
use crate::error::{Error, Result};
use crate::proposals::PendingWrites;
use crate::reply;

use keel_raft::ConfChangeV2;

use super::membership::ConfChangeReply;
use super::read_index::ReadReply;

/// What callers ask of the raft stage.
pub(crate) enum Request {
    /// Propose a write registered in `Proposals` under `id`; `data` is its entry
    /// payload (`command::encode`).
    Propose { id: u64, data: Charged<Vec<u8>> },
    /// A linearizable read: answered with the index the read may be served at.
    Read { reply: ReadReply },
    /// A membership change: answered with the membership once it is applied to raft.
    ConfChange {
        cc: ConfChangeV2,
        reply: ConfChangeReply,
    },
    /// Hand leadership to `target`: answered once the request was passed to raft (the
    /// caller watches the status for the outcome).
    TransferLeader {
        target: u64,
        reply: reply::Sender<Result<()>>,
    },
}

impl Request {
    /// Answers the request with `err` without handling it (its write is failed in
    /// `proposals`).
    pub(crate) fn reject(self, proposals: &dyn PendingWrites, err: impl Fn() -> Error) {
        match self {
            Request::Propose { id, .. } => proposals.fail(id, err()),
            Request::Read { reply } => {
                let _ = reply.try_send(Err(err()));
            }
            Request::ConfChange { reply, .. } => {
                let _ = reply.try_send(Err(err()));
            }
            Request::TransferLeader { reply, .. } => {
                let _ = reply.try_send(Err(err()));
            }
        }
    }
}
