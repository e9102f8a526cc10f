//! `bench local`: the standard suite on clusters the bench starts itself, printed as
//! markdown ready for BENCHMARKS.md, with the targets judged against the figures.

use std::path::Path;
use std::time::Duration;

use crate::cluster::{discover, LocalCluster};
use crate::failover::{failover, gap_figures, scale};
use crate::report::{table, verdict_table, Row, Verdict};
use crate::scenarios::{self, Ctx, Via};
use crate::stats::{ms, Table};

#[derive(Debug, Clone)]
pub struct SuiteArgs {
    pub attach_concurrency: Vec<usize>,
    pub tenants: u64,
    pub re_attach_shards: u64,
    pub failover_rounds: usize,
    /// 0 skips the scale scenario.
    pub scale_shards: u64,
    pub scale_cache_mb: u64,
    /// Extra `serve` flags for every replica.
    pub serve_args: Vec<String>,
}

/// A few facts about the machine and the moment, for the report's header.
pub fn environment() -> String {
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "- commit: {}\n- date: {}\n- nproc: {}; memory: {}\n- load average at start: {}\n",
        sh("git rev-parse --short HEAD 2>/dev/null && git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)'").replace('\n', " "),
        sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        sh("nproc"),
        sh("free -h | awk '/Mem:/ {print $2}'"),
        sh("cut -d' ' -f1-3 /proc/loadavg"),
    )
}

pub async fn run(ctx_template: &Ctx, bin: &Path, args: &SuiteArgs) -> anyhow::Result<String> {
    let mut out = String::from("## bench local\n\n");
    out.push_str(&environment());
    if !args.serve_args.is_empty() {
        out.push_str(&format!(
            "- extra serve flags: {}\n",
            args.serve_args.join(" ")
        ));
    }
    out.push_str(&format!(
        "- per configuration: {} runs of {} s (at most {} ops), median reported\n\n",
        ctx_template.runs,
        ctx_template.duration.as_secs(),
        ctx_template.max_ops
    ));
    let mut verdicts = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    {
        let mut cluster = LocalCluster::start(bin, 3, &args.serve_args)?;
        let ctx = Ctx {
            seeds: cluster.urls(),
            pids: cluster.pids(),
            ..ctx_template.clone()
        };
        discover(&ctx.http, &ctx.seeds, Duration::from_secs(30)).await?;
        eprintln!("suite: cluster up in {}", cluster.root().display());

        rows.extend(
            scenarios::attach(
                &ctx,
                args.tenants,
                &args.attach_concurrency,
                &[Via::Leader, Via::Follower],
            )
            .await?,
        );
        let validate = scenarios::validate(
            &ctx,
            10_000,
            &[128, 10_000],
            16,
            scenarios::Alongside {
                clients: 16,
                rate: None,
            },
        )
        .await?;
        let p99 = validate
            .iter()
            .find(|r| r.config.starts_with("batch 128,") && r.config.contains("alongside"))
            .and_then(|r| r.p99_ms);
        verdicts.push(Verdict {
            target: "validate 128 through a follower, attach traffic alongside: p99 < 5 ms".into(),
            measured: format!("{} ms", ms(p99)),
            met: p99.map(|p| p < 5.0),
        });
        rows.extend(validate);
        let re_attach = scenarios::re_attach(&ctx, args.re_attach_shards).await?;
        if let Some(r) = re_attach.first() {
            verdicts.push(Verdict {
                target: format!(
                    "re-attach of {} shards < 1 s, one Raft entry",
                    args.re_attach_shards
                ),
                measured: format!("{} ms; {}", ms(r.p50_ms), r.server),
                met: r.p50_ms.map(|p| {
                    p < 1000.0 && r.server.starts_with(&format!("{} Raft entries", r.runs))
                }),
            });
        }
        rows.extend(re_attach);
        rows.extend(scenarios::mixed(&ctx, args.tenants, 64).await?);
        out.push_str("### Traffic\n\n");
        out.push_str(&table(&rows).to_string());

        out.push_str("\n### Failover (attach traffic through the survivors; outage = longest time without a successful attach, from the signal until the first success after the old leader exited)\n\n");
        let mut t = Table::new(&[
            "signal",
            "rounds",
            "median outage ms",
            "min ms",
            "max ms",
            "background attach errors",
        ]);
        for (signal, name) in [(libc::SIGKILL, "kill -9"), (libc::SIGTERM, "SIGTERM")] {
            let (kills, errors) =
                failover(&ctx, &mut cluster, args.failover_rounds, signal).await?;
            let (median, min, max) = gap_figures(&kills);
            t.row(vec![
                name.into(),
                kills.len().to_string(),
                ms(median),
                ms(min),
                ms(max),
                errors.to_string(),
            ]);
            let (goal, limit) = if signal == libc::SIGKILL {
                ("kill -9: median < 1 s to the next attach", 1000.0)
            } else {
                ("SIGTERM (leader transfer): median < 0.2 s", 200.0)
            };
            verdicts.push(Verdict {
                target: goal.into(),
                measured: format!("{} ms", ms(median)),
                met: median.map(|m| m < limit),
            });
        }
        out.push_str(&t.to_string());
    }

    if args.scale_shards > 0 {
        let mut extra = args.serve_args.clone();
        extra.extend(["--cache-mb".to_owned(), args.scale_cache_mb.to_string()]);
        let mut cluster = LocalCluster::start(bin, 3, &extra)?;
        let ctx = Ctx {
            seeds: cluster.urls(),
            pids: cluster.pids(),
            ..ctx_template.clone()
        };
        let figures = scale(&ctx, &mut cluster, args.scale_shards, 256).await?;
        out.push_str(&format!(
            "\n### Scale: {} tenant shards, --cache-mb {}\n\n",
            args.scale_shards, args.scale_cache_mb
        ));
        out.push_str(&figures.table.to_string());
        verdicts.push(Verdict {
            target: format!(
                "scale: {} shards in < 512 MiB RSS per replica",
                args.scale_shards
            ),
            measured: format!("largest {:.0} MiB", figures.max_rss_mib),
            met: Some(figures.max_rss_mib < 512.0),
        });
        verdicts.push(Verdict {
            target: "scale: a restarted replica ready in < 10 s".into(),
            measured: format!("{:.2} s (slowest of the restarts)", figures.max_ready_secs),
            met: Some(figures.max_ready_secs < 10.0),
        });
    }
    out.push_str("\n### Targets\n\n");
    out.push_str(&verdict_table(&verdicts).to_string());
    out.push_str("\nattach against etcd and Postgres: see `bench/compare.sh`.\n");
    Ok(out)
}
