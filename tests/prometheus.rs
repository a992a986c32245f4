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

/// The count of the first bucket whose bound is at least `upper` (bounds are powers of
/// two times 25 ns, printed in their shortest form).
fn bucket(buckets: &[prometheus_parse::HistogramCount], upper: f64) -> f64 {
    buckets
        .iter()
        .find(|b| b.less_than >= upper * (1.0 - 1e-9))
        .unwrap()
        .count
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
    // Nothing is subscribed for the exporter: it renders the storage when scraped.
    let exporter = Arc::new(PrometheusExporter::new(
        Thresholds::default(),
        service.storage().clone(),
    ));
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
    // Seconds, from 25 ns doubling: 3 µs, 200 µs and 7 ms each land in their own bucket.
    match value(&scrape, "backtest_perf_operation_duration_seconds", &labels) {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(
                (
                    bucket(&buckets, 25e-9 * 64.0),      // 1.6 µs
                    bucket(&buckets, 25e-9 * 128.0),     // 3.2 µs
                    bucket(&buckets, 25e-9 * 8192.0),    // 205 µs
                    bucket(&buckets, 25e-9 * 262_144.0), // 6.6 ms
                    bucket(&buckets, f64::INFINITY),
                ),
                (0.0, 1.0, 2.0, 2.0, 3.0)
            );
        }
        other => panic!("histogram expected, got {other:?}"),
    }
    let sum = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "backtest_perf_operation_duration_seconds_sum"
                && s.labels.get("metric_type") == Some("tick")
        })
        .unwrap();
    // From the whole-run histogram: within 0.1% of 7.203 ms.
    assert!(
        matches!(sum.value, Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) if (v - 0.007203).abs() <= 0.007203 * 0.001),
        "{:?}",
        sum.value
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
    // Named after this program: no clash with node_exporter's own process_* series.
    assert!(
        matches!(value(&scrape, "backtest_perf_process_resident_memory_bytes", &[]), Some(Value::Gauge(v)) if v > 0.0)
    );
    assert!(!body.contains("\nprocess_"), "{body}");

    let (head, _) = get(server.addr(), "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let path = exporter.write_textfile(dir.path(), "sma").unwrap();
    assert_eq!(path, dir.path().join("sma.prom"));
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(&format!(
            r#"backtest_perf_operation_duration_seconds_count{{service="backtest-perf",version="{}",metric_type="tick",symbol="BTCUSDT",strategy="sma"}} 3"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // Series follow the storage's keys: clearing the key removes them.
    service.clear("BTCUSDT", "sma");
    assert!(!exporter.render().contains("BTCUSDT"));
}

/// Sends raw bytes and reads the whole response.
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn no_client_can_crash_or_hold_the_metrics_server() {
    let storage = backtest_perf::StorageService::new(StorageConfig::default());
    let exporter = Arc::new(PrometheusExporter::new(Thresholds::default(), storage));
    let server = exporter.serve("127.0.0.1:0").unwrap();
    let addr = server.addr();
    // A client that connects and sends nothing holds only its own connection.
    let _idle = TcpStream::connect(addr).unwrap();
    // A body announced as 10 TB is never read, nor allocated.
    let huge = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000\r\n\r\n",
    );
    assert!(huge.starts_with("HTTP/1.1 200 OK"), "{huge}");
    // Query strings are ignored, HEAD has no body, other methods get 405 with Allow.
    assert!(raw(addr, b"GET /metrics?ts=1 HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    let head = raw(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let post = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(
        post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"),
        "{post}"
    );
    // A request head over 8 KiB is refused, not buffered without end.
    let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 16 * 1024));
    long.extend_from_slice(b"\r\n\r\n");
    assert!(raw(addr, &long).starts_with("HTTP/1.1 431"));
    // Dropping the server stops it (the idle client notwithstanding).
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}

/// Live statistics: the server that serves `/metrics` also serves `/stats`, the current
/// whole-run statistics of every key as JSON, while events keep arriving.
#[test]
fn stats_are_served_live_as_json_beside_the_metrics() {
    let bus = backtest_perf::PerformanceEmitter::new();
    let service = backtest_perf::PerformanceService::attached(&bus);
    let exporter = Arc::new(PrometheusExporter::new(
        Thresholds::default(),
        service.storage().clone(),
    ));
    let server = exporter.serve("127.0.0.1:0").unwrap();
    let addr = server.addr();
    let body = |response: &str| response.split_once("\r\n\r\n").unwrap().1.to_string();
    let tick = |ms: f64| {
        backtest_perf::PerformanceContract::new(backtest_perf::MetricType::Tick, ms, 1.0)
            .with_symbol("BTCUSDT")
            .with_strategy("sma")
    };
    bus.emit(tick(2.0)).unwrap();
    let first = raw(addr, b"GET /stats HTTP/1.1\r\n\r\n");
    assert!(first.contains("Content-Type: application/json"), "{first}");
    let json: serde_json::Value = serde_json::from_str(&body(&first)).unwrap();
    assert_eq!(json["pairs"][0]["strategyName"], "sma");
    assert_eq!(json["pairs"][0]["metricStats"]["tick"]["count"], 1);
    bus.emit(tick(4.0)).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&body(&raw(addr, b"GET /stats?x=1 HTTP/1.1\r\n\r\n"))).unwrap();
    assert_eq!(json["pairs"][0]["metricStats"]["tick"]["count"], 2);
    assert_eq!(json["pairs"][0]["metricStats"]["tick"]["avgDuration"], 3.0);
    assert!(raw(addr, b"DELETE /stats HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(raw(addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
}
