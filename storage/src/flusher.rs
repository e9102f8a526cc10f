//! One thread that makes sled's writes durable, in groups.
//!
//! Callers insert into sled first (cheap, in memory) and then ask the flusher to call them
//! back once everything written so far is on disk. The flusher drains every waiting
//! request, flushes once, fsyncs once, and answers them all: concurrent appends share one
//! disk round trip (group commit), and flushes never overlap, which sled 0.34 needs
//! (concurrent flushes can deadlock it; its own periodic flusher is switched off).
//!
//! "On disk" means: `sled::Db::flush` (which writes the log buffers and calls
//! `sync_file_range`), then `fdatasync` of sled's data file so the drive's cache and the
//! file's size are durable too, and an fsync of every blob file sled created since the
//! last flush, and of the blob directory (sled never does either), and of sled's own
//! directory when names in it changed. sled writes any
//! message over a quarter of a segment (128 KiB) to a blob file, and not only large
//! values: it rewrites a whole leaf of up to 16 log entries as one message, so entries of
//! over about 8 KiB each (a full batch of 256 attaches is about that) are enough. Blob
//! files are fsynced before the flush (the log about to be made durable points at them)
//! and once more after it (for any created meanwhile). After each flush, the
//! [`Watermark`] records what it made durable.
//!
//! A failed flush fails every later one: after a failed fsync the kernel may have
//! dropped the pages it could not write, and a later fsync that succeeds says nothing
//! about them, so nothing may be acknowledged again in this process.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::watermark::Watermark;

type Waiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Receives the duration of every flush (for a latency histogram).
pub type FlushObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Counters for metrics: how many flushes, and how many writers they served (the ratio
/// is the group-commit factor). Durations go to the [`FlushObserver`], if one is set.
#[derive(Default)]
pub struct FlushStats {
    pub flushes: AtomicU64,
    pub waiters: AtomicU64,
    observer: std::sync::OnceLock<FlushObserver>,
}

impl std::fmt::Debug for FlushStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushStats")
            .field("flushes", &self.flushes)
            .field("waiters", &self.waiters)
            .finish()
    }
}

impl FlushStats {
    /// Sets the observer of flush durations; only the first call has an effect.
    pub fn observe_with(&self, observer: FlushObserver) {
        let _ = self.observer.set(observer);
    }

    fn record(&self, elapsed: std::time::Duration, waiters: usize) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.waiters.fetch_add(waiters as u64, Ordering::Relaxed);
        if let Some(observer) = self.observer.get() {
            observer(elapsed);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Flusher {
    inner: Arc<Handle>,
    stats: Arc<FlushStats>,
}

/// Owns the thread: dropping the last handle stops it and waits for it, so the sled
/// database (and its file lock) is released by the time the log store is gone.
struct Handle {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Flusher {
    /// Starts the flusher for `db`, whose files live in `dir`.
    pub(crate) fn start(
        db: sled::Db,
        dir: &Path,
        replica: u64,
        watermark: Arc<Watermark>,
    ) -> io::Result<Flusher> {
        let data_file = File::open(dir.join("db"))?;
        let (tx, rx) = mpsc::channel::<Waiter>();
        let stats = Arc::new(FlushStats::default());
        let mut worker = Worker {
            db,
            data_file,
            blobs: Blobs::new(dir.join("blobs")),
            names: Names {
                dir: dir.to_owned(),
                synced: None,
            },
            failed: None,
            stats: stats.clone(),
            watermark,
        };
        let thread = std::thread::Builder::new()
            .name(format!("flusher-{replica}"))
            .spawn(move || worker.run(rx))?;
        Ok(Flusher {
            inner: Arc::new(Handle {
                tx: Some(tx),
                thread: Some(thread),
            }),
            stats,
        })
    }

    pub(crate) fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    /// Calls `done` once everything written to sled before this call is durable.
    pub(crate) fn after_flush(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        let tx = self.inner.tx.as_ref().expect("sender lives until drop");
        if let Err(mpsc::SendError(done)) = tx.send(Box::new(done)) {
            done(Err(io::Error::other("the flusher thread has stopped")));
        }
    }

    /// Waits until everything written to sled so far is durable.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(move |result| {
            let _ = tx.send(result);
        });
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the flusher thread has stopped")))
    }
}

struct Worker {
    db: sled::Db,
    data_file: File,
    blobs: Blobs,
    names: Names,
    /// The first failure, repeated to every later waiter (see the module doc).
    failed: Option<(io::ErrorKind, String)>,
    stats: Arc<FlushStats>,
    watermark: Arc<Watermark>,
}

impl Worker {
    fn run(&mut self, rx: mpsc::Receiver<Waiter>) {
        while let Ok(first) = rx.recv() {
            let mut waiters = vec![first];
            waiters.extend(rx.try_iter());
            if self.failed.is_none() {
                let started = Instant::now();
                let result = self.flush_once();
                self.stats.record(started.elapsed(), waiters.len());
                if let Err(e) = result {
                    tracing::error!(error = %e, "storage flush failed; the replica cannot persist its log");
                    self.failed = Some((e.kind(), e.to_string()));
                }
            }
            for waiter in waiters {
                waiter(match &self.failed {
                    None => Ok(()),
                    Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
                });
            }
        }
    }

    fn flush_once(&mut self) -> io::Result<()> {
        // Everything noted here was in sled before the flush began, so the flush covers it.
        let covered = self.watermark.covered();
        self.blobs.sync_new()?;
        self.db
            .flush()
            .map_err(|e| io::Error::other(format!("sled flush: {e}")))?;
        self.data_file.sync_data()?;
        self.blobs.sync_new()?;
        self.names.sync_if_changed()?;
        self.watermark.flushed(covered).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {}: {e}", self.watermark.path().display()),
            )
        })
    }
}

/// The names in sled's own directory: sled renames a page-table snapshot into place and
/// deletes the one before it, and never fsyncs the directory, so a power loss could keep
/// the deletion and lose the rename. The directory changes rarely (a snapshot every so
/// many writes), so it is fsynced only when its modification time moved since the last
/// fsync, or is too recent to tell a change in the same clock tick apart.
struct Names {
    dir: PathBuf,
    synced: Option<std::time::SystemTime>,
}

impl Names {
    fn sync_if_changed(&mut self) -> io::Result<()> {
        let modified = std::fs::metadata(&self.dir)?.modified()?;
        let recent = std::time::SystemTime::now()
            .duration_since(modified)
            .map_or(true, |age| age < std::time::Duration::from_millis(100));
        if self.synced != Some(modified) || recent {
            crate::data_dir::sync_dir(&self.dir)?;
            self.synced = Some(modified);
        }
        Ok(())
    }
}

/// sled's blob files, and which of them are already durable. sled writes a blob file
/// whole when it creates it and never changes it afterwards (it only deletes it), so each
/// needs one fsync; listing the directory costs a system call or two per flush.
///
/// A file listed here is taken to be whole. That holds because nothing writes to sled
/// while a flush runs: sled writes a blob from the thread that inserts the entry, every
/// writer (the Raft core) waits for its flush before it writes again, and blobs sled
/// writes during its own flush are listed after it. Were writes to overlap flushes, a
/// file listed half-written would be recorded as durable and never fsynced again.
struct Blobs {
    dir: PathBuf,
    synced: HashSet<OsString>,
}

impl Blobs {
    /// Blob files left from before this process count as not yet durable: the first flush
    /// fsyncs them too.
    fn new(dir: PathBuf) -> Blobs {
        Blobs {
            dir,
            synced: HashSet::new(),
        }
    }

    /// Fsyncs the blob files created since the last call, then the directory holding
    /// their names; forgets the names of files sled has deleted.
    fn sync_new(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced.len());
        let mut new = false;
        for entry in entries {
            let name = entry?.file_name();
            if !self.synced.contains(&name) {
                match File::open(self.dir.join(&name)) {
                    Ok(file) => file.sync_all()?,
                    // sled may garbage-collect a blob between listing and opening it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            crate::data_dir::sync_dir(&self.dir)?;
        }
        self.synced = present;
        Ok(())
    }
}
