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
//! file's size are durable too, then, if a value large enough to become a sled blob file
//! was written, an fsync of every blob file and the blob directory (sled never does).
//! After each flush, the [`Watermark`] records what it made durable.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::watermark::Watermark;

/// Values this large may be written by sled as separate blob files (its threshold is a
/// quarter of a 512 KiB segment, minus a header); stay conservative.
pub(crate) const BLOB_RISK_BYTES: usize = 64 * 1024;

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
    large_value_written: Arc<AtomicBool>,
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
        let large_value_written = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FlushStats::default());
        let worker = Worker {
            db,
            data_file,
            blob_dir: dir.join("blobs"),
            large_value_written: large_value_written.clone(),
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
            large_value_written,
            stats,
        })
    }

    pub(crate) fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    /// Must be called before [`Flusher::after_flush`] for a write of `len` bytes.
    pub(crate) fn note_write(&self, len: usize) {
        if len >= BLOB_RISK_BYTES {
            self.large_value_written.store(true, Ordering::SeqCst);
        }
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
    blob_dir: PathBuf,
    large_value_written: Arc<AtomicBool>,
    stats: Arc<FlushStats>,
    watermark: Arc<Watermark>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Waiter>) {
        while let Ok(first) = rx.recv() {
            let mut waiters = vec![first];
            waiters.extend(rx.try_iter());
            let started = Instant::now();
            let result = self.flush_once();
            self.stats.record(started.elapsed(), waiters.len());
            if let Err(e) = &result {
                tracing::error!(error = %e, "storage flush failed; the replica cannot persist its log");
            }
            for waiter in waiters {
                waiter(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }

    fn flush_once(&self) -> io::Result<()> {
        // Everything noted here was in sled before the flush began, so the flush covers it.
        let covered = self.watermark.covered();
        self.db
            .flush()
            .map_err(|e| io::Error::other(format!("sled flush: {e}")))?;
        self.data_file.sync_data()?;
        if self.large_value_written.swap(false, Ordering::SeqCst) {
            sync_blobs(&self.blob_dir)?;
        }
        self.watermark.flushed(covered).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {}: {e}", self.watermark.path().display()),
            )
        })
    }
}

fn sync_blobs(blob_dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(blob_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        match File::open(&path) {
            Ok(file) => file.sync_all()?,
            // sled may garbage-collect a blob between listing and opening it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    crate::data_dir::sync_dir(blob_dir)
}
