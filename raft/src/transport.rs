//! The replica-to-replica transport: openraft RPCs as bincode over HTTP.
//!
//! Sending side: [`HttpNetwork`] implements openraft's `RaftNetworkFactory`; every
//! connection shares one pooled `reqwest::Client` ([`PeerHttp`]), so a heartbeat reuses a warm
//! keep-alive connection instead of a fresh TCP handshake. Receiving side: [`router`]
//! serves `POST {RAFT_PREFIX}/{append,vote,snapshot}` on the replica's one listener.
//!
//! A request carries the sender, the addressee and the cluster ([`PeerIdentity`]); the
//! receiver also checks that the sender header matches the vote inside the message, so a
//! replica cannot be talked into treating one peer's vote as another's. Refusals are
//! non-200 answers with a plain-text reason that the sender logs; a Raft-level answer
//! (including Raft's own errors) is always a 200 carrying a bincode `Result`. A vote
//! answer to a candidate that the answering replica's committed membership leaves out also
//! says so in a header, which is how a replica removed while it was down learns of it
//! ([`crate::removal`]).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::identity::{PeerIdentity, PeerIdentityError, HEADER_RESPONDER};
use crate::removal::{self, Removal, Standing, HEADER_NOT_A_VOTER};
use crate::swap::Swap;
use crate::timing::RAFT_BODY_LIMIT_BYTES;
use crate::{Member, ReplicaId, RAFT_PREFIX};

const APPEND: &str = "/append";
const VOTE: &str = "/vote";
const SNAPSHOT: &str = "/snapshot";
const CAMPAIGN: &str = "/campaign";

/// Adds credentials to outgoing peer requests and checks them on incoming ones.
/// The default lets everything through; the application installs a real one when
/// peer authentication is configured.
pub trait PeerAuth: Send + Sync + 'static {
    /// A header to attach to each outgoing RPC, if any.
    fn outgoing(&self) -> Option<(axum::http::HeaderName, axum::http::HeaderValue)>;
    /// Whether an incoming RPC is allowed; `Err` carries the reason shown to the sender.
    fn check(&self, headers: &HeaderMap) -> Result<(), String>;
}

/// No peer credentials: for loopback clusters and tests.
pub struct NoPeerAuth;

impl PeerAuth for NoPeerAuth {
    fn outgoing(&self) -> Option<(axum::http::HeaderName, axum::http::HeaderValue)> {
        None
    }

    fn check(&self, _headers: &HeaderMap) -> Result<(), String> {
        Ok(())
    }
}

/// The pooled HTTP client replicas reach each other with, replaceable while they run
/// (a new CA for peers' certificates): each request takes the client in place when it
/// is sent. Cheap to clone; every clone sees a replacement.
#[derive(Clone)]
pub struct PeerHttp(Arc<Swap<reqwest::Client>>);

impl PeerHttp {
    pub fn new(client: reqwest::Client) -> PeerHttp {
        PeerHttp(Arc::new(Swap::new(client)))
    }

    /// The client in place now (a `reqwest::Client` is itself a cheap handle).
    pub fn get(&self) -> reqwest::Client {
        self.0.get()
    }

    /// New requests use `client` from now on; those in flight finish on the old one.
    pub fn replace(&self, client: reqwest::Client) {
        self.0.set(client);
    }
}

/// Creates connections to peers. Cheap to clone.
#[derive(Clone)]
pub struct HttpNetwork {
    client: PeerHttp,
    identity: Arc<PeerIdentity>,
    auth: Arc<dyn PeerAuth>,
    /// Where vote answers saying this replica is no voter are reported ([`removal`]).
    standing: Arc<Standing>,
}

impl HttpNetwork {
    pub fn new(
        client: PeerHttp,
        identity: Arc<PeerIdentity>,
        auth: Arc<dyn PeerAuth>,
        standing: Arc<Standing>,
    ) -> Self {
        Self {
            client,
            identity,
            auth,
            standing,
        }
    }
}

impl HttpNetwork {
    /// Asks `target` to start an election now: the second half of a leadership transfer
    /// (openraft 0.9 has no transfer of its own). The target only obeys its current
    /// leader, so no other peer can use this to disrupt the cluster.
    pub async fn request_campaign(
        &self,
        target: ReplicaId,
        member: &Member,
    ) -> Result<(), CampaignError> {
        let url = member.endpoint(&format!("{RAFT_PREFIX}{CAMPAIGN}"));
        let mut builder = self.client.get().post(url).timeout(Duration::from_secs(2));
        for (name, value) in self.identity.request_headers(target) {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = self.auth.outgoing() {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|e| {
            if e.is_connect() {
                CampaignError::NotReachable(error_text(&e))
            } else {
                CampaignError::Failed(error_text(&e))
            }
        })?;
        let status = response.status();
        PeerIdentity::check_responder(response.headers(), target)
            .map_err(|e| CampaignError::Failed(e.to_string()))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(CampaignError::Failed(format!(
                "refused with {status}: {}",
                response.text().await.unwrap_or_default()
            )))
        }
    }
}

/// Whether anything accepts TCP connections at `url`'s host and port now: the cheapest
/// sign that a peer is there at all. A paused process still accepts (its kernel does); one
/// that exited, or is stopping and has closed its listener, does not. `Err` says why not.
pub async fn accepts_connections(url: &str, within: Duration) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("no host in {url}"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("no port in {url}"))?;
    match tokio::time::timeout(within, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("not reachable at {url}: {e}")),
        Err(_) => Err(format!("no connection to {url} within {within:?}")),
    }
}

/// Why a replica asked to campaign did not.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// No connection could be made: nothing listens at the member's address (it is down,
    /// or stopping), so it cannot have received the request.
    #[error("not reachable: {0}")]
    NotReachable(String),
    /// Anything else: a timeout, a refusal, an answer from the wrong replica. The
    /// request may have arrived.
    #[error("{0}")]
    Failed(String),
}

impl<C> RaftNetworkFactory<C> for HttpNetwork
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    type Network = PeerConnection;

    async fn new_client(&mut self, target: ReplicaId, node: &Member) -> Self::Network {
        PeerConnection {
            target,
            member: node.clone(),
            network: self.clone(),
        }
    }
}

/// One peer, as seen from this replica.
pub struct PeerConnection {
    target: ReplicaId,
    member: Member,
    network: HttpNetwork,
}

#[derive(Debug, thiserror::Error)]
#[error("replica {target} at {url}: {reason}")]
struct PeerError {
    target: ReplicaId,
    url: String,
    reason: String,
}

impl PeerConnection {
    fn error(&self, reason: impl ToString) -> PeerError {
        PeerError {
            target: self.target,
            url: self.member.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends one RPC; `on_answer` sees the headers of a 200 answer from the addressed
    /// peer (before its body is read).
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        request: &Req,
        timeout: Duration,
        on_answer: impl FnOnce(&HeaderMap),
    ) -> Result<Resp, RPCError<ReplicaId, Member, RaftError<ReplicaId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let body = codec::encode(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e))))?;
        let url = self.member.endpoint(&format!("{RAFT_PREFIX}{route}"));
        let mut builder = self
            .network
            .client
            .get()
            .post(url)
            .timeout(timeout)
            .body(body);
        for (name, value) in self.network.identity.request_headers(self.target) {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = self.network.auth.outgoing() {
            builder = builder.header(name, value);
        }
        // Unreachable, as opposed to a network error, makes openraft pause before it tries
        // this peer again ([`backoff_schedule`]) instead of retrying with every append:
        // right for a refused connection, one closed or reset before any answer (a peer
        // that is down behind a TCP proxy or a sidecar looks like this), and a refusal
        // (non-200: wrong cluster, wrong replica, bad credentials), which an immediate
        // retry would only repeat. Not for a timeout (the peer may only be slow) or an
        // answer cut short.
        let unreachable = |err: PeerError| RPCError::Unreachable(Unreachable::new(&err));
        let response = builder.send().await.map_err(|e| {
            let err = self.error(error_text(&e));
            if e.is_timeout() {
                RPCError::Network(NetworkError::new(&err))
            } else {
                unreachable(err)
            }
        })?;
        let status = response.status();
        let identity_check = PeerIdentity::check_responder(response.headers(), self.target);
        if status == StatusCode::OK && identity_check.is_ok() {
            on_answer(response.headers());
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(error_text(&e)))))?;
        if status != StatusCode::OK {
            let reason = format!("refused with {status}: {}", String::from_utf8_lossy(&bytes));
            return Err(unreachable(self.error(reason)));
        }
        identity_check.map_err(|e| unreachable(self.error(e)))?;
        let result: Result<Resp, RaftError<ReplicaId, E>> = codec::decode(&bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(
                &self.error(format!("undecodable answer: {e}")),
            ))
        })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

/// Pauses before the next try after a peer was unreachable (see [`PeerConnection::call`]):
/// 50 ms doubling to openraft's 500 ms, so a peer back after a blip is caught up within a
/// heartbeat or two and a peer that stays down costs two requests a second.
fn backoff_schedule() -> impl Iterator<Item = Duration> {
    (0u32..).map(|attempt| Duration::from_millis((50u64 << attempt.min(4)).min(500)))
}

impl<C> RaftNetwork<C> for PeerConnection
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    fn backoff(&self) -> Backoff {
        Backoff::new(backoff_schedule())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ReplicaId>, RPCError<ReplicaId, Member, RaftError<ReplicaId>>>
    {
        self.call(APPEND, &rpc, option.hard_ttl(), |_| {}).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<ReplicaId>,
        RPCError<ReplicaId, Member, RaftError<ReplicaId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT, &rpc, option.hard_ttl(), |_| {}).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RPCError<ReplicaId, Member, RaftError<ReplicaId>>> {
        let report = |headers: &HeaderMap| {
            if let Some(membership) = headers.get(HEADER_NOT_A_VOTER).and_then(removal::decode) {
                self.network.standing.report(Removal {
                    reported_by: self.target,
                    membership,
                });
            }
        };
        self.call(VOTE, &rpc, option.hard_ttl(), report).await
    }
}

/// What the receiving routes need.
struct Service<C: RaftTypeConfig> {
    raft: Raft<C>,
    identity: Arc<PeerIdentity>,
    auth: Arc<dyn PeerAuth>,
}

/// The replica-to-replica routes, to be merged into the replica's router.
/// `e` with its causes ("error sending request: connection closed before message
/// completed"): reqwest's own text names only the outermost step, which leaves an
/// operator reading logs no way to tell a refused connection from a reset one.
pub fn error_text(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

pub fn router<C>(raft: Raft<C>, identity: Arc<PeerIdentity>, auth: Arc<dyn PeerAuth>) -> Router
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    let service = Arc::new(Service {
        raft,
        identity,
        auth,
    });
    Router::new()
        .route(&format!("{RAFT_PREFIX}{APPEND}"), post(append::<C>))
        .route(&format!("{RAFT_PREFIX}{VOTE}"), post(vote::<C>))
        .route(&format!("{RAFT_PREFIX}{SNAPSHOT}"), post(snapshot::<C>))
        .route(&format!("{RAFT_PREFIX}{CAMPAIGN}"), post(campaign::<C>))
        // Before any body is read: the limit is large (snapshot chunks), and only peers
        // may make a replica hold that much.
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            admit_sender::<C>,
        ))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT_BYTES))
        .with_state(service)
}

/// The replica a peer request comes from, checked by [`admit_sender`].
#[derive(Debug, Clone, Copy)]
struct Sender(ReplicaId);

/// Checks a peer request's credentials and addressing from its headers alone, before
/// its handler reads the body, and passes the sender on.
async fn admit_sender<C>(
    State(service): State<Arc<Service<C>>>,
    mut request: Request,
    next: Next,
) -> Result<Response, Refused>
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    service
        .auth
        .check(request.headers())
        .map_err(|reason| Refused(StatusCode::FORBIDDEN, reason))?;
    let from = service.identity.check_incoming(request.headers())?;
    request.extensions_mut().insert(Sender(from));
    Ok(next.run(request).await)
}

/// A refused peer request: status and a reason for the sender's log.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        tracing::warn!(status = %self.0, reason = %self.1, "refused a peer request");
        (self.0, self.1).into_response()
    }
}

impl From<PeerIdentityError> for Refused {
    fn from(e: PeerIdentityError) -> Self {
        let status = match e {
            PeerIdentityError::WrongCluster { .. } => StatusCode::FORBIDDEN,
            PeerIdentityError::WrongReplica { .. } => StatusCode::MISDIRECTED_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        };
        Refused(status, e.to_string())
    }
}

/// Decodes the body of a request from `from` (admitted by [`admit_sender`]), and checks
/// that the sender agrees with the replica named by the message's vote.
fn admit<Req>(
    Sender(from): Sender,
    body: &[u8],
    voter: impl Fn(&Req) -> Option<ReplicaId>,
) -> Result<Req, Refused>
where
    Req: DeserializeOwned,
{
    let request: Req = codec::decode(body).map_err(|e| {
        Refused(
            StatusCode::BAD_REQUEST,
            format!("undecodable raft request from replica {from}: {e}"),
        )
    })?;
    match voter(&request) {
        Some(vote) if vote != from => {
            Err(PeerIdentityError::SenderMismatch { header: from, vote }.into())
        }
        _ => Ok(request),
    }
}

fn answer<T: Serialize>(service_id: ReplicaId, result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => ([(HEADER_RESPONDER, service_id.to_string())], bytes).into_response(),
        Err(e) => Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )
        .into_response(),
    }
}

async fn append<C>(
    State(service): State<Arc<Service<C>>>,
    Extension(sender): Extension<Sender>,
    body: Bytes,
) -> Result<Response, Refused>
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    let request: AppendEntriesRequest<C> = admit(sender, &body, |r: &AppendEntriesRequest<C>| {
        r.vote.leader_id().voted_for()
    })?;
    let result = service.raft.append_entries(request).await;
    Ok(answer(service.identity.replica_id, &result))
}

async fn vote<C>(
    State(service): State<Arc<Service<C>>>,
    Extension(sender): Extension<Sender>,
    body: Bytes,
) -> Result<Response, Refused>
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    let request: VoteRequest<ReplicaId> = admit(sender, &body, |r: &VoteRequest<ReplicaId>| {
        r.vote.leader_id().voted_for()
    })?;
    let candidate = request.vote.leader_id().voted_for();
    let result = service.raft.vote(request).await;
    let mut response = answer(service.identity.replica_id, &result);
    let not_a_voter = candidate.and_then(|candidate| {
        let metrics = service.raft.metrics();
        let metrics = metrics.borrow();
        removal::not_a_voter(&metrics.membership_config, metrics.last_applied, candidate)
    });
    if let Some(membership) = not_a_voter {
        response
            .headers_mut()
            .insert(HEADER_NOT_A_VOTER, removal::encode(membership));
    }
    Ok(response)
}

async fn snapshot<C>(
    State(service): State<Arc<Service<C>>>,
    Extension(sender): Extension<Sender>,
    body: Bytes,
) -> Result<Response, Refused>
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    let request: InstallSnapshotRequest<C> =
        admit(sender, &body, |r: &InstallSnapshotRequest<C>| {
            r.vote.leader_id().voted_for()
        })?;
    let result = service.raft.install_snapshot(request).await;
    Ok(answer(service.identity.replica_id, &result))
}

/// Starts an election on this replica when its current leader asks (leadership transfer).
async fn campaign<C>(
    State(service): State<Arc<Service<C>>>,
    Extension(Sender(from)): Extension<Sender>,
) -> Result<Response, Refused>
where
    C: RaftTypeConfig<NodeId = ReplicaId, Node = Member>,
{
    let leader = service.raft.metrics().borrow().current_leader;
    if leader != Some(from) {
        return Err(Refused(
            StatusCode::CONFLICT,
            format!("only the current leader may ask for a campaign; replica {from} is not (leader: {leader:?})"),
        ));
    }
    tracing::info!(
        from,
        "campaigning at the leader's request (leadership transfer)"
    );
    service
        .raft
        .trigger()
        .elect()
        .await
        .map_err(|e| Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((
        [(HEADER_RESPONDER, service.identity.replica_id.to_string())],
        "",
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection from replica 1 to replica 2 at `addr`.
    fn peer(addr: std::net::SocketAddr) -> PeerConnection {
        let identity = Arc::new(PeerIdentity {
            cluster_id: "c".into(),
            replica_id: 1,
        });
        PeerConnection {
            target: 2,
            member: Member::new(format!("http://{addr}")),
            network: HttpNetwork::new(
                PeerHttp::new(reqwest::Client::new()),
                identity,
                Arc::new(NoPeerAuth),
                Arc::default(),
            ),
        }
    }

    async fn append_to(
        addr: std::net::SocketAddr,
    ) -> RPCError<ReplicaId, Member, RaftError<ReplicaId, InstallSnapshotError>> {
        peer(addr)
            .call::<u8, u8, InstallSnapshotError>(APPEND, &1, Duration::from_secs(2), |_| {})
            .await
            .expect_err("no peer answers properly here")
    }

    async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn peers_that_refuse_or_drop_requests_are_backed_off_and_slow_ones_are_not() {
        // Refuses (as a replica of another cluster would, or a sidecar whose replica is
        // down): openraft should pause before trying again.
        let (refusing, addr) = listener().await;
        let app = Router::new().route(
            &format!("{RAFT_PREFIX}{APPEND}"),
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream") }),
        );
        tokio::spawn(async move { axum::serve(refusing, app).await });
        let err = append_to(addr).await;
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("no healthy upstream"), "{err}");

        // Accepts the connection and closes it unanswered (a TCP proxy before a dead
        // replica).
        let (closing, addr) = listener().await;
        tokio::spawn(async move {
            while let Ok((stream, _)) = closing.accept().await {
                drop(stream);
            }
        });
        let err = append_to(addr).await;
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");

        // Accepts and never answers: maybe only slow, so no pause.
        let (silent, addr) = listener().await;
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let err = append_to(addr).await;
        assert!(matches!(err, RPCError::Network(_)), "{err}");
        held.abort();

        // Nothing listens.
        let addr = listener().await.1;
        let err = append_to(addr).await;
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_peer_accepts_connections_while_it_listens_and_not_after() {
        let (listening, addr) = listener().await;
        let url = format!("http://{addr}");
        let within = Duration::from_secs(5);
        accepts_connections(&url, within).await.unwrap();
        // Nobody calls accept: the kernel completes the handshake, as for a paused peer.
        accepts_connections(&url, within).await.unwrap();
        drop(listening);
        let err = accepts_connections(&url, within).await.unwrap_err();
        assert!(err.starts_with(&format!("not reachable at {url}")), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");

        // A name, as in a StatefulSet's peer URLs.
        let (_listening, addr) = listener().await;
        accepts_connections(&format!("https://localhost:{}/", addr.port()), within)
            .await
            .unwrap();
    }

    #[test]
    fn the_backoff_starts_short_and_settles_at_openrafts_default() {
        let pauses: Vec<u64> = backoff_schedule()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500, 500]);
    }

    #[tokio::test]
    async fn an_http_error_names_its_cause() {
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        let text = error_text(&err);
        assert!(text.starts_with(&err.to_string()), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!err.to_string().to_lowercase().contains("refused"), "{err}");
    }
}
