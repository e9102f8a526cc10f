//! A cluster of real `pageserver-controller serve` processes on loopback, for tests.
//!
//! Each replica gets an ephemeral port, its own data dir and log file in a temporary
//! folder. Waits are on conditions with generous deadlines (two busy cores), never bare
//! sleeps. If a test panics, the folder is kept and its path printed, so the replicas'
//! logs can be read.
#![allow(dead_code)]

pub mod volatile_fs;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pageserver_controller::api::types::ClusterStatus;
use pageserver_controller::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_pageserver-controller");

/// Generous: elections take about a second, but CI machines are slow and shared.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Replica {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `Some(url)`: started with `--join url` instead of the initial cluster.
    pub join: Option<String>,
    /// `Some(list)`: started with this `--initial-cluster` instead of the cluster's.
    pub initial_cluster: Option<String>,
    /// `serve` flags of this replica alone, after the cluster's.
    pub args: Vec<String>,
    child: Option<Child>,
}

pub struct TestCluster {
    dir: Option<tempfile::TempDir>,
    pub replicas: BTreeMap<u64, Replica>,
    initial_cluster: String,
    /// `http` or `https`.
    scheme: &'static str,
    /// Sent by [`TestCluster::client`] (an admin token when auth is on).
    token: Option<String>,
    /// Shared by every client; trusts the test CA when TLS is on.
    http: reqwest::Client,
    extra_args: Vec<String>,
    /// `Some((template, initial size))`: replicas start as StatefulSet pods (see
    /// [`TestCluster::pods`]).
    pod_template: Option<(String, u16)>,
}

fn signal(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

pub fn free_port() -> u16 {
    pageserver_controller::loopback::free_port().expect("a free loopback port")
}

/// One call to the cluster, retried as a client retries (every 5xx or transport error, up
/// to [`DEADLINE`]): for the calls a test makes while leadership may still be settling.
pub async fn retried<T, Fut>(call: impl FnMut() -> Fut) -> pageserver_controller::client::Result<T>
where
    Fut: std::future::Future<Output = pageserver_controller::client::Result<T>>,
{
    pageserver_controller::client::retry(
        DEADLINE,
        Duration::from_millis(100),
        Duration::from_secs(1),
        call,
    )
    .await
}

/// Polls `check` every 50 ms until it yields `Some`, or panics with `what` after
/// `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    pageserver_controller::client::poll_until(what, deadline, Duration::from_millis(50), check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

impl TestCluster {
    /// Starts `n` replicas of a fresh cluster and waits for a leader.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, &[]).await
    }

    /// Like [`TestCluster::start`], passing `extra_args` to every `serve`.
    pub async fn start_with(n: u64, extra_args: &[&str]) -> TestCluster {
        Self::start_secure(n, extra_args, None, None).await
    }

    /// Like [`TestCluster::start_with`]; `token` is what [`TestCluster::client`] sends,
    /// and `ca` (a PEM file) switches the replicas' URLs to https and is trusted.
    pub async fn start_secure(
        n: u64,
        extra_args: &[&str],
        token: Option<String>,
        ca: Option<&Path>,
    ) -> TestCluster {
        Self::start_full(n, extra_args, token, ca, None).await
    }

    /// Like [`TestCluster::start_with`], with the data dirs under `data_root` (a mount
    /// the test controls) instead of beside the logs.
    pub async fn start_on(n: u64, extra_args: &[&str], data_root: &Path) -> TestCluster {
        Self::start_full(n, extra_args, None, None, Some(data_root)).await
    }

    async fn start_full(
        n: u64,
        extra_args: &[&str],
        token: Option<String>,
        ca: Option<&Path>,
        data_root: Option<&Path>,
    ) -> TestCluster {
        let ports = (1..=n).map(|_| free_port()).collect();
        let mut cluster = Self::prepare(ports, extra_args, token, ca, data_root);
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// Replicas 1, 2, ... on `ports`, none started.
    fn prepare(
        ports: Vec<u16>,
        extra_args: &[&str],
        token: Option<String>,
        ca: Option<&Path>,
        data_root: Option<&Path>,
    ) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("psc-test-")
            .tempdir()
            .expect("tempdir");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let http = pageserver_controller::server::peer_client(ca).expect("an HTTP client");
        let mut replicas = BTreeMap::new();
        for (id, port) in (1..).zip(ports) {
            replicas.insert(
                id,
                Replica {
                    id,
                    port,
                    data_dir: data_root
                        .unwrap_or(dir.path())
                        .join(format!("replica-{id}")),
                    log: dir.path().join(format!("replica-{id}.log")),
                    join: None,
                    initial_cluster: None,
                    args: Vec::new(),
                    child: None,
                },
            );
        }
        let initial_cluster = replicas
            .values()
            .map(|r| format!("{}={scheme}://127.0.0.1:{}", r.id, r.port))
            .collect::<Vec<_>>()
            .join(",");
        TestCluster {
            dir: Some(dir),
            replicas,
            initial_cluster,
            scheme,
            token,
            http,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            pod_template: None,
        }
    }

    /// `n` replicas that start as the pods `psc-0` to `psc-{n-1}` of a StatefulSet
    /// (`--id-from-hostname`, `--peer-url-template`, `--initial-cluster-size n`), on
    /// loopback ports whose last digit is the ordinal. None is started: [`launch`] each.
    ///
    /// [`launch`]: TestCluster::launch
    pub fn pods(
        n: u16,
        extra_args: &[&str],
        token: Option<String>,
        ca: Option<&Path>,
    ) -> TestCluster {
        assert!(n <= 10, "one port digit per ordinal");
        // Ten ports from a multiple of ten hold ordinal k at the port ending in k.
        let base = pageserver_controller::loopback::free_ports(n + 9).expect("free loopback ports");
        let tens = base.div_ceil(10);
        let ports = (0..n).map(|ordinal| tens * 10 + ordinal).collect();
        let mut cluster = Self::prepare(ports, extra_args, token, ca, None);
        let template = format!("{}://127.0.0.1:{tens}{{ordinal}}", cluster.scheme);
        cluster.pod_template = Some((template, n));
        cluster
    }

    /// Makes the pods' initial cluster the first `initial` of them: the others join.
    pub fn with_initial_pods(mut self, initial: u16) -> TestCluster {
        let (_, size) = self.pod_template.as_mut().expect("a cluster of pods");
        assert!(initial <= *size);
        *size = initial;
        self
    }

    /// `n` replicas with `--initial-cluster`, none started: [`launch`] each.
    ///
    /// [`launch`]: TestCluster::launch
    pub fn unstarted(n: u64, extra_args: &[&str]) -> TestCluster {
        let ports = (1..=n).map(|_| free_port()).collect();
        Self::prepare(ports, extra_args, None, None, None)
    }

    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    fn spawn(&mut self, id: u64) {
        let initial_cluster = self.initial_cluster.clone();
        let extra = self.extra_args.clone();
        let advertise = self.url(id);
        let replica = self.replicas.get_mut(&id).expect("known replica");
        let initial_cluster = replica.initial_cluster.clone().unwrap_or(initial_cluster);
        assert!(replica.child.is_none(), "replica {id} is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&replica.log)
            .expect("log file");
        let place: Vec<String> = match (&self.pod_template, &replica.join) {
            (Some((template, initial_size)), _) => vec![
                "--id-from-hostname".into(),
                "--peer-url-template".into(),
                template.clone(),
                "--initial-cluster-size".into(),
                initial_size.to_string(),
            ],
            (None, Some(url)) => vec!["--join".into(), url.clone()],
            (None, None) => vec!["--initial-cluster".into(), initial_cluster],
        };
        let mut command = Command::new(BIN);
        command.args(["--log", "info,openraft=warn", "serve"]);
        if self.pod_template.is_some() {
            command.env("HOSTNAME", format!("psc-{}", id - 1));
        } else {
            command.args(["--id", &id.to_string()]);
            command.args(["--advertise-url", &advertise]);
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{}", replica.port)])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .args(place)
            // Slower elections than the production default: the test machine may be
            // starved of CPU for longer than a production heartbeat timeout, and a
            // spurious election turns writes in flight into 503s.
            .args([
                "--election-timeout-min-ms",
                "700",
                "--election-timeout-max-ms",
                "1000",
            ])
            .args(&extra)
            .args(&replica.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning a replica");
        replica.child = Some(child);
    }

    pub fn url(&self, id: u64) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.replicas[&id].port)
    }

    pub fn client(&self, id: u64) -> Client {
        Client::with_http(self.url(id), self.http.clone())
            .with_token(self.token.clone())
            .with_timeout(Duration::from_secs(30))
    }

    /// The shared HTTP client (trusts the test CA when TLS is on).
    /// The CA [`TestCluster::client`] trusts from now on (after a CA rotation).
    pub fn trust(&mut self, ca: Option<&Path>) {
        self.http = pageserver_controller::server::peer_client(ca).expect("an HTTP client");
    }

    /// What [`TestCluster::client`] sends from now on (after a key rotation).
    pub fn use_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.replicas[&id].child.is_some()
    }

    pub fn running(&self) -> Vec<u64> {
        self.replicas
            .values()
            .filter(|r| r.child.is_some())
            .map(|r| r.id)
            .collect()
    }

    /// A running replica other than `id` (the first by id): "a follower" once `id` leads.
    pub fn other_than(&self, id: u64) -> u64 {
        self.others_than(id)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no running replica other than {id}"))
    }

    /// Every running replica but `id`, by id.
    pub fn others_than(&self, id: u64) -> Vec<u64> {
        self.running().into_iter().filter(|r| *r != id).collect()
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).expect("known replica");
        let mut child = replica.child.take().expect("replica is running");
        child.kill().expect("kill -9");
        child.wait().expect("reaping the child");
    }

    /// SIGSTOP (`true`: the process freezes with its sockets open) or SIGCONT.
    pub fn freeze(&self, id: u64, frozen: bool) {
        self.send_signal(id, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// SIGTERM, without waiting: the replica hands leadership away and drains.
    pub fn terminate(&self, id: u64) {
        self.send_signal(id, libc::SIGTERM);
    }

    /// SIGHUP: the replica reads its keys, peer token and certificate again.
    pub fn hang_up(&self, id: u64) {
        self.send_signal(id, libc::SIGHUP);
    }

    fn send_signal(&self, id: u64, signal_number: i32) {
        let child = self.replicas[&id]
            .child
            .as_ref()
            .expect("replica is running");
        signal(child, signal_number);
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).expect("known replica");
        let mut child = replica.child.take().expect("replica is running");
        signal(&child, libc::SIGTERM);
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the child") {
                assert!(
                    status.success(),
                    "replica {id} exited with {status} after SIGTERM"
                );
                return;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("replica {id} did not stop within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped replica's process without waiting for it to answer (it may
    /// legitimately refuse to serve, for one while it settles how to start).
    pub fn launch(&mut self, id: u64) {
        self.spawn(id);
    }

    /// Whether replica `id`'s process has exited (reaping it if so).
    pub fn has_exited(&mut self, id: u64) -> bool {
        let replica = self.replicas.get_mut(&id).expect("known replica");
        match replica.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                replica.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Starts a stopped replica again on its data dir.
    pub async fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_answering(id).await;
    }

    /// Waits until replica `id` answers; if its process exits instead (it refused what
    /// its data dir holds), fails at once with the end of its log.
    pub async fn wait_answering(&mut self, id: u64) {
        let client = self.client(id);
        let end = Instant::now() + DEADLINE;
        while client.status().await.is_err() {
            if self.has_exited(id) {
                let log = self.log_of(id);
                let tail: Vec<_> = log.lines().rev().take(12).collect();
                let tail: Vec<_> = tail.into_iter().rev().collect();
                panic!(
                    "replica {id} exited instead of answering:\n{}",
                    tail.join("\n")
                );
            }
            assert!(
                Instant::now() < end,
                "replica {id} did not answer within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a new replica `id` with an empty data dir that joins through replica `via`.
    pub async fn join(&mut self, id: u64, via: u64) {
        self.launch_joining(id, self.url(via));
        self.wait_answering(id).await;
    }

    /// Starts a new replica `id` with an empty data dir and `--join url`, without
    /// waiting for it to answer.
    pub fn launch_joining(&mut self, id: u64, url: String) {
        self.launch_joining_with(id, url, &[]);
    }

    /// [`TestCluster::launch_joining`] with `serve` flags for this replica alone.
    pub fn launch_joining_with(&mut self, id: u64, url: String, args: &[&str]) {
        assert!(!self.replicas.contains_key(&id), "replica {id} exists");
        let root = self.root().to_owned();
        self.replicas.insert(
            id,
            Replica {
                id,
                port: free_port(),
                data_dir: root.join(format!("replica-{id}")),
                log: root.join(format!("replica-{id}.log")),
                join: Some(url),
                initial_cluster: None,
                args: args.iter().map(|a| a.to_string()).collect(),
                child: None,
            },
        );
        self.spawn(id);
    }

    /// Starts a stopped replica again (same id, port and data dir) with `--join url`,
    /// without waiting for it to answer.
    pub fn launch_joining_through(&mut self, id: u64, url: String) {
        assert!(!self.is_running(id), "stop replica {id} first");
        self.replicas.get_mut(&id).expect("known replica").join = Some(url);
        self.spawn(id);
    }

    /// Adds `serve` flags for a stopped replica's next start.
    pub fn add_args(&mut self, id: u64, args: &[&str]) {
        assert!(!self.is_running(id), "stop replica {id} first");
        let replica = self.replicas.get_mut(&id).expect("known replica");
        replica.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Deletes a stopped replica's data dir (a lost disk).
    pub fn wipe(&mut self, id: u64) {
        assert!(!self.is_running(id), "stop replica {id} before wiping it");
        let replica = self.replicas.get_mut(&id).expect("known replica");
        std::fs::remove_dir_all(&replica.data_dir).expect("wiping the data dir");
    }

    /// Forgets a stopped replica (it was removed from the cluster).
    pub fn forget(&mut self, id: u64) {
        assert!(
            !self.is_running(id),
            "stop replica {id} before forgetting it"
        );
        self.replicas.remove(&id);
    }

    /// Waits until the leader reports exactly `voters` as voters, no learners, and no
    /// membership change half done (joint consensus).
    pub async fn wait_for_voters(&self, voters: &[u64]) {
        let expected: Vec<u64> = voters.to_vec();
        wait_for(&format!("voters {expected:?}"), DEADLINE, || {
            let expected = expected.clone();
            async move {
                let leader = self.status_of(self.leader_now().await?).await?;
                let mut got: Vec<u64> = leader
                    .members
                    .iter()
                    .filter(|m| m.role == "voter")
                    .map(|m| m.id)
                    .collect();
                got.sort_unstable();
                let learners = leader.members.iter().any(|m| m.role != "voter");
                (got == expected && !learners && !leader.joint).then_some(())
            }
        })
        .await;
    }

    /// The leader as some running replica reports it right now.
    pub async fn leader_now(&self) -> Option<u64> {
        for id in self.running() {
            if let Some(status) = self.status_of(id).await {
                if let Some(leader) = status.leader {
                    return Some(leader);
                }
            }
        }
        None
    }

    /// The view of `id`, if it answers.
    pub async fn status_of(&self, id: u64) -> Option<ClusterStatus> {
        self.client(id).cluster_status().await.ok()
    }

    /// Waits until a running replica is leader and every running replica agrees.
    pub async fn wait_for_leader(&self) -> u64 {
        let running = self.running();
        wait_for(
            "a leader that every running replica agrees on",
            DEADLINE,
            || {
                let running = running.clone();
                async move {
                    let mut leader = None;
                    for id in &running {
                        let status = self.status_of(*id).await?;
                        let theirs = status.leader?;
                        if !running.contains(&theirs) || leader.is_some_and(|l| l != theirs) {
                            return None;
                        }
                        leader = Some(theirs);
                    }
                    let leader = leader?;
                    let view = self.status_of(leader).await?;
                    (view.state == "leader").then_some(leader)
                }
            },
        )
        .await
    }

    /// Waits until `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) {
        wait_for(
            &format!("replica {id} to apply index {index}"),
            DEADLINE,
            || async move {
                let status = self.status_of(id).await?;
                (status.applied_index? >= index).then_some(())
            },
        )
        .await
    }

    /// Waits until `id` has applied everything the current leader had committed when
    /// asked.
    pub async fn wait_caught_up(&self, id: u64) {
        let leader = self.wait_for_leader().await;
        let committed = self
            .status_of(leader)
            .await
            .and_then(|s| s.committed_index)
            .expect("the leader reports a committed index");
        self.wait_applied(id, committed).await;
    }

    /// Waits until `leader` sees every other running replica hold its whole log.
    pub async fn wait_matched_by_followers(&self, leader: u64) {
        self.wait_matched_by(leader, &self.others_than(leader))
            .await
    }

    /// Waits until each of `followers` holds the whole log of `leader`, as it sees it.
    pub async fn wait_matched_by(&self, leader: u64, followers: &[u64]) {
        wait_for(
            &format!("replicas {followers:?} to hold the leader's log"),
            DEADLINE,
            || async {
                let status = self.status_of(leader).await?;
                let last = status.last_log_index?;
                followers
                    .iter()
                    .all(|f| {
                        status
                            .members
                            .iter()
                            .any(|m| m.id == *f && m.matched_index == Some(last))
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// Attaches shards `shards` to `node` through replica `via`; panics on any failure.
    pub async fn attach_all(&self, via: u64, shards: std::ops::Range<u32>, node: u64) {
        attach_range(&self.client(via), shards, node).await;
    }

    /// Waits until replica `id` has logged `text` at least `times` times.
    pub async fn wait_for_log(&self, id: u64, text: &str, times: usize) {
        wait_for(
            &format!("replica {id} to log {text:?} {times} time(s)"),
            DEADLINE,
            || async { (self.log_of(id).matches(text).count() >= times).then_some(()) },
        )
        .await
    }

    /// The sum of a series' samples (all its labels) in replica `id`'s `/metrics`; `None`
    /// if it has none or the replica does not answer. `series` may carry its labels
    /// (`name{label="value"}`) to pick one sample.
    pub async fn metric(&self, id: u64, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(id)))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let samples: Vec<f64> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(series)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.parse().ok()
            })
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }

    /// The log of replica `id`, for assertions and failure messages.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.replicas[&id].log).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "test failed; replica data and logs kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// Attaches shards `shards` (see [`shard`]) to `node` through `client`, one call at a
/// time. A call refused with nothing applied (no leader for a moment, a replica
/// overloaded) is sent again, so each shard is attached exactly once; any other failure
/// panics.
pub async fn attach_range(client: &Client, shards: std::ops::Range<u32>, node: u64) {
    for i in shards {
        let end = Instant::now() + DEADLINE;
        loop {
            match client
                .attach_hook(
                    shard(i),
                    Some(pageserver_controller::domain::NodeId(node)),
                    None,
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.not_applied() && !e.is_refusal() && Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("attaching shard {i} to node {node}: {e}"),
            }
        }
    }
}

/// A tenant shard id made from a small number, for readable tests.
pub fn shard(n: u32) -> pageserver_controller::domain::TenantShardId {
    let mut bytes = [0u8; 16];
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    bytes[0] = 0xab;
    pageserver_controller::domain::TenantShardId::unsharded(
        pageserver_controller::domain::TenantId::from_bytes(bytes),
    )
}

/// Opens a request to `url` (an `http://` base URL) whose body never arrives, and returns
/// once the server has started handling it: `Expect: 100-continue` makes the server say
/// when the handler begins to read the body. The request lasts until the returned
/// connection is dropped or the server gives up on it.
pub async fn hold_request_open(url: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = url.trim_start_matches("http://");
    let mut held = tokio::net::TcpStream::connect(address).await.unwrap();
    held.write_all(
        b"POST /debug/v1/attach-hook HTTP/1.1\r\nhost: controller\r\n\
          content-type: application/json\r\ncontent-length: 64\r\n\
          expect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, held.read(&mut answer))
        .await
        .expect("the server answers 100 Continue")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer}");
    held
}

/// Runs the binary to completion: (succeeded, stdout + stderr).
pub fn run_binary(args: &[&str]) -> (bool, String) {
    run_binary_with_env(args, &[])
}

/// [`run_binary`] with these environment variables set, and the token variable
/// (PAGESERVER_CONTROLLER_TOKEN) only if among them.
pub fn run_binary_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("PAGESERVER_CONTROLLER_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("running the binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Waits until the replica behind `client` answers `/ready` with 200.
pub async fn wait_ready(client: &Client) {
    wait_for("the replica to be ready", DEADLINE, || {
        let client = client.clone();
        async move { client.ready().await.ok() }
    })
    .await;
}
