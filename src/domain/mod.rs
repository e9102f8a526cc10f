//! The domain rules of generation numbers, free of Raft, HTTP and disks.
//!
//! A pageserver may only work on a tenant shard under a generation this module issued,
//! and may only delete objects while that generation is still the shard's latest. Every
//! rule that protects data is here, unit-tested on its own; the layers above only carry
//! commands to [`Registry::apply`] in the same order on every replica.

mod ids;
mod shard_map;
mod state;
#[cfg(test)]
mod tests;

pub use ids::{Generation, IdParseError, NodeId, TenantId, TenantShardId};
pub use state::{
    Command, FrozenRegistry, NodeAddress, NodeRecord, Outcome, Refusal, Registry, SchedulingPolicy,
    ShardRecord, Validity,
};
