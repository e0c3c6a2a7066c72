//! Linearizability of a key-value history, checked per key with the Wing–Gong–Lowe
//! search of `todc-utils`.
//!
//! Clients record each operation as (client, key, op, call time, return time, result).
//! A write whose outcome is unknown (timed out, indeterminate, its node stopped under
//! it) may or may not have taken effect: it gets an open-ended return, i.e. its
//! response goes after every other event, so the checker may linearize it anywhere
//! after its call, including "never" (after the last operation). A write that
//! definitely did not happen (refused before it was proposed, overwritten by another
//! leader) and a read that failed are left out: neither changed nor observed the state.
//!
//! Every put writes a value used nowhere else, which makes two reductions exact (they
//! change neither verdict): an open-ended put whose value no read returned, and an
//! open-ended delete with no read of "absent" returning after its call, had no visible
//! effect, so dropping them leaves a history that is linearizable exactly when the
//! original is. Without them every unobserved timeout would double the search.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Instant;

use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// One operation on a single key, as the checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Set the key to this (unique) value.
    Put(u64),
    /// Remove the key.
    Delete,
    /// A read and what it returned.
    Get(Option<u64>),
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect (a read: it returned what `KvOp::Get` holds).
    Ok,
    /// It may or may not have taken effect.
    Unknown,
    /// It certainly did not take effect (or, for a read, it returned nothing).
    Failed,
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    pub key: usize,
    pub op: KvOp,
    pub call: Instant,
    pub ret: Instant,
    pub outcome: Outcome,
}

/// A register per key: its value, or `None` while absent.
pub struct KvSpec;

impl Specification for KvSpec {
    type State = Option<u64>;
    type Operation = KvOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &KvOp, state: &Option<u64>) -> (bool, Option<u64>) {
        match op {
            KvOp::Put(v) => (true, Some(*v)),
            KvOp::Delete => (true, None),
            KvOp::Get(seen) => (seen == state, *state),
        }
    }
}

/// What the checker was given for one key, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyStats {
    pub ops: usize,
    pub open_ended: usize,
    pub dropped_unobserved: usize,
    /// Most operations in flight at once (open-ended ones count until the end).
    pub max_concurrency: usize,
}

// The operations of one key the checker must see, with open-ended ones marked.
fn relevant(records: &[&Record]) -> (Vec<(Record, bool)>, usize) {
    let reads: Vec<&&Record> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok && matches!(r.op, KvOp::Get(_)))
        .collect();
    let mut kept = Vec::new();
    let mut dropped = 0;
    for r in records {
        match r.outcome {
            Outcome::Failed => {}
            Outcome::Ok => kept.push(((*r).clone(), false)),
            Outcome::Unknown => {
                let observed = match r.op {
                    KvOp::Put(v) => reads.iter().any(|g| g.op == KvOp::Get(Some(v))),
                    KvOp::Delete => reads
                        .iter()
                        .any(|g| g.op == KvOp::Get(None) && g.ret >= r.call),
                    // A read whose answer is unknown observed nothing.
                    KvOp::Get(_) => false,
                };
                if observed {
                    kept.push(((*r).clone(), true));
                } else {
                    dropped += 1;
                }
            }
        }
    }
    (kept, dropped)
}

// Runs the WGL search on `ops` (open-ended ones marked); returns the verdict and the
// most operations in flight at once.
fn linearizable(ops: &[(Record, bool)]) -> (bool, usize) {
    if ops.is_empty() {
        return (true, 0);
    }
    // Events ordered by time; at equal times calls go first (more overlap, never a
    // false alarm), and an open-ended return goes after everything.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum At {
        Time(Instant),
        End,
    }
    let mut events: Vec<(At, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, (r, open)) in ops.iter().enumerate() {
        events.push((At::Time(r.call), 0, i));
        let ret = if *open { At::End } else { At::Time(r.ret) };
        events.push((ret, 1, i));
    }
    events.sort();
    let (mut in_flight, mut max_in_flight) = (0usize, 0usize);
    let mut actions = Vec::with_capacity(events.len());
    for (_, kind, i) in &events {
        let op = ops[*i].0.op;
        // Each operation is its own process: an open-ended one never returns, so a
        // client's later operations must not pair with its response.
        if *kind == 0 {
            in_flight += 1;
            max_in_flight = max_in_flight.max(in_flight);
            actions.push((*i, Action::Call(op)));
        } else {
            in_flight -= 1;
            actions.push((*i, Action::Response(op)));
        }
    }
    let ok = WGLChecker::<KvSpec>::is_linearizable(History::from_actions(actions));
    (ok, max_in_flight)
}

// The history as of `cut`: operations called by then, where a write still running at
// `cut` becomes open-ended and a read still running is left out. A linearizable
// history has only linearizable prefixes, so the shortest failing one ends near the
// violation.
fn prefix(ops: &[(Record, bool)], cut: Instant) -> Vec<(Record, bool)> {
    ops.iter()
        .filter(|(r, open)| {
            r.call <= cut && (*open || r.ret <= cut || !matches!(r.op, KvOp::Get(_)))
        })
        .map(|(r, open)| (r.clone(), *open || r.ret > cut))
        .collect()
}

// Values are `(client + 1) << 40 | sequence` (see the jepsen test): shown as
// `client.sequence`.
fn show(op: KvOp) -> String {
    let v = |v: u64| format!("{}.{}", (v >> 40) as i64 - 1, v & ((1 << 40) - 1));
    match op {
        KvOp::Put(x) => format!("put {}", v(x)),
        KvOp::Delete => "delete".to_string(),
        KvOp::Get(Some(x)) => format!("get -> {}", v(x)),
        KvOp::Get(None) => "get -> absent".to_string(),
    }
}

/// Checks one key's records; `Err` shows the operations around the first violation
/// when they are not linearizable.
pub fn check_key(records: &[&Record]) -> Result<KeyStats, String> {
    let (ops, dropped) = relevant(records);
    let (ok, max_concurrency) = linearizable(&ops);
    let stats = KeyStats {
        ops: ops.len(),
        open_ended: ops.iter().filter(|(_, open)| *open).count(),
        dropped_unobserved: dropped,
        max_concurrency,
    };
    if ok {
        return Ok(stats);
    }
    // Bisect for the shortest failing prefix (by call time).
    let mut calls: Vec<Instant> = ops.iter().map(|(r, _)| r.call).collect();
    calls.sort();
    let (mut lo, mut hi) = (0usize, calls.len() - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if linearizable(&prefix(&ops, calls[mid])).0 {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let cut = calls[lo];
    let mut shown = prefix(&ops, cut);
    shown.sort_by_key(|(r, _)| r.call);
    const CONTEXT_OPS: usize = 40;
    let skip = shown.len().saturating_sub(CONTEXT_OPS);
    let t0 = calls[0];
    let lines: Vec<String> = shown[skip..]
        .iter()
        .map(|(r, open)| {
            let call = r.call.duration_since(t0).as_micros();
            let ret = if *open {
                "open".to_string()
            } else {
                format!("{}", r.ret.duration_since(t0).as_micros())
            };
            format!("  client {} {} [{call} .. {ret}] us", r.client, show(r.op))
        })
        .collect();
    Err(format!(
        "not linearizable ({stats:?}); the shortest failing prefix ends with:\n{}",
        lines.join("\n")
    ))
}

/// Checks every key's history; returns the per-key stats, or every violation found.
pub fn check_all(records: &[Record]) -> Result<BTreeMap<usize, KeyStats>, String> {
    let mut by_key: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_key.entry(r.key).or_default().push(r);
    }
    let mut stats = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, recs) in &by_key {
        match check_key(recs) {
            Ok(s) => {
                stats.insert(*key, s);
            }
            Err(e) => errors.push(format!("key {key}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(stats)
    } else {
        Err(errors.join("\n"))
    }
}

/// The effects `final_value` may be: those of the writes no acknowledged write
/// followed entirely (an acknowledged write that returned before another write's call
/// is overwritten by it). `Err` if the final value is none of them: an acknowledged
/// write was lost, or a value no write could have left appeared.
pub fn check_final(records: &[&Record], final_value: Option<u64>) -> Result<(), String> {
    let writes: Vec<&&Record> = records
        .iter()
        .filter(|r| r.outcome != Outcome::Failed && !matches!(r.op, KvOp::Get(_)))
        .collect();
    if writes.is_empty() {
        return if final_value.is_none() {
            Ok(())
        } else {
            Err(format!("value {final_value:?} but no write was made"))
        };
    }
    // A write whose outcome is unknown may take effect arbitrarily late: it always
    // stays a candidate.
    let superseded = |w: &Record| {
        w.outcome == Outcome::Ok
            && writes
                .iter()
                .any(|x| x.outcome == Outcome::Ok && x.call > w.ret)
    };
    let candidates: Vec<Option<u64>> = writes
        .iter()
        .filter(|w| !superseded(w))
        .map(|w| match w.op {
            KvOp::Put(v) => Some(v),
            _ => None,
        })
        .collect();
    if candidates.contains(&final_value) {
        Ok(())
    } else {
        let last_acked = writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok)
            .max_by_key(|w| w.ret)
            .map(|w| w.op);
        Err(format!(
            "final value {final_value:?} is not among the possible ones {candidates:?} \
             (last acknowledged write: {last_acked:?})"
        ))
    }
}
