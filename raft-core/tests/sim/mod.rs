//! A seeded, randomized simulation of a raft-core cluster under faults.
//!
//! One seed fixes everything: the cluster size (3–7), PreVote / CheckQuorum, whether
//! Readies are persisted asynchronously, whether snapshots and log compaction run, the
//! network's drop / duplicate / delay rates, and every random choice after that. All
//! randomness comes from [`keel_raft::Rng`], so a seed replays bit for bit.
//!
//! The model:
//!
//! * **Nodes** are `RawNode<MemoryStorage>`. The node's `MemoryStorage` *is* its disk:
//!   it is written only when a `Ready` is persisted (snapshot, entries, hard state, in
//!   that order), so cloning it on a crash yields exactly the durable state. A Ready
//!   still held for persistence (async mode) is lost with its `persisted_messages`.
//! * **The state machine** is a hash chain over applied entries (applied index, chain
//!   hash, payload count); snapshot data carries it. It is volatile: on restart it is
//!   rebuilt from the durable snapshot and the node restarts with `Config.applied` =
//!   that snapshot's index, so raft-core re-hands the committed entries after it.
//! * **The network** drops, duplicates, delays (delivery after 1 + k steps) and reorders
//!   messages, and partitions nodes (symmetric groups, plus one-way cuts). Undelivered
//!   snapshots are reported to the sender as `SnapshotStatus::Failure`, delivered ones
//!   as `Finish`; other drops are sometimes reported with `report_unreachable`.
//! * **Faults**: crashes (losing everything not persisted) and restarts via
//!   `RawNode::new`, partitions, leadership transfers, skipped ticks (clock drift).
//!
//! Checked after every step (and role changes after every single message):
//!
//! * election safety — at most one leader per term over the whole run;
//! * log matching — every `(index, term)` names one entry with one predecessor term,
//!   checked on each Ready's entries and periodically on every node's whole log
//!   (stable + unstable) and on its persisted storage;
//! * durable vote safety — a persisted hard state never lowers its term or changes its
//!   vote within a term, and never lowers its commit index;
//! * committed entries are never lost — anything at or below any node's commit index
//!   (and anything applied) is recorded with the term it was committed under; every
//!   leader of a later term must hold it (leader completeness), and no node may ever
//!   commit a different entry at that index;
//! * state machine safety — no two nodes apply different entries at an index (the hash
//!   chain makes this cover the whole prefix), snapshots carry the state recorded for
//!   their index, and a state machine never moves backwards or skips an index.
//!
//! After the fault phase everything heals and a leader must be elected and a fresh
//! proposal applied on every node within [`LIVENESS_STEPS`] ticks plus
//! [`LIVENESS_STEPS_PER_ENTRY`] per entry of replication backlog.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_raft::{
    Config, Entry, EntryType, HardState, MemoryStorage, Message, MessageType, RawNode, Rng,
    Snapshot, SnapshotStatus, StateRole, Storage,
};

/// Steps the healed cluster gets to elect a leader and apply a proposal everywhere, on
/// top of [`LIVENESS_STEPS_PER_ENTRY`] for each entry of backlog at heal time (a seed
/// with one message in flight per follower, one-entry messages and slow disks needs
/// a round trip of up to ~12 steps per entry to catch a follower up).
pub const LIVENESS_STEPS: u64 = 400;
/// Extra liveness steps per entry between the lowest commit index and the highest last
/// index when the cluster heals.
pub const LIVENESS_STEPS_PER_ENTRY: u64 = 12;
/// Most steps a message or a persist may take once the cluster is healed, so that a
/// vote round trip stays well inside the 10-tick minimum election timeout.
pub const HEALED_MAX_DELAY: u64 = 2;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The seed; everything else is derived from it.
    pub seed: u64,
    /// Overrides the seed's cluster size.
    pub nodes: Option<usize>,
    /// Print a trace of every step and event.
    pub verbose: bool,
}

impl Options {
    /// A quiet run of `seed`.
    pub fn seed(seed: u64) -> Options {
        Options {
            seed,
            ..Options::default()
        }
    }
}

/// Counters over one or more seeds.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Seeds run.
    pub seeds: u64,
    /// Simulation steps (ticks) run.
    pub steps: u64,
    /// Distinct (term, leader) elections observed.
    pub elections: u64,
    /// Log indices committed (highest committed index, summed over seeds).
    pub committed: u64,
    /// Client proposals attempted.
    pub proposals: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Snapshots created locally (followed by compaction).
    pub snapshots_created: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Messages sent.
    pub msgs_sent: u64,
    /// Messages dropped (randomly, by a partition, or to a crashed node).
    pub msgs_dropped: u64,
    /// Messages duplicated.
    pub msgs_duplicated: u64,
    /// Seeds that used the async persistence path.
    pub async_seeds: u64,
    /// Seeds with snapshots and compaction.
    pub snapshot_seeds: u64,
    /// Most steps the healed cluster needed to apply the liveness proposal everywhere.
    pub liveness_steps_max: u64,
    /// The seed that needed `liveness_steps_max`.
    pub liveness_slowest_seed: u64,
}

impl Stats {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.elections += o.elections;
        self.committed += o.committed;
        self.proposals += o.proposals;
        self.crashes += o.crashes;
        self.snapshots_created += o.snapshots_created;
        self.snapshots_installed += o.snapshots_installed;
        self.partitions += o.partitions;
        self.msgs_sent += o.msgs_sent;
        self.msgs_dropped += o.msgs_dropped;
        self.msgs_duplicated += o.msgs_duplicated;
        self.async_seeds += o.async_seeds;
        self.snapshot_seeds += o.snapshot_seeds;
        if o.liveness_steps_max > self.liveness_steps_max {
            self.liveness_steps_max = o.liveness_steps_max;
            self.liveness_slowest_seed = o.liveness_slowest_seed;
        }
    }

    /// A one-line human summary.
    pub fn summary(&self) -> String {
        format!(
            "{} seeds ({} async, {} snapshotting), {} steps: {} elections, {} entries committed, \
             {} proposals, {} crashes, {} partitions, snapshots {} created / {} installed, \
             messages {} sent / {} dropped / {} duplicated, liveness <= {} steps (seed {})",
            self.seeds,
            self.async_seeds,
            self.snapshot_seeds,
            self.steps,
            self.elections,
            self.committed,
            self.proposals,
            self.crashes,
            self.partitions,
            self.snapshots_created,
            self.snapshots_installed,
            self.msgs_sent,
            self.msgs_dropped,
            self.msgs_duplicated,
            self.liveness_steps_max,
            self.liveness_slowest_seed,
        )
    }
}

/// The command that replays `seed` verbosely.
pub fn replay_command(seed: u64, nodes: Option<usize>) -> String {
    match nodes {
        None => format!(
            "KEEL_SIM_SEED={seed} cargo test -p keel-raft --test simulation replay_seed_from_env -- --nocapture \
             (or: cargo run -p keel-raft --example simulate -- --seed {seed})"
        ),
        Some(n) => format!(
            "KEEL_SIM_SEED={seed} KEEL_SIM_NODES={n} cargo test -p keel-raft --test simulation replay_seed_from_env -- --nocapture \
             (or: cargo run -p keel-raft --example simulate -- --seed {seed} --nodes {n})"
        ),
    }
}

/// Runs one seed, turning a panic inside raft-core (or the simulator) into an error.
pub fn run_seed(opts: &Options) -> Result<Stats, String> {
    match catch_unwind(AssertUnwindSafe(|| run(opts))) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_string());
            Err(format!("panic: {msg}"))
        }
    }
}

/// Runs `seed` and panics with the seed and the replay command if it fails.
pub fn check_seed(seed: u64) -> Stats {
    match run_seed(&Options::seed(seed)) {
        Ok(s) => s,
        Err(e) => panic!("{}", failure_report(seed, None, &e)),
    }
}

/// The message printed for a failing seed.
pub fn failure_report(seed: u64, nodes: Option<usize>, err: &str) -> String {
    format!(
        "simulation seed {seed} failed: {err}\n\nreplay: {}\n",
        replay_command(seed, nodes)
    )
}

type SimResult<T> = Result<T, String>;

/// Everything a seed decides up front.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub async_persist: bool,
    pub max_persist_delay: u64,
    pub snapshots: bool,
    pub snapshot_rate: f64,
    pub drop_rate: f64,
    pub dup_rate: f64,
    pub max_delay: u64,
    pub crash_rate: f64,
    pub max_down: usize,
    pub partition_rate: f64,
    pub propose_rate: f64,
    pub transfer_rate: f64,
    pub skip_tick_rate: f64,
    pub fault_steps: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    pub max_committed_per_ready: u64,
    pub max_uncommitted: u64,
}

fn frac(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

impl Params {
    fn draw(rng: &mut Rng, nodes: Option<usize>) -> Params {
        let drawn = rng.range(3, 8) as usize;
        let n = nodes.unwrap_or(drawn).max(1);
        let async_persist = rng.chance(0.35);
        let snapshots = rng.chance(0.45);
        Params {
            nodes: n,
            pre_vote: rng.chance(0.5),
            check_quorum: rng.chance(0.5),
            async_persist,
            max_persist_delay: rng.range(1, 9),
            snapshots,
            snapshot_rate: frac(rng, 0.02, 0.15),
            drop_rate: if rng.chance(0.15) {
                0.0
            } else {
                frac(rng, 0.0, 0.25)
            },
            dup_rate: frac(rng, 0.0, 0.1),
            max_delay: rng.range(0, 5),
            crash_rate: if rng.chance(0.15) {
                0.0
            } else {
                frac(rng, 0.002, 0.06)
            },
            max_down: rng.range(1, n.max(2) as u64) as usize,
            partition_rate: frac(rng, 0.0, 0.03),
            propose_rate: frac(rng, 0.1, 0.8),
            transfer_rate: if rng.chance(0.3) {
                frac(rng, 0.0, 0.02)
            } else {
                0.0
            },
            skip_tick_rate: frac(rng, 0.0, 0.1),
            fault_steps: rng.range(200, 600),
            max_size_per_msg: if rng.chance(0.3) {
                rng.range(1, 200)
            } else {
                u64::MAX
            },
            max_inflight_msgs: if rng.chance(0.3) {
                rng.range(1, 5) as usize
            } else {
                256
            },
            max_committed_per_ready: if rng.chance(0.2) {
                rng.range(1, 200)
            } else {
                u64::MAX
            },
            max_uncommitted: if rng.chance(0.15) {
                rng.range(32, 512)
            } else {
                0
            },
        }
    }
}

/// The replicated state machine: a hash chain over every applied entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sm {
    applied: u64,
    hash: u64,
    payloads: u64,
}

impl Sm {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.applied.to_le_bytes());
        v.extend_from_slice(&self.hash.to_le_bytes());
        v.extend_from_slice(&self.payloads.to_le_bytes());
        v
    }

    fn decode(data: &[u8]) -> SimResult<Sm> {
        if data.len() != 24 {
            return Err(format!(
                "snapshot data is {} bytes, not a state machine image",
                data.len()
            ));
        }
        let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
        Ok(Sm {
            applied: word(0),
            hash: word(1),
            payloads: word(2),
        })
    }
}

fn fnv(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn fingerprint(e: &Entry) -> u64 {
    let ty = match e.entry_type {
        EntryType::Normal => 0u64,
        EntryType::ConfChange => 1,
        EntryType::ConfChangeV2 => 2,
    };
    fnv(&e.data) ^ (ty << 62)
}

fn chain(h: u64, index: u64, term: u64, fp: u64) -> u64 {
    let mut r = Rng::new(
        h.rotate_left(7)
            ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ term.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ fp,
    );
    r.next_u64()
}

/// A Ready handed out but not yet persisted (async mode).
struct Held {
    number: u64,
    due: u64,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    msgs: Vec<Message>,
}

struct Node {
    id: u64,
    incarnation: u64,
    raw: Option<RawNode<MemoryStorage>>,
    /// The durable state while the node is down.
    disk: MemoryStorage,
    down_until: u64,
    sm: Sm,
    held: VecDeque<Held>,
    last_due: u64,
    commit_checked: u64,
    leader_checked_term: u64,
}

struct InFlight {
    at: u64,
    msg: Message,
    /// The sender's incarnation, so a snapshot report reaches only the node that sent it.
    inc: u64,
}

/// A report for a sender about a message: `Some(status)` for a snapshot, `None` for
/// an unreachable peer.
struct Report {
    from: u64,
    inc: u64,
    to: u64,
    status: Option<SnapshotStatus>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Committed {
    entry_term: u64,
    /// The term of the first node seen holding it committed (>= the term it committed in).
    commit_term: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Applied {
    term: u64,
    fp: u64,
    hash: u64,
}

struct Sim {
    seed: u64,
    p: Params,
    rng: Rng,
    verbose: bool,
    now: u64,
    nodes: Vec<Node>,
    net: Vec<InFlight>,
    reports: Vec<Report>,
    /// Partition group of each node (all equal when there is no partition).
    groups: Vec<u8>,
    /// A one-way cut: (node, outbound?) drops everything that node sends (or receives).
    oneway: Option<(u64, bool)>,
    healed: bool,
    next_payload: u64,
    marker: Vec<u8>,
    marker_index: Option<u64>,
    // ---- global records ----
    leaders: HashMap<u64, u64>,
    /// (index, term) -> (predecessor term if known, entry fingerprint).
    entries: HashMap<(u64, u64), (Option<u64>, u64)>,
    committed: Vec<Option<Committed>>,
    new_commits: Vec<u64>,
    applied: Vec<Option<Applied>>,
    events: VecDeque<String>,
    stats: Stats,
}

fn ensure_len<T: Clone>(v: &mut Vec<Option<T>>, index: u64) {
    if v.len() <= index as usize {
        v.resize(index as usize + 1, None);
    }
}

/// Runs one seed: a fault phase, then a healed phase that must make progress.
fn run(opts: &Options) -> SimResult<Stats> {
    let mut sim = Sim::new(opts)?;
    let r = sim.run_phases();
    r.map_err(|e| sim.describe_failure(&e))
}

impl Sim {
    fn new(opts: &Options) -> SimResult<Sim> {
        let mut rng = Rng::new(opts.seed);
        let p = Params::draw(&mut rng, opts.nodes);
        let voters: Vec<u64> = (1..=p.nodes as u64).collect();
        let nodes = voters
            .iter()
            .map(|&id| Node {
                id,
                incarnation: 0,
                raw: None,
                disk: MemoryStorage::new_with_conf_state(voters.clone(), vec![]),
                down_until: 0,
                sm: Sm::default(),
                held: VecDeque::new(),
                last_due: 0,
                commit_checked: 0,
                leader_checked_term: 0,
            })
            .collect();
        let mut sim = Sim {
            seed: opts.seed,
            groups: vec![0; p.nodes],
            p,
            rng,
            verbose: opts.verbose,
            now: 0,
            nodes,
            net: Vec::new(),
            reports: Vec::new(),
            oneway: None,
            healed: false,
            next_payload: 0,
            marker: format!("liveness-{}", opts.seed).into_bytes(),
            marker_index: None,
            leaders: HashMap::new(),
            entries: HashMap::new(),
            committed: Vec::new(),
            new_commits: Vec::new(),
            applied: Vec::new(),
            events: VecDeque::new(),
            stats: Stats {
                seeds: 1,
                ..Stats::default()
            },
        };
        if sim.p.async_persist {
            sim.stats.async_seeds = 1;
        }
        if sim.p.snapshots {
            sim.stats.snapshot_seeds = 1;
        }
        let params = format!("seed {} params: {:?}", sim.seed, sim.p);
        sim.event(params);
        for i in 0..sim.nodes.len() {
            sim.start_node(i)?;
        }
        Ok(sim)
    }

    fn run_phases(&mut self) -> SimResult<Stats> {
        for _ in 0..self.p.fault_steps {
            self.step()?;
        }
        self.heal()?;
        let start = self.now;
        let bound = LIVENESS_STEPS + LIVENESS_STEPS_PER_ENTRY * self.backlog();
        let mut proposed_at: Option<u64> = None;
        for _ in 0..bound {
            self.step()?;
            if self.marker_applied_everywhere() {
                self.full_check()?;
                let took = self.now - start;
                self.stats.liveness_steps_max = took;
                self.stats.liveness_slowest_seed = self.seed;
                self.stats.committed = self.committed.len().saturating_sub(1) as u64;
                self.stats.elections = self.leaders.len() as u64;
                self.event(format!(
                    "liveness: proposal applied everywhere after {took} steps"
                ));
                return Ok(self.stats.clone());
            }
            let retry = proposed_at.is_none_or(|t| self.now - t >= 30);
            if retry && self.marker_index.is_none() {
                if let Some(i) = self.leader_index() {
                    let marker = self.marker.clone();
                    let raw = self.nodes[i].raw.as_mut().unwrap();
                    if raw.propose(marker).is_ok() {
                        proposed_at = Some(self.now);
                        let id = self.nodes[i].id;
                        self.event(format!("liveness: proposed to leader {id}"));
                    }
                    self.note_role(i)?;
                }
            }
        }
        Err(format!(
            "liveness: the healed cluster did not elect a leader and apply a new proposal on \
             every node within {bound} steps (marker index {:?})",
            self.marker_index
        ))
    }

    /// Entries between the lowest commit index and the highest last index.
    fn backlog(&self) -> u64 {
        let logs = self.nodes.iter().filter_map(|n| n.raw.as_ref());
        let hi = logs.clone().map(|r| r.raft.raft_log.last_index()).max();
        let lo = logs.map(|r| r.raft.raft_log.committed).min();
        hi.unwrap_or(0).saturating_sub(lo.unwrap_or(0))
    }

    fn marker_applied_everywhere(&self) -> bool {
        let Some(m) = self.marker_index else {
            return false;
        };
        self.nodes
            .iter()
            .all(|n| n.raw.is_some() && n.sm.applied >= m)
    }

    fn leader_index(&self) -> Option<usize> {
        // The leader of the highest term, if any.
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.raw.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.raft.state == StateRole::Leader)
            .max_by_key(|(_, r)| r.raft.term)
            .map(|(i, _)| i)
    }

    fn event(&mut self, s: String) {
        if self.verbose {
            println!("[t={:>4}] {s}", self.now);
        }
        if self.events.len() >= 40 {
            self.events.pop_front();
        }
        self.events.push_back(format!("[t={}] {s}", self.now));
    }

    fn describe_failure(&self, err: &str) -> String {
        let mut s = format!("{err}\n--- cluster at step {} ---\n", self.now);
        s.push_str(&self.cluster_line());
        for n in &self.nodes {
            if let Some(r) = n.raw.as_ref().filter(|r| r.raft.state == StateRole::Leader) {
                let _ = write!(s, "\nleader {} progress:", n.id);
                for (id, pr) in &r.raft.prs.progress {
                    let _ = write!(
                        s,
                        "\n  {id}: {:?} match {} next {} paused {} inflight {} active {}",
                        pr.state,
                        pr.matched,
                        pr.next_idx,
                        pr.is_paused(),
                        pr.ins.count(),
                        pr.recent_active
                    );
                }
            }
        }
        s.push_str("\n--- last events ---\n");
        for e in &self.events {
            let _ = writeln!(s, "{e}");
        }
        s
    }

    fn cluster_line(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            match &n.raw {
                None => {
                    let _ = write!(s, "| {}:down ", n.id);
                }
                Some(r) => {
                    let role = match r.raft.state {
                        StateRole::Leader => "L",
                        StateRole::Follower => "F",
                        StateRole::Candidate => "C",
                        StateRole::PreCandidate => "P",
                    };
                    let _ = write!(
                        s,
                        "| {}:{}{} last {} persisted {} commit {} applied {} first {} held {} ",
                        n.id,
                        role,
                        r.raft.term,
                        r.raft.raft_log.last_index(),
                        r.raft.raft_log.persisted,
                        r.raft.raft_log.committed,
                        n.sm.applied,
                        r.raft.raft_log.first_index(),
                        n.held.len(),
                    );
                }
            }
        }
        s
    }

    // ---- node lifecycle ----

    fn config(&mut self, id: u64, applied: u64) -> Config {
        Config {
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg_bytes: self.p.max_size_per_msg,
            max_inflight_msgs: self.p.max_inflight_msgs,
            max_committed_size_per_ready_bytes: self.p.max_committed_per_ready,
            max_uncommitted_size_bytes: self.p.max_uncommitted,
            check_quorum: self.p.check_quorum,
            pre_vote: self.p.pre_vote,
            seed: self.rng.next_u64(),
            ..Config::new(id)
        }
    }

    fn start_node(&mut self, i: usize) -> SimResult<()> {
        let id = self.nodes[i].id;
        let disk = self.nodes[i].disk.clone();
        let snap = disk
            .snapshot(0, 0)
            .map_err(|e| format!("node {id}: durable snapshot unreadable: {e}"))?;
        let sm = if snap.is_empty() {
            Sm::default()
        } else {
            let sm = Sm::decode(&snap.data)?;
            self.check_snapshot_image(id, &snap, sm)?;
            sm
        };
        let cfg = self.config(id, snap.metadata.index);
        let raw = RawNode::new(&cfg, disk).map_err(|e| {
            format!(
                "node {id} failed to restart from its durable state (hard state {:?}, \
                 snapshot index {}): {e}",
                self.nodes[i].disk.hard_state(),
                snap.metadata.index
            )
        })?;
        let n = &mut self.nodes[i];
        n.raw = Some(raw);
        n.sm = sm;
        n.held.clear();
        n.last_due = 0;
        n.commit_checked = 0;
        n.leader_checked_term = 0;
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let down_for = self.rng.range(1, 50);
        let n = &mut self.nodes[i];
        let Some(raw) = n.raw.take() else {
            return;
        };
        n.disk = raw.store().clone();
        let lost = n.held.len();
        n.held.clear();
        n.sm = Sm::default();
        n.incarnation += 1;
        n.down_until = self.now + down_for;
        let id = n.id;
        self.stats.crashes += 1;
        self.event(format!(
            "crash node {id} (losing {lost} unpersisted readies), down for {down_for} steps"
        ));
    }

    fn restart(&mut self, i: usize) -> SimResult<()> {
        self.start_node(i)?;
        let n = &self.nodes[i];
        let raw = n.raw.as_ref().unwrap();
        let msg = format!(
            "restart node {} at term {} commit {} (snapshot {}, last {})",
            n.id,
            raw.raft.term,
            raw.raft.raft_log.committed,
            n.sm.applied,
            raw.raft.raft_log.last_index()
        );
        self.event(msg);
        Ok(())
    }

    fn heal(&mut self) -> SimResult<()> {
        self.healed = true;
        self.groups.iter_mut().for_each(|g| *g = 0);
        self.oneway = None;
        for i in 0..self.nodes.len() {
            if self.nodes[i].raw.is_none() {
                self.restart(i)?;
            }
        }
        self.event("heal: all nodes up, no drops, no partitions".to_string());
        Ok(())
    }

    // ---- one step ----

    fn step(&mut self) -> SimResult<()> {
        self.now += 1;
        self.stats.steps += 1;
        if !self.healed {
            self.faults()?;
        }
        self.deliver()?;
        if !self.healed {
            self.client()?;
        }
        for i in 0..self.nodes.len() {
            let skip = !self.healed && self.rng.chance(self.p.skip_tick_rate);
            if let Some(raw) = self.nodes[i].raw.as_mut() {
                if !skip {
                    raw.tick();
                    self.note_role(i)?;
                }
            }
        }
        for i in 0..self.nodes.len() {
            self.process(i)?;
        }
        if self.p.snapshots && self.rng.chance(self.p.snapshot_rate) {
            self.maybe_snapshot()?;
        }
        self.check()?;
        if self.verbose {
            println!("[t={:>4}] {}", self.now, self.cluster_line());
            for n in &self.nodes {
                let Some(r) = n.raw.as_ref() else { continue };
                if r.raft.state == StateRole::Leader {
                    let prs: Vec<_> = r
                        .raft
                        .prs
                        .progress
                        .iter()
                        .map(|(id, p)| {
                            format!("{id}:{:?} match {} next {}", p.state, p.matched, p.next_idx)
                        })
                        .collect();
                    println!("         leader {} progress [{}]", n.id, prs.join(", "));
                }
            }
        }
        Ok(())
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].raw.is_some())
            .collect()
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            return None;
        }
        Some(v[self.rng.range(0, v.len() as u64) as usize])
    }

    fn faults(&mut self) -> SimResult<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].raw.is_none() && self.now >= self.nodes[i].down_until {
                self.restart(i)?;
            }
        }
        if self.rng.chance(self.p.crash_rate) {
            let up = self.up_nodes();
            if self.nodes.len() - up.len() < self.p.max_down {
                // Leaders crash more often: their unpersisted tail is where a wrong
                // commit rule loses entries.
                let leader = self.leader_index().filter(|_| self.rng.chance(0.5));
                if let Some(i) = leader.or_else(|| self.pick(&up)) {
                    self.crash(i);
                }
            }
        }
        if self.rng.chance(self.p.partition_rate) {
            let partitioned = self.groups.iter().any(|&g| g != 0) || self.oneway.is_some();
            if partitioned && self.rng.chance(0.5) {
                self.groups.iter_mut().for_each(|g| *g = 0);
                self.oneway = None;
                self.event("partition healed".to_string());
            } else if self.rng.chance(0.25) {
                let id = self.rng.range(1, self.nodes.len() as u64 + 1);
                let outbound = self.rng.chance(0.5);
                self.oneway = Some((id, outbound));
                self.stats.partitions += 1;
                let dir = if outbound { "sends" } else { "receives" };
                self.event(format!("one-way cut: node {id} {dir} nothing"));
            } else {
                let k = self.rng.range(2, 4);
                for g in 0..self.groups.len() {
                    self.groups[g] = self.rng.range(0, k) as u8;
                }
                self.stats.partitions += 1;
                let groups = format!("partition into groups {:?}", self.groups);
                self.event(groups);
            }
        }
        if self.rng.chance(self.p.transfer_rate) {
            if let Some(i) = self.leader_index() {
                let to = self.rng.range(1, self.nodes.len() as u64 + 1);
                let id = self.nodes[i].id;
                self.event(format!("leader {id} asked to transfer leadership to {to}"));
                self.nodes[i].raw.as_mut().unwrap().transfer_leader(to);
                self.note_role(i)?;
            }
        }
        Ok(())
    }

    fn client(&mut self) -> SimResult<()> {
        if !self.rng.chance(self.p.propose_rate) {
            return Ok(());
        }
        let up = self.up_nodes();
        let Some(i) = self.pick(&up) else {
            return Ok(());
        };
        let batch = if self.rng.chance(0.1) {
            self.rng.range(2, 5)
        } else {
            1
        };
        let mut datas = Vec::new();
        for _ in 0..batch {
            self.next_payload += 1;
            let mut d = self.next_payload.to_le_bytes().to_vec();
            let pad = self.rng.range(0, 24) as usize;
            d.extend(std::iter::repeat_n(b'x', pad));
            datas.push(d);
        }
        self.stats.proposals += batch;
        let raw = self.nodes[i].raw.as_mut().unwrap();
        // ProposalDropped is expected (no leader, size limit, transfer in progress).
        let _ = if datas.len() == 1 {
            raw.propose(datas.pop().unwrap())
        } else {
            raw.propose_batch(datas)
        };
        self.note_role(i)
    }

    // ---- network ----

    fn blocked(&self, from: u64, to: u64) -> bool {
        if self.healed {
            return false;
        }
        let (f, t) = ((from - 1) as usize, (to - 1) as usize);
        if self.groups[f] != self.groups[t] {
            return true;
        }
        match self.oneway {
            Some((id, true)) => id == from,
            Some((id, false)) => id == to,
            None => false,
        }
    }

    fn send(&mut self, i: usize, msgs: Vec<Message>) {
        let inc = self.nodes[i].incarnation;
        for m in msgs {
            self.stats.msgs_sent += 1;
            if !self.healed && self.rng.chance(self.p.drop_rate) {
                self.undelivered(&m, inc);
                continue;
            }
            let copies = if !self.healed && self.rng.chance(self.p.dup_rate) {
                self.stats.msgs_duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + 1 + self.rng.range(0, self.net_delay_bound() + 1);
                self.net.push(InFlight {
                    at,
                    msg: m.clone(),
                    inc,
                });
            }
        }
    }

    /// Once healed, disks and network are fast relative to the election timeout
    /// (Raft's timing requirement for liveness); before, a slow disk is a fault too.
    fn persist_delay_bound(&self) -> u64 {
        if self.healed {
            self.p.max_persist_delay.min(HEALED_MAX_DELAY)
        } else {
            self.p.max_persist_delay
        }
    }

    fn net_delay_bound(&self) -> u64 {
        if self.healed {
            self.p.max_delay.min(HEALED_MAX_DELAY)
        } else {
            self.p.max_delay
        }
    }

    fn undelivered(&mut self, m: &Message, inc: u64) {
        self.stats.msgs_dropped += 1;
        if m.msg_type == MessageType::Snapshot {
            self.reports.push(Report {
                from: m.from,
                inc,
                to: m.to,
                status: Some(SnapshotStatus::Failure),
            });
        } else if self.rng.chance(0.1) {
            self.reports.push(Report {
                from: m.from,
                inc,
                to: m.to,
                status: None,
            });
        }
    }

    fn deliver(&mut self) -> SimResult<()> {
        for r in std::mem::take(&mut self.reports) {
            let i = (r.from - 1) as usize;
            if self.nodes[i].incarnation != r.inc {
                continue;
            }
            let Some(raw) = self.nodes[i].raw.as_mut() else {
                continue;
            };
            match r.status {
                Some(status) => raw.report_snapshot(r.to, status),
                None => raw.report_unreachable(r.to),
            }
            self.note_role(i)?;
        }
        let now = self.now;
        let mut due = Vec::new();
        let mut rest = Vec::with_capacity(self.net.len());
        for f in std::mem::take(&mut self.net) {
            if f.at <= now {
                due.push(f);
            } else {
                rest.push(f);
            }
        }
        self.net = rest;
        // Reorder whatever arrives in the same step.
        for k in (1..due.len()).rev() {
            let j = self.rng.range(0, k as u64 + 1) as usize;
            due.swap(k, j);
        }
        for f in due {
            let (from, to) = (f.msg.from, f.msg.to);
            let ti = (to - 1) as usize;
            if self.nodes[ti].raw.is_none() || self.blocked(from, to) {
                self.undelivered(&f.msg, f.inc);
                continue;
            }
            let is_snap = f.msg.msg_type == MessageType::Snapshot;
            if self.verbose {
                let m = &f.msg;
                println!(
                    "[t={:>4}]   {}->{} {:?} term {} index {} log_term {} commit {} entries {} reject {}{}",
                    self.now,
                    from,
                    to,
                    m.msg_type,
                    m.term,
                    m.index,
                    m.log_term,
                    m.commit,
                    m.entries.len(),
                    m.reject,
                    m.snapshot
                        .as_ref()
                        .map(|s| format!(" snapshot {}@{}", s.metadata.index, s.metadata.term))
                        .unwrap_or_default(),
                );
            }
            let raw = self.nodes[ti].raw.as_mut().unwrap();
            // Errors (a response from an unknown peer, a malformed message) are the
            // receiver's to drop.
            let _ = raw.step(f.msg);
            self.note_role(ti)?;
            if is_snap {
                self.reports.push(Report {
                    from,
                    inc: f.inc,
                    to,
                    status: Some(SnapshotStatus::Finish),
                });
            }
        }
        Ok(())
    }

    // ---- Ready handling ----

    fn raw_mut(&mut self, i: usize) -> &mut RawNode<MemoryStorage> {
        self.nodes[i].raw.as_mut().expect("node is up")
    }

    fn process(&mut self, i: usize) -> SimResult<()> {
        if self.nodes[i].raw.is_none() {
            return Ok(());
        }
        for _ in 0..1000 {
            self.persist_due(i)?;
            let raw = self.raw_mut(i);
            if !raw.has_ready() {
                return Ok(());
            }
            let mut rd = raw.ready();
            let prev = rd
                .entries()
                .first()
                .and_then(|e| raw.raft.raft_log.term(e.index - 1).ok());
            let id = self.nodes[i].id;
            register_entries(&mut self.entries, id, "ready", prev, rd.entries())?;
            let msgs = rd.take_messages();
            self.send(i, msgs);
            if self.p.async_persist {
                let committed = rd.take_committed_entries();
                self.apply(i, committed)?;
                let delay = self.rng.range(0, self.persist_delay_bound() + 1);
                let n = &mut self.nodes[i];
                let due = n.last_due.max(self.now + delay);
                n.last_due = due;
                n.held.push_back(Held {
                    number: rd.number(),
                    due,
                    snapshot: rd.snapshot().clone(),
                    entries: rd.take_entries(),
                    hs: rd.hs().copied(),
                    msgs: rd.take_persisted_messages(),
                });
                self.raw_mut(i).advance_append_async(rd);
            } else {
                let snap = rd.snapshot().clone();
                let ents = rd.take_entries();
                let hs = rd.hs().copied();
                self.write(i, snap, &ents, hs)?;
                let pm = rd.take_persisted_messages();
                self.send(i, pm);
                let committed = rd.take_committed_entries();
                self.apply(i, committed)?;
                let raw = self.raw_mut(i);
                let mut light = raw.advance(rd);
                if let Some(c) = light.commit_index() {
                    let cur = raw.store().hard_state().commit;
                    raw.mut_store().commit_to(c.max(cur));
                }
                let lm = light.take_messages();
                let lc = light.take_committed_entries();
                self.send(i, lm);
                self.apply(i, lc)?;
            }
            let applied = self.nodes[i].sm.applied;
            self.raw_mut(i).advance_apply_to(applied);
            self.note_role(i)?;
        }
        Err(format!(
            "node {} never ran out of ready work",
            self.nodes[i].id
        ))
    }

    fn persist_due(&mut self, i: usize) -> SimResult<()> {
        while self.nodes[i]
            .held
            .front()
            .is_some_and(|h| h.due <= self.now)
        {
            let h = self.nodes[i].held.pop_front().unwrap();
            self.write(i, h.snapshot, &h.entries, h.hs)?;
            self.send(i, h.msgs);
            self.raw_mut(i).on_persist_ready(h.number);
            self.note_role(i)?;
        }
        Ok(())
    }

    /// Persists one Ready's snapshot, entries and hard state to the node's disk.
    fn write(
        &mut self,
        i: usize,
        snap: Snapshot,
        ents: &[Entry],
        hs: Option<HardState>,
    ) -> SimResult<()> {
        let id = self.nodes[i].id;
        if !snap.is_empty() {
            let sm = Sm::decode(&snap.data)?;
            self.check_snapshot_image(id, &snap, sm)?;
            if sm.applied <= self.nodes[i].sm.applied {
                return Err(format!(
                    "node {id} was handed a snapshot at {} but its state machine already \
                     applied {}: the state machine would move backwards",
                    sm.applied, self.nodes[i].sm.applied
                ));
            }
            let index = snap.metadata.index;
            self.raw_mut(i)
                .mut_store()
                .apply_snapshot(snap)
                .map_err(|e| format!("node {id}: storage refused the snapshot at {index}: {e}"))?;
            self.nodes[i].sm = sm;
            self.stats.snapshots_installed += 1;
            self.event(format!("node {id} installed snapshot at {index}"));
        }
        let store = self.raw_mut(i).mut_store();
        store
            .append(ents)
            .map_err(|e| format!("node {id}: storage refused a Ready's entries: {e}"))?;
        if let Some(hs) = hs {
            let old = store.hard_state();
            if hs.term < old.term {
                return Err(format!(
                    "node {id}: persisted term would go back from {} to {}",
                    old.term, hs.term
                ));
            }
            if hs.term == old.term && old.vote != 0 && hs.vote != old.vote {
                return Err(format!(
                    "node {id}: persisted vote in term {} would change from {} to {}",
                    hs.term, old.vote, hs.vote
                ));
            }
            if hs.commit < old.commit {
                return Err(format!(
                    "node {id}: persisted commit index would go back from {} to {}",
                    old.commit, hs.commit
                ));
            }
            store.set_hard_state(hs);
        }
        Ok(())
    }

    fn apply(&mut self, i: usize, ents: Vec<Entry>) -> SimResult<()> {
        let id = self.nodes[i].id;
        let term_now = self.nodes[i].raw.as_ref().map_or(0, |r| r.raft.term);
        for e in ents {
            let sm = self.nodes[i].sm;
            if e.index != sm.applied + 1 {
                return Err(format!(
                    "node {id} was handed entry {} to apply but its state machine is at {}",
                    e.index, sm.applied
                ));
            }
            let fp = fingerprint(&e);
            let hash = chain(sm.hash, e.index, e.term, fp);
            let rec = Applied {
                term: e.term,
                fp,
                hash,
            };
            ensure_len(&mut self.applied, e.index);
            match self.applied[e.index as usize] {
                Some(prev) if prev != rec => {
                    return Err(format!(
                        "state machine safety: node {id} applied entry {}@term {} (data {:?}) \
                         but term {} / fingerprint {:x} was applied there before{}",
                        e.index,
                        e.term,
                        String::from_utf8_lossy(&e.data),
                        prev.term,
                        prev.fp,
                        if prev.term == e.term && prev.fp == fp {
                            " (same entry, different preceding history)"
                        } else {
                            ""
                        }
                    ));
                }
                Some(_) => {}
                None => self.applied[e.index as usize] = Some(rec),
            }
            self.note_committed(id, e.index, e.term, term_now)?;
            let sm = &mut self.nodes[i].sm;
            sm.applied = e.index;
            sm.hash = hash;
            if !e.data.is_empty() {
                sm.payloads += 1;
            }
            if self.marker_index.is_none() && e.data == self.marker {
                self.marker_index = Some(e.index);
                self.event(format!("liveness proposal committed at {}", e.index));
            }
        }
        Ok(())
    }

    fn check_snapshot_image(&self, id: u64, snap: &Snapshot, sm: Sm) -> SimResult<()> {
        let index = snap.metadata.index;
        if sm.applied != index {
            return Err(format!(
                "node {id}: snapshot at {index} carries a state machine at {}",
                sm.applied
            ));
        }
        match self.applied.get(index as usize).copied().flatten() {
            Some(a) if a.hash == sm.hash && a.term == snap.metadata.term => Ok(()),
            Some(a) => Err(format!(
                "node {id}: snapshot at {index}@{} does not match what was applied there \
                 (term {}, hash {:x} vs {:x})",
                snap.metadata.term, a.term, a.hash, sm.hash
            )),
            None => Err(format!(
                "node {id}: snapshot at {index} holds state no node ever applied"
            )),
        }
    }

    fn maybe_snapshot(&mut self) -> SimResult<()> {
        let up = self.up_nodes();
        let Some(i) = self.pick(&up) else {
            return Ok(());
        };
        let margin = self.rng.range(0, 8);
        let id = self.nodes[i].id;
        let sm = self.nodes[i].sm;
        let raw = self.raw_mut(i);
        let store = raw.store();
        let snap_index = store.snapshot(0, 0).map_or(0, |s| s.metadata.index);
        let commit = store.hard_state().commit;
        let last = store.last_index().unwrap_or(0);
        let idx = sm.applied;
        if idx <= snap_index || idx > commit || idx > last {
            return Ok(());
        }
        raw.mut_store()
            .create_snapshot(idx, None, sm.encode())
            .map_err(|e| format!("node {id}: create_snapshot({idx}) failed: {e}"))?;
        let compact_to = idx.saturating_sub(margin);
        let first = raw.store().first_index().unwrap_or(1);
        if compact_to >= first {
            raw.mut_store()
                .compact(compact_to)
                .map_err(|e| format!("node {id}: compact({compact_to}) failed: {e}"))?;
        }
        self.stats.snapshots_created += 1;
        self.event(format!(
            "node {id} snapshot at {idx}, compacted to {compact_to}"
        ));
        Ok(())
    }

    // ---- invariants ----

    /// Election safety, checked whenever a node may have changed role.
    fn note_role(&mut self, i: usize) -> SimResult<()> {
        let Some(raw) = self.nodes[i].raw.as_ref() else {
            return Ok(());
        };
        if raw.raft.state != StateRole::Leader {
            return Ok(());
        }
        let (id, term) = (raw.raft.id, raw.raft.term);
        match self.leaders.get(&term) {
            Some(&other) if other != id => Err(format!(
                "election safety: node {id} is leader of term {term}, which node {other} already led"
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, id);
                self.event(format!("node {id} elected leader of term {term}"));
                Ok(())
            }
        }
    }

    fn note_committed(
        &mut self,
        id: u64,
        index: u64,
        entry_term: u64,
        commit_term: u64,
    ) -> SimResult<()> {
        ensure_len(&mut self.committed, index);
        match self.committed[index as usize] {
            Some(c) if c.entry_term != entry_term => Err(format!(
                "committed entry lost: node {id} holds {index}@term {entry_term} as committed, \
                 but {index}@term {} was committed before",
                c.entry_term
            )),
            Some(_) => Ok(()),
            None => {
                if let Some(a) = self.applied.get(index as usize).copied().flatten() {
                    if a.term != entry_term {
                        return Err(format!(
                            "committed entry lost: node {id} commits {index}@term {entry_term} \
                             but {index}@term {} was applied",
                            a.term
                        ));
                    }
                }
                self.committed[index as usize] = Some(Committed {
                    entry_term,
                    commit_term,
                });
                self.new_commits.push(index);
                Ok(())
            }
        }
    }

    fn check(&mut self) -> SimResult<()> {
        // Record what each node now holds committed.
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let Some(raw) = n.raw.as_ref() else {
                continue;
            };
            let log = &raw.raft.raft_log;
            let id = n.id;
            if n.sm.applied > log.committed {
                return Err(format!(
                    "node {id} applied {} beyond its commit index {}",
                    n.sm.applied, log.committed
                ));
            }
            let from = n.commit_checked.min(log.committed) + 1;
            let mut found = Vec::new();
            for idx in from..=log.committed {
                if let Ok(t) = log.term(idx) {
                    found.push((idx, t));
                }
            }
            let (c, term) = (log.committed, raw.raft.term);
            self.nodes[i].commit_checked = c;
            for (idx, t) in found {
                self.note_committed(id, idx, t, term)?;
            }
        }
        // Leader completeness: a newly seen leader against everything committed before
        // its term; every leader against what was committed this step.
        let fresh = std::mem::take(&mut self.new_commits);
        for i in 0..self.nodes.len() {
            let Some(raw) = self.nodes[i].raw.as_ref() else {
                continue;
            };
            if raw.raft.state != StateRole::Leader {
                continue;
            }
            let term = raw.raft.term;
            if self.nodes[i].leader_checked_term != term {
                self.check_leader_holds(i, None)?;
                self.nodes[i].leader_checked_term = term;
            } else if !fresh.is_empty() {
                self.check_leader_holds(i, Some(&fresh))?;
            }
        }
        if self.now & 15 == 0 {
            self.full_check()?;
        }
        Ok(())
    }

    fn check_leader_holds(&self, i: usize, only: Option<&[u64]>) -> SimResult<()> {
        let raw = self.nodes[i].raw.as_ref().unwrap();
        let (id, term) = (raw.raft.id, raw.raft.term);
        let log = &raw.raft.raft_log;
        let last = log.last_index();
        let check = |idx: u64| -> SimResult<()> {
            let Some(c) = self.committed.get(idx as usize).copied().flatten() else {
                return Ok(());
            };
            if c.commit_term >= term {
                // Committed in this leader's term or later: a stale leader may lack it.
                return Ok(());
            }
            if idx > last {
                return Err(format!(
                    "leader completeness: leader {id} of term {term} lacks committed entry \
                     {idx}@{} (committed by term {}); its log ends at {last}",
                    c.entry_term, c.commit_term
                ));
            }
            match log.term(idx) {
                Ok(t) if t != c.entry_term => Err(format!(
                    "leader completeness: leader {id} of term {term} holds {idx}@{t} but \
                     {idx}@{} was committed (by term {})",
                    c.entry_term, c.commit_term
                )),
                _ => Ok(()),
            }
        };
        match only {
            Some(idxs) => idxs.iter().try_for_each(|&idx| check(idx)),
            None => (1..self.committed.len() as u64).try_for_each(check),
        }
    }

    /// Log matching on every node's whole log, stable + unstable, and on its disk; every
    /// entry at or below a node's commit index must be the committed one.
    fn full_check(&mut self) -> SimResult<()> {
        for i in 0..self.nodes.len() {
            let Some(raw) = self.nodes[i].raw.as_ref() else {
                continue;
            };
            let id = raw.raft.id;
            let log = &raw.raft.raft_log;
            let (first, last) = (log.first_index(), log.last_index());
            let ents = log
                .slice(first, last + 1, u64::MAX)
                .map_err(|e| format!("node {id}: log [{first}, {last}] unreadable: {e}"))?;
            if ents.len() as u64 != last + 1 - first {
                return Err(format!(
                    "node {id}: log [{first}, {last}] returned {} entries",
                    ents.len()
                ));
            }
            let prev = log.term(first - 1).ok();
            register_entries(&mut self.entries, id, "log", prev, &ents)?;
            for e in ents.iter().take_while(|e| e.index <= log.committed) {
                if let Some(c) = self.committed.get(e.index as usize).copied().flatten() {
                    if c.entry_term != e.term {
                        return Err(format!(
                            "node {id} holds {}@{} at or below its commit index {} but {}@{} \
                             was committed",
                            e.index, e.term, log.committed, e.index, c.entry_term
                        ));
                    }
                }
            }
            let store = raw.store();
            let (sf, sl) = (
                store.first_index().unwrap_or(1),
                store.last_index().unwrap_or(0),
            );
            let stored = store
                .entries(sf, sl + 1, u64::MAX)
                .map_err(|e| format!("node {id}: storage [{sf}, {sl}] unreadable: {e}"))?;
            let prev = store.term(sf - 1).ok();
            register_entries(&mut self.entries, id, "disk", prev, &stored)?;
        }
        Ok(())
    }
}

/// Log matching: `(index, term)` must always name the same entry with the same
/// predecessor term, which by induction makes the whole prefixes equal.
fn register_entries(
    map: &mut HashMap<(u64, u64), (Option<u64>, u64)>,
    id: u64,
    what: &str,
    mut prev: Option<u64>,
    ents: &[Entry],
) -> SimResult<()> {
    let mut expect_index = None;
    for e in ents {
        if let Some(x) = expect_index {
            if e.index != x {
                return Err(format!(
                    "node {id} {what}: entries not contiguous ({} after {})",
                    e.index,
                    x - 1
                ));
            }
        }
        if let Some(p) = prev {
            if e.term < p {
                return Err(format!(
                    "node {id} {what}: term goes down from {p} to {} at index {}",
                    e.term, e.index
                ));
            }
        }
        let fp = fingerprint(e);
        let slot = map.entry((e.index, e.term)).or_insert((prev, fp));
        if slot.1 != fp {
            return Err(format!(
                "log matching: node {id} {what} has a different entry at {}@{} than seen before",
                e.index, e.term
            ));
        }
        match (slot.0, prev) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "log matching: node {id} {what} has {}@{} after term {b}, but elsewhere it \
                     follows term {a}",
                    e.index, e.term
                ));
            }
            (None, Some(b)) => slot.0 = Some(b),
            _ => {}
        }
        prev = Some(e.term);
        expect_index = Some(e.index + 1);
    }
    Ok(())
}
