//! A replicated job queue with leases measured in log entries: your own state machine
//! on keel.
//!
//! What it shows:
//!
//! - [`JobQueue`], a state machine of its own: jobs in a `BTreeMap` by id (the oldest
//!   first, and no hash order anywhere in its answers or snapshots), its own commands
//!   ([`QueueCommand`]: enqueue, claim, ack), a response per command
//!   ([`QueueResponse`], with a [`ClaimResponse`] and typed [`AckError`]s) and its own
//!   snapshot format.
//! - Time without a clock. `apply` must be deterministic, so it cannot look at the
//!   time; the log index it is given is the clock instead. A claim made at index `i`
//!   with a lease of `n` entries holds the job until the log reaches `i + n`: from
//!   that index on, the job can be claimed again, and its first holder's ack is
//!   refused ([`AckError::LeaseExpired`]). Every replica agrees on that to the entry.
//!   The log moves only when something is proposed, so leases run out with traffic,
//!   not with time: here the workers' own polling claims move it. (An application
//!   with idle periods would have a timer propose a no-op command now and then.)
//! - Three nodes in one process on keel's in-process network, workers claiming and
//!   acking through different nodes, one worker that dies holding a job, and another
//!   worker picking the job up once the lease ran out; the whole sequence printed in
//!   log order.
//! - One `Response` type per state machine: keel gives a proposer back
//!   `StateMachine::Response`, so a state machine with several commands answers with an
//!   enum, and a small typed client ([`Queue`]) turns it back into one answer type per
//!   command.
//!
//! Run it with `cargo run -p keel-engine --example job_queue`; its tests with
//! `cargo test -p keel-engine --example job_queue`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use keel_engine::state_machine::{Command, DecodeError, StateMachine};
use keel_engine::transport::InProcessNetwork;
use keel_engine::{Config, Replica, Role};

// ---------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------

/// What a client asks of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    /// Adds a job at the back of the queue.
    Enqueue {
        /// What the job is.
        payload: String,
    },
    /// Claims the oldest job nobody holds (never claimed, or its lease ran out).
    Claim {
        /// Who claims it.
        worker: String,
        /// How long the claim holds, in log entries: it expires when the log reaches
        /// the claim's index plus this.
        lease_entries: NonZeroU64,
    },
    /// Reports a job done, which removes it. Only its current holder may, before the
    /// lease expires.
    Ack {
        /// The job.
        job_id: u64,
        /// Who reports it done.
        worker: String,
    },
}

/// A worker's hold on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker.
    pub worker: String,
    /// The log index of its claim.
    pub claimed_at_index: u64,
    /// The first log index at which the claim no longer holds.
    pub expires_at_index: u64,
}

impl Lease {
    fn holds_at(&self, index: u64) -> bool {
        index < self.expires_at_index
    }
}

/// A job waiting or being worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What the job is.
    pub payload: String,
    /// The newest claim on it, if any, live or expired. An expired lease stays until
    /// someone claims the job again, so its holder's late ack is told
    /// [`AckError::LeaseExpired`] rather than something vaguer.
    pub lease: Option<Lease>,
}

/// The answer to a [`QueueCommand::Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResponse {
    /// The worker holds this job now.
    Claimed {
        /// The job.
        job_id: u64,
        /// What it is.
        payload: String,
        /// The log index of the claim.
        claimed_at_index: u64,
        /// The first log index at which the claim no longer holds.
        expires_at_index: u64,
        /// The worker whose lease on the job had run out, if it was claimed before.
        reclaimed_from: Option<String>,
    },
    /// Nothing to claim right now.
    Empty {
        /// The log index of the claim.
        index: u64,
        /// Jobs in the queue, all of them held by live leases.
        pending: u64,
    },
}

/// An ack that went through: the job is done and gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The job.
    pub job_id: u64,
    /// The log index of the ack.
    pub index: u64,
}

/// Why an ack was refused. A refused ack changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No such job: never enqueued, or done already.
    #[error("no job {0} (never enqueued, or done already)")]
    UnknownJob(u64),
    /// Nobody ever claimed the job.
    #[error("job {0} was never claimed")]
    NotClaimed(u64),
    /// Another worker holds the job (it claimed it after the acker's lease ran out).
    #[error("job {job_id} is held by {holder}")]
    NotHolder {
        /// The job.
        job_id: u64,
        /// Who holds it.
        holder: String,
    },
    /// The acker's lease ran out; the job may be claimed again.
    #[error("the lease on job {job_id} expired at index {expired_at_index}")]
    LeaseExpired {
        /// The job.
        job_id: u64,
        /// The index the lease ran out at.
        expired_at_index: u64,
    },
}

/// What the proposer of a [`QueueCommand`] gets back: one variant per command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueResponse {
    /// The answer to an [`Enqueue`](QueueCommand::Enqueue): the new job's id.
    Enqueued {
        /// The job's id (ids count up from 1 and are never reused).
        job_id: u64,
        /// The log index of the enqueue.
        index: u64,
    },
    /// The answer to a [`Claim`](QueueCommand::Claim).
    Claim(ClaimResponse),
    /// The answer to an [`Ack`](QueueCommand::Ack).
    Ack(Result<Acked, AckError>),
}

/// The replicated queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQueue {
    jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    completed: u64,
    applied: u64,
}

impl Default for JobQueue {
    fn default() -> JobQueue {
        JobQueue {
            jobs: BTreeMap::new(),
            next_job_id: 1,
            completed: 0,
            applied: 0,
        }
    }
}

impl JobQueue {
    /// The jobs in the queue, oldest first.
    pub fn jobs(&self) -> &BTreeMap<u64, Job> {
        &self.jobs
    }

    /// Jobs acked so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    // The rules. `index` is the only notion of time: the same commands at the same
    // indexes give the same answers on every replica.
    fn execute(&mut self, index: u64, command: QueueCommand) -> QueueResponse {
        match command {
            QueueCommand::Enqueue { payload } => {
                let job_id = self.next_job_id;
                self.next_job_id += 1;
                self.jobs.insert(
                    job_id,
                    Job {
                        payload,
                        lease: None,
                    },
                );
                QueueResponse::Enqueued { job_id, index }
            }
            QueueCommand::Claim {
                worker,
                lease_entries,
            } => {
                // The oldest job whose lease, if any, has run out by this index.
                let free = self
                    .jobs
                    .iter_mut()
                    .find(|(_, job)| job.lease.as_ref().is_none_or(|l| !l.holds_at(index)));
                let Some((&job_id, job)) = free else {
                    return QueueResponse::Claim(ClaimResponse::Empty {
                        index,
                        pending: self.jobs.len() as u64,
                    });
                };
                let expires_at_index = index.saturating_add(lease_entries.get());
                let previous = job.lease.replace(Lease {
                    worker,
                    claimed_at_index: index,
                    expires_at_index,
                });
                QueueResponse::Claim(ClaimResponse::Claimed {
                    job_id,
                    payload: job.payload.clone(),
                    claimed_at_index: index,
                    expires_at_index,
                    reclaimed_from: previous.map(|l| l.worker),
                })
            }
            QueueCommand::Ack { job_id, worker } => {
                QueueResponse::Ack(self.ack(index, job_id, &worker))
            }
        }
    }

    fn ack(&mut self, index: u64, job_id: u64, worker: &str) -> Result<Acked, AckError> {
        let job = self.jobs.get(&job_id).ok_or(AckError::UnknownJob(job_id))?;
        let lease = job.lease.as_ref().ok_or(AckError::NotClaimed(job_id))?;
        match (lease.worker == worker, lease.holds_at(index)) {
            (true, true) => {
                self.jobs.remove(&job_id);
                self.completed += 1;
                Ok(Acked { job_id, index })
            }
            (true, false) => Err(AckError::LeaseExpired {
                job_id,
                expired_at_index: lease.expires_at_index,
            }),
            // Another worker's lease, live or not: the acker's claim was replaced.
            (false, _) => Err(AckError::NotHolder {
                job_id,
                holder: lease.worker.clone(),
            }),
        }
    }
}

impl StateMachine for JobQueue {
    type Command = QueueCommand;
    type Response = QueueResponse;

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, command: QueueCommand) -> io::Result<QueueResponse> {
        let response = self.execute(index, command);
        self.applied = index;
        Ok(response)
    }

    fn mark_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = Vec::new();
        buf.push(SNAPSHOT_VERSION);
        buf.extend_from_slice(&self.next_job_id.to_le_bytes());
        buf.extend_from_slice(&self.completed.to_le_bytes());
        buf.extend_from_slice(&(self.jobs.len() as u64).to_le_bytes());
        out.write_all(&buf)?;
        for (id, job) in &self.jobs {
            buf.clear();
            buf.extend_from_slice(&id.to_le_bytes());
            put_text(&mut buf, &job.payload);
            match &job.lease {
                None => buf.push(STATE_WAITING),
                Some(lease) => {
                    buf.push(STATE_LEASED);
                    put_text(&mut buf, &lease.worker);
                    buf.extend_from_slice(&lease.claimed_at_index.to_le_bytes());
                    buf.extend_from_slice(&lease.expires_at_index.to_le_bytes());
                }
            }
            out.write_all(&buf)?;
        }
        Ok(())
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        // Decoded whole before anything is replaced: a damaged snapshot leaves the
        // queue as it was.
        let restored = read_snapshot(index, input).map_err(SnapshotError::into_io)?;
        *self = restored;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The command encoding:
//
//   version (1) | tag | fields
//   Enqueue (b'E'): payload
//   Claim   (b'C'): worker | lease entries (u64 LE, not 0)
//   Ack     (b'A'): job id (u64 LE) | worker
//   text: u32 LE length, then UTF-8
// ---------------------------------------------------------------------------------

const COMMAND_VERSION: u8 = 1;
const TAG_ENQUEUE: u8 = b'E';
const TAG_CLAIM: u8 = b'C';
const TAG_ACK: u8 = b'A';

fn put_text(out: &mut Vec<u8>, text: &str) {
    // Over 4 GiB cannot be proposed anyway (`Config::max_entry_bytes`): the length
    // saturates and the entry is refused as too large.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn take_u64(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let (value, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or("queue command cut short in a number")?;
    *bytes = rest;
    Ok(u64::from_le_bytes(*value))
}

fn take_text(bytes: &mut &[u8]) -> Result<String, DecodeError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("queue command cut short in a length")?;
    let len = usize::try_from(u32::from_le_bytes(*len))?;
    if rest.len() < len {
        return Err("queue command cut short in a text".into());
    }
    let (text, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(std::str::from_utf8(text)?.to_owned())
}

impl Command for QueueCommand {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(COMMAND_VERSION);
        match self {
            QueueCommand::Enqueue { payload } => {
                out.push(TAG_ENQUEUE);
                put_text(out, payload);
            }
            QueueCommand::Claim {
                worker,
                lease_entries,
            } => {
                out.push(TAG_CLAIM);
                put_text(out, worker);
                out.extend_from_slice(&lease_entries.get().to_le_bytes());
            }
            QueueCommand::Ack { job_id, worker } => {
                out.push(TAG_ACK);
                out.extend_from_slice(&job_id.to_le_bytes());
                put_text(out, worker);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<QueueCommand, DecodeError> {
        let [version, tag, rest @ ..] = bytes else {
            return Err("queue command shorter than its header".into());
        };
        if *version != COMMAND_VERSION {
            return Err(
                format!("queue command version {version}, expected {COMMAND_VERSION}").into(),
            );
        }
        let mut rest = rest;
        let command = match *tag {
            TAG_ENQUEUE => QueueCommand::Enqueue {
                payload: take_text(&mut rest)?,
            },
            TAG_CLAIM => QueueCommand::Claim {
                worker: take_text(&mut rest)?,
                lease_entries: NonZeroU64::new(take_u64(&mut rest)?)
                    .ok_or("a lease of 0 entries")?,
            },
            TAG_ACK => QueueCommand::Ack {
                job_id: take_u64(&mut rest)?,
                worker: take_text(&mut rest)?,
            },
            other => return Err(format!("unknown queue command tag {other}").into()),
        };
        if !rest.is_empty() {
            return Err("bytes after a queue command".into());
        }
        Ok(command)
    }
}

// ---------------------------------------------------------------------------------
// The snapshot format (keel adds its own framing and checksums around it):
//
//   version (1) | next job id (u64 LE) | jobs completed (u64 LE) | job count (u64 LE)
//   per job, in strictly increasing id order, every id below the next job id:
//     id (u64 LE) | payload (text) | state (0 waiting, 1 leased)
//     leased: worker (text) | claimed at (u64 LE) | expires at (u64 LE)
//   end of input
//
// A lease must have been claimed at or before the snapshot's index and expire after
// its claim.
// ---------------------------------------------------------------------------------

const SNAPSHOT_VERSION: u8 = 1;
const STATE_WAITING: u8 = 0;
const STATE_LEASED: u8 = 1;
/// Longest text a snapshot may hold, checked before reading it: a damaged length
/// runs into this instead of the end of memory.
const MAX_TEXT_BYTES: u32 = 64 << 20;

/// Why a queue snapshot was refused. Restoring reports it (inside an `io::Error` of
/// kind `InvalidData`) and never panics on any input.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by another version of the queue.
    #[error("queue snapshot version {0}, expected {SNAPSHOT_VERSION}")]
    Version(u8),
    /// The input ended before the snapshot did.
    #[error("queue snapshot cut short")]
    Truncated,
    /// A text longer than [`MAX_TEXT_BYTES`].
    #[error("queue snapshot holds a text of {0} bytes")]
    TextLength(u32),
    /// A text that is not UTF-8.
    #[error("queue snapshot holds a text that is not UTF-8")]
    NotUtf8,
    /// Job ids out of order, repeated, or not below the next job id.
    #[error("queue snapshot job id {0} is out of order or not below the next id")]
    JobId(u64),
    /// A job state byte that means nothing.
    #[error("queue snapshot job {job_id} has state {state}")]
    State {
        /// The job.
        job_id: u64,
        /// The byte.
        state: u8,
    },
    /// A lease that expires at or before its claim, or was claimed after the
    /// snapshot's own index.
    #[error("queue snapshot lease on job {0} is impossible")]
    Lease(u64),
    /// Bytes after the last job.
    #[error("bytes after the end of the queue snapshot")]
    TrailingBytes,
    /// Reading failed.
    #[error("reading the queue snapshot: {0}")]
    Io(io::Error),
}

impl SnapshotError {
    fn into_io(self) -> io::Error {
        match self {
            SnapshotError::Io(e) => e,
            damaged => io::Error::new(io::ErrorKind::InvalidData, damaged),
        }
    }

    fn from_read(e: io::Error) -> SnapshotError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Io(e),
        }
    }
}

fn read_array<const N: usize>(input: &mut dyn Read) -> Result<[u8; N], SnapshotError> {
    let mut buf = [0u8; N];
    input
        .read_exact(&mut buf)
        .map_err(SnapshotError::from_read)?;
    Ok(buf)
}

fn read_u64(input: &mut dyn Read) -> Result<u64, SnapshotError> {
    read_array::<8>(input).map(u64::from_le_bytes)
}

fn read_text(input: &mut dyn Read) -> Result<String, SnapshotError> {
    let len = u32::from_le_bytes(read_array::<4>(input)?);
    if len > MAX_TEXT_BYTES {
        return Err(SnapshotError::TextLength(len));
    }
    let mut text = Vec::new();
    input
        .take(u64::from(len))
        .read_to_end(&mut text)
        .map_err(SnapshotError::from_read)?;
    if text.len() != len as usize {
        return Err(SnapshotError::Truncated);
    }
    String::from_utf8(text).map_err(|_| SnapshotError::NotUtf8)
}

fn read_snapshot(index: u64, input: &mut dyn Read) -> Result<JobQueue, SnapshotError> {
    let [version] = read_array::<1>(input)?;
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let next_job_id = read_u64(input)?;
    let completed = read_u64(input)?;
    let count = read_u64(input)?;
    let mut jobs = BTreeMap::new();
    // Nothing is allocated from `count` up front: a damaged count runs into the end
    // of the input.
    for _ in 0..count {
        let job_id = read_u64(input)?;
        let in_order = jobs.last_key_value().is_none_or(|(&last, _)| last < job_id);
        if !in_order || job_id >= next_job_id {
            return Err(SnapshotError::JobId(job_id));
        }
        let payload = read_text(input)?;
        let [state] = read_array::<1>(input)?;
        let lease = match state {
            STATE_WAITING => None,
            STATE_LEASED => {
                let lease = Lease {
                    worker: read_text(input)?,
                    claimed_at_index: read_u64(input)?,
                    expires_at_index: read_u64(input)?,
                };
                if lease.expires_at_index <= lease.claimed_at_index
                    || lease.claimed_at_index > index
                {
                    return Err(SnapshotError::Lease(job_id));
                }
                Some(lease)
            }
            state => return Err(SnapshotError::State { job_id, state }),
        };
        jobs.insert(job_id, Job { payload, lease });
    }
    let mut extra = [0u8; 1];
    match input.read(&mut extra) {
        Ok(0) => Ok(JobQueue {
            jobs,
            next_job_id,
            completed,
            applied: index,
        }),
        Ok(_) => Err(SnapshotError::TrailingBytes),
        Err(e) => Err(SnapshotError::Io(e)),
    }
}

// ---------------------------------------------------------------------------------
// A typed client
// ---------------------------------------------------------------------------------

/// How long a client keeps retrying a proposal that certainly did not apply.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Pause between such retries.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// keel refused or failed; the command was not applied.
    #[error(transparent)]
    Keel(keel_engine::Error),
    /// The command timed out or was cut off in flight: it may or may not have been
    /// applied. (A claim that was applied unseen is harmless: its lease runs out.)
    #[error("outcome unknown: {0}")]
    Unknown(keel_engine::Error),
    /// The state machine answered a command with another command's response: a bug.
    #[error("a {0} was answered with {1:?}")]
    WrongResponse(&'static str, QueueResponse),
}

/// The queue, as a client on one node sees it: one method per command, each with its
/// own answer type.
#[derive(Debug, Clone, Copy)]
pub struct Queue<'a> {
    node: &'a Replica<JobQueue>,
}

impl<'a> Queue<'a> {
    /// A client proposing through `node` (any node: a follower passes proposals on to
    /// the leader).
    pub fn new(node: &'a Replica<JobQueue>) -> Queue<'a> {
        Queue { node }
    }

    /// Proposes `command`, retrying the failures that say it was not applied (no
    /// leader yet, leadership changing, the queue of requests full).
    fn propose(&self, command: QueueCommand) -> Result<QueueResponse, ClientError> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            match self.node.propose(command.clone()) {
                Ok(response) => return Ok(response),
                Err(e) if e.outcome_unknown() => return Err(ClientError::Unknown(e)),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    thread::sleep(RETRY_PAUSE)
                }
                Err(e) => return Err(ClientError::Keel(e)),
            }
        }
    }

    /// Enqueues `payload`; returns the job's id and the log index of the enqueue.
    pub fn enqueue(&self, payload: &str) -> Result<(u64, u64), ClientError> {
        match self.propose(QueueCommand::Enqueue {
            payload: payload.to_owned(),
        })? {
            QueueResponse::Enqueued { job_id, index } => Ok((job_id, index)),
            other => Err(ClientError::WrongResponse("enqueue", other)),
        }
    }

    /// Claims the oldest free job for `worker`, for `lease_entries` log entries.
    pub fn claim(
        &self,
        worker: &str,
        lease_entries: NonZeroU64,
    ) -> Result<ClaimResponse, ClientError> {
        match self.propose(QueueCommand::Claim {
            worker: worker.to_owned(),
            lease_entries,
        })? {
            QueueResponse::Claim(claim) => Ok(claim),
            other => Err(ClientError::WrongResponse("claim", other)),
        }
    }

    /// Reports job `job_id` done by `worker`.
    pub fn ack(&self, job_id: u64, worker: &str) -> Result<Result<Acked, AckError>, ClientError> {
        match self.propose(QueueCommand::Ack {
            job_id,
            worker: worker.to_owned(),
        })? {
            QueueResponse::Ack(acked) => Ok(acked),
            other => Err(ClientError::WrongResponse("ack", other)),
        }
    }
}

// ---------------------------------------------------------------------------------
// Three nodes and a few workers
// ---------------------------------------------------------------------------------

const NODE_IDS: [u64; 3] = [1, 2, 3];
const WAIT: Duration = Duration::from_secs(20);

/// Node `id`'s configuration: a cluster of [`NODE_IDS`] on `net`, its data in
/// `root/node-<id>`.
fn node_config(id: u64, root: &Path, net: &Arc<InProcessNetwork>) -> Config {
    let mut config = Config::cluster(
        id,
        NODE_IDS.to_vec(),
        root.join(format!("node-{id}")),
        net.clone(),
    );
    // Quick elections for a demo on one machine: 10 ms ticks, a leader heartbeat
    // every 20 ms, an election after 200–400 ms of silence.
    config.tick_ms = 10;
    config.heartbeat_ticks = 2;
    config.election_ticks = 20;
    // A snapshot every 25 entries, so the queue's snapshot format is exercised in a
    // short run (the default is every 100,000).
    config.snapshot_every = 25;
    config.snapshot_log_percent = 0;
    config.catch_up_entries = 10;
    config
}

/// The lease every worker claims with, in log entries.
pub const LEASE_ENTRIES: NonZeroU64 = match NonZeroU64::new(30) {
    Some(lease) => lease,
    None => unreachable!(),
};

/// Something that happened in a run, at a log index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The log index of the command that did it.
    pub index: u64,
    /// What happened.
    pub what: What,
}

/// What happened in an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A job was enqueued through node `node`.
    Enqueued {
        /// The job.
        job_id: u64,
        /// What it is.
        payload: String,
        /// The node the enqueue went through.
        node: u64,
    },
    /// A worker claimed a job.
    Claimed {
        /// The worker.
        worker: String,
        /// The job.
        job_id: u64,
        /// The first index its lease no longer holds at.
        expires_at_index: u64,
        /// The worker whose lease ran out, if the job was claimed before.
        reclaimed_from: Option<String>,
        /// Whether the worker dies right after, never to ack.
        dies: bool,
    },
    /// A worker acked a job.
    Acked {
        /// The worker.
        worker: String,
        /// The job.
        job_id: u64,
    },
    /// A worker's ack was refused (at the index of its claim: a refusal carries no
    /// index of its own).
    AckRefused {
        /// The worker.
        worker: String,
        /// Why.
        refusal: AckError,
    },
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Enqueued {
                job_id,
                payload,
                node,
            } => write!(f, "job {job_id} ({payload}) enqueued through node {node}"),
            What::Claimed {
                worker,
                job_id,
                expires_at_index,
                reclaimed_from,
                dies,
            } => {
                write!(
                    f,
                    "{worker} claims job {job_id}, leased until index {expires_at_index}"
                )?;
                if let Some(previous) = reclaimed_from {
                    write!(f, " ({previous}'s lease ran out)")?;
                }
                if *dies {
                    write!(f, ", and dies")?;
                }
                Ok(())
            }
            What::Acked { worker, job_id } => write!(f, "{worker} acks job {job_id}"),
            What::AckRefused { worker, refusal } => write!(f, "{worker}'s ack refused: {refusal}"),
        }
    }
}

/// How a run went.
#[derive(Debug)]
pub struct Report {
    /// What happened while the workers ran, in log order.
    pub events: Vec<Event>,
    /// Claims that found nothing free while the workers ran (each one a log entry).
    pub empty_polls: u64,
    /// The job the dead worker held, and the index its lease ran out at.
    pub dead_job: (u64, u64),
    /// The acks refused on purpose at the end, each with why.
    pub refusals: Vec<(String, AckError)>,
    /// Every node's queue after the run, read locally once all applied the same index.
    pub queues: BTreeMap<u64, JobQueue>,
    /// The index every node had applied when they were read.
    pub converged_at: u64,
    /// Jobs enqueued.
    pub enqueued: u64,
}

impl Report {
    /// Who claimed the dead worker's job after its lease ran out, and at which index.
    pub fn reclaimed(&self) -> Option<(&str, u64)> {
        self.events.iter().find_map(|e| match &e.what {
            What::Claimed {
                worker,
                job_id,
                reclaimed_from: Some(_),
                ..
            } if *job_id == self.dead_job.0 => Some((worker.as_str(), e.index)),
            _ => None,
        })
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// keel failed.
    #[error(transparent)]
    Keel(#[from] keel_engine::Error),
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The temporary directory.
    #[error("temporary directory: {0}")]
    TempDir(io::Error),
    /// The queue answered other than the scenario needs.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// No leader, or the nodes did not converge, in time.
    #[error("timed out waiting for {0}")]
    TimedOut(&'static str),
    /// A worker thread panicked.
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

/// What the workers saw, shared between their threads.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<Event>>,
    empty_polls: AtomicU64,
}

impl Log {
    fn record(&self, index: u64, what: What) {
        // A poisoned lock means another worker panicked; its join reports that.
        if let Ok(mut events) = self.events.lock() {
            events.push(Event { index, what });
        }
    }
}

/// A worker that claims, works and acks until the queue is empty, polling while
/// every job left is held by someone else (each poll is a log entry: it is what makes
/// their leases run out).
fn worker(name: &str, queue: Queue<'_>, log: &Log) -> Result<(), RunError> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match queue.claim(name, LEASE_ENTRIES)? {
            ClaimResponse::Claimed {
                job_id,
                claimed_at_index,
                expires_at_index,
                reclaimed_from,
                ..
            } => {
                let claimed = What::Claimed {
                    worker: name.to_owned(),
                    job_id,
                    expires_at_index,
                    reclaimed_from,
                    dies: false,
                };
                log.record(claimed_at_index, claimed);
                // The work itself.
                thread::sleep(Duration::from_millis(5));
                match queue.ack(job_id, name)? {
                    Ok(acked) => log.record(
                        acked.index,
                        What::Acked {
                            worker: name.to_owned(),
                            job_id,
                        },
                    ),
                    // Only on a machine so slow that the other worker's polls ran the
                    // lease out meanwhile: the job goes to whoever claims it next.
                    Err(refusal) => log.record(
                        claimed_at_index,
                        What::AckRefused {
                            worker: name.to_owned(),
                            refusal,
                        },
                    ),
                }
            }
            ClaimResponse::Empty { pending: 0, .. } => return Ok(()),
            ClaimResponse::Empty { .. } => {
                log.empty_polls.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Err(RunError::TimedOut("the queue to drain"))
}

fn wait_leader(nodes: &[&Replica<JobQueue>]) -> Result<u64, RunError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<_> = nodes.iter().map(|n| n.status()).collect();
        if let Some(leader) = statuses.first().and_then(|s| s.leader) {
            let agreed = statuses.iter().all(|s| s.leader == Some(leader));
            let leads = statuses
                .iter()
                .any(|s| s.id == leader && s.role == Role::Leader);
            if agreed && leads {
                return Ok(leader);
            }
        }
        if Instant::now() >= deadline {
            return Err(RunError::TimedOut("a leader"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_converged(nodes: &[&Replica<JobQueue>]) -> Result<u64, RunError> {
    let target = nodes
        .iter()
        .map(|n| n.status().commit_index)
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    while nodes.iter().any(|n| n.status().applied_index < target) {
        if Instant::now() >= deadline {
            return Err(RunError::TimedOut("the nodes to converge"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(target)
}

const PAYLOADS: [&str; 6] = [
    "resize photo 1",
    "resize photo 2",
    "send invoice 7",
    "send invoice 8",
    "reindex shelf A",
    "reindex shelf B",
];

/// An ack that must be refused; returns why.
fn refused(queue: Queue<'_>, job_id: u64, worker: &str) -> Result<AckError, RunError> {
    match queue.ack(job_id, worker)? {
        Err(refusal) => Ok(refusal),
        Ok(acked) => Err(RunError::Unexpected(format!(
            "{worker}'s ack of job {job_id} went through: {acked:?}"
        ))),
    }
}

/// The demonstration, in `root`: jobs enqueued through every node; worker "bob"
/// claims the first and dies; "ann" and "cy" work through the rest and, once bob's
/// lease runs out, through his job too; then each typed refusal of an ack, on
/// purpose.
pub fn run(root: &Path) -> Result<Report, RunError> {
    let net = Arc::new(InProcessNetwork::new(1));
    let mut nodes = Vec::new();
    for id in NODE_IDS {
        nodes.push(Replica::open(
            node_config(id, root, &net),
            JobQueue::default(),
        )?);
    }
    let refs: Vec<&Replica<JobQueue>> = nodes.iter().collect();
    wait_leader(&refs)?;
    let queues: Vec<Queue<'_>> = nodes.iter().map(Queue::new).collect();
    let log = Log::default();

    for (i, payload) in PAYLOADS.iter().enumerate() {
        let queue = queues[i % queues.len()];
        let (job_id, index) = queue.enqueue(payload)?;
        let enqueued = What::Enqueued {
            job_id,
            payload: (*payload).to_owned(),
            node: queue.node.id(),
        };
        log.record(index, enqueued);
    }

    // Bob, on node 2, claims the oldest job and dies: no ack, ever.
    let dead_job = match queues[1].claim("bob", LEASE_ENTRIES)? {
        ClaimResponse::Claimed {
            job_id,
            claimed_at_index,
            expires_at_index,
            ..
        } => {
            let claimed = What::Claimed {
                worker: "bob".to_owned(),
                job_id,
                expires_at_index,
                reclaimed_from: None,
                dies: true,
            };
            log.record(claimed_at_index, claimed);
            (job_id, expires_at_index)
        }
        empty => return Err(RunError::Unexpected(format!("bob found no job: {empty:?}"))),
    };

    // Ann on node 1 and Cy on node 3 drain the queue, bob's job included once his
    // lease runs out.
    thread::scope(|s| {
        let ann = s.spawn(|| worker("ann", queues[0], &log));
        let cy = s.spawn(|| worker("cy", queues[2], &log));
        ann.join().map_err(|_| RunError::WorkerPanicked)??;
        cy.join().map_err(|_| RunError::WorkerPanicked)?
    })?;

    // Each refusal, on purpose. Bob comes back from the dead and acks his job: too
    // late, someone else did it and it is gone.
    let mut refusals = vec![(
        "bob acks his old job".to_owned(),
        refused(queues[1], dead_job.0, "bob")?,
    )];
    // A job for Dee with a one-entry lease: the very next entry, her own ack, is past it.
    let (job, _) = queues[0].enqueue("audit books")?;
    queues[0].claim("dee", NonZeroU64::MIN)?;
    refusals.push((
        "dee acks after a one-entry lease".to_owned(),
        refused(queues[0], job, "dee")?,
    ));
    // Ann claims it (Dee's lease ran out); Cy, who does not hold it, acks it.
    queues[0].claim("ann", LEASE_ENTRIES)?;
    refusals.push((
        "cy acks ann's job".to_owned(),
        refused(queues[2], job, "cy")?,
    ));
    refusals.push((
        "dee acks it too".to_owned(),
        refused(queues[1], job, "dee")?,
    ));
    if let Err(refusal) = queues[0].ack(job, "ann")? {
        return Err(RunError::Unexpected(format!(
            "ann's ack refused: {refusal}"
        )));
    }

    let converged_at = wait_converged(&refs)?;
    let mut queues_after = BTreeMap::new();
    for node in &nodes {
        queues_after.insert(node.id(), node.read_local(JobQueue::clone)?);
    }
    drop(refs);
    for node in &nodes {
        node.close()?;
    }

    let mut events = log
        .events
        .into_inner()
        .map_err(|_| RunError::WorkerPanicked)?;
    events.sort_by_key(|e| e.index);
    Ok(Report {
        events,
        empty_polls: log.empty_polls.into_inner(),
        dead_job,
        refusals,
        queues: queues_after,
        converged_at,
        enqueued: PAYLOADS.len() as u64 + 1,
    })
}

fn main() -> Result<(), RunError> {
    let dir = tempfile::tempdir().map_err(RunError::TempDir)?;
    let report = run(dir.path())?;
    println!("the sequence, in log order (lease {LEASE_ENTRIES} entries):");
    for event in &report.events {
        println!("  {:>5}  {}", event.index, event.what);
    }
    let (job, expired_at) = report.dead_job;
    println!(
        "{} claims found every job held; each was a log entry, and they moved the log to \
         index {expired_at}, where bob's lease ran out",
        report.empty_polls
    );
    match report.reclaimed() {
        Some((worker, index)) => {
            println!("job {job} (bob's) was re-claimed by {worker} at index {index}")
        }
        None => println!("job {job} (bob's) was never re-claimed"),
    }
    println!("acks refused on purpose:");
    for (what, refusal) in &report.refusals {
        println!("  {what}: {refusal:?}");
    }
    println!("every node applied index {}:", report.converged_at);
    for (id, queue) in &report.queues {
        println!(
            "  node {id}: {} jobs done of {}, {} left",
            queue.completed(),
            report.enqueued,
            queue.jobs().len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn enqueue(q: &mut JobQueue, index: u64, payload: &str) -> u64 {
        match q
            .apply(
                index,
                QueueCommand::Enqueue {
                    payload: payload.into(),
                },
            )
            .unwrap()
        {
            QueueResponse::Enqueued { job_id, .. } => job_id,
            other => panic!("{other:?}"),
        }
    }

    fn claim(q: &mut JobQueue, index: u64, worker: &str, entries: u64) -> ClaimResponse {
        let command = QueueCommand::Claim {
            worker: worker.into(),
            lease_entries: lease(entries),
        };
        match q.apply(index, command).unwrap() {
            QueueResponse::Claim(claim) => claim,
            other => panic!("{other:?}"),
        }
    }

    fn ack(q: &mut JobQueue, index: u64, job_id: u64, worker: &str) -> Result<Acked, AckError> {
        let command = QueueCommand::Ack {
            job_id,
            worker: worker.into(),
        };
        match q.apply(index, command).unwrap() {
            QueueResponse::Ack(acked) => acked,
            other => panic!("{other:?}"),
        }
    }

    fn claimed_id(response: ClaimResponse) -> u64 {
        match response {
            ClaimResponse::Claimed { job_id, .. } => job_id,
            empty => panic!("{empty:?}"),
        }
    }

    #[test]
    fn claims_take_the_oldest_free_job_and_say_when_there_is_none() {
        let mut q = JobQueue::default();
        assert_eq!(
            claim(&mut q, 1, "ann", 5),
            ClaimResponse::Empty {
                index: 1,
                pending: 0
            }
        );
        let first = enqueue(&mut q, 2, "a");
        let second = enqueue(&mut q, 3, "b");
        assert_eq!(claimed_id(claim(&mut q, 4, "ann", 5)), first);
        assert_eq!(claimed_id(claim(&mut q, 5, "bob", 5)), second);
        assert_eq!(
            claim(&mut q, 6, "cy", 5),
            ClaimResponse::Empty {
                index: 6,
                pending: 2
            }
        );
    }

    #[test]
    fn a_lease_expires_when_the_log_reaches_its_claim_index_plus_its_length() {
        let mut q = JobQueue::default();
        let job = enqueue(&mut q, 1, "a");
        match claim(&mut q, 10, "ann", 5) {
            ClaimResponse::Claimed {
                claimed_at_index: 10,
                expires_at_index: 15,
                reclaimed_from: None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        // Index 14 is still inside the lease: nobody else gets the job.
        assert!(matches!(
            claim(&mut q, 14, "bob", 5),
            ClaimResponse::Empty { pending: 1, .. }
        ));
        // At 15 it is free again, and the response says whose lease ran out.
        match claim(&mut q, 15, "bob", 5) {
            ClaimResponse::Claimed {
                job_id,
                expires_at_index: 20,
                reclaimed_from: Some(from),
                ..
            } => {
                assert_eq!(job_id, job);
                assert_eq!(from, "ann");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_holder_may_ack_and_only_before_its_lease_expires() {
        let mut q = JobQueue::default();
        let job = enqueue(&mut q, 1, "a");
        assert_eq!(ack(&mut q, 2, job, "ann"), Err(AckError::NotClaimed(job)));
        claim(&mut q, 3, "ann", 4); // holds through index 6
        assert_eq!(
            ack(&mut q, 4, job, "bob"),
            Err(AckError::NotHolder {
                job_id: job,
                holder: "ann".into()
            })
        );
        assert_eq!(
            ack(&mut q, 7, job, "ann"),
            Err(AckError::LeaseExpired {
                job_id: job,
                expired_at_index: 7
            })
        );
        // Bob takes it over; ann's claim is gone for good.
        claim(&mut q, 8, "bob", 4);
        assert_eq!(
            ack(&mut q, 9, job, "ann"),
            Err(AckError::NotHolder {
                job_id: job,
                holder: "bob".into()
            })
        );
        assert_eq!(q.jobs().len(), 1, "refused acks changed nothing");
        assert_eq!(
            ack(&mut q, 10, job, "bob"),
            Ok(Acked {
                job_id: job,
                index: 10
            })
        );
        assert!(q.jobs().is_empty());
        assert_eq!(q.completed(), 1);
        assert_eq!(ack(&mut q, 11, job, "bob"), Err(AckError::UnknownJob(job)));
    }

    #[test]
    fn an_ack_at_the_last_index_of_the_lease_goes_through() {
        let mut q = JobQueue::default();
        let job = enqueue(&mut q, 1, "a");
        claim(&mut q, 2, "ann", 3); // expires at 5
        assert!(ack(&mut q, 4, job, "ann").is_ok());
    }

    #[test]
    fn commands_round_trip_and_damaged_bytes_do_not_decode() {
        let commands = [
            QueueCommand::Enqueue {
                payload: "p".into(),
            },
            QueueCommand::Claim {
                worker: "w".into(),
                lease_entries: lease(u64::MAX),
            },
            QueueCommand::Ack {
                job_id: 7,
                worker: "w".into(),
            },
        ];
        for command in commands {
            let mut bytes = Vec::new();
            command.encode(&mut bytes);
            assert_eq!(QueueCommand::decode(&bytes).ok(), Some(command.clone()));
            for cut in 0..bytes.len() {
                assert!(QueueCommand::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(QueueCommand::decode(&longer).is_err());
            bytes[0] = 2;
            assert!(QueueCommand::decode(&bytes).is_err());
        }
        // A claim with a lease of 0 entries.
        let mut zero = vec![COMMAND_VERSION, TAG_CLAIM];
        put_text(&mut zero, "w");
        zero.extend_from_slice(&0u64.to_le_bytes());
        assert!(QueueCommand::decode(&zero).is_err());
    }

    // Job 1 done, job 2 leased to bob (claimed at 6, until 106), job 3 waiting; as of
    // index 7.
    fn busy_queue() -> JobQueue {
        let mut q = JobQueue::default();
        let done = enqueue(&mut q, 1, "done");
        enqueue(&mut q, 2, "leased");
        enqueue(&mut q, 3, "waiting");
        claim(&mut q, 4, "ann", 100);
        ack(&mut q, 5, done, "ann").unwrap();
        claim(&mut q, 6, "bob", 100);
        q.mark_applied(7);
        q
    }

    fn snapshot_of(q: &JobQueue) -> Vec<u8> {
        let mut image = Vec::new();
        q.write_snapshot(&mut image).unwrap();
        image
    }

    fn damage(image: &[u8]) -> SnapshotError {
        let mut q = busy_queue();
        let before = q.clone();
        let err = q
            .restore_snapshot(7, &mut &image[..])
            .expect_err("damaged snapshot restored");
        assert_eq!(q, before, "a failed restore changed the queue");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        match err.into_inner().map(|e| e.downcast::<SnapshotError>()) {
            Some(Ok(e)) => *e,
            other => panic!("not a SnapshotError: {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_queue() {
        let q = busy_queue();
        let mut restored = JobQueue::default();
        restored
            .restore_snapshot(7, &mut &snapshot_of(&q)[..])
            .unwrap();
        assert_eq!(restored, q);
        // And it goes on where the original would: the next id, the leases.
        let mut original = q;
        assert_eq!(
            enqueue(&mut restored, 8, "x"),
            enqueue(&mut original, 8, "x")
        );
        assert_eq!(
            claim(&mut restored, 9, "dee", 1),
            claim(&mut original, 9, "dee", 1)
        );
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_never_a_panic() {
        let image = snapshot_of(&busy_queue());
        for cut in 0..image.len() {
            assert!(
                matches!(damage(&image[..cut]), SnapshotError::Truncated),
                "cut at {cut}"
            );
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(matches!(damage(&longer), SnapshotError::TrailingBytes));

        let mut version = image.clone();
        version[0] = 3;
        assert!(matches!(damage(&version), SnapshotError::Version(3)));

        // Layout: version, next id (1..9), completed (9..17), count (17..25); job 2: id
        // (25..33), payload length (33..37), "leased" (37..43), state (43), worker
        // length (44..48), "bob" (48..51), claimed at (51..59), expires at (59..67);
        // job 3 from 67.
        let mut next_id = image.clone();
        next_id[1..9].copy_from_slice(&2u64.to_le_bytes());
        assert!(matches!(damage(&next_id), SnapshotError::JobId(2)));

        let mut count = image.clone();
        count[17..25].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(damage(&count), SnapshotError::Truncated));

        let mut order = image.clone();
        order[25..33].copy_from_slice(&3u64.to_le_bytes());
        assert!(matches!(damage(&order), SnapshotError::JobId(3)));

        let mut huge = image.clone();
        huge[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(damage(&huge), SnapshotError::TextLength(u32::MAX)));

        let mut not_utf8 = image.clone();
        not_utf8[37] = 0xff;
        assert!(matches!(damage(&not_utf8), SnapshotError::NotUtf8));

        let mut state = image.clone();
        state[43] = 7;
        assert!(matches!(
            damage(&state),
            SnapshotError::State {
                job_id: 2,
                state: 7
            }
        ));

        let mut backwards = image.clone();
        backwards[59..67].copy_from_slice(&6u64.to_le_bytes());
        assert!(matches!(damage(&backwards), SnapshotError::Lease(2)));
        let mut future = image.clone();
        future[51..59].copy_from_slice(&8u64.to_le_bytes());
        assert!(matches!(damage(&future), SnapshotError::Lease(2)));
    }

    #[test]
    fn a_dead_workers_job_is_reclaimed_once_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path()).unwrap();
        let (dead_job, expired_at) = report.dead_job;
        let (worker, index) = report.reclaimed().expect("bob's job was never re-claimed");
        assert!(worker == "ann" || worker == "cy", "re-claimed by {worker}");
        assert!(
            index >= expired_at,
            "re-claimed at {index}, lease until {expired_at}"
        );
        // Nobody had it in between: bob's claim is the only earlier one.
        let claims: Vec<&Event> = report
            .events
            .iter()
            .filter(|e| matches!(&e.what, What::Claimed { job_id, .. } if *job_id == dead_job))
            .collect();
        assert_eq!(claims.len(), 2, "{claims:?}");
        let refusals: Vec<&AckError> = report.refusals.iter().map(|(_, r)| r).collect();
        assert!(matches!(refusals[0], AckError::UnknownJob(j) if *j == dead_job));
        assert!(matches!(refusals[1], AckError::LeaseExpired { .. }));
        assert!(matches!(refusals[2], AckError::NotHolder { holder, .. } if holder == "ann"));
        assert!(matches!(refusals[3], AckError::NotHolder { holder, .. } if holder == "ann"));
        assert_eq!(report.queues.len(), 3);
        for queue in report.queues.values() {
            assert!(queue.jobs().is_empty(), "jobs left: {:?}", queue.jobs());
            assert_eq!(queue.completed(), report.enqueued);
            assert_eq!(queue.applied_index(), report.converged_at);
        }
    }
}
