//! `serve`: flags to [`ServeConfig`], and the signals that stop a replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use controller_raft::timing::Timing;
use controller_raft::Member;

use super::statefulset::{self, StatefulSetArgs};
use crate::api::Limits;
use crate::replica::Deadlines;
use std::sync::Arc;

use crate::auth::{JwtKeys, PeerToken};
use crate::credentials::Hangups;
use crate::server::{serve, Security, ServeConfig};

/// How long a stopping replica keeps answering requests in flight after it handed
/// leadership away (manifests budget their grace period with it).
pub const DRAIN: Duration = Duration::from_secs(5);
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This replica's id: a positive integer, unique in the cluster, never reused.
    #[arg(long, required_unless_present = "id_from_hostname")]
    pub id: Option<u64>,

    /// Address to listen on for clients and peers, e.g. 127.0.0.1:7001.
    #[arg(long)]
    pub listen: SocketAddr,

    /// URL peers use to reach this replica (default: http://LISTEN, the --listen address).
    #[arg(long)]
    pub advertise_url: Option<String>,

    /// Directory for the Raft log, snapshots and identity. Created on first start.
    #[arg(long)]
    pub data_dir: PathBuf,

    /// Members of a new cluster, as ID=URL pairs separated by commas; give every initial
    /// replica the same list. Ignored when the data dir already exists (a restart rejoins).
    #[arg(long, value_name = "ID=URL,...")]
    pub initial_cluster: Option<String>,

    /// Join the running cluster that the replica at this URL belongs to (fresh data dir
    /// only): the replica asks to be added, catches up, then votes.
    #[arg(long, value_name = "URL", conflicts_with = "initial_cluster")]
    pub join: Option<String>,

    /// With --join: ask to be added as a learner, which receives every entry but never
    /// votes, and stay one (restarts included) until promoted with `cluster add`.
    #[arg(long, requires = "join")]
    pub learner: bool,

    /// Name of the cluster; a data dir of another cluster is refused.
    #[arg(long, default_value = "pageserver-controller")]
    pub cluster_name: String,

    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = Timing::default().heartbeat_ms)]
    pub heartbeat_ms: u64,

    /// Lower bound of the randomized election timeout in milliseconds.
    #[arg(long, default_value_t = Timing::default().election_timeout_min_ms)]
    pub election_timeout_min_ms: u64,

    /// Upper bound of the randomized election timeout in milliseconds.
    #[arg(long, default_value_t = Timing::default().election_timeout_max_ms)]
    pub election_timeout_max_ms: u64,

    /// Take a snapshot (and purge the log behind it) after this many log entries.
    #[arg(long, default_value_t = Timing::default().snapshot_every_entries)]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot for followers that lag a little.
    #[arg(long, default_value_t = Timing::default().keep_entries_behind_snapshot)]
    pub snapshot_keep_entries: u64,

    /// A write not committed within this many milliseconds is answered 503 (outcome
    /// unknown).
    #[arg(long, default_value_t = 5_000)]
    pub write_timeout_ms: u64,

    /// A read (validate, inspect, lists) whose leadership could not be confirmed within
    /// this many milliseconds is answered 503 (nothing changed; safe to retry).
    #[arg(long, default_value_t = Deadlines::default().read.as_millis() as u64)]
    pub read_timeout_ms: u64,

    /// How long a request waits for a leader (during an election) before a 503.
    #[arg(long, default_value_t = 5_000)]
    pub leader_wait_ms: u64,

    /// How long a leader stopping on SIGTERM tries to hand leadership to another voter
    /// before it exits anyway (the others then elect one); keep it within the
    /// supervisor's grace period.
    #[arg(long, default_value_t = 3_000)]
    pub handoff_timeout_ms: u64,

    /// Largest request body in bytes.
    #[arg(long, default_value_t = Limits::default().body_bytes)]
    pub max_body_bytes: usize,

    /// Most tenant shards in one validate call.
    #[arg(long, default_value_t = Limits::default().validate_tenants)]
    pub max_validate_tenants: usize,

    /// Most API requests handled at once; beyond it requests get 503 at once (load
    /// shedding) instead of queueing without bound.
    #[arg(long, default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: usize,

    /// An API request still unanswered after this many milliseconds gets a 503.
    #[arg(long, default_value_t = Limits::default().request_timeout.as_millis() as u64)]
    pub request_timeout_ms: u64,

    /// Upper bound of the storage page cache in MiB.
    #[arg(long, default_value_t = 64)]
    pub cache_mb: u64,

    /// Turns authentication on: Ed25519 public key(s) in PEM, a file or a directory of
    /// files tried in turn. Callers then need a JWT (EdDSA) with the right scope.
    #[arg(long, value_name = "PATH", requires = "peer_token_file")]
    pub auth_public_key: Option<PathBuf>,

    /// File holding this replica's token of scope `controller_peer`, presented to the
    /// other replicas (required with --auth-public-key).
    #[arg(long, value_name = "PATH", requires = "auth_public_key")]
    pub peer_token_file: Option<PathBuf>,

    /// Listen on a non-loopback address without authentication. Anyone who can reach the
    /// port could then hand out generations or delete nodes.
    #[arg(long, conflicts_with = "auth_public_key")]
    pub insecure_no_auth: bool,

    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM; a bundle is trusted whole) that peers' HTTPS certificates
    /// are checked against.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// How often, in milliseconds, the public keys, the peer token, the TLS certificate
    /// and key, and the CA are read again from their files, so that they rotate without
    /// a restart (SIGHUP reloads at once); 0: only on SIGHUP, else at least 100.
    #[arg(long, default_value_t = 10_000, value_parser = parse_reload_interval)]
    pub reload_interval_ms: u64,

    #[command(flatten)]
    pub statefulset: StatefulSetArgs,
}

/// Shortest `--reload-interval-ms`: each reload reads and parses every credential file,
/// and files that change faster than this are not being rotated by an operator.
const MIN_RELOAD_INTERVAL_MS: u64 = 100;

fn parse_reload_interval(value: &str) -> Result<u64, String> {
    let ms: u64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
    if ms != 0 && ms < MIN_RELOAD_INTERVAL_MS {
        return Err(format!(
            "{ms} ms would read the credential files in a busy loop: give 0 (reload on SIGHUP only) or at \
             least {MIN_RELOAD_INTERVAL_MS}"
        ));
    }
    Ok(ms)
}

/// Parses `1=http://a:7001,2=http://b:7001`.
pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<BTreeMap<u64, Member>> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not ID=URL"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster: replica id {id:?} is not an integer"))?;
        if id == 0 {
            bail!("--initial-cluster: replica ids start at 1");
        }
        let url = url.trim();
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("--initial-cluster: {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            bail!("--initial-cluster: {url:?} must be an http:// or https:// URL with a host");
        }
        if members.insert(id, Member::new(url)).is_some() {
            bail!("--initial-cluster lists replica {id} twice");
        }
    }
    if members.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(members)
}

impl ServeArgs {
    /// --id, or the id --id-from-hostname derives.
    pub fn replica_id(&self) -> anyhow::Result<u64> {
        match (self.id, self.statefulset.placement()?) {
            (Some(id), None) => Ok(id),
            (None, Some(placement)) => Ok(placement.id()),
            _ => bail!("pass either --id or --id-from-hostname"),
        }
    }

    pub fn to_config(&self) -> anyhow::Result<ServeConfig> {
        let placement = self.statefulset.placement()?;
        let id = self.replica_id()?;
        if id == 0 {
            bail!("--id must be a positive integer");
        }
        let initial_cluster = match (&self.initial_cluster, &placement) {
            (Some(spec), _) => parse_initial_cluster(spec)?,
            (None, Some(placement)) if placement.is_initial_member() => {
                placement.initial_cluster()?
            }
            (None, _) => BTreeMap::new(),
        };
        // First: a listener open to anyone is refused before anything else is checked.
        let security = self.security()?;
        let derived_url = match &placement {
            Some(placement) => placement.advertise_url()?,
            None => None,
        };
        let advertise_url = match self.advertise_url.clone().or(derived_url) {
            // As the membership stores it (no trailing slash): compared with the stored
            // URL when the replica starts again and finds itself listed.
            Some(url) => Member::parse(&url)
                .map_err(|e| anyhow::anyhow!("--advertise-url: {e}"))?
                .url,
            None if self.listen.ip().is_unspecified() => bail!(
                "--listen {} is every address, which peers cannot dial: pass --advertise-url with the \
                 address they reach this replica at",
                self.listen
            ),
            None => format!("http://{}", self.listen),
        };
        if self.tls_cert.is_some() && !advertise_url.starts_with("https://") {
            tracing::warn!(%advertise_url, "--tls-cert is set but this replica advertises a URL that is not https://; peers will not reach it");
        }
        if let Some(listed) = initial_cluster.get(&id) {
            if listed.url != Member::new(&advertise_url).url {
                tracing::warn!(listed = %listed, advertised = %advertise_url,
                    "--initial-cluster lists another URL for this replica than it advertises");
            }
        }
        let timing = Timing {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every_entries: self.snapshot_every,
            keep_entries_behind_snapshot: self.snapshot_keep_entries,
        };
        timing
            .config(&self.cluster_name)
            .context("invalid Raft timings")?;
        Ok(ServeConfig {
            id,
            listen: self.listen,
            advertise_url,
            data_dir: self.data_dir.clone(),
            initial_cluster,
            join: self.join.clone(),
            learner: self.learner,
            cluster_name: self.cluster_name.clone(),
            timing,
            deadlines: Deadlines {
                write: Duration::from_millis(self.write_timeout_ms),
                read: Duration::from_millis(self.read_timeout_ms),
            },
            leader_wait: Duration::from_millis(self.leader_wait_ms),
            limits: Limits {
                body_bytes: self.max_body_bytes,
                validate_tenants: self.max_validate_tenants,
                max_in_flight: self.max_in_flight,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
            },
            cache_bytes: self.cache_mb << 20,
            drain: DRAIN,
            handoff: Duration::from_millis(self.handoff_timeout_ms),
            security,
        })
    }

    /// Loads keys and tokens, and refuses an unauthenticated non-loopback listener.
    fn security(&self) -> anyhow::Result<Security> {
        let keys = self
            .auth_public_key
            .as_deref()
            .map(JwtKeys::load)
            .transpose()?
            .map(Arc::new);
        let peer_token = match (&keys, &self.peer_token_file) {
            (Some(keys), Some(file)) => Some(PeerToken::load(file, keys)?),
            _ => None,
        };
        if keys.is_none() && !self.insecure_no_auth && !self.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without authentication: anyone who can reach it could hand out \
                 generations or remove replicas. Pass --auth-public-key and --peer-token-file (see README, \
                 Security), or --insecure-no-auth if the network is trusted",
                self.listen
            );
        }
        Ok(Security {
            keys,
            peer_token,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            ca: self.tls_ca.clone(),
            reload_every: Some(Duration::from_millis(self.reload_interval_ms))
                .filter(|every| !every.is_zero()),
            hangups: Hangups::default(),
        })
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // First, so that no SIGHUP ends the process from here on (see `Hangups`).
    let hangups = Hangups::listen();
    let mut config = args.to_config()?;
    config.security.hangups = hangups;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            stop_signal().await;
            stop.cancel();
        }
    });
    let mut holder = None;
    if let Some(placement) = args.statefulset.placement()? {
        tokio::select! {
            settled = statefulset::settle(&mut config, &placement) => holder = settled?,
            () = stop.cancelled() => return Ok(()),
        }
    }
    serve(config, stop.cancelled_owned(), holder).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn initial_cluster_parses_and_rejects_nonsense() {
        let members =
            parse_initial_cluster("1=http://127.0.0.1:7001, 2=http://127.0.0.1:7002/").unwrap();
        assert_eq!(members[&2].url, "http://127.0.0.1:7002");
        for bad in [
            "",
            "1",
            "x=http://a",
            "0=http://a",
            "1=ftp://a",
            "1=http://a,1=http://b",
            "1=nota url",
        ] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn config_of(flags: &[&str]) -> anyhow::Result<ServeConfig> {
        let argv = [
            "pageserver-controller",
            "serve",
            "--id",
            "1",
            "--data-dir",
            "d",
        ];
        let cli = crate::cli::Cli::try_parse_from(argv.iter().chain(flags))?;
        let crate::cli::Command::Serve(args) = cli.command() else {
            panic!("not serve");
        };
        args.to_config()
    }

    #[test]
    fn the_advertised_url_is_checked_and_stored_as_the_membership_stores_it() {
        let local = ["--listen", "127.0.0.1:7009"];
        let config =
            config_of(&[&local[..], &["--advertise-url", "http://10.0.0.4:7001/"]].concat())
                .unwrap();
        assert_eq!(config.advertise_url, "http://10.0.0.4:7001");
        let config = config_of(&local).unwrap();
        assert_eq!(config.advertise_url, "http://127.0.0.1:7009");
        let refused =
            config_of(&[&local[..], &["--advertise-url", "10.0.0.4:7001"]].concat()).unwrap_err();
        assert!(
            refused.to_string().contains("--advertise-url"),
            "{refused:#}"
        );
        // Every address is no address a peer can dial.
        let every = ["--listen", "0.0.0.0:7001", "--insecure-no-auth"];
        let refused = config_of(&every).unwrap_err();
        assert!(
            refused.to_string().contains("pass --advertise-url"),
            "{refused:#}"
        );
        let with_url = [&every[..], &["--advertise-url", "http://10.0.0.4:7001"]].concat();
        assert!(config_of(&with_url).is_ok());
    }

    #[test]
    fn offline_tools_refuse_replica_id_zero() {
        for command in [
            &[
                "restore",
                "--from",
                "b",
                "--data-dir",
                "d",
                "--advertise-url",
                "http://a",
            ][..],
            &["recover", "--data-dir", "d"][..],
        ] {
            let argv = ["pageserver-controller"].iter().chain(command);
            let refused = crate::cli::Cli::try_parse_from(argv.chain(&["--id", "0"])).unwrap_err();
            assert!(refused.to_string().contains("--id"), "{refused}");
        }
    }

    #[test]
    fn reload_interval_is_off_or_at_least_the_minimum() {
        assert_eq!(parse_reload_interval("0"), Ok(0));
        assert_eq!(parse_reload_interval("100"), Ok(100));
        assert_eq!(parse_reload_interval("10000"), Ok(10_000));
        for bad in ["1", "99", "-5", "ten", ""] {
            assert!(parse_reload_interval(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
