//! Recovery and bootstrap: opening a node's log, snapshot store and state machine,
//! writing a brand-new cluster's initial membership into the log, and bringing the log
//! in line with the newest loadable snapshot ([`recover`]). Runs before any stage
//! thread starts.

use std::sync::Arc;

use keel_log_cache::{LogCache, LogCacheOptions};
use keel_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, HardState, SnapshotMetadata, Storage,
};
use keel_snapshot::{SnapshotStore, StoreOptions};
use keel_wal::{LogBatch, LogStore, Wal, WalOptions};
use parking_lot::RwLock;

use crate::config::{Config, LogBackend};
use crate::data_dir::DataDirLock;
use crate::error::{Error, Result};
use crate::members::Members;
use crate::state_machine::{restore_from_store, StateMachine};

pub(crate) fn open_log(config: &Config) -> Result<Arc<dyn LogStore>> {
    match config.log_backend {
        LogBackend::Wal => {
            let opts = WalOptions {
                segment_size_bytes: config.wal_segment_size_bytes,
                sync_policy: config.log_sync_policy(),
                ..WalOptions::default()
            };
            let wal = Wal::open(Arc::clone(&config.fs), config.wal_dir(), opts)?;
            Ok(Arc::new(wal))
        }
        #[cfg(feature = "rocksdb")]
        LogBackend::RocksDb => {
            let log = keel_wal::RocksLogStore::open_with_sync_policy(
                config.data_dir.join("rocksdb"),
                config.log_sync_policy(),
            )?;
            Ok(Arc::new(log))
        }
    }
}

/// Brings the state machine up to the newest snapshot that passes every check and
/// returns that snapshot's description (metadata and member addresses). Damaged
/// snapshots are skipped (the log still reaches back to an older one, see the apply
/// stage). A persistent state machine that already holds a snapshot's index only reads
/// its checked header.
pub(crate) fn load_snapshot<S: StateMachine>(
    id: u64,
    sm: &mut S,
    store: &SnapshotStore,
) -> Result<Option<keel_snapshot::SnapshotInfo>> {
    let held = sm.applied_index();
    for snap_id in store.list()? {
        let outcome = if snap_id.index <= held {
            store.info(snap_id)
        } else {
            // Checked end to end first: a state machine may replace its state as it
            // reads, so damage found halfway would leave it half restored, with no
            // older snapshot to fall back to.
            store
                .verify(snap_id)
                .and_then(|_| restore_from_store(sm, store, snap_id))
        };
        match outcome {
            Ok(info) => return Ok(Some(info)),
            Err(e @ keel_snapshot::SnapshotError::Damaged { .. }) => {
                log::error!("node {id}: skipping damaged snapshot {snap_id:?}: {e}");
            }
            Err(e) => return Err(e.into()),
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
                data: keel_raft::codec::encode(&cc),
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
    // Durable (synced if the log's policy syncs): raft counts these entries committed.
    log.write(&batch, true)?;
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
            .then(|| keel_raft::codec::decode::<ConfChangeV2>(&e.data).ok())
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
    loaded: Option<&keel_raft::SnapshotMetadata>,
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
    }
    if batch.snapshot.is_some() {
        cache.apply_snapshot(meta.clone())?;
    } else if meta.index > marker.index {
        cache.record_snapshot(meta.clone())?;
    }
    Ok((meta.conf_state.clone(), 0))
}

/// A node's storage, opened and brought in line with itself: what the stages start
/// from.
pub(crate) struct Recovered {
    /// The data directory's lock, held until the node has stopped writing.
    pub(crate) lock: DataDirLock,
    pub(crate) store: Arc<SnapshotStore>,
    pub(crate) cache: LogCache<dyn LogStore>,
    /// The membership to start with.
    pub(crate) conf_state: ConfState,
    /// What raft counts as applied at start (the snapshot's index, or the bootstrap
    /// entries).
    pub(crate) applied: u64,
    /// The snapshot the state machine was loaded from, if any.
    pub(crate) loaded: Option<SnapshotMetadata>,
    /// The member address book as of `applied`.
    pub(crate) members: Arc<RwLock<Members>>,
}

/// Opens (creating, and bootstrapping a brand-new cluster's) the storage of the node
/// `config` describes: the data directory's lock, the log, the snapshot store, the
/// state machine `sm` loaded from the newest good snapshot (handed back), and the log
/// cache, with the log made to agree with that snapshot.
pub(crate) fn recover<S: StateMachine>(config: &Config, mut sm: S) -> Result<(Recovered, S)> {
    let id = config.id;
    config.fs.create_dir_all_durably(&config.data_dir)?;
    let lock = crate::data_dir::lock(config.fs.as_ref(), &config.data_dir)?;
    let log = open_log(config)?;
    let store = Arc::new(SnapshotStore::open(
        Arc::clone(&config.fs),
        config.snap_dir(),
        StoreOptions {
            retain_count: config.snapshots_retained,
            max_receive_bytes: config.max_snapshot_receive_bytes,
            ..StoreOptions::default()
        },
    )?);
    if is_brand_new(log.as_ref(), &store)? {
        bootstrap(config, log.as_ref())?;
    }
    let loaded_info = load_snapshot(id, &mut sm, &store)?;
    let loaded = loaded_info.as_ref().map(|i| i.metadata.clone());
    let cache = LogCache::open(
        Arc::clone(&log),
        LogCacheOptions {
            max_bytes: config.log_cache_max_bytes,
        },
    )?;
    let (conf_state, bootstrapped) = recover_log(config, log.as_ref(), &cache, loaded.as_ref())?;
    cache.set_conf_state(conf_state.clone());
    let held = sm.applied_index();
    let log_end = cache
        .last_index()?
        .max(loaded.as_ref().map_or(0, |m| m.index));
    if held > log_end {
        // Entries at or below `held` would be skipped as already applied, yet the
        // log and snapshots no longer have them: new entries there would be lost.
        return Err(Error::Config(format!(
            "the state machine has applied index {held} but the log and snapshots end \
             at {log_end}; they were removed or lost writes (to rebuild the state \
             machine from them, remove its own storage: for keel's RocksDB store, {})",
            config.rocksdb_sm_dir().display()
        )));
    }
    // Raft hands out everything after the snapshot again, even what a persistent
    // state machine already holds, so membership changes after the snapshot are
    // applied to raft; the apply stage skips their operations by index.
    // The bootstrap entries are membership changes already folded into `conf_state`
    // and change nothing in the state machine: raft counts them applied, so a lone
    // voter can campaign at once.
    let applied = loaded
        .as_ref()
        .map_or(bootstrapped, |m| m.index.max(bootstrapped));
    // The address book as of `applied`; the log above it replays into it.
    let members = match loaded_info {
        Some(info) => Members::from_snapshot(info),
        None => Members {
            index: applied,
            conf_state: conf_state.clone(),
            ..Members::default()
        },
    };
    if let (Some(observer), Some(_)) = (&config.membership_observer, &loaded) {
        // Before the raft thread replays the changes above the snapshot.
        observer.restored(&members);
    }
    let rec = Recovered {
        lock,
        store,
        cache,
        conf_state,
        applied,
        loaded,
        members: Arc::new(RwLock::new(members)),
    };
    Ok((rec, sm))
}
