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
//! let exporter = PrometheusExporter::new(Default::default(), service.storage().clone());
//! bus.emit(PerformanceContract::new(MetricType::Tick, 0.0002, 1.0).with_symbol("BTCUSDT").with_strategy("sma")).unwrap();
//! let text = exporter.render();
//! assert!(text.contains(r#"backtest_perf_operation_duration_seconds_count{metric_type="tick",symbol="BTCUSDT",strategy="sma"} 1"#));
//! assert!(text.contains(r#"backtest_perf_operation_duration_seconds_bucket{metric_type="tick",symbol="BTCUSDT",strategy="sma",le="0.0000004"} 1"#));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        }
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
        let Ok(builder) = PrometheusBuilder::new().set_buckets(&BUCKETS_SECONDS) else {
            return String::new();
        };
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
        });
        handle.render()
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

    /// Serves `GET /metrics` on `addr` (for example `127.0.0.1:9464`, or port 0 for any
    /// free one) on a thread of its own, until the returned server is dropped.
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
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let local = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics server is not on an IP address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (exporter, stopping) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    let response = if request.url() == "/metrics"
                        && *request.method() == tiny_http::Method::Get
                    {
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                        .expect("a constant, valid header");
                        tiny_http::Response::from_string(exporter.render()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("only GET /metrics is served here\n")
                            .with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })?;
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }
}

/// The `/metrics` endpoint of a [`PrometheusExporter`]; it stops when dropped.
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
