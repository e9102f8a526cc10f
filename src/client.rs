//! The typed HTTP client of the controller's API.
//!
//! One client for everyone: the CLI, the integration tests, the chaos harness and the
//! benchmark all speak to replicas through it, so the wire format is written down once
//! (in [`crate::api::types`]) and exercised by every caller.
//!
//! A [`ClientError`] keeps what a caller needs to decide what happened: an HTTP status
//! with the server's message (4xx: refused, nothing changed; 5xx: may need a retry, and
//! for a write may or may not have been applied), or a transport failure (no answer).

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::types::*;
use crate::domain::{NodeId, SchedulingPolicy, TenantShardId};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{status}: {msg}")]
    Http {
        status: u16,
        msg: String,
        /// The server said the request changed nothing (a 4xx, or a 5xx marked so).
        not_applied: bool,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("no answer from {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        /// The request certainly did not reach the server (connection refused).
        not_sent: bool,
    },
    /// An answer we could not read.
    #[error("unreadable answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 4xx: the server refused the request and changed nothing.
    pub fn is_refusal(&self) -> bool {
        self.status().is_some_and(|s| (400..500).contains(&s))
    }

    /// The request certainly changed nothing: refused, answered "nothing was applied",
    /// or never sent. Anything else from a write may or may not have been applied.
    pub fn not_applied(&self) -> bool {
        match self {
            ClientError::Http { not_applied, .. } => *not_applied,
            ClientError::Transport { not_sent, .. } => *not_sent,
            ClientError::Decode { .. } => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Retries `call` the way a pageserver does: every error except a refusal (4xx) is retried,
/// with a backoff growing by 10% from `initial` up to `max`, until `deadline` has passed.
/// Note that a write that failed with a 5xx or no answer may have been applied, and is
/// applied again by a retry (for generations that only means a higher one).
pub async fn retry<T, F, Fut>(
    deadline: Duration,
    initial: Duration,
    max: Duration,
    mut call: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let end = std::time::Instant::now() + deadline;
    let mut pause = initial;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_refusal() || std::time::Instant::now() >= end => return Err(e),
            Err(e) => tracing::debug!(error = %e, "retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = pause.mul_f64(1.1).min(max);
    }
}

/// Polls `check` every `every` until it yields `Some`; once `deadline` has passed, a
/// [`TimedOut`] naming `what`. For waiting until others bring a condition about (a leader
/// elected, an index applied, a pod ready), where [`retry`] repeats one call until it
/// succeeds. The integration tests and the deploy tests wait through it.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> std::result::Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if std::time::Instant::now() >= end {
            return Err(TimedOut {
                what: what.to_owned(),
                after: deadline,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// What [`poll_until`] waited for in vain, and for how long.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}")]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    cluster: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client of the replica at `base` (for example `http://127.0.0.1:7001`).
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .expect("a default reqwest client builds");
        Self::with_http(base, http)
    }

    /// Shares an existing connection pool (many clients, one pool).
    pub fn with_http(base: impl Into<String>, http: reqwest::Client) -> Self {
        let base: String = base.into();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            cluster: None,
            timeout: Duration::from_secs(20),
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Names the cluster this client's requests are meant for (a replica talking to its
    /// peers): a replica of another cluster refuses them with a 403 instead of answering.
    pub fn with_cluster(mut self, cluster_id: Option<String>) -> Self {
        self.cluster = cluster_id;
        self
    }

    /// Gives up on a request after `timeout` (the server bounds its own waits well below
    /// the default of 20 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client (connection pool, token, timeout) pointed at another replica.
    pub fn at(&self, base: impl Into<String>) -> Self {
        let base: String = base.into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a request; the answer's body on success, the server's error otherwise.
    async fn send<Req: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
        timeout: Duration,
    ) -> Result<(String, bytes::Bytes)> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method, &url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(cluster) = &self.cluster {
            request = request.header(controller_raft::HEADER_CLUSTER, cluster);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: controller_raft::transport::error_text(&e),
            not_sent: e.is_connect(),
        })?;
        let status = response.status();
        let not_applied = status.is_client_error()
            || response
                .headers()
                .contains_key(crate::api::error::NOT_APPLIED_HEADER);
        let bytes = response.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: format!(
                "reading the answer: {}",
                controller_raft::transport::error_text(&e)
            ),
            not_sent: false,
        })?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| body.msg)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Http {
                status: status.as_u16(),
                msg,
                not_applied,
            });
        }
        Ok((url, bytes))
    }

    async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp> {
        let (url, bytes) = self.send(method, path, body, self.timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    /// A backup of the whole registry, taken on the leader at a linearizable point.
    pub async fn backup(&self) -> Result<Vec<u8>> {
        let timeout = self.timeout.max(Duration::from_secs(300));
        let (_, bytes) = self
            .send::<()>(Method::GET, "/v1/backup", None, timeout)
            .await?;
        Ok(bytes.to_vec())
    }

    async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp> {
        self.call::<(), Resp>(Method::GET, path, None).await
    }

    pub async fn re_attach(
        &self,
        node_id: NodeId,
        register: Option<NodeRegisterRequest>,
    ) -> Result<ReAttachResponse> {
        let request = ReAttachRequest { node_id, register };
        self.call(Method::POST, "/upcall/v1/re-attach", Some(&request))
            .await
    }

    pub async fn validate(&self, tenants: &[(TenantShardId, u32)]) -> Result<ValidateResponse> {
        let request = ValidateRequest {
            tenants: tenants
                .iter()
                .map(|(id, generation)| ValidateRequestTenant {
                    id: *id,
                    r#gen: *generation,
                })
                .collect(),
        };
        self.call(Method::POST, "/upcall/v1/validate", Some(&request))
            .await
    }

    /// Attaches `shard` to `node` (or detaches it with `None`); returns the generation.
    pub async fn attach_hook(
        &self,
        shard: TenantShardId,
        node: Option<NodeId>,
        generation_override: Option<u32>,
    ) -> Result<Option<u32>> {
        let request = AttachHookRequest {
            tenant_shard_id: shard,
            node_id: node,
            generation_override,
        };
        let response: AttachHookResponse = self
            .call(Method::POST, "/debug/v1/attach-hook", Some(&request))
            .await?;
        Ok(response.r#gen)
    }

    /// (generation, node) while attached.
    pub async fn inspect(&self, shard: TenantShardId) -> Result<Option<(u32, NodeId)>> {
        let request = InspectRequest {
            tenant_shard_id: shard,
        };
        let response: InspectResponse = self
            .call(Method::POST, "/debug/v1/inspect", Some(&request))
            .await?;
        Ok(response.attachment)
    }

    pub async fn register_node(&self, request: &NodeRegisterRequest) -> Result<()> {
        self.call(Method::POST, "/control/v1/node", Some(request))
            .await
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeDescribeResponse>> {
        self.get("/control/v1/node").await
    }

    pub async fn get_node(&self, node: NodeId) -> Result<NodeDescribeResponse> {
        self.get(&format!("/control/v1/node/{node}")).await
    }

    pub async fn configure_node(&self, node: NodeId, scheduling: SchedulingPolicy) -> Result<()> {
        let request = NodeConfigureRequest {
            node_id: node,
            scheduling: Some(scheduling),
            availability: None,
        };
        self.call(
            Method::PUT,
            &format!("/control/v1/node/{node}/config"),
            Some(&request),
        )
        .await
    }

    pub async fn delete_node(&self, node: NodeId) -> Result<()> {
        self.call::<(), ()>(Method::DELETE, &format!("/control/v1/node/{node}"), None)
            .await
    }

    /// Moves `shard` to `node`; returns its generation afterwards.
    pub async fn migrate(&self, shard: TenantShardId, node: NodeId) -> Result<u32> {
        let request = TenantShardMigrateRequest {
            tenant_shard_id: Some(shard),
            node_id: node,
        };
        let response: TenantShardMigrateResponse = self
            .call(
                Method::PUT,
                &format!("/control/v1/tenant/{shard}/migrate"),
                Some(&request),
            )
            .await?;
        Ok(response.r#gen)
    }

    /// One page of shards in id order, after `after`.
    pub async fn list_tenants(
        &self,
        after: Option<TenantShardId>,
        limit: Option<usize>,
    ) -> Result<Vec<TenantShardDescribe>> {
        let query = serde_urlencoded::to_string(TenantListQuery { after, limit })
            .expect("the query serializes");
        let path = if query.is_empty() {
            "/control/v1/tenant".to_owned()
        } else {
            format!("/control/v1/tenant?{query}")
        };
        self.get(&path).await
    }

    pub async fn status(&self) -> Result<StatusResponse> {
        self.get("/status").await
    }

    pub async fn ready(&self) -> Result<ReadyResponse> {
        self.get("/ready").await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.get("/v1/cluster").await
    }

    /// [`Self::cluster_status`], if what answers is replica `id` of cluster `cluster_id`:
    /// a URL that reaches another replica, or a replica of another cluster, counts as no
    /// answer (as does an error).
    pub async fn member_status(&self, id: u64, cluster_id: &str) -> Option<ClusterStatus> {
        let status = self.cluster_status().await.ok()?;
        if status.replica_id != id || status.cluster_id != cluster_id {
            tracing::debug!(id, url = %self.base, answered = status.replica_id, cluster = %status.cluster_id,
                "another replica answers at this member's URL");
            return None;
        }
        Some(status)
    }

    /// Adds replica `id` at `url`; returns once it caught up and (unless `learner`) votes.
    /// `catch_up` bounds the leader's wait for it to catch up (the server's default
    /// otherwise), after which the call fails with a 503 and the member stays a learner.
    pub async fn add_member(
        &self,
        id: u64,
        url: &str,
        learner: bool,
        catch_up: Option<Duration>,
    ) -> Result<ClusterStatus> {
        let request = AddMemberRequest {
            id,
            url: url.to_owned(),
        };
        let mut path = format!("/v1/cluster/members?learner={learner}");
        if let Some(catch_up) = catch_up {
            path.push_str(&format!("&timeout_s={}", catch_up.as_secs().max(1)));
        }
        // The leader waits for the new member to catch up before it answers; this call
        // outwaits it.
        let wait =
            catch_up.unwrap_or(crate::api::cluster::CATCH_UP_DEFAULT) + Duration::from_secs(60);
        let patient = self.clone().with_timeout(self.timeout.max(wait));
        patient.call(Method::POST, &path, Some(&request)).await
    }

    /// Removes replica `id`; `force` skips the quorum-safety check.
    pub async fn remove_member(&self, id: u64, force: bool) -> Result<ClusterStatus> {
        let path = format!(
            "/v1/cluster/members/{id}{}",
            if force { "?force=true" } else { "" }
        );
        self.call::<(), ClusterStatus>(Method::DELETE, &path, None)
            .await
    }

    /// Asks the replica at this client's URL (not the leader) to hand leadership away if
    /// it leads.
    pub async fn step_down(&self) -> Result<StepDownResponse> {
        self.call::<(), _>(Method::POST, "/v1/cluster/step-down", None)
            .await
    }

    /// Hands leadership to replica `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<ClusterStatus> {
        self.call(
            Method::POST,
            "/v1/cluster/leader",
            Some(&TransferLeaderRequest { id }),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_until_answers_the_first_some_or_names_what_never_came() {
        let mut asked = 0;
        let third = poll_until(
            "the third look",
            Duration::from_secs(30),
            Duration::ZERO,
            || {
                asked += 1;
                let answer = (asked == 3).then_some(asked);
                async move { answer }
            },
        )
        .await
        .unwrap();
        assert_eq!(third, 3);

        let never = poll_until(
            "a leader",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { None::<()> },
        )
        .await
        .unwrap_err();
        assert_eq!(
            never.to_string(),
            "timed out after 30ms waiting for a leader"
        );
    }
}
