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
    // Tracking on with Prometheus and OpenTelemetry on the bus. The OTel spans are built on
    // a listener's worker (the other core): the run is timed, the drain after it is not,
    // and is printed apart.
    #[cfg(all(feature = "prometheus", feature = "otel"))]
    {
        #[derive(Debug)]
        struct Discard;
        impl opentelemetry_sdk::trace::SpanExporter for Discard {
            fn export(
                &self,
                _batch: Vec<opentelemetry_sdk::trace::SpanData>,
            ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send
            {
                std::future::ready(Ok(()))
            }
        }
        let bus = PerformanceEmitter::new();
        let _service = PerformanceService::attached(&bus);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(Discard)
            .build();
        let spans = backtest_perf::export::otel::listen(
            &bus,
            &provider,
            backtest_perf::thresholds::Thresholds::default(),
        );
        let backtest = Backtest::new(&exchange, "YEAR").unwrap().with_bus(bus);
        let mut drains = Vec::new();
        group.bench_function("tracking_on_prometheus_otel", |b| {
            b.iter_custom(|iterations| {
                let mut timed = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    let start = std::time::Instant::now();
                    black_box(backtest.run(&mut SmaCrossover::default()).unwrap());
                    timed += start.elapsed();
                    let drain = std::time::Instant::now();
                    spans.flush();
                    drains.push(drain.elapsed().as_secs_f64() * 1000.0);
                }
                timed
            })
        });
        drains.sort_by(f64::total_cmp);
        println!(
            "OpenTelemetry spans drained after each run in {:.0} ms (median)",
            drains[drains.len() / 2]
        );
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
