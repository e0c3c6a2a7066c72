//! Capped exponential backoff with jitter between reconnection attempts, so peers that
//! lost each other at the same moment do not redial in lockstep.

use std::time::Duration;

use keel_raft::Rng;

/// The delays between failed attempts: doubling from `initial_ms` up to `max_ms`,
/// each drawn uniformly from its upper half ("equal jitter").
#[derive(Debug)]
pub(crate) struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    current_ms: u64,
    rng: Rng,
}

impl Backoff {
    pub(crate) fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        debug_assert!(
            initial_ms >= 1 && initial_ms <= max_ms,
            "checked by TcpConfig"
        );
        Backoff {
            initial_ms,
            max_ms,
            current_ms: initial_ms,
            rng: Rng::new(seed),
        }
    }

    /// Back to the initial delay, after a connection succeeded.
    pub(crate) fn reset(&mut self) {
        self.current_ms = self.initial_ms;
    }

    /// The delay before the next attempt; doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let span = self.current_ms;
        let half = span / 2;
        let jitter = self.rng.range(0, span - half + 1);
        self.current_ms = self.current_ms.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(half + jitter)
    }
}

/// A seed that differs between processes and between peers of one process.
pub(crate) fn seed(own_id: u64, peer: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ own_id.rotate_left(32) ^ peer.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(100, 1000, 42);
        let mut caps = Vec::new();
        for _ in 0..8 {
            let cap = b.current_ms;
            let d = b.next_delay().as_millis() as u64;
            assert!(d >= cap / 2 && d <= cap, "{d} outside [{}, {cap}]", cap / 2);
            caps.push(cap);
        }
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
        let mut one = Backoff::new(1, 1, 0);
        assert!(one.next_delay().as_millis() <= 1);
    }
}
