//! The `backtest-perf` command line: the bundled strategies. A crate of your own adds its
//! strategies the same way (`backtest_perf::cli::Cli::default().with_strategy::<S>()`).

/// Counts each thread's allocations, so that tracked operations report their memory
/// (`backtest --timeline`); otherwise the system allocator.
#[global_allocator]
static ALLOCATOR: backtest_perf::tracker::CountingAllocator =
    backtest_perf::tracker::CountingAllocator::new();

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    backtest_perf::cli::Cli::default().run()
}

/// Tells glibc's malloc to keep memory the process frees (up to 64 MB, and blocks up to
/// 32 MB from its heap rather than fresh mappings), so that a run after another, in
/// `bench` or a sweep of backtests, reuses it instead of faulting its pages in again.
/// By default glibc gave back a run's windows and export chunks as they were freed, and
/// the next run faulted in hundreds of pages (about 1.5 us each here): a year's run
/// sampled 1 tick in 32 took 1.06-1.15x the run with tracking off, and 1.06-1.08x since. A `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` set
/// in the environment is left as the user set it.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        if unset("MALLOC_MMAP_THRESHOLD_") && unset("MALLOC_TRIM_THRESHOLD_") {
            // SAFETY: `mallopt` only sets two of malloc's tunables; it is called first
            // thing in `main`, before this program starts any thread or allocates much.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
            }
        }
    }
}
