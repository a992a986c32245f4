//! The run tracker inside the engine: hooks as nested operations, user steps nested
//! under them, slow hooks listed.

use backtest_perf::engine::{
    Backtest, BacktestConfig, BacktestResult, Context, Signal, Strategy, StrategyError,
    SyntheticConfig, SyntheticExchange,
};
use backtest_perf::thresholds::Thresholds;
use backtest_perf::tracker::TrackerOptions;
use backtest_perf::{MetricType, PerformanceEmitter};

/// Measures its own indicator with the run's tracker.
struct Measured;

impl Strategy for Measured {
    fn name(&self) -> &str {
        "measured"
    }
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let candles = ctx.candles(20)?;
        let tracker = ctx.tracker();
        let _mean = tracker.measure("mean", || candles.iter().map(|c| c.close).sum::<f64>());
        Ok(None)
    }
}

fn exchange() -> SyntheticExchange {
    SyntheticExchange::new(
        "TRK".into(),
        SyntheticConfig {
            minutes: 300,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Five hours of 1-minute candles, the `Measured` strategy, on a bus of its own.
fn run_with(tracker: TrackerOptions) -> BacktestResult {
    let exchange = exchange();
    let config = BacktestConfig {
        tracker,
        ..BacktestConfig::default()
    };
    Backtest::new(&exchange, "TRK")
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .with_config(config)
        .run(&mut Measured)
        .unwrap()
}

#[test]
fn hooks_and_user_steps_nest_in_the_run_report() {
    let result = run_with(TrackerOptions::default());
    let report = result.tracker.expect("enabled");
    assert_eq!(report.run.symbol.as_deref(), Some("TRK"));
    assert_eq!(report.run.strategy.as_deref(), Some("measured"));
    assert_eq!(report.stats["tick"].count, result.frames);
    assert_eq!(report.stats["getSignal"].count, result.frames);
    assert_eq!(report.stats["getCandles"].count, result.frames);
    assert_eq!(report.stats["mean"].count, result.frames);
    let by_id = |id: u64| report.events.iter().find(|e| e.id == id).unwrap();
    for mean in report.events.iter().filter(|e| e.name == "mean") {
        let signal = by_id(mean.parent.expect("nested"));
        assert_eq!(signal.name, "getSignal");
        assert_eq!(by_id(signal.parent.expect("nested")).name, "tick");
        assert_eq!(mean.depth, 2);
    }
}

#[test]
fn slow_hooks_are_listed_against_their_thresholds() {
    // Every tick is slow against a threshold of 1 ns (a zero one is refused); nothing
    // else is.
    let tracker = TrackerOptions {
        thresholds: Thresholds::new(1e9).unwrap().with("tick", 1e-6).unwrap(),
        ..TrackerOptions::disabled()
    };
    let result = run_with(tracker);
    assert!(result.tracker.is_none(), "the tracker itself stays off");
    assert_eq!(result.slow_hooks_total, result.frames);
    assert_eq!(result.slow_hooks.len(), 100);
    let first = &result.slow_hooks[0];
    assert_eq!(
        (first.metric_type, first.threshold_ms, first.slowness_ratio),
        (MetricType::Tick, 1e-6, first.duration_ms / 1e-6)
    );
    assert_eq!(first.when.timestamp_millis(), 1_704_067_200_000 + 60_000);
}

#[test]
fn by_default_no_tracker_and_no_slow_hooks_on_a_quick_run() {
    let result = run_with(TrackerOptions::disabled());
    assert!(result.tracker.is_none());
    assert_eq!(result.slow_hooks_total, result.slow_hooks.len() as u64);
}

/// A bus of its own with storage attached that keeps every event of these short runs in
/// its window.
fn bus_keeping_every_event() -> (PerformanceEmitter, backtest_perf::PerformanceService) {
    let bus = PerformanceEmitter::new();
    let service = backtest_perf::PerformanceService::attached_with(
        &bus,
        backtest_perf::StorageConfig {
            max_events: 100_000,
            ..Default::default()
        },
        Default::default(),
    );
    (bus, service)
}

/// The user's step through `ctx.tracker()` is an event on the bus, nested under
/// `getSignal`, with the tracker off (the default); with 1 tick in 4 timed, counts stay
/// exact and only the timed ticks' operations carry durations.
#[test]
fn user_steps_reach_the_bus_nested_and_sampling_keeps_counts_exact() {
    for sample_every in [1, 4] {
        let exchange = exchange();
        let (bus, service) = bus_keeping_every_event();
        let config = BacktestConfig {
            sample_every,
            ..BacktestConfig::default()
        };
        let result = Backtest::new(&exchange, "TRK")
            .unwrap()
            .with_bus(bus)
            .with_config(config)
            .run(&mut Measured)
            .unwrap();
        let data = service.get_data("TRK", "measured");
        let frames = result.frames as usize;
        let timed = frames.div_ceil(sample_every as usize);
        for metric in [
            MetricType::Tick,
            MetricType::GetSignal,
            MetricType::custom("mean"),
        ] {
            let m = &data.metric_stats[&metric];
            assert_eq!(
                (m.count, m.untimed as usize),
                (frames, frames - timed),
                "{metric}"
            );
        }
        // Every timed `mean` sits under a timed getSignal, which sits under a tick.
        let by_id = |id: u64| data.events.iter().find(|e| e.id == Some(id)).unwrap();
        let means: Vec<_> = data
            .events
            .iter()
            .filter(|e| e.metric_type == MetricType::custom("mean"))
            .collect();
        assert_eq!(means.len(), timed);
        for mean in means {
            let signal = by_id(mean.parent_id.unwrap());
            assert_eq!(signal.metric_type, MetricType::GetSignal);
            assert_eq!(
                by_id(signal.parent_id.unwrap()).metric_type,
                MetricType::Tick
            );
            assert!(signal.self_time() <= signal.duration - mean.duration + 1e-9);
        }
        // Self times add up to the ticks' durations: nothing counted twice.
        let ticks = &data.metric_stats[&MetricType::Tick];
        let self_sum: f64 = data.metric_stats.values().map(|m| m.self_duration).sum();
        assert!(
            (self_sum - ticks.total_duration).abs() < 1e-6,
            "{self_sum} vs {}",
            ticks.total_duration
        );
    }
}

/// An exchange of a user's own that times work inside its candle queries.
struct TimedLookups {
    inner: SyntheticExchange,
    bus: PerformanceEmitter,
}

impl backtest_perf::engine::Exchange for TimedLookups {
    fn series(
        &self,
        symbol: backtest_perf::Name,
    ) -> Result<&backtest_perf::engine::CandleSeries, backtest_perf::engine::ExchangeError> {
        self.bus
            .time("lookup", "TRK", "measured", || self.inner.series(symbol))
    }
    fn symbols(&self) -> Vec<backtest_perf::Name> {
        self.inner.symbols()
    }
}

/// This crate's exchanges time nothing inside a candle fetch, so the engine closes each
/// fetch without pushing it on the thread's stack; an exchange of the user's own may time
/// work inside one, and that work nests under the fetch. Both ways, a fetch sits under
/// its getSignal and self times add up to the ticks' durations.
#[test]
fn candle_fetches_nest_alike_from_this_crates_exchanges_and_a_users() {
    for user_exchange in [false, true] {
        let (bus, service) = bus_keeping_every_event();
        let timed = TimedLookups {
            inner: exchange(),
            bus: bus.clone(),
        };
        let plain = exchange();
        let exchange: &dyn backtest_perf::engine::Exchange =
            if user_exchange { &timed } else { &plain };
        let result = Backtest::new(exchange, "TRK")
            .unwrap()
            .with_bus(bus.clone())
            .run(&mut Measured)
            .unwrap();
        let data = service.get_data("TRK", "measured");
        let by_id = |id: u64| data.events.iter().find(|e| e.id == Some(id)).unwrap();
        let of = |metric: MetricType| -> Vec<_> {
            data.events
                .iter()
                .filter(|e| e.metric_type == metric)
                .collect()
        };
        let fetches = of(MetricType::GetCandles);
        assert_eq!(fetches.len() as u64, result.frames);
        for fetch in &fetches {
            let signal = by_id(fetch.parent_id.unwrap());
            assert_eq!(signal.metric_type, MetricType::GetSignal);
        }
        // The lookups timed inside a fetch (one each); those of `Backtest::new`, outside
        // any hook, have no parent.
        let inside: Vec<_> = of(MetricType::custom("lookup"))
            .into_iter()
            .filter(|e| e.parent_id.is_some())
            .collect();
        assert_eq!(inside.len(), if user_exchange { fetches.len() } else { 0 });
        for lookup in inside {
            let fetch = by_id(lookup.parent_id.unwrap());
            assert_eq!(fetch.metric_type, MetricType::GetCandles);
            assert!(fetch.self_time() <= fetch.duration - lookup.duration + 1e-9);
        }
        let ticks = &data.metric_stats[&MetricType::Tick];
        let nested_self: f64 = data
            .metric_stats
            .iter()
            .map(|(metric, m)| {
                let outside = data
                    .events
                    .iter()
                    .filter(|e| e.metric_type == *metric && e.parent_id.is_none())
                    .filter(|e| e.metric_type != MetricType::Tick)
                    .map(|e| e.self_time())
                    .sum::<f64>();
                m.self_duration - outside
            })
            .sum();
        assert!(
            (nested_self - ticks.total_duration).abs() < 1e-6,
            "{nested_self} vs {}",
            ticks.total_duration
        );
    }
}

/// With the storage as the bus's only subscriber, it keeps the engine's batches in the
/// buffers they came in instead of copying them. What it holds is what it holds with a
/// listener beside it (which makes it copy them), and what that listener got.
#[test]
fn storage_alone_keeps_the_window_it_keeps_beside_a_listener() {
    use backtest_perf::{PerformanceContract, StorageConfig, StorageKey};
    use std::sync::{Arc, Mutex};
    let exchange = SyntheticExchange::new(
        "TRK".into(),
        SyntheticConfig {
            minutes: 20_000,
            ..Default::default()
        },
    )
    .unwrap();
    let max_events = 2_000;
    let run = |listen: bool| {
        let bus = PerformanceEmitter::new();
        let service = backtest_perf::PerformanceService::attached_with(
            &bus,
            StorageConfig {
                max_events,
                ..Default::default()
            },
            Default::default(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let sub = listen
            .then(|| bus.listen(move |e: &PerformanceContract| sink.lock().unwrap().push(*e)));
        let result = Backtest::new(&exchange, "TRK")
            .unwrap()
            .with_bus(bus.clone())
            .run(&mut backtest_perf::strategies::SmaCrossover::default())
            .unwrap();
        if let Some(sub) = sub {
            sub.flush();
        }
        let key = StorageKey::new("TRK", result.strategy.as_str());
        let snapshot = service.storage().snapshot(key).unwrap();
        let seen = seen.lock().unwrap().clone();
        (snapshot, seen)
    };
    let (alone, _) = run(false);
    let (beside, heard) = run(true);
    let total = |s: &backtest_perf::storage::Snapshot| {
        s.metrics.iter().map(|m| m.aggregate.count()).sum::<u64>()
    };
    assert!(
        total(&alone) > 3 * max_events as u64,
        "several batches, the window full: {}",
        total(&alone)
    );
    assert_eq!(
        (alone.events.len(), alone.dropped, total(&alone)),
        (beside.events.len(), beside.dropped, total(&beside))
    );
    assert_eq!(alone.events.len(), max_events);
    let differ = alone
        .events
        .iter()
        .zip(&beside.events)
        .position(|(a, b)| a.metric_type != b.metric_type);
    assert_eq!(differ, None, "the windows' metric types first differ there");
    // Beside the listener, the window is the newest events the listener got, newest first.
    let newest: Vec<PerformanceContract> = heard.iter().rev().take(max_events).copied().collect();
    assert_eq!(beside.events, newest);
    // Alone, each event's previous timestamp is the one before it of its type.
    let mut last = std::collections::HashMap::new();
    for event in alone.events.iter().rev() {
        if let Some(&before) = last.get(&event.metric_type) {
            assert_eq!(event.previous_timestamp, Some(before));
        }
        last.insert(event.metric_type, event.timestamp);
    }
}
