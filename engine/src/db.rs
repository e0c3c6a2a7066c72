//! [`Db`]: the embedded, replicated key-value map: a [`Replica`] of keel's
//! [`KvStore`], with `put`, `get` and `delete` on top. It uses nothing but the
//! replica's public API.

use std::time::Duration;

use crate::command::Op;
use crate::config::Config;
use crate::error::Result;
use crate::replica::Replica;
use crate::state_machine::KvStore;

/// A handle on one running node of the replicated key-value map. Cheap to clone; every
/// clone drives the same node.
///
/// It dereferences to its [`Replica`]`<`[`KvStore`]`>`, which offers everything else:
/// membership ([`add_member`](Replica::add_member) & co.), leadership, status, metrics,
/// [`close`](Replica::close), and reads of the whole store
/// ([`read`](Replica::read)`(|kv| kv.len())`). The node stops when `close` is called
/// or the last handle is dropped.
///
/// ```no_run
/// let db = keel_engine::Db::open(keel_engine::Config::single_node("data/"))?;
/// db.put(b"k", b"v")?;
/// assert_eq!(db.get(b"k")?, Some(b"v".to_vec()));
/// db.close()?;
/// # Ok::<(), keel_engine::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Db {
    replica: Replica<KvStore>,
}

impl std::ops::Deref for Db {
    type Target = Replica<KvStore>;

    fn deref(&self) -> &Replica<KvStore> {
        &self.replica
    }
}

impl From<Replica<KvStore>> for Db {
    fn from(replica: Replica<KvStore>) -> Db {
        Db { replica }
    }
}

impl Db {
    /// Opens (recovering) or creates the node described by `config`, on the store
    /// [`Config::state_machine`] names, and starts its threads.
    pub fn open(config: Config) -> Result<Db> {
        let store = KvStore::open(&config)?;
        Ok(Db {
            replica: Replica::open(config, store)?,
        })
    }

    /// The replica underneath.
    pub fn replica(&self) -> &Replica<KvStore> {
        &self.replica
    }

    /// Sets `key` to `value`; returns once the write is committed and applied here.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_timeout(key, value, self.default_timeout())
    }

    /// [`put`](Self::put) with an explicit timeout.
    pub fn put_timeout(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<()> {
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.replica.propose_timeout(op, timeout)
    }

    /// Removes `key`; returns once the delete is committed and applied here.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.delete_timeout(key, self.default_timeout())
    }

    /// [`delete`](Self::delete) with an explicit timeout.
    pub fn delete_timeout(&self, key: &[u8], timeout: Duration) -> Result<()> {
        let op = Op::Delete { key: key.to_vec() };
        self.replica.propose_timeout(op, timeout)
    }

    /// The value of `key`, linearizable: the leader confirms it still leads (ReadIndex)
    /// and this node waits until it has applied everything committed before the read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_timeout(key, self.default_timeout())
    }

    /// [`get`](Self::get) with an explicit timeout.
    pub fn get_timeout(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.replica.read_timeout(timeout, |kv| kv.get(key))?
    }

    /// The value of `key` in this node's store, without asking the leader: may be
    /// stale (it is what this node has applied).
    pub fn get_local(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.replica.read_local(|kv| kv.get(key))?
    }
}

#[cfg(test)]
mod tests {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn db_is_send_sync_clone() {
        assert_shareable::<super::Db>();
    }
}
