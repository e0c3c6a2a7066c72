//! Recovery and bootstrap: opening a node's log, snapshot store and state machine,
//! writing a brand-new cluster's initial membership into the log, and bringing the log
//! in line with the newest loadable snapshot.

use std::sync::Arc;

use parking_lot::RwLock;
use raft_core::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, HardState, Storage,
};
use snapshot::{LogCache, SnapshotStore};
use wal::{LogBatch, LogStore, SyncPolicy, Wal, WalOptions};

use crate::config::{Config, LogBackend, StateMachineKind};
use crate::error::{Error, Result};
use crate::state_machine::{MemoryStateMachine, StateMachine};

pub(crate) fn open_log(config: &Config) -> Result<Arc<dyn LogStore>> {
    match config.log_backend {
        LogBackend::Wal => {
            let opts = WalOptions {
                segment_size_bytes: config.wal_segment_size_bytes,
                sync_policy: if config.fsync {
                    SyncPolicy::Always
                } else {
                    SyncPolicy::Never
                },
                ..WalOptions::default()
            };
            let wal = Wal::open(Arc::clone(&config.fs), config.wal_dir(), opts)?;
            Ok(Arc::new(wal))
        }
        #[cfg(feature = "rocksdb")]
        LogBackend::RocksDb => {
            let log = wal::RocksLogStore::open(config.data_dir.join("rocksdb"))?;
            Ok(Arc::new(log))
        }
    }
}

pub(crate) fn open_state_machine(config: &Config) -> Result<Arc<RwLock<dyn StateMachine>>> {
    Ok(match config.state_machine {
        StateMachineKind::Memory => Arc::new(RwLock::new(MemoryStateMachine::new())),
        #[cfg(feature = "rocksdb")]
        StateMachineKind::RocksDb => Arc::new(RwLock::new(
            crate::state_machine::RocksStateMachine::open(config.rocksdb_sm_dir())?,
        )),
    })
}

/// Brings the state machine up to the newest snapshot that passes every check and
/// returns that snapshot's description (metadata and member addresses). Damaged
/// snapshots are skipped (the log still reaches back to an older one, see the apply
/// stage). A persistent state machine that already holds a snapshot's index only reads
/// its checked header.
pub(crate) fn load_snapshot(
    id: u64,
    sm: &mut dyn StateMachine,
    store: &SnapshotStore,
) -> Result<Option<snapshot::SnapshotInfo>> {
    let held = sm.applied_index();
    for snap_id in store.list()? {
        let outcome = if snap_id.index <= held {
            store.info(snap_id).map_err(Error::from)
        } else {
            sm.restore_snapshot(store, snap_id)
        };
        match outcome {
            Ok(meta) => return Ok(Some(meta)),
            Err(Error::Snapshot(e @ snapshot::SnapshotError::Damaged { .. })) => {
                log::error!("node {id}: skipping damaged snapshot {snap_id:?}: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

// A node that has never written anything: no log, no hard state, no snapshot.
pub(crate) fn is_brand_new(log: &dyn LogStore, store: &SnapshotStore) -> Result<bool> {
    Ok(log.last_index() == 0
        && log.snapshot_marker().is_none()
        && log.hard_state().is_empty()
        && store.list()?.is_empty())
}

/// Writes the initial membership as the first entries of the log, as etcd does: one
/// `AddNode` per initial voter (sorted), all at term 1 and committed. Every node of a
/// new cluster writes the same entries, so their logs agree; a node added later
/// receives them from the leader and rebuilds the membership from the log. A joining
/// node writes nothing: its log comes from the leader.
pub(crate) fn bootstrap(config: &Config, log: &dyn LogStore) -> Result<()> {
    if config.join || config.peers.is_empty() {
        return Ok(());
    }
    let mut voters = config.peers.clone();
    voters.sort_unstable();
    let entries: Vec<Entry> = voters
        .iter()
        .enumerate()
        .map(|(i, &node_id)| {
            let cc = ConfChangeV2 {
                transition: ConfChangeTransition::Auto,
                changes: vec![ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id,
                }],
                context: Vec::new(),
            };
            Entry {
                term: 1,
                index: i as u64 + 1,
                entry_type: EntryType::ConfChangeV2,
                data: raft_core::codec::encode(&cc),
            }
        })
        .collect();
    let batch = LogBatch {
        hard_state: Some(HardState {
            term: 1,
            vote: 0,
            commit: entries.len() as u64,
        }),
        entries,
        snapshot: None,
    };
    log.write(&batch, true)?;
    if config.fsync {
        log.sync()?;
    }
    Ok(())
}

// Most initial voters read back from the bootstrap entries.
const MAX_BOOTSTRAP_ENTRIES: u64 = 1024;

/// The membership the bootstrap entries at the head of the log establish, and how many
/// there are (0 when the log does not start with them, e.g. a joining node's empty log).
fn bootstrap_membership(log: &dyn LogStore) -> Result<(Vec<u64>, u64)> {
    let committed = log.hard_state().commit.min(log.last_index());
    if log.first_index() != 1 || committed == 0 {
        return Ok((Vec::new(), 0));
    }
    let hi = committed.min(MAX_BOOTSTRAP_ENTRIES) + 1;
    let mut voters = Vec::new();
    for e in log.entries(1, hi, u64::MAX)? {
        let add = (e.term == 1 && e.entry_type == EntryType::ConfChangeV2)
            .then(|| raft_core::codec::decode::<ConfChangeV2>(&e.data).ok())
            .flatten()
            .filter(|cc| cc.context.is_empty())
            .and_then(|cc| match cc.changes.as_slice() {
                [c] if c.change_type == ConfChangeType::AddNode => Some(c.node_id),
                _ => None,
            });
        match add {
            Some(id) if e.index == voters.len() as u64 + 1 => voters.push(id),
            _ => break,
        }
    }
    let n = voters.len() as u64;
    Ok((voters, n))
}

/// Brings the log in line with the snapshot the state machine was loaded from, and
/// returns the membership to start with and the number of bootstrap entries it
/// already includes (to be counted as applied).
pub(crate) fn recover_log(
    config: &Config,
    log: &dyn LogStore,
    cache: &LogCache<dyn LogStore>,
    loaded: Option<&raft_core::SnapshotMetadata>,
) -> Result<(ConfState, u64)> {
    let marker = cache.snapshot_metadata();
    let loaded_index = loaded.map_or(0, |m| m.index);
    if marker.index > loaded_index {
        // The log restarts after a snapshot we could not load: entries between are gone.
        return Err(Error::Config(format!(
            "the log starts after snapshot {} but the newest loadable snapshot is at {loaded_index}; \
             the snapshot directory is missing or damaged",
            marker.index
        )));
    }
    let Some(meta) = loaded else {
        if log.first_index() > 1 {
            return Err(Error::Config(format!(
                "the log is compacted to {} but there is no snapshot",
                log.first_index() - 1
            )));
        }
        let (voters, bootstrapped) = bootstrap_membership(log)?;
        if bootstrapped > 0 {
            return Ok((
                ConfState {
                    voters,
                    ..ConfState::default()
                },
                bootstrapped,
            ));
        }
        // A log from before bootstrap entries, or a joining node's (empty) one.
        let voters = if config.join {
            Vec::new()
        } else {
            config.peers.clone()
        };
        return Ok((
            ConfState {
                voters,
                ..ConfState::default()
            },
            0,
        ));
    };
    let mut hs = log.hard_state();
    let in_log = meta.index <= cache.last_index().unwrap_or(0)
        && cache.term(meta.index).is_ok_and(|t| t == meta.term);
    let mut batch = LogBatch::default();
    if meta.index > marker.index && !in_log {
        // A snapshot received from the leader whose marker never reached the log: the
        // log restarts after it, as it would have.
        batch.snapshot = Some(meta.clone());
    }
    if hs.term < meta.term {
        // A term below the last entry's would confuse the next election; moving to a
        // later term (with no vote in it) is always safe.
        hs.term = meta.term;
        hs.vote = 0;
        batch.hard_state = Some(hs);
    }
    if hs.commit < meta.index {
        // Everything in a snapshot was committed; the hard state may lag because the
        // apply stage can snapshot before the persist stage writes the newer commit.
        hs.commit = meta.index;
        batch.hard_state = Some(hs);
    }
    if !batch.is_empty() {
        log.write(&batch, true)?;
        if config.fsync {
            log.sync()?;
        }
    }
    if batch.snapshot.is_some() {
        cache.apply_snapshot(meta.clone())?;
    } else if meta.index > marker.index {
        cache.record_snapshot(meta.clone())?;
    }
    Ok((meta.conf_state.clone(), 0))
}
