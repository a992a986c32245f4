//! The hot path of the bus: emit with the default pipeline, with nobody listening, and
//! with tracking off.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TYPES: [MetricType; 5] = MetricType::BUILT_IN;

fn events(n: usize) -> Vec<PerformanceContract> {
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];
    (0..n)
        .map(|i| {
            PerformanceContract::new(TYPES[i % 5], 0.1 + (i % 97) as f64 * 0.01, i as f64 * 0.001)
                .with_symbol(symbols[i % 4])
                .with_strategy("bench")
        })
        .collect()
}

fn emit(c: &mut Criterion) {
    let batch = events(4096);
    let mut group = c.benchmark_group("emit");
    group.throughput(Throughput::Elements(batch.len() as u64));

    let bus = PerformanceEmitter::new();
    let _service = PerformanceService::attached(&bus);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let sub = bus.listen(move |_: &PerformanceContract| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    group.bench_function("storage_and_listener", |b| {
        b.iter(|| {
            for e in &batch {
                let _ = bus.emit(black_box(*e));
            }
        })
    });
    sub.flush();
    sub.unsubscribe();

    let empty = PerformanceEmitter::new();
    group.bench_function("no_subscribers", |b| {
        b.iter(|| {
            for e in &batch {
                let _ = empty.emit(black_box(*e));
            }
        })
    });

    let off = PerformanceEmitter::new();
    let _off_service = PerformanceService::attached(&off);
    off.set_enabled(false);
    group.bench_function("tracking_disabled", |b| {
        b.iter(|| {
            for e in &batch {
                let _ = off.emit(black_box(*e));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, emit);
criterion_main!(benches);
