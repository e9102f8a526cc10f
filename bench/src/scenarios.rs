//! The traffic scenarios of issue 6 against a running cluster: `attach`, `validate`,
//! `re-attach` and `mixed`. Each preloads what it needs through the API (there is no
//! other way in), then measures several runs and reports medians.
//!
//! Tenant ids are derived from (namespace, index) so scenarios never touch each other's
//! shards and a rerun against the same cluster is repeatable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use pageserver_controller::client::Client;
use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};

use crate::cluster::{discover, last_log_index, View};
use crate::load::{self, Load, Op, Rng};
use crate::metrics;
use crate::report::Row;
use crate::stats::Summary;

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub http: reqwest::Client,
    /// Any replicas of the cluster; the rest is discovered.
    pub seeds: Vec<String>,
    pub duration: Duration,
    pub max_ops: u64,
    /// Measured runs per configuration (the median is reported).
    pub runs: usize,
    /// Process ids of the replicas when the bench started them: their CPU time per
    /// operation is a figure that a busy machine blurs far less than throughput.
    pub pids: Vec<u32>,
}

impl Ctx {
    pub async fn view(&self) -> anyhow::Result<View> {
        discover(&self.http, &self.seeds, Duration::from_secs(30)).await
    }

    pub fn client(&self, url: &str) -> Client {
        Client::with_http(url.to_owned(), self.http.clone()).with_timeout(Duration::from_secs(30))
    }

    fn load(&self, label: String, concurrency: usize) -> Load {
        Load {
            concurrency,
            max_ops: self.max_ops,
            duration: self.duration,
            label,
            rate: None,
        }
    }
}

/// Namespaces of tenant ids, one per scenario.
pub mod ns {
    pub const ATTACH: u64 = 1;
    pub const VALIDATE: u64 = 2;
    pub const RE_ATTACH: u64 = 3;
    pub const MIXED: u64 = 4;
    pub const SCALE: u64 = 5;
    pub const FAILOVER: u64 = 6;
}

/// The `index`th tenant of `namespace`: a well-spread 16-byte id, always the same.
pub fn tenant(namespace: u64, index: u64) -> TenantShardId {
    let mut rng = Rng::new(namespace.wrapping_mul(0x1000_0000_01b3) ^ index);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    TenantShardId::unsharded(TenantId::from_bytes(bytes))
}

fn ok_or_msg<T>(result: Result<T, impl std::fmt::Display>) -> Result<T, String> {
    result.map_err(|e| e.to_string())
}

/// Attaches `shards` (node chosen by `node_of`) through `url` with `concurrency` requests
/// in flight; returns (shard, generation) in input order. Prints progress on big loads.
pub async fn preload(
    ctx: &Ctx,
    url: &str,
    shards: Vec<TenantShardId>,
    node_of: impl Fn(usize) -> NodeId,
    concurrency: usize,
) -> anyhow::Result<Vec<(TenantShardId, u32)>> {
    let client = ctx.client(url);
    let total = shards.len();
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let mut last_print = Instant::now();
    let mut out = vec![None; total];
    let mut stream = futures::stream::iter(shards.into_iter().enumerate().map(|(i, shard)| {
        let client = client.clone();
        let node = node_of(i);
        async move {
            let mut attempt = 0;
            loop {
                match client.attach_hook(shard, Some(node), None).await {
                    Ok(Some(generation)) => return Ok((i, shard, generation)),
                    Ok(None) => anyhow::bail!("attach of {shard} answered no generation"),
                    Err(e) if attempt < 5 && !e.is_refusal() => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e).context(format!("attaching {shard}")),
                }
            }
        }
    }))
    .buffer_unordered(concurrency);
    while let Some(result) = stream.next().await {
        let (i, shard, generation) = result?;
        out[i] = Some((shard, generation));
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if total >= 20_000 && last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  preload: {n}/{total} shards in {secs:.0} s ({:.0}/s)",
                n as f64 / secs
            );
        }
    }
    if total >= 20_000 {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "  preload: {total} shards in {secs:.1} s ({:.0}/s)",
            total as f64 / secs
        );
    }
    Ok(out
        .into_iter()
        .map(|x| x.expect("every shard attached"))
        .collect())
}

/// Runs `op` `ctx.runs` times, measuring the Raft entries the leader appended and the
/// counters `/metrics` moved, and returns the per-run summaries of kind `kind` plus a
/// server-side description.
async fn measure(
    ctx: &Ctx,
    view: &View,
    load: &Load,
    kinds: usize,
    op: Op,
) -> (Vec<Vec<Summary>>, String) {
    let leader = view.leader_url().to_owned();
    // A short warm-up: connections open, caches fill, the first election's dust settles.
    let warm = Load {
        duration: Duration::from_secs(1).min(ctx.duration),
        max_ops: 2_000,
        label: format!("{} warm-up", load.label),
        ..load.clone()
    };
    load::run(&warm, kinds, op.clone()).await;
    let before_metrics = metrics::scrape(&ctx.http, &leader).await;
    let followers: Vec<(u64, &String)> = view
        .urls
        .iter()
        .filter(|(id, _)| **id != view.leader)
        .map(|(id, url)| (*id, url))
        .collect();
    let mut before_followers = Vec::new();
    for (_, url) in &followers {
        before_followers.push(metrics::scrape(&ctx.http, url).await);
    }
    let before_index = last_log_index(&ctx.http, &leader).await;
    let before_cpu = crate::cluster::cpu_seconds(&ctx.pids);
    let mut runs = Vec::new();
    for _ in 0..ctx.runs {
        runs.push(load::run(load, kinds, op.clone()).await);
    }
    let after_cpu = crate::cluster::cpu_seconds(&ctx.pids);
    let after_index = last_log_index(&ctx.http, &leader).await;
    let after_metrics = metrics::scrape(&ctx.http, &leader).await;
    let mut follower_reads = Vec::new();
    for ((id, url), before) in followers.iter().zip(&before_followers) {
        let after = metrics::scrape(&ctx.http, url).await;
        if let (Some(before), Some(after)) = (before, after) {
            if let Some(shared) = metrics::reads_per_round(before, &after) {
                let phases = metrics::follower_round_phases(before, &after)
                    .map(|(fetch, apply)| {
                        format!(" ({fetch:.0} µs asking the leader, {apply:.0} µs applying)")
                    })
                    .unwrap_or_default();
                follower_reads.push(format!(
                    "follower {id}: {shared:.1} reads/read-index round{phases}"
                ));
            }
        }
    }
    let writes: u64 = runs.iter().map(|r| r.total_ops()).sum();
    let entries = match (before_index, after_index) {
        (Some(b), Some(a)) if writes > 0 => {
            format!("{} Raft entries appended during {writes} ops", a - b)
        }
        _ => "Raft entries n/a".to_owned(),
    };
    let cpu = match (before_cpu, after_cpu) {
        (Some(b), Some(a)) if writes > 0 => {
            format!("; replicas' CPU {:.0} µs/op", (a - b) * 1e6 / writes as f64)
        }
        _ => String::new(),
    };
    let mut server = format!(
        "{entries}{cpu}; /metrics: {}",
        metrics::describe(before_metrics.as_ref(), after_metrics.as_ref())
    );
    for figure in follower_reads {
        server += &format!("; {figure}");
    }
    (runs.into_iter().map(|r| r.kinds).collect(), server)
}

fn kind(runs: &[Vec<Summary>], k: usize) -> Vec<Summary> {
    runs.iter().map(|r| r[k].clone()).collect()
}

/// `attach`: attach-hook on random tenants among `tenants`, through the leader and through
/// a follower, at each concurrency.
pub async fn attach(
    ctx: &Ctx,
    tenants: u64,
    concurrencies: &[usize],
    via: &[Via],
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for target in via {
        for &concurrency in concurrencies {
            let view = ctx.view().await?;
            let url = target.url(&view)?;
            let client = ctx.client(&url);
            let op = attach_op(client, ns::ATTACH, tenants, 100);
            let label = format!("attach via {}, c={concurrency}", target.name());
            let (runs, server) = measure(ctx, &view, &ctx.load(label, concurrency), 1, op).await;
            let row = Row::from_runs(
                "attach",
                &format!("{} c={concurrency}, {tenants} tenants", target.name()),
                &kind(&runs, 0),
                server,
            );
            row.print();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One attach-hook of a random tenant of `namespace` (among `tenants`) to a random node.
pub fn attach_op(client: Client, namespace: u64, tenants: u64, nodes: u64) -> Op {
    Arc::new(move |worker, seq| {
        let client = client.clone();
        Box::pin(async move {
            let mut rng = Rng::new((worker as u64) << 40 ^ seq);
            let shard = tenant(namespace, rng.below(tenants));
            let node = NodeId(1 + rng.below(nodes));
            let result = client.attach_hook(shard, Some(node), None).await;
            (0, ok_or_msg(result).map(|_| ()))
        })
    })
}

/// Which replica receives the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Leader,
    Follower,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Leader => "leader",
            Via::Follower => "follower",
        }
    }

    pub fn url(self, view: &View) -> anyhow::Result<String> {
        Ok(match self {
            Via::Leader => view.leader_url().to_owned(),
            Via::Follower => view
                .follower()
                .context("the cluster has a single replica: no follower")?
                .1
                .to_owned(),
        })
    }
}

/// Attach traffic through the leader that runs beside a measurement.
#[derive(Debug, Clone, Copy)]
pub struct Alongside {
    /// Concurrent attach clients (0: none).
    pub clients: usize,
    /// Their total rate cap in attaches per second (`None`: closed loop, unpaced).
    pub rate: Option<f64>,
}

/// `validate`: batches of `batch` tenants (windows of a pool of `tenants` attached ones)
/// through a follower, without and with attach traffic running `alongside`.
pub async fn validate(
    ctx: &Ctx,
    tenants: usize,
    batches: &[usize],
    concurrency: usize,
    alongside: Alongside,
) -> anyhow::Result<Vec<Row>> {
    let background = alongside.clients;
    let view = ctx.view().await?;
    let pool_size = batches.iter().copied().max().unwrap_or(128).max(tenants);
    eprintln!("validate: attaching {pool_size} tenants first");
    let shards: Vec<_> = (0..pool_size as u64)
        .map(|i| tenant(ns::VALIDATE, i))
        .collect();
    let pool = Arc::new(
        preload(
            ctx,
            view.leader_url(),
            shards,
            |i| NodeId(1 + i as u64 % 100),
            64,
        )
        .await?,
    );
    let follower = Via::Follower.url(&view)?;
    let mut rows = Vec::new();
    for &batch in batches {
        for with_background in [false, true] {
            if with_background && background == 0 {
                continue;
            }
            let client = ctx.client(&follower);
            let pool = pool.clone();
            let op: Op = Arc::new(move |worker, seq| {
                let client = client.clone();
                let pool = pool.clone();
                Box::pin(async move {
                    let mut rng = Rng::new((worker as u64) << 40 ^ seq);
                    let start = rng.below((pool.len() - batch + 1) as u64) as usize;
                    let result = client.validate(&pool[start..start + batch]).await;
                    let result = match result {
                        Ok(answer) if answer.tenants.len() == batch => Ok(()),
                        Ok(answer) => Err(format!(
                            "{} answers for {batch} known tenants",
                            answer.tenants.len()
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    (0, result)
                })
            });
            let bg = with_background.then(|| {
                let load = Load {
                    concurrency: background,
                    max_ops: u64::MAX,
                    // Covers warm-up and every measured run.
                    duration: ctx.duration * (ctx.runs as u32) + Duration::from_secs(2),
                    label: "background attach".into(),
                    rate: alongside.rate,
                };
                let op = attach_op(ctx.client(view.leader_url()), ns::ATTACH, 10_000, 100);
                tokio::spawn(async move { load::run(&load, 1, op).await })
            });
            let label = format!("validate {batch}");
            let (runs, server) = measure(ctx, &view, &ctx.load(label, concurrency), 1, op).await;
            let mut config = format!("batch {batch}, follower, c={concurrency}");
            if let Some(bg) = bg {
                let bg = bg.await.context("background load")?;
                let paced = alongside
                    .rate
                    .map(|rate| format!(", paced at {rate:.0}/s"))
                    .unwrap_or_default();
                config.push_str(&format!(
                    ", with {background} attach clients alongside{paced} ({:.0} attaches/s)",
                    bg.kinds[0].throughput
                ));
            }
            let row = Row::from_runs("validate", &config, &kind(&runs, 0), server);
            row.print();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `re-attach`: one node holding `shards` tenant shards re-attaches, `ctx.runs` times.
pub async fn re_attach(ctx: &Ctx, shards: u64) -> anyhow::Result<Vec<Row>> {
    let view = ctx.view().await?;
    let node = NodeId(900_000 + shards);
    eprintln!("re-attach: attaching {shards} shards to node {node}");
    let list: Vec<_> = (0..shards).map(|i| tenant(ns::RE_ATTACH, i)).collect();
    preload(ctx, view.leader_url(), list, |_| node, 128).await?;
    let mut rows = Vec::new();
    for via in [Via::Leader, Via::Follower] {
        let url = via.url(&view)?;
        let client = ctx.client(&url);
        let mut runs = Vec::new();
        let before = last_log_index(&ctx.http, view.leader_url()).await;
        for _ in 0..ctx.runs {
            let mut samples = crate::stats::Samples::default();
            let started = Instant::now();
            match client.re_attach(node, None).await {
                Ok(answer) if answer.tenants.len() as u64 == shards => {
                    samples.record(started.elapsed())
                }
                Ok(answer) => samples.record_error(format!(
                    "{} shards in the answer, {shards} expected",
                    answer.tenants.len()
                )),
                Err(e) => samples.record_error(e.to_string()),
            }
            runs.push(samples.summarize(started.elapsed()));
        }
        let after = last_log_index(&ctx.http, view.leader_url()).await;
        let server = match (before, after) {
            (Some(b), Some(a)) => format!("{} Raft entries for {} re-attaches", a - b, ctx.runs),
            _ => "Raft entries n/a".to_owned(),
        };
        let row = Row::from_runs(
            "re-attach",
            &format!("{shards} shards, via {}", via.name()),
            &runs,
            server,
        );
        row.print();
        rows.push(row);
    }
    Ok(rows)
}

/// `mixed`: Neon-shaped traffic through every replica: 90% validate of 128 tenants, 9%
/// attach, 1% re-attach of a node holding about 1/100 of the tenants.
pub async fn mixed(ctx: &Ctx, tenants: u64, concurrency: usize) -> anyhow::Result<Vec<Row>> {
    let view = ctx.view().await?;
    let nodes = 100u64;
    eprintln!("mixed: attaching {tenants} tenants to {nodes} nodes first");
    let shards: Vec<_> = (0..tenants).map(|i| tenant(ns::MIXED, i)).collect();
    let pool = Arc::new(
        preload(
            ctx,
            view.leader_url(),
            shards,
            |i| NodeId(10_000 + i as u64 % nodes),
            64,
        )
        .await?,
    );
    let clients: Arc<Vec<Client>> = Arc::new(view.urls.values().map(|u| ctx.client(u)).collect());
    let op: Op = Arc::new(move |worker, seq| {
        let clients = clients.clone();
        let pool = pool.clone();
        Box::pin(async move {
            let mut rng = Rng::new((worker as u64) << 40 ^ seq);
            let client = &clients[rng.below(clients.len() as u64) as usize];
            let dice = rng.below(100);
            if dice < 90 {
                let batch = 128.min(pool.len());
                let start = rng.below((pool.len() - batch + 1) as u64) as usize;
                let r = client.validate(&pool[start..start + batch]).await;
                (0, ok_or_msg(r).map(|_| ()))
            } else if dice < 99 {
                let shard = pool[rng.below(pool.len() as u64) as usize].0;
                let node = NodeId(10_000 + rng.below(nodes));
                let r = client.attach_hook(shard, Some(node), None).await;
                (1, ok_or_msg(r).map(|_| ()))
            } else {
                let node = NodeId(10_000 + rng.below(nodes));
                let r = client.re_attach(node, None).await;
                (2, ok_or_msg(r).map(|_| ()))
            }
        })
    });
    let label = format!("mixed c={concurrency}");
    let (runs, server) = measure(ctx, &view, &ctx.load(label, concurrency), 3, op).await;
    let mut rows = Vec::new();
    let totals: Vec<Summary> = runs
        .iter()
        .map(|r| {
            let mut total = r[0].clone();
            total.throughput = r.iter().map(|k| k.throughput).sum();
            total.errors = r.iter().map(|k| k.errors).sum();
            total
        })
        .collect();
    let config = format!("all replicas, c={concurrency}, {tenants} tenants on {nodes} nodes");
    let mut total_row = Row::from_runs(
        "mixed",
        &format!("{config}: all ops (latency: validates)"),
        &totals,
        server,
    );
    total_row.scenario = "mixed".into();
    total_row.print();
    rows.push(total_row);
    for (k, name) in [
        "validate 128 (90%)",
        "attach (9%)",
        "re-attach ~100 shards (1%)",
    ]
    .iter()
    .enumerate()
    {
        let row = Row::from_runs(
            "mixed",
            &format!("{config}: {name}"),
            &kind(&runs, k),
            String::new(),
        );
        row.print();
        rows.push(row);
    }
    Ok(rows)
}
