//! Any replica answers: requests that need the leader are routed to it here, once, for
//! every route, so handlers are written as if they always ran on the leader.
//!
//! On the leader the handler runs. If it answers "not the leader" (leadership moved
//! before the request reached Raft, or a handoff paused writes; nothing was applied) the
//! request is routed again. On a follower the request
//! is forwarded, unchanged, to the leader, whose answer is returned unchanged.
//!
//! Bounds and guarantees:
//! - a request is forwarded at most once: a forwarded request that reaches a non-leader
//!   is answered "not the leader" and the replica that forwarded it re-routes it, so two
//!   replicas that disagree about the leader never bounce a request between them;
//! - while no leader is known the replica waits, up to `leader_wait`, then answers 503;
//! - a client's request forwarded to a leader that this replica then sees replaced is
//!   waited for one lease more (a deposed leader that is reachable answers by then),
//!   then abandoned: a read goes to the new leader, a write gets a 503 saying it may or
//!   may not have been applied (the old leader, cut off, may hold it forever);
//! - a leader that has not heard from a quorum for long (see
//!   [`crate::replica::Replica::quorum_silence`]) serves nothing: a forwarded request is
//!   answered "not the leader", and a client's own waits one lease for the quorum to come
//!   back, then gets a 503 saying nothing was applied;
//! - a write is re-sent only when it certainly was not applied (the leader said "not the
//!   leader", or the connection was never made); when a write's fate is unknown (it was
//!   in flight when leadership changed, a timeout, a connection lost after sending) the
//!   caller gets a 503 saying so, never a silent second attempt. Reads are always safe
//!   to re-send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use controller_raft::transport::{error_text, PeerHttp};
use controller_raft::Member;

use super::error::{ApiError, NOT_APPLIED_HEADER, NOT_LEADER_HEADER};
use super::ApiState;
use crate::auth::PeerToken;

/// Marks a request forwarded by another replica; carries that replica's id.
pub const FORWARDED_BY_HEADER: &str = "x-controller-forwarded-by";

/// Marks a cluster operation forwarded again after an earlier attempt got no answer: that
/// attempt may have been applied, so a handler whose goal already holds (the member to
/// remove is gone) answers success rather than "not found".
pub const RESENT_HEADER: &str = "x-controller-resent";

/// Request headers a forwarded request keeps.
const FORWARDED_HEADERS: [axum::http::HeaderName; 3] = [
    axum::http::header::CONTENT_TYPE,
    axum::http::header::AUTHORIZATION,
    axum::http::header::ACCEPT,
];

/// How a route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// On the leader; re-sent only when certainly not applied.
    Write,
    /// On the leader; safe to send again (idempotent cluster operations).
    Retryable,
    /// On any replica once a leader is known: a linearizable read asks the leader only
    /// for a read index, and answers from this replica's state once it applied up to it.
    Read,
}

#[derive(Clone)]
pub struct Routing {
    pub api: Arc<ApiState>,
    pub policy: Policy,
    /// How long to wait for the leader's answer to a forwarded request, when longer than
    /// the forwarder's default (a new member catching up, for one).
    pub forward_timeout: Option<Duration>,
}

/// What became of a request sent to the leader.
pub enum Forwarded {
    Answer(Response),
    /// The target is not the leader; the request was not applied there.
    NotLeader,
    /// The request never left this replica (no connection could be made).
    NotSent(String),
    /// The request was sent but no answer came back; it may have been applied.
    Unknown(String),
}

/// Sends requests to the leader over the replica's one pooled HTTP client.
#[derive(Clone)]
pub struct Forwarder {
    pub client: PeerHttp,
    pub self_id: u64,
    pub timeout: Duration,
    /// This replica's own `controller_peer` token, for the requests it makes on its own
    /// behalf (read indexes). A forwarded client request carries the client's token, or
    /// none: the leader then refuses it as it would have refused the client.
    pub peer_token: Option<PeerToken>,
    /// Sent with every request, so that a replica of another cluster (a stale or wrong
    /// member URL) refuses it instead of answering for its own state.
    pub cluster_id: String,
}

impl Forwarder {
    pub async fn forward(
        &self,
        leader: &Member,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Forwarded {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .client
            .get()
            .request(method.clone(), leader.endpoint(path))
            .timeout(timeout.unwrap_or(self.timeout))
            .header(FORWARDED_BY_HEADER, self.self_id.to_string())
            .header(controller_raft::HEADER_CLUSTER, &self.cluster_id)
            .body(body);
        for name in FORWARDED_HEADERS {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        if headers.contains_key(RESENT_HEADER) {
            request = request.header(RESENT_HEADER, "1");
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Forwarded::NotSent(error_text(&e)),
            Err(e) => return Forwarded::Unknown(error_text(&e)),
        };
        if response.headers().contains_key(NOT_LEADER_HEADER) {
            return Forwarded::NotLeader;
        }
        let status = response.status();
        let kept: Vec<_> = [
            axum::http::header::CONTENT_TYPE,
            // A backup's file name, for a client that saves what it downloads.
            axum::http::header::CONTENT_DISPOSITION,
            axum::http::HeaderName::from_static(NOT_APPLIED_HEADER),
        ]
        .into_iter()
        .filter_map(|name| Some((name.clone(), response.headers().get(&name)?.clone())))
        .collect();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Forwarded::Unknown(format!(
                    "reading the leader's answer: {}",
                    error_text(&e)
                ))
            }
        };
        let mut answer = (status, body).into_response();
        answer.headers_mut().extend(kept);
        Forwarded::Answer(answer)
    }
}

/// The middleware: run here if leader, else forward to the leader, within `leader_wait`.
pub async fn route_to_leader(
    State(routing): State<Routing>,
    request: Request,
    next: Next,
) -> Response {
    let api = &routing.api;
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, api.limits.body_bytes).await {
        Ok(body) => body,
        Err(e) if over_limit(&e) => {
            return ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes",
                api.limits.body_bytes
            ))
            .into_response()
        }
        // Cut short, or badly chunked: the client's fault, but not for its size.
        Err(e) => {
            return ApiError::BadRequest(format!("could not read the request body: {e}"))
                .into_response()
        }
    };
    let forwarded_by = parts.headers.get(FORWARDED_BY_HEADER).cloned();
    let replica = &api.replica;
    let started = Instant::now();
    let deadline = started + api.leader_wait;
    let mut metrics = replica.metrics();
    let mut last_problem = String::from("no leader is known");
    // A cluster operation forwarded without an answer may have been applied: re-sent,
    // it says so, and a final 503 must not claim that nothing was applied.
    let mut maybe_applied = false;
    // A final answer that would say "nothing was applied", unless an earlier attempt of
    // this request may have been.
    let unavailable = |maybe_applied: bool, problem: String| {
        if maybe_applied {
            ApiError::Indeterminate(format!(
                "{problem}; an earlier attempt got no answer and may have been applied; check \
                 `cluster status`, then retry (cluster operations are safe to repeat)"
            ))
        } else {
            ApiError::Unavailable(problem)
        }
        .into_response()
    };
    loop {
        let silence = replica.quorum_silence();
        match replica.leader() {
            Some((leader, _)) if leader == replica.id() && silence.is_some() => {
                let problem = format!(
                    "replica {leader} leads but has not heard from a quorum of its peers for \
                     {:?}, so it may be cut off from them; nothing was applied",
                    silence.unwrap_or_default()
                );
                // The replica that forwarded it routes it again once it knows better.
                if forwarded_by.is_some() {
                    return ApiError::NotLeader(problem).into_response();
                }
                // Short of the full wait: if it is cut off, no answer comes from here.
                if started.elapsed() >= replica.lease() {
                    return unavailable(
                        maybe_applied,
                        format!("{problem}; retry, another replica may answer"),
                    );
                }
                last_problem = problem;
            }
            Some((leader, _)) if leader == replica.id() || routing.policy == Policy::Read => {
                let mut local = Request::from_parts(clone_parts(&parts), Body::from(body.clone()));
                local.extensions_mut().clone_from(&parts.extensions);
                // Leadership came here after a forwarded attempt got no answer: the handler
                // must know, as the leader it was forwarded to would have.
                if maybe_applied {
                    local
                        .headers_mut()
                        .insert(RESENT_HEADER, HeaderValue::from_static("1"));
                }
                let response = next.clone().run(local).await;
                if !response.headers().contains_key(NOT_LEADER_HEADER) || forwarded_by.is_some() {
                    return response;
                }
                last_problem =
                    "leadership could not be confirmed or moved while the request ran".into();
            }
            Some((leader, _)) if forwarded_by.is_some() => {
                let from = forwarded_by
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                return ApiError::NotLeader(format!(
                    "replica {} is not the leader (it believes replica {leader} is); \
                     forwarded by replica {from}",
                    replica.id()
                ))
                .into_response();
            }
            Some((leader, member)) => {
                let route = parts
                    .extensions
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                api.metrics.forwarded(route);
                let resent;
                let headers = if maybe_applied {
                    let mut marked = parts.headers.clone();
                    marked.insert(RESENT_HEADER, HeaderValue::from_static("1"));
                    resent = marked;
                    &resent
                } else {
                    &parts.headers
                };
                let forward = api.forwarder.forward(
                    &member,
                    &parts.method,
                    &parts.uri,
                    headers,
                    body.clone(),
                    routing.forward_timeout,
                );
                // A leader cut off from this replica may hold a client's request until the
                // timeout; once another leader is known, stop waiting for it. (Cluster
                // operations may move the leadership themselves: they wait; a backup, a
                // read, does not.)
                let moved =
                    crate::replica::leader_moved(replica.metrics(), leader, replica.lease());
                let abandon = routing.policy != Policy::Retryable || parts.method == Method::GET;
                // `None`: it lost its leadership before answering, and was not waited for.
                let answer = tokio::select! {
                    answer = forward => Some(answer),
                    () = moved, if abandon => None,
                };
                match answer {
                    Some(Forwarded::Answer(response)) => return response,
                    None if routing.policy != Policy::Write => {
                        last_problem =
                            format!("leader {leader} lost its leadership before answering");
                    }
                    None => {
                        return ApiError::Indeterminate(format!(
                            "forwarded the write to leader {leader} at {member}, which lost its \
                             leadership before answering; it may or may not have been applied"
                        ))
                        .into_response();
                    }
                    Some(Forwarded::NotLeader) => {
                        last_problem = format!("replica {leader} was no longer the leader");
                    }
                    Some(Forwarded::NotSent(e)) => {
                        last_problem = format!("could not reach leader {leader} at {member}: {e}");
                    }
                    Some(Forwarded::Unknown(e)) if routing.policy != Policy::Write => {
                        // (A read index or a backup changes nothing.)
                        maybe_applied |=
                            routing.policy == Policy::Retryable && parts.method != Method::GET;
                        last_problem = format!("no answer from leader {leader} at {member}: {e}");
                    }
                    Some(Forwarded::Unknown(e)) => {
                        return ApiError::Indeterminate(format!(
                            "forwarded the write to leader {leader} at {member} but got no \
                             answer ({e}); it may or may not have been applied"
                        ))
                        .into_response();
                    }
                }
            }
            // No leader will ever contact a removed replica: say so now rather than
            // after the whole wait.
            None => {
                if let Some(removed) = super::cluster::removed_status(replica) {
                    return unavailable(maybe_applied, removed.explain(replica.id()));
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return unavailable(
                maybe_applied,
                format!(
                    "no leader could serve the request within {:?} ({last_problem}); the cluster \
                     may be electing a leader or may have lost its quorum; retry",
                    api.leader_wait
                ),
            );
        }
        // Wake on a leadership change, or poll: a forwarded "not the leader" may be news
        // the local metrics have not caught up with yet.
        let pause = (deadline - now).min(Duration::from_millis(50));
        if let Ok(Err(_)) = tokio::time::timeout(pause, metrics.changed()).await {
            // Raft has stopped: no change will come; keep polling until the deadline.
            tokio::time::sleep(pause).await;
        }
    }
}

fn clone_parts(parts: &axum::http::request::Parts) -> axum::http::request::Parts {
    let mut builder = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
    }
    let (new_parts, ()) = builder
        .body(())
        .expect("method, uri and version came from a valid request")
        .into_parts();
    new_parts
}

impl crate::replica::LeaderReadIndex for Forwarder {
    fn fetch(
        &self,
        leader: u64,
        member: Member,
        vote: Option<openraft::Vote<u64>>,
    ) -> futures::future::BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let query = vote.map(|vote| super::cluster::ReadIndexQuery {
                asker: Some(self.self_id),
                term: Some(vote.leader_id().term),
                voted_for: Some(vote.leader_id().node_id),
            });
            let uri = super::cluster::read_index_uri(query.as_ref());
            let mut headers = HeaderMap::new();
            if let Some(token) = &self.peer_token {
                headers.insert(axum::http::header::AUTHORIZATION, token.header());
            }
            let answer = self
                .forward(&member, &Method::GET, &uri, &headers, Bytes::new(), None)
                .await;
            let response = match answer {
                Forwarded::Answer(response) if response.status().is_success() => response,
                Forwarded::Answer(response) => {
                    return Err(format!("leader {leader} answered {}", response.status()))
                }
                Forwarded::NotLeader => {
                    return Err(format!("replica {leader} is no longer the leader"))
                }
                Forwarded::NotSent(e) | Forwarded::Unknown(e) => {
                    return Err(format!("leader {leader}: {e}"))
                }
            };
            let body = to_bytes(response.into_body(), 1024)
                .await
                .map_err(|e| format!("reading leader {leader}'s read index: {e}"))?;
            serde_json::from_slice::<super::cluster::ReadIndex>(&body)
                .map(|r| r.index)
                .map_err(|e| format!("decoding leader {leader}'s read index: {e}"))
        })
    }
}

/// Whether reading a body failed on the size limit (rather than a body cut short or
/// badly framed, which is no reason to tell the client to send less).
fn over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
