//! keel's main job today: a seeded, randomized simulation of a Raft group under crashes,
//! partitions and a lossy, duplicating, reordering network, checking Raft's safety
//! invariants after every step and liveness once the faults heal. The model and the
//! invariants are described in `tests/sim/mod.rs`, which this example shares with
//! `cargo test -p keel-raft --test simulation`.
//!
//! ```text
//! cargo run --release -p keel-raft --example simulate                      # 200 seeds
//! cargo run --release -p keel-raft --example simulate -- --seeds 1000000   # many seeds
//! cargo run --release -p keel-raft --example simulate -- --seed 42         # replay one, traced
//! ```
//!
//! Exits 1 on an invariant violation (printing the seed and how to replay it), 2 on a
//! usage error.

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::process::ExitCode;
use std::time::Instant;

use sim::{failure_report, run_seed, Options, Stats};

const USAGE: &str = "\
usage: simulate [--seeds N] [--start S] [--seed S] [--nodes N] [--jobs J] [--batch B]
  --seeds N   run N seeds (default 200), starting at --start (default 0)
  --seed S    replay only seed S with a verbose trace of every step and message
  --nodes N   override the cluster size (otherwise 3-7, chosen per seed)
  --jobs J    worker threads (default: available parallelism)
  --batch B   seeds per printed summary line (default: max(seeds / 10, 100))";

struct Args {
    seeds: u64,
    start: u64,
    seed: Option<u64>,
    nodes: Option<usize>,
    jobs: usize,
    batch: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 200,
        start: 0,
        seed: None,
        nodes: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        batch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = value
            .parse::<u64>()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--seeds" => args.seeds = num,
            "--start" => args.start = num,
            "--seed" => args.seed = Some(num),
            "--nodes" if num >= 1 => args.nodes = Some(num as usize),
            "--jobs" if num >= 1 => args.jobs = num as usize,
            "--batch" if num >= 1 => args.batch = Some(num),
            _ => return Err(format!("unknown or invalid option {flag} {value}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("simulate: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let opts = Options {
            seed,
            nodes: args.nodes,
            verbose: true,
        };
        return match run_seed(&opts) {
            Ok(s) => {
                println!("seed {seed} passed: {}", s.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", failure_report(seed, args.nodes, &e));
                ExitCode::from(1)
            }
        };
    }

    // Keep the per-seed panic output of the default hook out of a long run: failures
    // are reported with their replay command below.
    std::panic::set_hook(Box::new(|_| {}));
    let batch = args.batch.unwrap_or((args.seeds / 10).max(100));
    let end = args.start + args.seeds;
    let started = Instant::now();
    let mut total = Stats::default();
    let mut lo = args.start;
    while lo < end {
        let hi = (lo + batch).min(end);
        let jobs = args.jobs.max(1) as u64;
        let results: Vec<Result<Stats, (u64, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..jobs)
                .map(|j| {
                    let nodes = args.nodes;
                    s.spawn(move || {
                        let mut stats = Stats::default();
                        let mut seed = lo + j;
                        while seed < hi {
                            let opts = Options {
                                seed,
                                nodes,
                                verbose: false,
                            };
                            match run_seed(&opts) {
                                Ok(st) => stats.merge(&st),
                                Err(e) => return Err((seed, e)),
                            }
                            seed += jobs;
                        }
                        Ok(stats)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker thread panicked"))
                .collect()
        });
        let mut batch_stats = Stats::default();
        let mut failures: Vec<(u64, String)> = Vec::new();
        for r in results {
            match r {
                Ok(s) => batch_stats.merge(&s),
                Err(f) => failures.push(f),
            }
        }
        if let Some((seed, e)) = failures.into_iter().min_by_key(|(s, _)| *s) {
            println!("{}", failure_report(seed, args.nodes, &e));
            println!(
                "FAILED after {:.1}s; seeds before this batch passed: {}",
                started.elapsed().as_secs_f64(),
                total.summary()
            );
            return ExitCode::from(1);
        }
        total.merge(&batch_stats);
        println!(
            "seeds {lo}..{hi} ok ({:.1}s): {}",
            started.elapsed().as_secs_f64(),
            batch_stats.summary()
        );
        lo = hi;
    }
    println!(
        "all {} seeds passed in {:.1}s: {}",
        total.seeds,
        started.elapsed().as_secs_f64(),
        total.summary()
    );
    ExitCode::SUCCESS
}
