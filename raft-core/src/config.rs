//! Tunables of one Raft node.

use crate::errors::{Error, Result};
use crate::read_only::ReadOnlyOption;

/// Configuration of a [`RawNode`](crate::RawNode). Start from [`Config::new`] and
/// change what you need; [`Config::validate`] runs when the node is created.
///
/// # Example
///
/// ```
/// use keel_raft::{Config, ReadOnlyOption};
///
/// let config = Config {
///     election_tick: 20,
///     heartbeat_tick: 2,
///     check_quorum: true,
///     pre_vote: true,
///     read_only_option: ReadOnlyOption::LeaseBased, // needs check_quorum
///     seed: 7,
///     ..Config::new(1)
/// };
/// assert!(config.validate().is_ok());
/// assert_eq!(config.max_election_tick(), 40);
/// // A heartbeat no shorter than the election timeout is refused.
/// assert!(Config { heartbeat_tick: 20, ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns. The actual
    /// timeout is randomized in `[min_election_tick, max_election_tick)`.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Lower bound of the randomized election timeout; 0 means `election_tick`.
    pub min_election_tick: usize,
    /// Upper bound (exclusive); 0 means `2 * election_tick`.
    pub max_election_tick: usize,
    /// The index last applied before a restart; entries up to it are not handed out
    /// again.
    pub applied: u64,
    /// Most bytes of entries in one append message (at least one entry is sent).
    pub max_size_per_msg_bytes: u64,
    /// Most append messages in flight to one follower in the Replicate state.
    pub max_inflight_msgs: usize,
    /// Most bytes of entries in flight to one follower; 0 means no byte bound.
    pub max_inflight_bytes: u64,
    /// Most bytes of proposed but uncommitted entry payload on a leader; proposals past
    /// it are dropped (reported to the caller). 0 means no bound.
    pub max_uncommitted_size_bytes: u64,
    /// Most bytes of committed entries handed to the application in one `Ready`.
    pub max_committed_size_per_ready_bytes: u64,
    /// Whether a leader steps down when it has not heard from a quorum within an
    /// election timeout, and followers ignore vote requests while a leader is known
    /// (the leader lease).
    pub check_quorum: bool,
    /// Whether a node runs a pre-election before incrementing its term (§9.6).
    pub pre_vote: bool,
    /// How linearizable reads are confirmed.
    pub read_only_option: ReadOnlyOption,
    /// Whether followers drop proposals instead of forwarding them to the leader.
    pub disable_proposal_forwarding: bool,
    /// Seed of the node's only randomness (election timeouts).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 1,
            min_election_tick: 0,
            max_election_tick: 0,
            applied: 0,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            max_uncommitted_size_bytes: 0,
            max_committed_size_per_ready_bytes: u64::MAX,
            check_quorum: false,
            pre_vote: false,
            read_only_option: ReadOnlyOption::Safe,
            disable_proposal_forwarding: false,
            seed: 0,
        }
    }
}

impl Config {
    /// Defaults for node `id`: election after 10 ticks, heartbeat every tick.
    pub fn new(id: u64) -> Config {
        Config {
            id,
            ..Config::default()
        }
    }

    /// The effective lower bound of the election timeout.
    pub fn min_election_tick(&self) -> usize {
        if self.min_election_tick == 0 {
            self.election_tick
        } else {
            self.min_election_tick
        }
    }

    /// The effective upper bound (exclusive) of the election timeout.
    pub fn max_election_tick(&self) -> usize {
        if self.max_election_tick == 0 {
            2 * self.election_tick
        } else {
            self.max_election_tick
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::ConfigInvalid(msg.to_string()));
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be greater than 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        let (min, max) = (self.min_election_tick(), self.max_election_tick());
        if min < self.election_tick {
            return bad("min_election_tick must be at least election_tick");
        }
        if min >= max {
            return bad("min_election_tick must be less than max_election_tick");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be greater than 0");
        }
        if self.max_inflight_bytes != 0 && self.max_inflight_bytes < self.max_size_per_msg_bytes {
            return bad("max_inflight_bytes must be at least max_size_per_msg_bytes");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("lease-based reads need check_quorum");
        }
        Ok(())
    }
}
