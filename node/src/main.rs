//! `quorate`: the Quorate validator node and its command-line tools.

mod audit;
mod bench;
mod cli;
mod client;
mod executor;
mod ingest;
mod localnet;
mod mempool;
mod metrics;
mod network;
mod node;
mod rpc;
mod sync;
mod wire;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, the whole chain of causes.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
