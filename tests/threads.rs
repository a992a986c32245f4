//! Several threads emitting at once into the same and different keys: exact counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backtest_perf::{
    MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig,
};

const PER_THREAD: u64 = 50_000;

/// Per producing thread: events seen, how many came out of order, the last timestamp.
type Seen = (u64, u64, f64);

#[test]
fn concurrent_emits_lose_nothing_and_keep_per_thread_order() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        StorageConfig {
            max_events: 1_000_000,
            max_keys: 64,
        },
        StatsPreset::Seed,
    );
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let s = seen.clone();
    let sub = bus.listen(move |e: &PerformanceContract| {
        let mut seen = s.lock().unwrap();
        let entry = seen
            .entry(e.metric_type.to_string())
            .or_insert((0, 0, -1.0));
        entry.0 += 1;
        if e.timestamp <= entry.2 {
            entry.1 += 1;
        }
        entry.2 = e.timestamp;
    });
    // Threads 0 and 1 share a key; 2 and 3 have keys of their own.
    let keys = [
        ("BTCUSDT", "shared"),
        ("BTCUSDT", "shared"),
        ("ETHUSDT", "a"),
        ("SOLUSDT", "b"),
    ];
    std::thread::scope(|scope| {
        for (thread, (symbol, strategy)) in keys.into_iter().enumerate() {
            let bus = bus.clone();
            scope.spawn(move || {
                let metric = MetricType::custom(&format!("thread{thread}"));
                for i in 0..PER_THREAD {
                    let e = PerformanceContract::new(metric, 1.0, i as f64)
                        .with_symbol(symbol)
                        .with_strategy(strategy);
                    bus.emit(e).unwrap();
                }
            });
        }
    });
    sub.flush();
    assert_eq!(sub.handled(), 4 * PER_THREAD);
    let seen = seen.lock().unwrap();
    for thread in 0..4 {
        assert_eq!(
            seen[&format!("thread{thread}")],
            (PER_THREAD, 0, (PER_THREAD - 1) as f64)
        );
    }
    let shared = service.get_data("BTCUSDT", "shared");
    assert_eq!(shared.total_events as u64, 2 * PER_THREAD);
    assert_eq!(
        shared.metric_stats[&MetricType::custom("thread0")].count as u64,
        PER_THREAD
    );
    assert_eq!(
        shared.metric_stats[&MetricType::custom("thread1")].count as u64,
        PER_THREAD
    );
    assert_eq!(shared.total_duration, (2 * PER_THREAD) as f64);
    for (symbol, strategy) in [("ETHUSDT", "a"), ("SOLUSDT", "b")] {
        let data = service.get_data(symbol, strategy);
        assert_eq!(
            (data.total_events as u64, data.dropped, data.rejected),
            (PER_THREAD, 0, 0)
        );
        // The bus chained previous timestamps within each thread's own series.
        let stats = data.metric_stats.values().next().unwrap();
        assert_eq!((stats.min_wait_time, stats.max_wait_time), (1.0, 1.0));
    }
}

/// Threads that make the same new keys at once: whichever interleaving happens, every
/// event is counted once, in the statistics and in the window.
#[test]
fn racing_threads_on_new_keys_lose_no_event() {
    use backtest_perf::{StorageKey, StorageService};
    let storage = StorageService::new(StorageConfig {
        max_events: 100_000,
        max_keys: 4_096,
    });
    std::thread::scope(|scope| {
        for t in 0..2 {
            let storage = &storage;
            scope.spawn(move || {
                for i in 0..2_000u32 {
                    let event = PerformanceContract::new(MetricType::Tick, 1.0, f64::from(i))
                        .with_symbol(format!("K{}", i % 200).as_str())
                        .with_strategy("race")
                        .with_id(u64::from(t * 10_000 + i + 1));
                    storage.record(&event);
                }
            });
        }
    });
    for k in 0..200 {
        let counters = storage
            .counters(StorageKey::new(&format!("K{k}"), "race"))
            .unwrap();
        assert_eq!(
            (counters.total_events, counters.window_events),
            (20, 20),
            "K{k}"
        );
    }
}
