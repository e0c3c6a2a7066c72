//! `keel demo`: a 3-node cluster in this process (real disk, fsync on) under a short
//! write/read workload, with a follower and then the leader stopped without warning and
//! restarted along the way. It prints what happened — leaders over time, throughput,
//! latency percentiles, what each restarted node recovered — and ends by checking that
//! every acknowledged write is readable on every node.
//!
//! A stop here is not a crash: the node's `Db` is dropped, which ends its threads (the
//! persist stage finishing the writes already queued) and takes it off the in-process
//! network, with no leadership hand-over. Since every acknowledged write was synced
//! first, a restart recovers what it would after a crash, but a torn log tail is never
//! produced; real crashes (`kill -9` of `keel serve`, unsynced data dropped) are what
//! `keel cluster`, the engine's crash tests and the `serve_faults` tests exercise.
//!
//! Exit 0 when every check passed, 1 when one failed, 2 when the demo could not run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_engine::{Db, Role};

use crate::bench::cluster::{cluster_error, start_cluster};
use crate::bench::{num, BenchDir};
use crate::error::{CliError, Result, Status};
use crate::output::Out;
use keel_engine::testing::{wait_until, Cluster, Leader};

/// What `keel demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the nodes' data goes; a temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// Seconds of workload (five equal phases; waits for elections come on top).
    pub duration_secs: f64,
    /// Client threads.
    pub clients: usize,
    /// Bytes per value.
    pub size: usize,
}

const NODES: u64 = 3;
/// Timeout of one put or get of the workload.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for an election, a catch-up or convergence.
const WAIT: Duration = Duration::from_secs(30);
/// Every this many writes a client reads a key it wrote back from some node.
const READ_EVERY: u64 = 4;
/// Pause after a failed request.
const BACKOFF: Duration = Duration::from_millis(20);

fn key(c: usize, i: u64) -> Vec<u8> {
    format!("demo/{c:03}/{i:08}").into_bytes()
}

fn value(c: usize, i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{c}:{i}:").into_bytes();
    // Filler derived from the key, so a value written for another key never matches.
    let mut rng = keel_raft::Rng::new((c as u64) << 32 ^ i);
    while v.len() < size {
        v.push(b'a' + rng.range(0, 26) as u8);
    }
    v
}

/// Prints timestamped lines: above the progress bar on a terminal, else to stdout.
struct Reporter {
    t0: Instant,
    // Taken (and cleared) once the workload ends, before the summary.
    bar: Mutex<Option<ProgressBar>>,
    out: Mutex<Out>,
}

impl Reporter {
    fn say(&self, text: &str) -> Result<()> {
        let line = format!("[{:>5.1}s] {text}", self.t0.elapsed().as_secs_f64());
        self.plain(&line)
    }

    fn plain(&self, line: &str) -> Result<()> {
        match &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(bar) => {
                bar.println(line);
                Ok(())
            }
            None => {
                let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
                out.line(line)?;
                out.flush()
            }
        }
    }

    fn finish_bar(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    fn tick(&self, phase: &str, acked: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.set_position((self.t0.elapsed().as_secs_f64() * 10.0) as u64);
            bar.set_message(format!("{phase}, {acked} writes acknowledged"));
        }
    }
}

/// What the clients share.
struct Shared<'a> {
    cluster: &'a Cluster,
    stop: AtomicBool,
    acked: AtomicU64,
    errors: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
    // Linearizable reads that missed an acknowledged write (must stay empty).
    stale_reads: Mutex<Vec<String>>,
    size: usize,
}

/// What one client did.
struct ClientResult {
    acked: Vec<u64>,
    latency_ns: Histogram<u64>,
}

fn client(c: usize, s: &Shared<'_>) -> ClientResult {
    let mut acked = Vec::new();
    let mut lat = keel_load::new_histogram();
    let mut i = 0u64;
    // Bounded: runs until the demo sets `stop`; every request has a timeout.
    while !s.stop.load(Ordering::Relaxed) {
        let Some(leader) = s.cluster.leader() else {
            std::thread::sleep(BACKOFF);
            continue;
        };
        i += 1;
        let t = Instant::now();
        let put = leader.put_timeout(&key(c, i), &value(c, i, s.size), REQUEST_TIMEOUT);
        drop(leader);
        match put {
            Ok(()) => {
                keel_load::record(&mut lat, t.elapsed());
                acked.push(i);
                s.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Its outcome is unknown (it may still apply): never checked.
                s.errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(BACKOFF);
                continue;
            }
        }
        if i.is_multiple_of(READ_EVERY) {
            read_back(c, i, s);
        }
    }
    ClientResult {
        acked,
        latency_ns: lat,
    }
}

// Reads key (c, i), just acknowledged, from one of the running nodes (in turn),
// linearizably: it must be there.
fn read_back(c: usize, i: u64, s: &Shared<'_>) {
    let nodes = s.cluster.running();
    if nodes.is_empty() {
        return;
    }
    let db = &nodes[(i / READ_EVERY) as usize % nodes.len()];
    s.reads.fetch_add(1, Ordering::Relaxed);
    match db.get_timeout(&key(c, i), REQUEST_TIMEOUT) {
        Ok(Some(v)) if v == value(c, i, s.size) => {}
        Ok(other) => {
            let got = if other.is_some() {
                "another value"
            } else {
                "nothing"
            };
            s.stale_reads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "node {} returned {got} for acknowledged key {}",
                    db.id(),
                    String::from_utf8_lossy(&key(c, i))
                ));
        }
        // A node without a leader, or stopping: the read is refused, not wrong.
        Err(_) => {
            s.read_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Leader changes seen by the monitor: (seconds since start, leader or none, term).
type LeaderLog = Mutex<Vec<(f64, Option<u64>, u64)>>;

fn monitor(cluster: &Cluster, stop: &AtomicBool, t0: Instant, log: &LeaderLog) {
    let mut last: Option<(Option<u64>, u64)> = None;
    // Bounded: runs until the demo sets `stop`.
    while !stop.load(Ordering::Relaxed) {
        let now = cluster
            .running()
            .iter()
            .map(|db| db.status())
            .filter(|st| st.role == Role::Leader)
            .max_by_key(|st| st.term)
            .map_or((None, 0), |st| (Some(st.id), st.term));
        if last != Some(now) {
            // Record losing a leader only once a leader was seen.
            if now.0.is_some() || last.is_some() {
                log.lock().unwrap_or_else(|e| e.into_inner()).push((
                    t0.elapsed().as_secs_f64(),
                    now.0,
                    now.1,
                ));
            }
            last = Some(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A failed check: what the summary says and whether the exit code turns 1.
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failed.push(what.into());
        }
    }
}

/// Runs `keel demo`.
pub fn run(o: &DemoOptions) -> Result<Status> {
    if !(o.duration_secs >= 1.0 && o.duration_secs <= 3600.0) {
        return Err(CliError::Usage(format!(
            "--duration {} is out of range; pass 1..=3600 seconds",
            o.duration_secs
        )));
    }
    if o.clients == 0 || o.clients > 256 {
        return Err(CliError::Usage(format!(
            "--clients {} is out of range; pass 1..=256",
            o.clients
        )));
    }
    crate::bench::check_size(o.size)?;
    if o.size > crate::bench::cluster::MAX_VALUE_BYTES {
        return Err(CliError::Usage(format!(
            "--size {} is above the engine's entry limit; pass at most {} bytes",
            o.size,
            crate::bench::cluster::MAX_VALUE_BYTES
        )));
    }
    if o.size < 24 {
        return Err(CliError::Usage(format!(
            "--size {} is too small for the demo's self-describing values; pass at least 24",
            o.size
        )));
    }
    let dir = BenchDir::prepare(o.dir.as_deref())?;
    let t0 = Instant::now();
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = ProgressBar::new((o.duration_secs * 10.0) as u64);
        let style = ProgressStyle::with_template("[{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    });
    let r = Reporter {
        t0,
        bar: Mutex::new(bar),
        out: Mutex::new(Out::stdout()),
    };
    r.say(&format!(
        "starting a {NODES}-node cluster in {} (one process, in-process network, fsync on)",
        dir.path.display()
    ))?;
    let cluster = start_cluster(&dir.path, NODES)?;
    let outcome = demo(o, &cluster, &r);
    r.finish_bar();
    let closed = cluster.close().map_err(cluster_error);
    let status = outcome?;
    closed?;
    if dir.is_temporary() {
        r.plain("(the data directory is removed now; pass --dir to keep it)")?;
    }
    Ok(status)
}

fn demo(o: &DemoOptions, cluster: &Cluster, r: &Reporter) -> Result<Status> {
    let mut checks = Checks { failed: Vec::new() };
    let Ok(Leader { id: leader, term }) = cluster.try_wait_leader(WAIT) else {
        r.say("no leader was elected within 30 s")?;
        return Ok(Status::Damaged);
    };
    r.say(&format!("node {leader} is the leader (term {term})"))?;
    let shared = Shared {
        cluster,
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        read_errors: AtomicU64::new(0),
        stale_reads: Mutex::new(Vec::new()),
        size: o.size,
    };
    let monitor_stop = AtomicBool::new(false);
    let leaders: LeaderLog = Mutex::new(Vec::new());
    let phase = Duration::from_secs_f64(o.duration_secs / 5.0);
    let mut phase_rates: Vec<(String, u64, f64)> = Vec::new();
    let load_start = Instant::now();

    let (results, scenario) = std::thread::scope(|s| {
        let mon = s.spawn(|| monitor(cluster, &monitor_stop, r.t0, &leaders));
        let clients: Vec<_> = (0..o.clients)
            .map(|c| {
                let shared = &shared;
                s.spawn(move || client(c, shared))
            })
            .collect();
        r.say(&format!(
            "{} clients writing {} B values to the leader, reading every {READ_EVERY}th back from any node",
            o.clients, o.size
        ))
        .ok();
        let scenario = scenario(cluster, r, &shared, phase, &mut phase_rates, &mut checks);
        shared.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for h in clients {
            match h.join() {
                Ok(res) => results.push(Some(res)),
                Err(_) => results.push(None),
            }
        }
        monitor_stop.store(true, Ordering::Relaxed);
        let _ = mon.join();
        (results, scenario)
    });
    r.finish_bar();
    scenario?;
    let load_secs = load_start.elapsed().as_secs_f64();

    // Every acknowledged write must be on every node once they converged.
    let converged = cluster.try_wait_converged(WAIT).ok();
    checks.check(
        converged.is_some(),
        "the nodes did not apply everything committed within 30 s",
    );
    let mut latency = keel_load::new_histogram();
    let mut acked: Vec<(usize, u64)> = Vec::new();
    for (c, res) in results.iter().enumerate() {
        match res {
            Some(res) => {
                // Both auto-resize, so adding cannot fail.
                let _ = latency.add(&res.latency_ns);
                acked.extend(res.acked.iter().map(|&i| (c, i)));
            }
            None => checks.check(false, format!("client {c} panicked")),
        }
    }
    let mut missing_by_node = Vec::new();
    for db in cluster.running() {
        let missing = acked
            .iter()
            .filter(|&&(c, i)| {
                db.get_local(&key(c, i)).ok().flatten().as_deref() != Some(&value(c, i, o.size)[..])
            })
            .count();
        missing_by_node.push((db.id(), missing));
        checks.check(
            missing == 0,
            format!(
                "node {}: {missing} acknowledged writes are missing or wrong",
                db.id()
            ),
        );
    }
    let stale = shared
        .stale_reads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    checks.check(
        stale.is_empty(),
        format!(
            "{} linearizable reads missed an acknowledged write",
            stale.len()
        ),
    );
    checks.check(!acked.is_empty(), "no write was acknowledged");

    // The summary.
    r.plain("")?;
    r.plain("leaders over time:")?;
    for (t, id, term) in leaders.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        match id {
            Some(id) => r.plain(&format!("  {t:>6.1}s  node {id} (term {term})"))?,
            None => r.plain(&format!("  {t:>6.1}s  no leader"))?,
        }
    }
    r.plain("throughput (acknowledged writes/s):")?;
    for (name, n, secs) in &phase_rates {
        r.plain(&format!(
            "  {name:<28} {:>8}  ({n} in {secs:.1} s)",
            num(*n as f64 / secs.max(1e-9))
        ))?;
    }
    r.plain(&format!(
        "  {:<28} {:>8}  ({} in {load_secs:.1} s)",
        "overall",
        num(acked.len() as f64 / load_secs.max(1e-9)),
        acked.len()
    ))?;
    let q = |p: f64| num(latency.value_at_quantile(p) as f64 / 1000.0);
    r.plain(&format!(
        "write latency (put until applied on the leader): p50 {} µs, p99 {} µs, p99.9 {} µs",
        q(0.5),
        q(0.99),
        q(0.999)
    ))?;
    r.plain(&format!(
        "failed writes (outcome unknown, not checked): {}; read-backs: {} ({} refused while a node had no leader)",
        shared.errors.load(Ordering::Relaxed),
        shared.reads.load(Ordering::Relaxed),
        shared.read_errors.load(Ordering::Relaxed),
    ))?;
    for (id, missing) in &missing_by_node {
        r.plain(&format!(
            "node {id}: {} of {} acknowledged writes readable",
            acked.len() - missing,
            acked.len()
        ))?;
    }
    for s in stale.iter().take(5) {
        r.plain(&format!("stale read: {s}"))?;
    }
    if checks.failed.is_empty() {
        r.plain("check passed: every acknowledged write is readable on every node")?;
        Ok(Status::Ok)
    } else {
        for f in &checks.failed {
            r.plain(&format!("CHECK FAILED: {f}"))?;
        }
        Ok(Status::Damaged)
    }
}

/// Sleeps `d` while the bar moves; returns the writes acknowledged meanwhile.
fn phase_wait(r: &Reporter, s: &Shared<'_>, name: &str, d: Duration) -> u64 {
    let before = s.acked.load(Ordering::Relaxed);
    let end = Instant::now() + d;
    while Instant::now() < end {
        r.tick(name, s.acked.load(Ordering::Relaxed));
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    s.acked.load(Ordering::Relaxed) - before
}

/// Waits (at most [`WAIT`]) for one more acknowledged write; whether one came.
fn wait_for_a_write(s: &Shared<'_>) -> bool {
    let before = s.acked.load(Ordering::Relaxed);
    wait_until(WAIT, || {
        (s.acked.load(Ordering::Relaxed) > before).then_some(())
    })
    .is_some()
}

// Restarts node `id` and reports what it recovered and how long it took to catch up.
fn restart(cluster: &Cluster, r: &Reporter, id: u64, checks: &mut Checks) -> Result<()> {
    let t = Instant::now();
    let db = cluster.start(id).map_err(cluster_error)?;
    let st = db.status();
    let entries = (st.last_index + 1).saturating_sub(st.first_index);
    r.say(&format!(
        "restarted node {id} in {} ms: recovered {entries} log entries (index {}..={}) and a snapshot at index {}, applied {}",
        t.elapsed().as_millis(),
        st.first_index,
        st.last_index,
        st.snapshot_index,
        st.applied_index
    ))?;
    drop(db);
    let caught_up = catch_up(cluster, id);
    match caught_up {
        Some(ms) => r.say(&format!("node {id} caught up with the leader in {ms} ms"))?,
        None => {
            r.say(&format!("node {id} did not catch up within 30 s"))?;
            checks.check(
                false,
                format!("node {id} did not catch up after its restart"),
            );
        }
    }
    Ok(())
}

// Milliseconds until node `id` applied what the leader had committed when asked.
fn catch_up(cluster: &Cluster, id: u64) -> Option<u128> {
    let t = Instant::now();
    let target = wait_until(WAIT, || Some(cluster.leader()?.status().commit_index))?;
    wait_until(WAIT, || {
        let db: std::sync::Arc<Db> = cluster.node(id)?;
        (db.status().applied_index >= target).then_some(())
    })?;
    Some(t.elapsed().as_millis())
}

fn scenario(
    cluster: &Cluster,
    r: &Reporter,
    s: &Shared<'_>,
    phase: Duration,
    rates: &mut Vec<(String, u64, f64)>,
    checks: &mut Checks,
) -> Result<()> {
    let timed = |name: &str, d: Duration, rates: &mut Vec<(String, u64, f64)>| {
        let t = Instant::now();
        let n = phase_wait(r, s, name, d);
        rates.push((name.to_string(), n, t.elapsed().as_secs_f64()));
        n
    };
    timed("all 3 nodes up", phase, rates);

    // A follower stops; the other two still form a quorum.
    let Ok(Leader { id: leader, .. }) = cluster.try_wait_leader(WAIT) else {
        checks.check(false, "no leader before the follower was stopped");
        return Ok(());
    };
    let follower = cluster
        .ids()
        .iter()
        .copied()
        .find(|&id| id != leader)
        .unwrap_or(leader);
    r.say(&format!(
        "stopping node {follower} (a follower) without warning"
    ))?;
    cluster.kill(follower).map_err(cluster_error)?;
    let n = timed(&format!("node {follower} down"), phase, rates);
    if n == 0 {
        checks.check(
            wait_for_a_write(s),
            "no write was acknowledged while a follower was down",
        );
    }
    restart(cluster, r, follower, checks)?;
    timed(&format!("node {follower} back"), phase, rates);

    // The leader stops; the others elect a new one.
    let Ok(Leader { id: leader, term }) = cluster.try_wait_leader(WAIT) else {
        checks.check(false, "no leader before the leader was stopped");
        return Ok(());
    };
    let stopped_at = Instant::now();
    r.say(&format!(
        "stopping node {leader} (the leader, term {term}) without warning"
    ))?;
    cluster.kill(leader).map_err(cluster_error)?;
    match cluster.try_wait_leader(WAIT) {
        Ok(Leader { id: new, term }) => r.say(&format!(
            "node {new} elected leader (term {term}) {} ms after the stop",
            stopped_at.elapsed().as_millis()
        ))?,
        Err(_) => {
            checks.check(false, "no new leader within 30 s of the leader's stop");
            return Ok(());
        }
    }
    let n = timed(&format!("node {leader} down"), phase, rates);
    if n == 0 {
        checks.check(
            wait_for_a_write(s),
            "no write was acknowledged after the leader was stopped",
        );
    }
    restart(cluster, r, leader, checks)?;
    timed(&format!("node {leader} back"), phase, rates);
    Ok(())
}
