//! The cluster under test: real `serve` processes on loopback, their peer links through
//! the fault-injecting [`Proxy`], and the health check that brackets every fault.
//!
//! Each replica listens on its own port for clients, and advertises the proxy's address
//! for it to its peers, so every byte between replicas crosses the proxy while the
//! harness's clients reach each replica directly (a replica cut off from its peers is
//! still answering clients, as a deposed leader behind a partition would be).
//!
//! A replica is a process the harness starts, kills (SIGKILL), stops (SIGTERM), pauses
//! (SIGSTOP) and resumes, with its own data dir and log file under the run's folder.
//!
//! Health is what must hold before a fault is injected and after it healed: every
//! replica that should run answers, all agree on one leader, that leader lists exactly
//! the expected voters (no learner, no half-done membership change), and every replica
//! is ready (it knows the leader, the leader has a quorum, and it applied everything
//! committed). A fault that never heals is thus reported as such, never mistaken for a
//! consistency bug.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pageserver_controller::api::types::ClusterStatus;
use pageserver_controller::child_process::spawn_tied;
use pageserver_controller::client::Client;

use crate::proxy::Proxy;

/// How to start a replica process: a program and the arguments that come before
/// `pageserver-controller`'s own (`serve ...`).
#[derive(Debug, Clone)]
pub struct ServerCommand {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

impl ServerCommand {
    /// A `pageserver-controller` binary.
    pub fn binary(path: impl Into<PathBuf>) -> ServerCommand {
        ServerCommand {
            program: path.into(),
            prefix: Vec::new(),
        }
    }

    /// The chaos binary itself, whose hidden `replica` command runs the controller's
    /// command line (so harness and server are always built from the same sources).
    pub fn embedded(chaos_binary: impl Into<PathBuf>) -> ServerCommand {
        ServerCommand {
            program: chaos_binary.into(),
            prefix: vec![crate::EMBEDDED_REPLICA_COMMAND.to_owned()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub replicas: u64,
    /// Data dirs and logs go below this folder.
    pub root: PathBuf,
    pub server: ServerCommand,
    /// Extra `serve` flags for every replica (timings, snapshot policy).
    pub serve_args: Vec<String>,
    /// Seeds the proxy's random choices.
    pub seed: u64,
    /// When set, each replica's data dir lives on a tmpfs of its own of this many MiB,
    /// which the `disk-full-*` faults shrink to what is in use (mounting needs root).
    pub disk_mib: Option<u64>,
    /// Turn authentication on as a production deployment has it: a key pair made for
    /// the run, each replica given the public key and a `controller_peer` token, and
    /// every request of the harness and its traffic carrying an `admin` token.
    pub auth: bool,
    /// TLS on every listener, as deployed with `--tls-cert`, `--tls-key` and `--tls-ca`:
    /// a certificate made for the run (for 127.0.0.1), which replicas present to
    /// clients and peers and check peers against, and which the harness and its
    /// traffic trust. Peer traffic still goes through the proxy, encrypted.
    pub tls: bool,
}

/// How a replica's data dir came to be, which decides its start flags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// A member of the initial cluster: `--initial-cluster`.
    Initial,
    /// Added later: `--join URL`.
    Joined(String),
}

#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    /// Where clients reach it.
    pub listen: SocketAddr,
    /// Where its peers reach it (the proxy).
    pub peer_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The tmpfs holding the data dir, with [`ClusterConfig::disk_mib`].
    disk: Option<PathBuf>,
    pub log: PathBuf,
    origin: Origin,
    child: Option<Child>,
    paused: bool,
    /// Restarts so far (the log file is appended to).
    pub starts: u32,
}

impl Replica {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// What the health check found.
#[derive(Debug, Clone)]
pub struct Health {
    pub leader: u64,
    pub term: u64,
    pub committed_index: u64,
}

pub struct Cluster {
    config: ClusterConfig,
    replicas: BTreeMap<u64, Replica>,
    /// The voters the cluster should have.
    members: Vec<u64>,
    /// `--initial-cluster` as the cluster was created: every initial member, whatever
    /// happened to them since (an operator keeps a replica's flags).
    initial_cluster: String,
    proxy: Proxy,
    http: reqwest::Client,
    /// Copy each tmpfs data dir out before unmounting it (see [`Cluster::keep_disk_contents`]).
    keep_disks: bool,
    /// With authentication on: what turns it on, and the token clients send.
    auth: Option<Credentials>,
    /// With TLS on: what turns it on, and the certificate clients trust.
    tls: Option<Tls>,
}

/// A run's TLS, made when the cluster starts: one self-signed certificate for
/// 127.0.0.1, the replicas' own and the CA everyone checks it against.
pub struct Tls {
    serve_args: Vec<String>,
    certificate_pem: Vec<u8>,
}

impl Tls {
    /// A certificate and key for one run, written below `dir`.
    fn make(dir: &Path) -> anyhow::Result<Tls> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .context("making the run's certificate")?;
        let certificate = dir.join("tls.crt");
        let key = dir.join("tls.key");
        let certificate_pem = made.cert.pem().into_bytes();
        std::fs::write(&certificate, &certificate_pem)
            .with_context(|| format!("writing {}", certificate.display()))?;
        std::fs::write(&key, made.signing_key.serialize_pem())
            .with_context(|| format!("writing {}", key.display()))?;
        Ok(Tls {
            serve_args: vec![
                format!("--tls-cert={}", certificate.display()),
                format!("--tls-key={}", key.display()),
                format!("--tls-ca={}", certificate.display()),
            ],
            certificate_pem,
        })
    }

    /// The certificate as clients trust it.
    pub fn root_certificate(&self) -> anyhow::Result<reqwest::Certificate> {
        reqwest::Certificate::from_pem(&self.certificate_pem)
            .context("reading the run's certificate back")
    }
}

/// A run's authentication, made by [`Credentials::make`].
struct Credentials {
    /// The `serve` flags that turn authentication on.
    serve_args: Vec<String>,
    /// An `admin` token, for the harness and its traffic.
    admin_token: String,
}

impl Credentials {
    /// A key pair and tokens for one run, written below `dir`.
    fn make(dir: &Path) -> anyhow::Result<Credentials> {
        use pageserver_controller::auth::{generate_key_pair, mint, Scope};
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (private, public) = generate_key_pair()?;
        let public_key = dir.join("auth_public_key.pem");
        let peer_token = dir.join("peer.token");
        std::fs::write(&public_key, public)
            .with_context(|| format!("writing {}", public_key.display()))?;
        let peer = mint(private.as_bytes(), Scope::ControllerPeer, None, None)?;
        std::fs::write(&peer_token, peer)
            .with_context(|| format!("writing {}", peer_token.display()))?;
        let admin = mint(private.as_bytes(), Scope::Admin, None, None)?;
        let serve_args = vec![
            format!("--auth-public-key={}", public_key.display()),
            format!("--peer-token-file={}", peer_token.display()),
        ];
        Ok(Credentials {
            serve_args,
            admin_token: admin,
        })
    }
}

/// The pooled client the harness and its traffic send requests with, trusting
/// `root_certificate` (the run's, with TLS) besides the system's roots.
pub fn http_client(
    root_certificate: Option<reqwest::Certificate>,
) -> anyhow::Result<reqwest::Client> {
    let mut http = reqwest::Client::builder().tcp_nodelay(true);
    if let Some(certificate) = root_certificate {
        http = http.add_root_certificate(certificate);
    }
    http.build().context("building the HTTP client")
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let port = pageserver_controller::loopback::free_port()?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

impl Cluster {
    /// Starts every replica of a new cluster and waits until it is healthy.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        let proxy = Proxy::new(config.seed);
        let tls = if config.tls {
            Some(Tls::make(&config.root.join("tls"))?)
        } else {
            None
        };
        let http = http_client(tls.as_ref().map(Tls::root_certificate).transpose()?)?;
        let auth = if config.auth {
            Some(Credentials::make(&config.root.join("auth"))?)
        } else {
            None
        };
        let mut cluster = Cluster {
            auth,
            tls,
            replicas: BTreeMap::new(),
            members: (1..=config.replicas).collect(),
            initial_cluster: String::new(),
            proxy,
            http,
            keep_disks: false,
            config,
        };
        for id in 1..=cluster.config.replicas {
            cluster.add_replica(id, Origin::Initial).await?;
        }
        cluster.initial_cluster = cluster
            .ids()
            .iter()
            .map(|id| format!("{id}={}", cluster.peer_url(*id)))
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=cluster.config.replicas {
            cluster.launch(id)?;
        }
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        if cluster.auth.is_some() {
            cluster.check_tokens_are_required().await?;
        }
        if cluster.tls.is_some() {
            cluster.check_tls_is_required().await?;
        }
        Ok(cluster)
    }

    async fn add_replica(&mut self, id: u64, origin: Origin) -> anyhow::Result<()> {
        let listen = free_port()?;
        let peer_addr = self.proxy.add(id, listen).await?;
        let (data_dir, disk) = match self.config.disk_mib {
            None => (self.config.root.join(format!("replica-{id}")), None),
            Some(mib) => {
                let disk = self.config.root.join(format!("disk-{id}"));
                std::fs::create_dir_all(&disk)
                    .with_context(|| format!("creating {}", disk.display()))?;
                mount_tmpfs(&disk, mib)?;
                (disk.join("data"), Some(disk))
            }
        };
        self.replicas.insert(
            id,
            Replica {
                id,
                listen,
                peer_addr,
                data_dir,
                disk,
                log: self.config.root.join(format!("replica-{id}.log")),
                origin,
                child: None,
                paused: false,
                starts: 0,
            },
        );
        Ok(())
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    /// The voters the cluster should have.
    pub fn members(&self) -> &[u64] {
        &self.members
    }

    pub fn replica(&self, id: u64) -> &Replica {
        &self.replicas[&id]
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL clients use for replica `id`.
    pub fn client_url(&self, id: u64) -> String {
        format!("{}://{}", self.scheme(), self.replicas[&id].listen)
    }

    /// The URL peers use for replica `id` (through the proxy).
    pub fn peer_url(&self, id: u64) -> String {
        format!("{}://{}", self.scheme(), self.replicas[&id].peer_addr)
    }

    /// With TLS on, the certificate clients must trust.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// A client of replica `id` that gives up after `timeout`.
    pub fn client(&self, id: u64, timeout: Duration) -> Client {
        Client::with_http(self.client_url(id), self.http.clone())
            .with_timeout(timeout)
            .with_token(self.token())
    }

    /// A run "with authentication" must really have it: a request without a token is
    /// refused by every replica.
    async fn check_tokens_are_required(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            let url = format!("{}/control/v1/node", self.client_url(id));
            let response = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            anyhow::ensure!(
                response.status() == reqwest::StatusCode::UNAUTHORIZED,
                "authentication is on, yet replica {id} answered GET /control/v1/node without \
                 a token with {}",
                response.status()
            );
        }
        Ok(())
    }

    /// A run "with TLS" must really have it: a plain HTTP request gets no answer from any
    /// replica.
    async fn check_tls_is_required(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            let url = format!("http://{}/status", self.replicas[&id].listen);
            let answer = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(response) = answer {
                bail!(
                    "TLS is on, yet replica {id} answered plain HTTP (GET {url}) with {}",
                    response.status()
                );
            }
        }
        Ok(())
    }

    /// The token clients send (`admin`), when authentication is on.
    pub fn token(&self) -> Option<String> {
        self.auth.as_ref().map(|auth| auth.admin_token.clone())
    }

    /// (id, client URL) of every replica, for traffic.
    pub fn endpoints(&self) -> Vec<(u64, String)> {
        self.ids()
            .into_iter()
            .map(|id| (id, self.client_url(id)))
            .collect()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.replicas[&id].child.is_some()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.replicas[&id].paused
    }

    /// Starts replica `id`'s process on its data dir, without waiting for it.
    pub fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let initial_cluster = self.initial_cluster.clone();
        let peer_url = self.peer_url(id);
        let auth_args = self.auth.as_ref().map(|auth| auth.serve_args.clone());
        let tls_args = self.tls.as_ref().map(|tls| tls.serve_args.clone());
        let replica = self.replicas.get_mut(&id).context("unknown replica")?;
        if replica.child.is_some() {
            bail!("replica {id} is already running");
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&replica.log)
            .with_context(|| format!("opening {}", replica.log.display()))?;
        let origin = match &replica.origin {
            Origin::Initial => ["--initial-cluster".to_owned(), initial_cluster],
            Origin::Joined(url) => ["--join".to_owned(), url.clone()],
        };
        let mut command = Command::new(&self.config.server.program);
        command
            .args(&self.config.server.prefix)
            .args(["--log", "info,openraft=warn", "serve"])
            .args(["--id", &id.to_string()])
            .args(["--listen", &replica.listen.to_string()])
            .args(["--advertise-url", &peer_url])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .args(origin)
            .args(auth_args.into_iter().flatten())
            .args(tls_args.into_iter().flatten())
            .args(&self.config.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Die with the harness, even when the harness is killed: a run must never leave
        // replicas behind.
        let child = spawn_tied(command, libc::SIGKILL)
            .with_context(|| format!("starting {}", self.config.server.program.display()))?;
        replica.starts += 1;
        replica.paused = false;
        self.proxy.set_pid(id, Some(child.id()));
        replica.child = Some(child);
        tracing::debug!(id, "replica started");
        Ok(())
    }

    fn signal(&self, id: u64, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self.replicas[&id]
            .pid()
            .with_context(|| format!("replica {id} is not running"))?;
        // SAFETY: kill(2) on a child process we started and have not reaped.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            bail!(
                "signal {signal} to replica {id}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGKILL)?;
        let replica = self.replicas.get_mut(&id).context("unknown replica")?;
        if let Some(mut child) = replica.child.take() {
            child.wait().context("reaping a killed replica")?;
        }
        replica.paused = false;
        self.proxy.set_pid(id, None);
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit (a leader hands leadership over and
    /// in-flight requests drain first). Killed if it does not exit within `patience`.
    /// Returns whether it exited cleanly on its own.
    pub async fn stop(&mut self, id: u64, patience: Duration) -> anyhow::Result<bool> {
        if self.replicas[&id].paused {
            self.resume(id)?;
        }
        self.signal(id, libc::SIGTERM)?;
        let end = Instant::now() + patience;
        loop {
            let replica = self.replicas.get_mut(&id).context("unknown replica")?;
            let child = replica.child.as_mut().context("replica is not running")?;
            if let Some(status) = child.try_wait().context("waiting for a replica")? {
                replica.child = None;
                self.proxy.set_pid(id, None);
                if !status.success() {
                    tracing::warn!(id, %status, "replica exited with an error after SIGTERM");
                }
                return Ok(status.success());
            }
            if Instant::now() >= end {
                tracing::warn!(
                    id,
                    ?patience,
                    "replica did not stop after SIGTERM; killing it"
                );
                self.kill(id)?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.replicas
            .get_mut(&id)
            .context("unknown replica")?
            .paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        self.replicas
            .get_mut(&id)
            .context("unknown replica")?
            .paused = false;
        Ok(())
    }

    /// Deletes a stopped replica's data dir: a lost disk.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        if self.is_running(id) {
            bail!("stop replica {id} before wiping its data dir");
        }
        let dir = &self.replicas[&id].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        Ok(())
    }

    /// From now on replica `id` starts with `--join` through `via` (its data dir was
    /// wiped after it was removed, as the runbook says).
    pub fn rejoin_through(&mut self, id: u64, via: u64) {
        let url = self.peer_url(via);
        if let Some(replica) = self.replicas.get_mut(&id) {
            replica.origin = Origin::Joined(url);
        }
    }

    /// Fills replica `id`'s disk: its tmpfs is shrunk to what is in use, so the next
    /// write that needs space fails with "No space left on device".
    pub fn fill_disk(&self, id: u64) -> anyhow::Result<()> {
        let disk = self.disk_of(id)?;
        // Writes go on while this runs: a size below what is in use by then is refused,
        // so read the usage again and retry.
        let mut last_error = String::new();
        for _ in 0..20 {
            let used = controller_storage::file_system_space(disk)
                .with_context(|| format!("reading how full {} is", disk.display()))?
                .used_bytes;
            match remount_tmpfs(disk, &format!("size={used}")) {
                Ok(()) => {
                    tracing::info!(id, used, "disk full");
                    return Ok(());
                }
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        bail!("could not shrink replica {id}'s disk to its usage: {last_error}")
    }

    /// Gives replica `id`'s disk its full size back.
    pub fn free_disk(&self, id: u64) -> anyhow::Result<()> {
        let mib = self
            .config
            .disk_mib
            .context("the replicas have no disks of their own")?;
        remount_tmpfs(self.disk_of(id)?, &format!("size={mib}m"))
    }

    fn disk_of(&self, id: u64) -> anyhow::Result<&Path> {
        self.replicas
            .get(&id)
            .context("unknown replica")?
            .disk
            .as_deref()
            .context("the disk-full faults need ClusterConfig::disk_mib (disks of their own)")
    }

    /// If replica `id`'s process exited on its own, reaps it and says how it ended.
    pub fn reap(&mut self, id: u64) -> Option<String> {
        let replica = self.replicas.get_mut(&id)?;
        let status = replica.child.as_mut()?.try_wait().ok()??;
        replica.child = None;
        self.proxy.set_pid(id, None);
        Some(status.to_string())
    }

    /// Processes that exited on their own (a crash, or a refusal to start), reaped.
    pub fn exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for replica in self.replicas.values_mut() {
            if let Some(child) = replica.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((replica.id, status.to_string()));
                    replica.child = None;
                    self.proxy.set_pid(replica.id, None);
                }
            }
        }
        exited
    }

    /// Replica `id`'s view of the cluster, if it answers within a second.
    pub async fn status(&self, id: u64) -> Option<ClusterStatus> {
        if !self.is_running(id) || self.is_paused(id) {
            return None;
        }
        self.client(id, Duration::from_secs(1))
            .cluster_status()
            .await
            .ok()
    }

    /// The leader as running replicas see it right now, if they agree.
    pub async fn leader(&self) -> Option<u64> {
        let mut leader = None;
        for id in self.ids() {
            if let Some(status) = self.status(id).await {
                match (leader, status.leader) {
                    (_, None) => {}
                    (None, Some(l)) => leader = Some(l),
                    (Some(a), Some(b)) if a != b => return None,
                    _ => {}
                }
            }
        }
        leader
    }

    /// One look at the cluster: `Ok` if healthy, else what is wrong.
    pub async fn health(&self) -> Result<Health, String> {
        let mut leader = None;
        for id in &self.members {
            let Some(replica) = self.replicas.get(id) else {
                return Err(format!("replica {id} is unknown"));
            };
            if replica.child.is_none() {
                return Err(format!("replica {id} is not running"));
            }
            if replica.paused {
                return Err(format!("replica {id} is paused"));
            }
            let status = self
                .status(*id)
                .await
                .ok_or_else(|| format!("replica {id} does not answer"))?;
            let theirs = status
                .leader
                .ok_or_else(|| format!("replica {id} knows no leader"))?;
            match leader {
                None => leader = Some(theirs),
                Some(l) if l != theirs => {
                    return Err(format!(
                        "replicas disagree on the leader ({l} and {theirs})"
                    ))
                }
                _ => {}
            }
            let ready = self.client(*id, Duration::from_secs(2)).ready().await;
            if let Err(e) = ready {
                return Err(format!("replica {id} is not ready: {e}"));
            }
        }
        let leader = leader.ok_or("no members")?;
        let view = self
            .status(leader)
            .await
            .ok_or_else(|| format!("leader {leader} does not answer"))?;
        if view.state != "leader" {
            return Err(format!("replica {leader} is not leading ({})", view.state));
        }
        let mut voters: Vec<u64> = view
            .members
            .iter()
            .filter(|m| m.role == "voter")
            .map(|m| m.id)
            .collect();
        voters.sort_unstable();
        let learners = view.members.iter().filter(|m| m.role != "voter").count();
        if voters != self.members || learners > 0 || view.joint {
            return Err(format!(
                "leader {leader} lists voters {voters:?} and {learners} learners (joint: {}), expected voters {:?}",
                view.joint, self.members
            ));
        }
        Ok(Health {
            leader,
            term: view.term,
            committed_index: view.committed_index.unwrap_or(0),
        })
    }

    /// Waits until [`Cluster::health`] passes, for at most `deadline`.
    pub async fn wait_healthy(&self, deadline: Duration) -> anyhow::Result<Health> {
        let end = Instant::now() + deadline;
        loop {
            match self.health().await {
                Ok(health) => return Ok(health),
                Err(problem) if Instant::now() >= end => {
                    bail!("the cluster was not healthy within {deadline:?}: {problem}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Removes replica `id` from the membership, asking any other running replica, and
    /// retrying through elections for up to `deadline`.
    pub async fn remove_member(&mut self, id: u64, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        let others: Vec<u64> = self.members.iter().copied().filter(|m| *m != id).collect();
        let mut turn = 0usize;
        loop {
            let via = others[turn % others.len()];
            turn += 1;
            match self
                .client(via, Duration::from_secs(30))
                .remove_member(id, false)
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() >= end => {
                    bail!("removing replica {id} through replica {via}: {e}")
                }
                Err(e) => {
                    tracing::debug!(id, via, error = %e, "removal not done yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.members.retain(|m| *m != id);
        Ok(())
    }

    /// Counts replica `id` as a voter again (it joined).
    pub fn expect_member(&mut self, id: u64) {
        if !self.members.contains(&id) {
            self.members.push(id);
            self.members.sort_unstable();
        }
    }

    /// Whether [`Cluster::shutdown`] copies each replica's data dir off its own disk
    /// (into `replica-ID` under the root, where it would be without one) before the disk
    /// is unmounted and its contents gone, so a kept run can be examined.
    pub fn keep_disk_contents(&mut self, keep: bool) {
        self.keep_disks = keep;
    }

    /// Stops every process (SIGKILL; nothing is kept running after a run) and unmounts
    /// the replicas' own disks.
    pub fn shutdown(&mut self) {
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                if replica.paused {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(disk) = replica.disk.take() {
                if self.keep_disks {
                    let kept = self.config.root.join(format!("replica-{}", replica.id));
                    if let Err(e) = copy_tree(&replica.data_dir, &kept) {
                        tracing::warn!(from = %replica.data_dir.display(), to = %kept.display(), error = %e, "keeping a replica's data dir");
                    }
                }
                if let Err(e) = run_mount_tool("umount", &[disk.as_os_str()]) {
                    tracing::warn!(disk = %disk.display(), error = %format!("{e:#}"), "unmounting a replica's disk");
                }
            }
        }
    }

    /// The last `lines` lines of replica `id`'s log, for error messages.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.replicas[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Copies the folder `from` to `to`, recursively (regular files and folders only).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Mounts a tmpfs of `mib` MiB on `dir`.
fn mount_tmpfs(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let size = format!("size={mib}m");
    run_mount_tool(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            size.as_ref(),
            "tmpfs".as_ref(),
            dir.as_os_str(),
        ],
    )
    .context(
        "the disk-full faults give each replica a tmpfs of its own, and mounting one needs \
         root (CAP_SYS_ADMIN)",
    )
}

fn remount_tmpfs(dir: &Path, options: &str) -> anyhow::Result<()> {
    let options = format!("remount,{options}");
    run_mount_tool("mount", &["-o".as_ref(), options.as_ref(), dir.as_os_str()])
}

fn run_mount_tool(tool: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !output.status.success() {
        bail!(
            "{tool} {:?} failed ({}): {}",
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process may give replicas disks of their own (`Err` says why not).
pub fn can_mount_disks(scratch: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(scratch).context("creating a scratch mount point")?;
    mount_tmpfs(dir.path(), 1)?;
    run_mount_tool("umount", &[dir.path().as_os_str()])
}
