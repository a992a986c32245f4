//! With the `otel` feature: one span per hook, checked with the SDK's in-memory exporter,
//! written as OTLP-JSON lines, and posted as OTLP/HTTP JSON to a receiver on loopback.
#![cfg(feature = "otel")]

use std::time::{Duration, UNIX_EPOCH};

use backtest_perf::export::otel::{OtlpHttpExporter, OtlpJsonFileExporter, listen};
use backtest_perf::thresholds::Thresholds;
use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::Value as Json;

const T: f64 = 1_732_147_200_123.0;

fn emit_two(bus: &PerformanceEmitter) {
    let e = |metric, duration, at| {
        PerformanceContract::new(metric, duration, at)
            .with_symbol("BTCUSDT")
            .with_strategy("sma")
    };
    bus.emit(e(MetricType::Tick, 0.25, T)).unwrap();
    bus.emit(e(MetricType::GetSignal, 6.0, T + 10.0)).unwrap(); // slow: getSignal's threshold is 5 ms
}

#[test]
fn spans_carry_the_hook_its_key_and_its_slowness() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let bus = PerformanceEmitter::new();
    let sub = listen(&bus, &provider, Thresholds::default());
    emit_two(&bus);
    sub.flush();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2);
    let attribute = |i: usize, key: &str| {
        spans[i]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(spans[0].name, "tick");
    assert_eq!(spans[1].name, "getSignal");
    assert_eq!(attribute(1, "symbol"), Some(Value::from("BTCUSDT")));
    assert_eq!(attribute(1, "strategy"), Some(Value::from("sma")));
    assert_eq!(attribute(1, "performance.slow"), Some(Value::Bool(true)));
    assert_eq!(attribute(1, "performance.threshold"), Some(Value::F64(5.0)));
    assert_eq!(
        attribute(1, "performance.slowness_ratio"),
        Some(Value::F64(1.2))
    );
    assert_eq!(attribute(0, "performance.slow"), Some(Value::Bool(false)));
    let end = UNIX_EPOCH + Duration::from_millis(1_732_147_200_133);
    assert_eq!(spans[1].end_time, end);
    assert_eq!(
        end.duration_since(spans[1].start_time)
            .unwrap()
            .as_secs_f64()
            * 1000.0,
        6.0
    );
}

fn check_otlp_json(request: &Json) -> Vec<Json> {
    let resource = &request["resourceSpans"][0];
    assert_eq!(resource["resource"]["attributes"][0]["key"], "service.name");
    let scope = &resource["scopeSpans"][0];
    assert_eq!(scope["scope"]["name"], "backtest-perf");
    let spans = scope["spans"].as_array().unwrap().clone();
    for span in &spans {
        let hex = |field: &str, len: usize| {
            let id = span[field].as_str().unwrap();
            assert!(
                id.len() == len && id.chars().all(|c| c.is_ascii_hexdigit()),
                "{field}: {id}"
            );
        };
        hex("traceId", 32);
        hex("spanId", 16);
        assert_eq!(span["parentSpanId"], "");
        assert_eq!(span["kind"], 1);
        let nanos = |field: &str| span[field].as_str().unwrap().parse::<u128>().unwrap();
        assert!(nanos("startTimeUnixNano") <= nanos("endTimeUnixNano"));
        for attribute in span["attributes"].as_array().unwrap() {
            let value = attribute["value"].as_object().unwrap();
            assert_eq!(value.len(), 1);
            assert!(
                ["stringValue", "boolValue", "intValue", "doubleValue"]
                    .contains(&value.keys().next().unwrap().as_str())
            );
        }
    }
    spans
}

#[test]
fn an_otlp_json_file_holds_one_request_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces").join("spans.jsonl");
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(OtlpJsonFileExporter::create(&path).unwrap())
        .build();
    let bus = PerformanceEmitter::new();
    let sub = listen(&bus, &provider, Thresholds::default());
    emit_two(&bus);
    sub.flush();
    provider.force_flush().unwrap();
    let lines: Vec<Json> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the simple exporter exports each span as it ends"
    );
    let spans: Vec<Json> = lines.iter().flat_map(check_otlp_json).collect();
    assert_eq!(spans[1]["name"], "getSignal");
    assert_eq!(
        spans[1]["endTimeUnixNano"],
        ((T + 10.0) as u128 * 1_000_000).to_string()
    );
    let slow = spans[1]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "performance.slow")
        .unwrap();
    assert_eq!(slow["value"]["boolValue"], true);
}

#[test]
fn otlp_http_posts_json_to_the_receiver() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let mut request = server
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .expect("a request");
            assert_eq!(
                (request.method().as_str(), request.url()),
                ("POST", "/v1/traces")
            );
            let mut body = String::new();
            request.as_reader().read_to_string(&mut body).unwrap();
            bodies.push(body);
            request
                .respond(tiny_http::Response::from_string("{}"))
                .unwrap();
        }
        bodies
    });
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(OtlpHttpExporter::new(format!("http://{addr}/v1/traces")))
        .build();
    let bus = PerformanceEmitter::new();
    let sub = listen(&bus, &provider, Thresholds::default());
    emit_two(&bus);
    sub.flush();
    let bodies = receiver.join().unwrap();
    let names: Vec<Json> = bodies
        .iter()
        .flat_map(|b| check_otlp_json(&serde_json::from_str(b).unwrap()))
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, ["tick", "getSignal"]);
}

#[test]
fn batched_exports_in_groups_and_flushes_the_rest_without_dropping() {
    use backtest_perf::export::otel::Batched;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let exporter = Batched::new(OtlpJsonFileExporter::create(&path).unwrap(), 3);
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let bus = PerformanceEmitter::new();
    let sub = listen(&bus, &provider, Thresholds::default());
    for i in 0..7 {
        bus.emit(PerformanceContract::new(
            MetricType::Tick,
            0.1,
            T + f64::from(i),
        ))
        .unwrap();
    }
    sub.flush();
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines()
            .iter()
            .map(|l| check_otlp_json(l).len())
            .collect::<Vec<_>>(),
        [3, 3]
    );
    // The SDK's simple processor passes no flush on: the rest goes out at shutdown.
    provider.shutdown().unwrap();
    assert_eq!(
        lines()
            .iter()
            .map(|l| check_otlp_json(l).len())
            .collect::<Vec<_>>(),
        [3, 3, 1]
    );
}

/// An OTLP endpoint that is down costs nothing already done: the reports are written,
/// the failure is printed with what to do, and the exit status is 3 (not 1).
#[test]
fn a_collector_that_is_down_leaves_the_reports_written_and_exits_3() {
    // A loopback port with nobody listening: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--format",
            "md,json",
        ])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}/v1/traces"),
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(dir.path().join("sma-crossover.md").exists());
    assert!(dir.path().join("sma-crossover.json").exists());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("the reports above are complete, but 1 side job(s) failed:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("check that the collector is up at the endpoint"),
        "{stderr}"
    );
}
