//! Jepsen-style tests: concurrent clients put, get and delete a few keys through every
//! node of an in-process cluster while a nemesis crashes nodes (power loss on their
//! simulated disks, then a restart from what the disk kept), isolates the leader,
//! splits the cluster into a minority and a majority, and drops messages. Afterwards,
//! with the network healed and every node back: each key's history must be
//! linearizable (Wing–Gong–Lowe, `common::linearizable`), the final value of each key
//! must be one an acknowledged write allows (no acknowledged write lost), and every
//! node must hold the same value for every key at the same applied index.
//!
//! Seeded: `KEEL_JEPSEN_SEED` picks the seed (the nemesis schedule, every client's
//! choices, message drops, crash damage and raft's elections derive from it; thread
//! timing does not, so a replay is close, not exact). `KEEL_JEPSEN_ROUNDS` sets the
//! number of nemesis rounds (about a second each). A failure prints the seed.
//!
//! Each run is made on keel's key-value store (`kv::`) and on the harness's
//! `Registers` (`registers::`), a state machine of its own (own command encoding,
//! responses and snapshot format, snapshots written in place): the same nemesis and
//! checks, so nothing in the pipeline may favour the built-in store.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::linearizable::{check_all, check_final, check_key, KvOp, Outcome, Record};
use common::Model;
use keel_engine::testing::{Cluster, KvClient, KvModel, Options, Storage, Tweak};
use keel_engine::{Config, Error};
use keel_fs::{CrashMode, SimFault};

// How long a client waits for one operation: mostly long enough for an election, and
// sometimes short, so writes also time out while they are still in flight.
const OP_TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(1_500),
    Duration::from_millis(1_500),
];

/// The test's only randomness: raft-core's seeded generator, with the draws this test
/// makes. (The same sequence as the hand-written SplitMix64 it replaced, so a seed
/// printed by an older run still replays.)
struct Rng(keel_raft::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(keel_raft::Rng::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.range(0, n.max(1))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.0.range(lo, hi + 1))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn key_bytes(k: usize) -> Vec<u8> {
    format!("jepsen-{k}").into_bytes()
}

fn parse_value(v: Option<Vec<u8>>) -> Option<u64> {
    // A value no put wrote (u64::MAX) makes the checker report the history.
    v.map(|b| {
        std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX)
    })
}

/// A write's outcome as the checker must treat it. Only errors raised before the entry
/// could reach the log, or once another entry took its place, are certain failures.
/// `Stopped` is not: the node may have stopped after proposing it.
fn write_outcome(r: &keel_engine::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(Error::NotLeader { .. } | Error::Busy(_) | Error::ProposalLost(_)) => Outcome::Failed,
        Err(Error::TooLarge { .. } | Error::Config(_)) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

// Node settings drawn from the seed. Snapshots, compaction and segment rollover all
// happen during a run, so crashed nodes recover through them and lagging ones catch up
// through snapshots; small messages and windows exercise flow control.
fn tweak(rng: &mut Rng) -> (Tweak, String) {
    let snapshot_every = rng.pick(&[16u64, 64, 64, 1_000]);
    let catch_up_entries = rng.pick(&[4u64, 16]);
    let max_size_per_msg_bytes = rng.pick(&[512u64, 1 << 20]);
    let max_inflight_msgs = rng.pick(&[2usize, 256]);
    let max_inflight_readies = rng.pick(&[1usize, 64]);
    // Tiny queues: writes refused as Busy, callers waiting for room, inbound messages
    // dropped at a full inbox.
    let max_pending_requests = rng.pick(&[3usize, 65_536, 65_536]);
    let request_queue_len = rng.pick(&[2usize, 4_096]);
    let inbox_queue_len = rng.pick(&[8usize, 4_096]);
    let about = format!(
        "snapshot_every {snapshot_every}, catch_up_entries {catch_up_entries}, \
         max_size_per_msg_bytes {max_size_per_msg_bytes}, max_inflight_msgs \
         {max_inflight_msgs}, max_inflight_readies {max_inflight_readies}, \
         max_pending_requests {max_pending_requests}, request_queue_len \
         {request_queue_len}, inbox_queue_len {inbox_queue_len}"
    );
    let tweak = move |mut c: Config| {
        c.snapshot_every = snapshot_every;
        c.catch_up_entries = catch_up_entries;
        c.max_size_per_msg_bytes = max_size_per_msg_bytes;
        c.max_inflight_msgs = max_inflight_msgs;
        c.max_inflight_readies = max_inflight_readies;
        c.max_pending_requests = max_pending_requests;
        c.request_queue_len = request_queue_len;
        c.inbox_queue_len = inbox_queue_len;
        c.wal_segment_size_bytes = 64 << 10;
        c
    };
    (Arc::new(tweak), about)
}

struct Plan {
    nodes: u64,
    clients: usize,
    keys: usize,
    rounds: u64,
    seed: u64,
}

fn client<M: KvModel>(
    c: &Cluster<M>,
    me: usize,
    seed: u64,
    keys: usize,
    stop: &AtomicBool,
) -> Vec<Record> {
    let mut rng = Rng::new(seed);
    let mut records = Vec::new();
    let mut node = rng.pick(c.ids());
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(db) = c.node(node) else {
            node = rng.pick(c.ids());
            // Pacing: a client of a down node tries another one a moment later.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let key = rng.below(keys as u64) as usize;
        let k = key_bytes(key);
        let roll = rng.below(100);
        let timeout = rng.pick(&OP_TIMEOUTS);
        let call = Instant::now();
        let (op, outcome) = if roll < 45 {
            seq += 1;
            // Unique within the run: the client in the high bits, its count below.
            let v = ((me as u64 + 1) << 40) | seq;
            let r = db.put_timeout(&k, v.to_string().as_bytes(), timeout);
            (KvOp::Put(v), write_outcome(&r))
        } else if roll < 52 {
            let r = db.delete_timeout(&k, timeout);
            (KvOp::Delete, write_outcome(&r))
        } else {
            match db.get_timeout(&k, timeout) {
                Ok(v) => (KvOp::Get(parse_value(v)), Outcome::Ok),
                Err(_) => (KvOp::Get(None), Outcome::Failed),
            }
        };
        let ret = Instant::now();
        drop(db);
        let ok = outcome == Outcome::Ok;
        records.push(Record {
            client: me,
            key,
            op,
            call,
            ret,
            outcome,
        });
        if ok {
            // A little think time keeps the per-key histories checkable.
            std::thread::sleep(rng.millis(0, 3));
        } else {
            // This node may be cut off or down: try another one after a pause.
            node = rng.pick(c.ids());
            std::thread::sleep(rng.millis(5, 25));
        }
    }
    records
}

// One nemesis round: a fault, held for a while, then undone. Returns what it did.
fn nemesis_round<M: KvModel>(c: &Cluster<M>, rng: &mut Rng) -> Result<String, String> {
    let n = c.ids().len();
    let f = (n - 1) / 2;
    let leader = c.leader().map(|db| db.replica().id());
    let target = |rng: &mut Rng| match leader {
        Some(l) if rng.below(2) == 0 => l,
        _ => rng.pick(c.ids()),
    };
    // How long the fault lasts. The sleeps below hold a fault while the clients run
    // against it: the passing time is the test, there is nothing to wait for.
    let hold = rng.millis(250, 900);
    let restart = |ids: &[u64]| -> Result<(), String> {
        for &id in ids {
            c.start(id)
                .map_err(|e| format!("node {id} failed to restart: {e}"))?;
        }
        Ok(())
    };
    let what = match rng.below(10) {
        0 => {
            let id = target(rng);
            // Now and then a clean stop instead (`close`: drain, then sync).
            let clean = rng.below(4) == 0;
            if clean {
                c.stop(id)
                    .map_err(|e| format!("node {id} failed to close: {e}"))?;
            } else {
                c.crash(id, CrashMode::Random).map_err(|e| e.to_string())?;
            }
            std::thread::sleep(hold);
            restart(&[id])?;
            format!("{} {id}", if clean { "restart" } else { "crash" })
        }
        1 => {
            let Some(l) = leader else {
                std::thread::sleep(hold);
                return Ok("no leader to isolate".into());
            };
            let others: Vec<u64> = c.ids().iter().copied().filter(|&i| i != l).collect();
            c.net().partition(&[l], &others);
            std::thread::sleep(hold);
            c.net().heal();
            format!("isolate leader {l}")
        }
        2 => {
            let mut ids = c.ids().to_vec();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let k = 1 + rng.below(f as u64) as usize;
            let (minority, majority) = ids.split_at(k);
            c.net().partition(minority, majority);
            std::thread::sleep(hold);
            c.net().heal();
            format!("split {minority:?} | {majority:?}")
        }
        3 => {
            let ppm = 50_000 + rng.below(250_000);
            c.net().set_drop_rate(ppm as f64 / 1e6);
            std::thread::sleep(hold);
            c.net().heal();
            format!("drop {:.1}%", ppm as f64 / 1e4)
        }
        4 => {
            // Up to f nodes lose power together (the quorum survives).
            let k = 1 + rng.below(f as u64) as usize;
            let mut down = Vec::new();
            while down.len() < k {
                let id = target(rng);
                if !down.contains(&id) {
                    down.push(id);
                }
            }
            for &id in &down {
                c.crash(id, CrashMode::Random).map_err(|e| e.to_string())?;
            }
            std::thread::sleep(hold);
            restart(&down)?;
            format!("crash {down:?}")
        }
        6 => {
            // Slow and reordered: messages wait out a delay, and those still waiting
            // when it is lifted arrive after newer ones.
            let delay_ms = 1 + rng.below(15);
            c.net().set_delay_ms(delay_ms);
            std::thread::sleep(hold);
            c.net().set_delay_ms(0);
            format!("delay {delay_ms} ms")
        }
        7 => {
            // Every node loses power at once; only synced data survives anywhere.
            let all = c.ids().to_vec();
            for &id in &all {
                c.crash(id, CrashMode::Random).map_err(|e| e.to_string())?;
            }
            std::thread::sleep(hold / 4);
            restart(&all)?;
            "crash all".to_string()
        }
        8 => {
            // A disk fails a write or a sync: the node must stop rather than go on
            // (a failed fsync leaves the page cache in an unknown state), and it
            // comes back after the power cycle that implies.
            let id = target(rng);
            let after_ops = rng.below(20);
            let fault = rng.pick(&[SimFault::Eio, SimFault::Enospc]);
            if rng.below(2) == 0 {
                c.sim_fs(id)
                    .ok_or("no simulated disk")?
                    .fail_sync_after(after_ops, fault);
            } else {
                c.sim_fs(id)
                    .ok_or("no simulated disk")?
                    .fail_write_after(after_ops, fault);
            }
            std::thread::sleep(hold);
            c.crash(id, CrashMode::Random).map_err(|e| e.to_string())?;
            restart(&[id])?;
            format!("disk fault on {id} ({fault:?} after {after_ops} ops)")
        }
        _ => {
            // The leader is cut off, and a node of the majority crashes meanwhile.
            let Some(l) = leader else {
                std::thread::sleep(hold);
                return Ok("no leader".into());
            };
            let others: Vec<u64> = c.ids().iter().copied().filter(|&i| i != l).collect();
            c.net().partition(&[l], &others);
            std::thread::sleep(hold / 2);
            let victim = rng.pick(&others);
            c.crash(victim, CrashMode::Random)
                .map_err(|e| e.to_string())?;
            std::thread::sleep(hold / 2);
            c.net().heal();
            restart(&[victim])?;
            format!("isolate leader {l}, crash {victim}")
        }
    };
    Ok(what)
}

struct Summary {
    nemesis: Vec<String>,
    ops: usize,
    acked_writes: usize,
    unknown_writes: usize,
    reads: usize,
    checked_ops: usize,
    max_concurrency: usize,
}

fn run<M: KvModel>(plan: &Plan) -> Result<Summary, String> {
    // The node count is mixed in so the 3- and 5-node runs of one seed differ.
    let mut rng = Rng::new(plan.seed ^ plan.nodes.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (tweak, settings) = tweak(&mut rng);
    println!("settings: {settings}");
    let options = Options::new(plan.nodes)
        .storage(Storage::Simulated)
        .seed(plan.seed)
        .tweak(move |config| tweak(config));
    let c = Cluster::<M>::open_model(options).map_err(|e| e.to_string())?;
    c.try_wait_leader(Duration::from_secs(10))
        .map_err(|_| "no first leader")?;
    let stop = AtomicBool::new(false);
    let client_seeds: Vec<u64> = (0..plan.clients).map(|_| rng.next()).collect();
    let mut log = Vec::new();
    let (records, nemesis) = std::thread::scope(|s| {
        let clients: Vec<_> = client_seeds
            .iter()
            .enumerate()
            .map(|(me, &seed)| {
                let (c, stop) = (&c, &stop);
                s.spawn(move || client(c, me, seed, plan.keys, stop))
            })
            .collect();
        let nemesis = (|| -> Result<(), String> {
            // A calm start, so every key has some history before the first fault.
            std::thread::sleep(Duration::from_millis(300));
            for round in 0..plan.rounds {
                let what = nemesis_round(&c, &mut rng)?;
                log.push(format!("round {round}: {what}"));
                // A quiet spell between faults, of random length.
                std::thread::sleep(rng.millis(150, 400));
            }
            Ok(())
        })();
        // Heal everything and let the clients run on a healthy cluster for a moment.
        c.net().heal();
        let mut restarted = Ok(());
        for id in c.down() {
            if let Err(e) = c.start(id) {
                restarted = Err(format!("node {id} failed to restart: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut records = Vec::new();
        for h in clients {
            records.extend(h.join().expect("client thread panicked"));
        }
        (records, nemesis.and(restarted))
    });
    let context = |e: String| format!("{e}\nnemesis: {log:#?}");
    nemesis.map_err(context)?;
    let mut records = records;

    // Every node back, one leader, everything applied everywhere.
    c.try_wait_leader(Duration::from_secs(15))
        .map_err(|_| context("no leader after healing".into()))?;
    // A final read per key through a linearizable get, part of the history.
    for key in 0..plan.keys {
        let leader = c
            .try_wait_leader(Duration::from_secs(10))
            .map_err(|_| context("no leader for the final reads".into()))?;
        let db = c.node(leader.id).ok_or("leader went away")?;
        let call = Instant::now();
        let v = db
            .get_timeout(&key_bytes(key), Duration::from_secs(10))
            .map_err(|e| context(format!("final read of key {key}: {e}")))?;
        records.push(Record {
            client: usize::MAX,
            key,
            op: KvOp::Get(parse_value(v)),
            call,
            ret: Instant::now(),
            outcome: Outcome::Ok,
        });
    }
    let applied = c
        .try_wait_settled(Duration::from_secs(20))
        .map_err(|e| context(e.to_string()))?;
    for key in 0..plan.keys {
        let k = key_bytes(key);
        let values: Vec<(u64, Option<u64>)> = c
            .ids()
            .iter()
            .map(|&id| {
                let db = c.node(id).expect("every node runs");
                (id, parse_value(db.get_local(&k).expect("local read")))
            })
            .collect();
        if values.iter().any(|(_, v)| *v != values[0].1) {
            return Err(context(format!(
                "nodes differ on key {key} at applied index {applied}: {values:?}"
            )));
        }
        // No acknowledged write lost: the value the nodes agree on is one the
        // history allows.
        let of_key: Vec<&Record> = records
            .iter()
            .filter(|r| r.key == key && r.client != usize::MAX)
            .collect();
        check_final(&of_key, values[0].1).map_err(|e| context(format!("key {key}: {e}")))?;
    }
    let stats = check_all(&records).map_err(context)?;
    let writes = records.iter().filter(|r| !matches!(r.op, KvOp::Get(_)));
    Ok(Summary {
        nemesis: log,
        ops: records.len(),
        acked_writes: writes.clone().filter(|r| r.outcome == Outcome::Ok).count(),
        unknown_writes: writes.filter(|r| r.outcome == Outcome::Unknown).count(),
        reads: records
            .iter()
            .filter(|r| matches!(r.op, KvOp::Get(_)) && r.outcome == Outcome::Ok)
            .count(),
        checked_ops: stats.values().map(|s| s.ops).sum(),
        max_concurrency: stats.values().map(|s| s.max_concurrency).max().unwrap_or(0),
    })
}

// Clients stay few (and keys several) so that a key rarely has more than 8 operations
// in flight, counting the open-ended ones: the search is exponential in that number.
fn jepsen<M: Model>(
    name: &str,
    nodes: u64,
    clients: usize,
    default_rounds: u64,
    default_seed: u64,
) {
    let name = format!("{}::{name}", M::MODULE);
    let seed = env_u64("KEEL_JEPSEN_SEED").unwrap_or(default_seed);
    let rounds = env_u64("KEEL_JEPSEN_ROUNDS").unwrap_or(default_rounds);
    let plan = Plan {
        nodes,
        clients,
        keys: 5,
        rounds,
        seed,
    };
    println!("{name}: KEEL_JEPSEN_SEED={seed} KEEL_JEPSEN_ROUNDS={rounds}");
    let started = Instant::now();
    match run::<M>(&plan) {
        Ok(s) => {
            println!(
                "{name}: {} ops ({} acknowledged writes, {} unknown, {} reads), {} checked, \
                 max {} in flight per key, {:.1} s",
                s.ops,
                s.acked_writes,
                s.unknown_writes,
                s.reads,
                s.checked_ops,
                s.max_concurrency,
                started.elapsed().as_secs_f64()
            );
            println!("{name}: nemesis: {}", s.nemesis.join("; "));
            assert!(
                s.acked_writes > 0 && s.reads > 0,
                "{name}: the clients did nothing"
            );
        }
        Err(e) => panic!(
            "{name} failed; replay with KEEL_JEPSEN_SEED={seed} KEEL_JEPSEN_ROUNDS={rounds} \
             cargo test -p keel-engine --test jepsen {name}\n{e}"
        ),
    }
}

// The two runs, on any state machine; the tests below pick the default number of
// nemesis rounds and the default seed.
fn three_nodes<M: Model>(default_rounds: u64, default_seed: u64) {
    let name = "three_nodes_under_crashes_partitions_and_loss";
    jepsen::<M>(name, 3, 4, default_rounds, default_seed);
}

fn five_nodes<M: Model>(default_rounds: u64, default_seed: u64) {
    let name = "five_nodes_under_crashes_partitions_and_loss";
    jepsen::<M>(name, 5, 5, default_rounds, default_seed);
}

mod kv {
    use super::*;
    use keel_engine::state_machine::KvStore;

    #[test]
    fn three_nodes_under_crashes_partitions_and_loss() {
        three_nodes::<KvStore>(10, 1);
    }

    #[test]
    fn five_nodes_under_crashes_partitions_and_loss() {
        five_nodes::<KvStore>(8, 2);
    }
}

// The same runs on `Registers`, half as long by default to keep `cargo test` quick
// (the pipeline under the nemesis is the key-value runs' too; what is new here is the
// state machine's own encoding, responses and snapshots), on seeds whose drawn
// settings snapshot every 16 entries. KEEL_JEPSEN_ROUNDS and KEEL_JEPSEN_SEED set
// both state machines' runs.
mod registers {
    use super::*;
    use keel_engine::testing::Registers;

    #[test]
    fn three_nodes_under_crashes_partitions_and_loss() {
        three_nodes::<Registers>(5, 1004);
    }

    #[test]
    fn five_nodes_under_crashes_partitions_and_loss() {
        five_nodes::<Registers>(4, 1007);
    }
}

// The checker itself: it must reject what is not linearizable, or the tests above
// could not fail.
#[test]
fn the_checker_rejects_a_stale_read_and_a_lost_write() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let rec = |client, op, call, ret, outcome| Record {
        client,
        key: 0,
        op,
        call: at(call),
        ret: at(ret),
        outcome,
    };
    // put 1, then put 2, then a read of 1: stale.
    let stale = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Ok),
        rec(1, KvOp::Put(2), 20, 30, Outcome::Ok),
        rec(2, KvOp::Get(Some(1)), 40, 50, Outcome::Ok),
    ];
    assert!(check_key(&stale.iter().collect::<Vec<_>>()).is_err());
    // The same read overlapping the second put is fine.
    let overlapping = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Ok),
        rec(1, KvOp::Put(2), 20, 60, Outcome::Ok),
        rec(2, KvOp::Get(Some(1)), 40, 50, Outcome::Ok),
    ];
    assert!(check_key(&overlapping.iter().collect::<Vec<_>>()).is_ok());
    // A write whose outcome is unknown may show up much later...
    let late = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Unknown),
        rec(1, KvOp::Put(2), 20, 30, Outcome::Ok),
        rec(2, KvOp::Get(Some(2)), 40, 50, Outcome::Ok),
        rec(2, KvOp::Get(Some(1)), 60, 70, Outcome::Ok),
    ];
    assert!(check_key(&late.iter().collect::<Vec<_>>()).is_ok());
    // ...but one that certainly failed may not.
    let failed = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Failed),
        rec(2, KvOp::Get(Some(1)), 60, 70, Outcome::Ok),
    ];
    assert!(check_key(&failed.iter().collect::<Vec<_>>()).is_err());
    // A delete whose outcome is unknown explains a later absent read.
    let deleted = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Ok),
        rec(1, KvOp::Delete, 20, 30, Outcome::Unknown),
        rec(2, KvOp::Get(None), 60, 70, Outcome::Ok),
    ];
    assert!(check_key(&deleted.iter().collect::<Vec<_>>()).is_ok());
    // The final value must not forget the last acknowledged write.
    let writes = [
        rec(0, KvOp::Put(1), 0, 10, Outcome::Ok),
        rec(1, KvOp::Put(2), 20, 30, Outcome::Ok),
        rec(1, KvOp::Put(3), 40, 50, Outcome::Unknown),
    ];
    let w: Vec<&Record> = writes.iter().collect();
    assert!(check_final(&w, Some(1)).is_err());
    assert!(check_final(&w, Some(2)).is_ok());
    assert!(check_final(&w, Some(3)).is_ok());
    assert!(check_final(&w, None).is_err());
}
