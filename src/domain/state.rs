//! The generation registry: every tenant shard's generation and attachment, and the
//! pageserver nodes that registered.
//!
//! This is the whole replicated state. It knows nothing of Raft, HTTP or disks: Raft
//! feeds it committed [`Command`]s in log order and every replica computes the same
//! [`Outcome`] from the same sequence, so `apply` must stay deterministic (no clocks, no
//! randomness, no iteration over hash maps whose order could leak into an answer).
//!
//! The safety rules live here and nowhere else:
//! - a shard's generation only grows, by exactly one per attach, and never wraps;
//! - detaching keeps the generation, so the next attach is still higher than any issued;
//! - a shard the registry has never seen starts above its floor, which is zero until a
//!   restore or a recovery raises it (generations may have been issued to shards that
//!   were created after the backup, or in entries the survivor never received);
//! - validate is equality with the current generation, nothing looser.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::ids::{Generation, NodeId, TenantShardId};
use super::shard_map::ShardMap;

/// How a pageserver reaches its node; registering the same id with other addresses is a
/// conflict (a second machine claiming to be the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub listen_pg_addr: String,
    pub listen_pg_port: u16,
    pub listen_http_addr: String,
    pub listen_http_port: u16,
}

/// Whether the operator lets new work be placed on a node (Neon's scheduling policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SchedulingPolicy {
    #[default]
    Active,
    Filling,
    Pause,
    PauseForRestart,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub address: NodeAddress,
    pub availability_zone_id: Option<String>,
    pub scheduling: SchedulingPolicy,
}

/// One tenant shard: its current generation (none before the first attach) and the node
/// it is attached to (none when detached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub generation: Option<Generation>,
    pub node: Option<NodeId>,
}

/// A state change, as proposed through Raft. Every field is already validated syntax;
/// checks that depend on the state happen in [`Registry::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Attach a shard to `node` with a new generation, or detach it (`node: None`).
    AttachHook {
        shard: TenantShardId,
        node: Option<NodeId>,
        generation_override: Option<Generation>,
    },
    /// A pageserver restarted: every shard attached to it gets a new generation.
    ReAttach {
        node: NodeId,
        register: Option<(NodeAddress, Option<String>)>,
    },
    RegisterNode {
        node: NodeId,
        address: NodeAddress,
        availability_zone_id: Option<String>,
    },
    /// Move a shard to a registered node with a new generation.
    Migrate { shard: TenantShardId, node: NodeId },
    ConfigureNode {
        node: NodeId,
        scheduling: SchedulingPolicy,
    },
    /// Forget a node. Refused while shards are attached to it.
    DeleteNode { node: NodeId },
}

/// What a command did. Refusals are outcomes too: they are decided at apply time, from the
/// committed state, so every replica refuses the same commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Attached {
        generation: Option<Generation>,
    },
    ReAttached {
        shards: Vec<(TenantShardId, Generation)>,
    },
    NodeRegistered,
    Migrated {
        generation: Generation,
    },
    NodeConfigured,
    NodeDeleted,
    Refused(Refusal),
}

/// A command that the state does not allow. Each maps to a 4xx for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node {node} is already registered with other addresses \
         (pg {}:{}, http {}:{})",
        existing.listen_pg_addr, existing.listen_pg_port,
        existing.listen_http_addr, existing.listen_http_port
    )]
    NodeConflict { node: NodeId, existing: NodeAddress },
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    #[error("tenant shard {0} is not known")]
    UnknownShard(TenantShardId),
    #[error(
        "tenant shard {0} has used every generation (u32 exhausted); it cannot be attached again"
    )]
    GenerationExhausted(TenantShardId),
    #[error(
        "the floor new tenant shards start above would reach the last generation (u32 exhausted)"
    )]
    FloorExhausted,
    #[error(
        "node {node} still has {attached} attached tenant shards; migrate or detach them first"
    )]
    NodeInUse { node: NodeId, attached: usize },
}

/// Answer to one entry of a validate call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub shard: TenantShardId,
    pub valid: bool,
}

/// The replicated state. `attached` is an index derived from `shards`, rebuilt on load.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registry {
    shards: ShardMap,
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// Every generation of a shard not in `shards` may have been issued up to here (by
    /// the cluster a backup or a survivor came from): a new shard starts above it.
    floor: Option<Generation>,
    attached: HashMap<NodeId, BTreeSet<TenantShardId>>,
}

impl Registry {
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::AttachHook {
                shard,
                node,
                generation_override,
            } => self.attach_hook(*shard, *node, *generation_override),
            Command::ReAttach { node, register } => {
                // What a log entry does never changes between versions (replicas of two
                // versions apply the same entries during an upgrade): a refused re-attach
                // keeps the registration it carried, as it always has. Registering again
                // is what its retry does anyway.
                if let Some((address, az)) = register {
                    if let Err(refusal) = self.register(*node, address, az) {
                        return Outcome::Refused(refusal);
                    }
                }
                self.re_attach(*node)
            }
            Command::RegisterNode {
                node,
                address,
                availability_zone_id,
            } => match self.register(*node, address, availability_zone_id) {
                Ok(()) => Outcome::NodeRegistered,
                Err(refusal) => Outcome::Refused(refusal),
            },
            Command::Migrate { shard, node } => self.migrate(*shard, *node),
            Command::ConfigureNode { node, scheduling } => match self.nodes.get_mut(node) {
                Some(record) => {
                    record.scheduling = *scheduling;
                    Outcome::NodeConfigured
                }
                None => Outcome::Refused(Refusal::UnknownNode(*node)),
            },
            Command::DeleteNode { node } => self.delete_node(*node),
        }
    }

    fn attach_hook(
        &mut self,
        shard: TenantShardId,
        node: Option<NodeId>,
        generation_override: Option<Generation>,
    ) -> Outcome {
        let Some(node) = node else {
            // Detach: the generation stays, so the next attach is above everything issued.
            // An unknown shard is only created when an override gives it a starting point.
            match (self.shards.contains_key(&shard), generation_override) {
                (true, _) => self.set_node(shard, None),
                (false, Some(generation)) => {
                    self.shards.insert(
                        shard,
                        ShardRecord {
                            generation: self.seed(Some(generation)),
                            node: None,
                        },
                    );
                }
                (false, None) => {}
            }
            return Outcome::Attached { generation: None };
        };
        let seed = self.seed(generation_override);
        let floor = self.floor;
        let record = self.shards.get_or_insert(
            shard,
            ShardRecord {
                // An override only seeds a shard that does not exist yet; it never rewinds one.
                generation: seed,
                node: None,
            },
        );
        // No generation yet: a shard just created without a seed, or a stored record
        // without one (no command stores it; a crafted backup could), which starts above
        // the floor like a new shard.
        let next = match record.generation.or(floor) {
            None => Generation(1),
            Some(current) => match current.next() {
                Some(next) => next,
                None => return Outcome::Refused(Refusal::GenerationExhausted(shard)),
            },
        };
        record.generation = Some(next);
        self.set_node(shard, Some(node));
        Outcome::Attached {
            generation: Some(next),
        }
    }

    fn re_attach(&mut self, node: NodeId) -> Outcome {
        let attached: Vec<TenantShardId> = self
            .attached
            .get(&node)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        // All or nothing: one exhausted shard refuses the whole re-attach, so no replica
        // ever sees half of it applied.
        if let Some(exhausted) = attached.iter().find(|shard| {
            self.shards
                .get(shard)
                .expect("the attached index only names known shards")
                .generation
                .is_some_and(|g| g.next().is_none())
        }) {
            return Outcome::Refused(Refusal::GenerationExhausted(*exhausted));
        }
        let mut shards = Vec::with_capacity(attached.len());
        let floor = self.floor;
        for shard in attached {
            let record = self
                .shards
                .get_mut(&shard)
                .expect("the attached index only names known shards");
            // As in an attach: a record without a generation starts above the floor.
            let next = record
                .generation
                .or(floor)
                .map_or(Some(Generation(1)), Generation::next)
                .expect("checked above that no generation is exhausted");
            record.generation = Some(next);
            shards.push((shard, next));
        }
        Outcome::ReAttached { shards }
    }

    fn register(
        &mut self,
        node: NodeId,
        address: &NodeAddress,
        availability_zone_id: &Option<String>,
    ) -> Result<(), Refusal> {
        match self.nodes.get_mut(&node) {
            Some(existing) if existing.address != *address => Err(Refusal::NodeConflict {
                node,
                existing: existing.address.clone(),
            }),
            Some(existing) => {
                if availability_zone_id.is_some() {
                    existing.availability_zone_id = availability_zone_id.clone();
                }
                Ok(())
            }
            None => {
                self.nodes.insert(
                    node,
                    NodeRecord {
                        address: address.clone(),
                        availability_zone_id: availability_zone_id.clone(),
                        scheduling: SchedulingPolicy::Active,
                    },
                );
                Ok(())
            }
        }
    }

    fn migrate(&mut self, shard: TenantShardId, node: NodeId) -> Outcome {
        if !self.nodes.contains_key(&node) {
            return Outcome::Refused(Refusal::UnknownNode(node));
        }
        let Some(record) = self.shards.get(&shard) else {
            return Outcome::Refused(Refusal::UnknownShard(shard));
        };
        if let (Some(generation), Some(current)) = (record.generation, record.node) {
            if current == node {
                // Already there: the attachment it holds stays valid, nothing to issue.
                return Outcome::Migrated { generation };
            }
        }
        match self.attach_hook(shard, Some(node), None) {
            Outcome::Attached {
                generation: Some(generation),
            } => Outcome::Migrated { generation },
            other => other,
        }
    }

    fn delete_node(&mut self, node: NodeId) -> Outcome {
        if !self.nodes.contains_key(&node) {
            return Outcome::Refused(Refusal::UnknownNode(node));
        }
        let attached = self.attached.get(&node).map_or(0, BTreeSet::len);
        if attached > 0 {
            return Outcome::Refused(Refusal::NodeInUse { node, attached });
        }
        self.nodes.remove(&node);
        Outcome::NodeDeleted
    }

    /// Moves a shard's attachment and keeps the `attached` index in step.
    fn set_node(&mut self, shard: TenantShardId, node: Option<NodeId>) {
        let record = self
            .shards
            .get_mut(&shard)
            .expect("set_node is called for known shards");
        let previous = std::mem::replace(&mut record.node, node);
        if previous == node {
            return;
        }
        if let Some(previous) = previous {
            if let Some(set) = self.attached.get_mut(&previous) {
                set.remove(&shard);
                if set.is_empty() {
                    self.attached.remove(&previous);
                }
            }
        }
        if let Some(node) = node {
            self.attached.entry(node).or_default().insert(shard);
        }
    }

    /// Where a shard not seen before starts: above the floor, and at the override if that
    /// is higher. None (the first attach gives 1) when there is neither.
    fn seed(&self, generation_override: Option<Generation>) -> Option<Generation> {
        self.floor.max(generation_override)
    }

    /// Raises every shard's generation by `by`, and the floor new shards start above: used
    /// when a cluster is rebuilt from a backup or from a surviving replica, which may be
    /// missing generations issued after it was taken, to shards it holds and to shards it
    /// has never seen. Any generation handed out later is then above all of those,
    /// provided fewer than `by` attaches of any one shard happened in the gap. The floor
    /// starts from the highest generation held, not only from the old floor: a shard the
    /// copy has never seen may have been created after it with an override copied from
    /// one it holds (a shard split), and its first attach must land above that too. All
    /// or nothing: refused if a shard or the floor would wrap. Returns how many shards
    /// were raised.
    pub fn bump_generations(&mut self, by: u32) -> Result<usize, Refusal> {
        if let Some((shard, _)) = self
            .shards
            .iter()
            .find(|(_, r)| r.generation.is_some_and(|g| g.0.checked_add(by).is_none()))
        {
            return Err(Refusal::GenerationExhausted(*shard));
        }
        let highest = self
            .shards
            .iter()
            .filter_map(|(_, r)| r.generation)
            .chain(self.floor)
            .max()
            .map_or(0, |g| g.0);
        // Below the top, so that a shard seeded at the floor can still be attached: one
        // seeded at u32::MAX would be created by an attach that is refused.
        let floor = highest
            .checked_add(by)
            .filter(|floor| *floor < u32::MAX)
            .ok_or(Refusal::FloorExhausted)?;
        self.floor = Some(Generation(floor));
        let mut raised = 0;
        for record in self.shards.values_mut() {
            if let Some(generation) = &mut record.generation {
                generation.0 += by;
                raised += 1;
            }
        }
        Ok(raised)
    }

    /// Valid only if `generation` is the shard's current generation. Unknown shards are
    /// left out, as Neon's pageserver expects (it treats a missing answer as invalid).
    pub fn validate(
        &self,
        requests: impl IntoIterator<Item = (TenantShardId, Generation)>,
    ) -> Vec<Validity> {
        requests
            .into_iter()
            .filter_map(|(shard, generation)| {
                self.shards.get(&shard).map(|record| Validity {
                    shard,
                    valid: record.generation == Some(generation),
                })
            })
            .collect()
    }

    pub fn shard(&self, shard: &TenantShardId) -> Option<&ShardRecord> {
        self.shards.get(shard)
    }

    /// (generation, node) while attached, as Neon's inspect answers.
    pub fn attachment(&self, shard: &TenantShardId) -> Option<(Generation, NodeId)> {
        let record = self.shards.get(shard)?;
        Some((record.generation?, record.node?))
    }

    pub fn node(&self, node: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &NodeRecord)> {
        self.nodes.iter()
    }

    /// Shards in id order, starting strictly after `after` when given.
    pub fn shards_after(
        &self,
        after: Option<TenantShardId>,
    ) -> impl Iterator<Item = (&TenantShardId, &ShardRecord)> {
        self.shards.after(after)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn attached_to(&self, node: &NodeId) -> usize {
        self.attached.get(node).map_or(0, BTreeSet::len)
    }

    /// The registry as it stands now, to encode after letting go of it (see
    /// [`FrozenRegistry`]).
    pub fn frozen(&self) -> FrozenRegistry {
        FrozenRegistry {
            shards: self.shards.clone(),
            nodes: self.nodes.clone(),
            floor: self.floor,
        }
    }

    /// Where shards not seen before start (above it), if a restore or recovery set one.
    pub fn floor(&self) -> Option<Generation> {
        self.floor
    }
}

/// A registry's source of truth at one point, serialized exactly as the registry.
/// Taking one copies the node table and shares the shard table's chunks (see
/// `ShardMap`), so a snapshot or backup takes it while holding the applied state and
/// encodes it after releasing it: writes go on meanwhile, and never show in it.
#[derive(Debug, Clone)]
pub struct FrozenRegistry {
    shards: ShardMap,
    nodes: BTreeMap<NodeId, NodeRecord>,
    floor: Option<Generation>,
}

impl FrozenRegistry {
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl Serialize for FrozenRegistry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RegistryRef {
            shards: &self.shards,
            nodes: &self.nodes,
            floor: self.floor,
        }
        .serialize(serializer)
    }
}

/// The serialized form: only the source of truth, never the derived index. The shards,
/// the nodes, and the floor only when there is one, last: a registry without a floor
/// encodes byte for byte as before the floor existed (so earlier versions read it, and
/// this one reads theirs), and one with a floor is refused by earlier versions (trailing
/// bytes) rather than read without it.
struct RegistryRef<'a> {
    shards: &'a ShardMap,
    nodes: &'a BTreeMap<NodeId, NodeRecord>,
    floor: Option<Generation>,
}

impl Serialize for RegistryRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(2 + usize::from(self.floor.is_some()))?;
        tuple.serialize_element(self.shards)?;
        tuple.serialize_element(self.nodes)?;
        if let Some(floor) = &self.floor {
            tuple.serialize_element(floor)?;
        }
        tuple.end()
    }
}

struct RegistryOwned {
    shards: ShardMap,
    nodes: BTreeMap<NodeId, NodeRecord>,
    floor: Option<Generation>,
}

impl<'de> Deserialize<'de> for RegistryOwned {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RegistryOwned;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a registry: shards, nodes and perhaps a floor")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RegistryOwned, A::Error> {
                use serde::de::Error;
                let shards = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let nodes = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                // The encoding ends here when there is no floor: reading past the end is
                // an error that means "none" (the bytes are checksummed around it).
                let floor = seq.next_element().ok().flatten();
                Ok(RegistryOwned {
                    shards,
                    nodes,
                    floor,
                })
            }
        }
        deserializer.deserialize_tuple(3, Fields)
    }
}

impl Serialize for Registry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RegistryRef {
            shards: &self.shards,
            nodes: &self.nodes,
            floor: self.floor,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Registry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let RegistryOwned {
            shards,
            nodes,
            floor,
        } = RegistryOwned::deserialize(deserializer)?;
        let mut attached: HashMap<NodeId, BTreeSet<TenantShardId>> = HashMap::new();
        for (shard, record) in shards.iter() {
            if let Some(node) = record.node {
                attached.entry(node).or_default().insert(*shard);
            }
        }
        Ok(Registry {
            shards,
            nodes,
            floor,
            attached,
        })
    }
}
