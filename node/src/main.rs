//! `quorate`: the Quorate validator node and its command-line tools.

mod audit;
mod bench;
mod cli;
mod client;
mod executor;
mod governance;
mod inbox;
mod ingest;
mod localnet;
mod manifests;
mod mempool;
mod metrics;
mod network;
mod node;
mod peer_batches;
mod rpc;
mod sync;
mod wire;

use clap::Parser;
use std::process::ExitCode;

/// Exit status of a process stopped by a panic (EX_SOFTWARE: a bug, not bad input).
const PANIC_EXIT: i32 = 70;

/// A panic on any thread stops the whole process with one line: a node whose executor or
/// network thread died would otherwise stay up as a zombie, serving RPC but never voting.
/// Supervisors restart it; safety state is synced before anything that depends on it leaves.
fn stop_the_process_on_any_panic() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        eprintln!("error: bug: thread '{name}' panicked{location}: {message}");
        std::process::exit(PANIC_EXIT);
    }));
}

fn main() -> ExitCode {
    stop_the_process_on_any_panic();
    let cli = cli::Cli::parse();
    // The simulator runs engines by the thousand, Byzantine ones among them: their warnings
    // would flood stderr and slow it down. RUST_LOG still overrides.
    let default_filter = if cli.is_simulation() { "error" } else { "info" };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
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
