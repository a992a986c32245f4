//! OpenTelemetry (feature `otel`): the event stream as trees of spans, exported with the
//! OpenTelemetry crates: OTLP/HTTP in protobuf or JSON through `opentelemetry-otlp`, and
//! OTLP-JSON files (one `ExportTraceServiceRequest` per line, as the collector's file
//! exporter writes them) through `opentelemetry-proto`'s own serialization.
//!
//! # One trace per tick
//!
//! Every event becomes one span named after its metric type, with the event's `id` as its
//! span id and `parentId` as its parent. A `tick`, or any event without a parent, is the
//! root of a trace; everything that ran inside it (getSignal, getCandles, the position
//! replay, a user's steps) is below it. Per tick and not per run because a year of
//! 1-minute ticks is two million spans, far beyond what trace stores keep as one trace,
//! and because a tick is what a user opens to ask why it was slow. A tick that itself ran
//! inside something (a user's `time` around a whole backtest) keeps a link to it.
//!
//! Children end before their parents, so spans wait, bounded, until their trace's root
//! ends. Spans whose parent never comes (at most [`MAX_WAITING`] wait) are exported
//! under a trace named after the missing parent and counted as orphans.
//!
//! # Attributes and status
//!
//! Every span: `symbol`, `strategy`, `performance.duration_ms`, `performance.self_ms`
//! (when known) and `performance.slow`. A slow span also has `performance.threshold` (ms)
//! and `performance.slowness_ratio`; a trace's root has `backtest.when`, the simulated
//! time of its tick (the spans below it share it). They are left off where they say
//! nothing new because attributes are most of a span's export cost. No attribute is
//! ever a non-finite number. An event with `ok: false` has the error status, `ok: true`
//! the ok status.
//!
//! # Sampling
//!
//! [`Sampler`] keeps a ratio of traces chosen by trace id (OpenTelemetry's
//! `traceidratio`, read from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`), and
//! always keeps a trace with a slow or failed span, so that what a report calls slow can
//! be opened. [`SpanExportReport`] says how many traces were left out.
//!
//! # Never costing the run
//!
//! Spans are built and exported on a thread of the export's own, never on the emitting
//! one, which only copies each event into a chunk.
//! A destination that fails once is given nothing more (a collector that is down would
//! otherwise hold every batch for its timeout); [`SpanExport::finish`] says what failed
//! and how many spans it lost.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use parking_lot::Mutex;

use crate::key::StorageKey;
use crate::thresholds::Thresholds;
use crate::{MetricType, PerformanceContract, PerformanceEmitter};

/// The instrumentation scope's name, and the service name when the environment names none.
pub const SCOPE: &str = "backtest-perf";

/// At most this many spans wait for their trace's root; past it, the waiting spans are
/// exported as orphans.
pub const MAX_WAITING: usize = 65_536;

/// Spans are handed to the destinations in batches of this many.
pub const BATCH: usize = 512;

/// Which traces to keep: a ratio chosen by trace id, plus every trace with a slow or
/// failed span.
///
/// ```
/// use backtest_perf::export::otel::Sampler;
/// assert_eq!(Sampler::ratio(0.25).unwrap().keeps(), 0.25);
/// assert!(Sampler::ratio(1.5).unwrap_err().contains("between 0 and 1"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    ratio: f64,
}

impl Default for Sampler {
    /// Every trace.
    fn default() -> Self {
        Sampler { ratio: 1.0 }
    }
}

impl Sampler {
    /// Keeps `ratio` (0 to 1) of the traces, and every trace with a slow or failed span.
    ///
    /// ```
    /// assert!(backtest_perf::export::otel::Sampler::ratio(f64::NAN).is_err());
    /// ```
    pub fn ratio(ratio: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(Sampler { ratio })
        } else {
            Err(format!(
                "the trace sampling ratio must be between 0 and 1, got {ratio}"
            ))
        }
    }

    /// The ratio of traces kept (those with slow or failed spans aside).
    pub fn keeps(&self) -> f64 {
        self.ratio
    }

    /// From OpenTelemetry's variables: `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
    /// `traceidratio` and their `parentbased_` forms: the roots here have no parent, so
    /// they mean the same) and `OTEL_TRACES_SAMPLER_ARG` (the ratio, 1 when unset). Unset
    /// means every trace.
    ///
    /// ```
    /// use backtest_perf::export::otel::Sampler;
    /// assert_eq!(Sampler::from_vars(None, None).unwrap(), Sampler::default());
    /// assert_eq!(Sampler::from_vars(Some("parentbased_traceidratio"), Some("0.1")).unwrap().keeps(), 0.1);
    /// assert_eq!(Sampler::from_vars(Some("always_off"), None).unwrap().keeps(), 0.0);
    /// assert!(Sampler::from_vars(Some("jaeger_remote"), None).unwrap_err().contains("OTEL_TRACES_SAMPLER"));
    /// assert!(Sampler::from_vars(Some("traceidratio"), Some("half")).unwrap_err().contains("OTEL_TRACES_SAMPLER_ARG"));
    /// ```
    pub fn from_vars(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        match sampler.map(str::trim) {
            None | Some("" | "always_on" | "parentbased_always_on") => Ok(Sampler::default()),
            Some("always_off" | "parentbased_always_off") => Sampler::ratio(0.0),
            Some("traceidratio" | "parentbased_traceidratio") => {
                let ratio = match arg.map(str::trim) {
                    None | Some("") => 1.0,
                    Some(text) => text.parse::<f64>().map_err(|_| {
                        format!("OTEL_TRACES_SAMPLER_ARG={text:?} is not a number between 0 and 1")
                    })?,
                };
                Sampler::ratio(ratio).map_err(|e| format!("OTEL_TRACES_SAMPLER_ARG: {e}"))
            }
            Some(other) => Err(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not one this exporter knows: use always_on, \
                 always_off or traceidratio (or their parentbased_ forms)"
            )),
        }
    }

    /// [`Sampler::from_vars`] with the process environment.
    pub fn from_env() -> Result<Self, String> {
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Sampler::from_vars(sampler.as_deref(), arg.as_deref())
    }

    /// Whether a trace with these random bits is in the ratio (the W3C way: the trace
    /// id's low 56 bits against the ratio).
    fn samples(&self, trace_id: u128) -> bool {
        let random = (trace_id as u64) & ((1 << 56) - 1);
        (random as f64) < self.ratio * (1u64 << 56) as f64
    }
}

/// What became of the spans of one export.
///
/// ```
/// let report = backtest_perf::export::otel::SpanExportReport::default();
/// assert!(report.failures.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanExportReport {
    /// Spans handed to the destinations.
    pub spans: u64,
    /// Traces handed to the destinations.
    pub traces: u64,
    /// Traces the sampler left out.
    pub traces_sampled_out: u64,
    /// Spans exported without their parent (it never came, or too many waited).
    pub orphans: u64,
    /// One line per destination that failed: what failed, and how many spans it lost.
    pub failures: Vec<String>,
}

/// Turns events into finished span trees: the part of the export that needs no
/// destination.
///
/// ```
/// use backtest_perf::export::otel::{Sampler, SpanTrees};
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract};
/// let mut trees = SpanTrees::new(Thresholds::default(), Sampler::default());
/// let mut out = Vec::new();
/// let at = 1.7e12;
/// trees.push(&PerformanceContract::new(MetricType::GetSignal, 0.5, at).with_id(2).with_parent(1), &mut out);
/// assert!(out.is_empty(), "getSignal waits for its tick");
/// trees.push(&PerformanceContract::new(MetricType::Tick, 0.6, at).with_id(1), &mut out);
/// assert_eq!(out.len(), 2);
/// assert_eq!(out[0].span_context.trace_id(), out[1].span_context.trace_id());
/// assert_eq!(out[0].parent_span_id, out[1].span_context.span_id());
/// ```
#[derive(Debug)]
pub struct SpanTrees {
    thresholds: Thresholds,
    sampler: Sampler,
    salt: u64,
    scope: InstrumentationScope,
    /// Subtrees by the id of the parent they wait for. Looked up twice an event: foldhash
    /// rather than SipHash.
    waiting: HashMap<u64, Vec<PerformanceContract>, foldhash::fast::RandomState>,
    waiting_spans: usize,
    names: HashMap<StorageKey, (Value, Value), crate::key::Prehashed>,
    next_free_id: u64,
    report: SpanExportReport,
}

impl SpanTrees {
    /// Trees judged slow by `thresholds`, kept by `sampler`.
    pub fn new(thresholds: Thresholds, sampler: Sampler) -> Self {
        SpanTrees {
            thresholds,
            sampler,
            salt: rand::random(),
            scope: InstrumentationScope::builder(SCOPE)
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            waiting: HashMap::default(),
            waiting_spans: 0,
            names: HashMap::default(),
            // Events without an id get one above every id the bus hands out.
            next_free_id: crate::event::MAX_ID + 1,
            report: SpanExportReport::default(),
        }
    }

    /// Takes one event; appends to `out` the spans of every trace it completes.
    pub fn push(&mut self, event: &PerformanceContract, out: &mut Vec<SpanData>) {
        let id = match event.id {
            Some(id) if id != 0 => id,
            _ => {
                self.next_free_id = self.next_free_id.wrapping_add(1).max(1);
                self.next_free_id
            }
        };
        let mut tree = self.waiting.remove(&id).unwrap_or_default();
        self.waiting_spans = self.waiting_spans.saturating_sub(tree.len());
        tree.push(event.with_id(id));
        match event.parent_id {
            Some(parent) if event.metric_type != MetricType::Tick => {
                self.waiting_spans += tree.len();
                let waiting = self.waiting.entry(parent).or_default();
                if waiting.is_empty() {
                    *waiting = tree;
                } else {
                    waiting.append(&mut tree);
                }
                if self.waiting_spans > MAX_WAITING {
                    self.flush(out);
                }
            }
            _ => self.complete(id, None, tree, out),
        }
    }

    /// Exports what still waits for a parent, as orphans: each group under a trace named
    /// after its missing parent.
    pub fn flush(&mut self, out: &mut Vec<SpanData>) {
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting_spans = 0;
        for (parent, tree) in waiting {
            self.report.orphans += tree.len() as u64;
            self.complete(parent, Some(parent), tree, out);
        }
    }

    /// What the trees held so far (the failures are the destinations', not filled here).
    pub fn report(&self) -> &SpanExportReport {
        &self.report
    }

    /// `tree` is complete under `root`: `missing` is the root's id when it never came.
    fn complete(
        &mut self,
        root: u64,
        missing: Option<u64>,
        tree: Vec<PerformanceContract>,
        out: &mut Vec<SpanData>,
    ) {
        let trace_id = self.trace_id(root);
        let keep = self.sampler.samples(trace_id)
            || tree.iter().any(|e| {
                !e.succeeded() || self.thresholds.is_slow(e.metric_type.as_str(), e.duration)
            });
        if !keep {
            self.report.traces_sampled_out += 1;
            return;
        }
        self.report.traces += 1;
        self.report.spans += tree.len() as u64;
        // Times are epoch milliseconds in an f64, which rounds today's times to about
        // 240 ns: a child may seem to start before its parent. Parents come after their
        // children in `tree`, so walking it backwards meets every parent first and can
        // keep each child inside its parent, as viewers expect.
        let mut times: Vec<(u64, SystemTime, SystemTime)> = Vec::with_capacity(tree.len());
        let first = out.len();
        for event in tree.iter().rev() {
            let (mut start, mut end) = interval(event);
            if let Some(&(_, parent_start, parent_end)) = event
                .parent_id
                .and_then(|p| times.iter().find(|(id, ..)| *id == p))
            {
                end = end.min(parent_end).max(parent_start);
                start = start.max(parent_start).min(end);
            }
            times.push((event.id.unwrap_or(root), start, end));
            let span = self.span(event, trace_id, root, missing, start, end);
            out.push(span);
        }
        // In the order the operations ended, as they came.
        out[first..].reverse();
    }

    /// The trace id of the trace rooted at `root`: random bits from the root's id and this
    /// export's salt, so every span finds its trace's id without a table.
    fn trace_id(&self, root: u64) -> u128 {
        let high = splitmix(self.salt ^ 0x9e37_79b9_7f4a_7c15);
        let low = splitmix(root ^ self.salt);
        (u128::from(high) << 64) | u128::from(low)
    }

    fn span(
        &mut self,
        event: &PerformanceContract,
        trace_id: u128,
        root: u64,
        missing: Option<u64>,
        start: SystemTime,
        end: SystemTime,
    ) -> SpanData {
        let id = event.id.unwrap_or(root);
        let metric = event.metric_type.as_str();
        let key = StorageKey::of(event);
        if self.names.len() >= 4096 && !self.names.contains_key(&key) {
            self.names.clear();
        }
        let (symbol, strategy) = self
            .names
            .entry(key)
            .or_insert_with(|| {
                (
                    Value::from(Arc::<str>::from(key.symbol.as_str())),
                    Value::from(Arc::<str>::from(key.strategy.as_str())),
                )
            })
            .clone();
        let threshold = self.thresholds.threshold_ms(metric);
        let mut attributes = Vec::with_capacity(8);
        attributes.push(KeyValue::new("symbol", symbol));
        attributes.push(KeyValue::new("strategy", strategy));
        push_finite(&mut attributes, "performance.duration_ms", event.duration);
        if let Some(own) = event.self_duration {
            push_finite(&mut attributes, "performance.self_ms", own);
        }
        let slow = self.thresholds.is_slow(metric, event.duration);
        attributes.push(KeyValue::new("performance.slow", slow));
        if slow {
            push_finite(&mut attributes, "performance.threshold", threshold);
            push_finite(
                &mut attributes,
                "performance.slowness_ratio",
                self.thresholds.ratio(metric, event.duration),
            );
        }
        // The root of its trace: no parent (a tick's outer span becomes a link).
        let is_root = id == root && missing.is_none();
        if let (true, Some(when)) = (is_root, event.when) {
            attributes.push(KeyValue::new("backtest.when", when.to_rfc3339()));
        }
        let parent = if is_root {
            SpanId::INVALID
        } else {
            event.parent_id.map_or(SpanId::INVALID, SpanId::from)
        };
        let mut links = SpanLinks::default();
        if let (true, Some(outer)) = (is_root, event.parent_id) {
            links.links.push(Link::with_context(SpanContext::new(
                TraceId::from(self.trace_id(outer)),
                SpanId::from(outer),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            )));
        }
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: std::borrow::Cow::Borrowed(metric),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: match event.ok {
                Some(false) => Status::error("the operation failed (ok: false)"),
                Some(true) => Status::Ok,
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// When an event's operation started and ended, from its end time and duration.
fn interval(event: &PerformanceContract) -> (SystemTime, SystemTime) {
    let end = UNIX_EPOCH + epoch_ms(event.timestamp);
    let duration = if event.duration.is_finite() {
        Duration::from_nanos((event.duration.max(0.0) * 1e6).round() as u64)
    } else {
        Duration::ZERO
    };
    end.checked_sub(duration)
        .map_or((UNIX_EPOCH, end), |start| (start, end))
}

fn push_finite(attributes: &mut Vec<KeyValue>, key: &'static str, value: f64) {
    if value.is_finite() {
        attributes.push(KeyValue::new(key, value));
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Epoch milliseconds as a duration, exact to the nanosecond: whole milliseconds and the
/// fraction apart (one `f64` of seconds would round today's times to about 240 ns).
fn epoch_ms(ms: f64) -> Duration {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    let whole = ms.trunc();
    Duration::from_millis(whole as u64) + Duration::from_nanos(((ms - whole) * 1e6).round() as u64)
}

/// The resource every span is exported with: what `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` say (the SDK reads them), with the default labels
/// ([`DefaultLabels::from_env`](crate::export::labels::DefaultLabels::from_env)):
/// `service.name` (`backtest-perf` when nothing names one), `service.version` and
/// `deployment.environment` when known.
///
/// ```
/// let resource = backtest_perf::export::otel::resource();
/// assert!(resource.get(&opentelemetry::Key::new("service.name")).is_some());
/// ```
pub fn resource() -> Resource {
    resource_for(&crate::export::labels::DefaultLabels::from_env())
}

/// The resource with these labels (flags over the environment).
///
/// ```
/// use backtest_perf::export::labels::DefaultLabels;
/// let labels = DefaultLabels::default().with(Some("bt".into()), Some("ci".into()));
/// let resource = backtest_perf::export::otel::resource_for(&labels);
/// assert_eq!(resource.get(&opentelemetry::Key::new("service.name")).unwrap().as_str(), "bt");
/// assert_eq!(resource.get(&opentelemetry::Key::new("deployment.environment")).unwrap().as_str(), "ci");
/// ```
pub fn resource_for(labels: &crate::export::labels::DefaultLabels) -> Resource {
    let mut builder = Resource::builder()
        .with_service_name(labels.service.clone())
        .with_attribute(KeyValue::new("service.version", labels.version.clone()));
    if let Some(environment) = &labels.environment {
        builder =
            builder.with_attribute(KeyValue::new("deployment.environment", environment.clone()));
    }
    builder.build()
}

/// The HTTP client the OTLP exporter posts with: ureq, blocking, on the exporting thread.
/// HTTP error statuses come back as responses, so the exporter reports them.
#[derive(Debug)]
pub struct UreqClient(ureq::Agent);

impl UreqClient {
    /// A client whose requests give up after `timeout`.
    ///
    /// ```
    /// let _client = backtest_perf::export::otel::UreqClient::new(std::time::Duration::from_secs(5));
    /// ```
    pub fn new(timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build();
        UreqClient(ureq::Agent::new_with_config(config))
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = self.0.run(request.map(|body| body.to_vec()))?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.with_config().limit(4 << 20).read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(bytes)))
    }
}

/// The wire format of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`, OpenTelemetry's default.
    Protobuf,
    /// `http/json`.
    Json,
}

impl OtlpProtocol {
    /// From the names OpenTelemetry uses (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    ///
    /// ```
    /// use backtest_perf::export::otel::OtlpProtocol;
    /// assert_eq!(OtlpProtocol::parse("http/json").unwrap(), OtlpProtocol::Json);
    /// assert!(OtlpProtocol::parse("grpc").unwrap_err().contains("http/protobuf"));
    /// ```
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "http/protobuf" => Ok(OtlpProtocol::Protobuf),
            "http/json" => Ok(OtlpProtocol::Json),
            other => Err(format!(
                "OTLP protocol {other:?} is not supported here: use http/protobuf or http/json"
            )),
        }
    }
}

/// An OTLP/HTTP span exporter (`opentelemetry-otlp`) posting with [`UreqClient`].
/// `endpoint` is the full URL (`http://localhost:4318/v1/traces`); `None` takes
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` plus
/// `/v1/traces`, or `http://localhost:4318/v1/traces`. `protocol` `None` takes
/// `OTEL_EXPORTER_OTLP_PROTOCOL` (protobuf when unset). Headers come from
/// `OTEL_EXPORTER_OTLP_HEADERS`, the timeout from `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s).
///
/// ```
/// let exporter = backtest_perf::export::otel::otlp_http(Some("http://localhost:4318/v1/traces"), None);
/// assert!(exporter.is_ok());
/// let bad = backtest_perf::export::otel::otlp_http(Some("not a url"), None);
/// assert!(bad.unwrap_err().contains("not a url"));
/// ```
pub fn otlp_http(
    endpoint: Option<&str>,
    protocol: Option<OtlpProtocol>,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let protocol = match protocol {
        Some(protocol) => protocol,
        None => match std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Ok(name) => OtlpProtocol::parse(&name)?,
            Err(_) => OtlpProtocol::Protobuf,
        },
    };
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new(timeout))
        .with_protocol(match protocol {
            OtlpProtocol::Protobuf => Protocol::HttpBinary,
            OtlpProtocol::Json => Protocol::HttpJson,
        });
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))
}

/// Writes OTLP-JSON lines, one `ExportTraceServiceRequest` per exported batch, with
/// `opentelemetry-proto`'s serialization. The file appears at its path only when the
/// exporter shuts down; until then it is a temporary file beside it, so a failed run
/// never leaves half a file.
///
/// ```
/// use backtest_perf::export::otel::OtlpJsonFileExporter;
/// use opentelemetry_sdk::trace::SpanExporter;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("traces").join("spans.jsonl");
/// let exporter = OtlpJsonFileExporter::create(&path).unwrap();
/// assert!(!path.exists());
/// exporter.shutdown().unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
/// ```
#[derive(Debug)]
pub struct OtlpJsonFileExporter {
    path: PathBuf,
    file: Mutex<Option<BufWriter<tempfile::NamedTempFile>>>,
    resource: Mutex<ResourceAttributesWithSchema>,
}

impl OtlpJsonFileExporter {
    /// An exporter that will write `path` (its folder is created).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                dir.to_path_buf()
            }
            None => PathBuf::from("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".spans-").suffix(".partial");
        // An ordinary file once in place, as every report is (a temporary file is private).
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = builder.tempfile_in(dir)?;
        Ok(OtlpJsonFileExporter {
            path: path.to_path_buf(),
            file: Mutex::new(Some(BufWriter::with_capacity(1 << 16, file))),
            resource: Mutex::new(ResourceAttributesWithSchema::from(&resource())),
        })
    }

    fn write(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource.lock()),
        };
        let mut file = self.file.lock();
        let Some(out) = file.as_mut() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        serde_json::to_writer(&mut *out, &request)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| {
                OTelSdkError::InternalFailure(format!("cannot write {}: {e}", self.path.display()))
            })
    }

    fn persist(&self) -> OTelSdkResult {
        let Some(out) = self.file.lock().take() else {
            return Ok(());
        };
        let fail = |e: &dyn std::fmt::Display| {
            OTelSdkError::InternalFailure(format!("cannot write {}: {e}", self.path.display()))
        };
        let file = out.into_inner().map_err(|e| fail(&e.error()))?;
        file.as_file().sync_all().map_err(|e| fail(&e))?;
        file.persist(&self.path).map_err(|e| fail(&e.error))?;
        Ok(())
    }
}

impl SpanExporter for OtlpJsonFileExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.write(batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.persist()
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.lock() = ResourceAttributesWithSchema::from(resource);
    }
}

/// Keeps every span it is given, for tests and for inspecting a run in code. Unlike the
/// SDK's `InMemorySpanExporter`, it keeps them through shutdown, which
/// [`SpanExport::finish`] performs.
///
/// ```
/// use backtest_perf::export::otel::{Sampler, SpanCollector, SpanExport};
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let collector = SpanCollector::default();
/// let bus = PerformanceEmitter::new();
/// let export = SpanExport::new(Thresholds::default(), Sampler::default())
///     .to("memory", collector.clone())
///     .listen(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 0.2, 1.7e12)).unwrap();
/// export.finish();
/// assert_eq!(collector.spans()[0].name, "tick");
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpanCollector(Arc<Mutex<Vec<SpanData>>>);

impl SpanCollector {
    /// The spans exported so far, in order.
    pub fn spans(&self) -> Vec<SpanData> {
        self.0.lock().clone()
    }
}

impl SpanExporter for SpanCollector {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().extend(batch);
        std::future::ready(Ok(()))
    }
}

/// An exporter behind a box, so that one export can feed several kinds.
trait Deliver: Send {
    fn deliver(&mut self, batch: Vec<SpanData>) -> OTelSdkResult;
    fn close(&mut self) -> OTelSdkResult;
}

struct Delivering<E: SpanExporter>(E);

impl<E: SpanExporter + Send> Deliver for Delivering<E> {
    fn deliver(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
        futures::executor::block_on(self.0.export(batch))
    }

    fn close(&mut self) -> OTelSdkResult {
        self.0.force_flush()?;
        self.0.shutdown_with_timeout(Duration::from_secs(5))
    }
}

struct Destination {
    name: String,
    exporter: Box<dyn Deliver>,
    failed: Option<String>,
    lost: u64,
}

/// The worker's side: span trees, the batch being filled, the destinations.
struct Worker {
    trees: SpanTrees,
    batch: Vec<SpanData>,
    destinations: Vec<Destination>,
}

impl Worker {
    fn take(&mut self, events: &[PerformanceContract]) {
        for event in events {
            self.trees.push(event, &mut self.batch);
            if self.batch.len() >= BATCH {
                self.export();
            }
        }
    }

    fn export(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let last = self.destinations.len().saturating_sub(1);
        let mut batch = Some(std::mem::take(&mut self.batch));
        for (i, destination) in self.destinations.iter_mut().enumerate() {
            let spans = if i == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let count = spans.len() as u64;
            if destination.failed.is_some() {
                destination.lost += count;
                continue;
            }
            if let Err(e) = destination.exporter.deliver(spans) {
                destination.failed = Some(e.to_string());
                destination.lost += count;
            }
        }
    }

    fn finish(mut self) -> SpanExportReport {
        self.trees.flush(&mut self.batch);
        self.export();
        let mut report = self.trees.report().clone();
        for destination in &mut self.destinations {
            if destination.failed.is_none()
                && let Err(e) = destination.exporter.close()
            {
                destination.failed = Some(e.to_string());
            }
            if let Some(failure) = &destination.failed {
                report.failures.push(format!(
                    "{}: {failure} ({} spans not delivered)",
                    destination.name, destination.lost
                ));
            }
        }
        report
    }
}

/// Events are handed to the worker in chunks of this many (or, the engine's, in buffers
/// of about this many in all).
const CHUNK: usize = 4096;

/// At most this many chunks' worth wait for the worker (about 128 MB of events): half of
/// them held by the worker ([`HOLD_AT_MOST`]), half in the channel to it. Past it the
/// emitting thread waits, so nothing is lost and memory stays bounded.
const MAX_CHUNKS: usize = 256;

/// While a run goes on, the worker holds up to this many chunks' worth of events (a
/// year's backtest makes about 115) before it turns the oldest into spans, and each for
/// at most [`HOLD_FOR`].
/// Building spans competes with the run for the two CPUs: with the worker turning chunks
/// into spans as they came, the year with Prometheus and an OTLP-JSON file took 1.06-1.65x
/// (median 1.35x) the run with tracking alone, and 1.03-1.17x (median 1.10x) holding them
/// (8 interleaved pairs of processes, 9 pairs of runs each); the spans are written in the
/// same time after the run, and the run's hooks are timed without the export's work
/// beside them.
const HOLD_AT_MOST: usize = MAX_CHUNKS / 2;
/// A chunk held this long is turned into spans even while the run goes on, so a
/// long-lived process exports its spans within about a second of a chunk filling (the
/// OpenTelemetry SDK's batch processor waits up to 5 s).
const HOLD_FOR: Duration = Duration::from_secs(1);

/// Within this long of the last chunk, the worker looks for the next one every
/// [`POLL_EVERY`] instead of waiting for it to be handed over: handing a chunk to a
/// waiting thread wakes it from the run's thread, a system call (and, on a virtual
/// machine, an interrupt to the other CPU), 114 times in a year's backtest. Polling, the
/// year with Prometheus and an OTLP-JSON file took a median of 39.0 ms against 41.3 ms
/// (8 interleaved pairs of processes, 15 runs each; faster in 7 of the 8), though in
/// `backtest-perf bench` the two stayed within each other's spread (35.9-36.7 against
/// 35.7-37.9 ms, 3 interleaved runs each). Past it, with no chunk coming, the worker
/// waits again, so an idle export costs no CPU.
const POLL_WHILE: Duration = Duration::from_millis(50);
const POLL_EVERY: Duration = Duration::from_micros(500);

/// The chunks the worker holds, oldest first, with when each came.
struct Held {
    chunks: std::collections::VecDeque<(Instant, Vec<PerformanceContract>)>,
    /// Events in `chunks`, and how many may be held while the run goes on.
    events: usize,
    limit: usize,
}

impl Held {
    fn new(limit: usize) -> Self {
        Held {
            chunks: std::collections::VecDeque::new(),
            events: 0,
            limit,
        }
    }

    fn push(&mut self, at: Instant, chunk: Vec<PerformanceContract>) {
        self.events += chunk.len();
        self.chunks.push_back((at, chunk));
    }

    /// The oldest chunk if it is due at `now`: more than [`HOLD_AT_MOST`] are held, it was
    /// held [`HOLD_FOR`], or the run `ended` (then every chunk is due).
    fn pop_due(&mut self, now: Instant, ended: bool) -> Option<Vec<PerformanceContract>> {
        let (since, _) = self.chunks.front()?;
        let due =
            ended || self.events > self.limit || now.saturating_duration_since(*since) >= HOLD_FOR;
        if !due {
            return None;
        }
        let (_, chunk) = self.chunks.pop_front()?;
        self.events -= chunk.len();
        Some(chunk)
    }

    /// How long to wait at `now` for the next chunk before the oldest held one is due;
    /// `None`: none is held, wait for the next chunk however long.
    fn patience(&self, now: Instant) -> Option<Duration> {
        let (since, _) = self.chunks.front()?;
        Some(HOLD_FOR.saturating_sub(now.saturating_duration_since(*since)))
    }
}

/// Spare chunks the worker keeps ready at first (8 MB of events: a year's backtest fills
/// a chunk every 0.2 ms, about as fast as the worker readies one), and at most.
const SPARES_AT_FIRST: usize = 16;
const MAX_SPARES: usize = 32;
/// Events the worker turns into spans between two looks at the spare chunks.
const BETWEEN_TOP_UPS: usize = 256;

/// Emptied chunks whose pages are already touched, for the intake to fill, and the
/// engine's buffers handed back, for its next batches. A chunk of new
/// memory costs the thread that first writes it a page fault per 4 KiB (128 for a chunk,
/// about 190 µs on a virtual machine: 47 ns an event, as much as the run's own work): the
/// worker pays them instead, on its own thread.
///
/// The worker also copies each chunk it is handed as it comes, holds the copy, and hands
/// the chunk back: the intake, taking the chunk handed back last, then fills memory that
/// is still in the caches, where filling a chunk that was only faulted in wrote 0.5 MB
/// to main memory from the run's thread. The year with Prometheus and an OTLP-JSON file:
/// 36.3-37.8 ms against 40.3-41.3 ms holding the chunks themselves (4 interleaved runs
/// of `backtest-perf bench` each, on an Intel Xeon host); the copy is the worker's. The
/// engine's buffers, kept by the intake without a copy, come back the same way.
#[derive(Default)]
struct Spares {
    chunks: Mutex<Vec<Vec<PerformanceContract>>>,
    /// Emptied buffers of other sizes (the engine's, which the intake keeps in
    /// `Keeping::keep_buffer`).
    buffers: Mutex<Vec<Vec<PerformanceContract>>>,
    /// How many the worker keeps ready: raised each time the intake found none.
    wanted: std::sync::atomic::AtomicUsize,
}

impl Spares {
    /// A ready chunk, or a new one (its pages faulted in as it fills) when none is.
    fn take(&self) -> Vec<PerformanceContract> {
        if let Some(chunk) = self.chunks.lock().pop() {
            return chunk;
        }
        self.wanted.store(
            (self.wanted() * 2).min(MAX_SPARES),
            std::sync::atomic::Ordering::Relaxed,
        );
        Vec::with_capacity(CHUNK)
    }

    /// A buffer of at least `capacity` events for the engine: one of its own that the
    /// worker handed back, or else a new one (its pages faulted in as the engine fills
    /// it: the first few batches of a run).
    fn take_buffer(&self, capacity: usize) -> Vec<PerformanceContract> {
        let mut buffers = self.buffers.lock();
        if let Some(i) = buffers.iter().rposition(|b| b.capacity() >= capacity) {
            return buffers.swap_remove(i);
        }
        Vec::with_capacity(capacity)
    }

    fn wanted(&self) -> usize {
        self.wanted
            .load(std::sync::atomic::Ordering::Relaxed)
            .clamp(SPARES_AT_FIRST, MAX_SPARES)
    }

    /// An empty chunk whose pages are faulted in (by the calling thread).
    fn touched() -> Vec<PerformanceContract> {
        let mut chunk = Vec::with_capacity(CHUNK);
        crate::tracker::memory::touch_spare(&mut chunk);
        chunk
    }

    /// On the worker: makes ready chunks until as many as wanted are.
    fn top_up(&self) {
        while self.chunks.lock().len() < self.wanted() {
            let chunk = Spares::touched();
            self.chunks.lock().push(chunk);
        }
    }

    /// On the worker: keeps a chunk it emptied if fewer than wanted are ready.
    fn recycle(&self, mut chunk: Vec<PerformanceContract>) {
        if chunk.capacity() != CHUNK {
            let mut buffers = self.buffers.lock();
            if chunk.capacity() > 0 && buffers.len() < MAX_SPARES {
                chunk.clear();
                buffers.push(chunk);
            }
            return;
        }
        chunk.clear();
        let mut chunks = self.chunks.lock();
        if chunks.len() < self.wanted() {
            chunks.push(chunk);
        }
    }
}

/// The emitting side: a sink that copies events into a chunk under one lock per batch
/// and hands full chunks to the worker thread, so the run pays a copy per event, not a
/// queue hand-over. The engine's batches, as the bus's last subscriber, it takes in their
/// own buffers instead (see [`Keeping`](crate::emitter::Keeping)).
struct Intake {
    taken: Mutex<Taken>,
    to_worker: std::sync::mpsc::SyncSender<Chunk>,
    spares: Arc<Spares>,
}

/// What the intake holds until it hands it over: events copied into a chunk, or whole
/// buffers kept. At most one of the two holds events at a time (each is handed over
/// before the other takes any), so the worker gets them in the order they came.
struct Taken {
    chunk: Vec<PerformanceContract>,
    buffers: Vec<Vec<PerformanceContract>>,
    /// Events in `buffers`.
    buffered: usize,
}

/// Engine batches of fewer events are copied, not kept: a kept buffer holds its whole
/// capacity (the engine's: 1,088 events) until the worker copies it, so a run of short
/// batches (many short backtests) would otherwise hold hundreds of megabytes of mostly
/// empty buffers before a chunk's worth of events came together. From this many, the
/// intake holds at most 16 buffers.
const KEPT_FROM: usize = 256;

/// What the worker thread is handed.
enum Chunk {
    Events(Vec<PerformanceContract>),
    /// The engine's buffers, in order, about a chunk's worth of events in all.
    Buffers(Vec<Vec<PerformanceContract>>),
    /// Everything was handed over: finish and return the report.
    End,
}

impl Intake {
    fn new(to_worker: std::sync::mpsc::SyncSender<Chunk>, spares: Arc<Spares>) -> Self {
        Intake {
            taken: Mutex::new(Taken {
                chunk: Spares::touched(),
                buffers: Vec::new(),
                buffered: 0,
            }),
            to_worker,
            spares,
        }
    }

    // The worker lives as long as the export: a send fails only after finish.
    fn send(&self, chunk: Chunk) {
        let _ = self.to_worker.send(chunk);
    }

    /// Hands over the chunk if it is full.
    fn hand_over_full(&self, taken: &mut Taken) {
        if taken.chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut taken.chunk, self.spares.take());
            self.send(Chunk::Events(full));
        }
    }

    /// Hands over the kept buffers, if any.
    fn hand_over_buffers(&self, taken: &mut Taken) {
        if !taken.buffers.is_empty() {
            taken.buffered = 0;
            self.send(Chunk::Buffers(std::mem::take(&mut taken.buffers)));
        }
    }

    /// Copies `events` into chunks, after the kept buffers. Fills chunks to their
    /// capacity and no further: a chunk grown past it would move into new memory,
    /// faulting in its pages on the emitting thread.
    fn copy_in(&self, taken: &mut Taken, mut events: &[PerformanceContract]) {
        self.hand_over_buffers(taken);
        while !events.is_empty() {
            let room = CHUNK.saturating_sub(taken.chunk.len()).min(events.len());
            let (now, later) = events.split_at(room);
            taken.chunk.extend_from_slice(now);
            events = later;
            self.hand_over_full(taken);
        }
    }

    /// Hands over what is left, then the end.
    fn end(&self) {
        let mut taken = self.taken.lock();
        self.hand_over_buffers(&mut taken);
        let rest = std::mem::take(&mut taken.chunk);
        if !rest.is_empty() {
            self.send(Chunk::Events(rest));
        }
        self.send(Chunk::End);
    }

    /// Frees the ready chunks and buffers, once the worker is gone. A thread that emitted
    /// on the bus keeps its copy of the subscriber list, this intake in it, until it
    /// emits again: without this, that thread's next emit (the next run's first batch)
    /// freed up to 16 MB of chunks, 4 ms of `munmap` inside the run.
    fn release(&self) {
        drop(std::mem::take(&mut *self.spares.chunks.lock()));
        drop(std::mem::take(&mut *self.spares.buffers.lock()));
    }
}

impl crate::emitter::Keeping for Intake {
    /// Keeps the buffer itself, handed over with the next ones once they hold a chunk's
    /// worth of events, and leaves a buffer the worker handed back in its place. A batch
    /// of fewer than [`KEPT_FROM`] events is copied instead, and the buffer stays.
    fn keep_buffer(&self, events: &mut Vec<PerformanceContract>) {
        let mut taken = self.taken.lock();
        if events.len() < KEPT_FROM {
            self.copy_in(&mut taken, events);
            events.clear();
            return;
        }
        if !taken.chunk.is_empty() {
            let earlier = std::mem::replace(&mut taken.chunk, self.spares.take());
            self.send(Chunk::Events(earlier));
        }
        let ready = self.spares.take_buffer(events.capacity());
        let kept = std::mem::replace(events, ready);
        taken.buffered += kept.len();
        taken.buffers.push(kept);
        if taken.buffered >= CHUNK {
            self.hand_over_buffers(&mut taken);
        }
    }
}

impl crate::Sink for Intake {
    fn on_event(&self, event: &PerformanceContract) {
        let mut taken = self.taken.lock();
        self.hand_over_buffers(&mut taken);
        taken.chunk.push(*event);
        self.hand_over_full(&mut taken);
    }

    fn on_batch(&self, events: &[PerformanceContract]) {
        self.copy_in(&mut self.taken.lock(), events);
    }
}

/// Where the spans go: built with [`SpanExport::to`], started with [`SpanExport::listen`],
/// ended with [`SpanExport::finish`].
///
/// Events are copied on the emitting thread into chunks of 4,096 and turned into spans
/// and exported on a thread of the export's own; at most 256 chunks wait for it (past
/// that the emitting thread waits, so no span is lost). The engine's batches are not
/// copied: while the export is the bus's last subscriber, it takes the engine's buffers
/// themselves, after the other subscribers, and hands the engine one back in exchange.
/// While the run goes on, that thread holds up to 128 chunks' worth, each for at most a
/// second, before it builds their spans, so that its work does not compete with the run
/// for the CPUs; [`finish`] exports everything. It also keeps empty chunks ready, their
/// memory already faulted in and, once the first chunks came back, still in the caches,
/// so that the run's thread only copies.
///
/// [`finish`]: SpanExport::finish
///
/// ```
/// use backtest_perf::export::otel::{Sampler, SpanCollector, SpanExport};
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
///
/// let memory = SpanCollector::default();
/// let bus = PerformanceEmitter::new();
/// let export = SpanExport::new(Thresholds::default(), Sampler::default())
///     .to("memory", memory.clone())
///     .listen(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 0.2, 1.7e12).with_id(7)).unwrap();
/// let report = export.finish();
/// assert_eq!((report.spans, report.traces), (1, 1));
/// assert_eq!(memory.spans()[0].name, "tick");
/// ```
pub struct SpanExport {
    worker: Option<Worker>,
    running: Option<Running>,
    resource: Resource,
}

struct Running {
    bus: PerformanceEmitter,
    sink: crate::emitter::SubscriberId,
    intake: Arc<Intake>,
    thread: std::thread::JoinHandle<SpanExportReport>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport")
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl SpanExport {
    /// An export judging slowness by `thresholds`, keeping traces by `sampler`.
    pub fn new(thresholds: Thresholds, sampler: Sampler) -> Self {
        SpanExport {
            worker: Some(Worker {
                trees: SpanTrees::new(thresholds, sampler),
                batch: Vec::with_capacity(BATCH),
                destinations: Vec::new(),
            }),
            running: None,
            resource: resource(),
        }
    }

    /// Spans carry these default labels in their resource (call before
    /// [`to`](Self::to)).
    pub fn with_labels(mut self, labels: &crate::export::labels::DefaultLabels) -> Self {
        self.resource = resource_for(labels);
        self
    }

    /// Adds a destination, named in failure messages: any OpenTelemetry SDK span
    /// exporter. It gets [`resource`] first. Destinations added after
    /// [`listen`](Self::listen) are ignored.
    pub fn to<E: SpanExporter + Send + 'static>(
        mut self,
        name: impl Into<String>,
        mut exporter: E,
    ) -> Self {
        exporter.set_resource(&self.resource);
        if let Some(worker) = &mut self.worker {
            worker.destinations.push(Destination {
                name: name.into(),
                exporter: Box::new(Delivering(exporter)),
                failed: None,
                lost: 0,
            });
        }
        self
    }

    /// Starts taking `bus`'s events (from now on) on the worker thread. If the thread
    /// cannot be started, nothing is subscribed and [`finish`](Self::finish) reports it.
    pub fn listen(mut self, bus: &PerformanceEmitter) -> Self {
        let Some(mut worker) = self.worker.take() else {
            return self;
        };
        let (to_worker, chunks) = std::sync::mpsc::sync_channel::<Chunk>(MAX_CHUNKS - HOLD_AT_MOST);
        let spares = Arc::new(Spares::default());
        let ready = spares.clone();
        let spawned = std::thread::Builder::new()
            .name("backtest-perf-spans".into())
            .spawn(move || {
                // Ready chunks first: while the run fills them, spans can wait.
                ready.top_up();
                let mut held = Held::new(HOLD_AT_MOST * CHUNK);
                let mut ended = false;
                let mut last_chunk: Option<Instant> = None;
                while !ended {
                    let now = Instant::now();
                    let polling =
                        last_chunk.is_some_and(|at| now.saturating_duration_since(at) < POLL_WHILE);
                    // The next chunk: looked for while chunks are coming (see
                    // POLL_WHILE), otherwise waited for until the oldest held one is due.
                    let next = if polling {
                        match chunks.try_recv() {
                            Ok(chunk) => Ok(chunk),
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                std::thread::sleep(POLL_EVERY);
                                Err(RecvTimeoutError::Timeout)
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                Err(RecvTimeoutError::Disconnected)
                            }
                        }
                    } else {
                        match held.patience(now) {
                            Some(patience) => chunks.recv_timeout(patience),
                            None => chunks.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        }
                    };
                    if matches!(next, Ok(Chunk::Events(_) | Chunk::Buffers(_))) {
                        last_chunk = Some(Instant::now());
                    }
                    match next {
                        // Held as a copy, the chunk handed back at once (see `Spares`).
                        Ok(Chunk::Buffers(buffers)) => {
                            let mut kept = Vec::with_capacity(buffers.iter().map(Vec::len).sum());
                            for events in buffers {
                                kept.extend_from_slice(&events);
                                ready.recycle(events);
                            }
                            held.push(Instant::now(), kept);
                        }
                        Ok(Chunk::Events(events)) => {
                            let kept = events.clone();
                            ready.recycle(events);
                            held.push(Instant::now(), kept);
                        }
                        Ok(Chunk::End) | Err(RecvTimeoutError::Disconnected) => ended = true,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    // The intake took a spare for the chunk it handed over.
                    ready.top_up();
                    while let Some(events) = held.pop_due(Instant::now(), ended) {
                        for part in events.chunks(BETWEEN_TOP_UPS) {
                            worker.take(part);
                            ready.top_up();
                        }
                        ready.recycle(events);
                    }
                }
                worker.finish()
            });
        let Ok(thread) = spawned else {
            return self;
        };
        let intake = Arc::new(Intake::new(to_worker, spares));
        let sink = bus.add_keeping(intake.clone(), intake.clone());
        self.running = Some(Running {
            bus: bus.clone(),
            sink,
            intake,
            thread,
        });
        self
    }

    /// Stops taking events, waits until every event taken became a span and was
    /// exported (orphans included), shuts the destinations down, and says what became of
    /// the spans.
    pub fn finish(mut self) -> SpanExportReport {
        let Some(running) = self.running.take() else {
            let mut report = SpanExportReport::default();
            if self.worker.is_some() {
                report
                    .failures
                    .push("the span export was never started (or its thread could not be)".into());
            }
            return report;
        };
        running.bus.remove(running.sink);
        running.intake.end();
        let report = running.thread.join().unwrap_or_else(|_| SpanExportReport {
            failures: vec!["the span export's thread panicked; spans were lost".into()],
            ..SpanExportReport::default()
        });
        running.intake.release();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(metric: MetricType, id: u64, parent: Option<u64>) -> PerformanceContract {
        let e = PerformanceContract::new(metric, 0.001, 1.7e12).with_id(id);
        match parent {
            Some(p) => e.with_parent(p),
            None => e,
        }
    }

    #[test]
    fn a_tick_roots_the_trace_of_everything_below_it() {
        let mut trees = SpanTrees::new(Thresholds::default(), Sampler::default());
        let mut out = Vec::new();
        trees.push(&event(MetricType::GetCandles, 3, Some(2)), &mut out);
        trees.push(&event(MetricType::GetSignal, 2, Some(1)), &mut out);
        trees.push(&event(MetricType::Backtest, 4, Some(1)), &mut out);
        assert!(out.is_empty());
        trees.push(&event(MetricType::Tick, 1, Some(99)), &mut out);
        let by_name = |name: &str| out.iter().find(|s| s.name == name).unwrap();
        let trace = by_name("tick").span_context.trace_id();
        assert!(out.iter().all(|s| s.span_context.trace_id() == trace));
        assert_eq!(by_name("tick").parent_span_id, SpanId::INVALID);
        assert_eq!(
            by_name("tick").links.links[0].span_context.span_id(),
            SpanId::from(99u64)
        );
        assert_eq!(by_name("getCandles").parent_span_id, SpanId::from(2u64));
        assert_eq!(by_name("backtest").parent_span_id, SpanId::from(1u64));
        assert_eq!(trees.report().traces, 1);
        assert_eq!(trees.report().spans, 4);
        assert_eq!(trees.waiting_spans, 0);
    }

    #[test]
    fn spans_whose_parent_never_comes_are_orphans_of_one_trace() {
        let mut trees = SpanTrees::new(Thresholds::default(), Sampler::default());
        let mut out = Vec::new();
        trees.push(&event(MetricType::GetCandles, 3, Some(2)), &mut out);
        trees.push(&event(MetricType::GetAveragePrice, 4, Some(2)), &mut out);
        trees.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].span_context.trace_id(),
            out[1].span_context.trace_id()
        );
        assert_eq!(out[0].parent_span_id, SpanId::from(2u64));
        assert_eq!(trees.report().orphans, 2);
    }

    #[test]
    fn waiting_is_bounded() {
        let mut trees = SpanTrees::new(Thresholds::default(), Sampler::default());
        let mut out = Vec::new();
        for id in 1..=(MAX_WAITING as u64 + 1) {
            trees.push(
                &event(MetricType::GetCandles, id + 1_000_000, Some(id)),
                &mut out,
            );
        }
        assert_eq!(out.len(), MAX_WAITING + 1);
        assert_eq!(trees.waiting_spans, 0);
        assert!(trees.waiting.is_empty());
    }

    #[test]
    fn the_sampler_keeps_its_ratio_and_every_slow_or_failed_trace() {
        let mut trees = SpanTrees::new(Thresholds::default(), Sampler::ratio(0.1).unwrap());
        let mut out = Vec::new();
        for id in 1..=10_000 {
            trees.push(&event(MetricType::Tick, id, None), &mut out);
        }
        let kept = out.len();
        assert!((800..=1200).contains(&kept), "kept {kept} of 10,000");
        assert_eq!(trees.report().traces_sampled_out, 10_000 - kept as u64);
        let none = Sampler::ratio(0.0).unwrap();
        let mut trees = SpanTrees::new(Thresholds::default(), none);
        let mut out = Vec::new();
        trees.push(&event(MetricType::Tick, 1, None), &mut out);
        trees.push(&event(MetricType::Tick, 2, None).with_ok(false), &mut out);
        trees.push(
            &PerformanceContract::new(MetricType::Tick, 500.0, 1.7e12).with_id(3),
            &mut out,
        );
        let ids: Vec<SpanId> = out.iter().map(|s| s.span_context.span_id()).collect();
        assert_eq!(ids, [SpanId::from(2u64), SpanId::from(3u64)]);
        assert_eq!(
            out[0].status,
            Status::error("the operation failed (ok: false)")
        );
    }

    #[test]
    fn epoch_milliseconds_keep_their_nanoseconds() {
        assert_eq!(
            epoch_ms(1_700_000_000_000.25),
            Duration::from_nanos(1_700_000_000_000_250_000)
        );
        assert_eq!(epoch_ms(f64::NAN), Duration::ZERO);
        assert_eq!(epoch_ms(-5.0), Duration::ZERO);
    }

    #[test]
    fn the_intake_hands_over_full_chunks_that_never_grew() {
        let (to_worker, chunks) = std::sync::mpsc::sync_channel::<Chunk>(MAX_CHUNKS);
        let spares = Arc::new(Spares::default());
        let intake = Intake::new(to_worker, spares.clone());
        // Batches of the engine's size do not divide a chunk: 1,088 x 10 = 10,880 events.
        let batch: Vec<_> = (1..=1088u64)
            .map(|id| event(MetricType::Tick, id, None))
            .collect();
        for _ in 0..10 {
            crate::Sink::on_batch(&intake, &batch);
        }
        intake.end();
        let mut sizes = Vec::new();
        while let Ok(Chunk::Events(events)) = chunks.recv() {
            sizes.push((events.len(), events.capacity()));
        }
        assert_eq!(sizes, [(4096, 4096), (4096, 4096), (2688, 4096)]);
        // No chunk was ready for either hand-over: the worker is asked for twice as
        // many each time.
        assert_eq!(spares.wanted(), (4 * SPARES_AT_FIRST).min(MAX_SPARES));
    }

    #[test]
    fn held_chunks_are_due_past_the_limit_after_a_second_or_at_the_end() {
        let t0 = Instant::now();
        let chunk = |id| vec![event(MetricType::Tick, id, None)];
        let first_id = |c: Option<Vec<PerformanceContract>>| c.and_then(|c| c[0].id);
        // Past 8 events held (chunks of one here), the oldest is due.
        let mut held = Held::new(8);
        assert_eq!(held.patience(t0), None, "nothing held: wait for a chunk");
        held.push(t0, chunk(1));
        held.push(t0 + Duration::from_millis(300), chunk(2));
        assert_eq!(
            held.patience(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            first_id(held.pop_due(t0 + Duration::from_millis(999), false)),
            None
        );
        // The oldest is due a second after it came; the next one 300 ms later.
        assert_eq!(first_id(held.pop_due(t0 + HOLD_FOR, false)), Some(1));
        assert_eq!(first_id(held.pop_due(t0 + HOLD_FOR, false)), None);
        assert_eq!(
            held.patience(t0 + HOLD_FOR),
            Some(Duration::from_millis(300))
        );
        assert_eq!(held.patience(t0 + 2 * HOLD_FOR), Some(Duration::ZERO));
        // Past the limit, the oldest is due at once, one at a time.
        for id in 3..=10 {
            held.push(t0 + Duration::from_millis(500), chunk(id));
        }
        assert_eq!((held.chunks.len(), held.events), (9, 9));
        assert_eq!(first_id(held.pop_due(t0, false)), Some(2));
        assert_eq!(first_id(held.pop_due(t0, false)), None);
        // At the end every chunk is due, oldest first.
        let ids: Vec<_> = std::iter::from_fn(|| first_id(held.pop_due(t0, true))).collect();
        assert_eq!(ids, (3..=10).collect::<Vec<_>>());
        assert_eq!(held.events, 0);
    }

    #[test]
    fn finishing_frees_the_ready_chunks_that_a_thread_may_still_hold_the_intake_by() {
        let bus = PerformanceEmitter::new();
        let export = SpanExport::new(Thresholds::default(), Sampler::default())
            .to("memory", crate::export::otel::SpanCollector::default())
            .listen(&bus);
        // What a thread's copy of the subscriber list holds until it emits again.
        let intake = Arc::clone(&export.running.as_ref().expect("listening").intake);
        let mut batch: Vec<_> = (1..=CHUNK as u64 * 3)
            .map(|id| event(MetricType::Tick, id, None))
            .collect();
        bus.emit_batch(&mut batch);
        // The worker made chunks ready for the intake (its first top-up, at the least).
        let report = export.finish();
        assert_eq!(report.spans, CHUNK as u64 * 3);
        assert_eq!(intake.spares.chunks.lock().len(), 0);
        assert_eq!(intake.taken.lock().chunk.capacity(), 0);
    }

    #[test]
    fn the_intake_keeps_the_engines_buffers_in_order_with_the_events_it_copies() {
        use crate::emitter::Keeping;
        let (to_worker, chunks) = std::sync::mpsc::sync_channel::<Chunk>(MAX_CHUNKS);
        let spares = Arc::new(Spares::default());
        let intake = Intake::new(to_worker, spares.clone());
        let events = |ids: std::ops::RangeInclusive<u64>| -> Vec<PerformanceContract> {
            let mut buffer = Vec::with_capacity(1_088);
            buffer.extend(ids.map(|id| event(MetricType::Tick, id, None)));
            buffer
        };
        // Copied, kept (four buffers: 4,096 events, handed over together), kept, copied.
        crate::Sink::on_batch(&intake, &events(1..=10));
        let mut kept = Vec::new();
        for i in 0..5 {
            let mut buffer = events(11 + i * 1_024..=10 + (i + 1) * 1_024);
            kept.push(buffer.as_ptr());
            intake.keep_buffer(&mut buffer);
            assert!(
                buffer.is_empty() && buffer.capacity() >= 1_088,
                "buffer {i}"
            );
        }
        crate::Sink::on_event(&intake, &event(MetricType::Tick, 5_131, None));
        // A short batch is copied, and the caller keeps its buffer.
        let mut short = events(5_132..=5_141);
        let own = short.as_ptr();
        intake.keep_buffer(&mut short);
        assert_eq!((short.as_ptr(), short.len()), (own, 0));
        intake.end();
        let mut ids = Vec::new();
        let mut handed = Vec::new();
        loop {
            match chunks.recv() {
                Ok(Chunk::Events(events)) => {
                    handed.push(format!("events {}", events.len()));
                    ids.extend(events.iter().filter_map(|e| e.id));
                }
                Ok(Chunk::Buffers(buffers)) => {
                    handed.push(format!("buffers {}", buffers.len()));
                    for buffer in buffers {
                        assert!(kept.contains(&buffer.as_ptr()), "the buffer itself");
                        ids.extend(buffer.iter().filter_map(|e| e.id));
                    }
                }
                Ok(Chunk::End) | Err(_) => break,
            }
        }
        assert_eq!(handed, ["events 10", "buffers 4", "buffers 1", "events 11"]);
        assert_eq!(ids, (1..=5_141).collect::<Vec<_>>());
    }

    #[test]
    fn a_measured_run_goes_to_the_export_in_the_engines_own_buffers() {
        let bus = PerformanceEmitter::new();
        let memory = crate::export::otel::SpanCollector::default();
        let export = SpanExport::new(Thresholds::default(), Sampler::default())
            .to("memory", memory.clone())
            .listen(&bus);
        let intake = Arc::clone(&export.running.as_ref().expect("listening").intake);
        // Six batches of 512 tick trees each: a tick and its getSignal.
        let mut buffer = Vec::with_capacity(1_088);
        let mut seen = Vec::new();
        for batch in 0..6u64 {
            seen.push(buffer.as_ptr());
            for i in 0..512 {
                let tick = batch * 1_024 + 2 * i + 1;
                buffer.push(event(MetricType::GetSignal, tick + 1, Some(tick)));
                buffer.push(event(MetricType::Tick, tick, None));
            }
            assert_eq!(bus.emit_measured_batch(&mut buffer), 1_024);
            assert!(buffer.is_empty() && buffer.capacity() >= 1_088);
        }
        // Kept, not copied: the intake holds the last two buffers (the first four went to
        // the worker together), and the caller got another each time.
        let last: Vec<_> = intake
            .taken
            .lock()
            .buffers
            .iter()
            .map(Vec::as_ptr)
            .collect();
        assert_eq!(last, seen[4..]);
        let report = export.finish();
        assert_eq!((report.spans, report.traces), (6 * 1_024, 6 * 512));
        assert_eq!(memory.spans().len(), 6 * 1_024);
        assert_eq!(intake.spares.buffers.lock().len(), 0, "freed at finish");
    }

    #[test]
    fn the_engines_buffers_are_handed_back_for_its_next_batches_up_to_a_bound() {
        let spares = Spares::default();
        let buffer = |capacity| {
            let mut buffer = Vec::with_capacity(capacity);
            buffer.push(event(MetricType::Tick, 1, None));
            buffer
        };
        let small = buffer(100);
        let engine = buffer(1_088);
        let (small_at, engine_at) = (small.as_ptr(), engine.as_ptr());
        spares.recycle(small);
        spares.recycle(engine);
        // One big enough, emptied; none left: a new one of that capacity.
        let back = spares.take_buffer(1_088);
        assert_eq!((back.as_ptr(), back.len()), (engine_at, 0));
        assert!(spares.take_buffer(1_088).capacity() >= 1_088);
        let small = spares.take_buffer(50);
        assert_eq!(small.as_ptr(), small_at);
        // Bounded, as ready chunks are; chunks themselves stay apart.
        for _ in 0..MAX_SPARES + 5 {
            spares.recycle(buffer(1_088));
        }
        assert_eq!(spares.buffers.lock().len(), MAX_SPARES);
        assert!(spares.chunks.lock().is_empty());
    }

    #[test]
    fn spare_chunks_are_made_ready_and_recycled_up_to_what_is_wanted() {
        let spares = Spares::default();
        spares.top_up();
        assert_eq!(spares.chunks.lock().len(), SPARES_AT_FIRST);
        for _ in 0..SPARES_AT_FIRST {
            assert_eq!(spares.take().capacity(), CHUNK);
        }
        // None ready: a new chunk, and twice as many wanted (at most MAX_SPARES).
        assert!(spares.take().capacity() >= CHUNK);
        assert_eq!(spares.wanted(), (2 * SPARES_AT_FIRST).min(MAX_SPARES));
        for _ in 0..10 {
            let _ = spares.take();
        }
        assert_eq!(spares.wanted(), MAX_SPARES);
        let mut used = Vec::with_capacity(CHUNK);
        used.push(event(MetricType::Tick, 1, None));
        spares.recycle(used);
        spares.recycle(Vec::with_capacity(CHUNK + 1));
        let ready = spares.chunks.lock();
        assert_eq!(ready.len(), 1, "a chunk of another size is dropped");
        assert!(ready[0].is_empty());
    }
}
