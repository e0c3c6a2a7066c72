//! Sending what raft produced: ordinary messages are encoded and handed to the
//! transport; `Snapshot` messages go to the snapshot sender thread, which streams the
//! stored snapshot. Shared by the raft stage (a Ready's messages, a follower's
//! forwarded proposals and reads among them, and messages held until a membership
//! change is applied) and the persist stage (messages that had to wait for the disk).

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use keel_raft::{codec, Message, MessageType};

use crate::transport::Transport;

/// What could not be sent, for the raft stage to report back to raft.
#[derive(Debug, Default)]
pub(crate) struct SendFailures {
    /// Peers the transport could not reach.
    pub unreachable: Vec<u64>,
    /// Peers whose snapshot could not even be queued.
    pub snapshot_failed: Vec<u64>,
}

#[derive(Clone)]
pub(crate) struct Outbox {
    id: u64,
    transport: Option<Arc<dyn Transport>>,
    snapshots: Sender<Message>,
}

impl Outbox {
    pub(crate) fn new(
        id: u64,
        transport: Option<Arc<dyn Transport>>,
        snapshots: Sender<Message>,
    ) -> Outbox {
        Outbox {
            id,
            transport,
            snapshots,
        }
    }

    /// Sends `msgs` (never blocks on a slow peer).
    pub(crate) fn send(&self, msgs: Vec<Message>) -> SendFailures {
        let mut failures = SendFailures::default();
        let Some(transport) = &self.transport else {
            if !msgs.is_empty() {
                log::warn!(
                    "node {}: {} messages for peers but no transport",
                    self.id,
                    msgs.len()
                );
            }
            return failures;
        };
        for m in msgs {
            if m.msg_type == MessageType::Snapshot {
                let to = m.to;
                match self.snapshots.try_send(m) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        failures.snapshot_failed.push(to);
                    }
                }
                continue;
            }
            let to = m.to;
            if transport.send(self.id, to, codec::encode(&m)).is_err() {
                failures.unreachable.push(to);
            }
        }
        failures
    }
}
