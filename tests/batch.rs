//! `emit_batch` keeps the contract of `emit`: same deliveries, chaining and rejections.

use std::sync::{Arc, Mutex};

use backtest_perf::{
    MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig,
};

fn workload() -> Vec<PerformanceContract> {
    let mut events = Vec::new();
    for i in 0..500u32 {
        let metric = [
            MetricType::Tick,
            MetricType::GetCandles,
            MetricType::custom("user"),
        ][(i % 3) as usize];
        let symbol = ["BTCUSDT", "ETHUSDT"][(i % 2) as usize];
        let mut e = PerformanceContract::new(metric, f64::from(i % 17) * 0.5, f64::from(i) * 2.0)
            .with_symbol(symbol)
            .with_strategy("s");
        if i % 50 == 7 {
            e.duration = -1.0; // rejected
        }
        if i % 40 == 3 {
            e.previous_timestamp = Some(0.0); // given by the producer: kept
        }
        events.push(e);
    }
    events
}

type Log = Arc<Mutex<Vec<PerformanceContract>>>;

fn pipeline() -> (
    PerformanceEmitter,
    PerformanceService,
    Log,
    backtest_perf::Subscription,
) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        StorageConfig {
            max_events: 200,
            max_keys: 16,
        },
        StatsPreset::Seed,
    );
    let log: Log = Arc::default();
    let l = log.clone();
    let sub = bus.listen(move |e: &PerformanceContract| l.lock().unwrap().push(*e));
    (bus, service, log, sub)
}

/// The pipeline fed `events` one `emit` at a time, its listener flushed: what a batch
/// must match.
fn one_by_one(
    events: &[PerformanceContract],
) -> (
    PerformanceEmitter,
    PerformanceService,
    Log,
    backtest_perf::Subscription,
) {
    let (bus, service, log, sub) = pipeline();
    for e in events {
        let _ = bus.emit(*e);
    }
    sub.flush();
    (bus, service, log, sub)
}

#[test]
fn a_batch_delivers_exactly_what_single_emits_deliver() {
    let (one_bus, one_service, one_log, _one_sub) = one_by_one(&workload());

    let (batch_bus, batch_service, batch_log, batch_sub) = pipeline();
    let events = workload();
    let mut delivered = 0;
    for chunk in events.chunks(64) {
        let mut buffer = chunk.to_vec();
        delivered += batch_bus.emit_batch(&mut buffer);
        assert!(
            buffer.is_empty(),
            "the buffer is handed back empty, ready for reuse"
        );
    }
    batch_sub.flush();

    assert_eq!(delivered, 490);
    assert_eq!(batch_bus.rejected(), one_bus.rejected());
    assert_eq!(batch_bus.rejected(), 10);
    assert_eq!(*batch_log.lock().unwrap(), *one_log.lock().unwrap());
    // Even i go to BTCUSDT (250 valid); odd i to ETHUSDT, where all 10 invalid ones are.
    // The window keeps 200 of each; the statistics cover every valid event.
    for (symbol, total, dropped, rejected) in [("BTCUSDT", 250, 50, 0), ("ETHUSDT", 240, 40, 10)] {
        let (a, b) = (
            one_service.get_data(symbol, "s"),
            batch_service.get_data(symbol, "s"),
        );
        assert_eq!(a, b);
        assert_eq!(
            (b.total_events, b.events.len(), b.dropped, b.rejected),
            (total, 200, dropped, rejected)
        );
    }
}

#[test]
fn batches_of_one_key_keep_the_window_and_statistics_of_single_emits() {
    // One key, as the engine's batches are: each batch goes to the window in one copy.
    // A type that first comes late ("late") is exact while all its events are in the
    // window; batches larger than the window (250 > 200) drop from within the batch.
    let events: Vec<PerformanceContract> = (0..900u32)
        .map(|i| {
            let metric = match i {
                i if i >= 820 && i % 2 == 0 => MetricType::custom("late"),
                i if i % 3 == 0 => MetricType::Tick,
                _ => MetricType::GetCandles,
            };
            PerformanceContract::new(metric, f64::from(i % 13) * 0.25, f64::from(i))
                .with_symbol("BTCUSDT")
                .with_strategy("s")
        })
        .collect();
    let (_, one_service, _, _) = one_by_one(&events);
    let expected = one_service.get_data("BTCUSDT", "s");
    assert_eq!(
        (
            expected.total_events,
            expected.events.len(),
            expected.dropped
        ),
        (900, 200, 700)
    );
    for size in [1, 7, 64, 199, 200, 250, 900] {
        let (bus, service, _, sub) = pipeline();
        for chunk in events.chunks(size) {
            let mut buffer = chunk.to_vec();
            assert_eq!(bus.emit_batch(&mut buffer), chunk.len());
        }
        sub.flush();
        assert_eq!(
            service.get_data("BTCUSDT", "s"),
            expected,
            "batches of {size}"
        );
    }
}

#[test]
fn a_batch_larger_than_one_grouping_delivers_what_single_emits_deliver() {
    // 10,000 events over three interleaved keys, in one call: grouped 4,096 at a time,
    // still delivered in order, chained and counted as one by one.
    let events: Vec<PerformanceContract> = (0..10_000u32)
        .map(|i| {
            let metric = [MetricType::Tick, MetricType::GetSignal][(i % 2) as usize];
            PerformanceContract::new(metric, f64::from(i % 7) * 0.5, f64::from(i))
                .with_symbol(["A", "B", "C"][(i % 3) as usize])
                .with_strategy("s")
        })
        .collect();
    let (_, one_service, one_log, _) = one_by_one(&events);
    let (bus, service, log, sub) = pipeline();
    let mut buffer = events.clone();
    assert_eq!(bus.emit_batch(&mut buffer), 10_000);
    sub.flush();
    let delivered = log.lock().unwrap();
    assert_eq!(delivered.len(), 10_000);
    assert_eq!(*delivered, *one_log.lock().unwrap());
    for symbol in ["A", "B", "C"] {
        let data = service.get_data(symbol, "s");
        assert_eq!(data, one_service.get_data(symbol, "s"));
        assert_eq!(
            (data.total_events, data.events.len()),
            (3_334 - usize::from(symbol != "A"), 200)
        );
    }
}
