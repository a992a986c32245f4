//! The `backtest-perf` command line: the bundled strategies. A crate of your own adds its
//! strategies the same way (`backtest_perf::cli::Cli::default().with_strategy::<S>()`).

/// Counts each thread's allocations, so that tracked operations report their memory
/// (`backtest --timeline`); otherwise the system allocator.
#[global_allocator]
static ALLOCATOR: backtest_perf::tracker::CountingAllocator =
    backtest_perf::tracker::CountingAllocator::new();

fn main() -> std::process::ExitCode {
    backtest_perf::cli::Cli::default().run()
}
