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

/// Tells glibc's allocator to keep memory it got back for reuse rather than hand it to the
/// kernel: RocksDB allocates a memtable's arena in blocks of megabytes and frees them after each
/// flush, and by default each block is a fresh mapping whose every page the kernel zeroes on
/// first touch (a twelfth of a validator's CPU under opaque load). Blocks up to 32 MiB (glibc's
/// largest threshold) now come from the heap, and freed heap is not trimmed below 512 MiB.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
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
