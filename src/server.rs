//! `serve`: one replica, from data dir to listening socket to clean exit.
//!
//! Start-up order matters: the data dir is checked (identity, lock) before anything is
//! written; storage is opened and verified; the listener is bound so a port clash fails
//! fast; Raft starts; then, for a fresh member of the initial cluster, the cluster is
//! bootstrapped. Shut-down reverses it: stop accepting, let in-flight requests finish
//! (bounded), stop Raft, release storage.
//!
//! Bootstrapping a fresh cluster: every initial member is started with the same
//! `--initial-cluster`. A fresh replica first asks its peers whether a cluster is already
//! running (it may be a late starter, or a replica whose disk was replaced); if one is,
//! it waits to be replicated to, because initializing again could give it a stale view.
//! Otherwise it calls openraft's `initialize` with the full member list; several replicas
//! doing so with the same list is safe, so whichever starts first, the cluster forms.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum_server::tls_rustls::RustlsConfig;
use controller_raft::removal::Standing;
use controller_raft::timing::Timing;
use controller_raft::transport::{self, HttpNetwork, NoPeerAuth, PeerAuth, PeerHttp};
use controller_raft::{Member, PeerIdentity};
use controller_storage::{Bootstrap, DataDir, Identity, FORMAT_VERSION};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::routing::Forwarder;
use crate::api::types::ClusterStatus;
use crate::api::{self, ApiState, Limits};
use crate::auth::{JwtKeys, PeerJwt, PeerToken};
use crate::bootstrap;
use crate::client::Client;
use crate::consensus::{LogStore, StateMachine};
use crate::credentials::{CaFile, Hangups, Reloader, TlsFiles};
use crate::membership::Membership;
use crate::metrics::{self, Metrics, MetricsState};
use crate::replica::{Deadlines, Replica};

/// Everything `serve` needs, already parsed.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub id: u64,
    pub listen: SocketAddr,
    /// The URL peers and forwarded requests use to reach this replica.
    pub advertise_url: String,
    pub data_dir: PathBuf,
    /// Members of a new cluster; ignored once the data dir exists.
    pub initial_cluster: BTreeMap<u64, Member>,
    /// A replica of a running cluster to ask for membership (fresh data dir only).
    pub join: Option<String>,
    /// Joins as a learner and stays one (`--learner`).
    pub learner: bool,
    pub cluster_name: String,
    pub timing: Timing,
    pub deadlines: Deadlines,
    pub leader_wait: Duration,
    pub limits: Limits,
    /// Upper bound of sled's page cache.
    pub cache_bytes: u64,
    /// How long in-flight requests may take to finish at shut-down.
    pub drain: Duration,
    /// How long a stopping leader tries to hand leadership over.
    pub handoff: Duration,
    pub security: Security,
}

/// How a replica authenticates callers and peers, and whether it speaks TLS.
#[derive(Clone, Default)]
pub struct Security {
    /// Public keys of accepted tokens; `None` turns authentication off.
    pub keys: Option<Arc<JwtKeys>>,
    /// This replica's `controller_peer` token, presented to its peers.
    pub peer_token: Option<PeerToken>,
    /// Certificate chain and private key (PEM) to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA certificate (PEM) that peers' certificates are checked against.
    pub ca: Option<PathBuf>,
    /// How often keys, the peer token, the certificate and the CA are read again (also
    /// on SIGHUP); `None`: only on SIGHUP.
    pub reload_every: Option<Duration>,
    /// SIGHUP, listened for since the process started.
    pub hangups: Hangups,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Security")
            .field("auth", &self.keys.is_some())
            .field(
                "peer_token",
                &self.peer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("reload_every", &self.reload_every)
            .finish()
    }
}

impl Security {
    /// The peer token as presented now; a reload may replace it later, so whatever
    /// outlives the start-up asks [`PeerToken`] itself.
    pub fn peer_token_now(&self) -> Option<String> {
        self.peer_token.as_ref().map(PeerToken::token)
    }

    /// The client for peers, trusting `--tls-ca` if given, and that CA file to reload
    /// it from.
    pub fn peer_http(&self) -> anyhow::Result<(PeerHttp, Option<CaFile>)> {
        let ca = self
            .ca
            .as_ref()
            .map(|path| anyhow::Ok((path.clone(), read_ca(path)?)))
            .transpose()?;
        let http = PeerHttp::new(peer_client_trusting(
            ca.as_ref()
                .map(|(path, pem)| (path.as_path(), pem.as_slice())),
        )?);
        let ca = ca.map(|(path, pem)| CaFile::new(path, pem, http.clone()));
        Ok((http, ca))
    }

    /// The certificate and key to serve HTTPS with, loaded, if configured.
    pub async fn tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match &self.tls {
            Some((cert, key)) => Ok(Some(TlsFiles::load(cert, key).await?)),
            None => Ok(None),
        }
    }
}

/// The cluster id all initial members derive alike from the name and the member list.
pub fn derive_cluster_id(name: &str, members: &BTreeMap<u64, Member>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    for (id, member) in members {
        hasher.update(format!("\n{id}={}", member.url).as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens the data dir, creating it for a fresh member of the initial cluster or for a
/// replica joining a running one. Returns the replicas to ask to join through, if
/// joining: the cluster's leader first when it is known, then the one given.
///
/// An initial member with an empty data dir first asks its peers whether the cluster
/// already runs; if so it joins instead of bootstrapping, and if the cluster still lists
/// it (its disk was lost) it leaves first, so that it never votes with an empty log (see
/// [`crate::bootstrap`]).
async fn open_data_dir(
    config: &ServeConfig,
    http: &reqwest::Client,
    peer_token: Option<String>,
) -> anyhow::Result<(DataDir, Vec<String>)> {
    let root = &config.data_dir;
    if DataDir::peek(root)?.is_some() {
        let dir = DataDir::open(root, config.id, Some(&config.cluster_name))?;
        tracing::info!(path = %root.display(), cluster = %dir.identity().cluster_id,
            initial_cluster_ignored = !config.initial_cluster.is_empty(), "opened existing data dir");
        return Ok((dir, config.join.clone().into_iter().collect()));
    }
    let mut join = config.join.clone();
    if join.is_none() && !config.initial_cluster.is_empty() {
        if !config.initial_cluster.contains_key(&config.id) {
            bail!(
                "--initial-cluster does not list replica {}; a replica can only bootstrap a cluster it \
                 is a member of (use --join to join a running cluster)",
                config.id
            );
        }
        let peers: Vec<String> = config
            .initial_cluster
            .iter()
            .filter(|(id, _)| **id != config.id)
            .map(|(_, member)| member.url.clone())
            .collect();
        let answers =
            bootstrap::probe(&peers, &config.cluster_name, http, peer_token.clone()).await?;
        if let Some((via, status)) = answers
            .iter()
            .find(|(_, status)| bootstrap::is_running(status))
        {
            // Whether the cluster still lists this replica is asked of its leader below.
            tracing::info!(%via, leader = ?status.leader, "the cluster already runs: joining it instead of bootstrapping");
            join = Some(via.clone());
        }
    }
    let mut join_through = Vec::new();
    let (cluster_id, bootstrap) = match &join {
        Some(url) => {
            let (view, leader_url) = cluster_to_join(config, url, http, peer_token.clone()).await?;
            if view.members.iter().any(|m| m.id == config.id) {
                // This id is a member already, but the data dir is empty: the disk was
                // lost after it joined. Voting now, with no log and no memory of its
                // vote, could elect a leader that lacks an acknowledged write (and
                // makes the leader's replication panic over a log that went backwards),
                // so it leaves first, like an initial member does.
                bootstrap::leave_to_rejoin(&leader_url, config.id, http, peer_token).await?;
            }
            join_through.push(leader_url);
            if !join_through.contains(url) {
                join_through.push(url.clone());
            }
            (view.cluster_id, Bootstrap::Joined)
        }
        None if config.initial_cluster.is_empty() => bail!(
            "data dir {} is empty: pass --initial-cluster listing every member (including replica {}) to \
             bootstrap a new cluster, or --join URL to join a running one",
            root.display(),
            config.id
        ),
        None => (
            derive_cluster_id(&config.cluster_name, &config.initial_cluster),
            Bootstrap::InitialMember,
        ),
    };
    let identity = Identity {
        format_version: FORMAT_VERSION,
        cluster_name: config.cluster_name.clone(),
        cluster_id,
        replica_id: config.id,
        bootstrap,
    };
    Ok((DataDir::create(root, identity)?, join_through))
}

/// How long a stopping replica waits for its Raft core to stop, after the drain.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

/// How long a joining replica keeps trying to reach the cluster it joins.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);

/// Asks the replica at `url` which cluster it belongs to, checking the name matches.
/// Returns the cluster's status as its leader answers it (whose members say whether
/// the cluster already lists this replica), and the leader's URL.
async fn cluster_to_join(
    config: &ServeConfig,
    url: &str,
    http: &reqwest::Client,
    peer_token: Option<String>,
) -> anyhow::Result<(ClusterStatus, String)> {
    let client = Client::with_http(url, http.clone())
        .with_token(peer_token.clone())
        .with_timeout(Duration::from_secs(2));
    let deadline = std::time::Instant::now() + JOIN_PATIENCE;
    loop {
        match client.cluster_status().await {
            Ok(status) if status.cluster_name != config.cluster_name => bail!(
                "{url} belongs to cluster {:?}, not {:?} (--cluster-name)",
                status.cluster_name,
                config.cluster_name
            ),
            Ok(status) => {
                // Checked in both views: the replica asked first may lag behind the
                // leader, and leaving to rejoin would remove the live replica that holds
                // this id.
                if let Some(why) = listed_elsewhere(&status, config) {
                    bail!(why)
                }
                match leaders_view(&status, http, peer_token.clone()).await {
                    Some((view, leader_url)) => {
                        if let Some(why) = listed_elsewhere(&view, config) {
                            bail!(why)
                        }
                        tracing::info!(%url, cluster = %view.cluster_id, leader = view.replica_id, "joining a running cluster");
                        return Ok((view, leader_url));
                    }
                    None if std::time::Instant::now() < deadline => {
                        tracing::info!(%url, leader = ?status.leader, "waiting for the leader of the cluster to join");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => bail!(
                        "the cluster {url} belongs to has no leader that answers; a replica joins through its leader"
                    ),
                }
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(%url, error = %e, "waiting for the cluster to join");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => bail!("could not reach {url} to join its cluster: {e}"),
        }
    }
}

/// Why joining is refused, if `status` lists this replica's id at another URL than the
/// one it advertises: another replica holds that id.
fn listed_elsewhere(status: &ClusterStatus, config: &ServeConfig) -> Option<String> {
    let member = status
        .members
        .iter()
        .find(|m| m.id == config.id && m.url != config.advertise_url)?;
    Some(format!(
        "replica id {} is already a member of cluster {} at another URL ({}, this replica \
         advertises {}); remove it first or pick another id",
        config.id, status.cluster_id, member.url, config.advertise_url
    ))
}

/// The cluster's status as its leader answers it, given another replica's `status`, and
/// the leader's URL. Whether the cluster lists a replica must come from the leader:
/// another replica's membership may lag behind a change that already made it a voter
/// (a voter that lost its data must leave before it starts Raft again), and a replica
/// that was removed while down still lists itself. Asks the leader `status` names, else
/// every member it lists. None while no leader answers.
async fn leaders_view(
    status: &ClusterStatus,
    http: &reqwest::Client,
    peer_token: Option<String>,
) -> Option<(ClusterStatus, String)> {
    if status.state == "leader" && status.removed.is_none() {
        let url = &status
            .members
            .iter()
            .find(|m| m.id == status.replica_id)?
            .url;
        return Some((status.clone(), url.clone()));
    }
    let named = status
        .members
        .iter()
        .filter(|m| Some(m.id) == status.leader);
    let others = status
        .members
        .iter()
        .filter(|m| Some(m.id) != status.leader && m.id != status.replica_id);
    for member in named.chain(others) {
        let answer = Client::with_http(&member.url, http.clone())
            .with_token(peer_token.clone())
            .with_cluster(Some(status.cluster_id.clone()))
            .with_timeout(Duration::from_secs(2))
            .member_status(member.id, &status.cluster_id)
            .await;
        if let Some(view) = answer.filter(|view| view.state == "leader") {
            return Some((view, member.url.clone()));
        }
    }
    None
}

/// One pooled HTTP client for all replica-to-replica traffic; trusts the certificates
/// in the PEM file `ca` in addition to the system roots when given.
pub fn peer_client(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let pem = ca.map(read_ca).transpose()?;
    peer_client_trusting(ca.zip(pem.as_deref()))
}

/// The bytes of the CA file `path`.
pub fn read_ca(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the CA certificate {}", path.display()))
}

/// [`peer_client`] with the CA file already read: (its path, for errors; its PEM). A
/// bundle of several certificates is trusted whole (the old and the new CA while peers'
/// certificates move from one to the other); a file without one is an error.
pub fn peer_client_trusting(
    ca: Option<(&std::path::Path, &[u8])>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(1));
    if let Some((path, pem)) = ca {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        if certificates.is_empty() {
            bail!("{} holds no PEM certificate", path.display());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("building the HTTP client")
}

/// Frees the listen port when awaited: what answers on it until the replica binds it
/// (a StatefulSet pod's waiting room, so that its probes pass while it joins).
pub type PortHolder = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a replica until `shutdown` resolves or Raft fails; `Err` if it failed. `holder`,
/// if any, keeps the listen port answering until the replica is about to bind it.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    holder: Option<PortHolder>,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    let security = config.security.clone();
    let (peer_http, ca) = security.peer_http()?;
    // For the start-up (bootstrap, joining); what runs on asks `peer_http` each time.
    let client = peer_http.get();
    // Joining may wait minutes for the cluster to answer: a SIGTERM meanwhile ends it
    // (nothing is written to the data dir before the cluster has answered).
    let (data_dir, join) = tokio::select! {
        opened = open_data_dir(&config, &client, security.peer_token_now()) => opened?,
        () = stop.cancelled() => {
            tracing::info!("stopped before the data dir was set up");
            return Ok(());
        }
    };
    let identity = data_dir.identity().clone();
    let mut log = LogStore::open(&data_dir.log_path(), config.id, config.cache_bytes)?;
    let state_machine = StateMachine::open(&data_dir.snapshot_path())
        .with_context(|| format!("loading the snapshot in {}", data_dir.root().display()))?;
    log.purge_behind(state_machine.durable_snapshot())?;

    let held = holder.is_some();
    if let Some(holder) = holder {
        holder.await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let peer_identity = Arc::new(PeerIdentity {
        cluster_id: identity.cluster_id.clone(),
        replica_id: config.id,
    });
    let peer_auth: Arc<dyn PeerAuth> = match (&security.keys, &security.peer_token) {
        (Some(keys), Some(token)) => Arc::new(PeerJwt::new(token.clone(), keys.clone())),
        (None, None) => Arc::new(NoPeerAuth),
        _ => bail!("authentication needs both --auth-public-key and --peer-token-file"),
    };
    let standing = Arc::new(Standing::default());
    let network = HttpNetwork::new(
        peer_http.clone(),
        peer_identity.clone(),
        peer_auth.clone(),
        standing.clone(),
    );
    let replica = Arc::new(
        Replica::start(
            config.id,
            &config.cluster_name,
            &config.timing,
            config.deadlines,
            network.clone(),
            standing,
            log,
            state_machine,
        )
        .await?,
    );
    let membership = Membership::new(
        replica.clone(),
        network.clone(),
        peer_http.clone(),
        security.peer_token.clone(),
        identity.cluster_id.clone(),
    );
    let metrics = Metrics::new();
    metrics.attach(&replica);
    let forwarder = Forwarder {
        client: peer_http.clone(),
        self_id: config.id,
        timeout: config.deadlines.write + Duration::from_secs(3),
        peer_token: security.peer_token.clone(),
        cluster_id: identity.cluster_id.clone(),
    };
    replica.serve_follower_reads(Arc::new(forwarder.clone()));
    let api_state = Arc::new(ApiState {
        replica: replica.clone(),
        metrics: metrics.clone(),
        membership: membership.clone(),
        cluster_name: identity.cluster_name.clone(),
        cluster_id: identity.cluster_id.clone(),
        forwarder,
        leader_wait: config.leader_wait,
        handoff: config.handoff,
        limits: config.limits,
    });
    let app = api::router(api_state)
        .merge(transport::router(
            replica.raft().clone(),
            peer_identity,
            peer_auth,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            security.keys.clone(),
            api::auth::authorize,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            metrics::track_requests,
        ))
        .merge(
            axum::Router::new()
                .route("/metrics", axum::routing::get(metrics::serve_metrics))
                .with_state(MetricsState {
                    metrics: metrics.clone(),
                    replica: replica.clone(),
                    data_dir: data_dir.root().to_owned(),
                }),
        );
    tracing::info!(
        listen = %config.listen,
        url = %config.advertise_url,
        cluster = %identity.cluster_id,
        "replica {} serving",
        config.id
    );

    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    tokio::spawn(watch_raft(replica.metrics(), stop.clone(), failure.clone()));
    tokio::spawn(membership.clone().finish_abandoned_changes(stop.clone()));
    let initialized = replica.raft().is_initialized().await?;
    // A replica that joined, restarted before it was promoted (its catch-up cut short),
    // finds itself a learner: it asks again, or it would stay one for good.
    // It then asks through any voter its log names as well as the one it was given with
    // `--join`: that one may be the replica that is down (a StatefulSet gives every pod
    // the same first). Without `--join`, or with `--learner`, it does not ask (a learner
    // by intent).
    let mut join = join;
    let still_a_learner = {
        let raft_metrics = replica.metrics().borrow().clone();
        let current = raft_metrics.membership_config.membership();
        let is_voter = current.voter_ids().any(|v| v == config.id);
        if config.learner && initialized && is_voter {
            tracing::warn!(
                "--learner is ignored: this replica is a voter; to make it a learner, remove \
                 it and add it back with `cluster add --learner`"
            );
        }
        let learner =
            initialized && !config.learner && current.get_node(&config.id).is_some() && !is_voter;
        if learner && !join.is_empty() {
            for voter in current.voter_ids() {
                if let Some(member) = current.get_node(&voter) {
                    if !join.contains(&member.url) {
                        join.push(member.url.clone());
                    }
                }
            }
        }
        learner
    };
    match (identity.bootstrap, join.first()) {
        (Bootstrap::InitialMember, _) if !initialized => {
            tokio::spawn(bootstrap(
                replica.clone(),
                client.clone(),
                security.peer_token_now(),
                identity.cluster_id.clone(),
                config.initial_cluster.clone(),
                stop.clone(),
            ));
        }
        (Bootstrap::Joined, Some(_)) if !initialized || still_a_learner => {
            if still_a_learner {
                tracing::info!("restarted as a learner before being promoted: asking again");
            }
            tokio::spawn(ask_to_join(
                replica.clone(),
                config.learner,
                Via {
                    urls: join.clone(),
                    http: peer_http.clone(),
                    peer_token: security.peer_token.clone(),
                    cluster_id: identity.cluster_id.clone(),
                },
                config.advertise_url.clone(),
                stop.clone(),
                failure.clone(),
            ));
        }
        // `restore` writes the identity first and the seeded state after it: a data dir
        // that says "seeded" and holds nothing is a restore cut short.
        (Bootstrap::Seeded, _) if !initialized => anyhow::bail!(
            "data dir {}: a restore into it did not finish (it holds no restored state); delete it \
             and run restore again",
            config.data_dir.display()
        ),
        (Bootstrap::Joined, None) if !initialized => tracing::warn!(
            "this replica joined a cluster but has not been added yet; pass --join URL or add it with \
             `cluster add`"
        ),
        _ => {}
    }

    // The listener keeps accepting until leadership has been handed away: the handoff
    // needs the peers' votes and heartbeats to reach this replica.
    let handle = axum_server::Handle::new();
    let mut reloader = Reloader::new(
        security.keys.clone(),
        security.peer_token.clone(),
        security.tls_files().await?,
        ca,
        Some(metrics.clone()),
        security.hangups.clone(),
    );
    // The waiting room had the SIGHUPs until now and reloaded its own copies of the
    // certificate and CA: read them again, or a rotation signalled while it held the
    // port would wait for the next signal or tick.
    if held {
        reloader.reload().await;
    }
    let server = start_listener(
        listener.into_std()?,
        app,
        reloader.tls_config(),
        handle.clone(),
    )
    .await?;
    tokio::spawn(reloader.run(security.reload_every, stop.clone()));
    stop.cancelled().await;
    let handed = hand_leadership_away(&replica, &membership, config.handoff).await;
    // Draining stops new connections, the leader's heartbeats included: a replica that
    // could still campaign would, every election timeout until it exits (up to the
    // drain), and start again with a term high enough to depose the leader.
    replica.raft().runtime_config().elect(false);
    // A campaign under way when the stop came may have been won since: hand over now
    // (once: a leader whose handover failed above would fail the same way again).
    if !handed {
        hand_leadership_away(&replica, &membership, config.handoff).await;
    }
    if replica.is_leader() {
        // Its listener refuses new connections from here on, so the followers cannot
        // reach it; silent, it lets their leases run out and they elect another leader
        // during the drain instead of after the exit.
        tracing::warn!("still leading after the handover attempts: stopping heartbeats so the others elect a leader");
        replica.fall_silent();
    }
    tracing::info!("shutting down: draining in-flight requests");
    handle.graceful_shutdown(Some(config.drain));
    match tokio::time::timeout(config.drain + Duration::from_secs(1), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => {
            tracing::warn!(drain = ?config.drain, "in-flight requests did not finish in time")
        }
    }
    // Raft's core stops once its storage answers; a disk that hangs must not hold the
    // process past its grace period (anything acknowledged is on disk already).
    if tokio::time::timeout(SHUTDOWN_PATIENCE, replica.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(patience = ?SHUTDOWN_PATIENCE, "Raft did not stop in time; exiting without it");
    }
    drop(replica);
    drop(data_dir);
    tracing::info!("replica {} stopped", config.id);
    let failure = failure.lock().expect("failure lock").take();
    match failure {
        Some(reason) => bail!("replica {} stopped: {reason}", config.id),
        None => Ok(()),
    }
}

/// Serves `app` on `listener`, over TLS when configured. Connections that stall while
/// sending headers are dropped, so slow clients cannot hold connections open.
pub(crate) async fn start_listener(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<RustlsConfig>,
    handle: axum_server::Handle<SocketAddr>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let service = app.into_make_service();
    Ok(match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
        Some(tls) => {
            let mut server =
                axum_server::tls_rustls::from_tcp_rustls(listener, tls)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
    })
}

/// A client must send its request headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// On the way out, a leader hands leadership to the most up-to-date voter so the cluster
/// does not wait an election timeout (a rolling restart then costs no election). Returns
/// whether it tried (it led).
async fn hand_leadership_away(
    replica: &Replica,
    membership: &Membership,
    within: Duration,
) -> bool {
    if !replica.is_leader() {
        return false;
    }
    if let Err(e) = membership.step_down(within).await {
        tracing::warn!(error = %e, "could not hand leadership over before stopping; the other voters elect a leader once a quorum of them runs");
    }
    true
}

/// The replica a joining one asks to be added through.
struct Via {
    /// Asked in turn, one per attempt.
    urls: Vec<String>,
    http: PeerHttp,
    peer_token: Option<PeerToken>,
    cluster_id: String,
}

impl Via {
    /// A client with the CA and peer token as they are now: a join may wait for a
    /// quorum for long enough that either is rotated meanwhile.
    fn client(&self, attempt: usize) -> Client {
        Client::with_http(&self.urls[attempt % self.urls.len()], self.http.get())
            .with_token(self.peer_token.as_ref().map(PeerToken::token))
            .with_cluster(Some(self.cluster_id.clone()))
    }
}

/// A joining replica asks the cluster to add it, until it is added or refused.
async fn ask_to_join(
    replica: Arc<Replica>,
    as_learner: bool,
    via: Via,
    url: String,
    stop: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    let id = replica.id();
    let role = if as_learner { "learner" } else { "voter" };
    for attempt in 0.. {
        // The answer may have been lost (the replica asked may have died after adding
        // us): the replicated membership says whether we are in.
        let joined = {
            let metrics = replica.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            if as_learner {
                membership.get_node(&id).is_some()
            } else {
                // A voter of a configuration that is not joint: a change left joint is
                // finished by the next request to add us (`Membership::add`).
                let configs = membership.get_joint_config();
                configs.len() == 1 && configs[0].contains(&id)
            }
        };
        if joined {
            tracing::info!(role, "this replica is a member of the cluster");
            return;
        }
        let cluster = via.client(attempt);
        tokio::select! {
            result = cluster.add_member(id, &url, as_learner, None) => match result {
                Ok(status) => {
                    tracing::info!(leader = ?status.leader, role, "added to the cluster");
                    return;
                }
                Err(e) if e.is_refusal() => {
                    tracing::error!(error = %e, "the cluster refused to add this replica");
                    *failure.lock().expect("failure lock") = Some(format!("join refused: {e}"));
                    stop.cancel();
                    return;
                }
                Err(e) => tracing::info!(error = %e, "asking to join again shortly"),
            },
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Logs every change of this replica's Raft role, term or known leader (an election is
/// the event an operator looks for first when answers stalled), and stops the process
/// when Raft hits a fatal error (a storage failure, a panic in its core): a replica that
/// cannot persist or replicate must not keep answering as if it could, and an exit lets
/// the supervisor restart it.
async fn watch_raft(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, Member>>,
    stop: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    let mut role = None;
    loop {
        let fatal = {
            let now = metrics.borrow();
            let seen = (now.state, now.current_term, now.current_leader);
            if role != Some(seen) {
                role = Some(seen);
                tracing::info!(
                    role = %crate::api::cluster::state_name(seen.0),
                    term = seen.1,
                    leader = ?seen.2,
                    "raft role"
                );
            }
            match &now.running_state {
                Err(fatal) => Some(fatal.to_string()),
                Ok(()) => None,
            }
        };
        if let Some(fatal) = fatal {
            fail(&stop, &failure, fatal);
            return;
        }
        // Watched until the core is gone, so what a stopping replica does while it
        // hands leadership away and drains is logged too.
        if metrics.changed().await.is_err() {
            // Unless the replica was stopping, the core died (a panic does this without
            // ever reporting a fatal state).
            fail(&stop, &failure, "the raft core stopped unexpectedly".into());
            return;
        }
    }
}

fn fail(stop: &CancellationToken, failure: &std::sync::Mutex<Option<String>>, reason: String) {
    if stop.is_cancelled() {
        return;
    }
    tracing::error!(error = %reason, "raft stopped with a fatal error; shutting the replica down");
    *failure.lock().expect("failure lock") = Some(format!("fatal Raft error: {reason}"));
    stop.cancel();
}

/// Forms the initial cluster unless one is already running. Not while a listed peer
/// answers for another cluster (another `--initial-cluster` or `--cluster-name`): the
/// members that agree could form a cluster of their own beside it, two leaders for the
/// same tenants. It waits instead, saying why, until that peer is fixed or gone.
async fn bootstrap(
    replica: Arc<Replica>,
    client: reqwest::Client,
    peer_token: Option<String>,
    cluster_id: String,
    members: BTreeMap<u64, Member>,
    stop: CancellationToken,
) {
    let mut last_complaint: Option<tokio::time::Instant> = None;
    loop {
        let mut foreign = Vec::new();
        for (id, member) in members.iter().filter(|(id, _)| **id != replica.id()) {
            let probe = Client::with_http(&member.url, client.clone())
                .with_token(peer_token.clone())
                .with_timeout(Duration::from_secs(1))
                .cluster_status()
                .await;
            let Ok(status) = probe else { continue };
            if status.cluster_id != cluster_id {
                foreign.push(format!(
                    "{id} at {member}: cluster id {}",
                    status.cluster_id
                ));
                continue;
            }
            if status.leader.is_some() || status.last_log_index.is_some_and(|i| i > 0) {
                tracing::info!(peer = id, leader = ?status.leader, "the cluster is already running; waiting to be replicated to");
                return;
            }
        }
        if foreign.is_empty() {
            break;
        }
        if last_complaint.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
            last_complaint = Some(tokio::time::Instant::now());
            tracing::error!(?foreign, ours = %cluster_id,
                "not initializing the cluster: listed peers belong to another cluster; check --initial-cluster \
                 and --cluster-name on every replica");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    if stop.is_cancelled() {
        return;
    }
    match replica.raft().initialize(members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialized a new cluster")
        }
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => {
            tracing::info!("already initialized by a peer")
        }
        Err(e) => tracing::error!(error = %e, "initializing the cluster failed"),
    }
}
