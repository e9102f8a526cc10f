//! The shard table, split into copy-on-write chunks so that a copy of it costs next to
//! nothing.
//!
//! Snapshots and backups encode the whole registry: at a million shards that takes a few
//! hundred milliseconds, and doing it while holding the applied state held up every
//! write for as long. A [`ShardMap`] is 4,096 ordered maps behind `Arc`s, one per value
//! of a tenant id's first 12 bits; cloning it only bumps their reference counts (tens of
//! microseconds), so the encoder takes a clone under the lock and encodes after releasing
//! it. A write to a chunk that such a clone still shares copies that chunk first
//! (`Arc::make_mut`): 1/4,096 of the table, once per chunk per copy. With 256 chunks,
//! the attaches that arrive during one encode of a million shards touched every chunk,
//! so the whole table was copied each time; with 4,096 they touch a fraction of them.
//!
//! Tenant ids order by their bytes first, so the chunks in order, each in order, are
//! the whole table in [`TenantShardId`] order, and the map serializes exactly as the
//! `BTreeMap` it replaced: snapshots and backups keep their format.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::TenantShardId;
use super::state::ShardRecord;

const CHUNKS: usize = 4096;

type Chunk = BTreeMap<TenantShardId, ShardRecord>;

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ShardMap {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

/// The first 12 bits of the tenant id.
fn chunk_of(shard: &TenantShardId) -> usize {
    let bytes = shard.tenant_id.as_bytes();
    (usize::from(bytes[0]) << 4) | usize::from(bytes[1] >> 4)
}

impl Default for ShardMap {
    fn default() -> Self {
        ShardMap {
            chunks: (0..CHUNKS).map(|_| Arc::new(Chunk::new())).collect(),
            len: 0,
        }
    }
}

impl ShardMap {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, shard: &TenantShardId) -> Option<&ShardRecord> {
        self.chunks[chunk_of(shard)].get(shard)
    }

    pub fn contains_key(&self, shard: &TenantShardId) -> bool {
        self.get(shard).is_some()
    }

    /// The record, copying its chunk first if a clone of this map still shares it.
    pub fn get_mut(&mut self, shard: &TenantShardId) -> Option<&mut ShardRecord> {
        let chunk = &mut self.chunks[chunk_of(shard)];
        if !chunk.contains_key(shard) {
            return None;
        }
        Arc::make_mut(chunk).get_mut(shard)
    }

    pub fn insert(&mut self, shard: TenantShardId, record: ShardRecord) -> Option<ShardRecord> {
        let previous = Arc::make_mut(&mut self.chunks[chunk_of(&shard)]).insert(shard, record);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// The record, inserting `record` first if the shard has none.
    pub fn get_or_insert(&mut self, shard: TenantShardId, record: ShardRecord) -> &mut ShardRecord {
        let chunk = Arc::make_mut(&mut self.chunks[chunk_of(&shard)]);
        let len = &mut self.len;
        chunk.entry(shard).or_insert_with(|| {
            *len += 1;
            record
        })
    }

    /// Every shard in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&TenantShardId, &ShardRecord)> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Every record, for changing them all (copies every shared chunk).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ShardRecord> {
        self.chunks
            .iter_mut()
            .flat_map(|chunk| Arc::make_mut(chunk).values_mut())
    }

    /// Shards in id order, starting strictly after `after` when given.
    pub fn after(
        &self,
        after: Option<TenantShardId>,
    ) -> impl Iterator<Item = (&TenantShardId, &ShardRecord)> {
        let (first, lower) = match after {
            Some(after) => (chunk_of(&after), Bound::Excluded(after)),
            None => (0, Bound::Unbounded),
        };
        let head = self.chunks[first].range((lower, Bound::Unbounded));
        let tail = self.chunks[first + 1..]
            .iter()
            .flat_map(|chunk| chunk.iter());
        head.chain(tail)
    }
}

impl FromIterator<(TenantShardId, ShardRecord)> for ShardMap {
    fn from_iter<I: IntoIterator<Item = (TenantShardId, ShardRecord)>>(iter: I) -> Self {
        let mut map = ShardMap::default();
        for (shard, record) in iter {
            map.insert(shard, record);
        }
        map
    }
}

impl fmt::Debug for ShardMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a map of shard to record in id order: the encoding of a `BTreeMap` of the same.
impl Serialize for ShardMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (shard, record) in self.iter() {
            map.serialize_entry(shard, record)?;
        }
        map.end()
    }
}

/// Reads what [`Serialize`] wrote (or a `BTreeMap`'s encoding) straight into the chunks,
/// without a second copy of the table; a shard given twice keeps its last record, as a
/// `BTreeMap` would.
impl<'de> Deserialize<'de> for ShardMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShardMapVisitor;

        impl<'de> Visitor<'de> for ShardMapVisitor {
            type Value = ShardMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of tenant shard ids to shard records")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<ShardMap, A::Error> {
                let mut map = ShardMap::default();
                while let Some((shard, record)) = access.next_entry()? {
                    map.insert(shard, record);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(ShardMapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Generation, NodeId, TenantId};

    fn shard(first: u8, rest: u8, number: u8, count: u8) -> TenantShardId {
        let mut bytes = [rest; 16];
        bytes[0] = first;
        let tenant = TenantId::from_bytes(bytes);
        if count == 0 {
            TenantShardId::unsharded(tenant)
        } else {
            TenantShardId::sharded(tenant, number, count).expect("number < count")
        }
    }

    fn record(generation: u32) -> ShardRecord {
        ShardRecord {
            generation: Some(Generation(generation)),
            node: Some(NodeId(u64::from(generation % 3))),
        }
    }

    /// Shards spread over chunks (both ends, neighbours that share a first byte), some
    /// tenants sharded.
    fn sample() -> Vec<TenantShardId> {
        let mut shards = Vec::new();
        for first in [0u8, 1, 7, 128, 254, 255] {
            for rest in [0u8, 9, 0x10, 0xef, 255] {
                shards.push(shard(first, rest, 0, 0));
                for number in 0..4 {
                    shards.push(shard(first, rest, number, 4));
                }
            }
        }
        shards
    }

    /// The same operations on a `BTreeMap` and a `ShardMap`, in a scrambled order.
    fn both() -> (BTreeMap<TenantShardId, ShardRecord>, ShardMap) {
        let mut reference = BTreeMap::new();
        let mut map = ShardMap::default();
        let shards = sample();
        for i in 0..shards.len() {
            let shard = shards[(i * 7) % shards.len()];
            let r = record(i as u32 + 1);
            assert_eq!(map.insert(shard, r), reference.insert(shard, r));
        }
        (reference, map)
    }

    #[test]
    fn behaves_like_an_ordered_map() {
        let (mut reference, mut map) = both();
        assert_eq!(map.len(), reference.len());
        assert!(
            map.iter().eq(reference.iter()),
            "the same entries in the same order"
        );
        for shard in sample() {
            assert_eq!(map.get(&shard), reference.get(&shard));
            assert!(map.contains_key(&shard));
        }
        let absent = shard(3, 3, 0, 0);
        assert_eq!(map.get(&absent), None);
        assert_eq!(map.get_mut(&absent), None);
        // get_or_insert inserts once, then returns what is there.
        map.get_or_insert(absent, record(50)).generation = Some(Generation(51));
        reference.entry(absent).or_insert(record(50)).generation = Some(Generation(51));
        assert_eq!(
            map.get_or_insert(absent, record(99)).generation,
            Some(Generation(51))
        );
        assert_eq!(map.len(), reference.len());
        // Replacing keeps the count.
        let some = sample()[5];
        assert_eq!(
            map.insert(some, record(70)),
            reference.insert(some, record(70))
        );
        assert_eq!(map.len(), reference.len());
        for value in map.values_mut() {
            value.node = None;
        }
        for value in reference.values_mut() {
            value.node = None;
        }
        assert!(map.iter().eq(reference.iter()));
    }

    #[test]
    fn after_resumes_strictly_after_any_id_present_or_not() {
        let (reference, map) = both();
        assert!(map.after(None).eq(reference.iter()));
        let mut probes = sample();
        probes.extend([shard(3, 3, 0, 0), shard(255, 255, 3, 4), shard(0, 0, 0, 0)]);
        for after in probes {
            let expected = reference.range((Bound::Excluded(after), Bound::Unbounded));
            assert!(map.after(Some(after)).eq(expected), "after {after}");
        }
    }

    #[test]
    fn a_clone_is_a_snapshot_that_later_writes_do_not_reach() {
        let (_, mut map) = both();
        let frozen = map.clone();
        let before: Vec<_> = frozen.iter().map(|(s, r)| (*s, *r)).collect();
        let first = sample()[0];
        map.get_mut(&first).expect("present").generation = Some(Generation(1_000));
        map.insert(shard(3, 3, 0, 0), record(2));
        for value in map.values_mut() {
            value.node = Some(NodeId(42));
        }
        let after: Vec<_> = frozen.iter().map(|(s, r)| (*s, *r)).collect();
        assert_eq!(before, after, "the clone still shows the table as it was");
        assert_eq!(frozen.len() + 1, map.len());
        assert_eq!(
            map.get(&first).and_then(|r| r.generation),
            Some(Generation(1_000))
        );
    }

    #[test]
    fn encodes_exactly_as_the_btreemap_it_replaced() {
        let (reference, map) = both();
        let ours = controller_raft::codec::encode(&map).expect("encodes");
        let theirs = controller_raft::codec::encode(&reference).expect("encodes");
        assert_eq!(ours, theirs, "snapshots and backups keep their format");
        let decoded: ShardMap = controller_raft::codec::decode(&theirs).expect("decodes");
        assert_eq!(decoded, map);
        assert_eq!(decoded.len(), reference.len());
        let json = serde_json::to_string(&map).expect("JSON");
        assert_eq!(json, serde_json::to_string(&reference).expect("JSON"));
    }
}
