//! Scenarios that need to own the replicas' processes: `failover` (kill the leader under
//! attach traffic and time the gap until a surviving replica serves an attach again) and
//! `scale` (a million shards: memory, disk, snapshots, restart-to-ready). Both run on a
//! [`LocalCluster`] that the bench started, because they signal and restart processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pageserver_controller::domain::NodeId;

use crate::cluster::{discover, logged_micros, LocalCluster};
use crate::load::{self, Load};
use crate::scenarios::{attach_op, ns, preload, tenant, Ctx};
use crate::stats::{median, Table};

/// Waits until every running replica of `cluster` answers `/ready` with 200.
pub async fn wait_all_ready(
    ctx: &Ctx,
    cluster: &LocalCluster,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    for (id, _) in cluster
        .replicas
        .iter()
        .filter(|(id, _)| cluster.is_running(**id))
    {
        let client = ctx
            .client(&cluster.url(*id))
            .with_timeout(Duration::from_secs(2));
        while client.ready().await.is_err() {
            if Instant::now() >= deadline {
                bail!("replica {id} not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// What one kill measured.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The longest time without a successful attach, from the signal until the first
    /// success after the old leader exited (a leader that drains on SIGTERM may still
    /// serve for a while; the outage is what follows).
    pub gap: Duration,
    /// From the old leader's exit to the first successful attach after it.
    pub after_exit: Duration,
}

/// Signals the leader `rounds` times with `signal` while attach traffic runs through the
/// other replicas; for each, the longest attach outage seen through the survivors.
pub async fn failover(
    ctx: &Ctx,
    cluster: &mut LocalCluster,
    rounds: usize,
    signal: i32,
) -> anyhow::Result<(Vec<Kill>, u64)> {
    let mut kills = Vec::new();
    let mut background_errors = 0;
    for round in 0..rounds {
        wait_all_ready(ctx, cluster, Duration::from_secs(60)).await?;
        let view = discover(&ctx.http, &cluster.urls(), Duration::from_secs(30)).await?;
        let leader = view.leader;
        let survivors: Vec<String> = view
            .urls
            .iter()
            .filter(|(id, _)| **id != leader)
            .map(|(_, url)| url.clone())
            .collect();
        // Background attach traffic through the survivors, for a bounded 6 s.
        let background = {
            let load = Load {
                concurrency: 8,
                max_ops: u64::MAX,
                duration: Duration::from_secs(6),
                label: "failover background".into(),
                rate: None,
            };
            let clients: Vec<_> = survivors.iter().map(|u| ctx.client(u)).collect();
            let ops: Vec<_> = clients
                .into_iter()
                .map(|c| attach_op(c, ns::FAILOVER, 10_000, 100))
                .collect();
            let op: load::Op = Arc::new(move |worker, seq| ops[worker % ops.len()](worker, seq));
            tokio::spawn(async move { load::run(&load, 1, op).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = cluster.pid(leader).context("the leader is not running")?;
        let probes = Probes::start(ctx, &survivors);
        let killed_at = Instant::now();
        // SAFETY: kill(2) on a child process we started and have not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
        let reaped =
            tokio::task::block_in_place(|| cluster.stop(leader, signal, Duration::from_secs(15)));
        let exited_at = Instant::now();
        reaped.context("reaping the old leader")?;
        let kill = probes.finish(killed_at, exited_at).await;
        let bg = background.await.context("background load")?;
        let errors = &bg.kinds[0];
        background_errors += errors.errors;
        let kill = kill?;
        let error_note = if errors.errors == 0 {
            String::new()
        } else {
            format!(
                "; {} background attach errors, e.g. {}",
                errors.errors,
                errors.error_samples.join("; ")
            )
        };
        eprintln!(
            "  failover round {}: leader {leader} got signal {signal}, exited after {:.0} ms; \
             longest attach outage {:.0} ms; first attach after the exit {:.0} ms after it{error_note}",
            round + 1,
            (exited_at - killed_at).as_secs_f64() * 1000.0,
            kill.gap.as_secs_f64() * 1000.0,
            kill.after_exit.as_secs_f64() * 1000.0,
        );
        kills.push(kill);
        cluster.spawn(leader)?;
    }
    wait_all_ready(ctx, cluster, Duration::from_secs(60)).await?;
    Ok((kills, background_errors))
}

/// Three sequential probers sending attaches through the surviving replicas, each
/// reporting when an attach succeeded.
struct Probes {
    successes: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    probers: Vec<tokio::task::JoinHandle<()>>,
}

impl Probes {
    fn start(ctx: &Ctx, survivors: &[String]) -> Probes {
        let (tx, successes) = tokio::sync::mpsc::unbounded_channel();
        let mut probers = Vec::new();
        for p in 0..3usize {
            let clients: Vec<_> = survivors
                .iter()
                .map(|u| ctx.client(u).with_timeout(Duration::from_secs(3)))
                .collect();
            let tx = tx.clone();
            probers.push(tokio::spawn(async move {
                let mut i = p;
                // Bounded: `finish` aborts the probers; this is the backstop.
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let client = &clients[i % clients.len()];
                    i += 1;
                    let shard = tenant(ns::FAILOVER, 20_000 + (i % 1000) as u64);
                    if client
                        .attach_hook(shard, Some(NodeId(1)), None)
                        .await
                        .is_ok()
                        && tx.send(Instant::now()).is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        Probes { successes, probers }
    }

    /// Waits for the first success after the old leader's exit; the outage is the
    /// longest time without a successful attach from the signal until then.
    async fn finish(mut self, signalled: Instant, exited: Instant) -> anyhow::Result<Kill> {
        let mut times = vec![signalled];
        let deadline = exited + Duration::from_secs(30);
        let result = loop {
            match tokio::time::timeout_at(deadline.into(), self.successes.recv()).await {
                Ok(Some(at)) if at < signalled => {}
                Ok(Some(at)) => {
                    times.push(at);
                    if at > exited {
                        break Ok(Kill {
                            gap: longest_gap(&times),
                            after_exit: at - exited,
                        });
                    }
                }
                Ok(None) | Err(_) => {
                    break Err(anyhow::anyhow!(
                        "no attach succeeded within 30 s of the old leader's exit"
                    ))
                }
            }
        };
        for prober in self.probers {
            prober.abort();
        }
        result
    }
}

/// The longest interval between consecutive instants (sorted here).
fn longest_gap(times: &[Instant]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Figures of the `scale` scenario: a table, plus the two the targets judge.
pub struct ScaleFigures {
    pub table: Table,
    pub max_rss_mib: f64,
    pub max_ready_secs: f64,
}

/// Loads `shards` shards, then measures memory, disk, snapshots and restarts.
pub async fn scale(
    ctx: &Ctx,
    cluster: &mut LocalCluster,
    shards: u64,
    concurrency: usize,
) -> anyhow::Result<ScaleFigures> {
    let mut max_rss = 0u64;
    let mut max_ready = 0f64;
    let view = discover(&ctx.http, &cluster.urls(), Duration::from_secs(30)).await?;
    eprintln!("scale: attaching {shards} shards through the leader, {concurrency} in flight");
    let list: Vec<_> = (0..shards).map(|i| tenant(ns::SCALE, i)).collect();
    let started = Instant::now();
    preload(
        ctx,
        view.leader_url(),
        list,
        |i| NodeId(1 + i as u64 % 1000),
        concurrency,
    )
    .await?;
    let load_secs = started.elapsed().as_secs_f64();
    wait_all_ready(ctx, cluster, Duration::from_secs(120)).await?;
    // Let every replica apply the tail.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut table = Table::new(&["figure", "replica", "value"]);
    table.row(vec![
        "load rate (attach through the leader)".into(),
        "all".into(),
        format!(
            "{shards} shards in {load_secs:.0} s = {:.0}/s",
            shards as f64 / load_secs
        ),
    ]);
    let ids: Vec<u64> = cluster.replicas.keys().copied().collect();
    for &id in &ids {
        max_rss = max_rss.max(cluster.rss_bytes(id).unwrap_or(0));
        let role = if id == view.leader {
            "leader"
        } else {
            "follower"
        };
        table.row(vec![
            "RSS after loading".into(),
            format!("{id} ({role})"),
            mib(cluster.rss_bytes(id)),
        ]);
        table.row(vec![
            "data dir size".into(),
            format!("{id} ({role})"),
            mib(Some(cluster.data_dir_bytes(id))),
        ]);
        let builds = logged_micros(&cluster.log_text(id), "built snapshot");
        table.row(vec![
            "snapshot build time (median, last; count)".into(),
            format!("{id} ({role})"),
            micros_summary(&builds),
        ]);
    }

    // A follower restarts with its data: time to /ready.
    let (follower, _) = view.follower().context("no follower")?;
    let follower_url = cluster.url(follower);
    let ready_secs = restart_and_time(ctx, cluster, follower, &follower_url, None).await?;
    max_ready = max_ready.max(ready_secs);
    table.row(vec![
        "restart to ready (SIGTERM, restart, same data)".into(),
        follower.to_string(),
        format!("{ready_secs:.2} s"),
    ]);
    table.row(vec![
        "RSS after restart".into(),
        follower.to_string(),
        mib(cluster.rss_bytes(follower)),
    ]);

    // A follower misses enough log entries that the leader purged them: it catches up
    // from a snapshot install. The missed attaches go one at a time, so each is its own
    // entry even with batching (the default snapshot policy counts entries).
    let extra = 8_000u64;
    let installs_before = logged_micros(&cluster.log_text(follower), "installed snapshot").len();
    let ready_secs = restart_and_time(
        ctx,
        cluster,
        follower,
        &follower_url,
        Some((view.leader_url().to_owned(), extra)),
    )
    .await?;
    max_ready = max_ready.max(ready_secs);
    let installs = logged_micros(&cluster.log_text(follower), "installed snapshot");
    table.row(vec![
        format!(
            "restart to ready after missing {extra} attaches, one entry each (snapshot install)"
        ),
        follower.to_string(),
        format!("{ready_secs:.2} s"),
    ]);
    table.row(vec![
        "snapshot install time".into(),
        follower.to_string(),
        if installs.len() > installs_before {
            micros_summary(&installs[installs_before..])
        } else {
            "no install logged (caught up from the log)".into()
        },
    ]);
    table.row(vec![
        "RSS after snapshot install".into(),
        follower.to_string(),
        mib(cluster.rss_bytes(follower)),
    ]);
    for &id in &ids {
        max_rss = max_rss.max(cluster.rss_bytes(id).unwrap_or(0));
    }
    Ok(ScaleFigures {
        table,
        max_rss_mib: max_rss as f64 / (1 << 20) as f64,
        max_ready_secs: max_ready,
    })
}

/// Stops `id` with SIGTERM; if `missed` is set, attaches that many shards through the
/// leader meanwhile; restarts it and returns the seconds from spawn until `/ready` is 200.
async fn restart_and_time(
    ctx: &Ctx,
    cluster: &mut LocalCluster,
    id: u64,
    url: &str,
    missed: Option<(String, u64)>,
) -> anyhow::Result<f64> {
    tokio::task::block_in_place(|| cluster.stop(id, libc::SIGTERM, Duration::from_secs(15)))?;
    if let Some((leader, n)) = missed {
        let base = 10_000_000u64;
        let list: Vec<_> = (base..base + n).map(|i| tenant(ns::SCALE, i)).collect();
        preload(ctx, &leader, list, |_| NodeId(1), 1).await?;
    }
    cluster.spawn(id)?;
    let started = Instant::now();
    let client = ctx.client(url).with_timeout(Duration::from_secs(2));
    loop {
        if client.ready().await.is_ok() {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("replica {id} not ready 120 s after restart");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn micros_summary(values: &[u64]) -> String {
    if values.is_empty() {
        return "none logged".into();
    }
    let ms: Vec<f64> = values.iter().map(|m| *m as f64 / 1000.0).collect();
    format!(
        "{:.0} ms, {:.0} ms; {}",
        median(&ms).unwrap_or(0.0),
        ms.last().copied().unwrap_or(0.0),
        values.len()
    )
}

/// Median, min and max of the gaps, in milliseconds.
pub fn gap_figures(kills: &[Kill]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let ms: Vec<f64> = kills.iter().map(|k| k.gap.as_secs_f64() * 1000.0).collect();
    (
        median(&ms),
        ms.iter().copied().reduce(f64::min),
        ms.iter().copied().reduce(f64::max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outage_is_the_longest_gap_between_successes() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            longest_gap(&[at(0), at(5), at(900), at(910)]),
            Duration::from_millis(895)
        );
        assert_eq!(longest_gap(&[at(30), at(0)]), Duration::from_millis(30));
        assert_eq!(longest_gap(&[at(0)]), Duration::ZERO);
    }
}
