//! The cluster under test: a view of any running cluster (found from one replica's URL
//! through `GET /v1/cluster`), and a local cluster of child `serve` processes that the
//! bench starts, kills, restarts and measures (RSS, data dir size, logs) itself.
//!
//! A local cluster lives in a temporary folder that is removed, and its processes killed,
//! when it is dropped, so a failed run leaves nothing behind; and its processes die with
//! the bench even when the bench itself is killed ([`spawn_tied`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pageserver_controller::child_process::spawn_tied;

/// One shared connection pool for all bench traffic to our service; with a token, every
/// request carries it (marked sensitive, so reqwest never prints it).
pub fn http_pool(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid HTTP header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

/// Replica URLs and the leader, as one replica sees them.
#[derive(Debug, Clone)]
pub struct View {
    pub urls: BTreeMap<u64, String>,
    pub leader: u64,
}

impl View {
    pub fn leader_url(&self) -> &str {
        &self.urls[&self.leader]
    }

    /// A replica other than the leader (the lowest id), if the cluster has one.
    pub fn follower(&self) -> Option<(u64, &str)> {
        self.urls
            .iter()
            .find(|(id, _)| **id != self.leader)
            .map(|(id, url)| (*id, url.as_str()))
    }
}

/// `GET /v1/cluster` read as loose JSON. Traffic goes through the typed client, but the
/// bench also measures older builds (before/after a change) whose status carried fewer
/// fields than today's `ClusterStatus`; only `leader`, `members[].{id,url}` and
/// `last_log_index` are read here, which every build has served.
async fn cluster_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, Refusal> {
    let response = http
        .get(format!("{url}/v1/cluster"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| Refusal::Retry(format!("{url}: {e}")))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = response.text().await.unwrap_or_default();
        return Err(Refusal::Auth(format!(
            "{url}/v1/cluster: {status}: {body} (a cluster that checks tokens needs \
             --token-file with an admin token)"
        )));
    }
    if !status.is_success() {
        return Err(Refusal::Retry(format!("{url}/v1/cluster: {status}")));
    }
    response
        .json()
        .await
        .map_err(|e| Refusal::Retry(format!("{url}/v1/cluster: {e}")))
}

/// Why `GET /v1/cluster` gave no status: worth asking again, or refused for the
/// credentials, which waiting does not change.
enum Refusal {
    Retry(String),
    Auth(String),
}

/// Asks the replicas at `urls` (any of them) for members and leader; waits up to
/// `wait` for a leader.
pub async fn discover(
    http: &reqwest::Client,
    urls: &[String],
    wait: Duration,
) -> anyhow::Result<View> {
    let deadline = Instant::now() + wait;
    let mut last_error = String::from("no replica answered");
    loop {
        for url in urls {
            match cluster_json(http, url).await {
                Ok(status) => match status["leader"].as_u64() {
                    Some(leader) => {
                        let urls = status["members"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|m| {
                                Some((m["id"].as_u64()?, m["url"].as_str()?.to_owned()))
                            })
                            .collect::<BTreeMap<_, _>>();
                        if urls.contains_key(&leader) {
                            return Ok(View { urls, leader });
                        }
                        last_error = format!("leader {leader} is not among the members");
                    }
                    None => last_error = format!("{url} knows no leader"),
                },
                Err(Refusal::Retry(e)) => last_error = e,
                Err(Refusal::Auth(e)) => bail!(e),
            }
        }
        if Instant::now() >= deadline {
            bail!("no leader found within {wait:?}: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader's last log index: the difference over a run is the number of Raft entries
/// it appended, which shows whether commands share entries.
pub async fn last_log_index(http: &reqwest::Client, url: &str) -> Option<u64> {
    cluster_json(http, url).await.ok()?["last_log_index"].as_u64()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(pageserver_controller::loopback::free_port()?)
}

/// The release binary next to this one (`cargo build --release` puts both in one folder).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the bench executable")?;
    let bin = me.with_file_name("pageserver-controller");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --release --workspace) or pass \
             --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

pub struct LocalReplica {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// Replicas 1..=n of a fresh cluster on loopback, in a temporary folder.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub replicas: BTreeMap<u64, LocalReplica>,
    initial_cluster: String,
    extra_args: Vec<String>,
}

impl LocalCluster {
    /// Starts `n` replicas of `bin serve` with `extra_args`; returns once they run (call
    /// [`discover`] to wait for a leader).
    pub fn start(bin: &Path, n: u64, extra_args: &[String]) -> anyhow::Result<LocalCluster> {
        let dir = tempfile::Builder::new()
            .prefix("psc-bench-")
            .tempdir()
            .context("creating a temporary folder")?;
        let mut replicas = BTreeMap::new();
        for id in 1..=n {
            replicas.insert(
                id,
                LocalReplica {
                    id,
                    port: free_port()?,
                    data_dir: dir.path().join(format!("replica-{id}")),
                    log: dir.path().join(format!("replica-{id}.log")),
                    child: None,
                },
            );
        }
        let initial_cluster = replicas
            .values()
            .map(|r| format!("{}=http://127.0.0.1:{}", r.id, r.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            dir,
            bin: bin.to_owned(),
            replicas,
            initial_cluster,
            extra_args: extra_args.to_vec(),
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        // Where the replicas' logs are while it runs (the folder goes when it stops).
        eprintln!("started a local cluster in {}", cluster.root().display());
        Ok(cluster)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn urls(&self) -> Vec<String> {
        self.replicas.keys().map(|id| self.url(*id)).collect()
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.replicas[&id].port)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.replicas[&id].child.is_some()
    }

    /// Process ids of the running replicas.
    pub fn pids(&self) -> Vec<u32> {
        self.replicas
            .keys()
            .filter_map(|id| self.pid(*id))
            .collect()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replicas[&id].child.as_ref().map(Child::id)
    }

    /// Starts (or restarts) replica `id`; its log is appended to `replica-ID.log`.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let replica = self.replicas.get_mut(&id).context("unknown replica")?;
        if replica.child.is_some() {
            bail!("replica {id} is already running");
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&replica.log)
            .context("opening the replica's log file")?;
        let mut command = Command::new(&self.bin);
        command
            .args(["--log", "info,openraft=warn", "serve"])
            .args(["--id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", replica.port)])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .args(["--initial-cluster", &self.initial_cluster])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_tied(command, libc::SIGKILL)
            .with_context(|| format!("starting {}", self.bin.display()))?;
        replica.child = Some(child);
        Ok(())
    }

    /// Sends `signal` to replica `id` and waits (up to `wait`) for it to exit; SIGKILL
    /// after that. Returns when the process is gone.
    pub fn stop(&mut self, id: u64, signal: i32, wait: Duration) -> anyhow::Result<()> {
        let replica = self.replicas.get_mut(&id).context("unknown replica")?;
        let Some(mut child) = replica.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on a child process we started and have not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + wait;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                child.kill().ok();
                child.wait()?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Resident set size of replica `id`, from /proc.
    pub fn rss_bytes(&self, id: u64) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(id)?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn data_dir_bytes(&self, id: u64) -> u64 {
        dir_size(&self.replicas[&id].data_dir)
    }

    pub fn log_text(&self, id: u64) -> String {
        std::fs::read_to_string(&self.replicas[&id].log).unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
}

/// User + system CPU seconds consumed so far by processes `pids` (from /proc; `None`
/// without pids or if one is gone).
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        total += (utime + stime) / ticks;
    }
    Some(total)
}

/// Bytes of all files under `path` (apparent sizes).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `micros=N` figures of log lines containing `event` (e.g. "built snapshot"); the
/// field itself, not one whose name ends in it (`frozen_micros=`).
pub fn logged_micros(log: &str, event: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains(event))
        .filter_map(|line| {
            let at = line
                .split_ascii_whitespace()
                .find_map(|field| field.strip_prefix("micros="))?;
            let digits: String = at.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_timings_are_read_from_text_logs() {
        let log = "2025 INFO built snapshot last_log_id=Some(1-1-5000) bytes=123 frozen_micros=9 micros=4567\n\
                   2025 INFO installed snapshot last_log_id=x bytes=9 micros=89\n\
                   2025 INFO built snapshot bytes=1 micros=12 more=1\n";
        assert_eq!(logged_micros(log, "built snapshot"), vec![4567, 12]);
        assert_eq!(logged_micros(log, "installed snapshot"), vec![89]);
        assert!(logged_micros(log, "loaded snapshot").is_empty());
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(&[me]).is_some_and(|s| s >= 0.0));
        assert_eq!(cpu_seconds(&[]), None);
    }
}
