//! Fault schedules in one process: hundreds of seeds in minutes, with the same checker.
//!
//! Each seed builds a cluster of replicas in this process, each a real
//! `pageserver_controller::replica::Replica` (Raft, sled storage in a temporary folder,
//! write batching, read index), connected by [`network::SimNet`] instead of HTTP. Clients
//! call the replicas directly, routing writes to the leader the way the API's routing
//! layer does (a write answered "not the leader" was never proposed, so it is sent
//! again; any other failure is indeterminate). The seed draws the cluster size, a few
//! faults (isolate, cut, partition, lose, delay, crash and restart from disk), their
//! targets and durations, and every client choice.
//!
//! What this covers that the process harness does not: many more schedules, and message
//! level faults (one direction cut, answers lost after the request took effect). What it
//! does not: HTTP, forwarding, process death (a crash here is Raft's shutdown, then a
//! reopen of the same data dir). `crate::run` covers those with real processes.

pub mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use controller_raft::timing::Timing;
use controller_raft::Member;
use pageserver_controller::consensus::{LogStore, StateMachine};
use pageserver_controller::domain::{Generation, NodeId, TenantId, TenantShardId};
use pageserver_controller::replica::{Deadlines, ProposeError, Replica};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::checker::{self, Verdict};
use crate::history::{Answer, History, Outcome, Request};
use crate::proxy::Link;
use crate::report::OpCounts;
use network::{SimNet, SimNetwork, SimReadIndex};

/// What one seed does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Where the replicas' data dirs go (a folder per seed below it).
    pub root: PathBuf,
    /// Faults per seed.
    pub faults: usize,
    pub clients: usize,
    pub shards: u32,
}

/// What one seed found.
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub replicas: u64,
    pub faults: Vec<String>,
    pub counts: OpCounts,
    pub verdict: Verdict,
    /// The cluster did not recover after the faults were undone.
    pub liveness: Vec<String>,
    pub elapsed: Duration,
}

impl SeedResult {
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.liveness.is_empty()
    }
}

/// Timings of simulated replicas: quicker than the defaults, so a seed takes seconds.
fn timing() -> Timing {
    Timing {
        heartbeat_ms: 50,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        snapshot_every_entries: 100,
        keep_entries_behind_snapshot: 20,
    }
}

const DEADLINES: Deadlines = Deadlines {
    write: Duration::from_secs(2),
    read: Duration::from_secs(1),
};

/// The replicas of one seed.
struct SimCluster {
    net: Arc<SimNet>,
    root: PathBuf,
    ids: Vec<u64>,
    members: BTreeMap<u64, Member>,
}

impl SimCluster {
    async fn start(seed: u64, replicas: u64, root: &Path) -> anyhow::Result<SimCluster> {
        let ids: Vec<u64> = (1..=replicas).collect();
        let cluster = SimCluster {
            net: SimNet::new(seed),
            root: root.to_owned(),
            members: ids
                .iter()
                .map(|id| (*id, Member::new(format!("sim://replica-{id}"))))
                .collect(),
            ids,
        };
        for id in &cluster.ids {
            cluster.boot(*id).await?;
        }
        cluster
            .net
            .replica(1)
            .context("replica 1 just started")?
            .raft()
            .initialize(cluster.members.clone())
            .await
            .context("initializing the simulated cluster")?;
        Ok(cluster)
    }

    /// Opens replica `id`'s storage (retrying while a crashed instance still holds the
    /// sled lock) and starts it.
    async fn boot(&self, id: u64) -> anyhow::Result<()> {
        let dir = self.root.join(format!("replica-{id}"));
        std::fs::create_dir_all(&dir)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            match LogStore::open(&dir.join("log"), id, 16 << 20) {
                Ok(log) => break log,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(id, error = %e, "storage still held; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("opening the log"),
            }
        };
        let state_machine =
            StateMachine::open(&dir.join("snapshot")).context("opening the snapshot")?;
        let network = SimNetwork {
            from: id,
            net: self.net.clone(),
        };
        let replica = Arc::new(
            Replica::start(
                id,
                "sim",
                &timing(),
                DEADLINES,
                network,
                Arc::default(),
                log,
                state_machine,
            )
            .await?,
        );
        replica.serve_follower_reads(Arc::new(SimReadIndex {
            from: id,
            net: self.net.clone(),
        }));
        self.net.set_replica(id, Some(replica));
        Ok(())
    }

    /// Stops replica `id` and releases its storage (its data dir stays).
    async fn crash(&self, id: u64) {
        let Some(replica) = self.net.replica(id) else {
            return;
        };
        self.net.set_replica(id, None);
        replica.shutdown().await;
    }

    fn is_up(&self, id: u64) -> bool {
        self.net.replica(id).is_some()
    }

    /// The leader every running replica agrees on, if they do and it leads.
    fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for id in &self.ids {
            let replica = self.net.replica(*id)?;
            let theirs = replica.leader()?.0;
            if leader.is_some_and(|l| l != theirs) {
                return None;
            }
            leader = Some(theirs);
        }
        let leader = leader?;
        self.net.replica(leader)?.is_leader().then_some(leader)
    }

    /// Waits until every replica runs, agrees on a leader and applied the leader's log.
    async fn wait_settled(&self, within: Duration) -> Result<u64, String> {
        let end = Instant::now() + within;
        loop {
            if let Some(leader) = self.agreed_leader() {
                let last = self
                    .net
                    .replica(leader)
                    .map(|r| r.metrics().borrow().last_log_index)
                    .unwrap_or_default();
                let caught_up = self.ids.iter().all(|id| {
                    self.net
                        .replica(*id)
                        .is_some_and(|r| r.metrics().borrow().last_applied.map(|l| l.index) >= last)
                });
                if caught_up {
                    return Ok(leader);
                }
            }
            if Instant::now() >= end {
                let views: Vec<String> = self
                    .ids
                    .iter()
                    .map(|id| match self.net.replica(*id) {
                        Some(r) => {
                            let m = r.metrics().borrow().clone();
                            format!(
                                "{id}: {:?} leader {:?} applied {:?}",
                                m.state,
                                m.current_leader,
                                m.last_applied.map(|l| l.index)
                            )
                        }
                        None => format!("{id}: down"),
                    })
                    .collect();
                return Err(format!(
                    "no settled leader within {within:?} ({})",
                    views.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(&self) {
        for id in &self.ids {
            self.crash(*id).await;
        }
    }
}

/// Serves `request` on replica `via` as the API would: writes go to the leader (sent
/// again only when certainly not applied), reads are answered where they arrive.
async fn serve(net: &SimNet, via: u64, request: &Request) -> Outcome {
    let not_sent = |why: String| Outcome::NotSent { reason: why };
    let Some(replica) = net.replica(via) else {
        return not_sent(format!("replica {via} is down"));
    };
    let command = match request {
        Request::Validate { tenants } => {
            let pairs: Vec<(TenantShardId, Generation)> =
                tenants.iter().map(|(s, g)| (*s, Generation(*g))).collect();
            return match replica.read(|r| r.validate(pairs)).await {
                Ok(verdicts) => Outcome::Ok {
                    answer: Answer::Validated {
                        tenants: verdicts.iter().map(|v| (v.shard, v.valid)).collect(),
                    },
                },
                Err(e) => Outcome::Indeterminate {
                    reason: e.to_string(),
                },
            };
        }
        Request::Inspect { shard } => {
            return match replica.read(|r| r.attachment(shard)).await {
                Ok(attachment) => Outcome::Ok {
                    answer: Answer::Attachment {
                        attachment: attachment.map(|(g, n)| (g.0, n)),
                    },
                },
                Err(e) => Outcome::Indeterminate {
                    reason: e.to_string(),
                },
            };
        }
        write => write.command().expect("every other request is a write"),
    };
    // Route as the API's routing layer does: to the leader this replica knows of (over
    // the network), again while the answer is "not the leader" (nothing was applied),
    // for as long as it waits for a leader.
    let end = Instant::now() + LEADER_WAIT;
    loop {
        let leader = replica.leader().map(|(id, _)| id);
        let attempt = match leader {
            Some(leader) if leader == via => Some(replica.propose_one(command.clone()).await),
            Some(leader) => {
                let command = command.clone();
                match net
                    .forward(via, leader, |target| async move {
                        target.propose_one(command).await
                    })
                    .await
                {
                    Ok(answer) => Some(answer),
                    // The forwarded request never arrived: nothing was applied.
                    Err(network::Forwarded::NotDelivered) => None,
                    Err(network::Forwarded::AnswerLost) => {
                        return Outcome::Indeterminate {
                            reason: format!("no answer from leader {leader}"),
                        }
                    }
                }
            }
            None => None,
        };
        if let Some(outcome) = attempt.and_then(outcome_of) {
            return outcome;
        }
        if Instant::now() >= end {
            return not_sent("no leader took the write".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the caller learns from one replica's answer to a write; `None` for "not the
/// leader" (nothing was applied, route it again).
fn outcome_of(
    answer: Result<pageserver_controller::domain::Outcome, ProposeError>,
) -> Option<Outcome> {
    match answer {
        Ok(outcome) => Some(Outcome::of_applied(outcome)),
        Err(ProposeError::NotLeader { .. }) => None,
        // The replica says nothing was applied; the checker holds it to that.
        Err(e @ (ProposeError::Overloaded(_) | ProposeError::Stopped(_))) => {
            Some(Outcome::NotSent {
                reason: e.to_string(),
            })
        }
        Err(e) => Some(Outcome::Indeterminate {
            reason: e.to_string(),
        }),
    }
}

/// How long a write waits for a leader, as `serve --leader-wait-ms` does.
const LEADER_WAIT: Duration = Duration::from_secs(5);

fn shard(seed: u64, n: u32) -> TenantShardId {
    let mut bytes = [0u8; 16];
    bytes[0] = 0x51;
    bytes[1..9].copy_from_slice(&seed.to_be_bytes());
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    TenantShardId::unsharded(TenantId::from_bytes(bytes))
}

/// One sequential client: random requests to random replicas until stopped.
async fn client(
    name: String,
    mut rng: ChaCha8Rng,
    net: Arc<SimNet>,
    ids: Vec<u64>,
    shards: Vec<TenantShardId>,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let mut seen: BTreeMap<TenantShardId, u32> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let shard = *shards.choose(&mut rng).expect("shards");
        let node = NodeId(rng.gen_range(1..=3));
        let request = match rng.gen_range(0..100) {
            0..=34 => Request::Attach {
                shard,
                node: Some(node),
                generation_override: None,
            },
            35..=44 => Request::Attach {
                shard,
                node: None,
                generation_override: None,
            },
            45..=54 => Request::Migrate { shard, node },
            55..=79 => {
                let around = seen.get(&shard).copied().unwrap_or(1);
                Request::Validate {
                    tenants: vec![(shard, around.saturating_sub(1).max(1) + rng.gen_range(0..2))],
                }
            }
            80..=89 => Request::ReAttach { node },
            _ => Request::Inspect { shard },
        };
        let via = *ids.choose(&mut rng).expect("replicas");
        let call = history.begin(&name, via, request.clone());
        let outcome = serve(&net, via, &request).await;
        if let Outcome::Ok { answer } = &outcome {
            match answer {
                Answer::Generation {
                    generation: Some(g),
                }
                | Answer::Migrated { generation: g } => {
                    seen.insert(shard, *g);
                }
                Answer::ReAttached { tenants } => seen.extend(tenants.iter().copied()),
                _ => {}
            }
        }
        history.end(call, outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..25))).await;
    }
}

/// Injects one fault drawn from `rng`, holds it, and undoes it; returns its description.
async fn fault(cluster: &SimCluster, rng: &mut ChaCha8Rng) -> String {
    let ids = cluster.ids.clone();
    let leader = cluster.agreed_leader();
    let any = *ids.choose(rng).expect("replicas");
    let target = if rng.gen_bool(0.5) {
        leader.unwrap_or(any)
    } else {
        any
    };
    let hold = Duration::from_millis(rng.gen_range(200..=900));
    let net = &cluster.net;
    let described = match rng.gen_range(0..7) {
        0 => {
            net.isolate(target, &ids);
            format!("isolate {target}")
        }
        1 => {
            let other = *ids
                .iter()
                .filter(|i| **i != target)
                .collect::<Vec<_>>()
                .choose(rng)
                .expect("two replicas");
            net.set_link(target, *other, Link::Down);
            format!("cut {target} -> {other}")
        }
        2 => {
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let minority: Vec<u64> = shuffled[..(ids.len() - 1) / 2].to_vec();
            for a in &minority {
                for b in ids.iter().filter(|b| !minority.contains(b)) {
                    net.set_link(*a, *b, Link::Down);
                    net.set_link(*b, *a, Link::Down);
                }
            }
            format!("partition {minority:?}")
        }
        3 => {
            let p = rng.gen_range(0.05..0.4);
            for a in &ids {
                for b in &ids {
                    if a != b {
                        net.set_link(
                            *a,
                            *b,
                            Link::Lossy {
                                drop_probability: p,
                            },
                        );
                    }
                }
            }
            format!("lose {:.0}%", p * 100.0)
        }
        4 => {
            let ms = rng.gen_range(10..120);
            for a in &ids {
                for b in &ids {
                    if a != b {
                        net.set_link(*a, *b, Link::Delay { ms, jitter_ms: ms });
                    }
                }
            }
            format!("delay {ms} ms")
        }
        5 => {
            // The leader's peers hear it but it does not hear them: it appends and
            // replicates writes that it can never see committed; then it is cut off, and
            // the next leader commits those writes while the old one reports its
            // leadership lost. A write must not count as "not applied" then.
            let Some(leader) = leader else {
                return "deaf leader (no leader)".into();
            };
            for other in ids.iter().filter(|i| **i != leader) {
                net.set_link(*other, leader, Link::Down);
            }
            tokio::time::sleep(hold / 2).await;
            net.isolate(leader, &ids);
            tokio::time::sleep(hold * 2).await;
            net.heal();
            return format!("deaf leader {leader}");
        }
        _ => {
            cluster.crash(target).await;
            tokio::time::sleep(hold).await;
            if let Err(e) = cluster.boot(target).await {
                return format!("crash {target} (restart failed: {e:#})");
            }
            return format!("crash {target}");
        }
    };
    tokio::time::sleep(hold).await;
    net.heal();
    described
}

/// Runs one seed: cluster, clients, faults, recovery, final reads, verdict.
pub async fn run_seed(config: &SimConfig) -> anyhow::Result<SeedResult> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let replicas = if rng.gen_bool(0.25) { 5 } else { 3 };
    let root = config.root.join(format!("seed-{}", config.seed));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let cluster = SimCluster::start(config.seed, replicas, &root).await?;
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let shards: Vec<TenantShardId> = (0..config.shards).map(|n| shard(config.seed, n)).collect();
    let mut liveness = Vec::new();
    if let Err(e) = cluster.wait_settled(Duration::from_secs(20)).await {
        liveness.push(format!("no leader after start: {e}"));
    }
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            tokio::spawn(client(
                format!("client-{c}"),
                ChaCha8Rng::seed_from_u64(rng.gen()),
                cluster.net.clone(),
                cluster.ids.clone(),
                shards.clone(),
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut faults = Vec::new();
    for _ in 0..config.faults {
        faults.push(fault(&cluster, &mut rng).await);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.context("a client panicked")?;
    }
    let ending = Ending {
        seed: config.seed,
        replicas,
        faults,
        liveness,
        started,
        root: &root,
    };
    ending.conclude(&cluster, &history, &shards).await
}

/// How a seed ends: heal, settle, read everything back, stop, check, and keep the
/// history of a failure next to its data dirs.
struct Ending<'a> {
    seed: u64,
    replicas: u64,
    faults: Vec<String>,
    liveness: Vec<String>,
    started: Instant,
    root: &'a Path,
}

impl Ending<'_> {
    async fn conclude(
        mut self,
        cluster: &SimCluster,
        history: &History,
        shards: &[TenantShardId],
    ) -> anyhow::Result<SeedResult> {
        cluster.net.heal();
        for id in cluster.ids.clone() {
            if !cluster.is_up(id) {
                cluster.boot(id).await?;
            }
        }
        let read_back = match cluster.wait_settled(Duration::from_secs(30)).await {
            Ok(_) => final_reads(cluster, history, shards).await,
            Err(e) => Err(anyhow::anyhow!(e)),
        };
        if let Err(e) = read_back {
            self.liveness.push(format!("after the faults: {e}"));
        }
        cluster.shutdown().await;
        let ops = history.ops();
        let (verdict, ops) = tokio::task::spawn_blocking(move || (checker::check(&ops), ops))
            .await
            .context("the checker panicked")?;
        let result = SeedResult {
            seed: self.seed,
            replicas: self.replicas,
            faults: self.faults,
            counts: OpCounts::of(&ops),
            verdict,
            liveness: self.liveness,
            elapsed: self.started.elapsed(),
        };
        if result.passed() {
            let _ = std::fs::remove_dir_all(self.root);
        } else {
            crate::history::write_jsonl(&ops, &self.root.join("history.jsonl"))?;
        }
        Ok(result)
    }
}

/// Every shard read back through every replica, recorded as the client `final`; an error
/// if a replica of the settled cluster does not answer a read (a read that is never
/// answered could hide a lost generation).
async fn final_reads(
    cluster: &SimCluster,
    history: &History,
    shards: &[TenantShardId],
) -> anyhow::Result<()> {
    let newest = crate::history::newest_generations(&history.ops());
    for id in &cluster.ids {
        for shard in shards {
            read_until_answered(cluster, history, *id, Request::Inspect { shard: *shard }).await?;
        }
        let tenants: Vec<(TenantShardId, u32)> = newest.iter().map(|(s, g)| (*s, *g)).collect();
        if !tenants.is_empty() {
            read_until_answered(cluster, history, *id, Request::Validate { tenants }).await?;
        }
    }
    Ok(())
}

async fn read_until_answered(
    cluster: &SimCluster,
    history: &History,
    via: u64,
    request: Request,
) -> anyhow::Result<()> {
    history
        .read_until_answered(via, request, 20, Duration::from_millis(100), |request| {
            let net = &cluster.net;
            async move { serve(net, via, &request).await }
        })
        .await
}

/// Runs `count` seeds from `first`, `concurrency` at a time, printing progress; returns
/// every result (failures first).
pub async fn run_seeds(
    first: u64,
    count: u64,
    concurrency: usize,
    root: &Path,
    faults: usize,
) -> anyhow::Result<Vec<SeedResult>> {
    let started = Instant::now();
    let pending: Vec<u64> = (first..first + count).collect();
    let queue = Arc::new(std::sync::Mutex::new(pending.into_iter()));
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let results = results.clone();
        let failures = failures.clone();
        let root = root.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(seed) = queue.lock().expect("queue lock").next() else {
                    return Ok::<(), anyhow::Error>(());
                };
                let config = SimConfig {
                    seed,
                    root: root.clone(),
                    faults,
                    clients: 4,
                    shards: 6,
                };
                let result = run_seed(&config)
                    .await
                    .with_context(|| format!("seed {seed}"))?;
                if !result.passed() {
                    failures.lock().expect("failures lock").insert(seed);
                }
                results.lock().expect("results lock").push(result);
            }
        }));
    }
    let progress = {
        let results = results.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = results.lock().expect("results lock").len();
                let failed = failures.lock().expect("failures lock").clone();
                tracing::info!(
                    "[{:>5.0}s] {done} of {count} seeds done, failed: {failed:?}",
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for worker in workers {
        worker.await.context("a seed worker panicked")??;
    }
    progress.abort();
    let mut results = std::mem::take(&mut *results.lock().expect("results lock"));
    results.sort_by_key(|r| (r.passed(), r.seed));
    Ok(results)
}

/// Named regression scenarios that need message-level control.
pub mod scenario {
    use super::*;
    use network::RpcKind;

    /// Waits until `check` holds, polling, for at most `within`.
    async fn until(
        what: &str,
        within: Duration,
        mut check: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + within;
        while !check() {
            anyhow::ensure!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn leads(cluster: &SimCluster, id: u64) -> bool {
        cluster.net.replica(id).is_some_and(|r| r.is_leader())
    }

    /// A new cluster of `replicas` in `root/name` (emptied first), once it has a leader.
    async fn fresh(
        root: &Path,
        name: &str,
        seed: u64,
        replicas: u64,
    ) -> anyhow::Result<(PathBuf, SimCluster, u64)> {
        let root = root.join(name);
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        let cluster = SimCluster::start(seed, replicas, &root).await?;
        let leader = cluster
            .wait_settled(Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        Ok((root, cluster, leader))
    }

    /// Attach `shard` to `node`.
    fn attach(shard: TenantShardId, node: u64) -> Request {
        Request::Attach {
            shard,
            node: Some(NodeId(node)),
            generation_override: None,
        }
    }

    /// Serves `request` through replica `via`, recorded in `history` as `client`'s.
    async fn recorded(
        cluster: &SimCluster,
        history: &History,
        client: &str,
        via: u64,
        request: Request,
    ) -> Outcome {
        let call = history.begin(client, via, request.clone());
        let outcome = serve(&cluster.net, via, &request).await;
        history.end(call, outcome.clone());
        outcome
    }

    /// Proposes `request` on `replica` itself (no routing), recorded in `history` as
    /// `client`'s; "not the leader" is recorded as never sent, which the checker holds
    /// the replica to.
    async fn proposed_on(
        replica: Arc<Replica>,
        history: History,
        client: String,
        request: Request,
    ) -> anyhow::Result<Result<pageserver_controller::domain::Outcome, ProposeError>> {
        let command = request.command().context("a write")?;
        let call = history.begin(&client, replica.id(), request);
        let answer = replica.propose_one(command).await;
        history.end(
            call,
            outcome_of(answer.clone()).unwrap_or(Outcome::NotSent {
                reason: "not the leader".into(),
            }),
        );
        Ok(answer)
    }

    /// Runs the scenario named `name` (see [`crate::scenarios::IN_PROCESS`]), if there is one.
    pub async fn run(name: &str, root: &Path) -> Option<anyhow::Result<SeedResult>> {
        Some(match name {
            "truncated-write-retried" => truncated_write_retried(root).await,
            "isolated-leader-refuses" => isolated_leader_refuses(root).await,
            "handover-waits-for-writes" => handover_waits_for_writes(root).await,
            _ => return None,
        })
    }

    /// `isolated-leader-refuses`: a leader cut off from its peers keeps believing it
    /// leads (openraft 0.9 has no quorum check), so writes sent to it used to wait out
    /// their deadline and end "may or may not be applied", even those that never left its
    /// queue. Two writes take both proposal slots and cannot commit; a third waits behind
    /// them. Once the leader has heard from no quorum for twice the lease, the queued one
    /// and any new one must be answered "not the leader" (nothing applied), and the
    /// checker holds them to it after the partition heals.
    pub async fn isolated_leader_refuses(root: &Path) -> anyhow::Result<SeedResult> {
        let started = Instant::now();
        let seed = 11;
        let (root, cluster, leader) = fresh(root, "isolated-leader-refuses", seed, 3).await?;
        let history = History::new();
        let s = shard(seed, 0);
        let write = |node: u64| attach(s, node);
        recorded(&cluster, &history, "setup", leader, write(1)).await;
        let replica = cluster.net.replica(leader).context("the leader is up")?;
        let proposed = || {
            replica
                .batch_stats()
                .entries
                .load(std::sync::atomic::Ordering::SeqCst)
        };

        cluster.net.isolate(leader, &cluster.ids);
        let mut writers = Vec::new();
        for node in 2..=4 {
            let before = proposed();
            let writer = tokio::spawn(proposed_on(
                replica.clone(),
                history.clone(),
                format!("writer-{node}"),
                write(node),
            ));
            if node < 4 {
                until("the write to take a slot", Duration::from_secs(10), || {
                    proposed() > before || writer.is_finished()
                })
                .await?;
            }
            writers.push(writer);
        }
        let queued = writers
            .pop()
            .context("three writers")?
            .await
            .context("the writer panicked")??;
        until(
            "the isolated leader to notice",
            Duration::from_secs(10),
            || replica.quorum_silence().is_some(),
        )
        .await?;
        let late = proposed_on(
            replica.clone(),
            history.clone(),
            "late-writer".into(),
            write(5),
        )
        .await?;
        // The two in flight may or may not be applied; the history says so.
        for writer in writers {
            let _in_flight = writer.await.context("the writer panicked")??;
        }
        let mut liveness = Vec::new();
        for (what, answer) in [("queued", queued), ("late", late)] {
            if !matches!(answer, Err(ProposeError::NotLeader { leader: None })) {
                liveness.push(format!(
                    "the {what} write on the isolated leader was answered {answer:?}, not \
                     \"not the leader, nothing applied\""
                ));
            }
        }
        let ending = Ending {
            seed,
            replicas: 3,
            faults: vec![format!("leader {leader} isolated with writes in flight")],
            liveness,
            started,
            root: &root,
        };
        ending.conclude(&cluster, &history, &[s]).await
    }

    /// `handover-waits-for-writes`: a leader handing over must not ask its successor to
    /// campaign while a write it already handed to Raft can still lengthen its log (it
    /// would refuse the successor its vote and win the next election itself). Three
    /// replicas: the leader, cut off, holds a write in flight; with handing over begun,
    /// the writes are not settled while it is in flight, a new write is refused "not
    /// the leader" (nothing applied), and once the links heal they settle.
    pub async fn handover_waits_for_writes(root: &Path) -> anyhow::Result<SeedResult> {
        let started = Instant::now();
        let seed = 13;
        let (root, cluster, leader) = fresh(root, "handover-waits-for-writes", seed, 3).await?;
        let history = History::new();
        let s = shard(seed, 0);
        let write = |node: u64| attach(s, node);
        recorded(&cluster, &history, "setup", leader, write(1)).await;
        let replica = cluster.net.replica(leader).context("the leader is up")?;
        let mut liveness = Vec::new();
        if !replica.writes_settled(Duration::from_secs(1)).await {
            liveness.push("with nothing in flight, the writes did not settle".to_owned());
        }
        let proposed = || {
            replica
                .batch_stats()
                .entries
                .load(std::sync::atomic::Ordering::SeqCst)
        };

        cluster.net.isolate(leader, &cluster.ids);
        let before = proposed();
        let writer = tokio::spawn(proposed_on(
            replica.clone(),
            history.clone(),
            "writer".into(),
            write(2),
        ));
        until("the write to be proposed", Duration::from_secs(10), || {
            proposed() > before || writer.is_finished()
        })
        .await?;
        let handover = replica
            .begin_handover(Duration::from_secs(1))
            .await
            .context("no other handover runs here")?;
        if replica.writes_settled(Duration::from_millis(100)).await {
            liveness.push("the writes settled while one could not commit".to_owned());
        }
        let late = proposed_on(
            replica.clone(),
            history.clone(),
            "late-writer".into(),
            write(3),
        )
        .await?;
        if !matches!(late, Err(ProposeError::NotLeader { .. })) {
            liveness.push(format!(
                "a write sent while handing over was answered {late:?}, not \"not the \
                 leader, nothing applied\""
            ));
        }
        cluster.net.heal();
        if !replica.writes_settled(Duration::from_secs(10)).await {
            liveness.push("the writes did not settle once the links healed".to_owned());
        }
        drop(handover);
        let _in_flight = writer.await.context("the writer panicked")??;
        let ending = Ending {
            seed,
            replicas: 3,
            faults: vec![format!(
                "leader {leader} isolated with a write in flight while handing over"
            )],
            liveness,
            started,
            root: &root,
        };
        ending.conclude(&cluster, &history, &[s]).await
    }

    /// `truncated-write-retried`: a write the leader appended, and then had to truncate
    /// when a new leader overwrote its log, is not dead: another replica holds it and may
    /// commit it. Five replicas: the leader L replicates a write only to A; the others
    /// elect W, whose first entry reaches only L and overwrites the write there (L's
    /// caller hears "forward to the leader"); L and W are cut off, A wins with the
    /// remaining two and commits the write. A replica that took "forward to the leader"
    /// for "not applied" would send the write again: applied twice, one generation
    /// handed out that nobody was told about. The checker must see one application.
    pub async fn truncated_write_retried(root: &Path) -> anyhow::Result<SeedResult> {
        let started = Instant::now();
        let seed = 7;
        let (root, cluster, leader) = fresh(root, "truncated-write-retried", seed, 5).await?;
        let history = History::new();
        let others: Vec<u64> = cluster
            .ids
            .iter()
            .copied()
            .filter(|i| *i != leader)
            .collect();
        let a = others[0];
        let rest: Vec<u64> = others[1..].to_vec();
        let s = shard(seed, 0);
        let write = |node: u64| attach(s, node);
        recorded(&cluster, &history, "writer", a, write(1)).await;

        // L's messages reach only A; the others may elect one of them, whose log entries
        // reach only L.
        let net = &cluster.net;
        for x in &rest {
            net.set_link(leader, *x, Link::Down);
            for y in rest.iter().chain([&a]).filter(|y| *y != x) {
                net.set_kind_link(*x, *y, RpcKind::Append, Link::Down);
            }
        }
        let writer = {
            let net = cluster.net.clone();
            let history = history.clone();
            let request = write(2);
            tokio::spawn(async move {
                let call = history.begin("writer", a, request.clone());
                let outcome = serve(&net, a, &request).await;
                history.end(call, outcome);
            })
        };
        let mut new_leader = None;
        until(
            "one of the cut-off replicas to lead",
            Duration::from_secs(10),
            || {
                new_leader = rest.iter().copied().find(|x| leads(&cluster, *x));
                new_leader.is_some()
            },
        )
        .await?;
        let w = new_leader.expect("found above");
        until(
            "the old leader to step down",
            Duration::from_secs(10),
            || !leads(&cluster, leader),
        )
        .await?;
        net.isolate(leader, &cluster.ids);
        net.isolate(w, &cluster.ids);
        until("A to lead", Duration::from_secs(10), || leads(&cluster, a)).await?;
        writer.await.context("the writer panicked")?;
        let ending = Ending {
            seed,
            replicas: 5,
            faults: vec![format!(
                "L={leader} replicates to A={a} only; W={w} overwrites L; L and W cut off"
            )],
            liveness: Vec::new(),
            started,
            root: &root,
        };
        ending.conclude(&cluster, &history, &[s]).await
    }
}
