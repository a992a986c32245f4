//! Whole backtests: a year of 1-minute candles with tracking on and off, and several
//! backtests one by one against the same in parallel.

use std::hint::black_box;

use backtest_perf::engine::parallel::{Job, run_parallel};
use backtest_perf::engine::synthetic::generate;
use backtest_perf::engine::{Backtest, BacktestConfig, MemoryExchange, SyntheticConfig};
use backtest_perf::strategies::SmaCrossover;
use backtest_perf::tracker::TrackerOptions;
use backtest_perf::{PerformanceEmitter, PerformanceService};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn year(c: &mut Criterion) {
    let exchange = MemoryExchange::new()
        .with_series(generate("YEAR".into(), &SyntheticConfig::days(365)).unwrap());
    let mut group = c.benchmark_group("year_1m_sma_crossover");
    group.sample_size(10);
    group.throughput(Throughput::Elements(525_600));
    for (name, enabled) in [("tracking_on", true), ("tracking_off", false)] {
        let bus = PerformanceEmitter::new();
        let _service = PerformanceService::attached(&bus);
        bus.set_enabled(enabled);
        let backtest = Backtest::new(&exchange, "YEAR").unwrap().with_bus(bus);
        group.bench_function(name, |b| {
            b.iter(|| black_box(backtest.run(&mut SmaCrossover::default()).unwrap()))
        });
    }
    // Tracking on, then one Prometheus scrape of the run (the exporter renders the
    // storage when scraped and costs nothing while the run goes on).
    #[cfg(feature = "prometheus")]
    {
        let bus = PerformanceEmitter::new();
        let service = PerformanceService::attached(&bus);
        let exporter = backtest_perf::export::prometheus::PrometheusExporter::new(
            backtest_perf::thresholds::Thresholds::default(),
            service.storage().clone(),
        );
        let backtest = Backtest::new(&exchange, "YEAR").unwrap().with_bus(bus);
        group.bench_function("tracking_on_prometheus_scrape", |b| {
            b.iter(|| {
                black_box(backtest.run(&mut SmaCrossover::default()).unwrap());
                black_box(exporter.render())
            })
        });
    }
    // Tracking on with the real exporters: Prometheus (rendered once at the end) and every
    // span to an OTLP-JSON file. The spans are built and written on the export's own
    // thread (the other core); the run is timed until its spans are all written.
    #[cfg(all(feature = "prometheus", feature = "otel"))]
    {
        use backtest_perf::export::otel::{OtlpJsonFileExporter, Sampler, SpanExport};
        use backtest_perf::thresholds::Thresholds;
        let bus = PerformanceEmitter::new();
        let service = PerformanceService::attached(&bus);
        let exporter = backtest_perf::export::prometheus::PrometheusExporter::new(
            Thresholds::default(),
            service.storage().clone(),
        );
        let dir = tempfile::tempdir().unwrap();
        let backtest = Backtest::new(&exchange, "YEAR")
            .unwrap()
            .with_bus(bus.clone());
        group.bench_function("tracking_on_prometheus_otlp_file_written", |b| {
            b.iter(|| {
                let file = OtlpJsonFileExporter::create(&dir.path().join("spans.jsonl")).unwrap();
                let export = SpanExport::new(Thresholds::default(), Sampler::default())
                    .to("file", file)
                    .listen(&bus);
                black_box(backtest.run(&mut SmaCrossover::default()).unwrap());
                black_box(export.finish());
                black_box(exporter.render())
            })
        });
    }
    // The run tracker on (every hook also a span, user spans possible), bus tracking off.
    let bus = PerformanceEmitter::new();
    bus.set_enabled(false);
    let config = BacktestConfig {
        tracker: TrackerOptions {
            max_events: 10_000,
            ..TrackerOptions::default()
        },
        ..BacktestConfig::default()
    };
    let backtest = Backtest::new(&exchange, "YEAR")
        .unwrap()
        .with_bus(bus)
        .with_config(config);
    group.bench_function("tracker_on_bus_off", |b| {
        b.iter(|| black_box(backtest.run(&mut SmaCrossover::default()).unwrap()))
    });
    group.finish();
}

fn generate_year(c: &mut Criterion) {
    let mut group = c.benchmark_group("synthetic");
    group.sample_size(10);
    group.throughput(Throughput::Elements(525_600));
    group.bench_function("generate_year_of_1m_candles", |b| {
        b.iter(|| black_box(generate("GEN".into(), &SyntheticConfig::days(365)).unwrap()))
    });
    group.finish();
}

fn parallel(c: &mut Criterion) {
    const RUNS: u64 = 4;
    let mut exchange = MemoryExchange::new();
    for seed in 0..RUNS {
        let config = SyntheticConfig {
            seed,
            ..SyntheticConfig::days(60)
        };
        exchange = exchange.with_series(generate(format!("P{seed}").into(), &config).unwrap());
    }
    let bus = PerformanceEmitter::new();
    let _service = PerformanceService::attached(&bus);
    let jobs = || -> Vec<Job> {
        (0..RUNS)
            .map(|seed| {
                let backtest = Backtest::new(&exchange, &format!("P{seed}"))
                    .unwrap()
                    .with_bus(bus.clone());
                (backtest, Box::new(SmaCrossover::default()) as _)
            })
            .collect()
    };
    let mut group = c.benchmark_group("four_60_day_backtests");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RUNS));
    group.bench_function("one_by_one", |b| {
        b.iter(|| black_box(run_parallel(jobs(), 1)))
    });
    group.bench_function("parallel_2_threads", |b| {
        b.iter(|| black_box(run_parallel(jobs(), 2)))
    });
    group.finish();
}

criterion_group!(benches, year, parallel, generate_year);
criterion_main!(benches);
