//! Health and cluster views: `/status`, `/ready`, `/v1/cluster`.
//!
//! `/status` only says the process answers. `/ready` says this replica can serve right
//! now: it knows a leader, that leader confirmed itself with a quorum, and this replica
//! has applied everything committed when the probe asked (a read index from the leader).
//! `/v1/cluster` is this replica's own view, answered locally without the leader, so an
//! operator can ask every replica what it believes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json as JsonResponse;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::routing::Forwarded;
use super::types::{ClusterMember, ClusterStatus, ReadyResponse, StatusResponse};
use super::ApiState;

type Api = State<Arc<ApiState>>;

/// How long `/ready` waits for the leader's read index and for applying up to it.
const READY_WAIT: Duration = Duration::from_secs(2);

pub const READ_INDEX_PATH: &str = "/v1/cluster/read-index";

/// `GET /status`
pub async fn status(State(api): Api) -> JsonResponse<StatusResponse> {
    JsonResponse(StatusResponse {
        replica_id: api.replica.id(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: u64,
}

/// `GET /v1/cluster/read-index` (leader): the index a linearizable read must wait for.
pub async fn read_index(State(api): Api) -> Result<JsonResponse<ReadIndex>, ApiError> {
    let index = api.replica.read_index().await?;
    Ok(JsonResponse(ReadIndex { index }))
}

/// `GET /ready`
pub async fn ready(State(api): Api) -> Result<JsonResponse<ReadyResponse>, ApiError> {
    let replica = &api.replica;
    let not_ready = |why: String| {
        ApiError::Unavailable(format!("replica {} is not ready: {why}", replica.id()))
    };
    let Some((leader, member)) = replica.leader() else {
        return Err(not_ready("no leader is known".into()));
    };
    let index = if leader == replica.id() {
        replica
            .read_index()
            .await
            .map_err(|e| not_ready(e.to_string()))?
    } else {
        let forwarded = api
            .forwarder
            .forward(
                &member,
                &Method::GET,
                &Uri::from_static(READ_INDEX_PATH),
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await;
        let response = match forwarded {
            Forwarded::Answer(response) if response.status().is_success() => response,
            Forwarded::Answer(response) => {
                return Err(not_ready(format!(
                    "leader {leader} answered {}",
                    response.status()
                )))
            }
            Forwarded::NotLeader => {
                return Err(not_ready(format!(
                    "replica {leader} is no longer the leader"
                )))
            }
            Forwarded::NotSent(e) | Forwarded::Unknown(e) => {
                return Err(not_ready(format!("leader {leader} unreachable: {e}")))
            }
        };
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .map_err(|e| not_ready(format!("reading the leader's read index: {e}")))?;
        let read: ReadIndex = serde_json::from_slice(&body)
            .map_err(|e| not_ready(format!("decoding the leader's read index: {e}")))?;
        read.index
    };
    if !replica.wait_applied(index, READY_WAIT).await {
        return Err(not_ready(format!(
            "has not applied up to the leader's commit index {index}"
        )));
    }
    Ok(JsonResponse(ReadyResponse {
        replica_id: replica.id(),
        leader,
        applied: index,
    }))
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// This replica's view of the cluster.
pub async fn cluster_status_of(api: &ApiState) -> ClusterStatus {
    let replica = &api.replica;
    let committed = replica
        .raft()
        .with_raft_state(|state| state.committed.map(|id| id.index))
        .await
        .ok()
        .flatten();
    let metrics = replica.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, member)| ClusterMember {
            id: *id,
            url: member.url.clone(),
            role: if voters.contains(id) {
                "voter"
            } else {
                "learner"
            }
            .into(),
            matched_index: metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id).cloned().flatten())
                .map(|log_id| log_id.index),
        })
        .collect();
    ClusterStatus {
        cluster_id: api.cluster_id.clone(),
        replica_id: replica.id(),
        state: state_name(metrics.state).into(),
        leader: metrics.current_leader,
        term: metrics.current_term,
        members,
        last_log_index: metrics.last_log_index,
        committed_index: committed,
        applied_index: metrics.last_applied.map(|id| id.index),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
        millis_since_quorum_ack: metrics.millis_since_quorum_ack,
    }
}

/// `GET /v1/cluster`
pub async fn cluster(State(api): Api) -> JsonResponse<ClusterStatus> {
    JsonResponse(cluster_status_of(&api).await)
}
