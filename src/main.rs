//! The `backtest-perf` command line.

mod cli;

use clap::Parser;

/// Counts each thread's allocations, so that tracked operations report their memory
/// (`backtest --timeline`); otherwise the system allocator.
#[global_allocator]
static ALLOCATOR: backtest_perf::tracker::CountingAllocator =
    backtest_perf::tracker::CountingAllocator::new();

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ cli::CliError::SideJobs(_)) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(cli::EXIT_SIDE_JOBS_FAILED)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
