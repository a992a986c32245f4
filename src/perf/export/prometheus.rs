//! Prometheus (feature `prometheus`): hook durations as a histogram, counters for events,
//! rejected, dropped and slow operations, and process metrics, in the text exposition
//! format. Served on `/metrics` while a run goes on, and written as a textfile for the
//! node_exporter textfile collector or a Pushgateway (which suits batch backtests).
//!
//! The exporter is a [`Sink`] that aggregates under one lock per batch; the exposition
//! text is written only when scraped.
//!
//! ```
//! use std::sync::Arc;
//! use backtest_perf::export::prometheus::PrometheusExporter;
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
//!
//! let bus = PerformanceEmitter::new();
//! let exporter = Arc::new(PrometheusExporter::default());
//! bus.add_sink(exporter.clone());
//! bus.emit(PerformanceContract::new(MetricType::Tick, 0.2, 1.0).with_symbol("BTCUSDT").with_strategy("sma")).unwrap();
//! let text = exporter.render();
//! assert!(text.contains(r#"backtest_perf_hook_duration_milliseconds_count{metric_type="tick",symbol="BTCUSDT",strategy="sma"} 1"#));
//! ```

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::emitter::Sink;
use crate::event::{InvalidEvent, MetricType, PerformanceContract};
use crate::key::{Prehashed, StorageKey};
use crate::stats::Sum;
use crate::storage::StorageService;
use crate::thresholds::Thresholds;
use crate::tracker::ResourceSnapshot;

/// Histogram bucket bounds, ms: hooks take microseconds to seconds.
///
/// ```
/// use backtest_perf::export::prometheus::BUCKETS_MS;
/// assert_eq!((BUCKETS_MS[0], BUCKETS_MS[BUCKETS_MS.len() - 1]), (0.001, 10_000.0));
/// ```
pub const BUCKETS_MS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0,
    1_000.0, 10_000.0,
];

struct Series {
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum: Sum,
    slow: u64,
}

/// One histogram series: a metric type of one key. Hashes by the names' interned hashes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesId(MetricType, StorageKey);

impl std::hash::Hash for SeriesId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.1.prehash() ^ self.0.prehash().rotate_left(17));
    }
}

#[derive(Default)]
struct Aggregate {
    series: HashMap<SeriesId, Series, Prehashed>,
    rejected: HashMap<StorageKey, u64, foldhash::fast::RandomState>,
}

/// Aggregates bus events into Prometheus metrics; see the [module documentation](self).
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::export::prometheus::PrometheusExporter;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// let exporter = Arc::new(PrometheusExporter::default());
/// bus.add_sink(exporter.clone());
/// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
/// assert!(exporter.render().contains("backtest_perf_events_total{metric_type=\"getCandles\""));
/// ```
pub struct PrometheusExporter {
    state: Mutex<Aggregate>,
    thresholds: Thresholds,
    storage: Option<Arc<StorageService>>,
}

impl Default for PrometheusExporter {
    fn default() -> Self {
        Self::new(Thresholds::default(), None)
    }
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusExporter").finish_non_exhaustive()
    }
}

impl PrometheusExporter {
    /// An exporter judging slowness by `thresholds`, reporting the dropped events of
    /// `storage` if given.
    ///
    /// ```
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::thresholds::Thresholds;
    /// let _exporter = PrometheusExporter::new(Thresholds::new(10.0).unwrap(), None);
    /// ```
    pub fn new(thresholds: Thresholds, storage: Option<Arc<StorageService>>) -> Self {
        PrometheusExporter {
            state: Mutex::new(Aggregate::default()),
            thresholds,
            storage,
        }
    }

    fn observe(&self, aggregate: &mut Aggregate, event: &PerformanceContract) {
        let series = aggregate
            .series
            .entry(SeriesId(event.metric_type, StorageKey::of(event)))
            .or_insert_with(|| Series {
                buckets: [0; BUCKETS_MS.len()],
                count: 0,
                sum: Sum::default(),
                slow: 0,
            });
        let bucket = BUCKETS_MS.partition_point(|&bound| bound < event.duration);
        if bucket < BUCKETS_MS.len() {
            series.buckets[bucket] += 1;
        }
        series.count += 1;
        series.sum.add(event.duration);
        if self
            .thresholds
            .is_slow(event.metric_type.as_str(), event.duration)
        {
            series.slow += 1;
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let exporter = Arc::new(PrometheusExporter::default());
    /// bus.add_sink(exporter.clone());
    /// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
    /// assert!(exporter.render().contains("le=\"0.025\"} 1"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let state = self.state.lock();
        let mut series: Vec<_> = state.series.iter().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        let labels = |SeriesId(metric, key): &SeriesId| {
            format!(
                "metric_type=\"{}\",symbol=\"{}\",strategy=\"{}\"",
                escape(metric.as_str()),
                escape(&key.symbol),
                escape(&key.strategy)
            )
        };

        let name = "backtest_perf_hook_duration_milliseconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of timed operations (hooks and user code), milliseconds."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (id, s) in &series {
            let l = labels(id);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS_MS.iter().zip(s.buckets) {
                cumulative += n;
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", s.sum.value());
            let _ = writeln!(out, "{name}_count{{{l}}} {}", s.count);
        }

        let counter = |out: &mut String,
                       name: &str,
                       help: &str,
                       rows: &mut dyn Iterator<Item = (String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, v) in rows {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        };
        counter(
            &mut out,
            "backtest_perf_events_total",
            "Events received from the bus.",
            &mut series.iter().map(|(id, s)| (labels(id), s.count)),
        );
        counter(
            &mut out,
            "backtest_perf_slow_operations_total",
            "Operations slower than their threshold.",
            &mut series.iter().map(|(id, s)| (labels(id), s.slow)),
        );
        let key_labels = |k: &StorageKey| {
            format!(
                "symbol=\"{}\",strategy=\"{}\"",
                escape(&k.symbol),
                escape(&k.strategy)
            )
        };
        let mut rejected: Vec<_> = state.rejected.iter().collect();
        rejected.sort();
        counter(
            &mut out,
            "backtest_perf_rejected_events_total",
            "Events the bus rejected as invalid.",
            &mut rejected.iter().map(|(k, v)| (key_labels(k), **v)),
        );
        drop(state);
        if let Some(storage) = &self.storage {
            let dropped: Vec<(String, u64)> = storage
                .keys()
                .into_iter()
                .filter_map(|k| storage.counters(k).map(|c| (key_labels(&k), c.dropped)))
                .collect();
            counter(
                &mut out,
                "backtest_perf_dropped_events_total",
                "Events dropped from a full storage (the oldest first).",
                &mut dropped.into_iter(),
            );
        }
        let process = ResourceSnapshot::now();
        if let (Some(user), Some(system)) = (process.cpu_user_ms, process.cpu_system_ms) {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
            );
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(
                out,
                "process_cpu_seconds_total {}",
                (user + system) / 1000.0
            );
        }
        if let Some(rss) = process.rss_bytes {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }

    /// Writes the metrics atomically to `dir/<name>.prom` (the node_exporter textfile
    /// collector reads `*.prom` files and needs them written whole); returns the path.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let exporter = Arc::new(PrometheusExporter::default());
    /// bus.add_sink(exporter.clone());
    /// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
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

    /// Serves `GET /metrics` on `addr` (`127.0.0.1:0` picks a free port) until the
    /// returned server is dropped.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::export::prometheus::PrometheusExporter;
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let exporter = Arc::new(PrometheusExporter::default());
    /// bus.add_sink(exporter.clone());
    /// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
    /// let server = exporter.serve("127.0.0.1:0").unwrap();
    /// assert!(server.addr().ip().is_loopback());
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

impl Sink for PrometheusExporter {
    fn on_event(&self, event: &PerformanceContract) {
        let mut state = self.state.lock();
        self.observe(&mut state, event);
    }

    fn on_batch(&self, events: &[PerformanceContract]) {
        let mut state = self.state.lock();
        for event in events {
            self.observe(&mut state, event);
        }
    }

    fn on_rejected(&self, event: &PerformanceContract, _reason: &InvalidEvent) {
        *self
            .state
            .lock()
            .rejected
            .entry(StorageKey::of(event))
            .or_default() += 1;
    }
}

/// A running `/metrics` endpoint; it stops when dropped.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::export::prometheus::PrometheusExporter;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// let exporter = Arc::new(PrometheusExporter::default());
/// bus.add_sink(exporter.clone());
/// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
/// let server = exporter.serve("127.0.0.1:0").unwrap();
/// drop(server); // stops serving
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
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let exporter = Arc::new(PrometheusExporter::default());
    /// bus.add_sink(exporter.clone());
    /// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.02, 1.0)).unwrap();
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

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
