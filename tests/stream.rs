//! A run over synthetic candles made as it goes (`Backtest::synthetic`) is the run over
//! the same candles held whole: the same signals, trades, frames and timed hooks.

use backtest_perf::engine::{
    Backtest, BacktestConfig, BacktestError, BacktestResult, Context, ExchangeError, Interval,
    Signal, Strategy, StrategyError, SyntheticConfig, SyntheticExchange,
};
use backtest_perf::{MetricType, PerformanceEmitter, PerformanceService};

/// What a run decided, and how many events of each hook it timed.
fn outcome(
    backtest: Backtest<'_>,
    strategy: &mut dyn Strategy,
) -> (BacktestResult, Vec<(MetricType, usize)>) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let result = backtest.with_bus(bus).run(strategy).unwrap();
    let data = service.get_data(result.symbol.as_str(), result.strategy.as_str());
    let counts = data
        .metric_stats
        .iter()
        .map(|(metric, stats)| (*metric, stats.count))
        .collect();
    (result, counts)
}

fn assert_same(
    streamed: &(BacktestResult, Vec<(MetricType, usize)>),
    held: &(BacktestResult, Vec<(MetricType, usize)>),
    what: &str,
) {
    let (a, b) = (&streamed.0, &held.0);
    assert_eq!(a.frames, b.frames, "{what}: frames");
    assert_eq!(a.closed, b.closed, "{what}: closed signals");
    assert_eq!(a.rejected, b.rejected, "{what}: rejected signals");
    assert_eq!(a.cancelled, b.cancelled, "{what}: cancelled signals");
    assert_eq!(a.summary, b.summary, "{what}: summary");
    assert_eq!(streamed.1, held.1, "{what}: events per hook");
}

#[test]
fn every_bundled_strategy_decides_the_same_over_made_and_held_candles() {
    let config = SyntheticConfig {
        seed: 7,
        ..SyntheticConfig::days(20)
    };
    let exchange = SyntheticExchange::new("SYN".into(), config).unwrap();
    for entry in backtest_perf::strategies::registry() {
        // A small window: candles are dropped and moved many times in the run.
        for lookback in [100_000, 300] {
            let run_config = BacktestConfig {
                stream_lookback: lookback,
                ..BacktestConfig::default()
            };
            let streamed = outcome(
                Backtest::synthetic("SYN", config)
                    .unwrap()
                    .with_config(run_config.clone()),
                (entry.build)().as_mut(),
            );
            let held = outcome(
                Backtest::new(&exchange, "SYN")
                    .unwrap()
                    .with_config(run_config),
                (entry.build)().as_mut(),
            );
            assert!(
                held.0.summary.signals > 20,
                "{}: only {} signals",
                entry.name,
                held.0.summary.signals
            );
            assert_same(
                &streamed,
                &held,
                &format!("{} keeping {lookback}", entry.name),
            );
        }
    }
}

/// Every `every` minutes, a signal whose entry price is a bit away and whose lifetime is
/// `lifetime` minutes; looks back on `lookback` candles first.
struct Reaching {
    every: i64,
    lifetime: u32,
    lookback: usize,
}

impl Strategy for Reaching {
    fn name(&self) -> &str {
        "reaching"
    }
    fn interval(&self) -> Interval {
        Interval::minutes(self.every)
    }
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let seen = ctx.candles(self.lookback)?;
        let Some(last) = seen.last() else {
            return Ok(None);
        };
        let entry = last.close * 0.999;
        Ok(Some(
            Signal::long(entry * 1.05, entry * 0.95)
                .at(entry)
                .lifetime(self.lifetime),
        ))
    }
}

#[test]
fn positions_that_outlast_what_is_made_ahead_and_the_end_of_the_data_close_the_same() {
    let config = SyntheticConfig::days(12);
    let exchange = SyntheticExchange::new("SYN".into(), config).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    // Lifetimes from an hour to beyond the data (several days: past the candles made ahead
    // between ticks, and past the series' end).
    for (every, lifetime) in [(90, 60), (600, 5 * 1_440), (1_000, 30 * 1_440)] {
        let strategy = || Reaching {
            every,
            lifetime,
            lookback: 500,
        };
        let streamed = outcome(Backtest::synthetic("SYN", config).unwrap(), &mut strategy());
        let held = outcome(Backtest::new(&exchange, "SYN").unwrap(), &mut strategy());
        assert_same(
            &streamed,
            &held,
            &format!("every {every}, lifetime {lifetime}"),
        );
        seen.extend(held.0.closed.iter().map(|c| format!("{:?}", c.reason)));
        if !held.0.cancelled.is_empty() {
            seen.insert("cancelled".to_string());
        }
    }
    // Every way a position ends was compared.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "EndOfData",
            "StopLoss",
            "TakeProfit",
            "TimeExpired",
            "cancelled"
        ]
    );
}

/// Looks back on this many candles once an hour, and never trades.
struct Looking(usize);

impl Strategy for Looking {
    fn name(&self) -> &str {
        "looking"
    }
    fn interval(&self) -> Interval {
        Interval::hours(1)
    }
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        ctx.candles(self.0)?;
        Ok(None)
    }
}

#[test]
fn a_strategy_asking_further_back_than_kept_stops_with_what_to_change() {
    let config = SyntheticConfig::days(2);
    let run_config = BacktestConfig {
        stream_lookback: 1_000,
        ..BacktestConfig::default()
    };
    let backtest = Backtest::synthetic("SYN", config)
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .with_config(run_config);
    let mut strategy = Looking(1_200);
    match backtest.run(&mut strategy).unwrap_err() {
        BacktestError::Strategy { source, when, .. } => {
            // The first hourly call with more than 1,000 closed candles to see: 1,020
            // minutes in (the first frame is at 00:01, when the first candle closed).
            assert_eq!(
                source.to_string(),
                "1200 past candles of SYN were asked for; a streamed run keeps the last 1000 \
                 (raise BacktestConfig::stream_lookback, or backtest --lookback, to keep more)"
            );
            assert_eq!(when, "2024-01-01T17:01:00+00:00");
        }
        other => panic!("{other}"),
    }
    // Held whole, the same request is served.
    let exchange = SyntheticExchange::new("SYN".into(), config).unwrap();
    assert!(
        Backtest::new(&exchange, "SYN")
            .unwrap()
            .with_bus(PerformanceEmitter::new())
            .run(&mut strategy)
            .is_ok()
    );
}

#[test]
fn synthetic_parameters_that_cannot_make_candles_are_refused_before_the_run() {
    let err = Backtest::synthetic(
        "SYN",
        SyntheticConfig {
            start_price: -1.0,
            ..SyntheticConfig::days(1)
        },
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "candle 0: start_price is -1; it must be a finite number above 0"
    );
    let err = Backtest::synthetic(
        "SYN",
        SyntheticConfig {
            start: i64::MAX - 1_000,
            ..SyntheticConfig::days(1)
        },
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("run past the last time epoch milliseconds hold"),
        "{err}"
    );
    // A path whose prices overflow is found as its candles are made: the run stops there.
    let overflowing = Backtest::synthetic(
        "SYN",
        SyntheticConfig {
            drift: 1e9,
            volatility: 0.0,
            ..SyntheticConfig::days(1)
        },
    )
    .unwrap()
    .with_bus(PerformanceEmitter::new());
    match overflowing
        .run(&mut backtest_perf::strategies::SmaCrossover::default())
        .unwrap_err()
    {
        BacktestError::Exchange(ExchangeError::Candle {
            symbol, problem, ..
        }) => {
            assert_eq!(symbol, "SYN");
            assert!(problem.contains("must be finite"), "{problem}");
        }
        other => panic!("{other}"),
    }
}
