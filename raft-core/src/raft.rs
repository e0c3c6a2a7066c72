//! The Raft state machine: roles, elections, replication, reads, membership and
//! leadership transfer. Driven through [`Raft::step`] (peer messages, and proposals,
//! campaigns, reads and transfers as local messages) and [`Raft::tick`], and told by
//! [`RawNode`](crate::RawNode) what the application did with a `Ready`: persisted it
//! ([`Raft::on_persist_entries`], [`Raft::on_persist_snap`]), applied it
//! ([`Raft::commit_apply`]), applied a membership change ([`Raft::apply_conf_change`]).
//! Its output is the messages it queues and the log it changes, collected by `RawNode`.

use std::collections::HashMap;

use crate::codec;
use crate::confchange::{self, Changer};
use crate::config::Config;
use crate::errors::{Error, Result};
use crate::quorum::VoteResult;
use crate::raft_log::RaftLog;
use crate::read_only::{ReadOnly, ReadOnlyOption, ReadState};
use crate::rng::Rng;
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};
use crate::types::*;

/// A vote request's context when the election was started by a leadership transfer:
/// voters then grant it even inside a leader lease.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateRole {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Campaigning in a real election.
    Candidate,
    /// Leading the cluster.
    Leader,
    /// Running a pre-election that does not change its term.
    PreCandidate,
}

/// State that is useful to observe but need not be persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    /// The leader this node knows of (0 for none).
    pub leader_id: u64,
    /// This node's role.
    pub raft_state: StateRole,
}

/// Outcome of sending a snapshot, reported with `report_snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received and installed it.
    Finish,
    /// Sending failed; the leader will probe again and may retry.
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignType {
    PreElection,
    Election,
    Transfer,
}

/// One Raft node's consensus state.
pub struct Raft<S: Storage> {
    /// This node's id.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Vote in the current term (0 for none).
    pub vote: u64,
    /// Current role.
    pub state: StateRole,
    /// The known leader (0 for none).
    pub leader_id: u64,
    /// The log.
    pub raft_log: RaftLog<S>,
    /// Membership and per-peer progress.
    pub prs: ProgressTracker,
    /// Messages that may be sent right away (created while leader: §10.2.1 lets the
    /// leader replicate before its own write is durable).
    pub msgs: Vec<Message>,
    /// Messages that may be sent only after the `Ready` they came with is persisted
    /// (created while follower or candidate: acks and votes must not outrun the disk).
    pub msgs_after_persist: Vec<Message>,
    /// Reads confirmed and ready to serve once applied reaches their index.
    pub read_states: Vec<ReadState>,
    /// The node leadership is being transferred to.
    pub lead_transferee: Option<u64>,
    /// Index of the last conf change proposed; a new one waits until it is applied.
    pub pending_conf_index: u64,
    /// Payload bytes of uncommitted entries (leader only).
    pub uncommitted_size: u64,
    read_only: ReadOnly,
    pending_read_index_messages: Vec<Message>,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    election_timeout: usize,
    heartbeat_timeout: usize,
    min_election_timeout: usize,
    max_election_timeout: usize,
    check_quorum: bool,
    pre_vote: bool,
    disable_proposal_forwarding: bool,
    max_msg_size: u64,
    max_uncommitted_size: u64,
    rng: Rng,
    // Set when the node hit an error it cannot go on from (a storage read failed on the
    // Ready path, which cannot return errors); every later `step` returns it.
    fatal: Option<Error>,
}

fn payload_size(ents: &[Entry]) -> u64 {
    ents.iter().map(|e| e.data.len() as u64).sum()
}

impl<S: Storage> Raft<S> {
    /// Creates a node over `store`, restoring its hard state and membership.
    pub fn new(c: &Config, store: S) -> Result<Raft<S>> {
        c.validate()?;
        let rs = store.initial_state()?;
        let raft_log = RaftLog::new(store, c.max_committed_size_per_ready_bytes)?;
        let mut r = Raft {
            id: c.id,
            term: 0,
            vote: 0,
            state: StateRole::Follower,
            leader_id: 0,
            raft_log,
            prs: ProgressTracker::new(c.max_inflight_msgs, c.max_inflight_bytes),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            lead_transferee: None,
            pending_conf_index: 0,
            uncommitted_size: 0,
            read_only: ReadOnly::new(c.read_only_option),
            pending_read_index_messages: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            election_timeout: c.election_tick,
            heartbeat_timeout: c.heartbeat_tick,
            min_election_timeout: c.min_election_tick(),
            max_election_timeout: c.max_election_tick(),
            check_quorum: c.check_quorum,
            pre_vote: c.pre_vote,
            disable_proposal_forwarding: c.disable_proposal_forwarding,
            max_msg_size: c.max_size_per_msg_bytes,
            max_uncommitted_size: c.max_uncommitted_size_bytes,
            // Mix the id in so nodes sharing a seed still draw unrelated timeouts. The
            // mix must be non-linear: SplitMix64 steps its state by this same constant,
            // so states `id * constant` would make node id+1's sequence node id's
            // shifted by one draw, and peers one election apart would tie forever.
            rng: Rng::new(Rng::new(c.seed ^ c.id.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()),
            fatal: None,
        };
        let last = r.raft_log.last_index();
        confchange::restore(&mut r.prs, last, &rs.conf_state)?;
        let cs = r.prs.conf.to_conf_state();
        if !conf_state_eq(&cs, &rs.conf_state) {
            return Err(Error::ConfigInvalid(format!(
                "stored conf state {:?} does not round-trip (got {cs:?})",
                rs.conf_state
            )));
        }
        if !rs.hard_state.is_empty() {
            r.load_state(rs.hard_state)?;
        }
        if c.applied > 0 {
            if c.applied < r.raft_log.applied {
                // The state machine is older than the log's snapshot: it must be
                // restored from that snapshot before the node starts.
                return Err(Error::ConfigInvalid(format!(
                    "applied index {} is below the snapshot index {}",
                    c.applied, r.raft_log.applied
                )));
            }
            if c.applied > r.raft_log.committed {
                return Err(Error::ConfigInvalid(format!(
                    "applied index {} is beyond the commit index {}",
                    c.applied, r.raft_log.committed
                )));
            }
            r.raft_log.applied_to(c.applied);
        }
        let term = r.term;
        r.become_follower(term, 0);
        Ok(r)
    }

    fn load_state(&mut self, hs: HardState) -> Result<()> {
        if hs.commit < self.raft_log.committed || hs.commit > self.raft_log.last_index() {
            return Err(Error::ConfigInvalid(format!(
                "hard state commit {} is out of range [{}, {}]",
                hs.commit,
                self.raft_log.committed,
                self.raft_log.last_index()
            )));
        }
        self.raft_log.committed = hs.commit;
        self.term = hs.term;
        self.vote = hs.vote;
        Ok(())
    }

    /// The error that stopped this node, if any: a storage read failed where raft could
    /// not return it (while collecting a `Ready`). Once set, every `step` returns it;
    /// it is always [fatal](Error::is_fatal).
    pub fn fatal_error(&self) -> Option<&Error> {
        self.fatal.as_ref()
    }

    pub(crate) fn set_fatal(&mut self, e: Error) {
        if self.fatal.is_none() {
            self.fatal = Some(e);
        }
    }

    /// The persistent state as it is now.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.raft_log.committed,
        }
    }

    /// The observable volatile state.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            raft_state: self.state,
        }
    }

    /// Whether this node may campaign: it is a voter and not installing a snapshot.
    pub fn promotable(&self) -> bool {
        self.prs
            .progress
            .get(&self.id)
            .is_some_and(|pr| !pr.is_learner)
            && self.raft_log.unstable.snapshot.is_none()
    }

    /// Whether this node is a learner in the current configuration.
    pub fn is_learner(&self) -> bool {
        self.prs.conf.learners.contains(&self.id)
    }

    /// The randomized election timeout now in force, in ticks.
    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    /// The number of reads waiting for a heartbeat quorum.
    pub fn pending_read_count(&self) -> usize {
        self.read_only.pending_count()
    }

    // ---- sending ----

    fn send(&mut self, mut m: Message) {
        debug_assert_ne!(m.to, self.id, "raft never sends to itself");
        // A relayed request (proposal, read, leadership transfer) keeps the node that
        // asked as its sender, as in etcd: the leader answers a read to it and hands
        // leadership to it, not to the hop in between.
        if m.from == 0 {
            m.from = self.id;
        }
        match m.msg_type {
            MessageType::RequestVote | MessageType::RequestPreVote => {
                assert_ne!(m.term, 0, "vote requests carry their campaign term");
            }
            MessageType::RequestVoteResponse | MessageType::RequestPreVoteResponse => {
                assert_ne!(m.term, 0, "vote responses carry the term they answer");
            }
            // Proposals and read requests are forwarded with term 0, as local messages.
            MessageType::Propose | MessageType::ReadIndex => {}
            _ => m.term = self.term,
        }
        // A leader's messages may leave before its own write is durable (it counts
        // itself only once it is). So may a forwarded proposal or read request from
        // any role: neither claims anything about this node's log or vote, so a crash
        // before the local write loses nothing the message promised. Everything else a
        // follower or candidate sends (append and vote responses, vote requests after
        // its vote for itself) speaks for state that must be durable first.
        let local_request = matches!(m.msg_type, MessageType::Propose | MessageType::ReadIndex);
        if self.state == StateRole::Leader || local_request {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    fn send_append(&mut self, to: u64) {
        self.maybe_send_append(to, true);
    }

    /// Sends entries (or a snapshot) to `to` if its progress allows. Returns whether a
    /// message was sent.
    fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        let term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, self.max_msg_size);
        if matches!(&ents, Ok(e) if e.is_empty()) && !send_if_empty {
            return false;
        }
        match (term, ents) {
            (Ok(log_term), Ok(entries)) => {
                let last = entries.last().map_or(next - 1, |e| e.index);
                let n = entries.len();
                let bytes = payload_size(&entries);
                let m = Message {
                    msg_type: MessageType::Append,
                    to,
                    index: next - 1,
                    log_term,
                    entries,
                    commit: self.raft_log.committed,
                    ..Message::default()
                };
                self.send(m);
                if let Some(pr) = self.prs.progress.get_mut(&to) {
                    pr.update_on_entries_send(n, bytes, last);
                }
                true
            }
            _ => self.maybe_send_snapshot(to),
        }
    }

    /// The entries `to` needs are compacted: send the snapshot instead, but only to a
    /// follower heard from recently (a dead one would waste the transfer).
    fn maybe_send_snapshot(&mut self, to: u64) -> bool {
        let Some(pr) = self.prs.progress.get(&to) else {
            return false;
        };
        if !pr.recent_active {
            return false;
        }
        let snapshot = match self.raft_log.snapshot(pr.next_idx - 1, to) {
            Ok(s) => s,
            // Being produced (SnapshotTemporarilyUnavailable) or unreadable: the next
            // heartbeat response retries.
            Err(_) => return false,
        };
        if snapshot.is_empty() {
            // A compacted log without a snapshot cannot catch anyone up; wait for one.
            return false;
        }
        let index = snapshot.metadata.index;
        if let Some(pr) = self.prs.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        let m = Message {
            msg_type: MessageType::Snapshot,
            to,
            snapshot: Some(snapshot),
            ..Message::default()
        };
        self.send(m);
        true
    }

    fn send_heartbeat(&mut self, to: u64, context: Vec<u8>) {
        let matched = self.prs.progress.get(&to).map_or(0, |p| p.matched);
        // Never tell a follower to commit beyond what it is known to hold.
        let commit = matched.min(self.raft_log.committed);
        let m = Message {
            msg_type: MessageType::Heartbeat,
            to,
            commit,
            context,
            ..Message::default()
        };
        self.send(m);
    }

    fn peer_ids(&self) -> Vec<u64> {
        self.prs
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    /// Sends appends (or snapshots) to every peer.
    pub fn bcast_append(&mut self) {
        for id in self.peer_ids() {
            self.send_append(id);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.last_pending_request_ctx();
        self.bcast_heartbeat_with_ctx(ctx.unwrap_or_default());
    }

    fn bcast_heartbeat_with_ctx(&mut self, ctx: Vec<u8>) {
        for id in self.peer_ids() {
            self.send_heartbeat(id, ctx.clone());
        }
    }

    // ---- role changes ----

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.abort_leader_transfer();
        self.prs.reset_votes();
        let last = self.raft_log.last_index();
        let persisted = self.raft_log.persisted;
        let id = self.id;
        let (max_msgs, max_bytes) = (self.prs.max_inflight_msgs, self.prs.max_inflight_bytes);
        self.prs.visit(|pid, pr| {
            let is_learner = pr.is_learner;
            *pr = crate::tracker::Progress::new(last + 1, max_msgs, max_bytes);
            pr.is_learner = is_learner;
            // Activity is counted per term: a leader must hear from a quorum within
            // its first election timeout, not ride on what an earlier term saw (§6.2;
            // a stale flag would also stretch the read lease).
            pr.recent_active = pid == id;
            if pid == id {
                // The leader counts only what its own disk holds (§10.2.1).
                pr.matched = persisted;
            }
        });
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only = ReadOnly::new(self.read_only.option);
    }

    fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_timeout = self.rng.range(
            self.min_election_timeout as u64,
            self.max_election_timeout as u64,
        ) as usize;
    }

    /// Becomes a follower of `leader_id` (0 if unknown) in `term`.
    pub fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.leader_id = leader_id;
        self.state = StateRole::Follower;
    }

    /// Becomes a candidate: a new term, voting for itself.
    pub fn become_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "a leader cannot become candidate"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.state = StateRole::Candidate;
    }

    /// Becomes a pre-candidate: neither term nor vote changes (§9.6).
    pub fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "a leader cannot become pre-candidate"
        );
        self.prs.reset_votes();
        self.leader_id = 0;
        self.state = StateRole::PreCandidate;
    }

    /// Becomes leader and appends the empty entry of its term.
    pub fn become_leader(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Follower,
            "a follower must campaign before leading"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        if let Some(pr) = self.prs.progress.get_mut(&self.id) {
            pr.become_replicate();
            // become_replicate sets next from matched; keep next after the whole log.
            pr.next_idx = self.raft_log.last_index() + 1;
        }
        // Conf changes in the uncommitted tail may be pending; treat them so.
        self.pending_conf_index = self.raft_log.last_index();
        // The empty entry commits everything before it once it commits (§5.4.2) and is
        // exempt from the uncommitted-size bound.
        let last = self.raft_log.last_index();
        let noop = Entry::new(self.term, last + 1, Vec::new());
        self.raft_log.append(&[noop]);
    }

    // ---- time ----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            // A local message to itself cannot fail.
            let _ = self.step(Message::new(MessageType::Hup, self.id, self.id));
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let _ = self.step(Message::new(MessageType::CheckQuorum, self.id, self.id));
            }
            // A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateRole::Leader && self.lead_transferee.is_some() {
                self.abort_leader_transfer();
            }
        }
        if self.state != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let _ = self.step(Message::new(MessageType::Beat, self.id, self.id));
        }
    }

    // ---- elections ----

    fn hup(&mut self, transfer: bool) {
        if self.state == StateRole::Leader {
            return;
        }
        if !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_changes() {
            // Campaigning now could elect a leader under a configuration it is about to
            // leave; wait until the committed changes are applied.
            return;
        }
        if transfer {
            self.campaign(CampaignType::Transfer);
        } else if self.pre_vote {
            self.campaign(CampaignType::PreElection);
        } else {
            self.campaign(CampaignType::Election);
        }
    }

    fn has_unapplied_conf_changes(&self) -> bool {
        let lo = self.raft_log.applied + 1;
        let hi = self.raft_log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.raft_log.slice(lo, hi, u64::MAX) {
            Ok(ents) => ents.iter().any(Entry::is_conf_change),
            // Unreadable committed entries: be conservative and do not campaign.
            Err(_) => true,
        }
    }

    fn campaign(&mut self, kind: CampaignType) {
        let (vote_type, term) = if kind == CampaignType::PreElection {
            self.become_pre_candidate();
            // A pre-vote asks about the next term without moving to it.
            (MessageType::RequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::RequestVote, self.term)
        };
        let self_id = self.id;
        if self.poll(self_id, true) == VoteResult::Won {
            // A single-voter configuration wins at once.
            if kind == CampaignType::PreElection {
                self.campaign(CampaignType::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let voters: Vec<u64> = self.prs.conf.voters.ids().into_iter().collect();
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        for id in voters {
            if id == self_id {
                continue;
            }
            let context = if kind == CampaignType::Transfer {
                CAMPAIGN_TRANSFER.to_vec()
            } else {
                Vec::new()
            };
            let m = Message {
                msg_type: vote_type,
                to: id,
                term,
                index: last_index,
                log_term: last_term,
                context,
                ..Message::default()
            };
            self.send(m);
        }
    }

    fn poll(&mut self, id: u64, granted: bool) -> VoteResult {
        self.prs.record_vote(id, granted);
        self.prs.tally_votes().2
    }

    // ---- stepping ----

    /// Processes one message: from a peer, or local (`Hup`, `Beat`, `Propose`, ...).
    pub fn step(&mut self, m: Message) -> Result<()> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if m.msg_type == MessageType::Heartbeat
            && m.term >= self.term
            && !(m.term == self.term && self.state == StateRole::Leader)
            && m.commit > self.raft_log.last_index()
        {
            // A leader of this term (or a newer one) only tells a follower to commit
            // what the follower acknowledged holding. If our log ends before that, we
            // lost entries we promised to keep (etcd panics: "was the log lost?").
            return Err(Error::CommitBeyondLog {
                commit: m.commit,
                last_index: self.raft_log.last_index(),
            });
        }
        if m.term == 0 {
            // Local message or forwarded proposal / read: no term handling.
        } else if m.term > self.term {
            if matches!(
                m.msg_type,
                MessageType::RequestVote | MessageType::RequestPreVote
            ) {
                let force = m.context == CAMPAIGN_TRANSFER;
                let in_lease = self.check_quorum
                    && self.leader_id != 0
                    && self.election_elapsed < self.election_timeout;
                if !force && in_lease {
                    // Leader lease: a leader was heard from within the minimum election
                    // timeout, so this vote request cannot be from a legitimate election
                    // (§4.2.3). Ignore it without changing term.
                    return Ok(());
                }
            }
            match m.msg_type {
                // A pre-vote never changes our term.
                MessageType::RequestPreVote => {}
                // A granted pre-vote carries the future term; we move to it on winning.
                MessageType::RequestPreVoteResponse if !m.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            if (self.check_quorum || self.pre_vote)
                && matches!(m.msg_type, MessageType::Heartbeat | MessageType::Append)
            {
                // A stale leader (maybe partitioned away) may never see a higher term if
                // our vote requests are ignored under the lease or pre-vote; tell it.
                self.send(Message::new(MessageType::AppendResponse, self.id, m.from));
            } else if m.msg_type == MessageType::RequestPreVote {
                // Reject so a pre-candidate with a stale term learns ours.
                let mut resp = Message::new(MessageType::RequestPreVoteResponse, self.id, m.from);
                resp.term = self.term;
                resp.reject = true;
                self.send(resp);
            }
            return Ok(());
        }

        match m.msg_type {
            MessageType::Hup => {
                self.hup(false);
                Ok(())
            }
            MessageType::RequestVote | MessageType::RequestPreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.state {
                StateRole::Leader => self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m),
                StateRole::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: Message) {
        // We can vote for `m.from` if we already did in this term, or we have not voted
        // and know no leader, or this is a pre-vote for a future term.
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader_id == 0)
            || (m.msg_type == MessageType::RequestPreVote && m.term > self.term);
        // Learner or not, answer on the merits: we may be a voter in a configuration
        // we have not applied yet (etcd's campaign_learner_must_vote).
        let mut resp = Message::new(m.msg_type.vote_response(), self.id, m.from);
        if can_vote && self.raft_log.is_up_to_date(m.index, m.log_term) {
            // Answer with the request's term: for a pre-vote ours may be lower.
            resp.term = m.term;
            self.send(resp);
            if m.msg_type == MessageType::RequestVote {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            resp.term = self.term;
            resp.reject = true;
            self.send(resp);
        }
    }

    fn step_leader(&mut self, mut m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::Beat => {
                self.bcast_heartbeat();
                return Ok(());
            }
            MessageType::CheckQuorum => {
                if !self.prs.quorum_recently_active(self.id) {
                    let term = self.term;
                    self.become_follower(term, 0);
                }
                let id = self.id;
                self.prs.visit(|pid, pr| {
                    if pid != id {
                        pr.recent_active = false;
                    }
                });
                return Ok(());
            }
            MessageType::Propose => return self.leader_propose(m),
            MessageType::ReadIndex => {
                // Even a single voter waits: after a restart its stored commit index
                // may lag writes it acknowledged before the crash.
                if !self.committed_entry_in_current_term() {
                    // The commit index may lag until an entry of this term commits
                    // (§6.4); hold the read until then.
                    self.pending_read_index_messages.push(m);
                    return Ok(());
                }
                self.send_read_index_confirmation(m);
                return Ok(());
            }
            MessageType::TransferLeader => {
                self.handle_transfer_leader(m);
                return Ok(());
            }
            _ => {}
        }

        let from = m.from;
        if !self.prs.progress.contains_key(&from) {
            return Ok(());
        }
        match m.msg_type {
            MessageType::AppendResponse => return self.handle_append_response(&m),
            MessageType::HeartbeatResponse => self.handle_heartbeat_response(&mut m),
            MessageType::SnapStatus => {
                let Some(pr) = self.prs.progress.get_mut(&from) else {
                    return Ok(());
                };
                if pr.state != ProgressState::Snapshot {
                    return Ok(());
                }
                if m.reject {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for a heartbeat response before probing, giving the follower time
                // to finish applying the snapshot.
                pr.probe_sent = true;
            }
            MessageType::Unreachable => {
                if let Some(pr) = self.prs.progress.get_mut(&from) {
                    // Optimistic pipelining to an unreachable peer only loses messages.
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn leader_propose(&mut self, mut m: Message) -> Result<()> {
        if m.entries.is_empty() {
            return Err(Error::ProposalDropped("empty proposal"));
        }
        if !self.prs.progress.contains_key(&self.id) {
            // Removed from the configuration: we cannot commit anything.
            return Err(Error::ProposalDropped(
                "leader was removed from the cluster",
            ));
        }
        if self.lead_transferee.is_some() {
            return Err(Error::ProposalDropped("leadership transfer in progress"));
        }
        for (i, e) in m.entries.iter().enumerate() {
            let cc = match e.entry_type {
                EntryType::Normal => continue,
                EntryType::ConfChange => codec::decode::<ConfChange>(&e.data).map(|c| c.into_v2()),
                EntryType::ConfChangeV2 => codec::decode::<ConfChangeV2>(&e.data),
            };
            let cc = cc.map_err(|_| Error::ProposalDropped("malformed conf change"))?;
            let already_pending = self.pending_conf_index > self.raft_log.applied;
            let joint = self.prs.conf.voters.is_joint();
            let leaving = cc.leave_joint();
            if already_pending {
                return Err(Error::ProposalDropped(
                    "another configuration change is pending",
                ));
            }
            if joint && !leaving {
                return Err(Error::ProposalDropped(
                    "must leave the joint configuration first",
                ));
            }
            if !joint && leaving {
                return Err(Error::ProposalDropped("not in a joint configuration"));
            }
            // The change's index is known once appended.
            self.pending_conf_index = self.raft_log.last_index() + i as u64 + 1;
        }
        if !self.append_entry(&mut m.entries) {
            return Err(Error::ProposalDropped("uncommitted size limit reached"));
        }
        self.bcast_append();
        Ok(())
    }

    /// Appends entries proposed on this leader. Returns false if the uncommitted-size
    /// bound refuses them.
    pub fn append_entry(&mut self, es: &mut [Entry]) -> bool {
        let size = payload_size(es);
        // One proposal is always admitted when nothing is outstanding, so an entry larger
        // than the bound cannot wedge the node.
        if self.max_uncommitted_size > 0
            && self.uncommitted_size > 0
            && size > 0
            && self.uncommitted_size + size > self.max_uncommitted_size
        {
            return false;
        }
        self.uncommitted_size += size;
        let last = self.raft_log.last_index();
        for (i, e) in es.iter_mut().enumerate() {
            e.term = self.term;
            e.index = last + 1 + i as u64;
        }
        self.raft_log.append(es);
        // The leader's own match advances only when the engine reports the write durable
        // (on_persist_entries), so it never counts an unwritten entry toward commit.
        true
    }

    /// Lowers the uncommitted byte count after `ents` committed.
    pub fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.state != StateRole::Leader {
            return;
        }
        self.uncommitted_size = self.uncommitted_size.saturating_sub(payload_size(ents));
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log
            .term(self.raft_log.committed)
            .is_ok_and(|t| t == self.term)
    }

    fn send_read_index_confirmation(&mut self, m: Message) {
        let index = self.raft_log.committed;
        if self.prs.is_singleton() {
            // No one else can have been elected: the commit index is current.
            self.respond_read_index(m, index);
            return;
        }
        match self.read_only.option {
            ReadOnlyOption::Safe => {
                let ctx = m.entries[0].data.clone();
                self.read_only.add_request(index, m, self.id);
                self.bcast_heartbeat_with_ctx(ctx);
            }
            ReadOnlyOption::LeaseBased => self.respond_read_index(m, index),
        }
    }

    fn respond_read_index(&mut self, req: Message, index: u64) {
        if req.from == 0 || req.from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: req
                    .entries
                    .into_iter()
                    .next()
                    .map(|e| e.data)
                    .unwrap_or_default(),
            });
            return;
        }
        let resp = Message {
            msg_type: MessageType::ReadIndexResp,
            to: req.from,
            index,
            entries: req.entries,
            ..Message::default()
        };
        self.send(resp);
    }

    fn release_pending_read_index_messages(&mut self) {
        if self.pending_read_index_messages.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        for m in std::mem::take(&mut self.pending_read_index_messages) {
            self.send_read_index_confirmation(m);
        }
    }

    fn handle_append_response(&mut self, m: &Message) -> Result<()> {
        let last_index = self.raft_log.last_index();
        let first_index = self.raft_log.first_index();
        if m.index > last_index {
            // Answers to this leader's appends (accepted or rejected) are about indexes
            // of its own log, which only grows during its term.
            return Err(Error::MalformedMessage(
                "append response for an index past the leader's log",
            ));
        }
        let Some(pr) = self.prs.progress.get_mut(&m.from) else {
            return Ok(());
        };
        pr.recent_active = true;
        if m.reject {
            // The follower's hint is its last index (or a smaller one with term <=
            // m.log_term); skip every index of ours whose term is larger than the term
            // the follower has there, since those cannot match either.
            let mut next_probe = m.reject_hint;
            if m.log_term > 0 {
                next_probe = self
                    .raft_log
                    .find_conflict_by_term(m.reject_hint, m.log_term)
                    .0;
            }
            let Some(pr) = self.prs.progress.get_mut(&m.from) else {
                return Ok(());
            };
            if pr.maybe_decr_to(m.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(m.from);
            }
            return Ok(());
        }
        let old_paused = pr.is_paused();
        // An ack equal to the match point of a probing follower is news too (etcd's
        // `pr.MaybeUpdate(m.Index) || (pr.Match == m.Index && pr.State == StateProbe)`):
        // it answers the probe, so the follower's log is known to match there and
        // replication can resume instead of waiting for the next heartbeat.
        let updated = pr.maybe_update(m.index);
        let answers_probe = pr.matched == m.index && pr.state == ProgressState::Probe;
        if !(updated || answers_probe) {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= first_index => {
                // The follower caught up by appends (or finished the snapshot without
                // reporting it): resume replication.
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.ins.free_to(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.release_pending_read_index_messages();
            self.bcast_append();
        } else if old_paused {
            // The window had been full; now it has room.
            self.send_append(m.from);
        }
        // Fill the window: bounded by max_inflight_msgs sends.
        for _ in 0..self.prs.max_inflight_msgs {
            if !self.maybe_send_append(m.from, false) {
                break;
            }
        }
        if self.lead_transferee == Some(m.from) && matched == last_index {
            self.send_timeout_now(m.from);
        }
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, m: &mut Message) {
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.prs.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        // A full window whose appends were all lost never drains on its own: free one
        // slot so the append below goes out (etcd / raft-rs do the same).
        if pr.state == ProgressState::Replicate && pr.ins.full() {
            pr.ins.free_first_one();
        }
        if pr.matched < last_index || pr.state == ProgressState::Probe {
            self.send_append(m.from);
        }
        if self.read_only.option != ReadOnlyOption::Safe || m.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(m.from, &m.context) else {
            return;
        };
        let votes: HashMap<u64, bool> = acks.iter().map(|&id| (id, true)).collect();
        if self.prs.conf.voters.vote_result(&votes) != VoteResult::Won {
            return;
        }
        for rs in self.read_only.advance(&m.context) {
            self.respond_read_index(rs.req, rs.index);
        }
    }

    fn handle_transfer_leader(&mut self, m: Message) {
        let transferee = m.from;
        let Some(pr) = self.prs.progress.get(&transferee) else {
            return;
        };
        if pr.is_learner {
            return;
        }
        let matched = pr.matched;
        if let Some(current) = self.lead_transferee {
            if current == transferee {
                return;
            }
            self.abort_leader_transfer();
        }
        if transferee == self.id {
            return;
        }
        // The transfer must finish within an election timeout.
        self.election_elapsed = 0;
        self.lead_transferee = Some(transferee);
        if matched == self.raft_log.last_index() {
            self.send_timeout_now(transferee);
        } else {
            self.send_append(transferee);
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        self.send(Message::new(MessageType::TimeoutNow, self.id, to));
    }

    /// Gives up a leadership transfer in progress.
    pub fn abort_leader_transfer(&mut self) {
        self.lead_transferee = None;
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        let my_resp = if self.state == StateRole::PreCandidate {
            MessageType::RequestPreVoteResponse
        } else {
            MessageType::RequestVoteResponse
        };
        match m.msg_type {
            MessageType::Propose => Err(Error::ProposalDropped("no leader")),
            MessageType::ReadIndex => Err(Error::ProposalDropped("no leader for read index")),
            MessageType::Append => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(m)
            }
            MessageType::Heartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
                Ok(())
            }
            MessageType::Snapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
                Ok(())
            }
            t if t == my_resp => {
                match self.poll(m.from, !m.reject) {
                    VoteResult::Won => {
                        if self.state == StateRole::PreCandidate {
                            self.campaign(CampaignType::Election);
                        } else {
                            self.become_leader();
                            self.bcast_append();
                        }
                    }
                    VoteResult::Lost => {
                        // A pre-vote rejection at a higher term already made us follower.
                        let term = self.term;
                        self.become_follower(term, 0);
                    }
                    VoteResult::Pending => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, mut m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::Propose => {
                if self.leader_id == 0 {
                    return Err(Error::ProposalDropped("no leader"));
                }
                if self.disable_proposal_forwarding {
                    return Err(Error::ProposalDropped("proposal forwarding is disabled"));
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(m)?;
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::TransferLeader if self.leader_id != 0 => {
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::TimeoutNow => {
                // A transfer skips pre-vote: the leader asked for this election.
                self.hup(true);
            }
            MessageType::ReadIndex => {
                if self.leader_id == 0 {
                    return Err(Error::ProposalDropped("no leader for read index"));
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::ReadIndexResp => {
                if m.entries.len() != 1 {
                    return Ok(());
                }
                let request_ctx = m.entries.pop().map(|e| e.data).unwrap_or_default();
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_entries(&mut self, m: Message) -> Result<()> {
        let mut resp = Message::new(MessageType::AppendResponse, self.id, m.from);
        if m.index < self.raft_log.committed {
            // Already committed here: acknowledge what we know is committed.
            resp.index = self.raft_log.committed;
            self.send(resp);
            return Ok(());
        }
        let log = &self.raft_log;
        if log.match_term(m.index, m.log_term) && log.last_term() >= m.term {
            // Our last entry is of the sender's term, so it came from the sender: the
            // one leader of that term, whose log only grows during it. An append that
            // would truncate it contradicts what that leader sent before. Refuse it:
            // replacing entries with others of the same index and term would also let
            // an older write's persistence report count for the new entries.
            let conflict = log.find_conflict(&m.entries);
            if conflict != 0 && conflict <= log.last_index() {
                return Err(Error::MalformedMessage(
                    "append contradicts entries of its own term",
                ));
            }
        }
        match self
            .raft_log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            Some(last) => {
                resp.index = last;
                self.send(resp);
            }
            None => {
                // Hint the leader where a match may be: the largest index <= m.index
                // whose term is <= the term the leader has at m.index.
                let hint = m.index.min(self.raft_log.last_index());
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
                resp.index = m.index;
                resp.reject = true;
                resp.reject_hint = hint_index;
                resp.log_term = hint_term;
                self.send(resp);
            }
        }
        Ok(())
    }

    fn handle_heartbeat(&mut self, m: Message) {
        // The leader never sends a commit beyond what it knows we hold, but our log may
        // have been truncated since; never commit past our own log.
        let commit = m.commit.min(self.raft_log.last_index());
        self.raft_log.commit_to(commit);
        let mut resp = Message::new(MessageType::HeartbeatResponse, self.id, m.from);
        resp.context = m.context;
        self.send(resp);
    }

    fn handle_snapshot(&mut self, mut m: Message) {
        let Some(snapshot) = m.snapshot.take() else {
            return;
        };
        let mut resp = Message::new(MessageType::AppendResponse, self.id, m.from);
        if self.restore(snapshot) {
            resp.index = self.raft_log.last_index();
        } else {
            resp.index = self.raft_log.committed;
        }
        self.send(resp);
    }

    /// Installs `snapshot` if it is ahead of our commit index. Returns whether the log
    /// was replaced.
    pub fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.metadata;
        if meta.index <= self.raft_log.committed {
            return false;
        }
        if self.state != StateRole::Follower {
            // Defence in depth: only followers install snapshots. Move to a new term
            // rather than keep leading on top of a replaced log.
            let term = self.term.saturating_add(1);
            self.become_follower(term, 0);
            return false;
        }
        let cs = &meta.conf_state;
        let member = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == self.id);
        if !member {
            // A snapshot of a configuration we are not part of cannot be ours to apply.
            return false;
        }
        if self.raft_log.match_term(meta.index, meta.term) {
            // We already hold the snapshot's last entry: fast-forward the commit index.
            self.raft_log.commit_to(meta.index);
            return false;
        }
        let cs = cs.clone();
        // Build the new configuration before touching the log, so a snapshot with an
        // invalid membership is refused instead of leaving the node half-restored.
        let mut prs = self.prs.clone();
        if confchange::restore(&mut prs, meta.index, &cs).is_err()
            || !conf_state_eq(&prs.conf.to_conf_state(), &cs)
        {
            return false;
        }
        self.raft_log.restore(snapshot);
        // The log now ends at the snapshot index, which is where `prs` starts probing.
        self.prs = prs;
        true
    }

    // ---- persistence and application feedback ----

    /// The engine wrote entries up to (`index`, `term`) durably.
    pub fn on_persist_entries(&mut self, index: u64, term: u64) {
        if !self.raft_log.stable_to(index, term) {
            return;
        }
        if self.state != StateRole::Leader {
            return;
        }
        let persisted = self.raft_log.persisted;
        let updated = self
            .prs
            .progress
            .get_mut(&self.id)
            .is_some_and(|pr| pr.maybe_update(persisted));
        if updated && self.maybe_commit() {
            self.release_pending_read_index_messages();
            self.bcast_append();
        }
    }

    /// The engine wrote the snapshot at `index` durably.
    pub fn on_persist_snap(&mut self, index: u64) {
        self.raft_log.stable_snap_to(index);
    }

    /// The application applied entries up to `applied`. On a leader whose joint
    /// configuration auto-leaves, proposes the leave once the change is applied.
    pub fn commit_apply(&mut self, applied: u64) {
        self.raft_log.applied_to(applied);
        if self.state == StateRole::Leader
            && self.prs.conf.auto_leave
            && applied >= self.pending_conf_index
        {
            let data = codec::encode(&ConfChangeV2::default());
            let mut ents = [Entry {
                entry_type: EntryType::ConfChangeV2,
                data,
                ..Entry::default()
            }];
            // Leaving a joint configuration must not be refused by the size bound: it is
            // the only way out of joint consensus.
            let saved = self.max_uncommitted_size;
            self.max_uncommitted_size = 0;
            self.append_entry(&mut ents);
            self.max_uncommitted_size = saved;
            self.pending_conf_index = self.raft_log.last_index();
            self.bcast_append();
        }
    }

    /// Commits whatever a quorum now holds. Returns whether the commit index moved.
    pub fn maybe_commit(&mut self) -> bool {
        let mci = self.prs.committed_index();
        self.raft_log.maybe_commit(mci, self.term)
    }

    /// Applies a committed membership change and returns the resulting membership.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        let changer = Changer::new(&self.prs, self.raft_log.last_index());
        let (cfg, prs) = if cc.leave_joint() {
            changer.leave_joint()?
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, &cc.changes)?
        } else {
            changer.simple(&cc.changes)?
        };
        self.prs.conf = cfg;
        self.prs.progress = prs;
        self.post_conf_change();
        Ok(self.prs.conf.to_conf_state())
    }

    fn post_conf_change(&mut self) {
        let removed_or_demoted = self
            .prs
            .progress
            .get(&self.id)
            .is_none_or(|pr| pr.is_learner);
        if self.state == StateRole::Leader && removed_or_demoted {
            // A leader that is no longer a voter steps down; the rest elect a new one.
            let term = self.term;
            self.become_follower(term, 0);
            return;
        }
        if self.state != StateRole::Leader || self.prs.conf.voters.ids().is_empty() {
            return;
        }
        // The quorum changed: something may now be committed.
        if self.maybe_commit() {
            self.release_pending_read_index_messages();
            self.bcast_append();
        } else {
            for id in self.peer_ids() {
                self.maybe_send_append(id, false);
            }
        }
        if let Some(t) = self.lead_transferee {
            if !self.prs.conf.voters.contains(t) {
                self.abort_leader_transfer();
            }
        }
    }
}

fn conf_state_eq(a: &ConfState, b: &ConfState) -> bool {
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    sorted(&a.voters) == sorted(&b.voters)
        && sorted(&a.learners) == sorted(&b.learners)
        && sorted(&a.voters_outgoing) == sorted(&b.voters_outgoing)
        && sorted(&a.learners_next) == sorted(&b.learners_next)
        && a.auto_leave == b.auto_leave
}
