//! Identifiers with Neon's exact wire forms.
//!
//! These types are the only way a tenant shard, a node or a generation crosses a module
//! boundary. Parsing is strict (lowercase hex, shard number below shard count, no
//! `-0000` alias for the legacy form) so two spellings can never name one shard, and
//! `Display` always produces the canonical string a pageserver would send.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier string was refused. The message is shown to API callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("invalid tenant id {0:?}: expected 32 lowercase hex digits")]
    TenantId(String),
    #[error(
        "invalid tenant shard id {0:?}: expected 32 lowercase hex digits, optionally followed by \
         -NNCC (shard number and shard count, two lowercase hex digits each)"
    )]
    Syntax(String),
    #[error("invalid tenant shard id {0:?}: shard number must be below shard count")]
    ShardOutOfRange(String),
    #[error(
        "invalid tenant shard id {0:?}: the shard count is 0; an unsharded tenant is written \
         without a suffix (not -0000), a sharded one with a count of at least 1"
    )]
    ZeroCount(String),
}

/// A tenant: 16 bytes, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId([u8; 16]);

impl TenantId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

fn lower_hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_lower_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (lower_hex_value(pair[0])? << 4) | lower_hex_value(pair[1])?;
    }
    Some(out)
}

impl FromStr for TenantId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_lower_hex::<16>(s.as_bytes())
            .map(TenantId)
            .ok_or_else(|| IdParseError::TenantId(s.to_owned()))
    }
}

/// `text` written by [`write_lower_hex`] (and ASCII punctuation) as a `str`.
fn ascii(text: &[u8]) -> &str {
    std::str::from_utf8(text).expect("hex digits are ASCII")
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 32];
        write_lower_hex(&self.0, &mut text);
        f.write_str(ascii(&text))
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One shard of a tenant. `shard_count == 0` is Neon's legacy unsharded form, written as
/// the bare tenant id; `-0001` (one shard of a sharded tenant) is a different shard id.
///
/// Ordered by tenant, then shard number, then shard count, as Neon orders them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantShardId {
    pub tenant_id: TenantId,
    pub shard_number: u8,
    pub shard_count: u8,
}

impl TenantShardId {
    /// The legacy, unsharded form of a tenant.
    pub const fn unsharded(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            shard_number: 0,
            shard_count: 0,
        }
    }

    /// A shard of a sharded tenant; `None` unless `number < count`.
    pub fn sharded(tenant_id: TenantId, number: u8, count: u8) -> Option<Self> {
        (number < count).then_some(Self {
            tenant_id,
            shard_number: number,
            shard_count: count,
        })
    }

    pub fn is_unsharded(&self) -> bool {
        self.shard_count == 0
    }
}

impl FromStr for TenantShardId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let syntax = || IdParseError::Syntax(s.to_owned());
        match bytes.len() {
            32 => {
                let tenant = parse_lower_hex::<16>(bytes).ok_or_else(syntax)?;
                Ok(Self::unsharded(TenantId(tenant)))
            }
            37 if bytes[32] == b'-' => {
                let tenant = parse_lower_hex::<16>(&bytes[..32]).ok_or_else(syntax)?;
                let [number] = parse_lower_hex::<1>(&bytes[33..35]).ok_or_else(syntax)?;
                let [count] = parse_lower_hex::<1>(&bytes[35..37]).ok_or_else(syntax)?;
                if count == 0 {
                    return Err(IdParseError::ZeroCount(s.to_owned()));
                }
                Self::sharded(TenantId(tenant), number, count)
                    .ok_or_else(|| IdParseError::ShardOutOfRange(s.to_owned()))
            }
            _ => Err(syntax()),
        }
    }
}

impl TenantShardId {
    /// The canonical string form in a buffer of its own: ids are written by the hundred
    /// in every validate and re-attach answer, so this avoids the formatting machinery.
    fn text(&self) -> ([u8; 37], usize) {
        let mut text = [0u8; 37];
        write_lower_hex(&self.tenant_id.0, &mut text[..32]);
        if self.is_unsharded() {
            return (text, 32);
        }
        text[32] = b'-';
        write_lower_hex(&[self.shard_number, self.shard_count], &mut text[33..]);
        (text, 37)
    }
}

impl fmt::Display for TenantShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, len) = self.text();
        f.write_str(ascii(&text[..len]))
    }
}

impl fmt::Debug for TenantShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// On the wire (JSON) a shard id is its canonical string; in the Raft log and snapshots
/// (bincode) it is the compact tuple, so the log does not carry hex text.
impl Serialize for TenantShardId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let (text, len) = self.text();
            serializer.serialize_str(ascii(&text[..len]))
        } else {
            (self.tenant_id.0, self.shard_number, self.shard_count).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for TenantShardId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let (tenant, number, count) = <([u8; 16], u8, u8)>::deserialize(deserializer)?;
            let id = TenantShardId {
                tenant_id: TenantId(tenant),
                shard_number: number,
                shard_count: count,
            };
            // Binary data comes from our own log or a snapshot; still never trust it blindly.
            if count != 0 && number >= count || count == 0 && number != 0 {
                return Err(serde::de::Error::custom(format!(
                    "corrupt tenant shard id: shard {number} of {count}"
                )));
            }
            Ok(id)
        }
    }
}

/// A pageserver node, a bare JSON integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(NodeId)
    }
}

/// A tenant shard's generation: a u32 that only ever grows. The first attach yields 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    /// The highest generation an attach-hook may seed a new shard with: half the space,
    /// so that the shard can still be attached some two billion times, and a restore or
    /// recovery (which raises every generation by its bump) still has room above it. A
    /// seed near the top would make every later restore or recovery refuse to run.
    pub const MAX_OVERRIDE: Generation = Generation(u32::MAX / 2);

    /// The generation after this one, or `None` when the u32 space is used up.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }

    /// The suffix Neon appends to object keys written under this generation.
    pub fn key_suffix(self) -> String {
        format!("-{:08x}", self.0)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "072f1291a5310026820b2fe4b2968934";

    #[test]
    fn legacy_and_sharded_forms_round_trip() {
        let legacy: TenantShardId = T.parse().unwrap();
        assert!(legacy.is_unsharded());
        assert_eq!(legacy.to_string(), T);

        let sharded: TenantShardId = format!("{T}-0102").parse().unwrap();
        assert_eq!((sharded.shard_number, sharded.shard_count), (1, 2));
        assert_eq!(sharded.to_string(), format!("{T}-0102"));

        let one_of_one: TenantShardId = format!("{T}-0001").parse().unwrap();
        assert_ne!(one_of_one, legacy, "-0001 is not the legacy form");
        assert_eq!(one_of_one.to_string(), format!("{T}-0001"));
    }

    #[test]
    fn strict_parsing_refuses_every_other_spelling() {
        for bad in [
            "",
            &T[..31],
            &format!("{T}0"),
            &T.to_uppercase(),
            &format!("{T}-0000"),
            &format!("{T}-0202"),
            &format!("{T}-0302"),
            &format!("{T}-01"),
            &format!("{T}_0102"),
            &format!("{T}-01G2"),
            "g72f1291a5310026820b2fe4b2968934",
            &format!("{T}-0A0B"),
        ] {
            assert!(
                bad.parse::<TenantShardId>().is_err(),
                "{bad:?} was accepted"
            );
        }
        let hex_upper_count = format!("{T}-0a0b");
        assert!(hex_upper_count.parse::<TenantShardId>().is_ok());
    }

    #[test]
    fn json_uses_strings_and_bincode_uses_bytes() {
        let id: TenantShardId = format!("{T}-0304").parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{T}-0304\""));
        assert_eq!(serde_json::from_str::<TenantShardId>(&json).unwrap(), id);

        let bin = bincode::serialize(&id).unwrap();
        assert_eq!(bin.len(), 18);
        assert_eq!(bincode::deserialize::<TenantShardId>(&bin).unwrap(), id);
    }

    #[test]
    fn corrupt_binary_shard_ids_are_refused() {
        let bin = bincode::serialize(&([7u8; 16], 5u8, 2u8)).unwrap();
        assert!(bincode::deserialize::<TenantShardId>(&bin).is_err());
    }

    #[test]
    fn ordering_follows_tenant_then_shard() {
        let a: TenantShardId = format!("{T}-0002").parse().unwrap();
        let b: TenantShardId = format!("{T}-0102").parse().unwrap();
        assert!(a < b);
    }

    #[test]
    fn generation_never_wraps() {
        assert_eq!(Generation(1).next(), Some(Generation(2)));
        assert_eq!(Generation(u32::MAX).next(), None);
        assert_eq!(Generation(9).key_suffix(), "-00000009");
    }
}
