//! The Raft consensus algorithm as a pure, deterministic state machine.
#![deny(missing_docs)]

pub mod codec;
mod errors;
mod storage;
mod types;
pub mod util;

pub use errors::{Error, Result, StorageError};
pub use storage::{MemoryStorage, RaftState, Storage};
pub use types::*;
