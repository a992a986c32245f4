//! Prometheus (feature `prometheus`): the whole run's operation durations as histograms
//! in seconds, with counters of slow, failed, rejected and dropped events and process
//! gauges, in the Prometheus text exposition format written by
//! [`metrics_exporter_prometheus`]. Served on `/metrics` while a run goes on, and written
//! as a textfile for the node_exporter textfile collector or a Pushgateway.
//!
//! Nothing is measured or aggregated here: every scrape renders the storage's whole-run
//! aggregates (their histograms re-binned into [`BUCKETS_SECONDS`], which resolve hooks
//! from 25 ns), so exporting costs the run nothing per event, the series are exactly the
//! storage's keys (bounded by its cap, gone with `clear`), and the numbers are the
//! reports'.
//!
//! ```
//! use backtest_perf::export::prometheus::PrometheusExporter;
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
//!
//! let bus = PerformanceEmitter::new();
//! let service = PerformanceService::attached(&bus);
//! use backtest_perf::export::labels::DefaultLabels;
//! let labels = DefaultLabels::default().with(Some("bt".into()), None);
//! let exporter = PrometheusExporter::new(Default::default(), service.storage().clone()).with_labels(&labels);
//! bus.emit(PerformanceContract::new(MetricType::Tick, 0.0002, 1.0).with_symbol("BTCUSDT").with_strategy("sma")).unwrap();
//! let text = exporter.render();
//! let v = env!("CARGO_PKG_VERSION");
//! assert!(text.contains(&format!(r#"backtest_perf_operation_duration_seconds_count{{service="bt",version="{v}",metric_type="tick",symbol="BTCUSDT",strategy="sma"}} 1"#)));
//! assert!(text.contains(&format!(r#"backtest_perf_operation_duration_seconds_bucket{{service="bt",version="{v}",metric_type="tick",symbol="BTCUSDT",strategy="sma",le="0.0000004"}} 1"#)));
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::storage::StorageService;
use crate::thresholds::Thresholds;
use crate::tracker::ResourceSnapshot;

/// Histogram bucket bounds, seconds: 25 ns doubling up to about 13 s (30 buckets), so
/// the engine's sub-microsecond hooks and a multi-second backtest both land in buckets of
/// their own.
///
/// ```
/// use backtest_perf::export::prometheus::BUCKETS_SECONDS;
/// assert_eq!(BUCKETS_SECONDS[0], 25e-9);
/// assert_eq!(BUCKETS_SECONDS.len(), 30);
/// ```
pub const BUCKETS_SECONDS: [f64; 30] = {
    let mut b = [0.0; 30];
    let mut i = 0;
    let mut bound = 25e-9;
    while i < 30 {
        b[i] = bound;
        bound *= 2.0;
        i += 1;
    }
    b
};

const DURATION: &str = "backtest_perf_operation_duration_seconds";

/// Renders the storage's whole-run statistics for Prometheus; see the [module
/// documentation](self).
///
/// ```
/// use backtest_perf::export::prometheus::PrometheusExporter;
/// use backtest_perf::{StorageConfig, StorageService};
/// let exporter = PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default()));
/// assert!(exporter.render().contains("backtest_perf_process_resident_memory_bytes"));
/// ```
pub struct PrometheusExporter {
    thresholds: Thresholds,
    storage: Arc<StorageService>,
    labels: Vec<(&'static str, String)>,
    bus: Option<crate::PerformanceEmitter>,
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusExporter").finish_non_exhaustive()
    }
}

impl PrometheusExporter {
    /// An exporter of `storage`'s statistics, judging slowness by `thresholds`.
    ///
    /// ```
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::thresholds::Thresholds;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let _exporter = PrometheusExporter::new(Thresholds::new(10.0).unwrap(), StorageService::new(StorageConfig::default()));
    /// ```
    pub fn new(thresholds: Thresholds, storage: Arc<StorageService>) -> Self {
        PrometheusExporter {
            thresholds,
            storage,
            labels: crate::export::labels::DefaultLabels::from_env().as_pairs(),
            bus: None,
        }
    }

    /// The same exporter with `bus`'s deepest listener queue as the gauge
    /// `backtest_perf_listener_queue_depth`.
    pub fn with_queue_depth_of(mut self, bus: &crate::PerformanceEmitter) -> Self {
        self.bus = Some(bus.clone());
        self
    }

    /// The same exporter with these default labels on every series (by default
    /// [`DefaultLabels::from_env`](crate::export::labels::DefaultLabels::from_env)).
    ///
    /// ```
    /// use backtest_perf::export::labels::DefaultLabels;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0)).unwrap();
    /// let labels = DefaultLabels::default().with(Some("bt".into()), Some("ci".into()));
    /// let text = PrometheusExporter::new(Default::default(), service.storage().clone()).with_labels(&labels).render();
    /// assert!(text.contains(r#"environment="ci""#) && text.contains(r#"service="bt""#), "{text}");
    /// ```
    pub fn with_labels(mut self, labels: &crate::export::labels::DefaultLabels) -> Self {
        self.labels = labels.as_pairs();
        self
    }

    /// The exposition text now (Prometheus text format 0.0.4).
    ///
    /// ```
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let exporter = PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default()));
    /// assert!(!exporter.render().contains("backtest_perf_operation_duration_seconds_count"), "no series yet");
    /// ```
    pub fn render(&self) -> String {
        // Bounds are constants and never empty: this cannot fail.
        let Ok(mut builder) = PrometheusBuilder::new().set_buckets(&BUCKETS_SECONDS) else {
            return String::new();
        };
        for (key, value) in &self.labels {
            builder = builder.add_global_label(*key, value.clone());
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(
                DURATION,
                Unit::Seconds,
                "Duration of timed operations (hooks and user code), the whole run."
            );
            metrics::describe_counter!(
                "backtest_perf_slow_operations_total",
                "Operations slower than their threshold (counted from the histogram)."
            );
            metrics::describe_counter!(
                "backtest_perf_failed_operations_total",
                "Operations that failed (ok: false)."
            );
            metrics::describe_counter!(
                "backtest_perf_rejected_events_total",
                "Events the bus rejected as invalid."
            );
            metrics::describe_counter!(
                "backtest_perf_dropped_events_total",
                "Events that left the raw-event window (the statistics still count them)."
            );
            for key in self.storage.keys() {
                let (symbol, strategy) = (key.symbol.to_string(), key.strategy.to_string());
                if let Some(counters) = self.storage.counters(key) {
                    let labels = [("symbol", symbol.clone()), ("strategy", strategy.clone())];
                    metrics::counter!("backtest_perf_rejected_events_total", &labels)
                        .absolute(counters.rejected);
                    metrics::counter!("backtest_perf_dropped_events_total", &labels)
                        .absolute(counters.dropped);
                }
                for m in self.storage.aggregates(key).unwrap_or_default() {
                    let labels = [
                        ("metric_type", m.metric.as_str().to_string()),
                        ("symbol", symbol.clone()),
                        ("strategy", strategy.clone()),
                    ];
                    let histogram = metrics::histogram!(DURATION, &labels);
                    let threshold = self.thresholds.threshold_ms(m.metric.as_str());
                    let mut slow = 0u64;
                    for (ms, n) in m.aggregate.buckets() {
                        histogram
                            .record_many(ms / 1000.0, usize::try_from(n).unwrap_or(usize::MAX));
                        if ms > threshold {
                            slow = slow.saturating_add(n);
                        }
                    }
                    metrics::counter!("backtest_perf_slow_operations_total", &labels)
                        .absolute(slow);
                    metrics::counter!("backtest_perf_failed_operations_total", &labels)
                        .absolute(m.aggregate.failures());
                }
            }
            // Named after this program, so a node_exporter reading the textfile keeps its
            // own process_* series.
            let process = ResourceSnapshot::now();
            if let (Some(user), Some(system)) = (process.cpu_user_ms, process.cpu_system_ms) {
                metrics::describe_gauge!(
                    "backtest_perf_process_cpu_seconds",
                    Unit::Seconds,
                    "User and system CPU time of the backtest-perf process."
                );
                metrics::gauge!("backtest_perf_process_cpu_seconds").set((user + system) / 1000.0);
            }
            metrics::describe_gauge!(
                "backtest_perf_process_resident_memory_bytes",
                Unit::Bytes,
                "Resident memory of the backtest-perf process."
            );
            metrics::gauge!("backtest_perf_process_resident_memory_bytes")
                .set(process.rss_bytes.unwrap_or(0) as f64);
            if let Some(threads) = crate::monitor::thread_count() {
                metrics::describe_gauge!(
                    "backtest_perf_process_threads",
                    "Threads of the backtest-perf process."
                );
                metrics::gauge!("backtest_perf_process_threads").set(threads as f64);
            }
            if let Some(bus) = &self.bus {
                metrics::describe_gauge!(
                    "backtest_perf_listener_queue_depth",
                    "Events the deepest listener queue holds, not yet handled."
                );
                let depth = bus.queue_depths().into_iter().max().unwrap_or(0);
                metrics::gauge!("backtest_perf_listener_queue_depth").set(depth as f64);
            }
        });
        handle.render()
    }

    /// Pushes the exposition text to a Pushgateway at `base` (for example
    /// `http://127.0.0.1:9091`), replacing the group `job="<job>"`
    /// (`PUT <base>/metrics/job/<job>`).
    ///
    /// ```
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let exporter = PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default()));
    /// // Nothing listens on port 9 here: the error says where the push went.
    /// let err = exporter.push("http://127.0.0.1:9", "backtest-perf").unwrap_err();
    /// assert!(err.starts_with("PUT http://127.0.0.1:9/metrics/job/backtest-perf failed"), "{err}");
    /// ```
    pub fn push(&self, base: &str, job: &str) -> Result<(), String> {
        let url = format!("{}/metrics/job/{job}", base.trim_end_matches('/'));
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        ureq::Agent::new_with_config(config)
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .send(self.render())
            .map(drop)
            .map_err(|e| format!("PUT {url} failed: {e}"))
    }

    /// Writes the exposition text to `dir/<name>.prom` atomically (for the node_exporter
    /// textfile collector); returns the path.
    ///
    /// ```
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let exporter = PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default()));
    /// let dir = tempfile::tempdir().unwrap();
    /// assert_eq!(exporter.write_textfile(dir.path(), "run").unwrap(), dir.path().join("run.prom"));
    /// ```
    pub fn write_textfile(&self, dir: &Path, name: &str) -> Result<PathBuf, DumpError> {
        write_atomic(
            dir,
            &format!("{}.prom", safe_file_stem(name)),
            &self.render(),
        )
    }

    /// The current whole-run statistics of every key as JSON, in the shape of a `stats`
    /// output (`{"pairs": [...], "evictedKeys": n}`, each pair what `get_data` returns
    /// without its raw events): what `/stats` serves while a run goes on.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::thresholds::Thresholds;
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// let exporter = PrometheusExporter::new(Thresholds::default(), service.storage().clone());
    /// let json: serde_json::Value = serde_json::from_str(&exporter.stats_json()).unwrap();
    /// assert_eq!(json["pairs"][0]["metricStats"]["tick"]["count"], 1);
    /// assert_eq!(json["pairs"][0]["symbol"], "A");
    /// ```
    pub fn stats_json(&self) -> String {
        let pairs: Vec<crate::stats::PerformanceStatistics> = self
            .storage
            .keys()
            .into_iter()
            .map(|key| {
                let mut snapshot = self.storage.snapshot(key).unwrap_or_default();
                snapshot.events = Vec::new();
                crate::stats::PerformanceStatistics::whole_run(key, snapshot)
            })
            .collect();
        serde_json::json!({ "pairs": pairs, "evictedKeys": self.storage.evicted() }).to_string()
    }

    /// Serves `GET /metrics` (and `HEAD`; a query string is ignored) on `addr` (for
    /// example `127.0.0.1:9464`, or port 0 for any free one) until the returned server is
    /// dropped. See [`MetricsServer`] for what no client can do to it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let exporter = Arc::new(PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default())));
    /// let server = exporter.serve("127.0.0.1:0").unwrap();
    /// assert!(server.addr().port() > 0);
    /// ```
    pub fn serve(self: &Arc<Self>, addr: &str) -> Result<MetricsServer, std::io::Error> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let (exporter, stopping) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(ACCEPT_POLL);
                            continue;
                        }
                        Err(_) => continue,
                    };
                    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        busy.fetch_sub(1, Ordering::AcqRel);
                        let _ = respond(
                            &stream,
                            "503 Service Unavailable",
                            "text/plain; charset=utf-8",
                            "busy: try again\n",
                            true,
                        );
                        continue;
                    }
                    let (exporter, done) = (exporter.clone(), busy.clone());
                    let spawned = std::thread::Builder::new()
                        .name("metrics-request".into())
                        .spawn(move || {
                            let _ = answer(&exporter, &stream);
                            linger(&stream);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        busy.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }
}

/// Requests answered at once, at most; more get `503` without being read.
const MAX_CONNECTIONS: usize = 8;
/// How long a client may take to send its request head, or to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read; a longer one gets `431`.
const MAX_HEAD: usize = 8 * 1024;
/// How often the accept loop looks for a stop: dropping the server returns within it.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Reads one request head (never a body, whatever `Content-Length` says) and answers it.
fn answer(exporter: &PrometheusExporter, mut stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain; charset=utf-8",
                "request head too large\n",
                true,
            );
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET", "/metrics") => respond(stream, "200 OK", TEXT, &exporter.render(), true),
        ("HEAD", "/metrics") => respond(stream, "200 OK", TEXT, &exporter.render(), false),
        ("GET", "/stats") => respond(stream, "200 OK", JSON, &exporter.stats_json(), true),
        ("HEAD", "/stats") => respond(stream, "200 OK", JSON, &exporter.stats_json(), false),
        (_, "/metrics" | "/stats") => respond(
            stream,
            "405 Method Not Allowed",
            TEXT,
            "only GET and HEAD are served on /metrics and /stats\n",
            true,
        ),
        _ => respond(
            stream,
            "404 Not Found",
            TEXT,
            "only /metrics and /stats are served here\n",
            true,
        ),
    }
}

/// Closes after the response has gone: the sending side first, then what the client
/// still sends (an unread body, the rest of a long head) is read and discarded, a bounded
/// amount for a bounded time, so the close is a FIN the client reads after the
/// response rather than a reset that could destroy it.
fn linger(mut stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// How long a closing connection's remaining input is read and discarded, and how much.
const LINGER: Duration = Duration::from_millis(200);
const MAX_DRAIN: usize = 1 << 20;

fn respond(
    mut stream: &TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )?;
    if with_body {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// The `/metrics` endpoint of a [`PrometheusExporter`]; it stops when dropped, within a
/// few tens of milliseconds (the accept loop polls for the stop).
///
/// No client can crash it or hold it: a request body is never read (a huge
/// `Content-Length` allocates nothing), a request head is read up to 8 KiB, a client that
/// sends nothing or does not read is cut off after 2 s, and at most 8 requests are
/// answered at once (more get `503`). Other methods on `/metrics` get `405`, other paths
/// `404`.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::export::prometheus::PrometheusExporter;
/// use backtest_perf::{StorageConfig, StorageService};
/// let exporter = Arc::new(PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default())));
/// drop(exporter.serve("127.0.0.1:0").unwrap());
/// ```
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Where it listens.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let exporter = Arc::new(PrometheusExporter::new(Default::default(), StorageService::new(StorageConfig::default())));
    /// let server = exporter.serve("127.0.0.1:0").unwrap();
    /// assert_ne!(server.addr().port(), 0);
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
