//! The key-value model the harness and the engine's safety tests drive, so the same
//! tests run on any state machine that can play it: [`KvModel`] (a state machine with
//! puts, deletes and point reads), [`KvClient`] (the calls a test makes of a node:
//! `put`, `get`, `delete`, as [`Db`] has them), and [`Registers`], a state machine of
//! its own (its own command encoding, responses and snapshot format) written on the
//! public API alone, against which the crash, failpoint and linearizability tests
//! check that nothing in keel favours its built-in store.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::state_machine::{Command, DecodeError, KvStore, StateMachine};
use crate::{Config, Db, Op, Replica, Result};

/// A state machine that can play a map from byte keys to byte values.
pub trait KvModel: StateMachine {
    /// What the harness opens for a node of this state machine: [`Db`] for keel's
    /// store, a [`Replica`] for any other.
    type Node: KvClient<Machine = Self>;

    /// Opens (recovering) the node `config` describes.
    fn open_node(config: Config) -> Result<Self::Node>;

    /// The command that sets `key` to `value`.
    fn put(key: &[u8], value: &[u8]) -> Self::Command;

    /// The command that removes `key`.
    fn delete(key: &[u8]) -> Self::Command;

    /// The value of `key` in this state.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// The calls a test makes of one node, whatever its state machine: [`Db`]'s
/// key-value calls, and the [`Replica`] for everything else.
pub trait KvClient: Send + Sync + 'static {
    /// The node's state machine.
    type Machine: StateMachine;

    /// The replica underneath (status, membership, metrics, close).
    fn replica(&self) -> &Replica<Self::Machine>;

    /// Sets `key` to `value` ([`Db::put_timeout`]).
    fn put_timeout(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<()>;

    /// Removes `key` ([`Db::delete_timeout`]).
    fn delete_timeout(&self, key: &[u8], timeout: Duration) -> Result<()>;

    /// The value of `key`, linearizable ([`Db::get_timeout`]).
    fn get_timeout(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>>;

    /// The value of `key` as this node has applied it ([`Db::get_local`]).
    fn get_local(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// [`put_timeout`](Self::put_timeout) with the node's default timeout.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_timeout(key, value, self.replica().default_timeout())
    }

    /// [`delete_timeout`](Self::delete_timeout) with the node's default timeout.
    fn delete(&self, key: &[u8]) -> Result<()> {
        self.delete_timeout(key, self.replica().default_timeout())
    }

    /// [`get_timeout`](Self::get_timeout) with the node's default timeout.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_timeout(key, self.replica().default_timeout())
    }
}

impl KvModel for KvStore {
    type Node = Db;

    fn open_node(config: Config) -> Result<Db> {
        Db::open(config)
    }

    fn put(key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn delete(key: &[u8]) -> Op {
        Op::Delete { key: key.to_vec() }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        KvStore::get(self, key)
    }
}

impl KvClient for Db {
    type Machine = KvStore;

    fn replica(&self) -> &Replica<KvStore> {
        Db::replica(self)
    }

    fn put_timeout(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<()> {
        Db::put_timeout(self, key, value, timeout)
    }

    fn delete_timeout(&self, key: &[u8], timeout: Duration) -> Result<()> {
        Db::delete_timeout(self, key, timeout)
    }

    fn get_timeout(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>> {
        Db::get_timeout(self, key, timeout)
    }

    fn get_local(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Db::get_local(self, key)
    }
}

impl KvModel for Registers {
    type Node = Replica<Registers>;

    fn open_node(config: Config) -> Result<Replica<Registers>> {
        Replica::open(config, Registers::default())
    }

    fn put(key: &[u8], value: &[u8]) -> RegisterOp {
        RegisterOp::Write {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn delete(key: &[u8]) -> RegisterOp {
        RegisterOp::Clear { key: key.to_vec() }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.values.get(key).cloned())
    }
}

impl<M: KvModel> KvClient for Replica<M> {
    type Machine = M;

    fn replica(&self) -> &Replica<M> {
        self
    }

    fn put_timeout(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<()> {
        self.propose_timeout(M::put(key, value), timeout).map(drop)
    }

    fn delete_timeout(&self, key: &[u8], timeout: Duration) -> Result<()> {
        self.propose_timeout(M::delete(key), timeout).map(drop)
    }

    fn get_timeout(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.read_timeout(timeout, |m| m.get(key))?
    }

    fn get_local(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read_local(|m| m.get(key))?
    }
}

/// A test state machine with nothing in common with keel's store but the model: an
/// ordered map of registers, written with its own [`RegisterOp`] encoding, answering
/// each write with the value it replaced, and snapshotted in its own format (written
/// in place: it does not [`freeze`](StateMachine::freeze)).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registers {
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    applied: u64,
}

/// A write to [`Registers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOp {
    /// Set register `key` to `value`.
    Write {
        /// The register.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Clear register `key`.
    Clear {
        /// The register.
        key: Vec<u8>,
    },
}

// Layout: tag byte (`W` or `C`), then u32 little-endian lengths before key and value.
const TAG_WRITE: u8 = b'W';
const TAG_CLEAR: u8 = b'C';
// Snapshot layout: magic, register count (u64 LE), then each register as
// (u32 LE key length, key, u32 LE value length, value), in key order.
const SNAPSHOT_MAGIC: &[u8; 4] = b"REGS";
// Bounds a snapshot's claims before anything is allocated for them.
const MAX_FIELD_BYTES: u32 = 64 << 20;

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_field<'a>(bytes: &mut &'a [u8]) -> std::result::Result<&'a [u8], DecodeError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("register command cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("register command field cut short".into());
    }
    let (field, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(field)
}

impl Command for RegisterOp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RegisterOp::Write { key, value } => {
                out.push(TAG_WRITE);
                put_field(out, key);
                put_field(out, value);
            }
            RegisterOp::Clear { key } => {
                out.push(TAG_CLEAR);
                put_field(out, key);
            }
        }
    }

    fn decode(bytes: &[u8]) -> std::result::Result<RegisterOp, DecodeError> {
        let (&tag, mut rest) = bytes.split_first().ok_or("empty register command")?;
        let op = match tag {
            TAG_WRITE => RegisterOp::Write {
                key: take_field(&mut rest)?.to_vec(),
                value: take_field(&mut rest)?.to_vec(),
            },
            TAG_CLEAR => RegisterOp::Clear {
                key: take_field(&mut rest)?.to_vec(),
            },
            other => return Err(format!("unknown register command tag {other}").into()),
        };
        if !rest.is_empty() {
            return Err("bytes after a register command".into());
        }
        Ok(op)
    }
}

fn read_u32(input: &mut dyn Read) -> io::Result<u32> {
    let mut buf = [0u8; 4];
    input.read_exact(&mut buf)?;
    Ok(u32::from_le_bytes(buf))
}

fn read_field(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let len = read_u32(input)?;
    if len > MAX_FIELD_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a register field of {len} bytes"),
        ));
    }
    let mut field = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut field)?;
    if field.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(field)
}

impl StateMachine for Registers {
    type Command = RegisterOp;
    /// The value the write replaced.
    type Response = Option<Vec<u8>>;

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, op: RegisterOp) -> io::Result<Option<Vec<u8>>> {
        assert!(index > self.applied, "register {index} applied twice");
        self.applied = index;
        Ok(match op {
            RegisterOp::Write { key, value } => self.values.insert(key, value),
            RegisterOp::Clear { key } => self.values.remove(&key),
        })
    }

    fn mark_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(SNAPSHOT_MAGIC)?;
        out.write_all(&(self.values.len() as u64).to_le_bytes())?;
        let mut record = Vec::new();
        for (key, value) in &self.values {
            record.clear();
            put_field(&mut record, key);
            put_field(&mut record, value);
            out.write_all(&record)?;
        }
        Ok(())
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a register snapshot",
            ));
        }
        let mut count = [0u8; 8];
        input.read_exact(&mut count)?;
        let mut values = BTreeMap::new();
        for _ in 0..u64::from_le_bytes(count) {
            let key = read_field(input)?;
            let value = read_field(input)?;
            values.insert(key, value);
        }
        let mut extra = [0u8; 1];
        if input.read(&mut extra)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bytes after the last register",
            ));
        }
        self.values = values;
        self.applied = index;
        Ok(())
    }
}

impl Registers {
    /// Registers set.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no register is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_damage_is_an_error() {
        for op in [
            RegisterOp::Write {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            RegisterOp::Clear { key: b"k".to_vec() },
        ] {
            let mut bytes = Vec::new();
            op.encode(&mut bytes);
            assert_eq!(RegisterOp::decode(&bytes).ok(), Some(op));
            for cut in 0..bytes.len() {
                assert!(RegisterOp::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_registers() {
        let mut regs = Registers::default();
        assert_eq!(regs.apply(1, Registers::put(b"a", b"1")).unwrap(), None);
        assert_eq!(
            regs.apply(2, Registers::put(b"a", b"2")).unwrap(),
            Some(b"1".to_vec())
        );
        regs.apply(3, Registers::put(b"b", b"3")).unwrap();
        let mut image = Vec::new();
        regs.write_snapshot(&mut image).unwrap();
        let mut restored = Registers::default();
        restored.restore_snapshot(3, &mut image.as_slice()).unwrap();
        assert_eq!(restored, regs);
        for cut in 0..image.len() {
            let mut r = Registers::default();
            assert!(
                r.restore_snapshot(3, &mut &image[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
