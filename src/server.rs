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
use controller_raft::timing::Timing;
use controller_raft::transport::{self, HttpNetwork, NoPeerAuth, PeerAuth};
use controller_raft::{Member, PeerIdentity};
use controller_storage::{Bootstrap, DataDir, Identity, FORMAT_VERSION};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::routing::Forwarder;
use crate::api::types::ClusterStatus;
use crate::api::{self, ApiState, Limits};
use crate::consensus::{LogStore, StateMachine};
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
    pub cluster_name: String,
    pub timing: Timing,
    pub deadlines: Deadlines,
    pub leader_wait: Duration,
    pub limits: Limits,
    /// Upper bound of sled's page cache.
    pub cache_bytes: u64,
    /// How long in-flight requests may take to finish at shut-down.
    pub drain: Duration,
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

/// Opens the data dir, creating it for a fresh member of the initial cluster.
fn open_data_dir(config: &ServeConfig) -> anyhow::Result<DataDir> {
    let root = &config.data_dir;
    if DataDir::peek(root)?.is_some() {
        let dir = DataDir::open(root, config.id, Some(&config.cluster_name))?;
        tracing::info!(path = %root.display(), cluster = %dir.identity().cluster_id, "opened existing data dir; --initial-cluster is ignored");
        return Ok(dir);
    }
    if config.initial_cluster.is_empty() {
        bail!(
            "data dir {} is empty: pass --initial-cluster listing every member (including \
             replica {}) to bootstrap a new cluster",
            root.display(),
            config.id
        );
    }
    if !config.initial_cluster.contains_key(&config.id) {
        bail!(
            "--initial-cluster does not list replica {}; a replica can only bootstrap a \
             cluster it is a member of",
            config.id
        );
    }
    let identity = Identity {
        format_version: FORMAT_VERSION,
        cluster_name: config.cluster_name.clone(),
        cluster_id: derive_cluster_id(&config.cluster_name, &config.initial_cluster),
        replica_id: config.id,
        bootstrap: Bootstrap::InitialMember,
    };
    Ok(DataDir::create(root, identity)?)
}

/// One pooled HTTP client for all replica-to-replica traffic.
pub fn peer_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("building the HTTP client")
}

/// Runs a replica until `shutdown` resolves or Raft fails; `Err` if it failed.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = open_data_dir(&config)?;
    let identity = data_dir.identity().clone();
    let log = LogStore::open(&data_dir.log_path(), config.id, config.cache_bytes)?;
    let state_machine = StateMachine::open(&data_dir.snapshot_path())
        .with_context(|| format!("loading the snapshot in {}", data_dir.root().display()))?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let client = peer_client()?;
    let peer_identity = Arc::new(PeerIdentity {
        cluster_id: identity.cluster_id.clone(),
        replica_id: config.id,
    });
    let peer_auth: Arc<dyn PeerAuth> = Arc::new(NoPeerAuth);
    let network = HttpNetwork::new(client.clone(), peer_identity.clone(), peer_auth.clone());
    let replica = Arc::new(
        Replica::start(
            config.id,
            &config.cluster_name,
            &config.timing,
            config.deadlines,
            network,
            log,
            state_machine,
        )
        .await?,
    );
    let api_state = Arc::new(ApiState {
        replica: replica.clone(),
        cluster_id: identity.cluster_id.clone(),
        forwarder: Forwarder {
            client: client.clone(),
            self_id: config.id,
            timeout: config.deadlines.write + Duration::from_secs(3),
        },
        leader_wait: config.leader_wait,
        limits: config.limits,
    });
    let app = api::router(api_state).merge(transport::router(
        replica.raft().clone(),
        peer_identity,
        peer_auth,
    ));
    tracing::info!(
        listen = %config.listen,
        url = %config.advertise_url,
        cluster = %identity.cluster_id,
        "replica {} serving",
        config.id
    );

    let stop = CancellationToken::new();
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    tokio::spawn(watch_for_fatal(
        replica.clone(),
        stop.clone(),
        failure.clone(),
    ));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    if identity.bootstrap == Bootstrap::InitialMember && !replica.raft().is_initialized().await? {
        tokio::spawn(bootstrap(
            replica.clone(),
            client.clone(),
            identity.cluster_id.clone(),
            config.initial_cluster.clone(),
            stop.clone(),
        ));
    }

    let graceful = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let server = tokio::spawn(async move { server.await });
    stop.cancelled().await;
    tracing::info!("shutting down: draining in-flight requests");
    match tokio::time::timeout(config.drain, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => {
            tracing::warn!(drain = ?config.drain, "in-flight requests did not finish in time")
        }
    }
    replica.shutdown().await;
    drop(replica);
    drop(data_dir);
    tracing::info!("replica {} stopped", config.id);
    let failure = failure.lock().expect("failure lock").take();
    match failure {
        Some(reason) => bail!(
            "replica {} stopped after a fatal Raft error: {reason}",
            config.id
        ),
        None => Ok(()),
    }
}

/// Stops the process when Raft hits a fatal error (a storage failure, say): a replica that
/// cannot persist must not keep answering as if it could.
async fn watch_for_fatal(
    replica: Arc<Replica>,
    stop: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    let mut metrics = replica.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            if !stop.is_cancelled() {
                tracing::error!(error = %fatal, "raft stopped with a fatal error; shutting the replica down");
                *failure.lock().expect("failure lock") = Some(fatal.to_string());
                stop.cancel();
            }
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// Forms the initial cluster unless one is already running.
async fn bootstrap(
    replica: Arc<Replica>,
    client: reqwest::Client,
    cluster_id: String,
    members: BTreeMap<u64, Member>,
    stop: CancellationToken,
) {
    for (id, member) in members.iter().filter(|(id, _)| **id != replica.id()) {
        let probe = client
            .get(member.endpoint("/v1/cluster"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        let Ok(response) = probe else { continue };
        let Ok(status) = response.json::<ClusterStatus>().await else {
            continue;
        };
        if status.cluster_id != cluster_id {
            tracing::error!(peer = id, url = %member, theirs = %status.cluster_id, ours = %cluster_id,
                "a listed peer belongs to another cluster: check --initial-cluster and --cluster-name on every replica");
            continue;
        }
        if status.leader.is_some() || status.last_log_index.is_some_and(|i| i > 0) {
            tracing::info!(peer = id, leader = ?status.leader, "the cluster is already running; waiting to be replicated to");
            return;
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
