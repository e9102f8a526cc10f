//! What one durable append costs, and what the watermark's write adds to it.
//!
//! `cargo run --release -p controller-storage --example flush_cost [APPENDS]`: appends
//! APPENDS (default 2,000) single entries one at a time, each waiting for its flush
//! (sled flush, fdatasync, watermark write), then times the same number of 64-byte
//! writes at offset 0 of a file, which is what the watermark adds to each flush.

use controller_raft::Member;
use controller_storage::LogStore;
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Add(pub u64);

openraft::declare_raft_types!(
    pub Config:
        D = Add,
        R = (),
        NodeId = u64,
        Node = Member,
        Entry = Entry<Config>,
        SnapshotData = tokio::fs::File,
);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let appends: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2_000);
    let dir = tempfile::tempdir()?;
    let mut log = LogStore::<Config>::open(&dir.path().join("log"), 1, 1 << 20)?;
    let started = Instant::now();
    for i in 1..=u64::from(appends) {
        log.blocking_append([Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(Add(i)),
        }])
        .await?;
    }
    let append = started.elapsed() / appends;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.path().join("record"))?;
    let started = Instant::now();
    for _ in 0..appends {
        file.write_all_at(&[7u8; 64], 0)?;
    }
    let record = started.elapsed() / appends;
    println!(
        "{appends} appends: {append:?} per durable append; a 64-byte write at offset 0: {record:?} ({:.2}% of an append)",
        100.0 * record.as_secs_f64() / append.as_secs_f64()
    );
    Ok(())
}
