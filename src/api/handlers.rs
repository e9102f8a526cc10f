//! Handlers of Neon's generation API. Each turns a request into a domain command or
//! query, runs it through the replica, and turns the outcome into Neon's JSON. They run on
//! the leader (see [`super::routing`]) and do nothing else.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json as JsonResponse;

use super::error::ApiError;
use super::json::Json;
use super::path::Segment;
use super::types::*;
use super::ApiState;
use crate::domain::{
    Command, Generation, NodeAddress, NodeId, NodeRecord, Outcome, Registry, TenantShardId,
};

type Api = State<Arc<ApiState>>;

fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::Internal(format!(
        "unexpected outcome from the state machine: {outcome:?}"
    ))
}

/// The longest host name or zone id a registration may carry: a DNS name is at most
/// 253 bytes. Without a bound, a few registrations of megabytes each, batched into one
/// log entry, would make an entry larger than a peer accepts, and stall every write
/// behind it.
pub const MAX_NODE_FIELD_BYTES: usize = 255;

/// The node's address, once its fields are checked; `prefix` names where the request
/// carried them (`register.` in a re-attach).
fn address(request: &NodeRegisterRequest, prefix: &str) -> Result<NodeAddress, ApiError> {
    let fields = [
        ("listen_pg_addr", Some(&request.listen_pg_addr)),
        ("listen_http_addr", Some(&request.listen_http_addr)),
        (
            "availability_zone_id",
            request.availability_zone_id.as_ref(),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value.filter(|v| v.len() > MAX_NODE_FIELD_BYTES) {
            return Err(ApiError::BadRequest(format!(
                "{prefix}{name}: {} bytes, more than the {MAX_NODE_FIELD_BYTES} allowed",
                value.len()
            )));
        }
    }
    Ok(NodeAddress {
        listen_pg_addr: request.listen_pg_addr.clone(),
        listen_pg_port: request.listen_pg_port,
        listen_http_addr: request.listen_http_addr.clone(),
        listen_http_port: request.listen_http_port,
    })
}

async fn re_attached(
    api: &ApiState,
    request: ReAttachRequest,
) -> Result<Vec<(TenantShardId, Generation)>, ApiError> {
    if let Some(register) = &request.register {
        if register.node_id != request.node_id {
            return Err(ApiError::BadRequest(format!(
                "register.node_id {} differs from node_id {}",
                register.node_id, request.node_id
            )));
        }
    }
    let register = match &request.register {
        Some(r) => Some((address(r, "register.")?, r.availability_zone_id.clone())),
        None => None,
    };
    let command = Command::ReAttach {
        node: request.node_id,
        register,
    };
    match api.replica.propose_one(command).await? {
        Outcome::ReAttached { shards } => {
            tracing::info!(node = %request.node_id, shards = shards.len(), "re-attached");
            Ok(shards)
        }
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

/// `POST /upcall/v1/re-attach`
pub async fn re_attach(
    State(api): Api,
    Json(request): Json<ReAttachRequest>,
) -> Result<JsonResponse<ReAttachResponse>, ApiError> {
    let shards = re_attached(&api, request).await?;
    Ok(JsonResponse(ReAttachResponse {
        tenants: shards
            .into_iter()
            .map(|(id, generation)| ReAttachResponseTenant {
                id,
                r#gen: Some(generation.0),
                mode: LocationMode::AttachedSingle,
            })
            .collect(),
    }))
}

/// `POST /re-attach`, the 2023 shape.
pub async fn re_attach_legacy(
    State(api): Api,
    Json(request): Json<ReAttachRequest>,
) -> Result<JsonResponse<LegacyReAttachResponse>, ApiError> {
    let shards = re_attached(&api, request).await?;
    Ok(JsonResponse(LegacyReAttachResponse {
        tenants: shards
            .into_iter()
            .map(|(id, generation)| LegacyReAttachResponseTenant {
                id,
                generation: generation.0,
                r#gen: generation.0,
                mode: LocationMode::AttachedSingle,
            })
            .collect(),
    }))
}

/// `POST /upcall/v1/validate`: shards this controller does not know are left out, which
/// the pageservers that call this path read as invalid.
pub async fn validate(
    State(api): Api,
    Json(request): Json<ValidateRequest>,
) -> Result<JsonResponse<ValidateResponse>, ApiError> {
    Ok(JsonResponse(validated(&api, &request).await?))
}

/// `POST /validate`, the 2023 path: the pageservers that call it read a shard left out
/// of the answer as valid (they delete its objects), so every shard asked about is
/// answered, the unknown ones `valid: false`.
pub async fn validate_legacy(
    State(api): Api,
    Json(request): Json<ValidateRequest>,
) -> Result<JsonResponse<ValidateResponse>, ApiError> {
    let mut answer = validated(&api, &request).await?;
    let mut answered: std::collections::HashSet<TenantShardId> =
        answer.tenants.iter().map(|t| t.id).collect();
    for asked in &request.tenants {
        if answered.insert(asked.id) {
            answer.tenants.push(ValidateResponseTenant {
                id: asked.id,
                valid: false,
            });
        }
    }
    Ok(JsonResponse(answer))
}

async fn validated(
    api: &ApiState,
    request: &ValidateRequest,
) -> Result<ValidateResponse, ApiError> {
    let limit = api.limits.validate_tenants;
    if request.tenants.len() > limit {
        return Err(ApiError::BadRequest(format!(
            "tenants: {} entries, at most {limit} per validate call",
            request.tenants.len()
        )));
    }
    let answers = api
        .replica
        .read(|registry| {
            registry.validate(request.tenants.iter().map(|t| (t.id, Generation(t.r#gen))))
        })
        .await?;
    Ok(ValidateResponse {
        tenants: answers
            .into_iter()
            .map(|v| ValidateResponseTenant {
                id: v.shard,
                valid: v.valid,
            })
            .collect(),
    })
}

/// `POST /debug/v1/attach-hook`
pub async fn attach_hook(
    State(api): Api,
    Json(request): Json<AttachHookRequest>,
) -> Result<JsonResponse<AttachHookResponse>, ApiError> {
    // Refused here, before Raft: a shard seeded at the last generation could never be
    // attached, and applying the refusal would still create it (a rule kept as it was,
    // so that replicas replaying old entries agree); one seeded near the top would block
    // every later restore or recovery.
    let most = Generation::MAX_OVERRIDE.0;
    if let Some(asked) = request.generation_override.filter(|g| *g > most) {
        return Err(ApiError::BadRequest(format!(
            "generation_override: {asked} is above {most}, the most allowed, which leaves room \
             for later attaches and for the bump of a restore or recovery"
        )));
    }
    let command = Command::AttachHook {
        shard: request.tenant_shard_id,
        node: request.node_id,
        generation_override: request.generation_override.map(Generation),
    };
    match api.replica.propose_one(command).await? {
        Outcome::Attached { generation } => {
            tracing::info!(shard = %request.tenant_shard_id, node = ?request.node_id, generation = ?generation, "attach hook");
            Ok(JsonResponse(AttachHookResponse {
                r#gen: generation.map(|g| g.0),
            }))
        }
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

/// `POST /debug/v1/inspect`
pub async fn inspect(
    State(api): Api,
    Json(request): Json<InspectRequest>,
) -> Result<JsonResponse<InspectResponse>, ApiError> {
    let attachment = api
        .replica
        .read(|registry| registry.attachment(&request.tenant_shard_id))
        .await?;
    Ok(JsonResponse(InspectResponse {
        attachment: attachment.map(|(generation, node)| (generation.0, node)),
    }))
}

/// `POST /control/v1/node`
pub async fn register_node(
    State(api): Api,
    Json(request): Json<NodeRegisterRequest>,
) -> Result<JsonResponse<()>, ApiError> {
    let command = Command::RegisterNode {
        node: request.node_id,
        address: address(&request, "")?,
        availability_zone_id: request.availability_zone_id.clone(),
    };
    match api.replica.propose_one(command).await? {
        Outcome::NodeRegistered => {
            tracing::info!(node = %request.node_id, "node registered");
            Ok(JsonResponse(()))
        }
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

fn describe(registry: &Registry, id: NodeId, node: &NodeRecord) -> NodeDescribeResponse {
    NodeDescribeResponse {
        id,
        listen_pg_addr: node.address.listen_pg_addr.clone(),
        listen_pg_port: node.address.listen_pg_port,
        listen_http_addr: node.address.listen_http_addr.clone(),
        listen_http_port: node.address.listen_http_port,
        availability_zone_id: node.availability_zone_id.clone(),
        scheduling: node.scheduling,
        attached_shards: registry.attached_to(&id),
    }
}

/// `GET /control/v1/node`
pub async fn list_nodes(
    State(api): Api,
) -> Result<JsonResponse<Vec<NodeDescribeResponse>>, ApiError> {
    let nodes = api
        .replica
        .read(|registry| {
            registry
                .nodes()
                .map(|(id, node)| describe(registry, *id, node))
                .collect()
        })
        .await?;
    Ok(JsonResponse(nodes))
}

fn node_in_path(raw: &str) -> Result<NodeId, ApiError> {
    // Digits only: Rust's integer parsing also takes a leading `+`.
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| raw.parse().ok()).flatten().ok_or_else(|| {
        ApiError::BadRequest(format!(
            "node id {raw:?} in the path is not an unsigned integer"
        ))
    })
}

fn shard_in_path(raw: &str) -> Result<TenantShardId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::BadRequest(format!("tenant_shard_id in the path: {e}")))
}

/// `GET /control/v1/node/{node_id}`
pub async fn get_node(
    State(api): Api,
    Segment(raw): Segment,
) -> Result<JsonResponse<NodeDescribeResponse>, ApiError> {
    let id = node_in_path(&raw)?;
    api.replica
        .read(|registry| registry.node(&id).map(|node| describe(registry, id, node)))
        .await?
        .map(JsonResponse)
        .ok_or_else(|| ApiError::NotFound(format!("node {id} is not registered")))
}

/// `PUT /control/v1/node/{node_id}/config`
pub async fn configure_node(
    State(api): Api,
    Segment(raw): Segment,
    Json(request): Json<NodeConfigureRequest>,
) -> Result<JsonResponse<()>, ApiError> {
    let id = node_in_path(&raw)?;
    if request.node_id != id {
        return Err(ApiError::BadRequest(format!(
            "node_id {} in the body differs from node {id} in the path",
            request.node_id
        )));
    }
    if request.availability.is_some() {
        return Err(ApiError::BadRequest(
            "availability cannot be configured: this controller does not track pageserver \
             availability; only scheduling can be set"
                .into(),
        ));
    }
    let Some(scheduling) = request.scheduling else {
        return Err(ApiError::BadRequest(
            "scheduling: required (Active, Filling, Pause, PauseForRestart or Draining)".into(),
        ));
    };
    match api
        .replica
        .propose_one(Command::ConfigureNode {
            node: id,
            scheduling,
        })
        .await?
    {
        Outcome::NodeConfigured => Ok(JsonResponse(())),
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

/// `DELETE /control/v1/node/{node_id}`
pub async fn delete_node(
    State(api): Api,
    Segment(raw): Segment,
) -> Result<JsonResponse<()>, ApiError> {
    let id = node_in_path(&raw)?;
    match api
        .replica
        .propose_one(Command::DeleteNode { node: id })
        .await?
    {
        Outcome::NodeDeleted => {
            tracing::info!(node = %id, "node deleted");
            Ok(JsonResponse(()))
        }
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

/// `PUT /control/v1/tenant/{tenant_shard_id}/migrate`
pub async fn migrate(
    State(api): Api,
    Segment(raw): Segment,
    Json(request): Json<TenantShardMigrateRequest>,
) -> Result<JsonResponse<TenantShardMigrateResponse>, ApiError> {
    let shard = shard_in_path(&raw)?;
    if let Some(named) = request.tenant_shard_id.filter(|named| *named != shard) {
        return Err(ApiError::BadRequest(format!(
            "tenant_shard_id {named} in the body differs from {shard} in the path"
        )));
    }
    match api
        .replica
        .propose_one(Command::Migrate {
            shard,
            node: request.node_id,
        })
        .await?
    {
        Outcome::Migrated { generation } => {
            tracing::info!(%shard, node = %request.node_id, %generation, "migrated");
            Ok(JsonResponse(TenantShardMigrateResponse {
                r#gen: generation.0,
            }))
        }
        Outcome::Refused(refusal) => Err(refusal.into()),
        other => Err(unexpected(other)),
    }
}

/// Default and maximum page size of `GET /control/v1/tenant`.
pub const TENANT_PAGE_DEFAULT: usize = 1_000;
pub const TENANT_PAGE_MAX: usize = 100_000;

/// `GET /control/v1/tenant?after=<tenant_shard_id>&limit=<n>`
pub async fn list_tenants(
    State(api): Api,
    RawQuery(query): RawQuery,
) -> Result<JsonResponse<Vec<TenantShardDescribe>>, ApiError> {
    let query: TenantListQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let limit = query.limit.unwrap_or(TENANT_PAGE_DEFAULT);
    if limit == 0 || limit > TENANT_PAGE_MAX {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {TENANT_PAGE_MAX}"
        )));
    }
    let page = api
        .replica
        .read(|registry| {
            registry
                .shards_after(query.after)
                .take(limit)
                .map(|(id, record)| TenantShardDescribe {
                    tenant_shard_id: *id,
                    generation: record.generation.map(|g| g.0),
                    node_id: record.node,
                })
                .collect()
        })
        .await?;
    Ok(JsonResponse(page))
}
