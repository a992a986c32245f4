//! Many backtests at once, one per thread at a time, results in job order.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::runner::{Backtest, BacktestError, BacktestResult};
use super::strategy::Strategy;

/// One backtest to run: the run and the strategy it runs.
///
/// ```
/// use backtest_perf::engine::parallel::Job;
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let job: Job = (Backtest::new(&exchange, "SYN").unwrap(), Box::new(backtest_perf::strategies::SmaCrossover::default()));
/// # drop(job);
/// ```
pub type Job<'a> = (Backtest<'a>, Box<dyn Strategy>);

/// The number of threads to use by default: the machine's cores.
///
/// ```
/// assert!(backtest_perf::engine::parallel::default_threads() >= 1);
/// ```
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `jobs` on up to `threads` threads; each job's result lands at its index. Every
/// run has its own storage key (symbol:strategy), so runs do not contend on the bus.
///
/// ```
/// use backtest_perf::engine::parallel::run_parallel;
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::{DonchianBreakout, SmaCrossover};
///
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let jobs: Vec<backtest_perf::engine::parallel::Job> = vec![
///     (Backtest::new(&exchange, "SYN").unwrap(), Box::new(SmaCrossover::default())),
///     (Backtest::new(&exchange, "SYN").unwrap(), Box::new(DonchianBreakout::default())),
/// ];
/// let results = run_parallel(jobs, 2);
/// assert_eq!(results[1].as_ref().unwrap().strategy, "donchian-breakout");
/// ```
pub fn run_parallel(
    jobs: Vec<Job<'_>>,
    threads: usize,
) -> Vec<Result<BacktestResult, BacktestError>> {
    let count = jobs.len();
    let jobs: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<Result<BacktestResult, BacktestError>>>> =
        (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let job = jobs[i].lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some((backtest, mut strategy)) = job {
                        let result = backtest.run(strategy.as_mut());
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every job index below the count was taken and run once")
        })
        .collect()
}
