//! `serve` as a pod of a Kubernetes StatefulSet (or any host named `NAME-ORDINAL`): the
//! replica works out its id, its URL, the initial cluster and whether to bootstrap or
//! join from its host name, so a manifest needs no wrapper script (and a `FROM scratch`
//! image has no shell to run one).
//!
//! The conventions, all derived from the pod's name `NAME-ORDINAL`:
//! - the replica id is `ORDINAL + 1` (ordinals start at 0, replica ids at 1);
//! - the URL of the replica with ordinal `k` is `--peer-url-template` with `{hostname}`
//!   (`NAME-k`), `{statefulset}` (`NAME`), `{ordinal}` (`k`), `{id}` (`k + 1`) and
//!   `{namespace}` filled in; this pod advertises its own;
//! - the initial cluster is ordinals `0..N` for `--initial-cluster-size N`.
//!
//! The decision that matters is what a pod with an **empty data dir** does, made here
//! before Raft starts ([`settle`]). A replica that lost its disk has also forgotten its
//! vote and the entries it acknowledged; if it came back as the same voter, its vote could
//! elect a candidate that lacks an acknowledged entry, and that generation would be lost.
//! A StatefulSet brings a pod back on an empty volume by itself (PVC lost or deleted), so
//! the pod must tell "the cluster does not exist yet" from "the cluster runs without me".
//! While it decides, it keeps a *waiting room* on its port: `/status` answers (so a
//! startup probe passes), `/v1/cluster` says "fresh, no log", everything else is 503.
//! - Data dir present: a restart; the replica rejoins with what it has.
//! - Empty, ordinal `< N`: the pod waits until it has seen **every** other initial member
//!   fresh (no log: in its own waiting room, or serving but not yet initialized) and
//!   deriving the same cluster id (same name, same initial size: a peer started with
//!   another `--initial-cluster-size`, during a rollout, would otherwise form a second
//!   cluster beside this one). It keeps its room open until every other member has seen
//!   it there too (each room lists the peers it has seen), for at most a minute, and then
//!   bootstraps (the server initializes; all members doing so with the same list is
//!   safe). A member that found the others and left before they found it (their DNS
//!   lookups of a new pod fail for a while) would otherwise leave them waiting for a
//!   fresh peer that no longer is, for good. Having seen
//!   every member without a log, it knows no member held data, so it cannot be a member
//!   that lost some, even if the others form the cluster before it starts Raft. Like
//!   Consul's and rqlite's `bootstrap-expect`, a new cluster forms only once all its
//!   initial members are up. Pods past the initial members are asked as well, over
//!   [`BOOTSTRAP_QUIET`] and until the bootstrap: one of them running a cluster means
//!   the initial members all lost their disks, and they join it instead.
//! - Empty, and a peer answers with a running cluster (a leader, or log entries) before
//!   that: the pod joins it, as a learner that catches up before it votes. If the cluster
//!   still lists this id, the pod lost its data (or was scaled away without `cluster
//!   remove`): it does **not** start Raft; it asks the cluster to remove it (refused if
//!   the remaining voters could not form a quorum) and then joins: the runbook "remove,
//!   wipe, join", done by the pod itself (see [`crate::bootstrap`]).
//! - Empty, ordinal `>= N` (or `--join` given): join as above; it never bootstraps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use controller_raft::Member;
use controller_storage::{Bootstrap, DataDir};

use crate::api::types::{ClusterStatus, ErrorBody, StatusResponse};
use crate::bootstrap::{is_fresh, is_running, probe};
use crate::credentials::{CaFile, Reloader};
use crate::server::{derive_cluster_id, start_listener, PortHolder, ServeConfig};

/// The flags that place a replica in a StatefulSet.
#[derive(Debug, Clone, Args)]
pub struct StatefulSetArgs {
    /// Take the replica id from the host name `NAME-ORDINAL` (a StatefulSet pod's name,
    /// read from $HOSTNAME or the kernel): id = ORDINAL + 1. Replaces --id.
    #[arg(long, conflicts_with = "id")]
    pub id_from_hostname: bool,

    /// With --id-from-hostname: the URL of the replica with ordinal k, e.g.
    /// `http://{hostname}.pageserver-controller-peers.{namespace}.svc:7001`. Placeholders:
    /// {hostname} (NAME-k), {statefulset} (NAME), {ordinal} (k), {id} (k+1), {namespace}
    /// (--namespace). Derives --advertise-url and, with --initial-cluster-size, the
    /// initial cluster; a pod with an empty data dir bootstraps or joins by itself.
    #[arg(
        long,
        value_name = "TEMPLATE",
        requires = "id_from_hostname",
        requires = "initial_cluster_size",
        conflicts_with = "initial_cluster"
    )]
    pub peer_url_template: Option<String>,

    /// With --peer-url-template: how many replicas the cluster was first created with
    /// (ordinals 0 to N-1 are the initial members). A pod with a higher ordinal joins the
    /// running cluster. Keep it at the first size when scaling; it only matters to pods
    /// with an empty data dir.
    #[arg(long, value_name = "N", requires = "peer_url_template")]
    pub initial_cluster_size: Option<u32>,

    /// The namespace for {namespace} in --peer-url-template (Kubernetes: set
    /// POD_NAMESPACE from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

/// A pod's place in its StatefulSet, from its host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub statefulset: String,
    pub ordinal: u32,
    pub namespace: Option<String>,
}

impl Pod {
    /// Parses `NAME-ORDINAL` (a domain after the first dot is ignored).
    pub fn from_hostname(hostname: &str, namespace: Option<String>) -> anyhow::Result<Pod> {
        let short = hostname.trim().split('.').next().unwrap_or_default();
        let (name, ordinal) = short.rsplit_once('-').with_context(|| {
            format!("host name {hostname:?} is not NAME-ORDINAL (a StatefulSet pod's name)")
        })?;
        let label_like = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !label_like {
            bail!("host name {hostname:?}: {name:?} is not a StatefulSet name (letters, digits and '-')");
        }
        let canonical = !ordinal.is_empty()
            && ordinal.bytes().all(|b| b.is_ascii_digit())
            && (ordinal == "0" || !ordinal.starts_with('0'));
        if !canonical {
            bail!(
                "host name {hostname:?} does not end in -ORDINAL (a number without leading zeros)"
            );
        }
        let ordinal: u32 = ordinal
            .parse()
            .with_context(|| format!("the ordinal of host name {hostname:?} is too large"))?;
        Ok(Pod {
            statefulset: name.to_owned(),
            ordinal,
            namespace,
        })
    }

    /// The replica id of the pod with `ordinal`.
    pub fn id_of(ordinal: u32) -> u64 {
        u64::from(ordinal) + 1
    }

    pub fn id(&self) -> u64 {
        Self::id_of(self.ordinal)
    }

    pub fn hostname_of(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.statefulset)
    }
}

/// Renders `template` for the pod with `ordinal` in `pod`'s StatefulSet.
pub fn render_url(template: &str, pod: &Pod, ordinal: u32) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .with_context(|| format!("--peer-url-template {template:?}: a '{{' is not closed"))?;
        let value = match &after[..close] {
            "hostname" => pod.hostname_of(ordinal),
            "statefulset" => pod.statefulset.clone(),
            "ordinal" => ordinal.to_string(),
            "id" => Pod::id_of(ordinal).to_string(),
            "namespace" => pod.namespace.clone().filter(|ns| !ns.is_empty()).with_context(|| {
                format!(
                    "--peer-url-template {template:?} uses {{namespace}}: pass --namespace or set POD_NAMESPACE"
                )
            })?,
            other => bail!(
                "--peer-url-template {template:?}: unknown placeholder {{{other}}} (known: hostname, \
                 statefulset, ordinal, id, namespace)"
            ),
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let member = Member::parse(&out)
        .map_err(|e| anyhow::anyhow!("--peer-url-template {template:?} gives {e}"))?;
    Ok(member.url)
}

/// Everything derived from the host name and the StatefulSet flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pod: Pod,
    /// `Some` with --peer-url-template.
    pub template: Option<String>,
    pub initial_size: Option<u32>,
}

impl Placement {
    /// Checks the template once for two ordinals, so a template that names the same URL
    /// for every pod is refused at start rather than found out as a split cluster.
    pub fn new(
        pod: Pod,
        template: Option<String>,
        initial_size: Option<u32>,
    ) -> anyhow::Result<Placement> {
        if let Some(template) = &template {
            if render_url(template, &pod, 0)? == render_url(template, &pod, 1)? {
                bail!(
                    "--peer-url-template {template:?} gives every pod the same URL: use {{hostname}}, \
                     {{ordinal}} or {{id}}"
                );
            }
        }
        if initial_size == Some(0) {
            bail!("--initial-cluster-size must be at least 1");
        }
        Ok(Placement {
            pod,
            template,
            initial_size,
        })
    }

    pub fn id(&self) -> u64 {
        self.pod.id()
    }

    pub fn url_of(&self, ordinal: u32) -> anyhow::Result<Option<String>> {
        self.template
            .as_deref()
            .map(|template| render_url(template, &self.pod, ordinal))
            .transpose()
    }

    /// This pod's URL, from the template.
    pub fn advertise_url(&self) -> anyhow::Result<Option<String>> {
        self.url_of(self.pod.ordinal)
    }

    /// Whether this pod is one of the members the cluster was first created with.
    pub fn is_initial_member(&self) -> bool {
        self.initial_size.is_some_and(|n| self.pod.ordinal < n)
    }

    /// Ids and URLs of the initial members (ordinals `0..N`).
    pub fn initial_cluster(&self) -> anyhow::Result<BTreeMap<u64, Member>> {
        let (Some(_), Some(size)) = (&self.template, self.initial_size) else {
            return Ok(BTreeMap::new());
        };
        let mut members = BTreeMap::new();
        for ordinal in 0..size {
            let url = self.url_of(ordinal)?.expect("a template is set");
            members.insert(Pod::id_of(ordinal), Member::new(url));
        }
        Ok(members)
    }

    /// The pods after the initial members that an initial member with an empty data dir
    /// also asks (ordinals `N..N + LATER_PODS_ASKED`): pods that do not exist cost a
    /// failed name lookup each. Ordinals the template gives no URL for (a port past
    /// 65535) are left out.
    pub fn later_pods(&self) -> Vec<String> {
        let (Some(_), Some(size)) = (&self.template, self.initial_size) else {
            return Vec::new();
        };
        (size..size.saturating_add(LATER_PODS_ASKED))
            .filter(|ordinal| *ordinal != self.pod.ordinal)
            .filter_map(|ordinal| self.url_of(ordinal).ok().flatten())
            .collect()
    }

    /// The initial members other than this pod: where a pod looks for a running cluster.
    pub fn peers(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .initial_cluster()?
            .into_iter()
            .filter(|(id, _)| *id != self.id())
            .map(|(_, member)| member.url)
            .collect())
    }
}

impl StatefulSetArgs {
    /// `None` without --id-from-hostname.
    pub fn placement(&self) -> anyhow::Result<Option<Placement>> {
        if !self.id_from_hostname {
            return Ok(None);
        }
        let hostname = hostname()?;
        let pod = Pod::from_hostname(&hostname, self.namespace.clone())?;
        Placement::new(
            pod,
            self.peer_url_template.clone(),
            self.initial_cluster_size,
        )
        .map(Some)
    }
}

/// The host name: $HOSTNAME (Kubernetes and Docker set it to the pod's or container's
/// host name), else the kernel's.
fn hostname() -> anyhow::Result<String> {
    if let Some(name) = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return Ok(name.trim().to_owned());
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the host name");
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    if name.is_empty() {
        bail!("the host name is empty; --id-from-hostname needs NAME-ORDINAL");
    }
    Ok(name)
}

/// How many pods past the initial members an initial member with an empty data dir asks
/// before it bootstraps. A cluster scaled up since it was created runs on them when its
/// initial members have all lost their disks (for an initial size of 1, the only one):
/// bootstrapping then would start a second cluster under the same id, handing out
/// generations the first already gave.
pub const LATER_PODS_ASKED: u32 = 16;

/// How long an initial member that found no running cluster keeps asking before it
/// bootstraps, when pods past the initial members are asked: every initial member lost
/// its disk while the cluster runs on later pods that are restarting (one poll that
/// found none of them answering is not enough to start a second cluster under the same
/// id). Until it bootstraps, it also switches to joining the moment one answers.
pub const BOOTSTRAP_QUIET: Duration = Duration::from_secs(10);

/// How a pod with an empty data dir comes to life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshStart {
    /// Initialize the cluster with the initial members.
    Bootstrap,
    /// Join the running cluster through this URL.
    Join { via: String },
    /// The running cluster still lists this id, which lost its data: leave, then join.
    Rejoin { via: String },
}

/// The decision for an empty data dir, given every answer so far: `None` while the pod
/// must keep looking (see the module docs). `seen_fresh` accumulates the peers seen
/// without a log and deriving `cluster_id`; `may_bootstrap` is false for pods that can
/// only join.
pub fn decide_fresh_start(
    placement: &Placement,
    peers: &[String],
    may_bootstrap: bool,
    cluster_id: &str,
    seen_fresh: &mut BTreeSet<String>,
    answers: &[(String, ClusterStatus)],
) -> Option<FreshStart> {
    for (url, status) in answers {
        if is_fresh(status) && status.cluster_id == cluster_id && peers.contains(url) {
            seen_fresh.insert(url.clone());
        }
    }
    // A pod past the initial members runs only in a cluster that exists already: with
    // no initial member running it, the initial members lost their data and must join
    // it, never bootstrap another. (While a new cluster forms, an initial member runs
    // before any later pod can join it.)
    let initial_running = answers
        .iter()
        .any(|(url, status)| peers.contains(url) && is_running(status));
    let later_running = answers
        .iter()
        .find(|(url, status)| !peers.contains(url) && is_running(status));
    let (via, status) = match later_running {
        Some(later) if !initial_running => later,
        _ => {
            if may_bootstrap && peers.iter().all(|peer| seen_fresh.contains(peer)) {
                return Some(FreshStart::Bootstrap);
            }
            answers.iter().find(|(_, status)| is_running(status))?
        }
    };
    let via = via.clone();
    if status.members.iter().any(|m| m.id == placement.id()) {
        Some(FreshStart::Rejoin { via })
    } else {
        Some(FreshStart::Join { via })
    }
}

/// Fresh peers whose cluster id is not `cluster_id`, named with theirs: started with
/// another `--initial-cluster-size` or `--cluster-name`, they never count as seen.
fn foreign_fresh(answers: &[(String, ClusterStatus)], cluster_id: &str) -> Vec<String> {
    answers
        .iter()
        .filter(|(_, status)| is_fresh(status) && status.cluster_id != cluster_id)
        .map(|(url, status)| format!("{url} (cluster id {})", status.cluster_id))
        .collect()
}

/// Notes in `seen_by` the peers that have seen this pod (at `own_url`) fresh: their
/// room lists it, or they have left their room (a peer bootstraps only once it has seen
/// every member fresh, and a running one no longer waits for this pod).
pub fn note_seen_by(
    own_url: &str,
    seen_by: &mut BTreeSet<String>,
    answers: &[(String, ClusterStatus)],
) {
    for (url, status) in answers {
        if !is_fresh(status) || status.seen_fresh.iter().any(|seen| seen == own_url) {
            seen_by.insert(url.clone());
        }
    }
}

/// The longest a pod that decided to bootstrap keeps its waiting room open for the other
/// initial members (polling every half second) to see it fresh too: long enough for a
/// cluster DNS to stop answering that the new pod's name does not exist (CoreDNS caches
/// that for up to 30 s), and no longer, should a member have vanished meanwhile (two of
/// three still form the cluster).
const LINGER_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

/// Before Raft starts: for a pod placed by [`Placement`] with a template, sets
/// `config.initial_cluster` and `config.join` to what the data dir and the peers call
/// for. Waits, without a deadline, until it can decide safely: a pod that cannot must
/// not start Raft. Returns the waiting room, if one was opened, still answering: the
/// replica frees the port only when it binds it, since joining (asking the cluster,
/// leaving it first after a lost disk) may take minutes, and a liveness probe that
/// found the port dead that long would restart the pod in the middle of it.
pub async fn settle(
    config: &mut ServeConfig,
    placement: &Placement,
) -> anyhow::Result<Option<PortHolder>> {
    if placement.template.is_none() {
        return Ok(None);
    }
    let explicit_join = config.join.clone();
    let peers = match &explicit_join {
        Some(url) => vec![
            Member::parse(url)
                .map_err(|e| anyhow::anyhow!("--join: {e}"))?
                .url,
        ],
        None => placement.peers()?,
    };
    let existing = DataDir::peek(&config.data_dir)
        .with_context(|| format!("reading data dir {}", config.data_dir.display()))?;
    if let Some(identity) = existing {
        // A restart: the data dir decides. The flags only matter if the replica stopped
        // before it was initialized or added.
        match identity.bootstrap {
            Bootstrap::InitialMember => config.join = None,
            Bootstrap::Joined => {
                config.initial_cluster.clear();
                config.join = peers.first().cloned();
            }
            Bootstrap::Seeded => {
                config.initial_cluster.clear();
                config.join = None;
            }
        }
        tracing::info!(bootstrap = ?identity.bootstrap, "data dir present: restarting with it");
        return Ok(None);
    }
    let may_bootstrap = explicit_join.is_none() && placement.is_initial_member();
    if peers.is_empty() && !may_bootstrap {
        bail!("no peer to join: --initial-cluster-size lists no other replica");
    }
    let later = if may_bootstrap {
        placement.later_pods()
    } else {
        Vec::new()
    };
    let asked: Vec<String> = peers.iter().chain(&later).cloned().collect();

    let (http, ca) = config.security.peer_http()?;
    let cluster_id = derive_cluster_id(&config.cluster_name, &placement.initial_cluster()?);
    let room = WaitingRoom::open(config, cluster_id.clone(), ca).await?;
    let started = Instant::now();
    let mut seen_fresh = BTreeSet::new();
    let mut last_report = None::<Instant>;
    let ask = || async {
        probe(
            &asked,
            &config.cluster_name,
            &http.get(),
            config.security.peer_token_now(),
        )
        .await
    };
    let decide = |seen_fresh: &mut BTreeSet<String>, answers: &[(String, ClusterStatus)]| {
        decide_fresh_start(
            placement,
            &peers,
            may_bootstrap,
            &cluster_id,
            seen_fresh,
            answers,
        )
    };
    // Since when every poll has called for a bootstrap (see [`BOOTSTRAP_QUIET`]).
    let mut bootstrap_since = None::<Instant>;
    let mut start = loop {
        let answers = ask().await?;
        let due = |every: Duration| last_report.is_none_or(|at: Instant| at.elapsed() >= every);
        let decided = decide(&mut seen_fresh, &answers);
        room.saw(&seen_fresh);
        match decided {
            Some(FreshStart::Bootstrap)
                if !later.is_empty()
                    && bootstrap_since
                        .get_or_insert_with(|| {
                            tracing::info!(quiet = ?BOOTSTRAP_QUIET,
                                "no running cluster found: bootstrapping unless a later pod answers running one meanwhile");
                            Instant::now()
                        })
                        .elapsed()
                        < BOOTSTRAP_QUIET => {}
            Some(decided) => break decided,
            None => {
                bootstrap_since = None;
                if due(Duration::from_secs(10)) {
                    last_report = Some(Instant::now());
                    let missing: Vec<&String> =
                        peers.iter().filter(|p| !seen_fresh.contains(*p)).collect();
                    let foreign = foreign_fresh(&answers, &cluster_id);
                    if foreign.is_empty() {
                        tracing::info!(waited = ?started.elapsed(), not_seen_yet = ?missing,
                            "empty data dir: waiting to see every initial member before bootstrapping, \
                             or a running cluster to join");
                    } else {
                        tracing::warn!(waited = ?started.elapsed(), not_seen_yet = ?missing, ?foreign, ours = %cluster_id,
                            "empty data dir: peers without a log derive another cluster id (another \
                             --initial-cluster-size or --cluster-name, as during a rollout of a changed \
                             manifest): not bootstrapping with them, which would form a second cluster; \
                             give every initial member the same flags");
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    };
    if let FreshStart::Bootstrap = start {
        tracing::info!(waited = ?started.elapsed(),
            "every initial member is up without a log: bootstrapping a new cluster once each has seen this one");
        let own_url = placement.advertise_url()?.unwrap_or_default();
        let lingered = Instant::now();
        let mut seen_by = BTreeSet::new();
        loop {
            let answers = ask().await?;
            // A later pod that answers now runs the cluster after all: join it.
            if let Some(join) =
                decide(&mut seen_fresh, &answers).filter(|d| *d != FreshStart::Bootstrap)
            {
                tracing::warn!(decided = ?join, "a running cluster answered before this pod bootstrapped: not bootstrapping");
                start = join;
                break;
            }
            note_seen_by(&own_url, &mut seen_by, &answers);
            let missing: Vec<&String> = peers.iter().filter(|p| !seen_by.contains(*p)).collect();
            if missing.is_empty() {
                break;
            }
            if lingered.elapsed() >= LINGER_MAX {
                tracing::warn!(not_seen_by = ?missing,
                    "bootstrapping although these initial members have not seen this one yet: they \
                     may wait for it until restarted with an empty data dir, unless the others form \
                     the cluster without them");
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    match start {
        FreshStart::Bootstrap => config.join = None,
        FreshStart::Join { via } => {
            tracing::info!(%via, "empty data dir: joining the running cluster");
            config.initial_cluster.clear();
            config.join = Some(via);
        }
        FreshStart::Rejoin { via } => {
            crate::bootstrap::leave_to_rejoin(
                &via,
                placement.id(),
                &http.get(),
                config.security.peer_token_now(),
            )
            .await?;
            tracing::info!(%via, "removed from the running cluster: joining it again");
            config.initial_cluster.clear();
            config.join = Some(via);
        }
    }
    Ok(Some(Box::pin(room.close())))
}

/// What a pod with an empty data dir serves on its port while it decides: enough for
/// its peers to see it fresh and for a startup probe to pass, nothing else. It may wait
/// for hours (a peer's volume cannot be attached), so its credentials are reloaded as a
/// serving replica's are: its certificate, the keys and peer token, and the CA (of
/// `ca`, the probes' client).
struct WaitingRoom {
    /// The peers seen fresh so far, listed in the room's `/v1/cluster` answer.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Stops the reloader, which hands SIGHUP over to the replica's.
    reloading: tokio_util::sync::CancellationToken,
    reloader: Option<tokio::task::JoinHandle<()>>,
}

impl WaitingRoom {
    async fn open(
        config: &ServeConfig,
        cluster_id: String,
        ca: Option<CaFile>,
    ) -> anyhow::Result<WaitingRoom> {
        use axum::http::StatusCode;
        use axum::routing::get;
        use axum::Json;

        let id = config.id;
        let fresh = ClusterStatus {
            cluster_name: config.cluster_name.clone(),
            cluster_id,
            replica_id: id,
            state: "starting".into(),
            leader: None,
            term: 0,
            members: Vec::new(),
            last_log_index: None,
            last_log_term: None,
            committed_index: None,
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: None,
            joint: false,
            removed: None,
            seen_fresh: Vec::new(),
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/status",
                get(move || async move { Json(StatusResponse { replica_id: id }) }),
            )
            .route(
                "/v1/cluster",
                get({
                    let seen = seen.clone();
                    move || async move {
                        let mut status = fresh;
                        status.seen_fresh = seen.lock().expect("seen lock").clone();
                        Json(status)
                    }
                }),
            )
            // The same rules as the replica it becomes: `/status` open, `/v1/cluster`
            // (the cluster's id and the peers it saw) for peers and admins.
            .route_layer(axum::middleware::from_fn_with_state(
                config.security.keys.clone(),
                crate::api::auth::authorize,
            ))
            .fallback(move || async move {
                let msg = format!(
                    "replica {id} is starting with an empty data dir: deciding whether to bootstrap or join"
                );
                (StatusCode::SERVICE_UNAVAILABLE, Json(ErrorBody { msg }))
            });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let security = &config.security;
        let reloader = Reloader::new(
            security.keys.clone(),
            security.peer_token.clone(),
            security.tls_files().await?,
            ca,
            None,
            security.hangups.clone(),
        );
        let handle = axum_server::Handle::new();
        let task = start_listener(
            listener.into_std()?,
            app,
            reloader.tls_config(),
            handle.clone(),
        )
        .await?;
        let reloading = tokio_util::sync::CancellationToken::new();
        let reloader = tokio::spawn(reloader.run(security.reload_every, reloading.clone()));
        Ok(WaitingRoom {
            seen,
            handle,
            task: Some(task),
            reloading,
            reloader: Some(reloader),
        })
    }

    /// Publishes the peers seen fresh so far.
    fn saw(&self, seen_fresh: &BTreeSet<String>) {
        *self.seen.lock().expect("seen lock") = seen_fresh.iter().cloned().collect();
    }

    /// Stops serving and frees the port for the replica.
    async fn close(mut self) {
        self.handle.shutdown();
        self.reloading.cancel();
        if let Some(reloader) = self.reloader.take() {
            if let Err(e) = reloader.await {
                tracing::warn!(error = %e, "the waiting room's credential reloader failed");
            }
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the waiting room stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "the waiting room task failed"),
            }
        }
    }
}

impl Drop for WaitingRoom {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.reloading.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ClusterMember;

    fn pod(hostname: &str) -> Pod {
        Pod::from_hostname(hostname, Some("prod".into())).unwrap()
    }

    const TEMPLATE: &str = "http://{hostname}.psc-peers.{namespace}.svc.cluster.local:7001";

    fn placement(hostname: &str, size: u32) -> Placement {
        Placement::new(pod(hostname), Some(TEMPLATE.into()), Some(size)).unwrap()
    }

    #[test]
    fn ordinal_and_name_come_from_the_hostname() {
        let p = pod("psc-0");
        assert_eq!((p.statefulset.as_str(), p.ordinal, p.id()), ("psc", 0, 1));
        let p = pod("pageserver-controller-12.psc-peers.prod.svc.cluster.local");
        assert_eq!(p.statefulset, "pageserver-controller");
        assert_eq!((p.ordinal, p.id()), (12, 13));
        for bad in [
            "psc",
            "psc-",
            "-1",
            "psc-01",
            "psc-x",
            "psc--1",
            "psc-1a",
            "",
            "psc-99999999999",
        ] {
            assert!(
                Pod::from_hostname(bad, None).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn urls_are_rendered_from_the_template() {
        let p = pod("psc-1");
        assert_eq!(
            render_url(TEMPLATE, &p, 2).unwrap(),
            "http://psc-2.psc-peers.prod.svc.cluster.local:7001"
        );
        assert_eq!(
            render_url("https://{statefulset}-{ordinal}.x:{id}0/", &p, 0).unwrap(),
            "https://psc-0.x:10"
        );
        let no_ns = Pod::from_hostname("psc-1", None).unwrap();
        let err = render_url(TEMPLATE, &no_ns, 0).unwrap_err().to_string();
        assert!(err.contains("POD_NAMESPACE"), "{err}");
        for bad in [
            "http://{host}:7001",
            "http://{hostname:7001",
            "{hostname}:7001",
            "http://{hostname}/x",
        ] {
            assert!(render_url(bad, &p, 0).is_err(), "{bad:?} was accepted");
        }
        let same = Placement::new(p, Some("http://psc:7001".into()), Some(3));
        assert!(same.unwrap_err().to_string().contains("same URL"));
    }

    #[test]
    fn initial_cluster_is_ordinals_below_the_initial_size() {
        let p = placement("psc-1", 3);
        assert_eq!(p.id(), 2);
        assert!(p.is_initial_member());
        assert_eq!(
            p.advertise_url().unwrap().unwrap(),
            "http://psc-1.psc-peers.prod.svc.cluster.local:7001"
        );
        let members = p.initial_cluster().unwrap();
        assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(
            members[&3].url,
            "http://psc-2.psc-peers.prod.svc.cluster.local:7001"
        );
        assert_eq!(
            p.peers().unwrap(),
            vec![
                "http://psc-0.psc-peers.prod.svc.cluster.local:7001".to_owned(),
                "http://psc-2.psc-peers.prod.svc.cluster.local:7001".to_owned(),
            ]
        );
        let beyond = placement("psc-3", 3);
        assert!(!beyond.is_initial_member());
        assert_eq!(beyond.id(), 4);
        assert_eq!(beyond.peers().unwrap().len(), 3);
        assert!(Placement::new(pod("psc-0"), Some(TEMPLATE.into()), Some(0)).is_err());
    }

    fn status(leader: Option<u64>, term: u64, last: Option<u64>, members: &[u64]) -> ClusterStatus {
        ClusterStatus {
            cluster_name: "pageserver-controller".into(),
            cluster_id: "c".into(),
            replica_id: 1,
            state: "follower".into(),
            leader,
            term,
            members: members
                .iter()
                .map(|id| ClusterMember {
                    id: *id,
                    url: format!("http://psc-{}:7001", id - 1),
                    role: "voter".into(),
                    matched_index: None,
                })
                .collect(),
            last_log_index: last,
            last_log_term: None,
            committed_index: None,
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: None,
            joint: false,
            removed: None,
            seen_fresh: Vec::new(),
        }
    }

    const P0: &str = "http://psc-0:7001";
    const P1: &str = "http://psc-1:7001";

    fn answers(list: &[(&str, ClusterStatus)]) -> Vec<(String, ClusterStatus)> {
        list.iter()
            .map(|(u, s)| (u.to_string(), s.clone()))
            .collect()
    }

    #[test]
    fn a_fresh_initial_member_bootstraps_once_it_saw_every_member_fresh() {
        let p = placement("psc-2", 3);
        let peers = [P0.to_owned(), P1.to_owned()];
        let mut seen = BTreeSet::new();
        let decide = |seen: &mut BTreeSet<String>, got: &[(&str, ClusterStatus)]| {
            decide_fresh_start(&p, &peers, true, "c", seen, &answers(got))
        };
        // Nobody answers: keep waiting, however long.
        assert_eq!(decide(&mut seen, &[]), None);
        // One peer in its waiting room: not yet.
        let room = status(None, 0, None, &[]);
        assert_eq!(decide(&mut seen, &[(P0, room.clone())]), None);
        // A peer that initialized and campaigns holds a log entry: neither fresh nor a
        // running cluster (it needs this pod's vote); keep waiting.
        let campaigning = status(None, 2, Some(0), &[1, 2, 3]);
        assert_eq!(decide(&mut seen, &[(P1, campaigning.clone())]), None);
        // The other one seen fresh later (not at the same time): bootstrap, and stay
        // with it even when the others have meanwhile formed the cluster.
        assert_eq!(
            decide(&mut seen, &[(P1, room)]),
            Some(FreshStart::Bootstrap)
        );
        let formed = status(Some(1), 1, Some(1), &[1, 2, 3]);
        assert_eq!(
            decide(&mut seen, &[(P0, formed)]),
            Some(FreshStart::Bootstrap)
        );
    }

    /// A pod started with another `--initial-cluster-size` (a rollout of a changed
    /// manifest while the cluster first forms) derives another cluster id: counting it as
    /// seen would let each group bootstrap a cluster of its own.
    #[test]
    fn a_fresh_peer_of_another_cluster_id_is_never_counted_as_seen() {
        let p = placement("psc-2", 3);
        let peers = [P0.to_owned(), P1.to_owned()];
        let mut seen = BTreeSet::new();
        let room = status(None, 0, None, &[]);
        let mut other = room.clone();
        other.cluster_id = "other".into();
        let got = answers(&[(P0, room), (P1, other)]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen, &got),
            None
        );
        assert_eq!(seen, BTreeSet::from([P0.to_owned()]));
        assert_eq!(
            foreign_fresh(&got, "c"),
            vec![format!("{P1} (cluster id other)")]
        );
    }

    /// A pod that decided to bootstrap waits until each peer has seen it: listed in the
    /// peer's room, or the peer has left its room.
    #[test]
    fn a_peer_has_seen_this_pod_once_its_room_lists_it_or_it_left_its_room() {
        const ME: &str = "http://psc-2:7001";
        let mut seen_by = BTreeSet::new();
        let mut listing = status(None, 0, None, &[]);
        listing.seen_fresh = vec![P1.to_owned()];
        note_seen_by(ME, &mut seen_by, &answers(&[(P0, listing.clone())]));
        assert!(seen_by.is_empty(), "P0's room does not list this pod yet");
        listing.seen_fresh.push(ME.to_owned());
        note_seen_by(ME, &mut seen_by, &answers(&[(P0, listing)]));
        let campaigning = status(None, 2, Some(0), &[1, 2, 3]);
        note_seen_by(ME, &mut seen_by, &answers(&[(P1, campaigning)]));
        assert_eq!(seen_by, BTreeSet::from([P0.to_owned(), P1.to_owned()]));
    }

    #[test]
    fn a_fresh_pod_that_a_running_cluster_lists_waits_for_its_removal() {
        let p = placement("psc-2", 3);
        let peers = [P0.to_owned(), P1.to_owned()];
        let mut seen = BTreeSet::new();
        // One peer fresh (it lost its disk too, say), the other leads a cluster that
        // lists this id: this pod lost its data; it must not bootstrap or vote.
        let got = answers(&[
            (P0, status(None, 0, None, &[])),
            (P1, status(Some(2), 4, Some(20), &[1, 2, 3])),
        ]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen, &got),
            Some(FreshStart::Rejoin { via: P1.into() })
        );
        // A leaderless cluster with a log (peers restarting) counts as running.
        let got = answers(&[(P0, status(None, 3, Some(9), &[1, 2, 3]))]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen, &got),
            Some(FreshStart::Rejoin { via: P0.into() })
        );
        // Once an operator removed it, it joins.
        let got = answers(&[(P1, status(Some(2), 4, Some(22), &[1, 2]))]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen, &got),
            Some(FreshStart::Join { via: P1.into() })
        );
    }

    /// A cluster scaled up since it formed runs on its later pods once its initial
    /// members have all lost their disks: they rejoin it rather than bootstrap a second
    /// cluster under the same id (which would hand out its generations again).
    #[test]
    fn initial_members_that_all_lost_their_data_rejoin_the_later_pods_cluster() {
        const P3: &str = "http://psc-3:7001";
        let p = placement("psc-2", 3);
        let later = p.later_pods();
        assert_eq!(later.len(), LATER_PODS_ASKED as usize);
        assert!(later[0].starts_with("http://psc-3.") && later[1].starts_with("http://psc-4."));
        let peers = [P0.to_owned(), P1.to_owned()];
        let room = status(None, 0, None, &[]);
        let scaled = status(Some(4), 7, Some(90), &[1, 2, 3, 4, 5]);
        let mut seen = BTreeSet::new();
        let got = answers(&[(P0, room.clone()), (P1, room.clone()), (P3, scaled.clone())]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen, &got),
            Some(FreshStart::Rejoin { via: P3.into() })
        );
        // Even after seeing every initial member fresh earlier.
        let fresh = answers(&[(P0, room.clone()), (P1, room.clone())]);
        let mut seen_all = BTreeSet::new();
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen_all, &fresh),
            Some(FreshStart::Bootstrap)
        );
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen_all, &got),
            Some(FreshStart::Rejoin { via: P3.into() })
        );
        // An initial size of 1: no peer at all, and the later pods still run.
        let alone = placement("psc-0", 1);
        assert!(alone.peers().unwrap().is_empty());
        let got = answers(&[(P3, scaled)]);
        assert_eq!(
            decide_fresh_start(&alone, &[], true, "c", &mut BTreeSet::new(), &got),
            Some(FreshStart::Rejoin { via: P3.into() })
        );
        assert_eq!(
            decide_fresh_start(&alone, &[], true, "c", &mut BTreeSet::new(), &[]),
            Some(FreshStart::Bootstrap)
        );
        // While a new cluster forms, an initial member runs first and a later pod joins
        // it: a pod that saw every initial member fresh still bootstraps with them.
        let formed = status(Some(1), 1, Some(3), &[1, 2, 3, 4]);
        let got = answers(&[(P0, formed.clone()), (P3, formed)]);
        assert_eq!(
            decide_fresh_start(&p, &peers, true, "c", &mut seen_all, &got),
            Some(FreshStart::Bootstrap)
        );
    }

    #[test]
    fn a_pod_beyond_the_initial_size_joins_and_never_bootstraps() {
        let p = placement("psc-4", 3);
        assert!(!p.is_initial_member());
        let peers = p.peers().unwrap();
        let mut seen = BTreeSet::new();
        let fresh: Vec<_> = peers
            .iter()
            .map(|u| (u.clone(), status(None, 0, None, &[])))
            .collect();
        assert_eq!(
            decide_fresh_start(&p, &peers, false, "c", &mut seen, &fresh),
            None
        );
        let running = vec![(peers[0].clone(), status(Some(1), 2, Some(5), &[1, 2, 3]))];
        assert_eq!(
            decide_fresh_start(&p, &peers, false, "c", &mut seen, &running),
            Some(FreshStart::Join {
                via: peers[0].clone()
            })
        );
        // Scaled away without `cluster remove`, PVC deleted, scaled back: still listed.
        let listed = vec![(
            peers[1].clone(),
            status(Some(1), 2, Some(5), &[1, 2, 3, 4, 5]),
        )];
        assert_eq!(
            decide_fresh_start(&p, &peers, false, "c", &mut seen, &listed),
            Some(FreshStart::Rejoin {
                via: peers[1].clone()
            })
        );
    }
}
