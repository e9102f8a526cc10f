//! Chaos: kill, pause and partition replicas under Neon-shaped traffic, and prove from the
//! recorded history that no answer was wrong.
//!
//! The shape is the one etcd's robustness tests and Jepsen use: traffic, one injected
//! fault at a time, a history of every request, and a checker that compares the history
//! with a model.
//!
//! - [`history`]: what every client asked, of which replica, when, and what it learned.
//! - [`checker`]: the verdict: the safety rules by name, then linearizability of each
//!   tenant shard's history against the generation model.
//! - [`cluster`]: real `serve` processes on loopback, started, killed, paused, wiped.
//! - [`proxy`]: the fault-injecting proxy every replica-to-replica byte crosses.
//! - [`faults`]: the named faults.
//! - [`traffic`]: simulated pageservers, an operator and random clients.
//! - [`run`]: one run, from a fresh cluster to a verdict.
//! - [`scenarios`]: named fault sequences that once broke the controller.
//! - [`report`], [`timeline`]: the summary, and the failure folder with its picture.
//! - [`sim`]: the same checker over hundreds of fault schedules run in one process.

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod sim;
pub mod timeline;
pub mod traffic;

/// The hidden command of the `chaos` binary that runs the controller's own command line
/// (`chaos replica serve ...` is `pageserver-controller serve ...`).
pub const EMBEDDED_REPLICA_COMMAND: &str = "replica";

/// If `args` (a process's own, program name first) start with
/// [`EMBEDDED_REPLICA_COMMAND`], runs the controller's command line from the rest and
/// returns its exit code: how a binary that embeds the controller (the `chaos` binary,
/// a test binary) serves as the replicas' program, built from the same sources.
pub fn run_if_embedded_replica(args: &[String]) -> Option<std::process::ExitCode> {
    use clap::Parser;
    if args.get(1).map(String::as_str) != Some(EMBEDDED_REPLICA_COMMAND) {
        return None;
    }
    let cli = pageserver_controller::cli::Cli::parse_from(
        std::iter::once("pageserver-controller".to_owned()).chain(args[2..].iter().cloned()),
    );
    Some(match pageserver_controller::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    })
}
