//! The contract between keel's pipeline and a replicated state machine:
//! [`StateMachine`], the [`Command`] codec its log entries carry, and the
//! [`FrozenState`] image a state machine may hand out so a snapshot is written while it
//! goes on applying.
//!
//! keel's own key-value store ([`KvStore`](super::KvStore)) implements these traits
//! with nothing an application's state machine could not do.

use std::io::{self, Read, Write};

/// Why a command's bytes did not decode. Any error converts into it with `?`.
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// What a log entry carries for a state machine: a command, encoded to bytes on the
/// proposing caller's thread and decoded on every replica that applies it.
///
/// Decoding must be total: every replica sees the same bytes, and bytes that do not
/// decode (a bug, or a log written by another version) are skipped by every replica
/// alike and logged, never a panic. Put a version byte first if the format may change.
pub trait Command: Sized + Send + 'static {
    /// Appends this command's bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The command `bytes` (written by [`encode`](Self::encode), possibly by another
    /// node or an earlier run) hold.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// The bytes this command counts against
    /// [`Config::max_entry_bytes`](crate::Config::max_entry_bytes), given its encoded
    /// length. By default the encoded length; a command may leave out its own framing
    /// (keel's key-value store counts only key and value bytes), by at most
    /// [`COMMAND_FRAMING_MAX_BYTES`](crate::COMMAND_FRAMING_MAX_BYTES).
    fn size_bytes(&self, encoded_bytes: usize) -> u64 {
        encoded_bytes as u64
    }
}

/// A deterministic state machine replicated through keel's log.
///
/// The [crate documentation](crate) opens with a whole one (a counter, in 40 lines);
/// `engine/examples/bank_ledger.rs` and `job_queue.rs` are complete programs with
/// their own commands, responses and snapshot formats.
///
/// keel calls [`apply`](Self::apply) (or [`apply_batch`](Self::apply_batch)) on one
/// thread, in log order, with each committed command exactly once per state: never
/// for an index at or below [`applied_index`](Self::applied_index), which is how a
/// state machine that persists itself (and its applied index, atomically with its
/// data) avoids applying an entry twice after a restart. Readers share the state
/// machine behind a read-write lock meanwhile (`Replica::read`), so the type is `Sync`.
///
/// Applying must be deterministic: the same commands in the same order give the same
/// state and responses on every replica. No wall clock, no randomness, no I/O whose
/// outcome differs between replicas; time, where a command needs it, comes in the
/// command (the proposer's clock) or from the log (its index).
///
/// A command that the application refuses (a transfer that would overdraw, a claim
/// on a job already taken) is not an error here: it is applied (as a no-op) and the
/// refusal is its [`Response`](Self::Response). An `Err` from `apply` means the state
/// machine's own storage failed; the node then stops as a whole rather than let this
/// replica skip what the others applied.
pub trait StateMachine: Send + Sync + 'static {
    /// What callers propose.
    type Command: Command;
    /// What the caller that proposed a command gets back once it is applied.
    type Response: Send + 'static;

    /// The index of the newest entry whose effect is in the state (0 for none).
    fn applied_index(&self) -> u64;

    /// Applies `command`, committed at `index` (above `applied_index()`), and records
    /// `index` as applied.
    fn apply(&mut self, index: u64, command: Self::Command) -> io::Result<Self::Response>;

    /// Applies a run of commands committed at increasing indexes, returning one
    /// response per command, in order. The default applies them one by one; a state
    /// machine with storage of its own makes the run one write (keel's RocksDB store:
    /// one `WriteBatch` carrying the data and the new applied index).
    fn apply_batch(
        &mut self,
        commands: Vec<(u64, Self::Command)>,
    ) -> io::Result<Vec<Self::Response>> {
        let mut responses = Vec::with_capacity(commands.len());
        for (index, command) in commands {
            responses.push(self.apply(index, command)?);
        }
        Ok(responses)
    }

    /// Records that the entries up to `index` are applied, including entries that
    /// carried no command for this state machine (a leader's empty entry, a membership
    /// change, bytes that did not decode). keel calls it after every batch with the
    /// batch's last index, which may be one `apply` already recorded; the index never
    /// goes down. Nothing needs persisting: replaying entries without a command
    /// changes nothing.
    fn mark_applied(&mut self, index: u64);

    /// Writes the whole state, as of `applied_index()`, to `out` (a snapshot, in the
    /// state machine's own format: keel frames, checksums and stores the bytes).
    /// Called with applies held back, unless [`freeze`](Self::freeze) hands out an
    /// image instead.
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()>;

    /// Replaces the whole state with the one `input` holds (written by
    /// [`write_snapshot`](Self::write_snapshot), possibly on another node), which is as
    /// of log index `index`; afterwards `applied_index()` is `index`.
    ///
    /// keel checks the snapshot's checksums end to end before it calls this, and again
    /// as the bytes are read. An error stops the node (at its next start it restores
    /// again, from scratch), so a state machine that persists itself must switch to
    /// the restored state atomically, as keel's RocksDB store does.
    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()>;

    /// An immutable image of the state as of `applied_index()` that a thread of its
    /// own can write while this state machine goes on applying, if one can be made
    /// cheaply (a pointer copy of a persistent map, a storage engine's snapshot).
    /// `None` (the default) means snapshots are written in place with
    /// [`write_snapshot`](Self::write_snapshot), holding applies back meanwhile.
    fn freeze(&mut self) -> Option<Box<dyn FrozenState>> {
        None
    }
}

/// A point-in-time image of a state machine, detached from it (see
/// [`StateMachine::freeze`]).
pub trait FrozenState: Send + 'static {
    /// Writes the image to `out`, in the same format as
    /// [`StateMachine::write_snapshot`].
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()>;
}
