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
//! vote and the entries it acknowledged; if it came back as the same voter, it could vote
//! a stale candidate into office and an acknowledged generation would be lost. A pod in
//! a StatefulSet comes back on an empty volume by itself (PVC lost, deleted, or never
//! bound in time), so the pod must tell "the cluster does not exist yet" from "the
//! cluster runs without me":
//! - Data dir present: a restart; the replica rejoins with what it has.
//! - Empty, ordinal `< N`, and no peer answers with a running cluster within
//!   `--bootstrap-probe-secs`: the first start of a new cluster; bootstrap it (the server
//!   probes once more and initializes; several members doing so with the same list is
//!   safe).
//! - Empty, and a running cluster answers (or the ordinal is `>= N`): join it. If the
//!   cluster still lists this id (the pod lost its disk, was late to the first start, or
//!   was scaled away without being removed), the pod first asks the cluster to remove it,
//!   then joins as a learner that catches up before it votes: the runbook "remove, wipe,
//!   join", done by the pod. The removal is refused while the remaining voters could not
//!   form a quorum; the pod then waits, not ready, and says so in its log.
//!
//! What this cannot see: a pod that lost its disk while **every** peer is down longer
//! than the probe window bootstraps as an initial member with an empty log. README's
//! Deploy section tells operators how to avoid that (restart the peers first).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use controller_raft::Member;
use controller_storage::{Bootstrap, DataDir};

use crate::api::types::ClusterStatus;
use crate::client::{Client, ClientError};
use crate::server::ServeConfig;

/// The flags that place a replica in a StatefulSet.
#[derive(Debug, Clone, Args)]
pub struct StatefulSetArgs {
    /// Take the replica id from the host name `NAME-ORDINAL` (a StatefulSet pod's name,
    /// read from $HOSTNAME or the kernel): id = ORDINAL + 1. Replaces --id.
    #[arg(long, conflicts_with = "id")]
    pub id_from_hostname: bool,

    /// With --id-from-hostname: the URL of the replica with ordinal k, e.g.
    /// `http://{hostname}.psc-peers.{namespace}.svc.cluster.local:7001`. Placeholders:
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
    /// (ordinals 0..N are the initial members). A pod with a higher ordinal joins the
    /// running cluster. Keep it at the first size when scaling; it only matters to pods
    /// with an empty data dir.
    #[arg(long, value_name = "N", requires = "peer_url_template")]
    pub initial_cluster_size: Option<u32>,

    /// The namespace for {namespace} in --peer-url-template (Kubernetes: set
    /// POD_NAMESPACE from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// With --peer-url-template: how long an initial member with an empty data dir looks
    /// for a running cluster before it bootstraps a new one (on the first start every
    /// pod waits this long once).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub bootstrap_probe_secs: u64,
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
    pub bootstrap_probe: Duration,
}

impl Placement {
    /// Checks the template once for two ordinals, so a template that names the same URL
    /// for every pod is refused at start rather than found out as a split cluster.
    pub fn new(
        pod: Pod,
        template: Option<String>,
        initial_size: Option<u32>,
        bootstrap_probe: Duration,
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
            bootstrap_probe,
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
            Duration::from_secs(self.bootstrap_probe_secs),
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

/// Whether a peer's answer shows a cluster that has run: it knows a leader, or holds log
/// entries beyond the initial membership entry (index 0), which only an elected leader
/// writes. A fresh replica, or an initial member that initialized and is still
/// campaigning, is not: treating a campaigning peer as a running cluster would make the
/// other fresh members wait for a removal that needs a leader that needs their votes.
/// (The server's own bootstrap probe uses the same rule.)
pub fn is_running(status: &ClusterStatus) -> bool {
    status.leader.is_some() || status.last_log_index.is_some_and(|i| i > 0)
}

/// How a pod with an empty data dir comes to life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshStart {
    /// Initialize the cluster with the initial members.
    Bootstrap,
    /// Join the running cluster through this URL, after asking it to remove this id if
    /// it still lists it.
    Join { via: String, remove_first: bool },
}

/// The decision for an empty data dir, given what the peers answered: `None` while the
/// pod should keep looking (see the module docs).
pub fn decide_fresh_start(
    placement: &Placement,
    answers: &[(String, ClusterStatus)],
    probing_since: Duration,
) -> Option<FreshStart> {
    if let Some((via, status)) = answers.iter().find(|(_, s)| is_running(s)) {
        let listed = status.members.iter().any(|m| m.id == placement.id());
        return Some(FreshStart::Join {
            via: via.clone(),
            remove_first: listed,
        });
    }
    if placement.is_initial_member() && probing_since >= placement.bootstrap_probe {
        return Some(FreshStart::Bootstrap);
    }
    None
}

/// Before Raft starts: for a pod placed by [`Placement`] with a template, sets
/// `config.initial_cluster` and `config.join` to what the data dir and the peers call
/// for, removing this id from the running cluster first when needed. Waits (without a
/// deadline: a pod that cannot decide safely must not start) until it can decide.
pub async fn settle(
    config: &mut ServeConfig,
    placement: &Placement,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    if placement.template.is_none() {
        return Ok(());
    }
    let explicit_join = config.join.clone();
    let peers = match &explicit_join {
        Some(url) => vec![url.clone()],
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
                config.join = explicit_join.or_else(|| peers.first().cloned());
            }
            Bootstrap::Seeded => {
                config.initial_cluster.clear();
                config.join = None;
            }
        }
        tracing::info!(bootstrap = ?identity.bootstrap, "data dir present: restarting with it");
        return Ok(());
    }
    if peers.is_empty() {
        if placement.is_initial_member() {
            tracing::info!("a cluster of one: bootstrapping it");
            config.join = None;
            return Ok(());
        }
        bail!("no peer to join: --initial-cluster-size lists no other replica");
    }

    let started = Instant::now();
    let mut last_report = None::<Instant>;
    let start = loop {
        let answers = probe(&peers, &config.cluster_name, http).await?;
        let elapsed = started.elapsed();
        if let Some(start) = decide_fresh_start(placement, &answers, elapsed) {
            break start;
        }
        if last_report.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(10)) {
            last_report = Some(Instant::now());
            tracing::info!(peers = ?peers, answered = answers.len(), waited = ?elapsed,
                "empty data dir: looking for a running cluster");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    match start {
        FreshStart::Bootstrap => {
            tracing::info!(waited = ?started.elapsed(),
                "empty data dir and no running cluster answered: bootstrapping as an initial member");
            config.join = None;
        }
        FreshStart::Join { via, remove_first } => {
            if remove_first {
                tracing::warn!(%via, id = placement.id(),
                    "empty data dir, but the running cluster lists this replica: it lost its data or \
                     never started. Asking the cluster to remove it, then joining as a new member");
                remove_self(placement.id(), &peers, http).await?;
            }
            tracing::info!(%via, "empty data dir: joining the running cluster");
            config.initial_cluster.clear();
            config.join = Some(via);
        }
    }
    Ok(())
}

/// The answers of the peers that answer, each checked to be of this cluster.
async fn probe(
    peers: &[String],
    cluster_name: &str,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<(String, ClusterStatus)>> {
    let asks = peers.iter().map(|url| async move {
        let client = Client::with_http(url, http.clone()).with_timeout(Duration::from_secs(2));
        (url.clone(), client.cluster_status().await)
    });
    let mut answers = Vec::new();
    for (url, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(status) if status.cluster_name != cluster_name => bail!(
                "peer {url} belongs to cluster {:?}, not {cluster_name:?}: check --cluster-name and \
                 --peer-url-template",
                status.cluster_name
            ),
            Ok(status) => answers.push((url, status)),
            Err(e) => tracing::debug!(%url, error = %e, "peer did not answer"),
        }
    }
    Ok(answers)
}

/// Asks the cluster (through any peer) to remove replica `id`, until it is gone.
async fn remove_self(id: u64, peers: &[String], http: &reqwest::Client) -> anyhow::Result<()> {
    let mut last_report = None::<Instant>;
    for attempt in 0u64.. {
        let via = &peers[(attempt % peers.len() as u64) as usize];
        let client = Client::with_http(via, http.clone()).with_timeout(Duration::from_secs(20));
        let pause = match client.remove_member(id, false).await {
            Ok(_) => {
                tracing::info!(id, %via, "removed from the cluster; joining again");
                return Ok(());
            }
            Err(ClientError::Http { status: 404, .. }) => {
                tracing::info!(id, "not a member (any more)");
                return Ok(());
            }
            Err(e @ ClientError::Http { status: 409, .. }) => {
                if last_report.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(10)) {
                    last_report = Some(Instant::now());
                    tracing::error!(id, error = %e,
                        "the cluster refuses to remove this replica; waiting for more replicas to come back \
                         (see README: Deploy)");
                }
                Duration::from_secs(3)
            }
            Err(e) if e.is_refusal() => {
                return Err(e).with_context(|| format!("removing replica {id} through {via}"))
            }
            Err(e) => {
                tracing::info!(id, %via, error = %e, "removal not done yet; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(pause).await;
    }
    unreachable!("the loop only ends by returning")
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
        Placement::new(
            pod(hostname),
            Some(TEMPLATE.into()),
            Some(size),
            Duration::from_secs(10),
        )
        .unwrap()
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
        let same = Placement::new(p, Some("http://psc:7001".into()), Some(3), Duration::ZERO);
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
        assert!(
            Placement::new(pod("psc-0"), Some(TEMPLATE.into()), Some(0), Duration::ZERO).is_err()
        );
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
            committed_index: None,
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: None,
            joint: false,
        }
    }

    #[test]
    fn a_fresh_initial_member_bootstraps_only_when_no_cluster_runs() {
        let p = placement("psc-2", 3);
        let early = Duration::from_secs(1);
        let late = Duration::from_secs(10);
        // Nobody answers yet: keep looking, then bootstrap.
        assert_eq!(decide_fresh_start(&p, &[], early), None);
        assert_eq!(
            decide_fresh_start(&p, &[], late),
            Some(FreshStart::Bootstrap)
        );
        // A peer that is itself fresh, or initialized and campaigning for the first time,
        // is no running cluster: it needs this pod's vote.
        let fresh = [
            ("http://psc-0:7001".to_owned(), status(None, 0, None, &[])),
            (
                "http://psc-1:7001".to_owned(),
                status(None, 2, Some(0), &[1, 2, 3]),
            ),
        ];
        assert_eq!(decide_fresh_start(&p, &fresh, early), None);
        assert_eq!(
            decide_fresh_start(&p, &fresh, late),
            Some(FreshStart::Bootstrap)
        );
        // A running cluster that lists this id: it lost its disk (or was late); remove
        // it first, whatever the time.
        let running = [
            ("http://psc-0:7001".to_owned(), status(None, 0, None, &[])),
            (
                "http://psc-1:7001".to_owned(),
                status(Some(1), 4, Some(20), &[1, 2, 3]),
            ),
        ];
        assert_eq!(
            decide_fresh_start(&p, &running, early),
            Some(FreshStart::Join {
                via: "http://psc-1:7001".into(),
                remove_first: true
            })
        );
        // A cluster without a leader right now but with a log is running too.
        let leaderless = [(
            "http://psc-0:7001".to_owned(),
            status(None, 3, Some(9), &[1, 2, 3]),
        )];
        assert!(matches!(
            decide_fresh_start(&p, &leaderless, early),
            Some(FreshStart::Join {
                remove_first: true,
                ..
            })
        ));
    }

    #[test]
    fn a_pod_beyond_the_initial_size_joins_and_never_bootstraps() {
        let p = placement("psc-4", 3);
        assert_eq!(decide_fresh_start(&p, &[], Duration::from_secs(3600)), None);
        let running = [(
            "http://psc-0:7001".to_owned(),
            status(Some(1), 2, Some(5), &[1, 2, 3]),
        )];
        assert_eq!(
            decide_fresh_start(&p, &running, Duration::ZERO),
            Some(FreshStart::Join {
                via: "http://psc-0:7001".into(),
                remove_first: false
            })
        );
        // Scaled away without `cluster remove`, PVC deleted, scaled back: still listed.
        let listed = [(
            "http://psc-0:7001".to_owned(),
            status(Some(1), 2, Some(5), &[1, 2, 3, 4, 5]),
        )];
        assert!(matches!(
            decide_fresh_start(&p, &listed, Duration::ZERO),
            Some(FreshStart::Join {
                remove_first: true,
                ..
            })
        ));
    }
}
