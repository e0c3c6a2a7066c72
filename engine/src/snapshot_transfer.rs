//! Moving snapshots between nodes: the sender thread that streams a stored snapshot to
//! a follower, and the receiving side ([`NodeSink`]) that installs an incoming stream
//! into the local snapshot store before raft ever sees the `Snapshot` message.
//! [`NodeSink`] also feeds the raft stage's inbox, bounded in count (`inbox_queue_len`)
//! and in bytes (`inbox_queue_max_bytes`): each queued message holds its share of the
//! byte budget until the raft stage drops it.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use keel_raft::{codec, Message, MessageType, SnapshotStatus};
use keel_snapshot::{ReceiveStatus, SnapshotId, SnapshotSender, SnapshotStore};

use crate::budget::{ByteBudget, Charged};
use crate::error::StopReason;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::supervisor::Stage;
use crate::transport::{ChunkSource, MessageSink, Transport, TransportError};

// How long an installed snapshot's message may wait for room in the raft stage's
// inbox before the transfer is reported failed (the leader then retries).
const INBOX_WAIT: Duration = Duration::from_secs(5);

struct StoredChunks<'a> {
    chunks: SnapshotSender,
    shared: &'a Shared,
}

impl ChunkSource for StoredChunks<'_> {
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        // A node that stopped sends nothing more: the transfer ends at the next chunk
        // rather than running on after the rest of the node is gone.
        if self.shared.is_stopped() {
            return Err(TransportError::Snapshot("the node stopped".into()));
        }
        match self.chunks.next_chunk() {
            Ok(Some(chunk)) => Ok(Some(chunk.encode())),
            Ok(None) => Ok(None),
            Err(e) => Err(TransportError::Snapshot(e.to_string())),
        }
    }
}

/// The snapshot sender thread: one transfer at a time, each reported back to the raft
/// stage. Ends when every sender of `requests` is gone (the raft and persist stages
/// ended) or the raft stage stopped taking reports.
pub(crate) struct SnapshotSenderStage {
    shared: Arc<Shared>,
    id: u64,
    transport: Arc<dyn Transport>,
    store: Arc<SnapshotStore>,
    requests: Receiver<Message>,
    reports: Sender<(u64, SnapshotStatus)>,
}

impl SnapshotSenderStage {
    /// The sender of the node `shared` describes: streams the snapshots of `store`
    /// named by the messages in `requests` over `transport`, and reports each outcome
    /// to `reports`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
        store: Arc<SnapshotStore>,
        requests: Receiver<Message>,
        reports: Sender<(u64, SnapshotStatus)>,
    ) -> SnapshotSenderStage {
        SnapshotSenderStage {
            id: shared.id,
            shared,
            transport,
            store,
            requests,
            reports,
        }
    }
}

impl Stage for SnapshotSenderStage {
    fn run(&mut self) -> StopReason {
        let id = self.id;
        while let Ok(m) = self.requests.recv() {
            let to = m.to;
            fail::fail_point!("snapshotBeforeSend");
            let status = match self.send_one(&m) {
                Ok(()) => SnapshotStatus::Finish,
                Err(e) => {
                    log::warn!("node {id}: sending a snapshot to {to} failed: {e}");
                    SnapshotStatus::Failure
                }
            };
            if self.reports.send((to, status)).is_err() {
                break;
            }
        }
        // Both ends close only once the raft stage ended, which recorded why.
        StopReason::Closed
    }
}

impl SnapshotSenderStage {
    fn send_one(&self, m: &Message) -> Result<(), TransportError> {
        let Some(snap) = &m.snapshot else {
            return Err(TransportError::Snapshot(
                "message without a snapshot".into(),
            ));
        };
        let sender = self
            .store
            .sender(SnapshotId::of(&snap.metadata), 0)
            .map_err(|e| TransportError::Snapshot(e.to_string()))?;
        let mut chunks = StoredChunks {
            chunks: sender,
            shared: &self.shared,
        };
        self.transport
            .send_snapshot(self.id, m.to, codec::encode(m), &mut chunks)
    }
}

/// What a transport delivers a node's inbound traffic to.
pub(crate) struct NodeSink {
    id: u64,
    inbox: Sender<Charged<Vec<u8>>>,
    /// Bytes of the messages in `inbox`, at most (`inbox_queue_max_bytes`).
    inbox_budget: Arc<ByteBudget>,
    store: Arc<SnapshotStore>,
    metrics: Metrics,
}

impl NodeSink {
    /// The sink of node `id`: messages go to `inbox` (at most `inbox_max_bytes` of
    /// them queued), snapshot streams into `store`.
    pub(crate) fn new(
        id: u64,
        inbox: Sender<Charged<Vec<u8>>>,
        inbox_max_bytes: u64,
        store: Arc<SnapshotStore>,
        metrics: Metrics,
    ) -> NodeSink {
        NodeSink {
            id,
            inbox,
            inbox_budget: ByteBudget::new(inbox_max_bytes),
            store,
            metrics,
        }
    }

    fn inbox_dropped(&self, why: &str) {
        self.metrics.inbox_dropped.inc();
        log::debug!("node {}: {why}, dropping a message", self.id);
    }
}

impl MessageSink for NodeSink {
    fn deliver(&self, bytes: Vec<u8>) {
        // Raft retransmits whatever is lost; a full inbox means the node is behind.
        let len = bytes.len() as u64;
        let Ok(charged) = self.inbox_budget.try_wrap(bytes, len) else {
            self.inbox_dropped("inbox over its byte budget");
            return;
        };
        match self.inbox.try_send(charged) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.inbox_dropped("inbox full"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn deliver_snapshot(
        &self,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        let received = self.receive_snapshot(message, chunks);
        if received.is_err() {
            self.metrics.snapshots_refused.inc();
        }
        received
    }
}

impl NodeSink {
    fn receive_snapshot(
        &self,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        let m: Message = codec::decode(&message)
            .map_err(|e| TransportError::Snapshot(format!("undecodable message: {e}")))?;
        let expected = match (&m.msg_type, &m.snapshot) {
            (MessageType::Snapshot, Some(s)) if m.to == self.id => s.metadata.clone(),
            _ => {
                return Err(TransportError::Snapshot(
                    "not a snapshot for this node".into(),
                ))
            }
        };
        let mut receiver = self
            .store
            .receiver()
            .map_err(|e| TransportError::Snapshot(e.to_string()))?;
        // Bounded: the receiver aborts once the stream passes the store's
        // max_receive_bytes, and every frame adds bytes.
        loop {
            let Some(frame) = chunks.next_frame()? else {
                return Err(TransportError::Snapshot(
                    "stream ended before its trailer".into(),
                ));
            };
            match receiver.receive_frame(&frame) {
                Ok(ReceiveStatus::NeedMore { .. }) => {}
                Ok(ReceiveStatus::Installed { metadata, .. }) => {
                    if metadata != expected {
                        return Err(TransportError::Snapshot(
                            "installed snapshot does not match its message".into(),
                        ));
                    }
                    break;
                }
                Err(e) => return Err(TransportError::Snapshot(e.to_string())),
            }
        }
        let len = message.len() as u64;
        let Ok(message) = self.inbox_budget.try_wrap(message, len) else {
            return Err(TransportError::Snapshot(format!(
                "node {} is behind: its inbox is over its byte budget",
                self.id
            )));
        };
        match self.inbox.send_timeout(message, INBOX_WAIT) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) | Err(SendTimeoutError::Disconnected(_)) => {
                Err(TransportError::Unreachable(self.id))
            }
        }
    }
}
