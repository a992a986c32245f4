//! Statistics and the report on a full storage: 10,000 events of 5 metric types.

use std::hint::black_box;

use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn full_service() -> (PerformanceEmitter, PerformanceService) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    // Durations spread over four orders of magnitude, in an order that is not sorted.
    for i in 0..12_000u64 {
        let duration = ((i * 7919) % 10_007) as f64 / 100.0;
        let e =
            PerformanceContract::new(MetricType::BUILT_IN[(i % 5) as usize], duration, i as f64)
                .with_symbol("BTCUSDT")
                .with_strategy("bench");
        bus.emit(e).unwrap();
    }
    assert_eq!(service.get_data("BTCUSDT", "bench").total_events, 10_000);
    (bus, service)
}

fn stats(c: &mut Criterion) {
    let (_bus, service) = full_service();
    let mut group = c.benchmark_group("full_storage");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("get_data", |b| {
        b.iter(|| black_box(service.get_data("BTCUSDT", "bench")))
    });
    group.bench_function("get_report", |b| {
        b.iter(|| black_box(service.get_report("BTCUSDT", "bench")))
    });
    group.finish();
}

criterion_group!(benches, stats);
criterion_main!(benches);
