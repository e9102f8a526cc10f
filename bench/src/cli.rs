//! Command line of the bench: one subcommand per scenario of issue 6, plus `local` (the
//! suite), `compare` (peers side by side) and the hidden `null-server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::{default_server_bin, discover, http_pool, LocalCluster};
use crate::compare::{compare, CompareArgs};
use crate::failover::{failover, gap_figures, scale};
use crate::report::table;
use crate::scenarios::{self, Ctx, Via};
use crate::stats::ms;
use crate::suite::{self, SuiteArgs};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Load generator for pageserver-controller")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Replica URLs of a running cluster (any one is enough; comma-separated). Without
    /// it, a local three-replica cluster is started for the run and removed afterwards.
    #[arg(long, global = true, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Seconds per measured run.
    #[arg(long, global = true, default_value_t = 10)]
    pub duration: u64,
    /// Most operations per measured run.
    #[arg(long, global = true, default_value_t = 2_000_000)]
    pub ops: u64,
    /// Measured runs per configuration; the median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    pub runs: usize,
    /// The `pageserver-controller` binary for local clusters (default: next to this one).
    #[arg(long, global = true)]
    pub server_bin: Option<PathBuf>,
    /// An extra `serve` flag for the replicas of local clusters (repeatable), e.g.
    /// --serve-arg=--election-timeout-min-ms=300.
    #[arg(long = "serve-arg", global = true, allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// File holding a bearer token (JWT, scope `admin`) for a cluster that checks
    /// tokens; sent with every request to our replicas, never printed. Give a local
    /// cluster its keys with --serve-arg=--auth-public-key=PEM and
    /// --serve-arg=--peer-token-file=FILE.
    /// Without it, the token comes from PAGESERVER_CONTROLLER_TOKEN, if set.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl Common {
    fn token(&self) -> anyhow::Result<Option<String>> {
        pageserver_controller::auth::client_token(self.token_file.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// attach-hook on random tenants, through the leader and a follower.
    Attach {
        #[arg(long, default_value_t = 10_000)]
        tenants: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        concurrency: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "leader,follower")]
        via: Vec<ViaArg>,
    },
    /// validate batches through a follower, alone and with attach traffic alongside.
    Validate {
        /// Attached tenants the batches are drawn from (at least the largest batch).
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        #[arg(long, value_delimiter = ',', default_value = "128,10000")]
        batch: Vec<usize>,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Concurrent attach clients running alongside (0: none).
        #[arg(long, default_value_t = 16)]
        background: usize,
        /// Caps those clients at this many attaches per second in all (default: as
        /// fast as the cluster answers, which saturates a small machine).
        #[arg(long, value_parser = positive_rate)]
        background_rate: Option<f64>,
    },
    /// One node holding many shards re-attaches.
    ReAttach {
        #[arg(long, default_value_t = 100_000)]
        shards: u64,
    },
    /// Neon-shaped traffic: 90% validate, 9% attach, 1% re-attach.
    Mixed {
        #[arg(long, default_value_t = 10_000)]
        tenants: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Kill the leader under attach traffic; time to the next attach (local cluster only).
    Failover {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, value_enum, default_value = "both")]
        signal: SignalArg,
    },
    /// Load many shards; RSS, disk, snapshots, restart-to-ready (local cluster only).
    Scale {
        #[arg(long, default_value_t = 1_000_000)]
        shards: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// --cache-mb given to every replica.
        #[arg(long, default_value_t = 64)]
        cache_mb: u64,
    },
    /// The standard suite on local clusters, printed as markdown.
    Local {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        attach_concurrency: Vec<usize>,
        #[arg(long, default_value_t = 10_000)]
        tenants: u64,
        #[arg(long, default_value_t = 100_000)]
        re_attach_shards: u64,
        #[arg(long, default_value_t = 5)]
        failover_rounds: usize,
        /// Shards for the scale scenario (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        scale_shards: u64,
        #[arg(long, default_value_t = 64)]
        scale_cache_mb: u64,
    },
    /// attach against our cluster, etcd, Postgres and a do-nothing HTTP server.
    Compare {
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 1_000)]
        tenants: u64,
        /// etcd client endpoints, host:port, comma-separated.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// Postgres connection string, e.g. "host=127.0.0.1 port=5432 user=postgres".
        #[arg(long)]
        postgres: Option<String>,
        /// Skip the do-nothing HTTP server.
        #[arg(long)]
        no_null_server: bool,
        /// Also measure a local cluster of this binary (e.g. the build before a change).
        #[arg(long)]
        baseline_bin: Option<PathBuf>,
    },
    /// (internal) a do-nothing HTTP server for `compare`.
    #[command(hide = true)]
    NullServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ViaArg {
    Leader,
    Follower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalArg {
    Kill,
    Term,
    Both,
}

fn server_bin(common: &Common) -> anyhow::Result<PathBuf> {
    match &common.server_bin {
        Some(bin) => Ok(bin.clone()),
        None => default_server_bin(),
    }
}

fn needs_own_cluster(scenario: &Scenario) -> bool {
    matches!(scenario, Scenario::Failover { .. } | Scenario::Scale { .. })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = &cli.common;
    let http = http_pool(common.token()?.as_deref())?;
    let mut ctx = Ctx {
        http: http.clone(),
        seeds: common.url.clone(),
        duration: Duration::from_secs(common.duration),
        max_ops: common.ops,
        runs: common.runs.max(1),
        pids: Vec::new(),
    };
    if let Scenario::NullServer { listen } = cli.scenario {
        return crate::peers::null_http::serve(listen).await;
    }
    if let Scenario::Local {
        attach_concurrency,
        tenants,
        re_attach_shards,
        failover_rounds,
        scale_shards,
        scale_cache_mb,
    } = &cli.scenario
    {
        let args = SuiteArgs {
            attach_concurrency: attach_concurrency.clone(),
            tenants: *tenants,
            re_attach_shards: *re_attach_shards,
            failover_rounds: *failover_rounds,
            scale_shards: *scale_shards,
            scale_cache_mb: *scale_cache_mb,
            serve_args: common.serve_args.clone(),
        };
        let report = suite::run(&ctx, &server_bin(common)?, &args).await?;
        println!("\n{report}");
        return Ok(());
    }
    if let Scenario::Compare {
        concurrency,
        tenants,
        etcd,
        postgres,
        no_null_server,
        baseline_bin,
    } = &cli.scenario
    {
        let args = CompareArgs {
            concurrency: *concurrency,
            tenants: *tenants,
            duration: ctx.duration,
            runs: ctx.runs,
            etcd: etcd.clone(),
            postgres: postgres.clone(),
            cluster: common.url.clone(),
            server_bin: common.server_bin.clone(),
            null_server: !no_null_server,
            baseline_bin: baseline_bin.clone(),
            serve_args: common.serve_args.clone(),
        };
        println!("\n{}", suite::environment());
        println!("{}", compare(&args, http).await?);
        return Ok(());
    }

    // A local cluster when no --url is given (always for failover and scale).
    let mut local = None;
    if common.url.is_empty() || needs_own_cluster(&cli.scenario) {
        let mut extra = common.serve_args.clone();
        if let Scenario::Scale { cache_mb, .. } = &cli.scenario {
            extra.extend(["--cache-mb".to_owned(), cache_mb.to_string()]);
        }
        let cluster = LocalCluster::start(&server_bin(common)?, 3, &extra)?;
        ctx.seeds = cluster.urls();
        ctx.pids = cluster.pids();
        local = Some(cluster);
    }
    discover(&http, &ctx.seeds, Duration::from_secs(30))
        .await
        .context("finding the cluster's leader")?;

    let rows = match &cli.scenario {
        Scenario::Attach {
            tenants,
            concurrency,
            via,
        } => {
            let via: Vec<Via> = via
                .iter()
                .map(|v| match v {
                    ViaArg::Leader => Via::Leader,
                    ViaArg::Follower => Via::Follower,
                })
                .collect();
            scenarios::attach(&ctx, *tenants, concurrency, &via).await?
        }
        Scenario::Validate {
            tenants,
            batch,
            concurrency,
            background,
            background_rate,
        } => {
            let alongside = scenarios::Alongside {
                clients: *background,
                rate: *background_rate,
            };
            scenarios::validate(&ctx, *tenants, batch, *concurrency, alongside).await?
        }
        Scenario::ReAttach { shards } => scenarios::re_attach(&ctx, *shards).await?,
        Scenario::Mixed {
            tenants,
            concurrency,
        } => scenarios::mixed(&ctx, *tenants, *concurrency).await?,
        Scenario::Failover { rounds, signal } => {
            let cluster = local.as_mut().expect("a local cluster was started");
            let mut signals = Vec::new();
            if *signal != SignalArg::Term {
                signals.push((libc::SIGKILL, "kill -9"));
            }
            if *signal != SignalArg::Kill {
                signals.push((libc::SIGTERM, "SIGTERM"));
            }
            for (sig, name) in signals {
                let (kills, errors) = failover(&ctx, cluster, *rounds, sig).await?;
                let (median, min, max) = gap_figures(&kills);
                println!(
                    "failover {name}: {} rounds, longest attach outage: median {} ms, min {} ms, max {} ms; {errors} background attach errors",
                    kills.len(),
                    ms(median),
                    ms(min),
                    ms(max)
                );
            }
            return Ok(());
        }
        Scenario::Scale {
            shards,
            concurrency,
            ..
        } => {
            let cluster = local.as_mut().expect("a local cluster was started");
            let figures = scale(&ctx, cluster, *shards, *concurrency).await?;
            println!("\n{}", figures.table);
            return Ok(());
        }
        Scenario::Local { .. } | Scenario::Compare { .. } | Scenario::NullServer { .. } => {
            unreachable!("handled above")
        }
    };
    println!("\n{}", table(&rows));
    drop(local);
    Ok(())
}

/// A rate in operations per second: a finite number above zero.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate above zero (operations per second)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scenarios_parse_with_defaults_and_lists() {
        let cli = Cli::try_parse_from([
            "bench",
            "attach",
            "--concurrency",
            "1,64",
            "--via",
            "follower",
        ])
        .unwrap();
        match cli.scenario {
            Scenario::Attach {
                tenants,
                concurrency,
                via,
            } => {
                assert_eq!(tenants, 10_000);
                assert_eq!(concurrency, vec![1, 64]);
                assert!(matches!(via.as_slice(), [ViaArg::Follower]));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "bench",
            "re-attach",
            "--url",
            "http://a:1,http://b:2",
            "--runs",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.common.url, vec!["http://a:1", "http://b:2"]);
        assert_eq!(cli.common.runs, 5);
        assert!(matches!(
            cli.scenario,
            Scenario::ReAttach { shards: 100_000 }
        ));
        let cli =
            Cli::try_parse_from(["bench", "compare", "--etcd", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert!(
            matches!(cli.scenario, Scenario::Compare { ref etcd, concurrency: 64, .. } if etcd.len() == 2)
        );
        let cli = Cli::try_parse_from([
            "bench",
            "failover",
            "--serve-arg=--election-timeout-min-ms=300",
            "--serve-arg",
            "--heartbeat-ms=50",
        ])
        .unwrap();
        assert_eq!(
            cli.common.serve_args,
            vec!["--election-timeout-min-ms=300", "--heartbeat-ms=50"]
        );
        assert!(Cli::try_parse_from(["bench", "failover", "--signal", "hup"]).is_err());
        assert!(Cli::try_parse_from(["bench", "nonsense"]).is_err());
    }

    #[test]
    fn a_background_rate_is_a_positive_number() {
        let parse = |rate: &str| {
            let flag = format!("--background-rate={rate}");
            Cli::try_parse_from(["bench", "validate", flag.as_str()]).map(|cli| {
                match cli.scenario {
                    Scenario::Validate {
                        background_rate, ..
                    } => background_rate,
                    other => panic!("parsed as {other:?}"),
                }
            })
        };
        assert_eq!(parse("300").unwrap(), Some(300.0));
        assert_eq!(parse("0.5").unwrap(), Some(0.5));
        for bad in ["0", "-3", "NaN", "inf", "fast"] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains("not a rate above zero"), "{bad}: {error}");
        }
        let cli = Cli::try_parse_from(["bench", "validate"]).unwrap();
        assert!(matches!(
            cli.scenario,
            Scenario::Validate {
                background_rate: None,
                background: 16,
                ..
            }
        ));
    }
}
