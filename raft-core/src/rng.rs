//! The only source of randomness in raft-core, and the one generator the rest of the
//! workspace uses too (the engine's in-process network and reconnect backoff, the test
//! harness, the jepsen test, the benchmarks, `keel demo`): a seeded SplitMix64.
//!
//! Written out rather than taken from a crate so a seed replays bit-for-bit across
//! dependency upgrades, which the simulation's replayable seeds (and the seeds of
//! regression tests elsewhere) depend on. Not for anything that needs unpredictability.

/// A small deterministic pseudo-random generator (SplitMix64): the same seed gives the
/// same sequence, on every platform and in every version. `Default` is seed 0.
#[derive(Debug, Clone, Default)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi)`; `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `p` (0.0 ..= 1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits give a uniform float in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        assert_eq!(Rng::new(1).range(5, 5), 5);
    }

    #[test]
    fn the_sequence_is_splitmix64_and_does_not_change() {
        // SplitMix64's published first outputs for seed 0: seeds recorded in tests and
        // bug reports replay only while these hold.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
