//! With the `otel` feature: span trees from the event stream, checked with the SDK's
//! in-memory exporter, written as OTLP-JSON lines, and posted as OTLP/HTTP (protobuf and
//! JSON) to a receiver on loopback that decodes them with the OTLP protobuf definitions.
#![cfg(feature = "otel")]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
use backtest_perf::export::otel::{OtlpJsonFileExporter, Sampler, SpanCollector, SpanExport};
use backtest_perf::strategies::SmaCrossover;
use backtest_perf::thresholds::Thresholds;
use backtest_perf::{MetricType, Name, PerformanceContract, PerformanceEmitter};
use opentelemetry::Value;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use serde_json::Value as Json;

const T: f64 = 1_732_147_200_123.0;

fn emit_two(bus: &PerformanceEmitter) {
    let e = |metric, duration, at, id| {
        PerformanceContract::new(metric, duration, at)
            .with_symbol("BTCUSDT")
            .with_strategy("sma")
            .with_id(id)
    };
    bus.emit(e(MetricType::Tick, 0.25, T, 1)).unwrap();
    // slow: getSignal's threshold is 5 ms; it failed, too
    bus.emit(e(MetricType::GetSignal, 6.0, T + 10.0, 2).with_ok(false))
        .unwrap();
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[test]
fn spans_carry_the_hook_its_key_its_slowness_and_its_outcome() {
    let memory = SpanCollector::default();
    let bus = PerformanceEmitter::new();
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("memory", memory.clone())
        .listen(&bus);
    emit_two(&bus);
    let report = export.finish();
    assert_eq!((report.spans, report.traces, report.orphans), (2, 2, 0));
    assert!(report.failures.is_empty());
    let spans = memory.spans();
    assert_eq!(spans[0].name, "tick");
    assert_eq!(spans[1].name, "getSignal");
    assert_eq!(attribute(&spans[1], "symbol"), Some(Value::from("BTCUSDT")));
    assert_eq!(attribute(&spans[1], "strategy"), Some(Value::from("sma")));
    assert_eq!(
        attribute(&spans[1], "performance.slow"),
        Some(Value::Bool(true))
    );
    assert_eq!(
        attribute(&spans[1], "performance.threshold"),
        Some(Value::F64(5.0))
    );
    assert_eq!(
        attribute(&spans[1], "performance.slowness_ratio"),
        Some(Value::F64(1.2))
    );
    assert_eq!(
        attribute(&spans[0], "performance.slow"),
        Some(Value::Bool(false))
    );
    assert_eq!(spans[0].status, Status::Unset);
    assert_eq!(
        spans[1].status,
        Status::error("the operation failed (ok: false)")
    );
    assert_eq!(spans[1].span_context.span_id(), SpanId::from(2u64));
    let end = UNIX_EPOCH + Duration::from_millis(1_732_147_200_133);
    assert_eq!(spans[1].end_time, end);
    assert_eq!(
        end.duration_since(spans[1].start_time).unwrap(),
        Duration::from_millis(6)
    );
}

/// A real backtest: every span has its parent in its own trace, every trace is rooted at
/// a tick, and there is one span per event the bus carried.
#[test]
fn a_backtest_becomes_one_trace_per_tick_with_every_parent_present() {
    let exchange = SyntheticExchange::new(Name::new("SYN"), SyntheticConfig::days(2)).unwrap();
    let memory = SpanCollector::default();
    let bus = PerformanceEmitter::new();
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = counted.clone();
    let counter = bus.listen(move |_: &PerformanceContract| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("memory", memory.clone())
        .listen(&bus);
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus.clone())
        .run(&mut SmaCrossover::default())
        .unwrap();
    counter.flush();
    let report = export.finish();
    let spans = memory.spans();
    let events = counted.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(spans.len() as u64, events);
    assert_eq!(report.spans, events);
    assert_eq!(report.orphans, 0);
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut roots = 0;
    for span in &spans {
        if span.parent_span_id == SpanId::INVALID {
            assert_eq!(span.name, "tick");
            roots += 1;
        } else {
            let parent = by_id[&span.parent_span_id];
            assert_eq!(parent.span_context.trace_id(), span.span_context.trace_id());
            assert!(parent.start_time <= span.start_time && span.end_time <= parent.end_time);
        }
    }
    assert_eq!(roots, result.frames as usize);
    assert_eq!(report.traces, roots as u64);
}

fn read_lines(path: &std::path::Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_otlp_json_file_appears_whole_when_the_export_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces").join("spans.jsonl");
    let bus = PerformanceEmitter::new();
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("file", OtlpJsonFileExporter::create(&path).unwrap())
        .listen(&bus);
    emit_two(&bus);
    assert!(!path.exists(), "no half file while the run goes on");
    export.finish();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1, "one batch");
    let resource = &lines[0]["resourceSpans"][0];
    let service = resource["resource"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "service.name")
        .unwrap();
    assert_eq!(service["value"]["stringValue"], "backtest-perf");
    let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap();
    assert_eq!(resource["scopeSpans"][0]["scope"]["name"], "backtest-perf");
    assert_eq!(spans[1]["name"], "getSignal");
    assert_eq!(spans[1]["spanId"], "0000000000000002");
    assert_eq!(
        spans[1]["endTimeUnixNano"],
        ((T + 10.0) as u128 * 1_000_000).to_string()
    );
    assert_eq!(spans[1]["status"]["code"], 2);
    let slow = spans[1]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "performance.slow")
        .unwrap();
    assert_eq!(slow["value"]["boolValue"], true);
    // An ordinary file, readable by a collector running as another user, like the reports.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // Only the temporary file's rename made it: nothing else is left in the folder.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("traces"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["spans.jsonl"]);
}

/// A loopback OTLP/HTTP receiver: answers `status` to every request and hands back
/// each request's path, headers and body.
struct Receiver {
    url: String,
    requests: std::sync::mpsc::Receiver<(String, HashMap<String, String>, Vec<u8>)>,
}

fn receiver(status: u16) -> Receiver {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let (send, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(Some(mut request)) = server.recv_timeout(Duration::from_secs(60)) {
            let headers = request
                .headers()
                .iter()
                .map(|h| (h.field.to_string().to_lowercase(), h.value.to_string()))
                .collect();
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            let path = request.url().to_string();
            // Handed over before the answer: a client that got its answer finds its
            // request in the channel (no race with this thread).
            let gone = send.send((path, headers, body)).is_err();
            let _ = request.respond(tiny_http::Response::empty(status));
            if gone {
                break;
            }
        }
    });
    Receiver { url, requests }
}

#[test]
fn otlp_http_posts_protobuf_that_decodes_with_the_otlp_definitions() {
    let collector = receiver(200);
    let exporter = backtest_perf::export::otel::otlp_http(
        Some(&format!("{}/v1/traces", collector.url)),
        Some(backtest_perf::export::otel::OtlpProtocol::Protobuf),
    )
    .unwrap();
    let bus = PerformanceEmitter::new();
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("collector", exporter)
        .listen(&bus);
    emit_two(&bus);
    let report = export.finish();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let (path, headers, body) = collector.requests.recv().unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let spans = &request.resource_spans[0].scope_spans[0].spans;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tick", "getSignal"]);
    assert_eq!(spans[1].span_id, 2u64.to_be_bytes());
    assert_eq!(spans[1].trace_id.len(), 16);
}

#[test]
fn otlp_http_posts_json_when_asked() {
    let collector = receiver(200);
    let exporter = backtest_perf::export::otel::otlp_http(
        Some(&format!("{}/v1/traces", collector.url)),
        Some(backtest_perf::export::otel::OtlpProtocol::Json),
    )
    .unwrap();
    let bus = PerformanceEmitter::new();
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("collector", exporter)
        .listen(&bus);
    emit_two(&bus);
    assert!(export.finish().failures.is_empty());
    let (_, headers, body) = collector.requests.recv().unwrap();
    assert_eq!(headers["content-type"], "application/json");
    let json: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"],
        "tick"
    );
}

/// A collector answering 400 loses the spans, not the run: the failure names the
/// destination and how many spans it did not get, and later batches are not tried.
#[test]
fn a_collector_that_refuses_is_reported_with_the_spans_it_lost() {
    let collector = receiver(400);
    let exporter =
        backtest_perf::export::otel::otlp_http(Some(&format!("{}/v1/traces", collector.url)), None)
            .unwrap();
    let bus = PerformanceEmitter::new();
    let export = SpanExport::new(Thresholds::default(), Sampler::default())
        .to("collector", exporter)
        .listen(&bus);
    for id in 1..=1200 {
        bus.emit(PerformanceContract::new(MetricType::Tick, 0.1, T).with_id(id))
            .unwrap();
    }
    let report = export.finish();
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0].starts_with("collector: ")
            && report.failures[0].ends_with("(1200 spans not delivered)"),
        "{:?}",
        report.failures
    );
    assert_eq!(collector.requests.try_iter().count(), 1, "one try only");
}

#[cfg(feature = "cli")]
fn backtest_perf(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_backtest-perf"));
    command
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--format",
            "md,json",
        ])
        .arg("--out")
        .arg(dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG");
    command
}

/// The standard variables configure the command line's export: endpoint, headers,
/// service name and resource attributes.
#[test]
#[cfg(feature = "cli")]
fn the_otel_environment_variables_configure_the_export() {
    let collector = receiver(200);
    let dir = tempfile::tempdir().unwrap();
    let out = backtest_perf(dir.path())
        .arg("--otlp-endpoint")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc")
        .env("OTEL_SERVICE_NAME", "my-backtests")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=research",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (path, headers, body) = collector.requests.recv().unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(headers["authorization"], "Bearer abc");
    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    let attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .map(|v| format!("{:?}", v.value.unwrap()))
    };
    assert_eq!(
        attribute("service.name").as_deref(),
        Some(r#"StringValue("my-backtests")"#)
    );
    assert_eq!(
        attribute("deployment.environment").as_deref(),
        Some(r#"StringValue("research")"#)
    );
    // Every span of the run arrived: the count printed is the count received.
    let mut received = request.resource_spans[0].scope_spans[0].spans.len();
    while let Ok((_, _, body)) = collector.requests.try_recv() {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        received += request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>();
    }
    let line = stdout.lines().find(|l| l.starts_with("spans: ")).unwrap();
    assert!(
        line.starts_with(&format!("spans: {received} in ")),
        "{line}"
    );
}

/// An OTLP endpoint that is down costs nothing already done: the reports are written,
/// the failure is printed with what to do, and the exit status is 3 (not 1).
#[test]
#[cfg(feature = "cli")]
fn a_collector_that_is_down_leaves_the_reports_written_and_exits_3() {
    // A loopback port with nobody listening: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = backtest_perf(dir.path())
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}/v1/traces"),
        ])
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
        stderr.contains("check that a collector listens there (OTLP/HTTP)"),
        "{stderr}"
    );
    assert!(stderr.contains("spans not delivered)"), "{stderr}");
}

#[test]
#[cfg(feature = "cli")]
fn a_bad_sampler_or_protocol_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = backtest_perf(dir.path())
        .args(["--otlp-file", "spans.jsonl"])
        .env("OTEL_TRACES_SAMPLER", "traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "OTEL_TRACES_SAMPLER_ARG: the trace sampling ratio must be between 0 and 1, got 2"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("sma-crossover.md").exists());
    let out = backtest_perf(dir.path())
        .args(["--otlp-endpoint", "--otlp-protocol", "grpc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr).unwrap().contains(
            "OTLP protocol \"grpc\" is not supported here: use http/protobuf or http/json"
        )
    );
}

/// Default labels: `--service-name` and `--environment` name the spans' service and
/// environment (over the OTEL variables), with the version.
#[cfg(feature = "cli")]
#[test]
fn flags_set_the_service_and_environment_of_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let out = backtest_perf(dir.path())
        .args(["--service-name", "bt", "--environment", "ci", "--otlp-file"])
        .arg(&path)
        .env("OTEL_SERVICE_NAME", "overridden")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = read_lines(&path).remove(0);
    let attributes = first["resourceSpans"][0]["resource"]["attributes"]
        .as_array()
        .unwrap()
        .clone();
    let value = |key: &str| {
        attributes
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].clone())
    };
    assert_eq!(value("service.name"), Some("bt".into()));
    assert_eq!(value("deployment.environment"), Some("ci".into()));
    assert_eq!(
        value("service.version"),
        Some(env!("CARGO_PKG_VERSION").into())
    );
}
