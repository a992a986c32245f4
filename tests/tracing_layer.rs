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
