//! A single-threaded test network of `RawNode`s over `MemoryStorage`, in the style of
//! raft-rs's harness: deliver messages until quiet, with filters that drop, cut,
//! isolate and ignore. Every random choice comes from a seeded `Rng`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use keel_raft::*;

/// Hard cap on messages delivered by one `send`, so a livelock fails the test instead
/// of hanging it.
pub const MAX_DELIVERIES: usize = 200_000;

/// A config for node `id` with small, test-friendly timeouts.
pub fn new_config(id: u64) -> Config {
    Config {
        election_tick: 10,
        heartbeat_tick: 1,
        max_size_per_msg_bytes: u64::MAX,
        max_inflight_msgs: 256,
        ..Config::new(id)
    }
}

/// A storage holding `voters` and `learners` as its initial membership.
pub fn new_storage(voters: &[u64], learners: &[u64]) -> MemoryStorage {
    MemoryStorage::new_with_conf_state(voters.to_vec(), learners.to_vec())
}

/// A node over fresh storage.
pub fn new_node(id: u64, voters: &[u64]) -> RawNode<MemoryStorage> {
    RawNode::new(&new_config(id), new_storage(voters, &[])).expect("valid config")
}

/// A node with `config` over `storage`.
pub fn new_node_with(config: Config, storage: MemoryStorage) -> RawNode<MemoryStorage> {
    RawNode::new(&config, storage).expect("valid config")
}

/// Takes every queued message of `raft` (both the immediate and the after-persist ones),
/// without persisting anything.
pub fn read_messages<S: Storage>(raft: &mut Raft<S>) -> Vec<Message> {
    let mut msgs = std::mem::take(&mut raft.msgs);
    msgs.extend(std::mem::take(&mut raft.msgs_after_persist));
    msgs
}

/// Decodes and applies the conf changes among `ents`.
pub fn apply_conf_changes(node: &mut RawNode<MemoryStorage>, ents: &[Entry]) {
    for e in ents {
        let cc = match e.entry_type {
            EntryType::Normal => continue,
            EntryType::ConfChange => codec::decode::<ConfChange>(&e.data).unwrap().into_v2(),
            EntryType::ConfChangeV2 => codec::decode::<ConfChangeV2>(&e.data).unwrap(),
        };
        let cs = node
            .apply_conf_change(&cc)
            .expect("committed conf change applies");
        node.mut_store().set_conf_state(cs);
    }
}

/// Handles every pending `Ready` of `node` synchronously (persist, then apply) and
/// returns the messages to deliver. Applied entries are appended to `applied`.
pub fn drain_ready(node: &mut RawNode<MemoryStorage>, applied: &mut Vec<Entry>) -> Vec<Message> {
    drain_ready_with_reads(node, applied, &mut Vec::new())
}

/// [`drain_ready`], also collecting the read states the Readies carried into `reads`.
pub fn drain_ready_with_reads(
    node: &mut RawNode<MemoryStorage>,
    applied: &mut Vec<Entry>,
    reads: &mut Vec<ReadState>,
) -> Vec<Message> {
    let mut out = Vec::new();
    // Bounded: each round hands out work that the next round no longer sees.
    for _ in 0..1000 {
        if !node.has_ready() {
            return out;
        }
        let mut rd = node.ready();
        reads.extend(rd.take_read_states());
        out.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            node.mut_store().apply_snapshot(snap).unwrap();
        }
        node.mut_store().append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            node.mut_store().set_hard_state(*hs);
        }
        out.extend(rd.take_persisted_messages());
        let committed = rd.take_committed_entries();
        apply_conf_changes(node, &committed);
        applied.extend(committed);
        let mut light = node.advance(rd);
        if let Some(c) = light.commit_index() {
            node.mut_store().commit_to(c);
        }
        out.extend(light.take_messages());
        let committed = light.take_committed_entries();
        apply_conf_changes(node, &committed);
        applied.extend(committed);
        node.advance_apply();
    }
    panic!("node {} never ran out of ready work", node.raft.id);
}

/// A group of nodes joined by a filtered in-memory network.
pub struct Network {
    /// The nodes by id. A `None` is a node that exists in the config but is down.
    pub peers: BTreeMap<u64, RawNode<MemoryStorage>>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<u64, Vec<Entry>>,
    drop_rate: HashMap<(u64, u64), f64>,
    ignored: HashSet<MessageType>,
    rng: Rng,
}

impl Network {
    /// Nodes `ids`, all voters, with the default test config.
    pub fn new(ids: &[u64]) -> Network {
        Network::new_with(ids, |_| {})
    }

    /// Nodes `ids`, all voters, with `tweak` applied to each config.
    pub fn new_with(ids: &[u64], tweak: impl Fn(&mut Config)) -> Network {
        Network::new_with_learners(ids, &[], tweak)
    }

    /// Voters `ids` plus learners `learners`.
    pub fn new_with_learners(
        ids: &[u64],
        learners: &[u64],
        tweak: impl Fn(&mut Config),
    ) -> Network {
        let mut peers = BTreeMap::new();
        for &id in ids.iter().chain(learners) {
            let mut c = new_config(id);
            tweak(&mut c);
            peers.insert(id, new_node_with(c, new_storage(ids, learners)));
        }
        Network::from_nodes(peers)
    }

    /// A network of the given nodes.
    pub fn from_nodes(peers: BTreeMap<u64, RawNode<MemoryStorage>>) -> Network {
        let applied = peers.keys().map(|&id| (id, Vec::new())).collect();
        Network {
            peers,
            applied,
            drop_rate: HashMap::new(),
            ignored: HashSet::new(),
            rng: Rng::new(0x5eed),
        }
    }

    /// The node `id`.
    pub fn peer(&self, id: u64) -> &RawNode<MemoryStorage> {
        &self.peers[&id]
    }

    /// The node `id`, mutably.
    pub fn peer_mut(&mut self, id: u64) -> &mut RawNode<MemoryStorage> {
        self.peers.get_mut(&id).expect("no such peer")
    }

    /// Delivers `msgs` and everything they cause until the network is quiet.
    pub fn send(&mut self, msgs: Vec<Message>) {
        let mut queue: VecDeque<Message> = self.filter(msgs).into();
        // First flush whatever the senders had pending.
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            let out = self.drain(id);
            queue.extend(self.filter(out));
        }
        let mut delivered = 0;
        while let Some(m) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < MAX_DELIVERIES, "network did not quiesce");
            let to = m.to;
            let Some(p) = self.peers.get_mut(&to) else {
                continue;
            };
            let _ = p.step(m);
            let out = self.drain(to);
            queue.extend(self.filter(out));
        }
    }

    /// Steps a local message (e.g. `Hup`, `Propose`) into node `m.to` and delivers
    /// everything that follows.
    pub fn send_local(&mut self, m: Message) {
        let to = m.to;
        if let Some(p) = self.peers.get_mut(&to) {
            let _ = p.raft.step(m);
        }
        self.send(Vec::new());
    }

    /// Node `id` campaigns.
    pub fn campaign(&mut self, id: u64) {
        self.send_local(Message::new(MessageType::Hup, id, id));
    }

    /// Node `id` proposes `data`; returns the proposal's immediate result.
    pub fn propose(&mut self, id: u64, data: &[u8]) -> Result<()> {
        let r = self.peer_mut(id).propose(data.to_vec());
        self.send(Vec::new());
        r
    }

    /// Ticks node `id` `n` times, delivering what follows each tick.
    pub fn tick(&mut self, id: u64, n: usize) {
        for _ in 0..n {
            self.peer_mut(id).tick();
            self.send(Vec::new());
        }
    }

    fn drain(&mut self, id: u64) -> Vec<Message> {
        let node = self.peers.get_mut(&id).expect("peer exists");
        let applied = self.applied.entry(id).or_default();
        drain_ready(node, applied)
    }

    /// Drops messages from `from` to `to` with probability `rate`.
    pub fn drop(&mut self, from: u64, to: u64, rate: f64) {
        self.drop_rate.insert((from, to), rate);
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: u64, b: u64) {
        self.drop(a, b, 1.0);
        self.drop(b, a, 1.0);
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Drops every message of type `t`.
    pub fn ignore(&mut self, t: MessageType) {
        self.ignored.insert(t);
    }

    /// Removes every filter.
    pub fn recover(&mut self) {
        self.drop_rate.clear();
        self.ignored.clear();
    }

    fn filter(&mut self, msgs: Vec<Message>) -> Vec<Message> {
        msgs.into_iter()
            .filter(|m| {
                if self.ignored.contains(&m.msg_type) {
                    return false;
                }
                let rate = self.drop_rate.get(&(m.from, m.to)).copied().unwrap_or(0.0);
                !(rate > 0.0 && self.rng.chance(rate))
            })
            .collect()
    }

    /// The data of the normal, non-empty entries node `id` applied.
    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|e| e.entry_type == EntryType::Normal && !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }

    /// The id of the unique leader among the nodes, if there is one.
    pub fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.raft.state == StateRole::Leader)
            .map(|(&id, _)| id)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }
}
