//! Replicated state machines: the [`StateMachine`] trait any application implements to
//! run on keel's pipeline, and keel's own key-value store ([`KvStore`]) on it.
//!
//! Once the node runs, the apply stage is the only writer (before the stages start,
//! recovery restores the newest snapshot into it); readers (`Replica::read`,
//! `Db::get`) share it behind a read-write lock. Applying is idempotent by index: keel
//! never hands a state machine an entry at or below its
//! [`applied_index`](StateMachine::applied_index), so replaying the log after a restart
//! (or a duplicated hand-out) never applies anything twice.
//!
//! The key-value store has two maps: [`MemoryStateMachine`] (in memory, rebuilt from
//! the newest snapshot plus the log on every start) and, behind the `rocksdb` feature,
//! `RocksStateMachine` (persistent; a restart replays only the log above its applied
//! index). Both write snapshots in `keel_snapshot::memory`'s layout, so either restores
//! the other's.
//!
//! Taking a snapshot must not stop applying for as long as the image takes to write:
//! a state machine that can freeze its state cheaply hands out a [`FrozenState`]
//! ([`StateMachine::freeze`]), which the apply stage writes on a thread of its own while
//! it goes on applying. The memory map hands out its main layer and collects later
//! writes in an overlay meanwhile, so freezing it is a pointer copy; one that cannot
//! freeze is written in place, holding applies back meanwhile.
//!
//! An error from [`StateMachine::apply`] or [`StateMachine::apply_batch`] means local
//! storage failed (a refused command is a response, not an error): the apply stage
//! stops the node rather than let this replica skip an entry the others applied.

mod kv;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod stored;
mod traits;

#[cfg(feature = "rocksdb")]
pub use self::rocksdb::{RocksStateMachine, RESTORE_BATCH_MAX_BYTES};
pub use kv::KvStore;
pub use memory::MemoryStateMachine;
pub use stored::{restore_from_store, save_frozen_to_store, save_to_store};
pub use traits::{Command, DecodeError, FrozenState, StateMachine};
