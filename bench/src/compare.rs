//! `compare`: the same attach workload (random tenant among M, one increment per request,
//! closed loop at one concurrency) against our cluster, etcd (gRPC and HTTP gateway),
//! Postgres and a do-nothing HTTP server, in one process and one run. Rounds interleave the
//! targets (ours, etcd, Postgres, ..., then again) so a burst of noise from other work on
//! the machine hits all of them alike; the medians over rounds are compared as ratios.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use pageserver_controller::child_process::die_with_parent;
use pageserver_controller::client::Client;

use crate::cluster::{discover, LocalCluster};
use crate::load::{self, Load, Op, Rng};
use crate::peers::{etcd, postgres};
use crate::report::{Row, Verdict};
use crate::scenarios::{attach_op, tenant};
use crate::stats::{Summary, Table};

/// Tenant namespace of the comparison (ours); etcd keys and Postgres rows use the same ids.
const NS: u64 = 7;

#[derive(Debug, Clone)]
pub struct CompareArgs {
    pub concurrency: usize,
    pub tenants: u64,
    pub duration: Duration,
    pub runs: usize,
    /// etcd client endpoints (host:port); empty: etcd is skipped.
    pub etcd: Vec<String>,
    /// Postgres connection string; `None`: Postgres is skipped.
    pub postgres: Option<String>,
    /// Our replicas; empty: a local three-replica cluster is started.
    pub cluster: Vec<String>,
    pub server_bin: Option<PathBuf>,
    /// Start a do-nothing HTTP server and measure it too.
    pub null_server: bool,
    /// Another server binary (e.g. the build before a change): a second local cluster
    /// of it is measured alongside, so before/after is a ratio from the same run.
    pub baseline_bin: Option<PathBuf>,
    /// Extra `serve` flags for the replicas of local clusters.
    pub serve_args: Vec<String>,
}

fn bin_name(bin: &std::path::Path) -> String {
    bin.file_name().map_or_else(
        || bin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

struct Target {
    name: String,
    op: Op,
    /// CAS retries (etcd), reported per target.
    retries: Option<Arc<AtomicU64>>,
}

pub async fn compare(args: &CompareArgs, http: reqwest::Client) -> anyhow::Result<String> {
    let tenants: Arc<Vec<String>> = Arc::new(
        (0..args.tenants)
            .map(|i| tenant(NS, i).to_string())
            .collect(),
    );
    let mut targets: Vec<Target> = Vec::new();

    // Ours: through the leader and through a follower; the baseline build likewise.
    let mut locals = Vec::new();
    let mut ours = Vec::new();
    if args.cluster.is_empty() {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => crate::cluster::default_server_bin()?,
        };
        let cluster = LocalCluster::start(&bin, 3, &args.serve_args)?;
        ours.push((format!("ours [{}]", bin_name(&bin)), cluster.urls()));
        locals.push(cluster);
    } else {
        ours.push(("ours".to_owned(), args.cluster.clone()));
    }
    if let Some(bin) = &args.baseline_bin {
        let cluster = LocalCluster::start(bin, 3, &args.serve_args)?;
        // Named by path: both builds are usually called pageserver-controller.
        ours.push((
            format!("ours, baseline [{}]", bin.display()),
            cluster.urls(),
        ));
        locals.push(cluster);
    }
    for (name, seeds) in &ours {
        let view = discover(&http, seeds, Duration::from_secs(30)).await?;
        let leader = Client::with_http(view.leader_url().to_owned(), http.clone());
        targets.push(Target {
            name: format!("{name}, 3 replicas, via leader"),
            op: attach_op(leader, NS, args.tenants, 100),
            retries: None,
        });
        if let Some((_, follower)) = view.follower() {
            let follower = Client::with_http(follower.to_owned(), http.clone());
            targets.push(Target {
                name: format!("{name}, 3 replicas, via follower"),
                op: attach_op(follower, NS, args.tenants, 100),
                retries: None,
            });
        }
    }

    if !args.etcd.is_empty() {
        let leader = etcd::leader_endpoint(&args.etcd).await?;
        eprintln!(
            "compare: etcd leader is {leader}; seeding {} keys",
            args.tenants
        );
        let seed = etcd::Grpc::connect(&leader).await?;
        let mut puts = futures::stream::iter(tenants.iter().map(|t| {
            let seed = seed.clone();
            let key = format!("/generations/{t}");
            async move { seed.put(key.as_bytes(), b"0").await }
        }))
        .buffer_unordered(64);
        while let Some(result) = puts.next().await {
            result?;
        }
        // Several HTTP/2 connections, as several client processes would have.
        let mut channels = Vec::new();
        for _ in 0..8 {
            channels.push(etcd::Grpc::connect(&leader).await?);
        }
        let channels = Arc::new(channels);
        let retries = Arc::new(AtomicU64::new(0));
        let (t, r, n) = (tenants.clone(), retries.clone(), tenants.len() as u64);
        targets.push(Target {
            name: "etcd 3 members, gRPC, via leader".into(),
            op: Arc::new(move |worker, seq| {
                let (channels, tenants, retries) = (channels.clone(), t.clone(), r.clone());
                Box::pin(async move {
                    let mut rng = Rng::new((worker as u64) << 40 ^ seq);
                    let key = format!("/generations/{}", tenants[rng.below(n) as usize]);
                    let result = channels[worker % channels.len()]
                        .increment(key.as_bytes(), &retries)
                        .await;
                    (0, result.map(|_| ()).map_err(|e| e.to_string()))
                })
            }),
            retries: Some(retries),
        });
        // etcd gets no token of ours: a pool without the default Authorization header.
        let gateway = etcd::Gateway::new(crate::cluster::http_pool(None)?, &leader);
        let retries = Arc::new(AtomicU64::new(0));
        let (t, r) = (tenants.clone(), retries.clone());
        targets.push(Target {
            name: "etcd 3 members, HTTP/JSON gateway, via leader".into(),
            op: Arc::new(move |worker, seq| {
                let (gateway, tenants, retries) = (gateway.clone(), t.clone(), r.clone());
                Box::pin(async move {
                    let mut rng = Rng::new((worker as u64) << 40 ^ seq);
                    let key = format!("/generations/{}", tenants[rng.below(n) as usize]);
                    let result = gateway.increment(key.as_bytes(), &retries).await;
                    (0, result.map(|_| ()).map_err(|e| e.to_string()))
                })
            }),
            retries: Some(retries),
        });
    }

    if let Some(conninfo) = &args.postgres {
        eprintln!(
            "compare: preparing Postgres ({} rows, {} connections)",
            args.tenants, args.concurrency
        );
        let setup = postgres::connect(conninfo).await?;
        postgres::prepare_table(&setup, &tenants).await?;
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            workers.push(postgres::Worker::new(conninfo).await?);
        }
        let workers = Arc::new(workers);
        let (t, n) = (tenants.clone(), tenants.len() as u64);
        targets.push(Target {
            name: "Postgres, single, UPDATE ... RETURNING".into(),
            op: Arc::new(move |worker, seq| {
                let (workers, tenants) = (workers.clone(), t.clone());
                Box::pin(async move {
                    let mut rng = Rng::new((worker as u64) << 40 ^ seq);
                    let tenant = &tenants[rng.below(n) as usize];
                    let node = 1 + rng.below(100) as i64;
                    let result = workers[worker % workers.len()]
                        .increment(tenant, node)
                        .await;
                    (0, result.map(|_| ()).map_err(|e| e.to_string()))
                })
            }),
            retries: None,
        });
    }

    let _null = if args.null_server {
        let (child, url) = spawn_null_server().await?;
        let client = Client::with_http(url, http.clone());
        targets.push(Target {
            name: "do-nothing HTTP server (ceiling)".into(),
            op: attach_op(client, NS, args.tenants, 100),
            retries: None,
        });
        Some(child)
    } else {
        None
    };

    let load = Load {
        concurrency: args.concurrency,
        max_ops: u64::MAX,
        duration: args.duration,
        label: String::new(),
        rate: None,
    };
    let mut results: BTreeMap<usize, Vec<Summary>> = BTreeMap::new();
    for round in 0..args.runs {
        for (i, target) in targets.iter().enumerate() {
            let label = format!("round {} {}", round + 1, target.name);
            if round == 0 {
                let warm = Load {
                    duration: Duration::from_secs(1),
                    label: format!("{label} warm-up"),
                    ..load.clone()
                };
                load::run(&warm, 1, target.op.clone()).await;
            }
            let run = load::run(
                &Load {
                    label: label.clone(),
                    ..load.clone()
                },
                1,
                target.op.clone(),
            )
            .await;
            eprintln!("  {label}: {}", run.kinds[0]);
            results.entry(i).or_default().push(run.kinds[0].clone());
        }
    }

    let rows: Vec<Row> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let server = match &target.retries {
                Some(r) => format!(
                    "{} CAS retries (lost races, re-read)",
                    r.load(Ordering::Relaxed)
                ),
                None => String::new(),
            };
            Row::from_runs("attach", &target.name, &results[&i], server)
        })
        .collect();
    Ok(render(args, &rows))
}

/// Issue 6 sets the attach targets (against etcd and Postgres) at this concurrency.
const TARGET_CONCURRENCY: usize = 64;

fn find<'a>(rows: &'a [Row], prefix: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.config.starts_with(prefix))
}

/// The comparison table, the ratios and the verdicts on the attach targets, as markdown.
pub fn render(args: &CompareArgs, rows: &[Row]) -> String {
    let mut out = format!(
        "attach, closed loop, concurrency {}, {} tenants, {} s per run, median of {} interleaved rounds\n\n",
        args.concurrency,
        args.tenants,
        args.duration.as_secs(),
        args.runs
    );
    let mut t = Table::new(&[
        "target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "notes",
    ]);
    for r in rows {
        t.row(vec![
            r.config.clone(),
            r.throughput.map_or("n/a".into(), crate::stats::rate),
            crate::stats::ms(r.p50_ms),
            crate::stats::ms(r.p99_ms),
            crate::stats::ms(r.p999_ms),
            crate::stats::ms(r.max_ms),
            r.errors.to_string(),
            r.server.clone(),
        ]);
    }
    out.push_str(&t.to_string());
    // The first cluster listed is the build under test.
    let ours = rows
        .iter()
        .find(|r| r.config.starts_with("ours") && r.config.ends_with("via leader"));
    let ratio = |other: Option<&Row>| match (
        ours.and_then(|o| o.throughput),
        other.and_then(|o| o.throughput),
    ) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let etcd_grpc = find(rows, "etcd 3 members, gRPC");
    let etcd_gw = find(rows, "etcd 3 members, HTTP");
    // etcd's best client is whichever was faster in this run.
    let etcd_best = [etcd_grpc, etcd_gw].into_iter().flatten().max_by(|a, b| {
        a.throughput
            .unwrap_or(0.0)
            .total_cmp(&b.throughput.unwrap_or(0.0))
    });
    let pg = find(rows, "Postgres");
    let null = find(rows, "do-nothing");
    let baseline = rows
        .iter()
        .filter(|r| r.config.starts_with("ours") && r.config.ends_with("via leader"))
        .nth(1);
    let mut ratios = Table::new(&["ratio (ours via leader / other, throughput)", "value"]);
    if let Some(b) = baseline {
        ratios.row(vec![
            format!("/ {}", b.config),
            ratio(Some(b)).map_or("n/a".into(), |r| format!("{r:.2}x")),
        ]);
    }
    for (name, other) in [
        ("/ etcd gRPC", etcd_grpc),
        ("/ etcd HTTP gateway", etcd_gw),
        ("/ Postgres", pg),
        ("/ do-nothing HTTP", null),
    ] {
        ratios.row(vec![
            name.into(),
            ratio(other).map_or("n/a".into(), |r| format!("{r:.2}x")),
        ]);
    }
    out.push('\n');
    out.push_str(&ratios.to_string());
    if args.concurrency != TARGET_CONCURRENCY {
        out.push_str(&format!(
            "\nNo verdict on the attach targets: they are set at concurrency \
             {TARGET_CONCURRENCY}, and this run used {}.\n",
            args.concurrency
        ));
        return out;
    }
    let verdicts = vec![
        Verdict {
            target: "attach c=64: >= 3x etcd's best client".into(),
            measured: ratio(etcd_best).map_or("n/a".into(), |r| format!("{r:.2}x")),
            met: ratio(etcd_best).map(|r| r >= 3.0),
        },
        Verdict {
            target: "attach c=64: p99 below etcd's".into(),
            measured: match (
                ours.and_then(|o| o.p99_ms),
                etcd_best.and_then(|e| e.p99_ms),
            ) {
                (Some(a), Some(b)) => format!("{a:.1} ms vs {b:.1} ms"),
                _ => "n/a".into(),
            },
            met: match (
                ours.and_then(|o| o.p99_ms),
                etcd_best.and_then(|e| e.p99_ms),
            ) {
                (Some(a), Some(b)) => Some(a < b),
                _ => None,
            },
        },
        Verdict {
            target: "attach c=64: >= 0.5x single Postgres".into(),
            measured: ratio(pg).map_or("n/a".into(), |r| format!("{r:.2}x")),
            met: ratio(pg).map(|r| r >= 0.5),
        },
    ];
    out.push('\n');
    out.push_str(&crate::report::verdict_table(&verdicts).to_string());
    out
}

/// Starts `bench null-server` on an ephemeral port; returns the child and its URL.
async fn spawn_null_server() -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["null-server", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Gone with the bench even when it is killed (no drop runs then). The run's future is
    // polled on the main thread (`block_on`), the thread the signal is tied to.
    die_with_parent(command.as_std_mut(), libc::SIGKILL);
    let mut child = command
        .spawn()
        .context("starting the do-nothing HTTP server")?;
    let stdout = child.stdout.take().context("null server stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the null server did not start")??
        .context("the null server exited")?;
    let addr = line.trim_start_matches("listening on ").to_owned();
    Ok((child, format!("http://{addr}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, throughput: f64, p99_ms: f64) -> Row {
        Row {
            scenario: "attach".into(),
            config: config.into(),
            runs: 1,
            throughput: Some(throughput),
            p50_ms: Some(p99_ms / 2.0),
            p99_ms: Some(p99_ms),
            p999_ms: Some(p99_ms),
            max_ms: Some(p99_ms),
            errors: 0,
            server: String::new(),
            error_samples: Vec::new(),
        }
    }

    fn args(concurrency: usize) -> CompareArgs {
        CompareArgs {
            concurrency,
            tenants: 1_000,
            duration: Duration::from_secs(3),
            runs: 1,
            etcd: Vec::new(),
            postgres: None,
            cluster: Vec::new(),
            server_bin: None,
            null_server: false,
            baseline_bin: None,
            serve_args: Vec::new(),
        }
    }

    #[test]
    fn verdicts_on_the_targets_only_at_the_targets_concurrency() {
        let rows = [
            row("ours, 3 replicas, via leader", 6_000.0, 8.0),
            row("etcd 3 members, gRPC, via leader", 1_500.0, 30.0),
            row("Postgres, single, UPDATE ... RETURNING", 10_000.0, 5.0),
        ];
        let at_target = render(&args(TARGET_CONCURRENCY), &rows);
        assert!(
            at_target.contains("| attach c=64: >= 3x etcd's best client | 4.00x | yes |"),
            "{at_target}"
        );
        assert!(
            at_target.contains("| attach c=64: >= 0.5x single Postgres | 0.60x | yes |"),
            "{at_target}"
        );
        assert!(!at_target.contains("No verdict"), "{at_target}");

        let elsewhere = render(&args(16), &rows);
        assert!(elsewhere.contains("| / etcd gRPC | 4.00x |"), "{elsewhere}");
        assert!(!elsewhere.contains(">= 3x etcd"), "{elsewhere}");
        assert!(
            elsewhere.contains("No verdict on the attach targets"),
            "{elsewhere}"
        );
    }
}
