//! `bench`: load generator for pageserver-controller (issue 6).
//!
//! It drives a cluster over HTTP through the project's own typed client with N concurrent
//! sequential clients (closed loop), bounded by an operation count and a duration, and
//! prints throughput, latency percentiles, errors and the server-side figures it can read.
//! Without `--url` it starts a local three-replica cluster of the release binary in a
//! temporary folder and removes it afterwards. `bench local` runs the whole suite;
//! `bench compare` puts etcd, Postgres and a do-nothing HTTP server side by side.

mod cli;
mod cluster;
mod compare;
mod failover;
mod load;
mod metrics;
mod peers;
mod report;
mod scenarios;
mod stats;
mod suite;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let outcome = runtime.block_on(async {
        let interrupted = interruption();
        tokio::select! {
            result = cli::run(args) => result,
            // Dropping the run drops what it holds: a local cluster kills its replicas
            // and removes its folder.
            signal = interrupted => Err(anyhow::anyhow!(
                "stopped by {signal}; any local cluster it had started was stopped and its folder removed"
            )),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs handlers for SIGINT (Ctrl-C) and SIGTERM now, and resolves, with the
/// signal's name, when one arrives. Installed before the run starts: a signal that came
/// before would end the process with no cleanup at all.
fn interruption() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
