//! Bounded bincode: the one encoding for Raft RPC bodies, log entries and snapshots.
//!
//! Decoding never trusts a length prefix: every decode runs under a byte limit, so a
//! truncated or garbled buffer yields an error, never a panic or a huge allocation.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Larger than any single message we produce (snapshot chunks are a few MiB; a snapshot
/// of a million shards is tens of MiB).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_DECODE_BYTES)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(#[from] bincode::Error);

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(options().serialize(value)?)
}

pub fn encode_into<T: Serialize + ?Sized, W: std::io::Write>(
    writer: W,
    value: &T,
) -> Result<(), CodecError> {
    Ok(options().serialize_into(writer, value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(options().deserialize(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let good = encode(&(1u64, vec![String::from("abc"); 3])).unwrap();
        for cut in 0..good.len() {
            assert!(decode::<(u64, Vec<String>)>(&good[..cut]).is_err());
        }
        let huge_len = [0xffu8; 16];
        assert!(decode::<Vec<u8>>(&huge_len).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode::<(u64, Vec<String>)>(&trailing).is_err());
    }
}
