//! This crate's producer paths beside what a Rust user would write instead, on one
//! workload: 4 symbol:strategy pairs x 5 hook types, seeded log-normal durations, one
//! hook duration recorded per element.
//!
//! - `metrics` + `metrics-exporter-prometheus`: a histogram per (symbol, strategy, hook),
//!   through a cached handle, and through the `histogram!` macro every time;
//! - `hdrhistogram`: one per key through a cached index (keeps no events, no window,
//!   feeds no listener);
//! - `tracing`: a span per hook with a minimal timing layer;
//! - this crate: `emit` (storage with whole-run aggregates and window, one listener),
//!   `emit_batch` of 1,024 events of the four keys interleaved, the engine's path (a
//!   buffer per key, handed over at 1,024 events), and batches from two producer threads
//!   on different keys.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use backtest_perf::{
    MetricType, Name, PerformanceContract, PerformanceEmitter, PerformanceService,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const N: usize = 4096;
const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];

/// Log-normal durations in ms (median 0.37 ms), seeded, as in `backtest-perf bench`.
fn durations() -> Vec<f64> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = ((x.rotate_left(17) >> 11) as f64 / (1u64 << 53) as f64).max(1e-12);
            // Box-Muller: a standard normal from two uniforms.
            let z = (-2.0 * v.ln()).sqrt() * (2.0 * std::f64::consts::PI * u).cos();
            (z - 1.0).exp()
        })
        .collect()
}

fn events(d: &[f64]) -> Vec<PerformanceContract> {
    d.iter()
        .enumerate()
        .map(|(i, &ms)| {
            PerformanceContract::new(MetricType::BUILT_IN[i % 5], ms, 1.7e12 + i as f64)
                .with_symbol(SYMBOLS[i % 4])
                .with_strategy("bench")
        })
        .collect()
}

/// A minimal timing layer: the start in the span's extensions, the elapsed time summed
/// at close.
struct Timing(Arc<AtomicU64>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Timing {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Instant::now());
        }
    }
    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(start) = span.extensions().get::<Instant>()
        {
            self.0
                .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

fn peers(c: &mut Criterion) {
    let d = durations();
    let batch = events(&d);
    let mut group = c.benchmark_group("record_one_hook_duration");
    group.throughput(Throughput::Elements(N as u64));

    // metrics + metrics-exporter-prometheus.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        let handles: Vec<metrics::Histogram> = (0..20)
            .map(|k| {
                metrics::histogram!("hook_seconds", "symbol" => SYMBOLS[k % 4], "strategy" => "bench", "hook" => MetricType::BUILT_IN[k % 5].as_str())
            })
            .collect();
        group.bench_function("metrics_prometheus_cached_handle", |b| {
            b.iter(|| {
                for (i, ms) in d.iter().enumerate() {
                    handles[i % 20].record(black_box(*ms) / 1000.0);
                }
            })
        });
        group.bench_function("metrics_prometheus_macro", |b| {
            b.iter(|| {
                for (i, ms) in d.iter().enumerate() {
                    metrics::histogram!("hook_seconds", "symbol" => SYMBOLS[i % 4], "strategy" => "bench", "hook" => MetricType::BUILT_IN[i % 5].as_str())
                        .record(black_box(*ms) / 1000.0);
                }
            })
        });
    });

    // A bare hdrhistogram per key.
    let mut hists: Vec<hdrhistogram::Histogram<u64>> = (0..20)
        .map(|_| hdrhistogram::Histogram::new(3).unwrap())
        .collect();
    group.bench_function("hdrhistogram_cached_handle", |b| {
        b.iter(|| {
            for (i, ms) in d.iter().enumerate() {
                let _ = hists[i % 20].record((black_box(*ms) * 1e6) as u64);
            }
        })
    });

    // tracing with a minimal timing layer.
    let total = Arc::new(AtomicU64::new(0));
    let subscriber = tracing_subscriber::registry().with(Timing(total.clone()));
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("tracing_span_minimal_layer", |b| {
            b.iter(|| {
                for i in 0..N {
                    let span = tracing::info_span!(
                        "hook",
                        symbol = SYMBOLS[i % 4],
                        strategy = "bench",
                        hook = MetricType::BUILT_IN[i % 5].as_str()
                    );
                    drop(black_box(span.entered()));
                }
            })
        });
    });

    // This crate's tracing layer (feature `tracing-layer`), on a bus with nobody listening
    // beyond it: the same spans as above, each becoming an event.
    #[cfg(feature = "tracing-layer")]
    {
        let layer_bus = PerformanceEmitter::new();
        let subscriber = tracing_subscriber::registry().with(
            backtest_perf::tracing_layer::PerformanceLayer::new(layer_bus.clone()),
        );
        let _service = PerformanceService::attached(&layer_bus);
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function("backtest_perf_tracing_layer", |b| {
                b.iter(|| {
                    for i in 0..N {
                        let span = tracing::info_span!(
                            "hook",
                            symbol = SYMBOLS[i % 4],
                            strategy = "bench",
                            hook = MetricType::BUILT_IN[i % 5].as_str()
                        );
                        drop(black_box(span.entered()));
                    }
                })
            });
        });
    }

    // This crate: emit, and the engine's batched path, storage + one listener.
    let bus = PerformanceEmitter::new();
    let _service = PerformanceService::attached(&bus);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let sub = bus.listen(move |_: &PerformanceContract| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    group.bench_function("backtest_perf_emit", |b| {
        b.iter(|| {
            for e in &batch {
                let _ = bus.emit(black_box(*e));
            }
        })
    });
    let mut buffer = Vec::with_capacity(1024);
    group.bench_function("backtest_perf_emit_batch_1024", |b| {
        b.iter(|| {
            for chunk in batch.chunks(1024) {
                buffer.extend_from_slice(chunk);
                bus.emit_batch(&mut buffer);
            }
        })
    });
    // As the engine batches: a buffer per (symbol, strategy), each handed over at 1,024
    // events, so every batch is one key's (found in one look) and its events are
    // delivered under one lock of that key.
    let mut buffers: Vec<Vec<PerformanceContract>> =
        (0..4).map(|_| Vec::with_capacity(1024)).collect();
    group.bench_function("backtest_perf_emit_batch_per_key", |b| {
        b.iter(|| {
            for (i, e) in batch.iter().enumerate() {
                let buffer = &mut buffers[i % 4];
                buffer.push(*e);
                if buffer.len() == 1024 {
                    bus.emit_batch(buffer);
                }
            }
        })
    });
    sub.flush();

    // Two producer threads, each on keys of its own, each doing the single thread's work:
    // a time equal to `backtest_perf_emit_batch_1024` means each thread's events cost no
    // more than one thread's.
    let halves: Vec<Vec<PerformanceContract>> = (0..2)
        .map(|t| {
            let strategy = Name::new(&format!("bench-{t}"));
            batch
                .iter()
                .map(|e| PerformanceContract {
                    strategy_name: Some(strategy),
                    ..*e
                })
                .collect()
        })
        .collect();
    group.bench_function("backtest_perf_emit_batch_two_threads", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for half in &halves {
                    let bus = bus.clone();
                    scope.spawn(move || {
                        let mut buffer = Vec::with_capacity(1024);
                        for _ in 0..iterations {
                            for chunk in half.chunks(1024) {
                                buffer.extend_from_slice(chunk);
                                bus.emit_batch(&mut buffer);
                            }
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    sub.flush();
    sub.unsubscribe();
    group.finish();
}

criterion_group!(benches, peers);
criterion_main!(benches);
