//! The tracker's cost per start/end pair: disabled, and enabled without memory tracking.

use std::hint::black_box;

use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker_start_end");
    group.throughput(Throughput::Elements(1));

    let off = Tracker::disabled();
    // What the loop and black_box cost alone: subtract it from the pairs below.
    group.bench_function("baseline_loop", |b| b.iter(|| black_box(&off)));
    group.bench_function("disabled", |b| {
        b.iter(|| {
            let span = black_box(&off).start("getSignal", None);
            span.end();
        })
    });

    // The cap keeps memory flat over millions of iterations; past it, statistics still
    // count every operation, as they do below the cap.
    let on = Tracker::new(
        RunInfo::named("bench"),
        TrackerOptions {
            max_events: 10_000,
            ..TrackerOptions::default()
        },
    );
    group.bench_function("enabled", |b| {
        b.iter(|| {
            let span = black_box(&on).start("getSignal", None);
            span.end();
        })
    });
    group.finish();
}

criterion_group!(benches, pairs);
criterion_main!(benches);
