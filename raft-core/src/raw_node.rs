//! The application-facing driver: feed it ticks, messages and proposals; take a
//! [`Ready`] of work; persist, send and apply it; report back with `advance*` (or, with
//! the persisting done on another thread as keel's engine does, `advance_append_async`
//! now and `on_persist_ready` once it is durable). Every peer message given to `step`
//! passes the stateless checks here (`validate_message`: sender, term 0,
//! [`MAX_TERM_OR_INDEX`], the shape of an append) before `Raft::step` checks it against
//! the log.

use std::collections::VecDeque;

use crate::codec;
use crate::config::Config;
use crate::errors::{Error, Result};
use crate::raft::{Raft, SnapshotStatus, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::status::Status;
use crate::storage::Storage;
use crate::types::*;

/// One batch of work for the application, in the order it must be handled:
///
/// 1. send [`messages`](Ready::messages) (a leader's appends may go before its own
///    write is durable, Raft thesis §10.2.1);
/// 2. persist [`snapshot`](Ready::snapshot), [`entries`](Ready::entries) and
///    [`hs`](Ready::hs) — durably if [`must_sync`](Ready::must_sync);
/// 3. only then send [`persisted_messages`](Ready::persisted_messages) (a follower's
///    acks and votes must not outrun its disk);
/// 4. apply [`committed_entries`](Ready::committed_entries);
/// 5. call [`RawNode::advance`] (or the split `advance_append*` / `on_persist_ready`).
#[derive(Debug, Default, PartialEq)]
pub struct Ready {
    number: u64,
    ss: Option<SoftState>,
    hs: Option<HardState>,
    read_states: Vec<ReadState>,
    entries: Vec<Entry>,
    snapshot: Snapshot,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    must_sync: bool,
}

impl Ready {
    /// The sequence number to pass to [`RawNode::on_persist_ready`].
    pub fn number(&self) -> u64 {
        self.number
    }
    /// The new soft state, if it changed.
    pub fn ss(&self) -> Option<&SoftState> {
        self.ss.as_ref()
    }
    /// The new hard state to persist, if it changed.
    pub fn hs(&self) -> Option<&HardState> {
        self.hs.as_ref()
    }
    /// Reads confirmed since the last `Ready`.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }
    /// Takes the read states.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }
    /// Entries to append to stable storage.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// Takes the entries.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }
    /// A snapshot to persist and apply (empty if none).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    /// Committed entries to apply.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }
    /// Takes the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }
    /// Messages that may be sent before persisting.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
    /// Takes the messages that may be sent before persisting.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
    /// Messages to send only after this `Ready` is persisted.
    pub fn persisted_messages(&self) -> &[Message] {
        &self.persisted_messages
    }
    /// Takes the messages to send after persisting.
    pub fn take_persisted_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.persisted_messages)
    }
    /// Whether the write must be synced before `persisted_messages` are sent.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// What became available after a `Ready` was persisted.
#[derive(Debug, Default, PartialEq)]
pub struct LightReady {
    commit_index: Option<u64>,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
}

impl LightReady {
    /// The new commit index, if it changed.
    pub fn commit_index(&self) -> Option<u64> {
        self.commit_index
    }
    /// Committed entries to apply.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }
    /// Takes the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }
    /// Messages to send now.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
    /// Takes the messages.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
}

#[derive(Debug, Default)]
struct ReadyRecord {
    number: u64,
    last_entry: Option<(u64, u64)>,
    snapshot_index: Option<u64>,
}

/// A Raft node driven by the application: no threads, no clocks, no I/O.
///
/// The application loop: feed it ticks ([`tick`](Self::tick)), messages from peers
/// ([`step`](Self::step)) and proposals ([`propose`](Self::propose)); when
/// [`has_ready`](Self::has_ready), take a [`Ready`], persist its entries and hard state,
/// send its messages, apply its committed entries, and hand it back through
/// [`advance`](Self::advance).
///
/// # Example
///
/// A single-voter group commits a proposal on its own:
///
/// ```
/// use keel_raft::{Config, MemoryStorage, RawNode, StateRole};
///
/// # fn main() -> keel_raft::Result<()> {
/// let store = MemoryStorage::new_with_conf_state(vec![1], vec![]);
/// let mut node = RawNode::new(&Config::new(1), store)?;
/// node.campaign()?; // alone in the group, it wins at once
/// assert_eq!(node.role(), StateRole::Leader);
/// node.propose(b"put k v".to_vec())?;
///
/// let mut applied = Vec::new();
/// while node.has_ready() {
///     let mut rd = node.ready();
///     node.mut_store().append(rd.entries())?; // persist before acknowledging
///     if let Some(hs) = rd.hs() {
///         node.mut_store().set_hard_state(*hs);
///     }
///     let mut committed = rd.take_committed_entries();
///     let mut light = node.advance(rd);
///     committed.extend(light.take_committed_entries());
///     applied.extend(committed.into_iter().filter(|e| !e.data.is_empty()).map(|e| e.data));
///     node.advance_apply();
/// }
/// assert_eq!(applied, vec![b"put k v".to_vec()]);
/// # Ok(())
/// # }
/// ```
pub struct RawNode<S: Storage> {
    /// The state machine itself, exposed for inspection and tests.
    pub raft: Raft<S>,
    prev_ss: SoftState,
    prev_hs: HardState,
    max_number: u64,
    // Readies handed out and not yet reported persisted, oldest first.
    records: VecDeque<ReadyRecord>,
}

impl<S: Storage> RawNode<S> {
    /// Creates a node from `config` over `store` (which supplies the initial state).
    pub fn new(config: &Config, store: S) -> Result<RawNode<S>> {
        let raft = Raft::new(config, store)?;
        let prev_hs = raft.hard_state();
        let prev_ss = raft.soft_state();
        Ok(RawNode {
            raft,
            prev_ss,
            prev_hs,
            max_number: 0,
            records: VecDeque::new(),
        })
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft
            .step(Message::new(MessageType::Hup, self.raft.id, self.raft.id))
    }

    /// Proposes `data` for the log. An error means it was dropped and will never
    /// commit; `Ok` means it was appended or forwarded (it may still be lost if the
    /// leader changes, which the application detects by index and term).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<()> {
        let mut m = Message::new(MessageType::Propose, self.raft.id, 0);
        m.entries = vec![Entry::new(0, 0, data)];
        self.raft.step(m)
    }

    /// Proposes several entries at once (one message, one append).
    pub fn propose_batch(&mut self, datas: Vec<Vec<u8>>) -> Result<()> {
        if datas.is_empty() {
            return Ok(());
        }
        let mut m = Message::new(MessageType::Propose, self.raft.id, 0);
        m.entries = datas.into_iter().map(|d| Entry::new(0, 0, d)).collect();
        self.raft.step(m)
    }

    /// Proposes a single-step membership change.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<()> {
        self.propose_conf_entry(EntryType::ConfChange, codec::encode(cc))
    }

    /// Proposes a membership change that may use joint consensus.
    pub fn propose_conf_change_v2(&mut self, cc: &ConfChangeV2) -> Result<()> {
        self.propose_conf_entry(EntryType::ConfChangeV2, codec::encode(cc))
    }

    fn propose_conf_entry(&mut self, entry_type: EntryType, data: Vec<u8>) -> Result<()> {
        let mut m = Message::new(MessageType::Propose, self.raft.id, 0);
        m.entries = vec![Entry {
            entry_type,
            data,
            ..Entry::default()
        }];
        self.raft.step(m)
    }

    /// Applies a committed membership change (decoded from an entry's data).
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// Steps a message received from a peer.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.msg_type.is_local() {
            return Err(Error::StepLocalMsg);
        }
        validate_message(&m, self.raft.id)?;
        if m.msg_type.is_response() && !self.raft.prs.progress.contains_key(&m.from) {
            return Err(Error::StepPeerNotFound);
        }
        self.raft.step(m)
    }

    /// Requests a linearizable read; the answer arrives as a [`ReadState`] carrying
    /// `ctx` in a later `Ready`.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        let mut m = Message::new(MessageType::ReadIndex, self.raft.id, 0);
        m.entries = vec![Entry::new(0, 0, ctx)];
        self.raft.step(m)
    }

    /// Asks the leader to hand leadership to `transferee`.
    pub fn transfer_leader(&mut self, transferee: u64) {
        let m = Message::new(MessageType::TransferLeader, transferee, 0);
        let _ = self.raft.step(m);
    }

    /// Reports that `id` could not be reached by the transport.
    pub fn report_unreachable(&mut self, id: u64) {
        let m = Message::new(MessageType::Unreachable, id, self.raft.id);
        let _ = self.raft.step(m);
    }

    /// Reports the outcome of sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        let mut m = Message::new(MessageType::SnapStatus, id, self.raft.id);
        m.reject = status == SnapshotStatus::Failure;
        let _ = self.raft.step(m);
    }

    /// Whether there is work for a `Ready`.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        raft.soft_state() != self.prev_ss
            || raft.hard_state() != self.prev_hs
            || !raft.read_states.is_empty()
            || !raft.msgs.is_empty()
            || !raft.msgs_after_persist.is_empty()
            || raft.raft_log.next_unstable_snapshot().is_some()
            || !raft.raft_log.next_unstable_entries().is_empty()
            || (raft.fatal_error().is_none() && raft.raft_log.has_next_committed_entries())
    }

    /// Collects the pending work. Everything in it is considered handed out: the next
    /// `Ready` will not repeat it.
    pub fn ready(&mut self) -> Ready {
        self.forget_replaced_writes();
        self.max_number += 1;
        let number = self.max_number;
        let raft = &mut self.raft;
        let mut rd = Ready {
            number,
            ..Ready::default()
        };
        let mut record = ReadyRecord {
            number,
            ..ReadyRecord::default()
        };

        let ss = raft.soft_state();
        if ss != self.prev_ss {
            rd.ss = Some(ss);
            self.prev_ss = ss;
        }
        let hs = raft.hard_state();
        if hs != self.prev_hs {
            if hs.term != self.prev_hs.term || hs.vote != self.prev_hs.vote {
                rd.must_sync = true;
            }
            rd.hs = Some(hs);
            self.prev_hs = hs;
        }
        if let Some(snap) = raft.raft_log.next_unstable_snapshot() {
            rd.snapshot = snap.clone();
            record.snapshot_index = Some(snap.metadata.index);
            rd.must_sync = true;
            // The application applies the snapshot; committed entries follow it.
            let index = snap.metadata.index;
            raft.raft_log.applying = raft.raft_log.applying.max(index);
        }
        rd.entries = raft.raft_log.next_unstable_entries().to_vec();
        if let Some(e) = rd.entries.last() {
            record.last_entry = Some((e.index, e.term));
            rd.must_sync = true;
        }
        rd.committed_entries = self.next_committed_entries();
        self.hand_out_committed(&rd.committed_entries);
        let raft = &mut self.raft;
        rd.read_states = std::mem::take(&mut raft.read_states);
        rd.messages = std::mem::take(&mut raft.msgs);
        rd.persisted_messages = std::mem::take(&mut raft.msgs_after_persist);
        raft.raft_log.unstable.accept_in_progress();
        self.records.push_back(record);
        rd
    }

    // The Ready path cannot return errors: a failed read is recorded as the node's
    // fatal error, which every later `step` (and `fatal_error`) reports.
    fn next_committed_entries(&mut self) -> Vec<Entry> {
        match self.raft.raft_log.next_committed_entries() {
            Ok(ents) => ents,
            Err(e) => {
                self.raft.set_fatal(e);
                Vec::new()
            }
        }
    }

    /// The error that stopped this node, if any (see [`Raft::fatal_error`]); the
    /// application must stop the node when it is set.
    pub fn fatal_error(&self) -> Option<&Error> {
        self.raft.fatal_error()
    }

    fn hand_out_committed(&mut self, ents: &[Entry]) {
        if let Some(last) = ents.last() {
            let log = &mut self.raft.raft_log;
            assert!(
                last.index > log.applying,
                "committed entries handed out twice"
            );
            log.applying = last.index;
            self.raft.reduce_uncommitted_size(ents);
        }
    }

    /// Reports that `rd` was persisted (synchronously) and returns what that unlocked.
    /// The application must then apply the light ready's committed entries and call
    /// [`advance_apply`](Self::advance_apply).
    pub fn advance(&mut self, rd: Ready) -> LightReady {
        self.advance_append(rd)
    }

    /// Same as [`advance`](Self::advance).
    pub fn advance_append(&mut self, rd: Ready) -> LightReady {
        self.on_persist_ready(rd.number);
        let mut light = LightReady::default();
        let hs = self.raft.hard_state();
        if hs.commit != self.prev_hs.commit {
            light.commit_index = Some(hs.commit);
            self.prev_hs.commit = hs.commit;
        }
        let ents = self.next_committed_entries();
        self.hand_out_committed(&ents);
        light.committed_entries = ents;
        light.messages = std::mem::take(&mut self.raft.msgs);
        light
    }

    /// Accepts `rd` without waiting for its persistence, which the application reports
    /// later with [`on_persist_ready`](Self::on_persist_ready). Lets a raft thread keep
    /// going while a persist thread writes.
    pub fn advance_append_async(&mut self, rd: Ready) {
        debug_assert!(self.records.back().is_some_and(|r| r.number == rd.number));
    }

    // Readies handed out before entries they carried were replaced describe a log
    // that no longer exists: their durability reports must not stabilize entries
    // (see `Unstable::replaced_in_progress`). The Ready that carries the replacements
    // comes later, and its report covers everything below it.
    fn forget_replaced_writes(&mut self) {
        let unstable = &mut self.raft.raft_log.unstable;
        if unstable.replaced_in_progress {
            unstable.replaced_in_progress = false;
            for r in &mut self.records {
                r.last_entry = None;
            }
        }
    }

    /// Every `Ready` up to and including `number` is durable.
    pub fn on_persist_ready(&mut self, number: u64) {
        self.forget_replaced_writes();
        let mut last_entry = None;
        let mut snapshot_index = None;
        while let Some(r) = self.records.front() {
            if r.number > number {
                break;
            }
            let r = self.records.pop_front().unwrap_or_default();
            if r.last_entry.is_some() {
                last_entry = r.last_entry;
            }
            if r.snapshot_index.is_some() {
                snapshot_index = r.snapshot_index;
            }
        }
        if let Some(index) = snapshot_index {
            self.raft.on_persist_snap(index);
        }
        if let Some((index, term)) = last_entry {
            self.raft.on_persist_entries(index, term);
        }
    }

    /// Everything handed out so far was applied.
    pub fn advance_apply(&mut self) {
        let applying = self.raft.raft_log.applying;
        self.advance_apply_to(applying);
    }

    /// Entries up to `applied` were applied.
    pub fn advance_apply_to(&mut self, applied: u64) {
        self.raft.commit_apply(applied);
    }

    /// The node's status.
    pub fn status(&self) -> Status {
        Status::new(&self.raft)
    }

    /// The stable storage.
    pub fn store(&self) -> &S {
        &self.raft.raft_log.store
    }

    /// Mutable access to the stable storage, to append what a `Ready` asked for.
    pub fn mut_store(&mut self) -> &mut S {
        &mut self.raft.raft_log.store
    }

    /// The current role.
    pub fn role(&self) -> StateRole {
        self.raft.state
    }
}

/// Terms and indexes at or above this bound are refused in received messages. A real
/// cluster never comes near it (a term grows by one per election, an index by one per
/// entry), and keeping every value far below `u64::MAX` means no `+ 1` on a term or
/// index derived from a message can overflow.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Rejects messages whose shape would violate raft-core's invariants, so a damaged or
/// hostile message becomes an error instead of a panic. Only checks that need no
/// state; [`Raft::step`] checks a message against the log before acting on it.
fn validate_message(m: &Message, self_id: u64) -> Result<()> {
    let bad = |why: &'static str| Err(Error::MalformedMessage(why));
    if m.from == 0 {
        return bad("sender id is 0");
    }
    if m.from == self_id && !m.msg_type.is_relayable() {
        // Relayed requests keep the asker as sender, which may be this node when its
        // own request comes back to it as the new leader.
        return bad("message claims to come from this node");
    }
    // Term 0 marks a local message; only forwarded proposals and reads travel with it
    // (they speak for no term). Anything else with term 0 would skip the term checks.
    if m.term == 0 && !matches!(m.msg_type, MessageType::Propose | MessageType::ReadIndex) {
        return bad("term is 0");
    }
    let too_big = |v: u64| v >= MAX_TERM_OR_INDEX;
    if too_big(m.term)
        || too_big(m.log_term)
        || too_big(m.index)
        || too_big(m.commit)
        || too_big(m.reject_hint)
    {
        return bad("term or index beyond 2^62");
    }
    if m.msg_type == MessageType::Append {
        if m.log_term > m.term {
            return bad("append's log term is above its term");
        }
        let mut expect = m.index;
        let mut prev_term = m.log_term;
        for e in &m.entries {
            expect += 1;
            if e.index != expect || too_big(e.index) {
                return bad("append entries are not contiguous after the index");
            }
            if e.term == 0 || e.term < prev_term || e.term > m.term {
                return bad("append entry terms are not monotonic within the leader term");
            }
            prev_term = e.term;
        }
    }
    if m.msg_type == MessageType::Snapshot {
        match &m.snapshot {
            Some(s)
                if s.metadata.term <= m.term
                    && s.metadata.term > 0
                    && !s.is_empty()
                    && !too_big(s.metadata.index) => {}
            _ => return bad("snapshot message without a valid snapshot"),
        }
    }
    if m.msg_type == MessageType::AppendResponse && m.reject && m.reject_hint > m.index {
        // A follower's hint is at most the index it rejected.
        return bad("append rejection hints past the rejected index");
    }
    if matches!(m.msg_type, MessageType::ReadIndex | MessageType::Propose) && m.entries.is_empty() {
        return bad("proposal or read request without entries");
    }
    Ok(())
}
