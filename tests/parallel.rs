//! Many backtests at once give exactly what they give one by one.

use backtest_perf::engine::parallel::{Job, run_parallel};
use backtest_perf::engine::synthetic::generate;
use backtest_perf::engine::{Backtest, MemoryExchange, SyntheticConfig};
use backtest_perf::{PerformanceEmitter, PerformanceService, strategies};

#[test]
fn parallel_runs_equal_sequential_runs() {
    let mut exchange = MemoryExchange::new();
    for (symbol, seed) in [("PAR1", 1), ("PAR2", 2)] {
        let config = SyntheticConfig {
            seed,
            ..SyntheticConfig::days(2)
        };
        exchange = exchange.with_series(generate(symbol.into(), &config).unwrap());
    }
    let jobs = |bus: &PerformanceEmitter| -> Vec<Job> {
        let mut jobs: Vec<Job> = Vec::new();
        for symbol in ["PAR1", "PAR2"] {
            for entry in strategies::registry() {
                let backtest = Backtest::new(&exchange, symbol)
                    .unwrap()
                    .with_bus(bus.clone());
                jobs.push((backtest, (entry.build)()));
            }
        }
        jobs
    };

    let one_bus = PerformanceEmitter::new();
    let one = PerformanceService::attached(&one_bus);
    let sequential: Vec<_> = jobs(&one_bus)
        .into_iter()
        .map(|(backtest, mut strategy)| backtest.run(strategy.as_mut()).unwrap())
        .collect();

    let many_bus = PerformanceEmitter::new();
    let many = PerformanceService::attached(&many_bus);
    let parallel: Vec<_> = run_parallel(jobs(&many_bus), 2)
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Timings (slow hooks) differ from run to run; everything the backtest decided must not.
    let decided = |results: &[backtest_perf::engine::BacktestResult]| -> Vec<_> {
        results
            .iter()
            .map(|r| {
                (
                    r.symbol,
                    r.strategy,
                    r.frames,
                    r.closed.clone(),
                    r.rejected.clone(),
                    r.cancelled.clone(),
                    r.summary,
                )
            })
            .collect()
    };
    assert_eq!(decided(&parallel), decided(&sequential));
    assert_eq!(parallel.len(), 6);
    assert!(parallel.iter().all(|r| r.summary.signals > 0));
    // Each run has its own key, with the same number of events either way.
    for r in &parallel {
        let (a, b) = (
            one.get_data(&r.symbol, &r.strategy),
            many.get_data(&r.symbol, &r.strategy),
        );
        assert_eq!(
            a.total_events, b.total_events,
            "{}:{}",
            r.symbol, r.strategy
        );
        let counts = |s: &backtest_perf::PerformanceStatistics| {
            s.metric_stats.values().map(|m| m.count).collect::<Vec<_>>()
        };
        assert_eq!(counts(&a), counts(&b));
    }
    assert_eq!(many.storage().keys().len(), 6);
}
