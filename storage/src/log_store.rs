//! The Raft log, vote and committed index in sled.
//!
//! Two trees: `log` maps a big-endian index to a bincode entry, so sled's key order is log
//! order; `meta` holds the vote, the committed log id and the last purged log id.
//!
//! Contracts (openraft's, kept here):
//! - an append's callback fires only after the entries are durable ([`Flusher`]);
//! - `save_vote` returns only after the vote is durable;
//! - writes are applied to sled in call order, and a flush covers every earlier write, so
//!   a vote and an append can never become durable out of order;
//! - truncate and purge are made durable before they return (both are rare);
//! - the committed index is written without a flush: losing it only means re-learning it
//!   from the leader.
//!
//! On open, every stored value is decoded and the log checked for holes, so a damaged log
//! stops the replica at start with a message rather than at some later read; and the vote
//! and the log's end are checked against the [`Watermark`], a record kept outside sled,
//! because sled opens a damaged file as a shorter log without an error.
//!
//! sled 0.34.7 writes its own page-table snapshots as `snap.<lsn>.generating`, fsyncs and
//! renames them, but on open it reads the newest file starting with `snap.`, finished or
//! not: one left by a write that failed (a full disk) or was cut short (kill -9) makes
//! every later open fail with "Read corrupted data", although the log itself is intact.
//! Such files are removed before sled opens; sled then rebuilds its page table from the
//! previous snapshot and the log, as it does after any crash.
//!
//! sled also writes its settings file (`conf`) without an fsync when it creates a log. A
//! new log is therefore built beside its final place (`log.creating`), synced, and only
//! then renamed into place: a power loss during a replica's first start leaves no log (or
//! a leftover `log.creating`, removed at the next start, never used), never a torn one.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use controller_raft::{codec, Member};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data_dir::sync_dir;
use crate::flusher::{FlushStats, Flusher};
use crate::state_machine::DurableSnapshot;
use crate::watermark::{Mark, Recorded, Watermark};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// How long a purge waits for the snapshot that covers it to be written.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error("opening the Raft log at {path}")]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("preparing the Raft log at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Raft log at {path} is damaged: {reason}; refusing to start")]
    Corrupt { path: String, reason: String },
    #[error(
        "the Raft log is purged up to index {purged}, but the snapshot on disk ends {}: the \
         entries between are lost; refusing to start. Replace this replica's data dir as after \
         a lost disk (remove, wipe, join)",
        snapshot.map_or("nowhere (there is none)".to_owned(), |last| format!("at index {last}"))
    )]
    PurgedPastSnapshot { purged: u64, snapshot: Option<u64> },
    #[error(
        "the disk holding the Raft log at {path} is full: free space or grow the volume, \
         then start the replica again"
    )]
    DiskFull {
        path: String,
        #[source]
        source: sled::Error,
    },
}

/// Makes what sled holds on opening durable: its settings file, its data file, its blob
/// files and the directories' entries.
///
/// A process killed between an append and its flush leaves what it wrote in the page
/// cache only. The next process reads it back as part of the log, and openraft counts an
/// entry already in the log as written when the leader sends it again: it acknowledges it
/// without a write, so without a flush. Everything sled holds must therefore be durable
/// before the log is used, blob files included.
fn sync_sled_files(path: &Path) -> std::io::Result<()> {
    for name in ["conf", "db"] {
        match std::fs::File::open(path.join(name)) {
            Ok(file) => file.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let blobs = path.join("blobs");
    match std::fs::read_dir(&blobs) {
        Ok(entries) => {
            for entry in entries {
                std::fs::File::open(entry?.path())?.sync_all()?;
            }
            sync_dir(&blobs)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sync_dir(path)
}

enum Creating {
    Sled(sled::Error),
    Io(std::io::Error),
}

/// Creates an empty log at `path` (which must not exist) so that `path` appears only
/// once sled's files are durable: built at `log.creating`, flushed, fsynced, renamed.
fn create(path: &Path, cache_bytes: u64) -> std::result::Result<(), Creating> {
    let building = path.with_extension("creating");
    if building.exists() {
        tracing::warn!(path = %building.display(),
            "removing a log whose creation did not finish (a crash during the first start)");
        std::fs::remove_dir_all(&building).map_err(Creating::Io)?;
    }
    {
        let db = sled::Config::new()
            .path(&building)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(Creating::Sled)?;
        db.open_tree("log").map_err(Creating::Sled)?;
        db.open_tree("meta").map_err(Creating::Sled)?;
        db.flush().map_err(Creating::Sled)?;
    }
    // Done writing only once sled's I/O threads have let go of its files (and the open
    // of the renamed log takes the lock again).
    wait_until_released(&building).map_err(Creating::Io)?;
    sync_sled_files(&building).map_err(Creating::Io)?;
    std::fs::rename(&building, path).map_err(Creating::Io)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent).map_err(Creating::Io)?;
    }
    Ok(())
}

/// Waits until no one holds the lock sled takes on the data file of the log at `path`:
/// sled lets go of it from its own I/O threads a moment after the last handle is
/// dropped, so a reopen within one process must wait for it (a new process need not).
pub fn wait_until_released(path: &Path) -> std::io::Result<()> {
    use fs2::FileExt;
    let db = path.join("db");
    let file = match std::fs::File::open(&db) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file.try_lock_exclusive().is_err() {
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} is still locked 30 s after sled closed it", db.display()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    FileExt::unlock(&file)
}

/// Removes page-table snapshots sled did not finish (see the module docs).
fn remove_unfinished_sled_snapshots(path: &Path) -> std::io::Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                file = %entry.path().display(),
                "removing a storage snapshot whose write did not finish (a full disk or a crash)"
            );
            std::fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        sync_dir(path)?;
    }
    Ok(())
}

fn is_disk_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

/// The sled-backed log store. Clones share the same database and flusher.
pub struct LogStore<C> {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    watermark: std::sync::Arc<Watermark>,
    /// Set by [`LogStore::purge_behind`]: the log is never purged past it.
    snapshot: Option<DurableSnapshot>,
    /// This replica's id, to recognise its own leadership in a stored vote.
    replica: u64,
    /// Where the log lives, for error messages.
    path: std::sync::Arc<str>,
    _config: PhantomData<C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            meta: self.meta.clone(),
            flusher: self.flusher.clone(),
            watermark: self.watermark.clone(),
            snapshot: self.snapshot.clone(),
            replica: self.replica,
            path: self.path.clone(),
            _config: PhantomData,
        }
    }
}

type Result<T> = std::result::Result<T, StorageError<u64>>;

fn io_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = Member, Entry = Entry<C>>,
{
    /// Opens (or creates) the log under `path`, with sled's page cache bounded by
    /// `cache_bytes`.
    pub fn open(
        path: &Path,
        replica: u64,
        cache_bytes: u64,
    ) -> std::result::Result<Self, LogOpenError> {
        let display = path.display().to_string();
        let sled_err = |source| {
            if is_disk_full(&source) {
                LogOpenError::DiskFull {
                    path: display.clone(),
                    source,
                }
            } else {
                LogOpenError::Sled {
                    path: display.clone(),
                    source,
                }
            }
        };
        let fresh = !path.exists();
        if fresh {
            create(path, cache_bytes).map_err(|e| match e {
                Creating::Sled(source) => sled_err(source),
                Creating::Io(source) => LogOpenError::Io {
                    path: display.clone(),
                    source,
                },
            })?;
        } else {
            remove_unfinished_sled_snapshots(path).map_err(|source| LogOpenError::Io {
                path: display.clone(),
                source,
            })?;
        }
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None);
        // sled's recovery panics on some damage (a page whose blob file is missing, for
        // one): that is a damaged log too, refused with the same clear error.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| LogOpenError::Corrupt {
                path: display.clone(),
                reason: format!("sled's recovery failed: {}", panic_message(&*panic)),
            })?
            .map_err(sled_err)?;
        let log = db.open_tree("log").map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let io = |source| LogOpenError::Io {
            path: display.clone(),
            source,
        };
        // sled writes its settings file (`conf`) when it finds none, or one of 8 bytes or
        // less, and never fsyncs it (nor the data file's first pages: its flush ends in
        // sync_file_range). Unsynced, a power loss leaves it empty (rewritten at the next
        // start, unsynced again) or torn, and sled then refuses the whole log.
        sync_sled_files(path).map_err(io)?;
        let watermark_path = Watermark::path_for(path);
        let watermark_io = |source| LogOpenError::Io {
            path: watermark_path.display().to_string(),
            source,
        };
        let recorded = Watermark::read(&watermark_path).map_err(watermark_io)?;
        let watermark =
            std::sync::Arc::new(Watermark::open(&watermark_path).map_err(watermark_io)?);
        let flusher = Flusher::start(db, path, replica, watermark.clone()).map_err(io)?;
        let store = LogStore {
            log,
            meta,
            flusher,
            watermark,
            snapshot: None,
            replica,
            path: display.as_str().into(),
            _config: PhantomData,
        };
        let corrupt = |reason| LogOpenError::Corrupt {
            path: display.clone(),
            reason,
        };
        store.verify().map_err(corrupt)?;
        let current = store.mark().map_err(|e| corrupt(e.to_string()))?;
        match recorded {
            Recorded::Valid(recorded) => {
                if let Some(shortfall) = current.shortfall(&recorded) {
                    return Err(corrupt(format!(
                        "{shortfall} ({} says so): sled lost data it had flushed, most likely \
                         because a file was damaged. Do not start this replica on it; replace its \
                         data dir as after a lost disk (remove, wipe, join)",
                        watermark_path.display()
                    )));
                }
            }
            Recorded::Damaged => tracing::warn!(
                path = %watermark_path.display(),
                "the log's watermark fails its checksum (a write cut short by a power loss?); \
                 starting from the log as it is"
            ),
            Recorded::Missing => {}
        }
        store.watermark.start(current).map_err(watermark_io)?;
        Ok(store)
    }

    /// The vote and the log's end as sled holds them.
    fn mark(&self) -> Result<Mark> {
        let last_purged: Option<LogId<u64>> = self.read_meta(LAST_PURGED, ErrorSubject::Logs)?;
        // The later of the two, as openraft takes it: a purge may pass the last entry.
        Ok(Mark {
            vote: self.read_meta(VOTE, ErrorSubject::Vote)?,
            last: self.last_entry_id()?.max(last_purged),
        })
    }

    /// Decodes everything once and checks that the log has no holes.
    fn verify(&self) -> std::result::Result<(), String> {
        self.meta_value::<Vote<u64>>(VOTE)
            .map_err(|e| format!("vote: {e}"))?;
        self.meta_value::<LogId<u64>>(COMMITTED)
            .map_err(|e| format!("committed index: {e}"))?;
        let purged = self
            .meta_value::<LogId<u64>>(LAST_PURGED)
            .map_err(|e| format!("last purged id: {e}"))?;
        let mut expected: Option<u64> = None;
        for item in self.log.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let index = key_index(&key).ok_or_else(|| format!("malformed key {key:?}"))?;
            let entry: Entry<C> =
                codec::decode(&value).map_err(|e| format!("entry {index}: {e}"))?;
            if entry.get_log_id().index != index {
                return Err(format!(
                    "entry stored at {index} says it is {}",
                    entry.get_log_id().index
                ));
            }
            if let Some(expected) = expected {
                if index != expected {
                    return Err(format!(
                        "hole in the log: entry {expected} missing before {index}"
                    ));
                }
            } else if let Some(purged) = &purged {
                if index > purged.index + 1 {
                    return Err(format!(
                        "hole in the log: purged up to {} but the first entry is {index}",
                        purged.index
                    ));
                }
            }
            expected = Some(index + 1);
        }
        Ok(())
    }

    /// From now on, entries are purged only once `snapshot` covers them on disk.
    ///
    /// openraft 0.9 purges the log behind a snapshot a follower installs without waiting
    /// for the state machine to have written it: a crash in between (kill -9 or a power
    /// loss) left a log purged past the only snapshot on disk, and the replica could never
    /// start again ("Failed to get log entries"). Found by the power-loss test.
    ///
    /// Refuses a log already purged past that snapshot: the entries between are gone, so
    /// the replica could neither rebuild its state nor serve them (a data dir damaged by
    /// hand, or written before this guard existed).
    pub fn purge_behind(
        &mut self,
        snapshot: DurableSnapshot,
    ) -> std::result::Result<(), LogOpenError> {
        let purged: Option<LogId<u64>> =
            self.meta_value(LAST_PURGED)
                .map_err(|reason| LogOpenError::Corrupt {
                    path: self.path.to_string(),
                    reason: format!("last purged id: {reason}"),
                })?;
        let last = snapshot.last_index();
        if let Some(purged) = purged.filter(|p| last.is_none_or(|last| last < p.index)) {
            return Err(LogOpenError::PurgedPastSnapshot {
                purged: purged.index,
                snapshot: last,
            });
        }
        self.snapshot = Some(snapshot);
        Ok(())
    }

    async fn wait_for_snapshot_on_disk(&self, upto: LogId<u64>) -> Result<()> {
        let Some(snapshot) = &self.snapshot else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        while !snapshot.covers(upto.index) {
            if started.elapsed() > PURGE_WAIT {
                return Err(io_error(
                    ErrorSubject::Logs,
                    ErrorVerb::Delete,
                    std::io::Error::other(format!(
                        "no snapshot covering {upto} on disk after {PURGE_WAIT:?}: the log is \
                         not purged past the snapshot it would need to start again"
                    )),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let waited = started.elapsed();
        if waited > std::time::Duration::from_millis(2) {
            tracing::debug!(upto = %upto, ?waited, "purge waited for the snapshot to reach the disk");
        }
        Ok(())
    }

    /// Replaces the whole log with "everything up to `last` is committed and purged" and
    /// `vote`, durably. Only for offline tools that seed a data dir (restore, recovery),
    /// together with a snapshot at `last`.
    pub async fn reset_to(&mut self, vote: Vote<u64>, last: LogId<u64>) -> Result<()> {
        // Until the reset is durable, a crash may leave the old log or the new one: the
        // watermark must hold for both (then the flush below records the new one).
        let new = Mark {
            vote: Some(vote),
            last: Some(last),
        };
        self.watermark
            .lower(self.mark()?.floor(&new))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // The purge point first, and the entries in one batch after it (sled's `clear`
        // removes them one by one, and a crash part way would leave a hole): a crash in
        // between leaves entries below the purge point, which are never read.
        self.write_meta(LAST_PURGED, &last, ErrorSubject::Logs)?;
        self.write_meta(COMMITTED, &last, ErrorSubject::Store)?;
        self.write_meta(VOTE, &vote, ErrorSubject::Vote)?;
        let mut batch = sled::Batch::default();
        for item in self.log.iter().keys() {
            batch.remove(item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.watermark.wrote_vote(vote);
        self.watermark.wrote_last(last);
        self.flush(ErrorSubject::Logs).await
    }

    /// The latest vote handed to sled, durable or not yet. openraft grants a vote, or
    /// acts on one, only once `save_vote` has returned, so this is at least every vote
    /// this replica has granted or followed so far.
    pub fn written_vote(&self) -> Option<Vote<u64>> {
        self.watermark.written().vote
    }

    /// Flush counters for metrics.
    pub fn flush_stats(&self) -> std::sync::Arc<FlushStats> {
        self.flusher.stats()
    }

    /// Number of entries currently in the log.
    pub fn entry_count(&self) -> usize {
        self.log.len()
    }

    fn meta_value<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> std::result::Result<Option<T>, String> {
        match self.meta.get(key).map_err(|e| e.to_string())? {
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>> {
        match self
            .meta
            .get(key)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?
        {
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| io_error(subject, ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<()> {
        let bytes =
            codec::encode(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<u64>) -> Result<()> {
        self.flusher
            .flush()
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>> {
        self.last_entry_id_before(u64::MAX)
    }

    /// The id of the last entry whose index is below `end`.
    fn last_entry_id_before(&self, end: u64) -> Result<Option<LogId<u64>>> {
        match self.log.range(..key(end)).next_back() {
            Some(item) => {
                let (_, bytes) =
                    item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let entry: Entry<C> = codec::decode(&bytes)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

/// What a replica starting on `stored` should take for its vote: never its own
/// leadership.
///
/// openraft 0.9 resumes a replica whose stored vote is its own committed leadership as
/// leader of that term, at once, with the commit index it last saved; that index is
/// written lazily and may lag the writes the replica acknowledged before it stopped. Its
/// read index is the larger of that index and the first entry of its term, so reads
/// served before a follower's answer raised the commit index miss acknowledged writes
/// (a superseded generation called valid). Taken as an uncommitted vote for itself, the
/// same term and candidate, the replica starts as a follower, and the next leader (itself
/// or another) is elected under a higher leader id (a later term, or the same term and a
/// higher node id: openraft 0.9 orders leader ids by both) and commits a blank entry of
/// its own before any read is answered. What is
/// on disk is unchanged. etcd's Raft does the same: every node restarts as a follower.
fn restarted_vote(stored: Vote<u64>, replica: u64) -> Vote<u64> {
    if stored.is_committed() && stored.leader_id().voted_for() == Some(replica) {
        Vote::new(stored.leader_id().get_term(), replica)
    } else {
        stored
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = Member, Entry = Entry<C>>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (k, bytes) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry: Entry<C> = codec::decode(&bytes).map_err(|e| {
                io_error(
                    ErrorSubject::LogIndex(key_index(&k).unwrap_or_default()),
                    ErrorVerb::Read,
                    e,
                )
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = Member, Entry = Entry<C>>,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.read_meta(LAST_PURGED, ErrorSubject::Logs)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.mark()?.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote)?;
        self.watermark.wrote_vote(*vote);
        self.flush(ErrorSubject::Vote).await
    }

    /// The stored vote, except that this replica's own leadership comes back as a bare
    /// candidacy in the same term (see `restarted_vote`). openraft reads the vote only
    /// when it starts.
    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        let vote = self.read_meta(VOTE, ErrorSubject::Vote)?;
        Ok(vote.map(|vote| restarted_vote(vote, self.replica)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        match committed {
            Some(committed) => self.write_meta(COMMITTED, &committed, ErrorSubject::Store),
            None => {
                self.meta
                    .remove(COMMITTED)
                    .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
                Ok(())
            }
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        self.read_meta(COMMITTED, ErrorSubject::Store)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            let id = *entry.get_log_id();
            let bytes = codec::encode(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
            batch.insert(&key(id.index), bytes);
            last = Some(id);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if let Some(last) = last {
            self.watermark.wrote_last(last);
        }
        self.flusher
            .after_flush(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        tracing::debug!(since = %log_id, "truncating the log");
        // The log will end before `log_id`: lower the watermark durably first, since sled
        // may write the truncation out before the flush below.
        let before = match self.last_entry_id_before(log_id.index)? {
            Some(id) => Some(id),
            None => self.read_meta(LAST_PURGED, ErrorSubject::Logs)?,
        };
        let vote = self.watermark.written().vote;
        self.watermark
            .lower(Mark { vote, last: before })
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.wait_for_snapshot_on_disk(log_id).await?;
        tracing::debug!(upto = %log_id, "purging the log");
        self.watermark
            .before_purge(log_id)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Record the purge point first: a crash in between leaves extra entries below it,
        // which are never read, rather than a hole above it.
        self.write_meta(LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Noted once both writes are in sled, so that no flush records a log end that the
        // entries still in sled contradict.
        self.watermark.wrote_last(log_id);
        self.flush(ErrorSubject::Logs).await
    }
}

/// The text a panic carried, when it carried one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_disk_is_called_full() {
        let enospc = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(is_disk_full(&enospc));
        let eio = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!is_disk_full(&eio));
        assert!(!is_disk_full(&sled::Error::Corruption { at: None, bt: () }));
    }

    #[test]
    fn a_replica_never_restarts_as_leader() {
        let led = Vote::new_committed(7, 2);
        let restarted = restarted_vote(led, 2);
        assert!(!restarted.is_committed(), "{restarted}");
        assert_eq!(
            restarted.leader_id(),
            led.leader_id(),
            "same term and candidate"
        );
        // Anything else comes back as stored: another replica's leadership, a candidacy.
        assert_eq!(restarted_vote(led, 1), led);
        assert_eq!(restarted_vote(Vote::new(7, 2), 2), Vote::new(7, 2));
    }
}
