//! One chaos run, start to verdict.
//!
//! Start a fresh cluster, start the traffic, then inject faults one at a time in rounds
//! (each round every enabled fault kind once, in an order drawn from the seed), each
//! bracketed by health checks: the cluster must be healthy before a fault, and healthy
//! again within the patience after it was undone. Stop the traffic, read every shard
//! back through every replica, and hand the history to the checker.
//!
//! The run goes on until the duration has passed *and* the current round is complete, so
//! every enabled fault kind is injected at least once and equally often. The same seed
//! gives the same schedule (faults, targets, durations, client choices); the timing of
//! real processes still differs from one run to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use pageserver_controller::domain::TenantShardId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker;
use crate::cluster::{Cluster, ClusterConfig, ServerCommand};
use crate::faults::{FaultKind, Injector, Timings};
use crate::history::{FaultSpan, History, Request};
use crate::report::{self, OpCounts, Summary};
use crate::scenarios::Aim;
use crate::traffic::{execute, Endpoints, Traffic, TrafficConfig};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub replicas: u64,
    /// Faults are injected for at least this long (the last round is completed).
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    /// A fixed sequence of faults to inject once each instead of rounds (a named
    /// scenario).
    pub script: Option<Vec<(FaultKind, Aim)>>,
    /// Run folders are created below this directory.
    pub out: PathBuf,
    pub server: ServerCommand,
    pub serve_args: Vec<String>,
    pub traffic: TrafficConfig,
    pub timings: Timings,
    /// Pause between one fault's recovery and the next fault, drawn in this range.
    pub quiet_ms: (u64, u64),
    /// Check the history so far after every this many faults, to stop at the first
    /// violation (0: only at the end).
    pub check_every: usize,
    /// Keep the run folder even when the run passed.
    pub keep: bool,
    /// Authentication on, as deployed (see [`ClusterConfig::auth`]).
    pub auth: bool,
    /// TLS on every listener, as deployed (see [`ClusterConfig::tls`]).
    pub tls: bool,
    pub progress_every: Duration,
    /// The command line that replays this run, for the report.
    pub replay: String,
}

/// Size of each replica's own disk when a disk-full fault is enabled: far more than a run
/// writes, so only the fault fills it.
const DISK_MIB: u64 = 256;

impl RunConfig {
    fn needs_own_disks(&self) -> bool {
        let scripted = self.script.iter().flatten().map(|(kind, _)| *kind);
        self.faults
            .iter()
            .copied()
            .chain(scripted)
            .any(FaultKind::needs_own_disks)
    }

    /// `serve` flags that make snapshots and log purges frequent, so that catching up from
    /// a snapshot happens in every run.
    pub fn default_serve_args() -> Vec<String> {
        ["--snapshot-every", "200", "--snapshot-keep-entries", "50"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// The result of a run: the summary, and the folder kept (always on failure).
pub struct RunResult {
    pub summary: Summary,
    pub folder: Option<PathBuf>,
}

/// Shared with the progress printer.
#[derive(Default)]
struct Progress {
    faults: usize,
    current: String,
}

pub async fn run(config: RunConfig) -> anyhow::Result<RunResult> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let folder = tempfile::Builder::new()
        .prefix(&format!("run-seed{}-", config.seed))
        .tempdir_in(&config.out)
        .context("creating the run folder")?
        .keep();
    tracing::info!(folder = %folder.display(), seed = config.seed, "chaos run starting");

    let mut cluster = Cluster::start(ClusterConfig {
        replicas: config.replicas,
        root: folder.clone(),
        server: config.server.clone(),
        serve_args: config.serve_args.clone(),
        seed: config.seed,
        disk_mib: config.needs_own_disks().then_some(DISK_MIB),
        auth: config.auth,
        tls: config.tls,
    })
    .await
    .context("starting the cluster")?;
    // A run that ends in an error keeps its folder: keep what was on the disks too.
    cluster.keep_disk_contents(true);
    let history = History::new();
    let endpoints = Endpoints::new(cluster.endpoints());
    let traffic = Traffic::start(
        endpoints,
        history.clone(),
        TrafficConfig {
            token: cluster.token(),
            root_certificate: cluster
                .tls()
                .map(|tls| tls.root_certificate())
                .transpose()?,
            ..config.traffic.clone()
        },
    );

    let progress = Arc::new(Mutex::new(Progress::default()));
    let printer = tokio::spawn(print_progress(
        history.clone(),
        progress.clone(),
        config.progress_every,
        started,
    ));

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut faults: Vec<FaultSpan> = Vec::new();
    let mut liveness: Vec<String> = Vec::new();
    let mut filler = 0u64;
    let mut previous_target = None;
    'rounds: loop {
        let round: Vec<(FaultKind, Aim)> = match &config.script {
            Some(script) => script.clone(),
            None => {
                let mut kinds = config.faults.clone();
                kinds.shuffle(&mut rng);
                kinds.into_iter().map(|k| (k, Aim::Drawn)).collect()
            }
        };
        for (kind, aim) in round {
            let before = match cluster.wait_healthy(config.timings.patience).await {
                Ok(health) => health,
                Err(e) => {
                    liveness.push(format!("before fault {} ({kind}): {e:#}", faults.len() + 1));
                    break 'rounds;
                }
            };
            {
                let mut p = progress.lock().expect("progress lock");
                p.current = kind.name().to_owned();
            }
            tracing::info!(fault = %kind, leader = before.leader, term = before.term, "injecting");
            let mut injector = Injector {
                cluster: &mut cluster,
                rng: &mut rng,
                history: &history,
                timings: &config.timings,
                filler_counter: &mut filler,
                aim: match aim {
                    Aim::Drawn => None,
                    Aim::SameAsPrevious => previous_target,
                },
            };
            let mut span = match injector.inject(kind, before.leader).await {
                Ok(span) => span,
                Err(e) => {
                    liveness.push(format!(
                        "fault {} ({kind}) could not be carried out: {e:#}",
                        faults.len() + 1
                    ));
                    break 'rounds;
                }
            };
            previous_target = span.targets.first().copied();
            let recovered = cluster.wait_healthy(config.timings.patience).await;
            span.healthy_us = recovered.as_ref().ok().map(|_| history.now_us());
            faults.push(span);
            {
                let mut p = progress.lock().expect("progress lock");
                p.faults = faults.len();
                p.current = String::from("-");
            }
            if let Err(e) = recovered {
                liveness.push(format!(
                    "fault {} ({kind}) did not heal: {e:#}",
                    faults.len()
                ));
                break 'rounds;
            }
            for (id, status) in cluster.exited() {
                liveness.push(format!(
                    "replica {id} exited on its own ({status}) during fault {} ({kind}):\n{}",
                    faults.len(),
                    cluster.log_tail(id, 15)
                ));
            }
            if !liveness.is_empty() {
                break 'rounds;
            }
            if config.check_every > 0 && faults.len().is_multiple_of(config.check_every) {
                let verdict = checker::check(&history.ops());
                if !verdict.violations.is_empty() {
                    tracing::error!(
                        violations = verdict.violations.len(),
                        "violation found; stopping"
                    );
                    break 'rounds;
                }
            }
            let (min, max) = config.quiet_ms;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(min..=max))).await;
        }
        if config.script.is_some() || started.elapsed() >= config.duration {
            break;
        }
    }

    tracing::info!("stopping the traffic");
    // The last fault's write gap ends here: after it only the final reads run.
    let traffic_stopped_us = history.now_us();
    traffic.stop().await;
    if let Err(e) = recover_everything(&mut cluster, &config.timings).await {
        liveness.push(format!("after the last fault: {e:#}"));
    }
    if liveness.is_empty() {
        if let Err(e) = final_reads(&cluster, &history).await {
            liveness.push(format!("final reads: {e:#}"));
        }
        match converged(&cluster).await {
            Ok(()) => {}
            Err(e) => liveness.push(format!("at the end: {e:#}")),
        }
    }
    printer.abort();
    let proxy_stats = cluster.proxy().stats();
    tracing::info!(stats = ?proxy_stats, "peer traffic through the proxy");
    let ops = history.ops();
    tracing::info!(ops = ops.len(), "checking the history");
    let verdict = checker::check(&ops);
    let summary = Summary {
        seed: config.seed,
        replicas: config.replicas,
        auth: config.auth,
        tls: config.tls,
        elapsed: started.elapsed(),
        counts: OpCounts::of(&ops),
        latencies: report::latencies(&ops),
        impacts: report::impacts(&ops, &faults, traffic_stopped_us),
        liveness,
        verdict,
        peer_connections: proxy_stats.accepted,
        unattributed_connections: proxy_stats.unidentified,
        replay: config.replay.clone(),
    };
    let keep = config.keep || !summary.passed();
    cluster.keep_disk_contents(keep);
    cluster.shutdown();
    drop(cluster);
    if keep {
        report::write_folder(&folder, &summary, &ops, &faults)?;
        Ok(RunResult {
            summary,
            folder: Some(folder),
        })
    } else {
        std::fs::remove_dir_all(&folder)
            .with_context(|| format!("removing {}", folder.display()))?;
        Ok(RunResult {
            summary,
            folder: None,
        })
    }
}

/// Undoes anything a failed fault may have left: links, paused or stopped replicas.
async fn recover_everything(cluster: &mut Cluster, timings: &Timings) -> anyhow::Result<()> {
    cluster.proxy().heal();
    for id in cluster.ids() {
        if cluster.is_paused(id) {
            cluster.resume(id)?;
        }
        if !cluster.is_running(id) && cluster.members().contains(&id) {
            cluster.launch(id)?;
        }
    }
    cluster.wait_healthy(timings.patience).await?;
    Ok(())
}

/// Reads every shard the history mentions back through every replica, recorded as the
/// client `final`: an inspect of each shard, and the newest acknowledged generation of
/// each validated in batches, through each replica. The checker then sees whether every
/// acknowledged generation survived on every replica (a validate answering false alone
/// cannot tell a lost generation from one superseded by a write of unknown outcome; the
/// inspect says which).
async fn final_reads(cluster: &Cluster, history: &History) -> anyhow::Result<()> {
    let ops = history.ops();
    let newest = crate::history::newest_generations(&ops);
    let mut shards: BTreeSet<TenantShardId> = newest.keys().copied().collect();
    for op in &ops {
        match &op.request {
            Request::Attach { shard, .. }
            | Request::Migrate { shard, .. }
            | Request::Inspect { shard } => {
                shards.insert(*shard);
            }
            Request::Validate { tenants } => shards.extend(tenants.iter().map(|(s, _)| *s)),
            Request::ReAttach { .. } => {}
        }
    }
    let members = cluster.members().to_vec();
    tracing::info!(shards = shards.len(), "final reads");
    for via in &members {
        for shard in &shards {
            read_until_answered(cluster, history, *via, Request::Inspect { shard: *shard }).await?;
        }
    }
    let pairs: Vec<(TenantShardId, u32)> = newest.into_iter().collect();
    for via in &members {
        for chunk in pairs.chunks(1_000) {
            let request = Request::Validate {
                tenants: chunk.to_vec(),
            };
            read_until_answered(cluster, history, *via, request).await?;
        }
    }
    Ok(())
}

async fn read_until_answered(
    cluster: &Cluster,
    history: &History,
    via: u64,
    request: Request,
) -> anyhow::Result<()> {
    let client = cluster.client(via, Duration::from_secs(15));
    history
        .read_until_answered(via, request, 20, Duration::from_millis(250), |request| {
            let client = &client;
            async move { execute(client, &request).await }
        })
        .await
}

/// Every replica lists the same shards with the same generations and nodes (reads are
/// linearizable on every replica, and nothing writes any more).
async fn converged(cluster: &Cluster) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..5 {
        let mut views = BTreeMap::new();
        for id in cluster.members() {
            let client = cluster.client(*id, Duration::from_secs(30));
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = client
                    .list_tenants(after, Some(10_000))
                    .await
                    .with_context(|| format!("listing shards through replica {id}"))?;
                let Some(last) = page.last() else { break };
                after = Some(last.tenant_shard_id);
                all.extend(page);
            }
            views.insert(*id, all);
        }
        let mut distinct: Vec<_> = views.values().collect();
        distinct.dedup();
        if distinct.len() == 1 {
            return Ok(());
        }
        last = views
            .iter()
            .map(|(id, v)| format!("replica {id}: {} shards", v.len()))
            .collect::<Vec<_>>()
            .join(", ");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("replicas list different registries: {last}")
}

async fn print_progress(
    history: History,
    progress: Arc<Mutex<Progress>>,
    every: Duration,
    started: Instant,
) {
    let mut seen = 0usize;
    let mut counts = OpCounts::default();
    loop {
        tokio::time::sleep(every).await;
        let new = history.answered_since(seen);
        seen += new.len();
        let add = OpCounts::of(&new);
        counts.ok += add.ok;
        counts.indeterminate += add.indeterminate;
        counts.refused += add.refused;
        counts.not_sent += add.not_sent;
        let (faults, current) = {
            let p = progress.lock().expect("progress lock");
            (p.faults, p.current.clone())
        };
        tracing::info!(
            "[{:>5.0}s] faults {faults} (now: {current}); ops {} ok, {} indeterminate, {} failed",
            started.elapsed().as_secs_f64(),
            counts.ok,
            counts.indeterminate,
            counts.failed()
        );
    }
}
