//! Applying membership changes to the tracker's configuration: validation and the
//! joint-consensus transitions (etcd's `confchange/` package).

mod changer;
mod restore;

pub use changer::Changer;
pub use restore::restore;
