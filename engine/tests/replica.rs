//! `Replica<S>` with a state machine of the test's own: each command's response reaches
//! the caller that proposed it (also through a follower), reads are closures over the
//! state, the size limit counts what the command says, and a state machine whose own
//! storage fails stops the node as a whole.

mod common;

use std::io::{self, Read, Write};
use std::time::Duration;

use common::single;
use keel_engine::state_machine::{Command, DecodeError, StateMachine};
use keel_engine::testing::{wait_until, Cluster, Options, RegisterOp, Registers};
use keel_engine::{Error, FatalKind, Replica};

/// A log of numbers: appending answers with the position, a "poisoned" number fails
/// the state machine's (pretend) storage.
#[derive(Default)]
struct Numbers {
    values: Vec<u64>,
    applied: u64,
}

const POISON: u64 = 666;
// A number the codec cannot read back: a codec bug.
const UNREADABLE: u64 = 999;

struct Append(u64);

impl Command for Append {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        // Padding the command does not count against max_entry_bytes.
        out.extend_from_slice(&[0; 8]);
    }

    fn decode(bytes: &[u8]) -> Result<Append, DecodeError> {
        let (n, pad) = bytes.split_first_chunk::<8>().ok_or("short")?;
        if pad.len() != 8 {
            return Err("bad padding".into());
        }
        match u64::from_be_bytes(*n) {
            UNREADABLE => Err("the codec has a bug".into()),
            n => Ok(Append(n)),
        }
    }

    fn size_bytes(&self, _encoded_bytes: usize) -> u64 {
        8
    }
}

impl StateMachine for Numbers {
    type Command = Append;
    /// Where the number went.
    type Response = usize;

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, Append(n): Append) -> io::Result<usize> {
        if n == POISON {
            return Err(io::Error::other("the disk under this state machine failed"));
        }
        self.values.push(n);
        self.applied = index;
        Ok(self.values.len() - 1)
    }

    fn mark_applied(&mut self, index: u64) {
        self.applied = index;
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(self.values.len() as u64).to_be_bytes())?;
        for v in &self.values {
            out.write_all(&v.to_be_bytes())?;
        }
        Ok(())
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let n = u64::from_be_bytes(word);
        let mut values = Vec::new();
        for _ in 0..n {
            input.read_exact(&mut word)?;
            values.push(u64::from_be_bytes(word));
        }
        self.values = values;
        self.applied = index;
        Ok(())
    }
}

#[test]
fn responses_reads_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = single(dir.path());
    // Each command encodes to 16 bytes but counts 8 (`size_bytes`): the limit holds.
    config.max_entry_bytes = 8;
    config.snapshot_every = 5;
    config.catch_up_entries = 1;
    let numbers = Replica::open(config.clone(), Numbers::default()).unwrap();
    for (i, n) in [10u64, 20, 30].into_iter().enumerate() {
        assert_eq!(numbers.propose(Append(n)).unwrap(), i);
    }
    assert_eq!(numbers.read(|s| s.values.clone()).unwrap(), [10, 20, 30]);
    assert_eq!(numbers.read_local(|s| s.values.len()).unwrap(), 3);
    // Snapshots were taken through the trait (written in place: no freeze); a restart
    // restores the newest one and replays the log above it.
    for n in 0..10 {
        numbers.propose(Append(n)).unwrap();
    }
    let snapshot = wait_until(Duration::from_secs(5), || {
        Some(numbers.status().snapshot_index).filter(|&i| i > 0)
    });
    assert!(snapshot.is_some(), "{:?}", numbers.status());
    numbers.close().unwrap();
    let numbers = Replica::open(config, Numbers::default()).unwrap();
    assert_eq!(numbers.read(|s| s.values.len()).unwrap(), 13);
    assert_eq!(numbers.propose(Append(40)).unwrap(), 13);
    numbers.close().unwrap();
}

#[test]
fn a_command_that_does_not_decode_is_skipped_everywhere_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let numbers = Replica::open(single(dir.path()), Numbers::default()).unwrap();
    numbers.propose(Append(1)).unwrap();
    let err = numbers.propose(Append(UNREADABLE)).unwrap_err();
    assert!(matches!(err, Error::Undecodable { .. }), "{err}");
    assert!(!err.is_retryable() && !err.outcome_unknown(), "{err}");
    // Not applied, and the node goes on.
    assert_eq!(numbers.propose(Append(2)).unwrap(), 1);
    assert_eq!(numbers.read(|s| s.values.clone()).unwrap(), [1, 2]);
    numbers.close().unwrap();
}

#[test]
fn a_failing_state_machine_stops_the_node_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let numbers = Replica::open(single(dir.path()), Numbers::default()).unwrap();
    numbers.propose(Append(1)).unwrap();
    let err = numbers.propose(Append(POISON)).unwrap_err();
    // Committed, but never applied here: the node stopped before answering.
    assert!(matches!(err, Error::Indeterminate(_)), "{err}");
    let fatal = wait_until(Duration::from_secs(2), || numbers.status().fatal)
        .expect("the node says why it stopped");
    assert_eq!(fatal.kind, FatalKind::StateMachine, "{fatal}");
    assert!(
        fatal.detail.contains("disk under this state machine"),
        "{fatal}"
    );
    let err = numbers.read(|s| s.values.len()).unwrap_err();
    assert_eq!(err.fatal(), Some(&fatal), "{err}");
    assert!(numbers.propose(Append(2)).is_err());
    assert!(numbers.close().is_err());
}

#[test]
fn a_follower_gets_the_response_of_its_own_proposal() {
    let c = Cluster::<Registers>::open_model(Options::new(3)).unwrap();
    let leader = c.wait_leader();
    let follower = c.followers(leader)[0];
    let node = c.db(follower);
    let write = |v: &[u8]| RegisterOp::Write {
        key: b"r".to_vec(),
        value: v.to_vec(),
    };
    // The response is the value each write replaced, computed where it was applied.
    assert_eq!(node.propose(write(b"1")).unwrap(), None);
    assert_eq!(node.propose(write(b"2")).unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        c.db(leader)
            .propose(RegisterOp::Clear { key: b"r".to_vec() })
            .unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(node.read(|r| r.len()).unwrap(), 0);
    // Every node reaches the leader's applied index; a stale local read then sees it.
    let applied = c.db(leader).status().applied_index;
    for id in c.ids().to_vec() {
        c.db(id)
            .wait_applied(applied, Duration::from_secs(5))
            .unwrap();
        assert_eq!(c.db(id).read_local(|r| r.len()).unwrap(), 0);
    }
    assert!(matches!(
        node.wait_applied(applied + 1_000, Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
}
