//! Health and cluster views: `/status`, `/ready`, `/v1/cluster`.
//!
//! `/status` only says the process answers. `/ready` says this replica can serve right
//! now: it knows a leader, that leader confirmed itself with a quorum, and this replica
//! has applied everything committed when the probe asked (a read index from the leader).
//! `/v1/cluster` is this replica's own view, answered locally without the leader, so an
//! operator can ask every replica what it believes. `/v1/cluster/step-down` also acts on
//! the replica asked: a pod about to stop hands leadership away from its preStop hook.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json as JsonResponse;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use axum::extract::RawQuery;

use super::error::ApiError;
use super::json::Json;
use super::path::Segment;
use super::types::{
    AddMemberQuery, AddMemberRequest, ClusterMember, ClusterStatus, ReadyResponse,
    RemoveMemberQuery, RemovedStatus, StatusResponse, StepDownResponse, TransferLeaderRequest,
};
use super::ApiState;
use crate::membership::MembershipError;

type Api = State<Arc<ApiState>>;

/// How long `/ready` waits for the leader's read index and for applying up to it.
const READY_WAIT: Duration = Duration::from_secs(2);

/// How long `GET /v1/cluster` waits for the Raft core's committed index.
const STATUS_CORE_WAIT: Duration = Duration::from_secs(1);

pub const READ_INDEX_PATH: &str = "/v1/cluster/read-index";

/// `GET /status`
pub async fn status(State(api): Api) -> JsonResponse<StatusResponse> {
    JsonResponse(StatusResponse {
        replica_id: api.replica.id(),
    })
}

/// Refuses a request that names another cluster in `x-controller-cluster` (replicas
/// name theirs on what they send each other: forwarded requests, read indexes, joining),
/// so a replica reached at a stale or wrong URL never answers for the wrong state.
/// Requests without the header (clients, operators) pass.
pub async fn same_cluster(
    State(api): Api,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match request.headers().get(controller_raft::HEADER_CLUSTER) {
        Some(cluster) if cluster.as_bytes() != api.cluster_id.as_bytes() => {
            let named = String::from_utf8_lossy(cluster.as_bytes()).into_owned();
            tracing::warn!(theirs = %named, ours = %api.cluster_id, path = %request.uri().path(),
                "refused a request meant for another cluster");
            ApiError::Forbidden(format!(
                "request is for cluster {named:?} but this replica belongs to cluster {:?}",
                api.cluster_id
            ))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: u64,
}

/// Query of `GET /v1/cluster/read-index`: the asking replica and its latest vote (term
/// and the replica voted for), which the leader may count as its acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexQuery {
    pub asker: Option<u64>,
    pub term: Option<u64>,
    pub voted_for: Option<u64>,
}

/// The path and query a replica asks the leader for a read index with.
pub fn read_index_uri(query: Option<&ReadIndexQuery>) -> axum::http::Uri {
    let query = query
        .and_then(|q| serde_urlencoded::to_string(q).ok())
        .filter(|q| !q.is_empty());
    match query {
        Some(query) => format!("{READ_INDEX_PATH}?{query}")
            .parse()
            .expect("a path and a query of numbers"),
        None => axum::http::Uri::from_static(READ_INDEX_PATH),
    }
}

/// The longest catch-up wait `POST /v1/cluster/members?timeout_s=` takes.
const MAX_CATCH_UP_S: u64 = 86_400;

/// `GET /v1/cluster/read-index?asker=N&term=T&voted_for=L` (leader): the index a
/// linearizable read must wait for. The asker's vote can stand for its acknowledgement
/// (`replica::asker_ack`); otherwise, or without one, the leader confirms itself with a
/// round of heartbeats.
pub async fn read_index(
    State(api): Api,
    scope: Option<axum::Extension<crate::auth::Scope>>,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<ReadIndex>, ApiError> {
    // A vote stands for a replica's acknowledgement only when a replica sent it: with
    // authentication on, only a `controller_peer` token (an admin's is answered, but
    // after a round of heartbeats like any other).
    let from_a_replica = scope.is_none_or(|s| s.0 == crate::auth::Scope::ControllerPeer);
    let index = match query::<ReadIndexQuery>(raw)? {
        ReadIndexQuery {
            asker: Some(asker),
            term: Some(term),
            voted_for: Some(voted_for),
        } if from_a_replica => {
            let vote = openraft::Vote::new(term, voted_for);
            api.replica.read_index_for(asker, Some(vote)).await?
        }
        _ => api.replica.read_index().await?,
    };
    Ok(JsonResponse(ReadIndex { index }))
}

/// `GET /ready`
pub async fn ready(State(api): Api) -> Result<JsonResponse<ReadyResponse>, ApiError> {
    let replica = &api.replica;
    let not_ready = |why: String| {
        ApiError::Unavailable(format!("replica {} is not ready: {why}", replica.id()))
    };
    if let Some(removed) = removed_status(replica) {
        return Err(ApiError::Unavailable(removed.explain(replica.id())));
    }
    if let Some(at) = unlisted_at(replica) {
        return Err(not_ready(format!(
            "the membership it holds (log index {at}) does not list it: it was removed, or \
             has not been added yet"
        )));
    }
    let Some((leader, _)) = replica.leader() else {
        return Err(not_ready("no leader is known".into()));
    };
    // A read index: the leader confirmed itself with a quorum after this probe began,
    // and this replica applied everything committed up to then.
    let applied = tokio::time::timeout(READY_WAIT, replica.read_index())
        .await
        .map_err(|_| not_ready(format!("no read index within {READY_WAIT:?}")))?
        .map_err(|e| not_ready(e.to_string()))?;
    Ok(JsonResponse(ReadyResponse {
        replica_id: replica.id(),
        leader,
        applied,
    }))
}

/// The removal peers reported, as the API shows it.
pub fn removed_status(replica: &crate::replica::Replica) -> Option<RemovedStatus> {
    replica.removed().map(|removal| RemovedStatus {
        reported_by: removal.reported_by,
        membership_index: removal.membership.index,
    })
}

/// The index of the membership this replica holds, if that membership does not list it.
/// No leader contacts such a replica on its own, so it would otherwise only say "no
/// leader", or wait on reads it can never apply.
fn unlisted_at(replica: &crate::replica::Replica) -> Option<u64> {
    let metrics = replica.metrics();
    let metrics = metrics.borrow();
    controller_raft::removal::unlisted(replica.id(), &metrics.membership_config).map(|id| id.index)
}

pub(crate) fn state_name(state: ServerState) -> &'static str {
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
    // Bounded: an operator asks for this exactly when something is stuck, a core
    // waiting on a failing disk included; the rest comes from the metrics.
    let committed = tokio::time::timeout(
        STATUS_CORE_WAIT,
        replica
            .raft()
            .with_raft_state(|state| state.committed.map(|id| id.index)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten();
    // Index and term of the last entry from one report of openraft's.
    let last_log = replica.raft().data_metrics().borrow().last_log;
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
        cluster_name: api.cluster_name.clone(),
        cluster_id: api.cluster_id.clone(),
        replica_id: replica.id(),
        state: state_name(metrics.state).into(),
        leader: metrics.current_leader,
        term: metrics.current_term,
        members,
        last_log_index: last_log.map(|id| id.index),
        last_log_term: last_log.map(|id| id.leader_id.term),
        committed_index: committed,
        applied_index: metrics.last_applied.map(|id| id.index),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
        millis_since_quorum_ack: metrics.millis_since_quorum_ack,
        joint: membership.get_joint_config().len() > 1,
        removed: removed_status(replica),
        seen_fresh: Vec::new(),
    }
}

/// `GET /v1/cluster`
pub async fn cluster(State(api): Api) -> JsonResponse<ClusterStatus> {
    JsonResponse(cluster_status_of(&api).await)
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let msg = e.to_string();
        match e {
            MembershipError::NotLeader(_) => ApiError::NotLeader(msg),
            MembershipError::NotFound(_) => ApiError::NotFound(msg),
            MembershipError::Conflict(_) => ApiError::Conflict(msg),
            // A change that timed out may still complete, and one half done (a learner
            // added, not yet promoted) stays half done: never "nothing was applied".
            MembershipError::Unavailable(_) => ApiError::Indeterminate(msg),
        }
    }
}

fn query<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> Result<T, ApiError> {
    match raw {
        Some(raw) => serde_urlencoded::from_str(&raw)
            .map_err(|e| ApiError::BadRequest(format!("query string: {e}"))),
        None => Ok(T::default()),
    }
}

/// Default wait for a new member to catch up before it is promoted.
pub const CATCH_UP_DEFAULT: Duration = Duration::from_secs(60);

/// `POST /v1/cluster/members?learner=BOOL&timeout_s=N` (leader)
pub async fn add_member(
    State(api): Api,
    RawQuery(raw): RawQuery,
    Json(request): Json<AddMemberRequest>,
) -> Result<JsonResponse<ClusterStatus>, ApiError> {
    let options: AddMemberQuery = query(raw)?;
    if request.id == 0 {
        return Err(ApiError::BadRequest("id: replica ids start at 1".into()));
    }
    let member = controller_raft::Member::parse(&request.url)
        .map_err(|e| ApiError::BadRequest(format!("url: {e}")))?;
    let catch_up = match options.timeout_s {
        None => CATCH_UP_DEFAULT,
        Some(s) if s <= MAX_CATCH_UP_S => Duration::from_secs(s),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "timeout_s: {s} is more than the {MAX_CATCH_UP_S} (one day) allowed"
            )))
        }
    };
    api.membership
        .add(request.id, &member.url, options.learner, catch_up)
        .await?;
    Ok(JsonResponse(cluster_status_of(&api).await))
}

/// `DELETE /v1/cluster/members/{id}?force=BOOL` (leader). Removing a replica that is
/// not a member is a 404, except for a request re-sent after an attempt that got no
/// answer ([`super::routing::RESENT_HEADER`]): that attempt may be what removed it.
pub async fn remove_member(
    State(api): Api,
    Segment(raw_id): Segment,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<JsonResponse<ClusterStatus>, ApiError> {
    let options: RemoveMemberQuery = query(raw)?;
    let id: u64 = raw_id.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "replica id {raw_id:?} in the path is not an unsigned integer"
        ))
    })?;
    match api.membership.remove(id, options.force).await {
        Err(MembershipError::NotFound(why))
            if headers.contains_key(super::routing::RESENT_HEADER) =>
        {
            tracing::info!(id, %why, "a re-sent removal finds the replica gone: answering as done");
        }
        removed => removed?,
    }
    Ok(JsonResponse(cluster_status_of(&api).await))
}

/// `POST /v1/cluster/leader` (leader): hand leadership to another voter.
pub async fn transfer_leader(
    State(api): Api,
    Json(request): Json<TransferLeaderRequest>,
) -> Result<JsonResponse<ClusterStatus>, ApiError> {
    api.membership
        .transfer(request.id, Duration::from_secs(5))
        .await?;
    Ok(JsonResponse(cluster_status_of(&api).await))
}

/// `POST /v1/cluster/step-down` (the replica asked): if it leads, it hands leadership to
/// its most up-to-date peer and answers once another replica leads; otherwise it answers
/// at once. Either way it may be elected again later, like any voter; a replica that is
/// stopping also hands leadership away on SIGTERM.
pub async fn step_down(State(api): Api) -> Result<JsonResponse<StepDownResponse>, ApiError> {
    let replica = &api.replica;
    let answer = |was_leader, leader| {
        JsonResponse(StepDownResponse {
            replica_id: replica.id(),
            was_leader,
            leader,
        })
    };
    if !replica.is_leader() {
        return Ok(answer(false, replica.leader().map(|(id, _)| id)));
    }
    tracing::info!("asked to step down");
    match api.membership.step_down(api.handoff).await {
        Ok(Some(leader)) => Ok(answer(true, Some(leader))),
        // The only voter: there is no one to hand leadership to.
        Ok(None) => Ok(answer(true, Some(replica.id()))),
        // Leadership moved on its own meanwhile: what was asked has happened.
        Err(MembershipError::NotLeader(leader)) => Ok(answer(true, leader)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/backup` (leader): the whole registry at a linearizable point, as a backup file.
pub async fn backup(State(api): Api) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let read_index = api.replica.read_index().await?;
    // The registry as of the read index, taken under the lock; encoded after letting go.
    let started = std::time::Instant::now();
    let frozen = api
        .replica
        .local_state()
        .read()
        .expect("state lock poisoned: a panic while applying")
        .state
        .frozen();
    let frozen_micros = started.elapsed().as_micros() as u64;
    let bytes = {
        let header = crate::backup::BackupHeader {
            cluster_name: api.cluster_name.clone(),
            cluster_id: api.cluster_id.clone(),
            taken_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            read_index,
            shards: frozen.shard_count(),
            nodes: frozen.node_count(),
            written_by: env!("CARGO_PKG_VERSION").to_owned(),
        };
        tokio::task::spawn_blocking(move || crate::backup::encode(&header, &frozen))
            .await
            .map_err(|e| ApiError::Internal(format!("encoding the backup: {e}")))?
    };
    tracing::info!(
        read_index,
        bytes = bytes.len(),
        frozen_micros,
        micros = started.elapsed().as_micros() as u64,
        "backup taken"
    );
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"pageserver-controller.backup\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
