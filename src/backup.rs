//! Backups: a consistent, point-in-time copy of the whole registry in a versioned file.
//!
//! ```text
//! magic "PSCBACK\0" | format u32 LE | header length u32 LE | header (JSON)
//!                   | payload length u64 LE | crc32 of payload u32 LE | payload
//! payload = the registry in the snapshot encoding (bincode)
//! ```
//! The JSON header says what the backup is (cluster, when, at which log index, how many
//! shards and nodes, which version wrote it) and can be read with `head -c`. A backup is
//! taken on the leader after a read index, so it holds every write acknowledged before
//! the request, like any linearizable read. A file of a newer format is refused with a
//! message, never half-read.

use serde::{Deserialize, Serialize};

use crate::domain::Registry;

const MAGIC: &[u8; 8] = b"PSCBACK\0";
/// The backup format this version writes and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;

/// What a backup is, readable without decoding the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_name: String,
    pub cluster_id: String,
    /// Milliseconds since the Unix epoch, on the leader's clock.
    pub taken_at_unix_ms: u64,
    /// Every write committed at or before this log index is in the backup.
    pub read_index: u64,
    pub shards: usize,
    pub nodes: usize,
    /// The version of pageserver-controller that wrote it.
    pub written_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a pageserver-controller backup (bad magic)")]
    BadMagic,
    #[error("backup format {0} is newer than this binary reads (up to {BACKUP_FORMAT}); use a newer pageserver-controller")]
    TooNew(u32),
    #[error("backup is truncated")]
    Truncated,
    #[error("backup checksum mismatch: the file is damaged")]
    Checksum,
    #[error("backup header is unreadable: {0}")]
    Header(String),
    #[error("backup payload does not decode: {0}")]
    Payload(String),
}

/// Encodes `registry` (a [`Registry`] or a [`crate::domain::FrozenRegistry`] of one,
/// which encode the same) with `header`.
pub fn encode(header: &BackupHeader, registry: &impl serde::Serialize) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("the header serializes");
    let payload = controller_raft::codec::encode(registry).expect("the registry serializes");
    let mut bytes = Vec::with_capacity(32 + header.len() + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Reads past `n` bytes of `bytes`, or fails as truncated.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], BackupError> {
    if bytes.len() < n {
        return Err(BackupError::Truncated);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// Reads just the header (cheap: no payload decoding).
pub fn decode_header(mut bytes: &[u8]) -> Result<(BackupHeader, &[u8]), BackupError> {
    if take(&mut bytes, 8).map_err(|_| BackupError::BadMagic)? != MAGIC {
        return Err(BackupError::BadMagic);
    }
    let format = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
    if format > BACKUP_FORMAT {
        return Err(BackupError::TooNew(format));
    }
    let header_len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes")) as usize;
    let header = serde_json::from_slice(take(&mut bytes, header_len)?)
        .map_err(|e| BackupError::Header(e.to_string()))?;
    Ok((header, bytes))
}

/// Checks and decodes a whole backup; never panics on damaged input.
pub fn decode(bytes: &[u8]) -> Result<(BackupHeader, Registry), BackupError> {
    let (header, mut rest) = decode_header(bytes)?;
    let payload_len = u64::from_le_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes"));
    if rest.len() as u64 != payload_len {
        return Err(BackupError::Truncated);
    }
    if crc32fast::hash(rest) != crc {
        return Err(BackupError::Checksum);
    }
    let registry =
        controller_raft::codec::decode(rest).map_err(|e| BackupError::Payload(e.to_string()))?;
    Ok((header, registry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, NodeId, TenantId, TenantShardId};

    fn sample() -> (BackupHeader, Registry) {
        let mut registry = Registry::default();
        for n in 0..50u8 {
            registry.apply(&Command::AttachHook {
                shard: TenantShardId::unsharded(TenantId::from_bytes([n; 16])),
                node: Some(NodeId(u64::from(n % 3))),
                generation_override: None,
            });
        }
        let header = BackupHeader {
            cluster_name: "c".into(),
            cluster_id: "0123".into(),
            taken_at_unix_ms: 1,
            read_index: 51,
            shards: 50,
            nodes: 0,
            written_by: "test".into(),
        };
        (header, registry)
    }

    #[test]
    fn round_trip() {
        let (header, registry) = sample();
        let bytes = encode(&header, &registry);
        assert_eq!(decode(&bytes).unwrap(), (header.clone(), registry));
        assert_eq!(decode_header(&bytes).unwrap().0, header);
    }

    #[test]
    fn damage_and_newer_formats_are_refused() {
        let (header, registry) = sample();
        let bytes = encode(&header, &registry);
        for cut in [0, 7, 12, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped), Err(BackupError::Checksum)));
        let mut newer = bytes.clone();
        newer[8] = 2;
        let err = decode(&newer).unwrap_err();
        assert!(matches!(err, BackupError::TooNew(2)), "{err}");
        assert!(err.to_string().contains("newer"));
        assert!(matches!(
            decode(b"not a backup at all"),
            Err(BackupError::BadMagic)
        ));
    }

    /// A backup written on 2026-12-07 (format 1, with a floor: 50 shards, shard n
    /// attached to node n % 3, each attached once and then raised by a restore's bump of
    /// 10) still restores to what it held, and this version still writes format 1 byte
    /// for byte: a backup kept for years must restore.
    #[test]
    fn a_format_1_backup_still_restores() {
        use crate::domain::Generation;
        let pinned = include_bytes!("../tests/fixtures/backup-format-1.pscbackup");
        let (header, registry) = decode(pinned).unwrap();
        let read = &header;
        assert_eq!(
            (
                read.cluster_name.as_str(),
                read.cluster_id.as_str(),
                read.taken_at_unix_ms,
                read.read_index,
                (read.shards, read.nodes),
                read.written_by.as_str()
            ),
            ("c", "0123", 1, 51, (50, 0), "test")
        );
        assert_eq!(registry.shard_count(), 50);
        assert_eq!(registry.node_count(), 0);
        assert_eq!(registry.floor(), Some(Generation(11)));
        for n in 0..50u8 {
            let shard = TenantShardId::unsharded(TenantId::from_bytes([n; 16]));
            assert_eq!(
                registry.attachment(&shard),
                Some((Generation(11), NodeId(u64::from(n % 3)))),
                "shard {shard}"
            );
        }
        assert_eq!(encode(&header, &registry), pinned);
    }
}
