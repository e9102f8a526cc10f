//! Durable storage for a replica: the Raft log and vote in sled, the applied state in
//! memory with file snapshots.
//!
//! Layout of a data dir:
//! ```text
//! identity.json   format version, cluster id, replica id (written once, fsynced)
//! LOCK            held exclusively while a process uses the dir
//! log/            sled: the Raft log, vote, committed index, last purged log id
//! log.watermark   how far the log and vote durably reached (checked against sled at open)
//! snapshot/       current.snap: the latest snapshot (header, meta, state, crc32)
//! ```
//!
//! Why the applied state is not a sled tree: the registry is small enough to live in
//! memory (a million shards is tens of MiB), reads must be cheap, and a whole-state
//! snapshot is what a lagging replica needs anyway. The state is durable as "latest
//! snapshot + the log after it": on start the snapshot is loaded and openraft re-applies
//! the committed entries behind it. Installing a snapshot writes a new file, fsyncs it and
//! renames it over the old one, so a crash leaves either the old state or the new one.
//!
//! Durability contract: nothing is reported to openraft as persisted (a log append's
//! callback, a saved vote) before sled has flushed it *and* its files were fsynced. sled
//! 0.34's own flush ends in `sync_file_range`, which neither forces the drive's cache nor
//! the file's metadata, and it never fsyncs the blob files it writes large pages to;
//! `flusher` does both, on one thread, so flushes never run concurrently.

// openraft's error types are large by design; we return them as its traits require.
#![allow(clippy::result_large_err)]

pub mod data_dir;
mod flusher;
mod log_store;
mod snapshot;
mod state_machine;
mod watermark;

pub use data_dir::Bootstrap;
pub use data_dir::{file_system_space, DataDir, DataDirError, FileSystemSpace, Identity};
pub use flusher::{FlushObserver, FlushStats};
pub use log_store::LogOpenError;
pub use log_store::{wait_until_released, LogStore};
pub use snapshot::{decode as decode_snapshot, write_snapshot, SnapshotError};
pub use state_machine::{
    Applied, Builder, DurableSnapshot, ReplicatedState, SharedState, SnapshotStats,
    StateMachineStore,
};

/// The storage format written by this version. Bump when the on-disk layout changes and
/// teach [`DataDir::open`] to read the previous one.
pub const FORMAT_VERSION: u32 = 1;
