//! OpenTelemetry (feature `otel`): one span per hook event, named after its metric type,
//! with the attributes `symbol`, `strategy`, `performance.duration_ms`,
//! `performance.slow`, `performance.threshold` (ms) and `performance.slowness_ratio`.
//!
//! Spans are built on a listener's worker thread, never on the emitting thread, and go
//! to any OpenTelemetry SDK exporter. Two come with it: [`OtlpJsonFileExporter`] writes
//! OTLP-JSON lines (as the collector's file exporter does), and [`OtlpHttpExporter`]
//! posts OTLP/HTTP JSON to a collector (`http://localhost:4318/v1/traces`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status, Tracer, TracerProvider};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::key::StorageKey;
use crate::thresholds::Thresholds;
use crate::{PerformanceContract, PerformanceEmitter, Subscription};

/// The instrumentation scope's name.
///
/// ```
/// use backtest_perf::export::otel::otlp_json;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// let bus = PerformanceEmitter::new();
/// let sub = backtest_perf::export::otel::listen(&bus, &provider, Thresholds::default());
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.7e12)).unwrap();
/// sub.flush();
/// let spans = exporter.get_finished_spans().unwrap();
/// assert_eq!(spans[0].instrumentation_scope.name(), backtest_perf::export::otel::SCOPE);
/// ```
pub const SCOPE: &str = "backtest-perf";

/// Turns every event on `bus` into a span of `provider`'s tracer, judged slow by
/// `thresholds`. Keep the subscription for as long as spans should flow; flush it (and
/// the provider) before reading what was exported.
///
/// ```
/// use backtest_perf::export::otel::listen;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
///
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// let bus = PerformanceEmitter::new();
/// let sub = listen(&bus, &provider, Thresholds::default());
/// bus.emit(PerformanceContract::new(MetricType::GetSignal, 6.0, 1.7e12).with_symbol("BTCUSDT").with_strategy("sma")).unwrap();
/// sub.flush();
/// let spans = exporter.get_finished_spans().unwrap();
/// assert_eq!(spans[0].name, "getSignal");
/// ```
pub fn listen(
    bus: &PerformanceEmitter,
    provider: &SdkTracerProvider,
    thresholds: Thresholds,
) -> Subscription {
    let tracer = provider.tracer(SCOPE);
    bus.listen(move |event: &PerformanceContract| {
        let key = StorageKey::of(event);
        let threshold = thresholds.threshold_ms(event.metric_type.as_str());
        let end = UNIX_EPOCH + epoch_ms(event.timestamp);
        let start = end
            .checked_sub(Duration::from_secs_f64(event.duration / 1000.0))
            .unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("symbol", key.symbol.as_str()),
            KeyValue::new("strategy", key.strategy.as_str()),
            KeyValue::new("performance.duration_ms", event.duration),
            KeyValue::new(
                "performance.slow",
                thresholds.is_slow(event.metric_type.as_str(), event.duration),
            ),
            KeyValue::new("performance.threshold", threshold),
            KeyValue::new(
                "performance.slowness_ratio",
                thresholds.ratio(event.metric_type.as_str(), event.duration),
            ),
        ];
        if let Some(when) = event.when {
            attributes.push(KeyValue::new("backtest.when", when.to_rfc3339()));
        }
        let mut span = tracer
            .span_builder(event.metric_type.as_str())
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attributes)
            .start(&tracer);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    })
}

/// Epoch milliseconds as a duration, exact to the nanosecond: whole milliseconds and the
/// fraction apart (one `f64` of seconds would round today's times to about 240 ns).
fn epoch_ms(ms: f64) -> Duration {
    let ms = ms.max(0.0);
    let whole = ms.trunc();
    Duration::from_millis(whole as u64) + Duration::from_nanos(((ms - whole) * 1e6).round() as u64)
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn value(v: &OtelValue) -> Value {
    match v {
        OtelValue::Bool(b) => json!({ "boolValue": b }),
        OtelValue::I64(i) => json!({ "intValue": i.to_string() }),
        OtelValue::F64(f) if f.is_finite() => json!({ "doubleValue": f }),
        // JSON has no infinity: OTLP/JSON writes it as a string.
        OtelValue::F64(f) => {
            json!({ "doubleValue": if *f > 0.0 { "Infinity" } else { "-Infinity" } })
        }
        other => json!({ "stringValue": other.as_str() }),
    }
}

/// `batch` as an OTLP/JSON `ExportTraceServiceRequest` (hex ids, times as decimal
/// strings of Unix nanoseconds, enums as numbers).
///
/// ```
/// use backtest_perf::export::otel::otlp_json;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// let bus = PerformanceEmitter::new();
/// let sub = backtest_perf::export::otel::listen(&bus, &provider, Thresholds::default());
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.7e12)).unwrap();
/// sub.flush();
/// let spans = exporter.get_finished_spans().unwrap();
/// let request = otlp_json(&spans);
/// assert_eq!(request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"], "tick");
/// ```
pub fn otlp_json(batch: &[SpanData]) -> Value {
    let spans: Vec<Value> = batch
        .iter()
        .map(|s| {
            let parent = if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
                String::new()
            } else {
                s.parent_span_id.to_string()
            };
            let status = match &s.status {
                Status::Unset => json!({}),
                Status::Ok => json!({ "code": 1 }),
                Status::Error { description } => json!({ "code": 2, "message": description }),
            };
            json!({
                "traceId": s.span_context.trace_id().to_string(),
                "spanId": s.span_context.span_id().to_string(),
                "parentSpanId": parent,
                "name": s.name,
                "kind": match s.span_kind {
                    SpanKind::Internal => 1,
                    SpanKind::Server => 2,
                    SpanKind::Client => 3,
                    SpanKind::Producer => 4,
                    SpanKind::Consumer => 5,
                },
                "startTimeUnixNano": nanos(s.start_time),
                "endTimeUnixNano": nanos(s.end_time),
                "attributes": s.attributes.iter().map(|kv| json!({ "key": kv.key.as_str(), "value": value(&kv.value) })).collect::<Vec<_>>(),
                "status": status,
            })
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": SCOPE } }] },
            "scopeSpans": [{ "scope": { "name": SCOPE, "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
        }]
    })
}

/// Appends each exported batch to a file as one OTLP-JSON line.
///
/// ```
/// use backtest_perf::export::otel::{Batched, OtlpJsonFileExporter};
/// let dir = tempfile::tempdir().unwrap();
/// let exporter = OtlpJsonFileExporter::create(&dir.path().join("spans.jsonl")).unwrap();
/// let _provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(Batched::new(exporter, 512)).build();
/// ```
#[derive(Debug)]
pub struct OtlpJsonFileExporter {
    path: PathBuf,
    file: Mutex<File>,
}

impl OtlpJsonFileExporter {
    /// An exporter appending to `path` (created, with its folder).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("traces").join("spans.jsonl");
    /// backtest_perf::export::otel::OtlpJsonFileExporter::create(&path).unwrap();
    /// assert!(path.exists());
    /// ```
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(OtlpJsonFileExporter {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }
}

impl SpanExporter for OtlpJsonFileExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut line = otlp_json(&batch).to_string();
        line.push('\n');
        let result = self.file.lock().write_all(line.as_bytes()).map_err(|e| {
            OTelSdkError::InternalFailure(format!("cannot write {}: {e}", self.path.display()))
        });
        std::future::ready(result)
    }
}

/// Posts each exported batch as OTLP/HTTP JSON to a collector, with a 5-second timeout.
///
/// ```
/// use backtest_perf::export::otel::{Batched, OtlpHttpExporter};
/// let exporter = OtlpHttpExporter::new("http://localhost:4318/v1/traces");
/// let _provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(Batched::new(exporter, 512)).build();
/// ```
#[derive(Debug)]
pub struct OtlpHttpExporter(super::http::JsonPost);

impl OtlpHttpExporter {
    /// An exporter posting to `url`, e.g. `http://localhost:4318/v1/traces`.
    ///
    /// ```
    /// let _exporter = backtest_perf::export::otel::OtlpHttpExporter::new("http://collector:4318/v1/traces");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        OtlpHttpExporter(super::http::JsonPost::new(url))
    }
}

impl SpanExporter for OtlpHttpExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(
            self.0
                .send(otlp_json(&batch).to_string())
                .map_err(OTelSdkError::InternalFailure),
        )
    }
}

/// Groups spans into batches of `size` before handing them to `inner`, on the exporting
/// thread. With the SDK's simple processor this exports in batches without the batch
/// processor's bounded queue, which drops spans when it is full: here the listener's
/// queue holds what waits, and nothing is dropped. The rest is exported at shutdown (the
/// simple processor passes no flush on; [`SpanExporter::force_flush`] called directly
/// exports it too).
///
/// ```
/// use backtest_perf::export::otel::Batched;
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
/// let _batched = Batched::new(InMemorySpanExporter::default(), 512);
/// ```
#[derive(Debug)]
pub struct Batched<E: SpanExporter> {
    inner: E,
    size: usize,
    pending: Mutex<Vec<SpanData>>,
}

impl<E: SpanExporter> Batched<E> {
    /// Batches of `size` spans (at least 1) for `inner`.
    ///
    /// ```
    /// let _one_at_least = backtest_perf::export::otel::Batched::new(opentelemetry_sdk::trace::InMemorySpanExporter::default(), 0);
    /// ```
    pub fn new(inner: E, size: usize) -> Self {
        Batched {
            inner,
            size: size.max(1),
            pending: Mutex::new(Vec::new()),
        }
    }

    fn take(&self, all: bool) -> Option<Vec<SpanData>> {
        let mut pending = self.pending.lock();
        (all && !pending.is_empty() || pending.len() >= self.size)
            .then(|| std::mem::take(&mut *pending))
    }

    fn export_rest(&self) -> OTelSdkResult {
        match self.take(true) {
            Some(rest) => futures::executor::block_on(self.inner.export(rest)),
            None => Ok(()),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Batched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.pending.lock().extend(batch);
        match self.take(false) {
            Some(full) => self.inner.export(full).await,
            None => Ok(()),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.export_rest()?;
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.export_rest()?;
        self.inner.shutdown_with_timeout(timeout)
    }
}
