//! Waiting on a condition instead of sleeping: [`wait_until`] polls a check until it
//! holds or a deadline passes, and [`agreed_leader`] is the check "every node names the
//! same leader, and that node says it leads".

use std::time::{Duration, Instant};

use super::model::KvClient;
use crate::Role;

/// How often [`wait_until`] polls: short against the 10–20 ms ticks the harness runs
/// nodes at, long enough not to compete with them for the CPU.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every [`POLL`] until it returns `Some`, for at most `timeout`; `None`
/// if it never did. `check` runs at least once, even with a zero timeout.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A leader the nodes agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// The leader's node id.
    pub id: u64,
    /// The term it leads in, as it reports it.
    pub term: u64,
}

/// The leader every one of `nodes` names, if they all name the same one and it is
/// among them and says it leads; `None` for no nodes.
pub fn agreed_leader<'a, N: KvClient>(nodes: impl IntoIterator<Item = &'a N>) -> Option<Leader> {
    let statuses: Vec<_> = nodes.into_iter().map(|n| n.replica().status()).collect();
    let first = statuses.first()?.leader?;
    if !statuses.iter().all(|s| s.leader == Some(first)) {
        return None;
    }
    let leader = statuses
        .iter()
        .find(|s| s.id == first && s.role == Role::Leader)?;
    Some(Leader {
        id: first,
        term: leader.term,
    })
}
