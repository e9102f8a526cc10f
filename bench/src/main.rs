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
    match runtime.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
