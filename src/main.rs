//! The `pageserver-controller` binary: command-line parsing and nothing else.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pageserver_controller::cli::Cli::parse();
    match pageserver_controller::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
