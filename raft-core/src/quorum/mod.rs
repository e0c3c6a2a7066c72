//! Quorum arithmetic: which index a configuration has committed and how a vote went.
//! Pure functions over id sets, kept apart from progress tracking so the rules can be
//! tested on their own (etcd's `quorum/` package).

mod joint;
mod majority;
mod types;

pub use joint::JointConfig;
pub use majority::MajorityConfig;
pub use types::{AckedIndexer, VoteResult};
