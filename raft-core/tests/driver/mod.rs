//! A hostile-input driver for one `RawNode`, shared by the cargo-fuzz target
//! (`raft-core/fuzz`, which includes this file with `#[path]`) and the seeded proptest
//! in `tests/hostile.rs`.
//!
//! The input bytes are read as a script: a few bytes of setup (role to reach, log
//! state, options), then operations until the bytes run out — ticks, proposals, reads,
//! transfers, messages (decoded by raft-core's codec from raw bytes, or built from the
//! bytes around the node's current log so they reach deep states), and the engine's
//! side of each `Ready` (persist to `MemoryStorage`, `on_persist_ready`, apply committed
//! entries including conf changes, `advance_apply_to`, compaction). After every
//! operation raft-core's invariants are checked; a violation or any panic inside
//! raft-core is a failure. Errors returned by raft-core are fine (that is refusal),
//! except that a fatal error ends the run the way it stops a node.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use keel_raft::*;

/// Reads the script; past the end every read yields 0 and `done` turns true.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = (v << 8) | u64::from(self.u8());
        }
        v
    }

    /// A choice among `n` options.
    pub fn pick(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }

    /// Up to `max` raw bytes, length first.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.pick(max + 1);
        let end = (self.pos + n).min(self.data.len());
        let start = self.pos.min(end);
        self.pos += n;
        self.data[start..end].to_vec()
    }
}

/// The role the setup drives the node into before the script's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
    NotInConfig,
    SingleVoterLeader,
}

const ROLES: [Role; 7] = [
    Role::Follower,
    Role::PreCandidate,
    Role::Candidate,
    Role::Leader,
    Role::Learner,
    Role::NotInConfig,
    Role::SingleVoterLeader,
];

const ID: u64 = 1;

// raft-core refuses terms and indexes from this bound up (`MAX_TERM_OR_INDEX`).
const BIG: u64 = 1 << 62;

/// What the checker remembers between operations.
#[derive(Default)]
struct Seen {
    term: u64,
    vote: u64,
    // Terms of entries seen committed, by index: a committed entry never changes.
    committed: BTreeMap<u64, u64>,
}

/// The durable part of a Ready, as the engine hands it to its persist stage.
struct Persist {
    number: u64,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    snapshot: Option<Snapshot>,
}

/// The node under test and the engine-side state around it.
pub struct Harness {
    pub node: RawNode<MemoryStorage>,
    // Readies handed out whose persistence is pending (the engine's persist stage).
    pending: VecDeque<Persist>,
    seen: Seen,
    // Read contexts asked for, reused in hostile heartbeat contexts.
    read_ctxs: Vec<Vec<u8>>,
    // Set once raft-core returned a fatal error: the engine stops the node.
    pub stopped: bool,
    pub trace: bool,
    // Whether the message being built may carry wild values (random or huge numbers);
    // most messages do not, so they pass the shallow checks and reach deep states.
    wild: bool,
    // What the state machine applied: committed entries as they are handed out, a
    // snapshot once it is persisted (the engine's apply stage gets it only then).
    sm_applied: u64,
}

fn build(input: &mut Input<'_>) -> Option<(Harness, Role)> {
    let role = ROLES[input.pick(ROLES.len())];
    let flags = input.u8();
    let log_kind = input.pick(3);
    let n_entries = input.pick(8) as u64;
    let (voters, learners): (Vec<u64>, Vec<u64>) = match role {
        Role::Learner => (vec![2, 3], vec![ID]),
        Role::NotInConfig => (vec![2, 3, 4], vec![]),
        Role::SingleVoterLeader => (vec![ID], vec![5]),
        _ => (vec![ID, 2, 3], vec![4]),
    };
    let mut store = MemoryStorage::new_with_conf_state(voters, learners);
    let mut term = 0;
    if log_kind > 0 && n_entries > 0 {
        let mut ents = Vec::new();
        for i in 1..=n_entries {
            term += u64::from(input.u8() % 2);
            term = term.max(1);
            ents.push(Entry::new(term, i, vec![i as u8]));
        }
        store.append(&ents).ok()?;
        let commit = input.pick(n_entries as usize + 1) as u64;
        store.set_hard_state(HardState {
            term,
            vote: 0,
            commit,
        });
        if log_kind == 2 && commit > 0 {
            // A compacted log: a snapshot at or below the commit index.
            let at = 1 + input.pick(commit as usize) as u64;
            store.create_snapshot(at, None, vec![7]).ok()?;
            store.compact(at).ok()?;
        }
    }
    let mut c = Config::new(ID);
    c.election_tick = 10;
    c.heartbeat_tick = 1 + (flags as usize >> 6);
    c.pre_vote = role == Role::PreCandidate || flags & 1 != 0;
    if role == Role::Candidate || role == Role::Leader {
        c.pre_vote = false;
    }
    c.check_quorum = flags & 2 != 0;
    if flags & 4 != 0 {
        c.read_only_option = ReadOnlyOption::LeaseBased;
        c.check_quorum = true;
    }
    c.disable_proposal_forwarding = flags & 8 != 0;
    c.max_inflight_msgs = 1 + (flags as usize >> 4 & 3);
    c.max_inflight_bytes = if flags & 16 != 0 { 64 } else { 0 };
    c.max_size_per_msg_bytes = if flags & 32 != 0 { 30 } else { u64::MAX };
    c.max_uncommitted_size_bytes = if flags & 64 != 0 { 16 } else { 0 };
    c.max_committed_size_per_ready_bytes = if flags & 128 != 0 { 30 } else { u64::MAX };
    c.seed = u64::from(flags);
    let node = RawNode::new(&c, store).ok()?;
    let mut h = Harness {
        node,
        pending: VecDeque::new(),
        seen: Seen::default(),
        read_ctxs: Vec::new(),
        stopped: false,
        trace: false,
        wild: false,
        sm_applied: 0,
    };
    h.seen.term = h.node.raft.term;
    h.seen.vote = h.node.raft.vote;
    Some((h, role))
}

impl Harness {
    fn reach(&mut self, role: Role) {
        match role {
            Role::Follower | Role::Learner | Role::NotInConfig => {}
            Role::PreCandidate | Role::Candidate => {
                let _ = self.node.campaign();
            }
            Role::Leader => {
                let _ = self.node.campaign();
                self.handle_ready_sync();
                let mut m = Message::new(MessageType::RequestVoteResponse, 2, ID);
                m.term = self.node.raft.term;
                let _ = self.node.step(m);
                self.handle_ready_sync();
            }
            Role::SingleVoterLeader => {
                let _ = self.node.campaign();
                self.handle_ready_sync();
            }
        }
    }

    /// The engine's handling of one `Ready`, split like the engine splits it: the
    /// Ready is taken and its committed entries applied now; its persistence is done
    /// by `persist` (now or later).
    fn take_ready(&mut self) {
        if self.stopped || !self.node.has_ready() {
            return;
        }
        let mut rd = self.node.ready();
        if self.trace {
            let ids: Vec<(u64, u64)> = rd.entries().iter().map(|e| (e.index, e.term)).collect();
            eprintln!("  ready {}: entries {ids:?}", rd.number());
        }
        let committed = rd.take_committed_entries();
        self.apply(&committed);
        if let Some(e) = committed.last() {
            self.sm_applied = e.index;
        }
        self.check_ready(&rd);
        let _ = rd.take_messages();
        let _ = rd.take_read_states();
        let p = Persist {
            number: rd.number(),
            entries: rd.take_entries(),
            hs: rd.hs().copied(),
            snapshot: (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone()),
        };
        let _ = rd.take_persisted_messages();
        self.node.advance_append_async(rd);
        self.pending.push_back(p);
    }

    fn check_ready(&self, rd: &Ready) {
        let ents = rd.entries();
        for w in ents.windows(2) {
            assert_eq!(w[1].index, w[0].index + 1, "ready entries are contiguous");
        }
        for m in rd.messages().iter().chain(rd.persisted_messages()) {
            assert_ne!(m.to, ID, "a message to itself: {m:?}");
            assert_ne!(m.to, 0, "a message to nobody: {m:?}");
            assert_ne!(m.from, 0, "a message from nobody: {m:?}");
            let forwarded = matches!(m.msg_type, MessageType::Propose | MessageType::ReadIndex);
            assert!(forwarded || m.term > 0, "a message without a term: {m:?}");
        }
    }

    /// Persists the oldest `n` pending Readies and reports them durable.
    fn persist(&mut self, n: usize) {
        let mut last = None;
        for _ in 0..n {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if self.trace {
                let ids: Vec<(u64, u64)> = p.entries.iter().map(|e| (e.index, e.term)).collect();
                eprintln!("  persist ready {}: entries {ids:?}", p.number);
            }
            let store = self.node.mut_store();
            if let Some(snap) = p.snapshot {
                self.sm_applied = self.sm_applied.max(snap.metadata.index);
                store
                    .apply_snapshot(snap)
                    .expect("raft hands out only snapshots newer than the storage's");
            }
            store
                .append(&p.entries)
                .expect("raft hands out entries that follow the stored log");
            if let Some(hs) = p.hs {
                store.set_hard_state(hs);
            }
            last = Some(p.number);
        }
        if let Some(number) = last {
            self.node.on_persist_ready(number);
        }
    }

    fn handle_ready_sync(&mut self) {
        for _ in 0..8 {
            if self.stopped || !self.node.has_ready() {
                break;
            }
            self.take_ready();
            let n = self.pending.len();
            self.persist(n);
            self.advance_apply();
        }
    }

    /// The synchronous path of the lib docs and the test harness: persist, then
    /// `advance` and apply what its `LightReady` unlocked.
    fn handle_ready_light(&mut self) {
        let n = self.pending.len();
        self.persist(n);
        if self.stopped || !self.node.has_ready() {
            return;
        }
        let mut rd = self.node.ready();
        self.check_ready(&rd);
        let committed = rd.take_committed_entries();
        self.apply(&committed);
        if let Some(e) = committed.last() {
            self.sm_applied = e.index;
        }
        let store = self.node.mut_store();
        if !rd.snapshot().is_empty() {
            self.sm_applied = self.sm_applied.max(rd.snapshot().metadata.index);
            store
                .apply_snapshot(rd.snapshot().clone())
                .expect("raft hands out only snapshots newer than the storage's");
        }
        store
            .append(rd.entries())
            .expect("raft hands out entries that follow the stored log");
        if let Some(hs) = rd.hs() {
            store.set_hard_state(*hs);
        }
        let mut light = self.node.advance(rd);
        if let Some(c) = light.commit_index() {
            self.node.mut_store().commit_to(c);
        }
        let committed = light.take_committed_entries();
        self.apply(&committed);
        if let Some(e) = committed.last() {
            self.sm_applied = e.index;
        }
        self.advance_apply();
    }

    fn apply(&mut self, ents: &[Entry]) {
        for e in ents {
            let cc = match e.entry_type {
                EntryType::Normal => continue,
                EntryType::ConfChange => {
                    codec::decode::<ConfChange>(&e.data).map(ConfChange::into_v2)
                }
                EntryType::ConfChangeV2 => codec::decode::<ConfChangeV2>(&e.data),
            };
            // Like the engine: a change that does not decode or apply is skipped (every
            // replica refuses it the same way).
            if let Ok(cc) = cc {
                if let Ok(cs) = self.node.apply_conf_change(&cc) {
                    self.node.mut_store().set_conf_state(cs);
                }
            }
        }
    }

    fn advance_apply(&mut self) {
        let log = &self.node.raft.raft_log;
        let applied = self.sm_applied;
        if applied > log.applied && applied <= log.committed {
            self.node.advance_apply_to(applied);
        }
    }

    fn compact(&mut self) {
        let applied = self.node.raft.raft_log.applied;
        let cs = self.node.raft.prs.conf.to_conf_state();
        let store = self.node.mut_store();
        if store.create_snapshot(applied, Some(cs), vec![9]).is_ok() {
            let _ = store.compact(applied);
        }
    }

    // ---- hostile messages ----

    fn pick_id(&self, input: &mut Input<'_>) -> u64 {
        [2, 3, 2, 3, 4, 5, ID, 0, 9, u64::MAX, 2, 3][input.pick(12)]
    }

    fn pick_term(&self, input: &mut Input<'_>) -> u64 {
        let t = self.node.raft.term;
        match input.pick(10) {
            0..=2 => t,
            3 | 4 => t + 1,
            5 => t.saturating_sub(1),
            6 => 0,
            7 => t + 2,
            8 if self.wild => input.u64(),
            9 if self.wild => BIG - 1,
            _ => t,
        }
    }

    fn pick_index(&self, input: &mut Input<'_>) -> u64 {
        let log = &self.node.raft.raft_log;
        let last = log.last_index();
        match input.pick(12) {
            0 | 1 => last,
            2 => last + 1,
            3 => last.saturating_sub(1),
            4 => log.committed,
            5 => log.committed.saturating_sub(1),
            6 => log.first_index().saturating_sub(1),
            7 => 0,
            8 if self.wild => input.u64(),
            9 => last + 1 + input.pick(4) as u64,
            10 => log.persisted,
            11 if self.wild => BIG - 1,
            _ => last,
        }
    }

    fn term_at(&self, index: u64) -> u64 {
        self.node.raft.raft_log.term(index).unwrap_or(0)
    }

    fn conf_change_entry(&self, input: &mut Input<'_>) -> (EntryType, Vec<u8>) {
        let ty = [
            ConfChangeType::AddNode,
            ConfChangeType::RemoveNode,
            ConfChangeType::AddLearnerNode,
        ];
        let mut changes = Vec::new();
        for _ in 0..input.pick(4) {
            changes.push(ConfChangeSingle {
                change_type: ty[input.pick(3)],
                node_id: input.pick(6) as u64,
            });
        }
        match input.pick(3) {
            0 => {
                let c = changes.first().copied().unwrap_or_default();
                let cc = ConfChange {
                    change_type: c.change_type,
                    node_id: c.node_id,
                    context: Vec::new(),
                };
                (EntryType::ConfChange, codec::encode(&cc))
            }
            1 => {
                let transition = [
                    ConfChangeTransition::Auto,
                    ConfChangeTransition::JointImplicit,
                    ConfChangeTransition::JointExplicit,
                ][input.pick(3)];
                let cc = ConfChangeV2 {
                    transition,
                    changes,
                    context: Vec::new(),
                };
                (EntryType::ConfChangeV2, codec::encode(&cc))
            }
            _ => (
                [EntryType::ConfChange, EntryType::ConfChangeV2][input.pick(2)],
                input.bytes(8),
            ),
        }
    }

    fn conf_state(&self, input: &mut Input<'_>) -> ConfState {
        match input.pick(6) {
            0 => ConfState {
                voters: vec![1, 2, 3],
                ..ConfState::default()
            },
            1 => ConfState {
                voters: vec![2, 3],
                learners: vec![1],
                ..ConfState::default()
            },
            2 => ConfState {
                voters: vec![1, 2],
                voters_outgoing: vec![1, 2, 3],
                learners_next: vec![3],
                auto_leave: input.bool(),
                ..ConfState::default()
            },
            3 => ConfState {
                voters: vec![2, 3, 4],
                ..ConfState::default()
            },
            4 => ConfState {
                voters: vec![1, 1, 2],
                learners: vec![2],
                ..ConfState::default()
            },
            _ => self.node.raft.prs.conf.to_conf_state(),
        }
    }

    /// A message built around the node's current state so it passes the shallow
    /// checks often and reaches deep states.
    fn structured_message(&mut self, input: &mut Input<'_>) -> Message {
        let types = [
            MessageType::Append,
            MessageType::Append,
            MessageType::AppendResponse,
            MessageType::AppendResponse,
            MessageType::RequestVote,
            MessageType::RequestVoteResponse,
            MessageType::RequestPreVote,
            MessageType::RequestPreVoteResponse,
            MessageType::Snapshot,
            MessageType::Heartbeat,
            MessageType::Heartbeat,
            MessageType::HeartbeatResponse,
            MessageType::TransferLeader,
            MessageType::TimeoutNow,
            MessageType::ReadIndex,
            MessageType::ReadIndexResp,
            MessageType::Propose,
            MessageType::Hup,
            MessageType::Beat,
            MessageType::CheckQuorum,
        ];
        self.wild = input.pick(8) == 0;
        let msg_type = types[input.pick(types.len())];
        let mut m = Message::new(msg_type, self.pick_id(input), ID);
        m.term = self.pick_term(input);
        m.index = self.pick_index(input);
        m.log_term = match input.pick(5) {
            0..=2 => self.term_at(m.index),
            3 => m.term,
            4 if self.wild => input.u64() % m.term.saturating_add(1),
            _ => m.term.saturating_sub(1),
        };
        m.commit = match input.pick(6) {
            0 | 1 => self.node.raft.raft_log.committed,
            2 => m.index,
            3 => self.node.raft.raft_log.last_index(),
            _ => self.pick_index(input),
        };
        m.reject = input.pick(4) == 0;
        m.reject_hint = match input.pick(4) {
            0 => m.index,
            1 => self.node.raft.raft_log.last_index(),
            2 => m.index.saturating_sub(1 + input.pick(4) as u64),
            3 if self.wild => input.u64(),
            _ => 0,
        };
        m.context = match input.pick(5) {
            0 => CAMPAIGN_TRANSFER.to_vec(),
            1 | 2 => self
                .read_ctxs
                .get(input.pick(self.read_ctxs.len().max(1)))
                .cloned()
                .unwrap_or_default(),
            3 => input.bytes(4),
            _ => Vec::new(),
        };
        let n = input.pick(5);
        let mut idx = m.index;
        let mut term = m.log_term.max(1);
        let contiguous = input.pick(8) != 0;
        for _ in 0..n {
            idx = if contiguous {
                idx.wrapping_add(1)
            } else {
                self.pick_index(input)
            };
            if input.pick(3) == 0 {
                term = term.saturating_add(1).min(m.term.max(1));
            }
            let (entry_type, data) = if input.pick(6) == 0 {
                self.conf_change_entry(input)
            } else {
                (EntryType::Normal, input.bytes(6))
            };
            m.entries.push(Entry {
                term,
                index: idx,
                entry_type,
                data,
            });
        }
        if msg_type == MessageType::Snapshot || input.pick(8) == 0 {
            let index = match input.pick(4) {
                0 => self.node.raft.raft_log.committed + 1 + input.pick(5) as u64, // committed < 2^62
                1 => self.node.raft.raft_log.last_index(),
                _ => self.pick_index(input),
            };
            let term = match input.pick(3) {
                0 => self.term_at(index),
                1 => m.term,
                _ => self.pick_term(input),
            };
            m.snapshot = Some(Snapshot {
                metadata: SnapshotMetadata {
                    conf_state: self.conf_state(input),
                    index,
                    term,
                },
                data: input.bytes(4),
            });
        }
        m
    }

    // ---- operations ----

    /// Runs one operation from the script. Returns false when the run is over.
    fn op(&mut self, input: &mut Input<'_>) -> bool {
        if self.stopped || input.done() {
            return false;
        }
        let op = input.pick(20);
        let result = match op {
            0 | 1 => {
                for _ in 0..1 + input.pick(12) {
                    self.node.tick();
                }
                Ok(())
            }
            2 => self.node.propose(input.bytes(40)),
            3 => {
                let (entry_type, data) = self.conf_change_entry(input);
                let mut m = Message::new(MessageType::Propose, ID, 0);
                m.entries = vec![Entry {
                    entry_type,
                    data,
                    ..Entry::default()
                }];
                // Through the local path, as RawNode::propose_conf_change does.
                self.node.raft.step(m)
            }
            4 => {
                let ctx = input.bytes(3);
                self.read_ctxs.push(ctx.clone());
                self.node.read_index(ctx)
            }
            5 => {
                self.node.transfer_leader(self.pick_id(input));
                Ok(())
            }
            6 => {
                let id = self.pick_id(input);
                if input.bool() {
                    self.node.report_unreachable(id);
                } else {
                    let status = if input.bool() {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    self.node.report_snapshot(id, status);
                }
                Ok(())
            }
            7 => {
                // Raw bytes through the wire codec.
                let bytes = input.bytes(64);
                let mut with_version = vec![codec::FORMAT_VERSION];
                with_version.extend_from_slice(&bytes);
                match codec::decode::<Message>(&with_version) {
                    Ok(m) => self.step(m),
                    Err(_) => Ok(()),
                }
            }
            8..=12 => {
                let m = self.structured_message(input);
                self.step(m)
            }
            13 => {
                self.handle_ready_sync();
                Ok(())
            }
            14 => {
                self.handle_ready_light();
                Ok(())
            }
            15 => {
                self.take_ready();
                Ok(())
            }
            16 => {
                self.persist(1 + input.pick(3));
                Ok(())
            }
            17 => {
                self.advance_apply();
                Ok(())
            }
            18 => {
                self.compact();
                Ok(())
            }
            _ => self.node.campaign(),
        };
        if self.trace {
            let log = &self.node.raft.raft_log;
            eprintln!(
                "op {op}: {result:?} role {:?} term {} log [{}, {}] committed {} persisted {} applied {}",
                self.node.role(),
                self.node.raft.term,
                log.first_index(),
                log.last_index(),
                log.committed,
                log.persisted,
                log.applied
            );
        }
        if let Err(e) = result {
            if e.is_fatal() {
                if self.trace {
                    eprintln!("fatal: {e}");
                }
                self.stopped = true;
            }
        }
        self.check();
        true
    }

    fn step(&mut self, m: Message) -> Result<()> {
        if self.trace {
            eprintln!("step {m:?}");
        }
        let r = self.node.step(m);
        if self.trace {
            let log = &self.node.raft.raft_log;
            eprintln!(
                "  -> {r:?} role {:?} term {} log [{}, {}] committed {} applied {}",
                self.node.role(),
                self.node.raft.term,
                log.first_index(),
                log.last_index(),
                log.committed,
                log.applied
            );
        }
        r
    }

    /// raft-core's invariants, after every operation.
    pub fn check(&mut self) {
        let r = &self.node.raft;
        let log = &r.raft_log;
        let last = log.last_index();
        assert!(
            log.committed <= last,
            "committed {} > last {last}",
            log.committed
        );
        assert!(
            log.applied <= log.committed,
            "applied {} > committed {}",
            log.applied,
            log.committed
        );
        assert!(
            log.applied <= log.applying,
            "applied {} > applying {}",
            log.applied,
            log.applying
        );
        assert!(
            log.applying <= log.committed,
            "applying {} > committed {}",
            log.applying,
            log.committed
        );
        assert!(
            log.persisted <= last,
            "persisted {} > last {last}",
            log.persisted
        );
        assert!(
            log.first_index() <= last + 1,
            "first {} > last {last} + 1",
            log.first_index()
        );
        assert!(
            r.term >= self.seen.term,
            "term went back from {} to {}",
            self.seen.term,
            r.term
        );
        if r.term == self.seen.term && self.seen.vote != 0 {
            assert_eq!(r.vote, self.seen.vote, "a second vote in term {}", r.term);
        }
        // Terms from messages stay below the bound; only this node's own campaigns
        // (one term each) may pass it.
        assert!(r.term < BIG + 100_000);
        if r.state == StateRole::Leader {
            assert_eq!(r.leader_id, ID);
            let own = r
                .prs
                .progress
                .get(&ID)
                .expect("a leader is in its configuration");
            assert!(
                own.matched <= log.persisted,
                "leader's own match {} > persisted {}",
                own.matched,
                log.persisted
            );
            for (id, pr) in &r.prs.progress {
                assert!(
                    pr.matched < pr.next_idx,
                    "peer {id}: match {} >= next {}",
                    pr.matched,
                    pr.next_idx
                );
                assert!(
                    pr.matched <= last,
                    "peer {id}: match {} past the log {last}",
                    pr.matched
                );
                assert!(
                    pr.next_idx <= last + 1,
                    "peer {id}: next {} past the log {last}",
                    pr.next_idx
                );
            }
        }
        assert!(
            r.leader_id != ID || r.state == StateRole::Leader,
            "leader id is self but role {:?}",
            r.state
        );
        // Committed entries never change.
        let first = log.first_index();
        for i in first.max(log.committed.saturating_sub(8)).max(1)..=log.committed {
            if let Ok(t) = log.term(i) {
                let prev = *self.seen.committed.entry(i).or_insert(t);
                assert_eq!(prev, t, "committed entry {i} changed term");
            }
        }
        self.seen.term = r.term;
        self.seen.vote = r.vote;
    }
}

/// Runs one script. Panics on an invariant violation or a panic inside raft-core.
pub fn run(data: &[u8]) {
    run_with(data, false);
}

/// [`run`], printing each stepped message when `trace` is set.
pub fn run_with(data: &[u8], trace: bool) {
    let mut input = Input::new(data);
    let Some((mut h, role)) = build(&mut input) else {
        return;
    };
    h.trace = trace;
    if trace {
        let log = &h.node.raft.raft_log;
        eprintln!(
            "setup {role:?}: log [{}, {}] terms {:?} committed {}",
            log.first_index(),
            log.last_index(),
            (log.first_index()..=log.last_index())
                .map(|i| log.term(i).unwrap_or(0))
                .collect::<Vec<_>>(),
            log.committed
        );
    }
    h.reach(role);
    h.check();
    for _ in 0..256 {
        if !h.op(&mut input) {
            break;
        }
    }
    // Finish the engine's side: everything handed out is persisted and applied.
    if !h.stopped {
        let n = h.pending.len();
        h.persist(n);
        h.handle_ready_sync();
        h.check();
    }
}
