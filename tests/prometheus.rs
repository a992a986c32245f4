//! With the `prometheus` feature: /metrics over real HTTP, parsed by a real parser, and
//! the textfile.
#![cfg(feature = "prometheus")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use backtest_perf::export::prometheus::PrometheusExporter;
use backtest_perf::thresholds::Thresholds;
use backtest_perf::{
    MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig,
};
use prometheus_parse::{Scrape, Value};

fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone())
}

#[test]
fn metrics_over_http_and_in_a_textfile() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        StorageConfig {
            max_events: 3,
            max_keys: 16,
        },
        StatsPreset::Seed,
    );
    let exporter = Arc::new(PrometheusExporter::new(
        Thresholds::default(),
        Some(service.storage().clone()),
    ));
    bus.add_sink(exporter.clone());
    let event = |metric: MetricType, duration: f64| {
        PerformanceContract::new(metric, duration, 1.0)
            .with_symbol("BTCUSDT")
            .with_strategy("sma")
    };
    for d in [0.003, 0.2, 7.0] {
        bus.emit(event(MetricType::Tick, d)).unwrap();
    }
    bus.emit(event(MetricType::GetSignal, 6.0)).unwrap(); // slow: getSignal's threshold is 5 ms
    assert!(bus.emit(event(MetricType::Tick, -1.0)).is_err());

    let server = exporter.serve("127.0.0.1:0").unwrap();
    let (head, body) = get(server.addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let scrape = parse(&body);
    let labels = [
        ("metric_type", "tick"),
        ("symbol", "BTCUSDT"),
        ("strategy", "sma"),
    ];
    match value(&scrape, "backtest_perf_hook_duration_milliseconds", &labels) {
        Some(Value::Histogram(buckets)) => {
            let count = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
            assert_eq!(
                (
                    count(0.005),
                    count(0.25),
                    count(5.0),
                    count(10.0),
                    count(f64::INFINITY)
                ),
                (1.0, 2.0, 2.0, 3.0, 3.0)
            );
        }
        other => panic!("histogram expected, got {other:?}"),
    }
    let sum = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "backtest_perf_hook_duration_milliseconds_sum"
                && s.labels.get("metric_type") == Some("tick")
        })
        .unwrap();
    assert!(
        matches!(sum.value, Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) if (v - 7.203).abs() < 1e-12),
        "{:?}",
        sum.value
    );
    assert_eq!(
        value(&scrape, "backtest_perf_events_total", &labels),
        Some(Value::Counter(3.0))
    );
    assert_eq!(
        value(
            &scrape,
            "backtest_perf_slow_operations_total",
            &[("metric_type", "getSignal")]
        ),
        Some(Value::Counter(1.0))
    );
    // 7 ms is under tick's 100 ms threshold.
    assert_eq!(
        value(&scrape, "backtest_perf_slow_operations_total", &labels),
        Some(Value::Counter(0.0))
    );
    assert_eq!(
        value(
            &scrape,
            "backtest_perf_rejected_events_total",
            &[("symbol", "BTCUSDT")]
        ),
        Some(Value::Counter(1.0))
    );
    assert_eq!(
        value(
            &scrape,
            "backtest_perf_dropped_events_total",
            &[("symbol", "BTCUSDT")]
        ),
        Some(Value::Counter(1.0))
    );
    assert!(
        matches!(value(&scrape, "process_resident_memory_bytes", &[]), Some(Value::Gauge(v)) if v > 0.0)
    );

    let (head, _) = get(server.addr(), "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let path = exporter.write_textfile(dir.path(), "sma").unwrap();
    assert_eq!(path, dir.path().join("sma.prom"));
    let file = parse(&std::fs::read_to_string(path).unwrap());
    assert_eq!(
        value(&file, "backtest_perf_events_total", &labels),
        Some(Value::Counter(3.0))
    );
}
