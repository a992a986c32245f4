//! `backtest-perf bench`: the default pipeline under a synthetic load, as one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backtest_perf::{
    MetricType, Name, PerformanceContract, PerformanceEmitter, PerformanceService,
};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

/// The workload.
pub struct BenchArgs {
    pub events: u64,
    pub pairs: usize,
    pub types: usize,
    /// Run the year backtests too.
    pub backtest: bool,
}

/// What `bench` prints, in this order.
#[derive(Serialize, Debug)]
pub struct BenchResult {
    pub events: u64,
    pub emit_s: f64,
    pub drain_s: f64,
    pub events_per_s: f64,
    pub get_data_ms_per_pair: f64,
    pub get_report_ms_per_pair: f64,
    /// Peak RSS of the bus, storage and listener under this load (read before the
    /// year backtests below, whose candles alone take 25 MB).
    pub peak_rss_mb: Option<f64>,
    /// The largest whole-run state of one metric type of one key: the aggregate and its
    /// histogram, KB.
    pub key_state_kb_per_type: f64,
    /// One year of 1-minute SMA crossover (525,600 frames): median of 5 runs, ms, with
    /// tracking off, on, and timing 1 tick in 32.
    pub year_backtest_off_ms: Option<f64>,
    pub year_backtest_on_ms: Option<f64>,
    pub year_backtest_sampled_32_ms: Option<f64>,
}

/// Durations are drawn once into a table this long and cycled, so that drawing them is
/// not what is measured.
const DURATION_TABLE: usize = 1 << 16;
const ROUNDS: usize = 7;

/// Seeded log-normal durations in ms (median about 0.37 ms, a long right tail).
pub fn durations(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dist = LogNormal::new(-1.0, 1.0).expect("constant parameters are valid");
    (0..n).map(|_| dist.sample(&mut rng)).collect()
}

/// The metric types of the workload: the five hooks, then `custom5`, `custom6`, ...
pub fn metric_types(n: usize) -> Vec<MetricType> {
    (0..n)
        .map(|i| match MetricType::BUILT_IN.get(i) {
            Some(t) => *t,
            None => MetricType::custom(&format!("custom{i}")),
        })
        .collect()
}

/// The symbol:strategy pairs of the workload.
pub fn pairs(n: usize) -> Vec<(Name, Name)> {
    const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];
    (0..n)
        .map(|i| {
            let symbol = match SYMBOLS.get(i) {
                Some(s) => s.to_string(),
                None => format!("SYM{i}"),
            };
            (Name::new(&symbol), Name::new(&format!("bench-{}", i + 1)))
        })
        .collect()
}

/// Runs the workload through `bus` (with `service`'s storage attached) and one counting
/// listener.
pub fn run(
    args: &BenchArgs,
    bus: &PerformanceEmitter,
    service: &PerformanceService,
) -> BenchResult {
    let table = durations(42, DURATION_TABLE);
    let types = metric_types(args.types);
    let pairs = pairs(args.pairs);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let sub = bus.listen(move |_: &PerformanceContract| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);

    let start = Instant::now();
    let (mut t, mut p, mut d) = (0, 0, 0);
    for i in 0..args.events {
        let (symbol, strategy) = pairs[p];
        let event = PerformanceContract {
            symbol: Some(symbol),
            strategy_name: Some(strategy),
            ..PerformanceContract::new(types[t], table[d], base + i as f64 * 0.001)
        };
        // Every event of the workload is valid: an error here would be a bug.
        if let Err(rejected) = bus.emit(event) {
            panic!("bench event rejected: {rejected}");
        }
        t = if t + 1 == types.len() { 0 } else { t + 1 };
        p = if p + 1 == pairs.len() { 0 } else { p + 1 };
        d = if d + 1 == table.len() { 0 } else { d + 1 };
    }
    let emitted = start.elapsed().as_secs_f64();
    sub.flush();
    let total = start.elapsed().as_secs_f64();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        args.events,
        "the listener missed events"
    );
    drop(sub);

    let mut data_ms = Vec::new();
    let mut report_ms = Vec::new();
    for _ in 0..ROUNDS {
        for (symbol, strategy) in &pairs {
            let t0 = Instant::now();
            std::hint::black_box(service.get_data(symbol, strategy));
            data_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t0 = Instant::now();
            std::hint::black_box(service.get_report(symbol, strategy));
            report_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let key_state_kb_per_type = pairs
        .iter()
        .filter_map(|(symbol, strategy)| {
            service
                .storage()
                .snapshot(backtest_perf::StorageKey::new(symbol, strategy))
        })
        .flat_map(|s| s.metrics)
        .map(|m| {
            (std::mem::size_of_val(&m.aggregate) + m.aggregate.histogram_bytes()) as f64 / 1024.0
        })
        .fold(0.0, f64::max);
    let peak_rss_mb = peak_rss_mb();
    let (off, on, sampled) = if args.backtest {
        year_backtests()
    } else {
        (None, None, None)
    };
    BenchResult {
        events: args.events,
        emit_s: emitted,
        drain_s: total - emitted,
        events_per_s: args.events as f64 / total,
        get_data_ms_per_pair: median(&mut data_ms),
        get_report_ms_per_pair: median(&mut report_ms),
        peak_rss_mb,
        key_state_kb_per_type,
        year_backtest_off_ms: off,
        year_backtest_on_ms: on,
        year_backtest_sampled_32_ms: sampled,
    }
}

/// One year of 1-minute SMA crossover on a bus of its own (storage attached), tracking
/// off, on, and sampled 1 tick in 32: the median of 5 runs of each, ms, interleaved so
/// that a slower moment of the machine touches all three alike.
fn year_backtests() -> (Option<f64>, Option<f64>, Option<f64>) {
    use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
    use backtest_perf::strategies::SmaCrossover;
    let Ok(exchange) = SyntheticExchange::new(Name::new("YEAR"), SyntheticConfig::days(365)) else {
        return (None, None, None);
    };
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (i, (enabled, sample_every)) in
            [(false, 1), (true, 1), (true, 32)].into_iter().enumerate()
        {
            bus.set_enabled(enabled);
            service.clear_all();
            let config = BacktestConfig {
                sample_every,
                ..BacktestConfig::default()
            };
            let Ok(backtest) = Backtest::new(&exchange, "YEAR") else {
                return (None, None, None);
            };
            let backtest = backtest.with_bus(bus.clone()).with_config(config);
            let t0 = Instant::now();
            let _ = std::hint::black_box(backtest.run(&mut SmaCrossover::default()));
            times[i].push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let [mut off, mut on, mut sampled] = times;
    (
        Some(median(&mut off)),
        Some(median(&mut on)),
        Some(median(&mut sampled)),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Peak resident set size of this process (Linux `VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
