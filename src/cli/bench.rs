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
    /// Run the year backtests and the span export costs too.
    pub backtest: bool,
}

/// What `bench` prints, in this order, camelCase as every other JSON output.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
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
    /// One year of 1-minute SMA crossover (525,600 frames): median of 9 runs, ms, with
    /// tracking off, on, and timing 1 tick in 32.
    pub year_backtest_off_ms: Option<f64>,
    pub year_backtest_on_ms: Option<f64>,
    pub year_backtest_sampled_32_ms: Option<f64>,
    /// The same year with tracking on and the exporters a user runs: Prometheus and
    /// every span to an OTLP-JSON file (sampled as OTEL_TRACES_SAMPLER says); median of 9
    /// runs, ms, until the backtest returned (spans are built and written on a worker
    /// thread meanwhile), and until the spans and the Prometheus textfile are all written
    /// (null without the `prometheus` and `otel` features). Each run follows one with
    /// tracking on alone, in the same process and memory state, whose median is
    /// `year_backtest_exporters_alone_ms`: the ratio of the two is the exporters' cost.
    /// That run itself follows an untimed one with tracking on alone, as a run after
    /// the exporters' would start with its candles out of the caches.
    pub year_backtest_exporters_ms: Option<f64>,
    pub year_backtest_exporters_written_ms: Option<f64>,
    pub year_backtest_exporters_alone_ms: Option<f64>,
    /// The spans one such run exported (all of them unless OTEL_TRACES_SAMPLER keeps
    /// fewer).
    pub year_backtest_exporters_spans: Option<u64>,
    /// CPU per span of turning events into span trees and writing them as OTLP-JSON
    /// lines, and as OTLP protobuf (what the OTLP/HTTP exporter sends), on one thread, ns.
    pub otel_json_ns_per_span: Option<f64>,
    pub otel_protobuf_ns_per_span: Option<f64>,
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
    sub.unsubscribe();

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
    let (exporters, written, alone, spans) = if args.backtest {
        year_backtest_exporters()
    } else {
        (None, None, None, None)
    };
    let (json_ns, protobuf_ns) = if args.backtest {
        span_costs()
    } else {
        (None, None)
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
        year_backtest_exporters_ms: exporters,
        year_backtest_exporters_written_ms: written,
        year_backtest_exporters_alone_ms: alone,
        year_backtest_exporters_spans: spans,
        otel_json_ns_per_span: json_ns,
        otel_protobuf_ns_per_span: protobuf_ns,
    }
}

/// One year of 1-minute SMA crossover on a bus of its own (storage attached), tracking
/// off, on, and sampled 1 tick in 32: the median of 9 runs of each, ms, interleaved so
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
    // Interleaved, 9 times each: a shared machine's noise hits all three alike.
    for _ in 0..9 {
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

/// What [`year_backtest_exporters`] measures: medians, ms, and the spans of a run.
type ExportersTimes = (Option<f64>, Option<f64>, Option<f64>, Option<u64>);

/// The year backtest with tracking on, Prometheus and an OTLP-JSON file of its spans,
/// each run after one with tracking on alone, which itself runs after another such run:
/// both see the same process, memory and caches (a run's freed memory shapes the next
/// one's page faults, and its memory traffic what the next one finds cached).
#[cfg(all(feature = "prometheus", feature = "otel"))]
fn year_backtest_exporters() -> ExportersTimes {
    use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    use backtest_perf::export::otel::{OtlpJsonFileExporter, Sampler, SpanExport};
    use backtest_perf::export::prometheus::PrometheusExporter;
    use backtest_perf::strategies::SmaCrossover;
    use backtest_perf::thresholds::Thresholds;
    const NONE: ExportersTimes = (None, None, None, None);
    let Ok(exchange) = SyntheticExchange::new(Name::new("YEAR"), SyntheticConfig::days(365)) else {
        return NONE;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return NONE;
    };
    let Ok(sampler) = Sampler::from_env() else {
        return NONE;
    };
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let mut alone = Vec::new();
    let mut times = Vec::new();
    let mut written = Vec::new();
    let mut spans = 0;
    for _ in 0..9 {
        // Twice, the first untimed: a run after one with the exporters finds its candles
        // pushed out of the caches by the export's copies (3-8 ms slower here), which the
        // exporters' own run, after one alone, does not.
        for timed in [false, true] {
            service.clear_all();
            let Ok(backtest) = Backtest::new(&exchange, "YEAR") else {
                return NONE;
            };
            let backtest = backtest.with_bus(bus.clone());
            let t0 = Instant::now();
            let _ = std::hint::black_box(backtest.run(&mut SmaCrossover::default()));
            if timed {
                alone.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }

        service.clear_all();
        let Ok(file) = OtlpJsonFileExporter::create(&dir.path().join("spans.jsonl")) else {
            return NONE;
        };
        let Ok(backtest) = Backtest::new(&exchange, "YEAR") else {
            return NONE;
        };
        let backtest = backtest.with_bus(bus.clone());
        let t0 = Instant::now();
        let prometheus = PrometheusExporter::new(Thresholds::default(), service.storage().clone());
        let export = SpanExport::new(Thresholds::default(), sampler)
            .to("file", file)
            .listen(&bus);
        let _ = std::hint::black_box(backtest.run(&mut SmaCrossover::default()));
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        let report = export.finish();
        let _ = prometheus.write_textfile(dir.path(), "bench");
        written.push(t0.elapsed().as_secs_f64() * 1000.0);
        spans = report.spans;
    }
    (
        Some(median(&mut times)),
        Some(median(&mut written)),
        Some(median(&mut alone)),
        Some(spans),
    )
}

#[cfg(not(all(feature = "prometheus", feature = "otel")))]
fn year_backtest_exporters() -> ExportersTimes {
    (None, None, None, None)
}

/// CPU per span on one thread: 100,000 ticks of four operations each (tick, getSignal
/// inside it, getCandles inside that, backtest inside the tick), made into span trees and
/// encoded as OTLP-JSON lines (to a file) and as OTLP protobuf.
#[cfg(feature = "otel")]
fn span_costs() -> (Option<f64>, Option<f64>) {
    use backtest_perf::export::otel::{OtlpJsonFileExporter, Sampler, SpanTrees};
    use backtest_perf::thresholds::Thresholds;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::SpanExporter;
    use prost::Message;
    const TICKS: u64 = 100_000;
    let symbol = Name::new("BTCUSDT");
    let strategy = Name::new("sma");
    let events = |tick: u64| {
        let id = tick * 4 + 1;
        let at = 1.7e12 + tick as f64;
        let e = |metric, id: u64, duration| {
            PerformanceContract::new(metric, duration, at)
                .with_symbol(symbol)
                .with_strategy(strategy)
                .with_id(id)
                .with_self_duration(duration / 2.0)
        };
        [
            e(MetricType::GetCandles, id + 2, 0.0003).with_parent(id + 1),
            e(MetricType::GetSignal, id + 1, 0.0006).with_parent(id),
            e(MetricType::Backtest, id + 3, 0.0002).with_parent(id),
            e(MetricType::Tick, id, 0.001),
        ]
    };
    let Ok(dir) = tempfile::tempdir() else {
        return (None, None);
    };
    let Ok(file) = OtlpJsonFileExporter::create(&dir.path().join("spans.jsonl")) else {
        return (None, None);
    };
    let resource = ResourceAttributesWithSchema::from(&backtest_perf::export::otel::resource());
    let mut json = Vec::new();
    let mut protobuf = Vec::new();
    for round in 0..3 {
        for (i, times) in [&mut json, &mut protobuf].into_iter().enumerate() {
            let mut trees = SpanTrees::new(Thresholds::default(), Sampler::default());
            let mut batch = Vec::with_capacity(1024);
            let mut bytes = 0usize;
            let t0 = Instant::now();
            for tick in 0..TICKS {
                for event in events(tick + round * TICKS) {
                    trees.push(&event, &mut batch);
                }
                if batch.len() >= 512 {
                    let spans = std::mem::take(&mut batch);
                    if i == 0 {
                        let _ = futures::executor::block_on(file.export(spans));
                    } else {
                        let request = ExportTraceServiceRequest {
                            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
                        };
                        bytes += request.encode_to_vec().len();
                    }
                }
            }
            std::hint::black_box(bytes);
            times.push(t0.elapsed().as_secs_f64() * 1e9 / (TICKS * 4) as f64);
        }
    }
    (Some(median(&mut json)), Some(median(&mut protobuf)))
}

#[cfg(not(feature = "otel"))]
fn span_costs() -> (Option<f64>, Option<f64>) {
    (None, None)
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
