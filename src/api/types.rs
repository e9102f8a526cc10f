//! The JSON bodies of the HTTP API, shared by the server and the typed client.
//!
//! Shapes follow Neon's pageserver control-plane client field for field. Unknown fields
//! are ignored everywhere (no `deny_unknown_fields`): a newer pageserver may send fields
//! we do not know yet, and refusing them would stop it from starting. Fields that 2023
//! pageservers spelled differently are accepted under both names.

use serde::{Deserialize, Serialize};

use crate::domain::{NodeId, SchedulingPolicy, TenantShardId};

/// `POST /upcall/v1/re-attach`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReAttachRequest {
    pub node_id: NodeId,
    /// Inline self-registration, as newer pageservers send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<NodeRegisterRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReAttachResponse {
    pub tenants: Vec<ReAttachResponseTenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReAttachResponseTenant {
    pub id: TenantShardId,
    /// `null` only for secondary locations, which this controller does not hand out.
    #[serde(alias = "generation")]
    pub r#gen: Option<u32>,
    pub mode: LocationMode,
}

/// How a pageserver should hold a tenant shard it re-attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocationMode {
    AttachedSingle,
    AttachedMulti,
    AttachedStale,
    Secondary,
    Detached,
}

/// A re-attach answer on the bare `/re-attach` path of 2023. Pageservers of that year
/// read the generation as `generation` at first and as `gen` by its end, and the path a
/// pageserver calls follows its configured base URL, not its version: each tenant
/// carries both names, and the mode, so that every one of them finds what it reads
/// (none of them refuses a field it does not know).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyReAttachResponse {
    pub tenants: Vec<LegacyReAttachResponseTenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyReAttachResponseTenant {
    pub id: TenantShardId,
    pub generation: u32,
    pub r#gen: u32,
    pub mode: LocationMode,
}

/// `POST /upcall/v1/validate`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequest {
    pub tenants: Vec<ValidateRequestTenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequestTenant {
    pub id: TenantShardId,
    #[serde(alias = "generation")]
    pub r#gen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateResponse {
    pub tenants: Vec<ValidateResponseTenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateResponseTenant {
    pub id: TenantShardId,
    pub valid: bool,
}

/// `POST /debug/v1/attach-hook`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachHookRequest {
    #[serde(alias = "tenant_id")]
    pub tenant_shard_id: TenantShardId,
    /// `pageserver_id` in the first (2023) clients: without the alias their attach would
    /// read as a detach.
    #[serde(alias = "pageserver_id")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_override: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachHookResponse {
    pub r#gen: Option<u32>,
}

/// `POST /debug/v1/inspect`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectRequest {
    #[serde(alias = "tenant_id")]
    pub tenant_shard_id: TenantShardId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectResponse {
    /// (generation, node) while attached.
    pub attachment: Option<(u32, NodeId)>,
}

/// `POST /control/v1/node`, and the inline `register` of a re-attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegisterRequest {
    pub node_id: NodeId,
    pub listen_pg_addr: String,
    pub listen_pg_port: u16,
    pub listen_http_addr: String,
    pub listen_http_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone_id: Option<String>,
}

/// One entry of `GET /control/v1/node`, and `GET /control/v1/node/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescribeResponse {
    pub id: NodeId,
    pub listen_pg_addr: String,
    pub listen_pg_port: u16,
    pub listen_http_addr: String,
    pub listen_http_port: u16,
    pub availability_zone_id: Option<String>,
    pub scheduling: SchedulingPolicy,
    /// How many tenant shards are attached to the node.
    pub attached_shards: usize,
}

/// `PUT /control/v1/node/{id}/config`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfigureRequest {
    pub node_id: NodeId,
    #[serde(default)]
    pub scheduling: Option<SchedulingPolicy>,
    /// Accepted for compatibility and refused if set: availability is observed, not
    /// configured, and this controller does not probe pageservers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<serde_json::Value>,
}

/// `PUT /control/v1/tenant/{tenant_shard_id}/migrate`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantShardMigrateRequest {
    /// Repeats the path's shard; newer Neon clients leave it out. Checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_shard_id: Option<TenantShardId>,
    pub node_id: NodeId,
}

/// Neon answers a migrate with `{}`; we add the generation the shard now has, which
/// Neon's client ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantShardMigrateResponse {
    pub r#gen: u32,
}

/// One entry of `GET /control/v1/tenant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantShardDescribe {
    pub tenant_shard_id: TenantShardId,
    pub generation: Option<u32>,
    pub node_id: Option<NodeId>,
}

/// Query of `GET /control/v1/tenant`: a page of shards in id order after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<TenantShardId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub msg: String,
}

/// `GET /status`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub replica_id: u64,
}

/// `GET /ready`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    pub replica_id: u64,
    pub leader: u64,
    pub applied: u64,
}

/// `POST /v1/cluster/members`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMemberRequest {
    pub id: u64,
    pub url: String,
}

/// Query of `POST /v1/cluster/members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMemberQuery {
    /// Keep the new member a learner (it replicates but does not vote).
    #[serde(default)]
    pub learner: bool,
    /// How long to wait for the new member to catch up, in seconds (default 60).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// Query of `DELETE /v1/cluster/members/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveMemberQuery {
    /// Remove even if the remaining voters that answer could not form a quorum.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/cluster/leader`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderRequest {
    pub id: u64,
}

/// `POST /v1/cluster/step-down`: what the replica asked did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDownResponse {
    pub replica_id: u64,
    /// Whether it led when asked.
    pub was_leader: bool,
    /// The leader it knows of after the step-down (itself when it leads alone: a
    /// single voter has no one to hand leadership to).
    pub leader: Option<u64>,
}

/// `GET /v1/cluster`: this replica's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_name: String,
    pub cluster_id: String,
    pub replica_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<ClusterMember>,
    pub last_log_index: Option<u64>,
    /// The term of the last log entry (not the current term, which a replica without a
    /// quorum keeps raising): with `last_log_index`, which replica's log is the most
    /// recent, as Raft compares logs. Absent in answers of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log_term: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this replica as leader.
    pub millis_since_quorum_ack: Option<u64>,
    /// True while a membership change is between its two steps (joint consensus): a
    /// quorum of both the old and the new voters is then needed.
    pub joint: bool,
    /// Present while this replica has been removed from the cluster (see
    /// [`RemovedStatus`]); absent on members and in answers of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovedStatus>,
    /// Only from a replica in its waiting room (an empty data dir, deciding whether to
    /// bootstrap or join): the peers (URLs) it has seen there too, so that a peer about to
    /// bootstrap knows it was seen before it starts Raft.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_fresh: Vec<String>,
}

/// A peer reported that its committed membership, which this replica's log has not
/// reached, does not count this replica as a voter: it was removed while it was down or
/// cut off, and no longer calls elections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedStatus {
    pub reported_by: u64,
    /// Log index of the membership that leaves this replica out.
    pub membership_index: u64,
}

impl RemovedStatus {
    /// What an operator should read about it.
    pub fn explain(&self, replica: u64) -> String {
        format!(
            "replica {replica} was removed from the cluster: replica {} committed a membership \
             (log index {}) without it, which this replica's log lacks; it calls no elections \
             and serves nothing. Stop it, or add it back with `cluster add`",
            self.reported_by, self.membership_index
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub id: u64,
    pub url: String,
    /// `voter` or `learner`.
    pub role: String,
    /// The last log index the leader knows this member holds (only on the leader).
    pub matched_index: Option<u64>,
}
