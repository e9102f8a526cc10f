//! The snapshot file: one self-checking file per replica, replaced atomically.
//!
//! ```text
//! magic "PSCSNAP\0" | format u32 LE | payload length u64 LE | crc32 u32 LE | payload
//! payload = bincode (SnapshotMeta, state)
//! ```
//! The same bytes are the file on disk and the data streamed to a lagging follower, so
//! what a follower installs is checked exactly like what a replica loads at start. A
//! snapshot is written to `current.tmp`, fsynced, renamed to `current.snap`, and the
//! directory fsynced; a crash at any point leaves the previous snapshot or the new one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use controller_raft::{codec, Member};
use openraft::SnapshotMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data_dir::write_atomically;

const MAGIC: &[u8; 8] = b"PSCSNAP\0";
const SNAPSHOT_FORMAT: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
pub(crate) const CURRENT: &str = "current.snap";

pub type Meta = SnapshotMeta<u64, Member>;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot is not a pageserver-controller snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format {0} is newer than this binary understands ({SNAPSHOT_FORMAT})")]
    TooNew(u32),
    #[error("snapshot is truncated: header says {expected} payload bytes, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("snapshot checksum mismatch: the file is damaged")]
    Checksum,
    #[error("snapshot payload does not decode: {0}")]
    Decode(#[from] codec::CodecError),
}

/// Encodes a snapshot of `state` taken at `meta`.
pub fn encode<S: Serialize>(meta: &Meta, state: &S) -> Result<Vec<u8>, SnapshotError> {
    let mut bytes = vec![0u8; HEADER_LEN];
    codec::encode_into(&mut bytes, &(meta, state))?;
    let payload_len = (bytes.len() - HEADER_LEN) as u64;
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    bytes[12..20].copy_from_slice(&payload_len.to_le_bytes());
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Checks and decodes a snapshot; never panics on damaged input.
pub fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<(Meta, S), SnapshotError> {
    if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format > SNAPSHOT_FORMAT {
        return Err(SnapshotError::TooNew(format));
    }
    let expected = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let found = (bytes.len() - HEADER_LEN) as u64;
    if expected != found {
        return Err(SnapshotError::Truncated { expected, found });
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[HEADER_LEN..]) != crc {
        return Err(SnapshotError::Checksum);
    }
    Ok(codec::decode(&bytes[HEADER_LEN..])?)
}

/// The directory holding the current snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: dir.display().to_string(),
            source,
        };
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        // The directory's entry in its parent must be durable before a snapshot in it
        // lets the log be purged: otherwise a power loss keeps the purge and loses the
        // snapshot, and the replica cannot start. On every open, not only the one that
        // created it: a crash may have come between the creation and its fsync.
        if let Some(parent) = dir.parent() {
            crate::data_dir::sync_dir(parent).map_err(io)?;
        }
        // Leftovers of an interrupted write or receive are never valid snapshots.
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io)?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    fn io_error(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: self.current_path().display().to_string(),
            source,
        }
    }

    /// The bytes of the current snapshot, if there is one.
    pub fn read_current(&self) -> Result<Option<Vec<u8>>, SnapshotError> {
        match fs::read(self.current_path()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Durably replaces the current snapshot with `bytes`.
    pub fn replace_current(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        write_atomically(&self.current_path(), bytes).map_err(|e| self.io_error(e))
    }

    /// An anonymous scratch file for a snapshot being received: unlinked at once, so an
    /// interrupted transfer leaves nothing behind.
    pub async fn scratch_file(&self) -> Result<tokio::fs::File, SnapshotError> {
        let path = self
            .dir
            .join(format!("receiving-{}.tmp", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| self.io_error(e))?;
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| self.io_error(e))?;
        Ok(file)
    }
}

/// Durably makes a snapshot of `state` at `meta` the current one in `dir`. For offline
/// tools that seed a data dir; a running replica builds snapshots through openraft.
pub fn write_snapshot<S: Serialize>(
    dir: &Path,
    meta: &Meta,
    state: &S,
) -> Result<(), SnapshotError> {
    let bytes = encode(meta, state)?;
    SnapshotDir::open(dir)?.replace_current(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, StoredMembership};

    fn meta() -> Meta {
        Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "3-42-1".into(),
        }
    }

    #[test]
    fn round_trip() {
        let state = vec![(1u64, String::from("a")), (2, String::from("b"))];
        let bytes = encode(&meta(), &state).unwrap();
        let (m, s): (Meta, Vec<(u64, String)>) = decode(&bytes).unwrap();
        assert_eq!(m, meta());
        assert_eq!(s, state);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&meta(), &vec![7u64; 100]).unwrap();
        for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
            assert!(decode::<Vec<u64>>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 10] ^= 0x40;
        assert!(matches!(
            decode::<Vec<u64>>(&flipped),
            Err(SnapshotError::Checksum)
        ));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert!(matches!(
            decode::<Vec<u64>>(&newer),
            Err(SnapshotError::TooNew(9))
        ));
    }
}
