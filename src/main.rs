//! The `pageserver-controller` binary: command-line parsing and nothing else.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pageserver_controller::cli::Cli::parse();
    // A replica's fatal error belongs in its structured log too; a command run by a
    // person says it once.
    let log_the_error = cli.command.as_ref().is_some_and(|c| c.is_a_replica());
    match pageserver_controller::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if log_the_error {
                tracing::error!("{e:#}");
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
