//! Seeded randomized simulation of a raft-core cluster under crashes, partitions and a
//! lossy, duplicating, reordering network; see `sim/mod.rs` for the model and the
//! invariants checked.
//!
//! * `cargo test -p keel-raft --test simulation` runs seeds `0..3000`, split over four
//!   tests so they run in parallel.
//! * `KEEL_SIM_SEEDS=N` runs seeds `0..N` instead (`KEEL_SIM_SEED_START=S` shifts the
//!   range); for millions of seeds prefer the release-built example:
//!   `cargo run --release -p keel-raft --example simulate -- --seeds 1000000`.
//! * `KEEL_SIM_SEED=S` replays exactly seed `S` with a verbose trace (run with
//!   `--nocapture`); `KEEL_SIM_NODES=N` overrides the cluster size.

mod sim;

use sim::{failure_report, run_seed, Options, Stats};

const DEFAULT_SEEDS: u64 = 3000;
const PARTS: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn nodes_override() -> Option<usize> {
    env_u64("KEEL_SIM_NODES").map(|n| n as usize)
}

/// Runs this part's share of the seeds; the first failure panics with its replay command.
fn run_part(part: u64) {
    if std::env::var("KEEL_SIM_SEED").is_ok() {
        // A replay run: only `replay_seed_from_env` does anything.
        return;
    }
    let n = env_u64("KEEL_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let start = env_u64("KEEL_SIM_SEED_START").unwrap_or(0);
    let nodes = nodes_override();
    let mut total = Stats::default();
    for seed in (start..start + n).filter(|s| s % PARTS == part) {
        let opts = Options {
            seed,
            nodes,
            verbose: false,
        };
        match run_seed(&opts) {
            Ok(s) => total.merge(&s),
            Err(e) => panic!("{}", failure_report(seed, nodes, &e)),
        }
    }
    eprintln!("simulation part {part}/{PARTS}: {}", total.summary());
}

#[test]
fn random_seeds_part_0() {
    run_part(0);
}

#[test]
fn random_seeds_part_1() {
    run_part(1);
}

#[test]
fn random_seeds_part_2() {
    run_part(2);
}

#[test]
fn random_seeds_part_3() {
    run_part(3);
}

/// `KEEL_SIM_SEED=S cargo test -p keel-raft --test simulation replay_seed_from_env --
/// --nocapture` replays one seed with a trace of every step, message and event.
#[test]
fn replay_seed_from_env() {
    let Some(seed) = env_u64("KEEL_SIM_SEED") else {
        return;
    };
    let nodes = nodes_override();
    let opts = Options {
        seed,
        nodes,
        verbose: true,
    };
    match run_seed(&opts) {
        Ok(s) => println!("seed {seed} passed: {}", s.summary()),
        Err(e) => panic!("{}", failure_report(seed, nodes, &e)),
    }
}

// ---- regression seeds: each found a bug, fixed in raft-core/src ----

/// A follower in `Replicate` whose whole inflight window of appends was dropped stayed
/// wedged forever: heartbeat responses called `send_append`, which saw the full window
/// and sent nothing. Fixed by freeing one inflight slot on a heartbeat response
/// (`Raft::handle_heartbeat_response`, `Inflights::free_first_one`), as etcd and raft-rs
/// do. Failed the liveness check (max_inflight_msgs 4, lossy network).
#[test]
fn regression_seed_5() {
    sim::check_seed(5);
}

/// The same inflight-window wedge with a window of 3 and a partition.
#[test]
fn regression_seed_43() {
    sim::check_seed(43);
}
