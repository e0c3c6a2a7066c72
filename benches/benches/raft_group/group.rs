//! A 3-node Raft group driven in one thread over `MemoryStorage`, for measuring the
//! cost of the consensus core alone: no disk, no network, no threads.

use std::collections::VecDeque;

use keel_raft::{Config, Entry, MemoryStorage, Message, RawNode, Ready, StateRole};

/// Three `RawNode`s joined by an in-memory queue; node 1 leads.
pub struct Group {
    nodes: Vec<RawNode<MemoryStorage>>,
    queue: VecDeque<Message>,
    applied: Vec<u64>,
}

impl Group {
    /// A 3-node group with node 1 elected leader.
    pub fn new() -> Group {
        let nodes = (1..=3)
            .map(|id| {
                let store = MemoryStorage::new_with_conf_state(vec![1, 2, 3], vec![]);
                let config = Config {
                    max_inflight_msgs: 4096,
                    ..Config::new(id)
                };
                RawNode::new(&config, store).expect("valid config")
            })
            .collect();
        let mut g = Group {
            nodes,
            queue: VecDeque::new(),
            applied: vec![0; 3],
        };
        g.nodes[0].campaign().expect("campaign");
        g.run_until_quiet();
        assert_eq!(g.nodes[0].role(), StateRole::Leader);
        g
    }

    /// Proposes `n` entries of `size` bytes on the leader in batches of `batch`, and
    /// runs the group until all are applied on every node. Returns the entries applied
    /// on the leader.
    pub fn propose_and_commit(&mut self, n: usize, size: usize, batch: usize) -> u64 {
        let start = self.applied[0];
        let target = self.nodes[0].raft.raft_log.last_index() + n as u64;
        let mut left = n;
        while left > 0 {
            let k = left.min(batch);
            let datas = (0..k).map(|_| vec![0xab; size]).collect();
            self.nodes[0].propose_batch(datas).expect("leader accepts");
            left -= k;
            self.step_all();
        }
        self.run_until_quiet();
        assert!(self.applied.iter().all(|&a| a >= target));
        self.applied[0] - start
    }

    fn run_until_quiet(&mut self) {
        // Bounded: a healthy group quiesces in a few rounds.
        for _ in 0..10_000 {
            if !self.step_all() {
                return;
            }
        }
        panic!("group did not quiesce");
    }

    /// One round: every node handles its ready, then the queue is delivered.
    /// Returns whether anything happened.
    fn step_all(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.nodes.len() {
            if self.nodes[i].has_ready() {
                busy = true;
                let rd = self.nodes[i].ready();
                self.handle(i, rd);
            }
        }
        while let Some(m) = self.queue.pop_front() {
            busy = true;
            let to = (m.to - 1) as usize;
            let _ = self.nodes[to].step(m);
        }
        busy
    }

    fn handle(&mut self, i: usize, mut rd: Ready) {
        let node = &mut self.nodes[i];
        self.queue.extend(rd.take_messages());
        node.mut_store().append(rd.entries()).expect("append");
        if let Some(hs) = rd.hs() {
            node.mut_store().set_hard_state(*hs);
        }
        self.queue.extend(rd.take_persisted_messages());
        let mut applied = last_index(rd.committed_entries());
        let mut light = node.advance(rd);
        self.queue.extend(light.take_messages());
        applied = applied.max(last_index(light.committed_entries()));
        node.advance_apply();
        self.applied[i] = self.applied[i].max(applied);
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::new()
    }
}

fn last_index(ents: &[Entry]) -> u64 {
    ents.last().map_or(0, |e| e.index)
}
