//! The command line: `serve` runs a replica, `local-cluster` runs three on loopback, and
//! the rest are operator commands that talk to any replica through [`crate::client`].

/// `std`'s `println!`/`print!` for what the commands print, except that a closed stdout
/// (`cluster status | head -1`) ends the command quietly, as other command-line tools
/// do, instead of panicking. (SIGPIPE stays ignored: its default action would also kill
/// a command that writes to a socket a replica has just reset.) Defined before the
/// command modules, which use it in place of `std`'s.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*), false)
    };
}
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*), true)
    };
}

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
/// followers forward to the leader. Run `local-cluster` (also what runs without a
/// command) for a three-replica cluster on loopback, or `serve` on each machine of a real
/// one.
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

    /// Without one: `local-cluster` with its defaults.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run: the one given, else `local-cluster` with its defaults.
    pub fn command(self) -> Command {
        self.command.unwrap_or_else(|| {
            Cli::try_parse_from(["pageserver-controller", "local-cluster"])
                .ok()
                .and_then(|cli| cli.command)
                .expect("local-cluster parses with its defaults")
        })
    }
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

/// Writes to stdout for the commands' `print!`/`println!`: exits quietly (status 0) once
/// stdout is closed, and panics on any other failure, as `std`'s macros do.
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(text).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => panic!("failed printing to stdout: {e}"),
    }
}

/// Runs the parsed command line; the process exit code follows the result.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (log, log_format) = (cli.log.clone(), cli.log_format);
    match cli.command() {
        Command::Serve(args) => {
            crate::logging::init(&log, log_format, args.replica_id().ok());
            runtime.block_on(serve::run(*args))
        }
        Command::LocalCluster(args) => {
            crate::logging::init(&log, log_format, None);
            runtime.block_on(local_cluster::run(args, &log, log_format))
        }
        Command::Backup(args) => {
            crate::logging::init("warn", log_format, None);
            runtime.block_on(offline::backup(args))
        }
        Command::Restore(args) => {
            crate::logging::init(&log, log_format, Some(args.id));
            runtime.block_on(offline::restore(args))
        }
        Command::Recover(args) => {
            crate::logging::init(&log, log_format, Some(args.id));
            runtime.block_on(offline::recover(args))
        }
        Command::Token(args) => offline::token(args),
        Command::Keygen(args) => offline::keygen(args),
        Command::Ops(command) => {
            crate::logging::init("warn", log_format, None);
            runtime.block_on(ops::run(command))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_command_a_local_cluster_runs_with_its_defaults() {
        let cli = Cli::try_parse_from(["pageserver-controller"]).unwrap();
        let Command::LocalCluster(args) = cli.command() else {
            panic!("not local-cluster");
        };
        assert_eq!(args.data_dir, std::path::PathBuf::from(".local-cluster"));
        assert_eq!(args.base_port, 7001);
        // A command given is the command run.
        let cli = Cli::try_parse_from([
            "pageserver-controller",
            "keygen",
            "--private-key",
            "a",
            "--public-key",
            "b",
        ]);
        assert!(matches!(cli.unwrap().command(), Command::Keygen(_)));
    }
}
