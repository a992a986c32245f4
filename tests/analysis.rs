//! The health analysis on runs with a known problem: each gets the right top
//! recommendation and grade.

use backtest_perf::analysis::{Priority, analyze};
use backtest_perf::engine::{
    Backtest, Context, Signal, Strategy, StrategyError, SyntheticConfig, SyntheticExchange,
};
use backtest_perf::thresholds::Thresholds;
use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};

/// A real run whose signal function stalls for 50 ms on every 300th call (a blocking
/// call in the hot path). The stalls last at least 50 ms whatever the machine's load, and
/// the other 99.7% of the calls take microseconds.
#[derive(Default)]
struct Stalling {
    calls: u64,
}

impl Strategy for Stalling {
    fn name(&self) -> &str {
        "stalling"
    }
    fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        self.calls += 1;
        if self.calls.is_multiple_of(300) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(None)
    }
}

#[test]
fn rare_stalls_are_the_top_finding() {
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .run(&mut Stalling::default())
        .unwrap();
    let stats = service.get_data("SYN", "stalling");
    let health = analyze(&stats, &Thresholds::default());
    let top = &health.findings[0];
    assert_eq!(
        (top.category, top.metric.as_str()),
        ("stalls", "getSignal"),
        "{health:?}"
    );
    assert_ne!(top.priority, Priority::Info);
    // 4 stalls in 1,440 calls: under 1% over getSignal's 5 ms threshold, so no "slow"
    // finding; the stalls cost at least one warning.
    assert!(health.score <= 90, "{health:?}");
    assert!(
        health.summary.contains("the slowest getSignal took"),
        "{}",
        health.summary
    );
}

/// A run, as its events, whose candle fetches cost far more than the signal function
/// that uses them (a strategy that fetches 2,000 candles to read the last one): per tick
/// a getCandles of 0.4 ms inside a getSignal of 0.45 ms.
fn fetch_heavy_run() -> backtest_perf::stats::PerformanceStatistics {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    for tick in 0..1_000u64 {
        let at = 1.7e12 + tick as f64;
        let id = tick * 3 + 1;
        let event = |metric, duration: f64, own: f64, id: u64| {
            PerformanceContract::new(metric, duration, at)
                .with_symbol("SYN")
                .with_strategy("fetch-heavy")
                .with_id(id)
                .with_self_duration(own)
        };
        bus.emit(event(MetricType::GetCandles, 0.4, 0.4, id + 2).with_parent(id + 1))
            .unwrap();
        bus.emit(event(MetricType::GetSignal, 0.45, 0.05, id + 1).with_parent(id))
            .unwrap();
        bus.emit(event(MetricType::Tick, 0.46, 0.01, id)).unwrap();
    }
    service.get_data("SYN", "fetch-heavy")
}

#[test]
fn candle_fetches_that_dominate_are_a_critical_hotspot() {
    let health = analyze(&fetch_heavy_run(), &Thresholds::default());
    let top = &health.findings[0];
    assert_eq!(
        (top.category, top.metric.as_str()),
        ("hotspot", "getCandles")
    );
    assert_eq!(top.priority, Priority::Critical);
    assert_eq!(
        top.evidence,
        "getCandles is 87.0% of the self time (400 ms of 460 ms)"
    );
    assert!(top.advice.starts_with("fetch fewer candles per call"));
    assert_eq!((health.score, health.grade), (75, 'C'));
}

#[test]
fn a_healthy_run_gets_an_a_and_failures_cost_score() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    for i in 0..1_000 {
        let tick = PerformanceContract::new(MetricType::Tick, 0.01, 1.0).with_id(i * 2 + 1);
        bus.emit(
            PerformanceContract::new(MetricType::GetSignal, 0.009, 1.0)
                .with_id(i * 2 + 2)
                .with_parent(i * 2 + 1)
                .with_ok(i % 10 != 0), // 10% of the signals fail
        )
        .unwrap();
        bus.emit(tick.with_self_duration(0.001)).unwrap();
    }
    let health = analyze(&service.get_data("", ""), &Thresholds::default());
    let top = &health.findings[0];
    assert_eq!((top.category, top.priority), ("errors", Priority::Critical));
    assert_eq!(top.evidence, "100 of 1000 getSignal calls failed (10.0%)");
    assert_eq!((health.score, health.grade), (75, 'C'));
}

/// Counts each thread's allocations, so that the run tracker reports them.
#[global_allocator]
static ALLOCATOR: backtest_perf::tracker::CountingAllocator =
    backtest_perf::tracker::CountingAllocator::new();

/// Allocates (and fills) a 2 MiB buffer on every call: the problem the analysis must name.
#[derive(Default)]
struct Allocating {
    kept: u64,
}

impl Strategy for Allocating {
    fn name(&self) -> &str {
        "allocating"
    }
    fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let buffer = vec![1u8; 2 << 20];
        self.kept = self
            .kept
            .wrapping_add(u64::from(std::hint::black_box(buffer)[7]));
        Ok(None)
    }
}

#[test]
fn a_strategy_that_allocates_every_tick_is_told_to_reuse_its_buffers() {
    use backtest_perf::engine::BacktestConfig;
    use backtest_perf::tracker::TrackerOptions;
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let config = BacktestConfig {
        tracker: TrackerOptions {
            track_memory: true,
            ..TrackerOptions::default()
        },
        ..BacktestConfig::default()
    };
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .with_config(config)
        .run(&mut Allocating::default())
        .unwrap();
    let stats = service.get_data("SYN", "allocating");
    let health = backtest_perf::analysis::analyze_run(
        &stats,
        &Thresholds::default(),
        result.tracker.as_ref(),
    );
    let top = &health.findings[0];
    assert_eq!(
        (top.category, top.metric.as_str(), top.priority),
        ("allocations", "getSignal", Priority::Critical),
        "{health:?}"
    );
    assert!(
        top.evidence.starts_with("getSignal allocates 2,0"),
        "{}",
        top.evidence
    );
    assert!(top.advice.starts_with("reuse buffers"));
    // The tick holds the allocating signal function; it allocates nothing itself.
    assert_eq!(
        health
            .findings
            .iter()
            .filter(|f| f.category == "allocations")
            .map(|f| f.metric.as_str())
            .collect::<Vec<_>>(),
        ["getSignal"],
        "{health:?}"
    );
    assert!(health.score <= 75, "{health:?}");
    // Without the tracker's report the statistics alone cannot see it.
    assert!(
        analyze(&stats, &Thresholds::default())
            .findings
            .iter()
            .all(|f| f.category != "allocations")
    );
}
