//! Linearizable reads: which way they are confirmed ([`ReadOnlyOption`]: a heartbeat
//! round to a quorum, or the leader lease), the queue of pending ReadIndex requests
//! waiting for a quorum of heartbeat acknowledgements (the safe way), and the read
//! states handed back.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::types::Message;

/// How linearizable reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a heartbeat round to a quorum for every batch of reads.
    #[default]
    Safe,
    /// Trust the leader lease (needs CheckQuorum; assumes bounded clock drift).
    LeaseBased,
}

/// A read that may be served once the applied index reaches `index`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    /// The commit index at the time the read was confirmed.
    pub index: u64,
    /// The request context given to `read_index`.
    pub request_ctx: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReadIndexStatus {
    pub req: Message,
    pub index: u64,
    pub acks: HashSet<u64>,
}

/// Pending reads on the leader, in arrival order, keyed by request context.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOnly {
    pub option: ReadOnlyOption,
    pub pending: HashMap<Vec<u8>, ReadIndexStatus>,
    pub queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    pub fn new(option: ReadOnlyOption) -> ReadOnly {
        ReadOnly {
            option,
            ..ReadOnly::default()
        }
    }

    /// Queues a read confirmed at `index`; a duplicate context is ignored.
    pub fn add_request(&mut self, index: u64, req: Message, self_id: u64) {
        let ctx = req.entries[0].data.clone();
        if self.pending.contains_key(&ctx) {
            return;
        }
        let mut acks = HashSet::new();
        acks.insert(self_id);
        self.pending
            .insert(ctx.clone(), ReadIndexStatus { req, index, acks });
        self.queue.push_back(ctx);
    }

    /// Records a heartbeat ack for the read `ctx`; returns the acks so far.
    pub fn recv_ack(&mut self, id: u64, ctx: &[u8]) -> Option<&HashSet<u64>> {
        let rs = self.pending.get_mut(ctx)?;
        rs.acks.insert(id);
        Some(&rs.acks)
    }

    /// Removes and returns every read up to and including `ctx` (earlier reads are
    /// confirmed by a later confirmation).
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect()
    }

    /// The context of the newest pending read, sent with heartbeats.
    pub fn last_pending_request_ctx(&self) -> Option<Vec<u8>> {
        self.queue.back().cloned()
    }

    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }
}
