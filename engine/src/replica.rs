//! [`Replica`]: one node of a replicated state machine, generic over the application's
//! [`StateMachine`]: propose commands and get their responses, read the state
//! linearizably or locally, change the membership, move leadership, watch the status
//! and metrics, and shut down. [`Db`](crate::Db) is this over keel's key-value store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::SendTimeoutError;
use keel_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, StateRole,
};

use crate::command::{self, COMMAND_FRAMING_MAX_BYTES};
use crate::config::Config;
use crate::error::{Error, Fatal, MembershipRefusal, Result, StopReason, UnknownOutcome};
use crate::members::member_context;
use crate::node::Node;
use crate::proposals::{PendingWrites, Waited};
use crate::raft_stage::Request;
use crate::reply::{self, RecvTimeoutError};
use crate::state_machine::{Command, StateMachine};

/// A node's role, as [`Replica::status`] reports it.
pub type Role = StateRole;

/// What a node is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Index of the newest snapshot (0 for none).
    pub snapshot_index: u64,
    /// Voters of the current configuration.
    pub voters: Vec<u64>,
    /// Learners of the current configuration.
    pub learners: Vec<u64>,
    /// Why the node stopped, if it stopped on its own: it then serves nothing and
    /// every call fails with this cause (see [`Error::fatal`]).
    pub fatal: Option<Fatal>,
}

/// A handle on one running node of a replicated state machine `S`. Cheap to clone;
/// every clone drives the same node. The node stops when [`close`](Replica::close) is
/// called or the last handle is dropped (dropping without `close` is what a crash looks
/// like to the data directory, minus the page cache: everything acknowledged was
/// already synced).
///
/// The crate documentation opens with a whole program around a state machine of its
/// own; here, keel's key-value store through the generic calls:
///
/// ```
/// use keel_engine::state_machine::KvStore;
/// use keel_engine::{Config, Op, Replica};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let config = Config::single_node(dir.path());
/// let kv = Replica::open(config.clone(), KvStore::open(&config)?)?;
/// kv.propose(Op::Put { key: b"k".to_vec(), value: b"v".to_vec() })?;
/// assert_eq!(kv.read(|kv| kv.get(b"k"))??, Some(b"v".to_vec()));
/// assert_eq!(kv.read_local(|kv| kv.len())?, 1);
/// kv.close()?;
/// # Ok::<(), keel_engine::Error>(())
/// ```
pub struct Replica<S: StateMachine> {
    node: Arc<Node<S>>,
}

impl<S: StateMachine> Clone for Replica<S> {
    fn clone(&self) -> Replica<S> {
        Replica {
            node: Arc::clone(&self.node),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.node.shared.id)
            .finish()
    }
}

// Pause between attempts of a linearizable read whose round was lost to a leader
// change.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(5);

// How often a leadership transfer checks whether leadership moved.
const TRANSFER_POLL: Duration = Duration::from_millis(10);

impl<S: StateMachine> Replica<S> {
    /// Opens (recovering) or creates the node described by `config` around the state
    /// machine `state_machine`, and starts its threads. Recovery restores the newest
    /// good snapshot into it (unless it already holds that index: one that persists
    /// itself) and the node then replays the log above it.
    /// [`Config::state_machine`] is not used: it picks [`Db`](crate::Db)'s store.
    pub fn open(config: Config, state_machine: S) -> Result<Replica<S>> {
        Ok(Replica {
            node: Arc::new(Node::open(config, state_machine)?),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.node.shared.id
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &Config {
        &self.node.config
    }

    /// The timeout of the calls that take none: `Config::request_timeout_ms`.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.node.config.request_timeout_ms)
    }

    /// Proposes `command` and returns its response once it is committed and applied
    /// on this node. Works on any node (a follower passes the command to the leader).
    ///
    /// On an error the command was not applied, except for [`Error::Timeout`] and
    /// [`Error::Indeterminate`], which say its outcome is unknown: it may still be
    /// applied (a retry may then apply it twice unless the command is idempotent).
    pub fn propose(&self, command: S::Command) -> Result<S::Response> {
        self.propose_timeout(command, self.default_timeout())
    }

    /// [`propose`](Self::propose) with an explicit timeout.
    pub fn propose_timeout(&self, command: S::Command, timeout: Duration) -> Result<S::Response> {
        self.check_running()?;
        let deadline = Instant::now() + timeout;
        let shared = &self.node.shared;
        let proposals = &self.node.proposals;
        let (id, answer) = proposals.register()?;
        // Encoded here, on the caller's thread, rather than on the raft stage's, which
        // every write goes through.
        let (data, encoded_bytes) = command::encode(shared.id, id, &command);
        let size_bytes = command
            .size_bytes(encoded_bytes)
            .max((encoded_bytes as u64).saturating_sub(COMMAND_FRAMING_MAX_BYTES));
        let max_bytes = self.node.config.max_entry_bytes;
        if size_bytes > max_bytes {
            proposals.cancel(id);
            return Err(Error::TooLarge {
                size_bytes,
                max_bytes,
            });
        }
        drop(command);
        // Bounded in bytes as well as count: a write over the queue's byte budget is
        // refused now (never proposed) rather than made to wait.
        let len = data.len() as u64;
        let Ok(data) = self.node.request_budget.try_wrap(data, len) else {
            proposals.cancel(id);
            shared.metrics.requests_over_queue_bytes.inc();
            return Err(Error::Busy(self.node.requests.len()));
        };
        let outcome = self
            .send(Request::Propose { id, data }, deadline, timeout)
            .and_then(|()| {
                match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(result) => result,
                    Err(RecvTimeoutError::Timeout) => Err(Error::Timeout(timeout)),
                    // Handed to the raft stage, so possibly proposed: not known to have
                    // failed.
                    Err(RecvTimeoutError::Disconnected) => Err(Error::Indeterminate(
                        UnknownOutcome::Stopped(shared.await_stop_reason()),
                    )),
                }
            });
        if outcome.is_err() {
            proposals.cancel(id);
            shared.metrics.proposals_failed.inc();
        }
        outcome
    }

    /// Runs `read` over the state machine, linearizably: the leader confirms it still
    /// leads (ReadIndex) and this node waits until it has applied everything committed
    /// before the read began, so `read` sees every write acknowledged before this call.
    /// `read` runs under the state machine's read lock: applying waits for it, so keep
    /// it short.
    pub fn read<T>(&self, read: impl FnOnce(&S) -> T) -> Result<T> {
        self.read_timeout(self.default_timeout(), read)
    }

    /// [`read`](Self::read) with an explicit timeout.
    pub fn read_timeout<T>(&self, timeout: Duration, read: impl FnOnce(&S) -> T) -> Result<T> {
        self.read_index(timeout)?;
        // The state machine only moves forward, so it is at or past the read index.
        Ok(read(&*self.node.sm.read()))
    }

    /// Waits until this node has applied log index `index` (from a
    /// [`status`](Self::status), say, to see a write made through another node), for
    /// at most `timeout`: [`Error::Timeout`] if it did not.
    pub fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        self.check_running()?;
        match self
            .node
            .shared
            .applied
            .wait_for(index, Instant::now() + timeout)
        {
            Waited::Reached => Ok(()),
            Waited::TimedOut => Err(Error::Timeout(timeout)),
            Waited::Stopped => Err(self.node.shared.stopped_error()),
        }
    }

    /// Runs `read` over this node's state machine as it is, without asking the leader:
    /// it may be stale (it is what this node has applied). Fails only on a stopped
    /// node.
    pub fn read_local<T>(&self, read: impl FnOnce(&S) -> T) -> Result<T> {
        self.check_running()?;
        Ok(read(&*self.node.sm.read()))
    }

    fn check_running(&self) -> Result<()> {
        if self.node.shared.is_stopped() {
            return Err(self.node.shared.stopped_error());
        }
        Ok(())
    }

    // Queues `request` for the raft stage, waiting for room until `deadline`;
    // `timeout` is what a timeout reports. A closed queue means the node stopped, and
    // the request was never proposed.
    fn send(&self, request: Request, deadline: Instant, timeout: Duration) -> Result<()> {
        let room = deadline.saturating_duration_since(Instant::now());
        match self.node.requests.send_timeout(request, room) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(Error::Timeout(timeout)),
            Err(SendTimeoutError::Disconnected(_)) => Err(self.node.shared.stopped_error()),
        }
    }

    // Sends the raft stage the request `ask` builds around a fresh reply slot and
    // waits for the answer, both until `deadline`; `timeout` is what a timeout
    // reports. Only for requests that change nothing when their answer is lost (reads,
    // membership changes, leadership transfers): a stopped node is reported as
    // `Stopped`.
    fn ask<T>(
        &self,
        ask: impl FnOnce(reply::Sender<Result<T>>) -> Request,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<T> {
        let (reply, answer) = reply::channel();
        self.send(ask(reply), deadline, timeout)?;
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(self.node.shared.stopped_error()),
        }
    }

    /// Waits until a linearizable read may be served locally; returns its read index.
    fn read_index(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let shared = &self.node.shared;
        // Bounded by the deadline: every attempt waits at most until it.
        loop {
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            match self.ask(|reply| Request::Read { reply }, deadline, timeout) {
                Ok(index) => {
                    return match shared.applied.wait_for(index, deadline) {
                        Waited::Reached => Ok(index),
                        Waited::TimedOut => Err(Error::Timeout(timeout)),
                        Waited::Stopped => Err(shared.stopped_error()),
                    };
                }
                // The round was lost to a leader change or a lost message: try again.
                Err(Error::ProposalLost(_)) => std::thread::sleep(READ_RETRY_PAUSE),
                Err(e) => return Err(e),
            }
        }
    }

    /// Changes the membership (proposed on the leader only); returns the membership
    /// once the change is committed and in effect here. A node being added is started
    /// with [`Config::join`](crate::Config::join) and receives the log from the leader.
    ///
    /// Refused before anything is proposed ([`Error::MembershipRefused`],
    /// [`Error::UnknownNode`])
    /// when another change is pending, the node is not a member (removal) or already
    /// has the wanted role, a learner to promote lags far behind, or the voters left
    /// that are reachable could not form a majority. `cc.context` travels with the
    /// change to every node's [`MembershipObserver`](crate::MembershipObserver).
    pub fn change_membership(&self, cc: ConfChangeV2) -> Result<ConfState> {
        let timeout = self.default_timeout();
        // A leader knows a voter is reachable only once it answered: just after an
        // election (or after check-quorum cleared the marks) a live voter may not count
        // yet. Ask again for up to two election timeouts before refusing.
        let election = Duration::from_millis(
            self.node.config.tick_ms * self.node.config.election_ticks as u64,
        );
        let retry_until = Instant::now() + (2 * election).min(timeout);
        // Bounded by `retry_until`: each turn sleeps a poll interval.
        loop {
            match self.change_membership_once(cc.clone(), timeout) {
                Err(Error::MembershipRefused(MembershipRefusal::WouldLoseQuorum { .. }))
                    if Instant::now() < retry_until =>
                {
                    std::thread::sleep(TRANSFER_POLL);
                }
                outcome => return outcome,
            }
        }
    }

    fn change_membership_once(&self, cc: ConfChangeV2, timeout: Duration) -> Result<ConfState> {
        self.check_running()?;
        let deadline = Instant::now() + timeout;
        self.ask(|reply| Request::ConfChange { cc, reply }, deadline, timeout)
    }

    /// Adds node `id` as a voter (etcd's `member add`), or promotes it if it is a
    /// learner; returns the membership once the change is in effect here. `address`
    /// is its peer address, carried by the change into every member's address book
    /// (see [`Members`](crate::Members)); `None` carries none (a member keeps the one
    /// it has). The new node is started with [`Config::join`](crate::Config::join).
    /// Refused as [`change_membership`](Self::change_membership) describes.
    pub fn add_member(&self, id: u64, address: Option<&str>) -> Result<ConfState> {
        self.change_one(ConfChangeType::AddNode, id, address)
    }

    /// Adds node `id` as a learner (etcd's `member add --learner`): it receives the
    /// log but does not vote. A voter named here becomes a learner. `address` as in
    /// [`add_member`](Self::add_member).
    pub fn add_learner(&self, id: u64, address: Option<&str>) -> Result<ConfState> {
        self.change_one(ConfChangeType::AddLearnerNode, id, address)
    }

    /// Promotes learner `id` to a voter (etcd's `member promote`); refused with
    /// [`MembershipRefusal::LearnerBehind`] while it lags far behind the leader.
    pub fn promote_learner(&self, id: u64) -> Result<ConfState> {
        self.change_one(ConfChangeType::AddNode, id, None)
    }

    /// Removes member `id`, voter or learner (etcd's `member remove`);
    /// [`Error::UnknownNode`] if it is not a member.
    pub fn remove_member(&self, id: u64) -> Result<ConfState> {
        self.change_one(ConfChangeType::RemoveNode, id, None)
    }

    fn change_one(
        &self,
        change_type: ConfChangeType,
        id: u64,
        address: Option<&str>,
    ) -> Result<ConfState> {
        self.change_membership(ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type,
                node_id: id,
            }],
            context: address.map_or_else(Vec::new, |addr| member_context(id, addr)),
        })
    }

    /// Hands leadership to voter `target` and returns once this node sees `target`
    /// leading. Works from any node (a follower passes the request to the leader).
    /// [`Error::UnknownNode`] if `target` is not a voter, [`Error::MembershipRefused`] for a
    /// learner, [`Error::NotLeader`] while there is no leader, [`Error::Timeout`] if
    /// leadership did not move in time (raft abandons a transfer after an election
    /// timeout, e.g. when the target is unreachable).
    pub fn transfer_leadership(&self, target: u64) -> Result<()> {
        self.transfer_leadership_timeout(target, self.default_timeout())
    }

    /// [`transfer_leadership`](Self::transfer_leadership) with an explicit timeout.
    pub fn transfer_leadership_timeout(&self, target: u64, timeout: Duration) -> Result<()> {
        self.check_running()?;
        let deadline = Instant::now() + timeout;
        let shared = &self.node.shared;
        let election = Duration::from_millis(
            self.node.config.tick_ms * self.node.config.election_ticks as u64,
        );
        let lenient_until = Instant::now() + (2 * election).min(timeout);
        // Bounded by the deadline: each turn sleeps a poll interval.
        let mut asked_at: Option<Instant> = None;
        loop {
            self.check_running()?;
            let view = shared.view();
            if view.leader == target && view.leader != 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(timeout));
            }
            // Ask again after an election timeout: raft abandons a transfer that did
            // not finish in that time, and a new leader may have appeared meanwhile.
            if asked_at.is_none_or(|t| now.duration_since(t) >= election) {
                let asked = self.ask(
                    |reply| Request::TransferLeader { target, reply },
                    deadline,
                    timeout,
                );
                match asked {
                    Ok(()) => {}
                    // No leader yet: one may be elected before the deadline.
                    Err(Error::NotLeader { .. }) if asked_at.is_some() => {}
                    // A follower learns a membership change a heartbeat after the
                    // leader: give its view that long to catch up before believing it.
                    Err(Error::MembershipRefused(_) | Error::UnknownNode(_))
                        if view.role != Role::Leader && now < lenient_until =>
                    {
                        std::thread::sleep(TRANSFER_POLL);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                asked_at = Some(now);
            }
            std::thread::sleep(TRANSFER_POLL);
        }
    }

    /// What the node is doing now.
    pub fn status(&self) -> Status {
        let shared = &self.node.shared;
        let view = shared.view();
        let applied_index = shared.applied.get();
        let cache = self.node.cache.stats();
        Status {
            id: shared.id,
            role: view.role,
            term: view.term,
            leader: Some(view.leader).filter(|&l| l != 0),
            // The raft stage publishes its view once per loop turn, so the apply stage
            // can be a moment ahead of it; nothing is applied before it is committed.
            commit_index: view.commit.max(applied_index),
            applied_index,
            first_index: cache.first_index,
            last_index: cache.last_index,
            snapshot_index: cache.snapshot_index,
            voters: view.conf_state.voters.clone(),
            learners: view.conf_state.learners.clone(),
            fatal: shared.fatal(),
        }
    }

    /// The membership as this node has applied it, with the members' peer addresses
    /// (replicated state: carried by the changes that added them and by snapshots).
    /// May lag [`status`](Self::status) by the entries not yet applied.
    pub fn members(&self) -> crate::Members {
        self.node.members.read().clone()
    }

    /// The node's metrics in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        let metrics = &self.node.shared.metrics;
        metrics
            .proposals_pending
            .set(self.node.proposals.pending() as i64);
        // The cache counts on its own (its readers hold its lock anyway); copying the
        // counts at render time keeps the raft stage's read path free of metrics work.
        let cache = self.node.cache.stats();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        metrics.log_cache_hits.set(gauge(cache.hits));
        metrics.log_cache_misses.set(gauge(cache.misses));
        metrics.log_cache_bytes.set(gauge(cache.window_bytes));
        metrics.log_cache_entries.set(gauge(cache.window_entries));
        metrics.text()
    }

    /// Stops the node cleanly: every stage finishes and its thread is joined, and the
    /// log is synced. Every acknowledged write is durable. Returns the error that
    /// stopped the node earlier, if one did (`Stopped` with [`StopReason::Fatal`]).
    /// Other handles get `Stopped` afterwards.
    pub fn close(&self) -> Result<()> {
        self.node.shutdown();
        let synced = self.node.cache.log().sync();
        if let Some(fatal) = self.node.shared.fatal() {
            return Err(Error::Stopped(StopReason::Fatal(fatal)));
        }
        synced?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn a_replica_is_send_sync_clone() {
        assert_shareable::<super::Replica<crate::state_machine::KvStore>>();
    }
}
