//! [`KvStore`]: the key-value store [`Db`](crate::Db) serves, on either of keel's two
//! maps. One state machine among any others: it implements the public
//! [`StateMachine`] trait and nothing more.

use std::io::{self, Read, Write};

use super::{FrozenState, MemoryStateMachine, StateMachine};
use crate::command::Op;
use crate::config::{Config, StateMachineKind};
use crate::error::Result;

/// The key-value store: a map from byte keys to byte values, written with [`Op`]s.
/// Both kinds write snapshots in `keel_snapshot::memory`'s layout, so either restores
/// the other's.
#[derive(Debug)]
pub enum KvStore {
    /// In memory, rebuilt from the newest snapshot plus the log at every start.
    Memory(MemoryStateMachine),
    /// In RocksDB, kept across restarts (cargo feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb(super::RocksStateMachine),
}

impl KvStore {
    /// The store `config.state_machine` names, opened (RocksDB's in
    /// `config.data_dir/rocksdb/sm/`). [`Db::open`](crate::Db::open) is this and
    /// [`Replica::open`](crate::Replica::open):
    ///
    /// ```
    /// use keel_engine::state_machine::KvStore;
    /// use keel_engine::{Config, Db, Replica};
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// let config = Config::single_node(dir.path());
    /// let db = Db::from(Replica::open(config.clone(), KvStore::open(&config)?)?);
    /// db.put(b"k", b"v")?;
    /// assert_eq!(db.read(|kv| kv.len())?, 1);
    /// db.close()?;
    /// # Ok::<(), keel_engine::Error>(())
    /// ```
    pub fn open(config: &Config) -> Result<KvStore> {
        Ok(match config.state_machine {
            StateMachineKind::Memory => KvStore::Memory(MemoryStateMachine::new()),
            #[cfg(feature = "rocksdb")]
            StateMachineKind::RocksDb => {
                KvStore::RocksDb(super::RocksStateMachine::open(config.rocksdb_sm_dir())?)
            }
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            KvStore::Memory(m) => Ok(m.get(key)),
            #[cfg(feature = "rocksdb")]
            KvStore::RocksDb(r) => r.get(key),
        }
    }

    /// Number of keys (O(keys) on RocksDB: for tests and tools).
    pub fn len(&self) -> u64 {
        match self {
            KvStore::Memory(m) => m.len(),
            #[cfg(feature = "rocksdb")]
            KvStore::RocksDb(r) => r.len(),
        }
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn inner(&self) -> &dyn StateMachine<Command = Op, Response = ()> {
        match self {
            KvStore::Memory(m) => m,
            #[cfg(feature = "rocksdb")]
            KvStore::RocksDb(r) => r,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn StateMachine<Command = Op, Response = ()> {
        match self {
            KvStore::Memory(m) => m,
            #[cfg(feature = "rocksdb")]
            KvStore::RocksDb(r) => r,
        }
    }
}

impl StateMachine for KvStore {
    type Command = Op;
    type Response = ();

    fn applied_index(&self) -> u64 {
        self.inner().applied_index()
    }

    fn apply(&mut self, index: u64, op: Op) -> io::Result<()> {
        self.inner_mut().apply(index, op)
    }

    fn apply_batch(&mut self, ops: Vec<(u64, Op)>) -> io::Result<Vec<()>> {
        self.inner_mut().apply_batch(ops)
    }

    fn mark_applied(&mut self, index: u64) {
        self.inner_mut().mark_applied(index)
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.inner().write_snapshot(out)
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        self.inner_mut().restore_snapshot(index, input)
    }

    fn freeze(&mut self) -> Option<Box<dyn FrozenState>> {
        self.inner_mut().freeze()
    }
}
