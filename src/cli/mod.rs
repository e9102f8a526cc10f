//! The command line: `serve` runs a replica, `local-cluster` runs three on loopback, and
//! the rest are operator commands that talk to any replica through [`crate::client`].

mod local_cluster;
mod offline;
mod ops;
mod serve;
mod statefulset;
mod survey;

use clap::{Parser, Subcommand};

pub use local_cluster::LocalClusterArgs;
pub use ops::{ClientArgs, ClusterCommand, OpsCommand};
pub use serve::{parse_initial_cluster, ServeArgs, DRAIN};
pub use statefulset::{Placement, Pod, StatefulSetArgs};

use crate::logging::LogFormat;

/// Raft-replicated generation numbers for Neon pageservers.
///
/// Every replica serves Neon's control-plane API (re-attach, validate, attach-hook, ...);
/// followers forward to the leader. Run `local-cluster` for a three-replica cluster on
/// loopback, or `serve` on each machine of a real one.
#[derive(Debug, Parser)]
#[command(name = "pageserver-controller", version, max_term_width = 100)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `info,openraft=warn`.
    #[arg(
        long,
        env = "PAGESERVER_CONTROLLER_LOG",
        default_value = "info,openraft=warn",
        global = true
    )]
    pub log: String,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one replica.
    Serve(Box<ServeArgs>),
    /// Run a three-replica cluster on loopback as child processes, restarting any that
    /// dies (Ctrl-C stops them).
    LocalCluster(LocalClusterArgs),
    /// Save a consistent backup of the whole registry from a running cluster.
    Backup(offline::BackupArgs),
    /// Seed the first replica of a NEW cluster from a backup (offline).
    Restore(offline::RestoreArgs),
    /// Disaster recovery: rebuild a one-member cluster from a surviving replica's data dir
    /// after a majority of replicas is lost for good (offline; refuses a live data dir).
    Recover(offline::RecoverArgs),
    /// Mint a JWT (EdDSA) for pageservers, operators or replicas.
    Token(offline::TokenArgs),
    /// Generate an Ed25519 key pair for signing and checking tokens.
    Keygen(offline::KeygenArgs),
    #[command(flatten)]
    Ops(OpsCommand),
}

impl Command {
    /// `serve`: a long-running replica, whose log is read by machines.
    pub fn is_a_replica(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

/// Runs the parsed command line; the process exit code follows the result.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            crate::logging::init(&cli.log, cli.log_format, args.replica_id().ok());
            runtime.block_on(serve::run(*args))
        }
        Command::LocalCluster(args) => {
            crate::logging::init(&cli.log, cli.log_format, None);
            runtime.block_on(local_cluster::run(args, &cli.log, cli.log_format))
        }
        Command::Backup(args) => {
            crate::logging::init("warn", cli.log_format, None);
            runtime.block_on(offline::backup(args))
        }
        Command::Restore(args) => {
            crate::logging::init(&cli.log, cli.log_format, Some(args.id));
            runtime.block_on(offline::restore(args))
        }
        Command::Recover(args) => {
            crate::logging::init(&cli.log, cli.log_format, Some(args.id));
            runtime.block_on(offline::recover(args))
        }
        Command::Token(args) => offline::token(args),
        Command::Keygen(args) => offline::keygen(args),
        Command::Ops(command) => {
            crate::logging::init("warn", cli.log_format, None);
            runtime.block_on(ops::run(command))
        }
    }
}
