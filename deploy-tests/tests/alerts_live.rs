//! `deploy/prometheus/alerts.yaml` on a live cluster: a real Prometheus scrapes three real
//! replicas on loopback and evaluates the shipped rules while replicas are killed and
//! come back, so the rules are shown to work on the series the replicas really export
//! (names, labels, what a dead target leaves behind), not only on series written by hand
//! (`alerts.test.yaml`).
//!
//! The rules are the shipped ones with every `for:` set to zero (the faults last seconds,
//! not minutes) and evaluated every second. Each step waits, with a deadline, until
//! Prometheus fires what the fault must fire, then watches the alerts the fault must not
//! fire for at least six seconds: firing in half of their evaluations or more fails the
//! test. The faults: one follower killed, both, the leader and a follower, and the
//! leader cut off from its peers (through the chaos harness's proxy on the
//! replica-to-replica links).
//!
//! No test harness (`harness = false`): this binary is also the replicas' program, as
//! the chaos binary is, so the replicas are built from the same sources as the test
//! without a separate build. `chaos::EMBEDDED_REPLICA_COMMAND` as the first argument runs
//! the controller's own command line.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos::cluster::{Cluster, ClusterConfig, ServerCommand};
use deploy_tests::tools::{prometheus, repo_root};
use serde_json::Value;

const NAME: &str =
    "the_alert_rules_fire_on_a_live_cluster_as_replicas_die_come_back_and_are_cut_off";

/// The alerts these faults concern; the others (rates over hours, disks) are left alone.
const FAULT_ALERTS: [&str; 6] = [
    "PscReplicaDown",
    "PscVoterMissing",
    "PscMajorityOfVotersMissing",
    "PscNoLeader",
    "PscLeaderWithoutQuorum",
    "PscTwoLeaders",
];

const DEADLINE: Duration = Duration::from_secs(60);

/// How long, at least, [`Prometheus::check_quiet`] watches the alerts that must be quiet.
const QUIET_WINDOW_SECS: f64 = 6.0;

/// The series the test's copy of the rules records at every evaluation.
const EVALUATED: &str = "test_rules_evaluated";

/// The signal that stops Prometheus if this process dies first.
const SIGKILL: i32 = 9;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(exit) = chaos::run_if_embedded_replica(&args) {
        return exit;
    }
    // What libtest would do with `--list` and a name filter.
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    if !selected(&args[1..]) {
        println!("\nrunning 0 tests (filtered out: {NAME})\n");
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(scenario()) {
        Ok(()) => {
            println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "test {NAME} ... FAILED\n\n{e:#}\n\ntest result: FAILED. 0 passed; 1 failed\n"
            );
            ExitCode::FAILURE
        }
    }
}

/// Whether libtest-style arguments select this test: not `--ignored` (it is not
/// ignored), not skipped by a `--skip` it contains, and no name filter or one it
/// contains (equals, with `--exact`).
fn selected(args: &[String]) -> bool {
    const WITH_VALUE: [&str; 7] = [
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |filter: &str| {
        if exact {
            NAME == filter
        } else {
            NAME.contains(filter)
        }
    };
    let mut filters = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--ignored" {
            return false;
        }
        if let Some(skip) = arg.strip_prefix("--skip=") {
            if matches(skip) {
                return false;
            }
        } else if arg == "--skip" {
            if args.next().is_some_and(|skip| matches(skip)) {
                return false;
            }
        } else if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters.is_empty() || filters.iter().any(|f| matches(f))
}

async fn scenario() -> anyhow::Result<()> {
    // The time parser, checked on what Prometheus writes (no harness for unit tests).
    for written in ["2026-12-07T12:00:00.5Z", "2026-12-07T14:00:00.5+02:00"] {
        anyhow::ensure!(
            rfc3339_seconds(written) == Some(1_796_644_800.5),
            "{written} read as {:?}",
            rfc3339_seconds(written)
        );
    }
    // Found (or unpacked) before any replica starts.
    let prometheus_bin = prometheus();
    let root = tempfile::tempdir()?;
    let started = Instant::now();
    let progress = |what: &str| {
        eprintln!(
            "[alerts live {:>5.1}s] {what}",
            started.elapsed().as_secs_f64()
        )
    };
    let mut cluster = Cluster::start(ClusterConfig {
        replicas: 3,
        root: root.path().join("cluster"),
        server: ServerCommand::embedded(std::env::current_exe()?),
        serve_args: Vec::new(),
        seed: 1,
        disk_mib: None,
        auth: false,
        tls: false,
    })
    .await?;
    // A replica keeps its address when it comes back.
    let addresses: std::collections::BTreeMap<u64, String> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.replica(id).listen.to_string()))
        .collect();
    let instance = |id: u64| addresses[&id].clone();
    let targets: Vec<String> = addresses.values().cloned().collect();
    let prometheus = Prometheus::start(&prometheus_bin, root.path(), &targets)?;
    progress("three replicas and Prometheus up");

    let result = async {
        // Healthy: every replica scraped, rules evaluated since, no fault alert.
        prometheus
            .wait_until("every replica scraped", |p| async move {
                Ok(p.query_scalar("count(up == 1)").await? == Some(3.0))
            })
            .await?;
        prometheus
            .check_quiet(&FAULT_ALERTS, &targets, "a healthy cluster")
            .await?;

        // One follower down.
        let leader = cluster.wait_healthy(DEADLINE).await?.leader;
        let followers: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        cluster.kill(followers[0])?;
        progress(&format!("killed follower {}", followers[0]));
        prometheus
            .wait_firing(&[
                ("PscReplicaDown", Some(instance(followers[0]))),
                ("PscVoterMissing", None),
            ])
            .await?;
        prometheus
            .check_quiet(
                &[
                    "PscMajorityOfVotersMissing",
                    "PscNoLeader",
                    "PscLeaderWithoutQuorum",
                    "PscTwoLeaders",
                ],
                &[instance(leader), instance(followers[1])],
                "one follower down",
            )
            .await?;

        // Both followers down: the leader alone still calls itself leader.
        cluster.kill(followers[1])?;
        progress(&format!(
            "killed follower {}: the leader is alone",
            followers[1]
        ));
        prometheus
            .wait_firing(&[
                ("PscMajorityOfVotersMissing", None),
                ("PscLeaderWithoutQuorum", None),
                ("PscReplicaDown", Some(instance(followers[1]))),
            ])
            .await?;
        prometheus
            .check_quiet(
                &["PscNoLeader", "PscTwoLeaders"],
                &[instance(leader)],
                "the leader alone",
            )
            .await?;

        // Back: everything resolves.
        for id in &followers {
            cluster.launch(*id)?;
        }
        let leader = cluster.wait_healthy(DEADLINE).await?.leader;
        progress("followers back");
        prometheus.wait_quiet(&FAULT_ALERTS).await?;

        // The leader and a follower down: the last follower knows no leader.
        let follower = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a follower");
        let remaining = cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader && *id != follower)
            .expect("a third replica");
        cluster.kill(leader)?;
        cluster.kill(follower)?;
        progress(&format!(
            "killed leader {leader} and follower {follower}: {remaining} is alone"
        ));
        prometheus
            .wait_firing(&[
                ("PscNoLeader", None),
                ("PscMajorityOfVotersMissing", None),
                ("PscReplicaDown", Some(instance(leader))),
                ("PscReplicaDown", Some(instance(follower))),
            ])
            .await?;
        prometheus
            .check_quiet(
                &["PscLeaderWithoutQuorum", "PscTwoLeaders"],
                &[instance(remaining)],
                "one follower alone",
            )
            .await?;

        for id in [leader, follower] {
            cluster.launch(id)?;
        }
        let leader = cluster.wait_healthy(DEADLINE).await?.leader;
        prometheus.wait_quiet(&FAULT_ALERTS).await?;
        progress("all back, every fault alert resolved");

        // The leader cut off from its peers (every replica still scraped): the others
        // elect a new one while the old one still calls itself leader.
        cluster.proxy().isolate(leader);
        progress(&format!("isolated leader {leader}"));
        prometheus
            .wait_firing(&[("PscLeaderWithoutQuorum", None), ("PscTwoLeaders", None)])
            .await?;
        prometheus
            .check_quiet(
                &[
                    "PscReplicaDown",
                    "PscVoterMissing",
                    "PscMajorityOfVotersMissing",
                    "PscNoLeader",
                ],
                &targets,
                "the leader cut off",
            )
            .await?;
        cluster.proxy().heal();
        cluster.wait_healthy(DEADLINE).await?;
        prometheus.wait_quiet(&FAULT_ALERTS).await?;
        progress("healed, every fault alert resolved");
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("Prometheus' log:\n{}", prometheus.log());
        for id in cluster.ids() {
            eprintln!(
                "replica {id}'s log, last lines:\n{}",
                cluster.log_tail(id, 40)
            );
        }
    }
    result
}

/// A firing alert: its name and its `instance` label, if it has one.
type Firing = BTreeSet<(String, Option<String>)>;

fn check_none(firing: &Firing, quiet: &[&str], when: &str) -> anyhow::Result<()> {
    let wrong: Vec<_> = firing
        .iter()
        .filter(|(name, _)| quiet.contains(&name.as_str()))
        .collect();
    if !wrong.is_empty() {
        bail!("with {when}, these fired: {wrong:?} (all firing: {firing:?})");
    }
    Ok(())
}

/// A Prometheus server on loopback with the shipped rules, stopped on drop.
struct Prometheus {
    /// Behind a lock so that the waits, which only borrow the server, can see it exit.
    child: std::sync::Mutex<Child>,
    url: String,
    http: reqwest::Client,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Prometheus {
    fn start(program: &Path, dir: &Path, targets: &[String]) -> anyhow::Result<Prometheus> {
        let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yaml"))?;
        let mut changed = 0;
        let rules: String = rules
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("for: ") {
                    changed += 1;
                    let indent = &line[..line.len() - line.trim_start().len()];
                    format!("{indent}for: 0s\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        if changed < FAULT_ALERTS.len() {
            bail!("alerts.yaml has {changed} `for:` lines; the rewrite no longer fits it");
        }
        // A series written at each evaluation of the group, so that a window's
        // evaluations are counted rather than assumed one a second (a busy machine skips
        // some). It goes last in the file, so into the one group, beside the alerts.
        if rules.matches("\n  - name: ").count() != 1 {
            bail!("alerts.yaml no longer has one rule group; the evaluation counter needs one");
        }
        let rules = format!("{rules}      - record: {EVALUATED}\n        expr: vector(1)\n");
        std::fs::write(dir.join("rules.yaml"), rules)?;
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.join("prometheus.yaml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  \
                 evaluation_interval: 1s\nrule_files: [rules.yaml]\nscrape_configs:\n  \
                 - job_name: pageserver-controller\n    static_configs:\n      \
                 - targets: [{targets}]\n        labels: {{namespace: test}}\n"
            ),
        )?;
        let port = pageserver_controller::loopback::free_port()?;
        let log = dir.join("prometheus.log");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut command = Command::new(program);
        command
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yaml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Its API writes times in the local zone: UTC keeps them simple to read.
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        // Killed with this process however it ends, as the replicas are.
        let child = pageserver_controller::child_process::spawn_tied(command, SIGKILL)
            .context("starting prometheus")?;
        Ok(Prometheus {
            child: std::sync::Mutex::new(child),
            url: format!("http://127.0.0.1:{port}"),
            http,
            log,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error if the server has exited (a port taken since it was chosen, a config it
    /// refused): the waits fail at once with its log rather than at their deadline.
    fn still_running(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.try_wait()? {
            Some(status) => bail!("Prometheus exited ({status}); its log:\n{}", self.log()),
            None => Ok(()),
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if body["status"] != "success" {
            bail!("Prometheus answered {body}");
        }
        Ok(body["data"].clone())
    }

    /// The value of an instant query that yields one sample; `None` if none.
    async fn query_scalar(&self, expr: &str) -> anyhow::Result<Option<f64>> {
        self.query_scalar_at(expr, None).await
    }

    /// The same, evaluated at `at` (seconds, Prometheus' clock) when given.
    async fn query_scalar_at(&self, expr: &str, at: Option<&str>) -> anyhow::Result<Option<f64>> {
        let mut query = vec![("query", expr)];
        query.extend(at.map(|at| ("time", at)));
        let data = self.api("query", &query).await?;
        Ok(data["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|sample| sample["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Prometheus' clock, in seconds.
    async fn now(&self) -> anyhow::Result<f64> {
        self.query_scalar("vector(time())")
            .await?
            .context("time() answered nothing")
    }

    /// Waits until every rule group has been evaluated after `since`.
    async fn wait_evaluated_after(&self, since: f64) -> anyhow::Result<()> {
        self.wait_until("the rules to be evaluated", |p| async move {
            let groups = p.api("rules", &[]).await?;
            let groups = groups["groups"].as_array().cloned().unwrap_or_default();
            let mut evaluated = !groups.is_empty();
            for group in &groups {
                let at = group["lastEvaluation"]
                    .as_str()
                    .and_then(rfc3339_seconds)
                    .with_context(|| format!("no evaluation time in {group}"))?;
                // A misread time would make this wait pass at once or never.
                if (at - since).abs() > 3_600.0 && at > 0.0 {
                    bail!(
                        "read {at} from {}, far from {since}",
                        group["lastEvaluation"]
                    );
                }
                // An evaluation that started after `since` may still be scheduled for
                // the tick before it: one interval more.
                evaluated &= at > since + 1.0;
            }
            Ok(evaluated)
        })
        .await
    }

    async fn firing(&self) -> anyhow::Result<Firing> {
        let data = self.api("alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["labels"]["instance"].as_str().map(str::to_owned),
                )
            })
            .collect())
    }

    /// Waits until each (alert, instance) fires (any instance where `None`); what must
    /// stay quiet meanwhile is [`Prometheus::check_quiet`]'s.
    async fn wait_firing(&self, expected: &[(&str, Option<String>)]) -> anyhow::Result<()> {
        let mut last = Firing::new();
        let end = Instant::now() + DEADLINE;
        loop {
            last = self.firing().await.unwrap_or(last);
            let all = expected.iter().all(|(name, instance)| {
                last.iter().any(|(n, i)| {
                    n == name && (instance.is_none() || i.as_ref() == instance.as_ref())
                })
            });
            if all {
                return Ok(());
            }
            self.still_running()?;
            if Instant::now() > end {
                bail!("waited {DEADLINE:?} for {expected:?} to fire; firing: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until none of `alerts` fires, in an evaluation after the call.
    async fn wait_quiet(&self, alerts: &[&str]) -> anyhow::Result<()> {
        let since = self.now().await?;
        self.wait_evaluated_after(since).await?;
        let end = Instant::now() + DEADLINE;
        loop {
            let firing = self.firing().await?;
            if check_none(&firing, alerts, "everything back").is_ok() {
                return Ok(());
            }
            if Instant::now() > end {
                return check_none(
                    &firing,
                    alerts,
                    &format!("everything back for {DEADLINE:?}"),
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Fails if one of `quiet`, or `PscReplicaDown` for one of the replicas that run
    /// (`up`), fired in half or more of the evaluations of a window of at least
    /// [`QUIET_WINDOW_SECS`] after the call (evaluations counted, not assumed). A stray
    /// evaluation or two is tolerated (one slow scrape on a busy machine marks a live
    /// replica down for an evaluation, and with every `for:` at zero that fires: not
    /// what a rule says); an alert that holds, or flaps every other evaluation, is not.
    async fn check_quiet(&self, quiet: &[&str], up: &[String], when: &str) -> anyhow::Result<()> {
        let since = self.now().await?;
        self.wait_evaluated_after(since + QUIET_WINDOW_SECS).await?;
        let end = self.now().await?;
        // Whole seconds, so that the window starts after the call.
        let window = format!("[{}s]", (end - since).floor());
        let at = end.to_string();
        let evaluations = self
            .query_scalar_at(&format!("count_over_time({EVALUATED}{window})"), Some(&at))
            .await?
            .context("no evaluations counted in the window")?;
        if evaluations < 3.0 {
            bail!("only {evaluations} evaluations in {window}: Prometheus is not keeping up");
        }
        let expr = format!("count_over_time(ALERTS{{alertstate=\"firing\"}}{window})");
        let data = self
            .api("query", &[("query", &expr), ("time", &at)])
            .await?;
        let mut held = Vec::new();
        for sample in data["result"].as_array().into_iter().flatten() {
            let name = sample["metric"]["alertname"].as_str().unwrap_or_default();
            let instance = sample["metric"]["instance"].as_str();
            let count: f64 = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no count in {sample}"))?;
            let concerned = quiet.contains(&name)
                || (name == "PscReplicaDown"
                    && instance.is_some_and(|i| up.iter().any(|u| u == i)));
            if concerned && count * 2.0 >= evaluations {
                held.push(format!("{name} {instance:?}: {count} of {evaluations}"));
            }
        }
        if !held.is_empty() {
            bail!("with {when}, these fired in half the evaluations or more: {held:?}");
        }
        Ok(())
    }

    async fn wait_until<'a, F, Fut>(&'a self, what: &str, check: F) -> anyhow::Result<()>
    where
        F: Fn(&'a Prometheus) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let end = Instant::now() + DEADLINE;
        loop {
            let outcome = check(self).await;
            if matches!(outcome, Ok(true)) {
                return Ok(());
            }
            self.still_running()?;
            if Instant::now() > end {
                bail!("waited {DEADLINE:?} for {what}: last {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time as Prometheus writes it
/// (`2026-12-07T12:00:00.123456789Z`, or with an offset such as `+02:00`), without a
/// date crate.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    // The zone: `Z`, or a sign and hh:mm after the seconds.
    let (clock, offset) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0.0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1.0 } else { 1.0 };
        let (h, m) = zone[1..].split_once(':')?;
        let minutes = h.parse::<f64>().ok()? * 60.0 + m.parse::<f64>().ok()?;
        (clock, sign * minutes * 60.0)
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = clock.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3_600.0 + min * 60.0 + s - offset)
}
