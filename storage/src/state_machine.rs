//! The applied state: in memory, shared with readers, durable through snapshots.
//!
//! The application supplies a [`ReplicatedState`] (the generation registry); this module
//! feeds it committed entries, tracks the last applied log id and membership, and turns
//! it into snapshot files and back. Readers (the HTTP API) share the same
//! [`SharedState`] lock, so a read that waited for an applied index sees exactly the
//! state at or after that index.

use std::io::SeekFrom;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use controller_raft::Member;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    RaftTypeConfig, StorageError, StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::snapshot::{self, Meta, SnapshotDir, SnapshotError};

/// The application's state: deterministic, serializable, applied in log order.
pub trait ReplicatedState<C: RaftTypeConfig>:
    Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Applies one committed command. Must be deterministic: every replica gets the same
    /// answer from the same sequence of commands.
    fn apply(&mut self, command: &C::D) -> C::R;

    /// The state as it stands, serialized exactly as the state itself.
    type Frozen: Serialize + Send + 'static;

    /// Takes a [`Self::Frozen`] copy; must be cheap next to encoding the state. A
    /// snapshot takes it while holding the applied state and encodes it after letting go,
    /// so applying is never held up for as long as an encode takes.
    fn freeze(&self) -> Self::Frozen;
}

/// The state plus where in the log it stands.
#[derive(Debug, Default)]
pub struct Applied<S> {
    pub state: S,
    pub last_applied: Option<LogId<u64>>,
    pub last_membership: StoredMembership<u64, Member>,
}

/// The applied state, shared between the state machine and readers.
pub type SharedState<S> = Arc<RwLock<Applied<S>>>;

/// Snapshot counters for metrics.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    pub builds: AtomicU64,
    pub last_build_micros: AtomicU64,
    pub installs: AtomicU64,
    pub last_install_micros: AtomicU64,
    pub last_size_bytes: AtomicU64,
}

pub struct StateMachineStore<C, S> {
    shared: SharedState<S>,
    snapshots: SnapshotDir,
    /// Meta of the snapshot in `current.snap`; its lock also serializes replacing the file.
    current: Arc<Mutex<Option<Meta>>>,
    stats: Arc<SnapshotStats>,
    _config: std::marker::PhantomData<C>,
}

type Result<T> = std::result::Result<T, StorageError<u64>>;

fn snapshot_error(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn read_lock<S>(shared: &SharedState<S>) -> std::sync::RwLockReadGuard<'_, Applied<S>> {
    shared
        .read()
        .expect("state lock poisoned: a panic while applying")
}

impl<C, S> StateMachineStore<C, S>
where
    C: RaftTypeConfig<
        NodeId = u64,
        Node = Member,
        Entry = Entry<C>,
        SnapshotData = tokio::fs::File,
    >,
    C::R: Default,
    S: ReplicatedState<C>,
{
    /// Opens the snapshot dir and loads the latest snapshot, if any. A damaged snapshot
    /// is an error: the replica must not start from a state it cannot trust.
    pub fn open(dir: &std::path::Path) -> std::result::Result<Self, SnapshotError> {
        let snapshots = SnapshotDir::open(dir)?;
        let mut applied = Applied::<S>::default();
        let mut current = None;
        if let Some(bytes) = snapshots.read_current()? {
            let (meta, state): (Meta, S) = snapshot::decode(&bytes)?;
            tracing::info!(last_log_id = ?meta.last_log_id, bytes = bytes.len(), "loaded snapshot");
            applied = Applied {
                state,
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
            };
            current = Some(meta);
        }
        Ok(Self {
            shared: Arc::new(RwLock::new(applied)),
            snapshots,
            current: Arc::new(Mutex::new(current)),
            stats: Arc::default(),
            _config: std::marker::PhantomData,
        })
    }

    /// The state as readers see it.
    pub fn shared(&self) -> SharedState<S> {
        self.shared.clone()
    }

    pub fn stats(&self) -> Arc<SnapshotStats> {
        self.stats.clone()
    }

    /// What the snapshot on disk covers, for [`crate::LogStore::purge_behind`].
    pub fn durable_snapshot(&self) -> DurableSnapshot {
        DurableSnapshot(self.current.clone())
    }

    fn builder(&self) -> Builder<S> {
        Builder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
            current: self.current.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The log id up to which the snapshot on disk covers the log: it changes only once a
/// new snapshot file is durable.
#[derive(Debug, Clone)]
pub struct DurableSnapshot(Arc<Mutex<Option<Meta>>>);

impl DurableSnapshot {
    /// Whether the snapshot on disk covers log index `index`. While a new snapshot is
    /// being written (the lock is held through its fsyncs) the answer is "not yet", so
    /// an async caller never blocks on the write.
    pub fn covers(&self, index: u64) -> bool {
        let current = match self.0.try_lock() {
            Ok(current) => current,
            Err(std::sync::TryLockError::WouldBlock) => return false,
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("snapshot lock poisoned"),
        };
        current
            .as_ref()
            .and_then(|meta| meta.last_log_id)
            .is_some_and(|last| last.index >= index)
    }

    /// The last log index the snapshot on disk covers, if there is one (blocking while a
    /// new snapshot is being written).
    pub fn last_index(&self) -> Option<u64> {
        let current = self.0.lock().expect("snapshot lock poisoned");
        current
            .as_ref()
            .and_then(|meta| meta.last_log_id)
            .map(|last| last.index)
    }
}

/// Durably makes `bytes` (a snapshot taken at `meta`) the current snapshot, unless the
/// current one is already newer. Returns the meta that is current afterwards.
async fn persist_if_newer(
    snapshots: &SnapshotDir,
    current: &Arc<Mutex<Option<Meta>>>,
    meta: Meta,
    bytes: Vec<u8>,
) -> std::result::Result<Meta, SnapshotError> {
    let snapshots = snapshots.clone();
    let current = current.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = current.lock().expect("snapshot lock poisoned");
        if let Some(existing) = guard.as_ref() {
            if existing.last_log_id > meta.last_log_id {
                return Ok(existing.clone());
            }
        }
        snapshots.replace_current(&bytes)?;
        *guard = Some(meta.clone());
        Ok(meta)
    })
    .await
    .map_err(|e| SnapshotError::Io {
        path: "snapshot writer".into(),
        source: std::io::Error::other(e),
    })?
}

async fn open_current(
    snapshots: &SnapshotDir,
) -> std::result::Result<tokio::fs::File, SnapshotError> {
    tokio::fs::File::open(snapshots.current_path())
        .await
        .map_err(|source| SnapshotError::Io {
            path: snapshots.current_path().display().to_string(),
            source,
        })
}

pub struct Builder<S> {
    shared: SharedState<S>,
    snapshots: SnapshotDir,
    current: Arc<Mutex<Option<Meta>>>,
    stats: Arc<SnapshotStats>,
}

impl<C, S> RaftSnapshotBuilder<C> for Builder<S>
where
    C: RaftTypeConfig<
        NodeId = u64,
        Node = Member,
        Entry = Entry<C>,
        SnapshotData = tokio::fs::File,
    >,
    S: ReplicatedState<C>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>> {
        let started = Instant::now();
        let (meta, frozen) = {
            let applied = read_lock(&self.shared);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let meta = Meta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
                snapshot_id: format!("{}-{nanos}", applied.last_applied.map_or(0, |id| id.index)),
            };
            (meta, applied.state.freeze())
        };
        let frozen_micros = started.elapsed().as_micros() as u64;
        let bytes = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || snapshot::encode(&meta, &frozen))
                .await
                .map_err(|e| snapshot_error(ErrorVerb::Write, e))?
                .map_err(|e| snapshot_error(ErrorVerb::Write, e))?
        };
        let size = bytes.len();
        let meta = persist_if_newer(&self.snapshots, &self.current, meta, bytes)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let file = open_current(&self.snapshots)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        let micros = started.elapsed().as_micros() as u64;
        self.stats.builds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_build_micros
            .store(micros, Ordering::Relaxed);
        self.stats
            .last_size_bytes
            .store(size as u64, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = size, frozen_micros, micros, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl<C, S> RaftStateMachine<C> for StateMachineStore<C, S>
where
    C: RaftTypeConfig<
        NodeId = u64,
        Node = Member,
        Entry = Entry<C>,
        SnapshotData = tokio::fs::File,
    >,
    C::R: Default,
    S: ReplicatedState<C>,
{
    type SnapshotBuilder = Builder<S>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>)> {
        let applied = read_lock(&self.shared);
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self
            .shared
            .write()
            .expect("state lock poisoned: a panic while applying");
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => C::R::default(),
                EntryPayload::Normal(command) => applied.state.apply(command),
                EntryPayload::Membership(membership) => {
                    applied.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    C::R::default()
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let file = self
            .snapshots
            .scratch_file()
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        mut data: Box<tokio::fs::File>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut bytes = Vec::new();
        data.seek(SeekFrom::Start(0))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        data.read_to_end(&mut bytes)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        let (inside, state): (Meta, S) =
            snapshot::decode(&bytes).map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        if inside.last_log_id != meta.last_log_id || inside.last_membership != meta.last_membership
        {
            return Err(snapshot_error(
                ErrorVerb::Read,
                std::io::Error::other(format!(
                    "received snapshot data is for {:?}, but the leader announced {:?}",
                    inside.last_log_id, meta.last_log_id
                )),
            ));
        }
        let size = bytes.len();
        // Durable first, then visible: a crash after this point restarts from the new state.
        let current = persist_if_newer(&self.snapshots, &self.current, meta.clone(), bytes)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        if current.last_log_id != meta.last_log_id {
            // The state already holds more than the offered snapshot (ours was built from
            // it). Answering Ok would let openraft record the older index as applied and
            // apply the entries after it a second time; openraft never offers a snapshot
            // at or below what was committed, so reaching this is a bug to stop on.
            return Err(snapshot_error(
                ErrorVerb::Write,
                std::io::Error::other(format!(
                    "refusing to install the snapshot at {:?}: this replica's snapshot at {:?} is newer, \
                     and going back would apply entries twice",
                    meta.last_log_id, current.last_log_id
                )),
            ));
        }
        {
            let mut applied = self
                .shared
                .write()
                .expect("state lock poisoned: a panic while applying");
            *applied = Applied {
                state,
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
            };
        }
        let micros = started.elapsed().as_micros() as u64;
        self.stats.installs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_install_micros
            .store(micros, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = size, micros, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>> {
        // Hold the lock while opening so the meta and the file we hand out match.
        let current = self.current.clone();
        let snapshots = self.snapshots.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let guard = current.lock().expect("snapshot lock poisoned");
            match guard.as_ref() {
                Some(meta) => std::fs::File::open(snapshots.current_path())
                    .map(|file| Some((meta.clone(), file))),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| snapshot_error(ErrorVerb::Read, std::io::Error::other(e)))?
        .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        Ok(opened.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
