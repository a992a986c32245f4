//! With the `tracing-layer` feature, `#[instrument]`ed code lands on the bus.
#![cfg(feature = "tracing-layer")]

use std::sync::{Arc, Mutex};

use backtest_perf::tracing_layer::PerformanceLayer;
use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
use tracing_subscriber::layer::SubscriberExt;

#[tracing::instrument(fields(symbol = %symbol, strategy = "momentum"))]
fn get_signal(symbol: &str) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(2));
    fetch_candles(symbol, 50)
}

#[tracing::instrument(name = "getCandles", fields(symbol = %symbol, strategy = "momentum"))]
fn fetch_candles(symbol: &str, limit: usize) -> bool {
    limit > 10
}

#[test]
fn instrumented_functions_become_performance_events() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let seen: Arc<Mutex<Vec<PerformanceContract>>> = Arc::default();
    let s = seen.clone();
    let sub = bus.listen(move |e: &PerformanceContract| s.lock().unwrap().push(*e));
    let subscriber = tracing_subscriber::registry().with(PerformanceLayer::new(bus.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            assert!(get_signal("ETHUSDT"));
        }
    });
    sub.flush();

    let events = seen.lock().unwrap();
    assert_eq!(events.len(), 6);
    // Inner spans close first.
    assert_eq!(events[0].metric_type, MetricType::GetCandles);
    assert_eq!(events[1].metric_type, MetricType::custom("get_signal"));
    assert!(
        events
            .iter()
            .all(|e| e.symbol.unwrap() == "ETHUSDT" && e.strategy_name.unwrap() == "momentum")
    );
    assert!(events[1].duration >= 2.0, "{}", events[1].duration);
    assert!(events[1].duration >= events[0].duration);

    let data = service.get_data("ETHUSDT", "momentum");
    assert_eq!(data.metric_stats[&MetricType::GetCandles].count, 3);
    assert_eq!(
        data.metric_stats[&MetricType::custom("get_signal")].count,
        3
    );
    assert!(data.metric_stats[&MetricType::custom("get_signal")].avg_wait_time >= 2.0);
}

#[tracing::instrument(fields(symbol = "SOLUSDT", strategy = "breakout"))]
fn outer_step() {
    inner_step();
}

/// No fields of its own: it takes its parent's symbol and strategy.
#[tracing::instrument]
fn inner_step() {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

#[test]
fn a_child_span_inherits_the_key_and_nests_with_its_id_and_self_time() {
    let bus = PerformanceEmitter::new();
    let seen: Arc<Mutex<Vec<PerformanceContract>>> = Arc::default();
    let s = seen.clone();
    let sub = bus.listen(move |e: &PerformanceContract| s.lock().unwrap().push(*e));
    let subscriber = tracing_subscriber::registry().with(PerformanceLayer::new(bus.clone()));
    tracing::subscriber::with_default(subscriber, outer_step);
    sub.flush();
    let events = seen.lock().unwrap();
    let (inner, outer) = (events[0], events[1]);
    assert_eq!(inner.metric_type, MetricType::custom("inner_step"));
    assert_eq!(
        (
            inner.symbol.unwrap().as_str(),
            inner.strategy_name.unwrap().as_str()
        ),
        ("SOLUSDT", "breakout"),
        "inherited from the parent span"
    );
    assert_eq!(inner.parent_id, outer.id);
    assert_eq!(outer.parent_id, None);
    // The outer span's self time leaves the inner one out.
    let expected = outer.duration - inner.duration;
    assert!(
        (outer.self_time() - expected).abs() < 1e-6,
        "{} vs {expected}",
        outer.self_time()
    );
    assert!(inner.duration >= 1.0);
}
