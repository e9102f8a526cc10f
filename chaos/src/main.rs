//! `chaos`: the command line of the chaos harness (parsing and wiring only).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chaos::cluster::ServerCommand;
use chaos::faults::{FaultKind, Timings};
use chaos::run::{run, RunConfig};
use chaos::traffic::TrafficConfig;
use clap::{Args, Parser, Subcommand};

/// Kill, pause and partition a real pageserver-controller cluster under Neon-shaped
/// traffic, then check the recorded history for wrong answers.
///
/// Without a command, `run` is meant: `cargo run -p chaos -- --duration-secs 600`.
#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run: a fresh cluster, traffic, faults in rounds, final reads, the verdict.
    Run(RunArgs),
    /// Check a history saved by a run (`history.jsonl` of a failure folder) again.
    Check {
        /// The history file (JSON lines).
        history: PathBuf,
        /// Steps each shard's linearizability search may take before that shard is called
        /// inconclusive (a run uses the default); more decides a shard a run could not.
        #[arg(long, default_value_t = chaos::checker::DEFAULT_MAX_STEPS)]
        max_steps: u64,
    },
    /// Many short fault schedules, replicas in this process over a simulated network.
    Sim(SimArgs),
    /// Run named regression scenarios (fixed fault sequences that once broke the
    /// controller); all of them without a name. `--list` shows them.
    Scenario {
        /// The scenario's name.
        name: Option<String>,
        /// List the scenarios and what each once broke.
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Clone, Args)]
struct SimArgs {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// How many seeds (schedules) to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Faults per schedule.
    #[arg(long, default_value_t = 4)]
    faults: usize,
    /// Schedules run at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where data dirs go (a failed seed's folder and history are kept there).
    #[arg(long, default_value = "target/chaos-sim")]
    out: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Seed of every random choice (fault order, targets, durations, traffic). Default:
    /// from the clock, printed so the run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Replicas in the cluster (3 to 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    replicas: u64,
    /// Inject faults for at least this long; the round in progress is completed.
    #[arg(long, default_value_t = 180)]
    duration_secs: u64,
    /// Fault kinds to inject, comma-separated (default: all but the disk-full ones, which
    /// give each replica a tmpfs of its own and need root).
    #[arg(long, value_delimiter = ',', value_enum)]
    faults: Vec<FaultKind>,
    /// Where run folders are created.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Run this pageserver-controller binary for the replicas instead of the controller
    /// built into this harness (e.g. a release build).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// An extra flag for every replica's `serve` (repeatable), e.g.
    /// `--serve-arg=--election-timeout-min-ms=700`. One that makes replicas refuse what
    /// this harness's traffic sends fails the run with `wrong_refusal`: a
    /// `--max-validate-tenants` below the largest validate it sends (a simulated
    /// pageserver validates what it holds in chunks of up to 128, and holds at most
    /// `--active-shards`), or a `--max-body-bytes` too small for its requests. A bound
    /// between that and Neon's 128 is not caught here.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Keep the run folder (logs, data dirs, history) even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Turn authentication on, as deployed: a key pair made for the run, peer tokens
    /// on Raft traffic, and an admin token on every request of the harness.
    #[arg(long)]
    auth: bool,
    /// Turn TLS on, as deployed: a certificate made for the run, served to clients and
    /// peers (peer traffic still crosses the fault proxy, encrypted) and trusted by the
    /// harness.
    #[arg(long)]
    tls: bool,
    /// Check the history so far after every this many faults and stop at the first
    /// violation (0: only at the end).
    #[arg(long, default_value_t = 25)]
    check_every: usize,
    /// Simulated pageservers.
    #[arg(long, default_value_t = 3)]
    pageservers: u64,
    /// Clients sending random requests.
    #[arg(long, default_value_t = 2)]
    random_clients: u64,
    /// Shards in use at a time (each is retired after --ops-per-shard operations).
    #[arg(long, default_value_t = 24)]
    active_shards: usize,
    #[arg(long, default_value_t = 60)]
    ops_per_shard: u32,
    /// Shortest and longest time a fault is held, in milliseconds.
    #[arg(long, default_value_t = 800)]
    hold_min_ms: u64,
    #[arg(long, default_value_t = 3_000)]
    hold_max_ms: u64,
    /// Shortest and longest pause between faults, in milliseconds.
    #[arg(long, default_value_t = 300)]
    quiet_min_ms: u64,
    #[arg(long, default_value_t = 1_500)]
    quiet_max_ms: u64,
    /// How long the cluster may take to be healthy again after a fault.
    #[arg(long, default_value_t = 60)]
    patience_secs: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
}

impl RunArgs {
    /// The command line that replays this run.
    fn replay(&self, seed: u64, faults: &[FaultKind]) -> String {
        let mut line = format!(
            "cargo run -p chaos -- run --seed {seed} --replicas {} --duration-secs {} --faults {}",
            self.replicas,
            self.duration_secs,
            faults
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(",")
        );
        line += &format!(
            " --pageservers {} --random-clients {} --active-shards {} --ops-per-shard {} \
             --hold-min-ms {} --hold-max-ms {} --quiet-min-ms {} --quiet-max-ms {}",
            self.pageservers,
            self.random_clients,
            self.active_shards,
            self.ops_per_shard,
            self.hold_min_ms,
            self.hold_max_ms,
            self.quiet_min_ms,
            self.quiet_max_ms
        );
        if self.auth {
            line += " --auth";
        }
        if self.tls {
            line += " --tls";
        }
        for arg in &self.serve_args {
            line += &format!(" --serve-arg={arg}");
        }
        if let Some(bin) = &self.server_bin {
            line += &format!(" --server-bin {}", bin.display());
        }
        line
    }

    fn into_config(self) -> anyhow::Result<RunConfig> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
        });
        let faults = if self.faults.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            self.faults.clone()
        };
        let server = match &self.server_bin {
            Some(bin) => ServerCommand::binary(bin),
            None => ServerCommand::embedded(
                std::env::current_exe().context("locating the chaos executable")?,
            ),
        };
        let mut serve_args = RunConfig::default_serve_args();
        serve_args.extend(self.serve_args.iter().cloned());
        anyhow::ensure!(
            self.hold_min_ms <= self.hold_max_ms && self.quiet_min_ms <= self.quiet_max_ms,
            "a minimum is above its maximum"
        );
        Ok(RunConfig {
            seed,
            replicas: self.replicas,
            duration: Duration::from_secs(self.duration_secs),
            replay: self.replay(seed, &faults),
            faults,
            script: None,
            out: self.out,
            server,
            serve_args,
            traffic: TrafficConfig {
                seed,
                pageservers: self.pageservers,
                random_clients: self.random_clients,
                active_shards: self.active_shards,
                ops_per_shard: self.ops_per_shard,
                ..TrafficConfig::default()
            },
            timings: Timings {
                hold_ms: (self.hold_min_ms, self.hold_max_ms),
                patience: Duration::from_secs(self.patience_secs),
            },
            quiet_ms: (self.quiet_min_ms, self.quiet_max_ms),
            check_every: self.check_every,
            keep: self.keep,
            auth: self.auth,
            tls: self.tls,
            progress_every: Duration::from_secs(self.progress_secs.max(1)),
        })
    }
}

/// The harness's own progress; the replicas of `sim` run in this process and would
/// drown it.
const DEFAULT_LOG: &str =
    "info,openraft=off,pageserver_controller=warn,controller_storage=warn,controller_raft=warn";

fn main() -> ExitCode {
    // `chaos replica ARGS` is `pageserver-controller ARGS`: the replicas the harness starts.
    if let Some(exit) = chaos::run_if_embedded_replica(&std::env::args().collect::<Vec<_>>()) {
        return exit;
    }

    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHAOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Some(Command::Check { history, max_steps }) => check(&history, max_steps),
        Some(Command::Run(args)) => run_once(args),
        Some(Command::Sim(args)) => simulate(args),
        Some(Command::Scenario { name, list, run }) => scenario(name, list, run),
        None => run_once(cli.run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn scenario(name: Option<String>, list: bool, args: RunArgs) -> anyhow::Result<bool> {
    use chaos::scenarios::{find, SCENARIOS};
    if list {
        for s in SCENARIOS {
            println!("{} ({} replicas)\n  {}\n", s.name, s.replicas, s.about);
        }
        for (name, about) in chaos::scenarios::IN_PROCESS {
            println!("{name} (in one process)\n  {about}\n");
        }
        return Ok(true);
    }
    let in_process: Vec<&str> = match name.as_deref() {
        Some(name) => vec![name],
        None => chaos::scenarios::IN_PROCESS
            .iter()
            .map(|(n, _)| *n)
            .collect(),
    };
    let mut passed = true;
    for scenario in in_process {
        let runtime = tokio::runtime::Runtime::new()?;
        if let Some(result) = runtime.block_on(chaos::sim::scenario::run(scenario, &args.out)) {
            let result = result?;
            println!("scenario {scenario} (in one process): {result:#?}");
            if name.is_some() {
                return Ok(result.passed());
            }
            passed &= result.passed();
        }
    }
    let chosen: Vec<_> = match &name {
        Some(name) => vec![find(name).with_context(|| {
            format!("no scenario {name:?}; `chaos scenario --list` shows them")
        })?],
        None => SCENARIOS.iter().collect(),
    };
    for s in chosen {
        println!("scenario {}: {}", s.name, s.about);
        let mut config = args.clone().into_config()?;
        config.replicas = s.replicas;
        config.script = Some(s.steps.to_vec());
        config.replay = format!(
            "cargo run -p chaos -- scenario {} --seed {}",
            s.name, config.seed
        );
        passed &= execute(config)?;
    }
    Ok(passed)
}

fn run_once(args: RunArgs) -> anyhow::Result<bool> {
    execute(args.into_config()?)
}

fn execute(config: RunConfig) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(config))?;
    print!("{}", chaos::report::render(&result.summary));
    if let Some(folder) = &result.folder {
        println!("run folder: {}", folder.display());
    }
    Ok(result.summary.passed())
}

fn check(path: &std::path::Path, max_steps: u64) -> anyhow::Result<bool> {
    let ops = chaos::history::read_jsonl(path)?;
    let verdict = chaos::checker::check_with_budget(&ops, max_steps);
    println!(
        "{} operations, {} shards, {} after projection, largest shard history {}",
        ops.len(),
        verdict.shards,
        verdict.projected_ops,
        verdict.largest_shard_history
    );
    for violation in &verdict.violations {
        println!("VIOLATION: {violation}");
    }
    for shard in &verdict.inconclusive {
        println!("INCONCLUSIVE: shard {shard}");
    }
    println!(
        "verdict: {}",
        if verdict.passed() { "PASS" } else { "FAIL" }
    );
    Ok(verdict.passed())
}

fn simulate(args: SimArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new()?;
    let results = runtime.block_on(chaos::sim::run_seeds(
        args.first_seed,
        args.seeds,
        args.concurrency,
        &args.out,
        args.faults,
    ))?;
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    let faults: usize = results.iter().map(|r| r.faults.len()).sum();
    let ops: usize = results
        .iter()
        .map(|r| r.counts.ok + r.counts.indeterminate)
        .sum();
    for result in &failed {
        println!(
            "seed {} ({} replicas; faults: {}) FAILED:",
            result.seed,
            result.replicas,
            result.faults.join(", ")
        );
        for problem in &result.liveness {
            println!("  LIVENESS: {problem}");
        }
        for violation in &result.verdict.violations {
            println!("  VIOLATION: {violation}");
        }
        for shard in &result.verdict.inconclusive {
            println!("  INCONCLUSIVE: shard {shard}");
        }
    }
    println!(
        "{} seeds from {}, {faults} faults, {ops} operations checked: {} failed",
        results.len(),
        args.first_seed,
        failed.len()
    );
    Ok(failed.is_empty())
}
