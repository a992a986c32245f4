//! The facade: [`PerformanceService`] instances and the global [`Performance`] API.
//!
//! The global API reads like the reference: [`performance_emitter`],
//! [`listen_performance`], [`Performance::get_data`], [`Performance::get_report`],
//! [`Performance::dump`] and [`Performance::clear`]. They share one process-wide bus
//! whose storage subscribes on first use of either. Tests and engines that must not share
//! state build their own [`PerformanceEmitter`] and [`PerformanceService`].
//!
//! ```
//! use backtest_perf::{listen_performance, performance_emitter, MetricType, Performance, PerformanceContract};
//!
//! let sub = listen_performance(|e: &PerformanceContract| println!("{} {}ms", e.metric_type, e.duration));
//! performance_emitter()
//!     .emit(PerformanceContract::new(MetricType::custom("load"), 12.5, 1.0).with_symbol("DOCUSD").with_strategy("doc"))
//!     .unwrap();
//! sub.flush();
//! let stats = Performance::get_data("DOCUSD", "doc");
//! assert_eq!(stats.total_events, 1);
//! assert!(Performance::get_report("DOCUSD", "doc").contains("| load | 1 | 0.0125 | 0.0125 |"), "12.5 ms in s");
//! Performance::clear("DOCUSD", "doc");
//! assert_eq!(Performance::get_data("DOCUSD", "doc").total_events, 0);
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::dump::{DEFAULT_DUMP_DIR, DumpError, safe_file_stem, write_atomic};
use super::emitter::PerformanceEmitter;
use super::event::{MetricType, PerformanceContract};
use super::key::StorageKey;
use super::listener::{ListenerOutcome, Subscription};
use super::report::{Column, ReportLayout, render_layout};
use super::stats::{PerformanceStatistics, StatsPreset};
use super::storage::{StorageConfig, StorageService};

/// Statistics, reports and dumps over one [`StorageService`].
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
///
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
/// assert_eq!(service.get_data("A", "s").total_duration, 2.0);
/// ```
#[derive(Clone, Debug)]
pub struct PerformanceService {
    storage: Arc<StorageService>,
    preset: StatsPreset,
}

impl PerformanceService {
    /// A service over `storage`, computing statistics with `preset`.
    ///
    /// ```
    /// use backtest_perf::{PerformanceService, StatsPreset, StorageConfig, StorageService};
    /// let service = PerformanceService::new(StorageService::new(StorageConfig::default()), StatsPreset::BacktestKit);
    /// assert_eq!(service.preset(), StatsPreset::BacktestKit);
    /// ```
    pub fn new(storage: Arc<StorageService>, preset: StatsPreset) -> Self {
        PerformanceService { storage, preset }
    }

    /// A service with default limits and preset, its storage subscribed to `bus`.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// assert_eq!(service.get_data("A", "s").total_events, 1);
    /// ```
    pub fn attached(bus: &PerformanceEmitter) -> Self {
        Self::attached_with(bus, StorageConfig::default(), StatsPreset::default())
    }

    /// A service with the given limits and preset, its storage subscribed to `bus`.
    ///
    /// ```
    /// use backtest_perf::{PerformanceEmitter, PerformanceService, StatsPreset, StorageConfig};
    /// let config = StorageConfig { max_events: 100, max_keys: 10 };
    /// let service = PerformanceService::attached_with(&PerformanceEmitter::new(), config, StatsPreset::Seed);
    /// assert_eq!(service.storage().config().max_events, 100);
    /// ```
    pub fn attached_with(
        bus: &PerformanceEmitter,
        config: StorageConfig,
        preset: StatsPreset,
    ) -> Self {
        let storage = StorageService::new(config);
        storage.attach(bus);
        Self::new(storage, preset)
    }

    /// The storage behind the service.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// assert_eq!(service.storage().keys().len(), 1);
    /// ```
    pub fn storage(&self) -> &Arc<StorageService> {
        &self.storage
    }

    /// The statistics preset.
    ///
    /// ```
    /// use backtest_perf::{PerformanceEmitter, PerformanceService, StatsPreset};
    /// assert_eq!(PerformanceService::attached(&PerformanceEmitter::new()).preset(), StatsPreset::Seed);
    /// ```
    pub fn preset(&self) -> StatsPreset {
        self.preset
    }

    /// The report layout of this service's preset: the whole-run report for the default
    /// preset, backtest-kit's layout for the `backtest-kit` preset.
    ///
    /// ```
    /// use backtest_perf::{PerformanceEmitter, PerformanceService, StatsPreset, StorageConfig};
    /// use backtest_perf::report::ReportLayout;
    /// let bus = PerformanceEmitter::new();
    /// let bk = PerformanceService::attached_with(&bus, StorageConfig::default(), StatsPreset::BacktestKit);
    /// assert_eq!(bk.layout(), ReportLayout::BacktestKit);
    /// ```
    pub fn layout(&self) -> ReportLayout {
        match self.preset {
            StatsPreset::Seed => ReportLayout::WholeRun,
            StatsPreset::BacktestKit => ReportLayout::BacktestKit,
        }
    }

    /// Statistics of one `symbol:strategy` (empty text means `global`).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// assert_eq!(service.get_data("A", "s").total_duration, 2.0);
    /// assert_eq!(service.get_data("B", "s").total_events, 0);
    /// ```
    pub fn get_data(&self, symbol: &str, strategy: &str) -> PerformanceStatistics {
        self.get_data_for(StorageKey::new(symbol, strategy))
    }

    /// Statistics of one key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// let key = backtest_perf::StorageKey::new("A", "s");
    /// assert_eq!(service.get_data_for(key).total_events, 1);
    /// ```
    pub fn get_data_for(&self, key: StorageKey) -> PerformanceStatistics {
        let snapshot = self.storage.snapshot(key).unwrap_or_default();
        let mut stats = match self.preset {
            StatsPreset::Seed => PerformanceStatistics::whole_run(key, snapshot),
            StatsPreset::BacktestKit => PerformanceStatistics::compute(
                key,
                snapshot.events,
                snapshot.rejected,
                snapshot.dropped,
                self.preset,
            ),
        };
        stats.evicted_keys = self.storage.evicted();
        stats
    }

    /// The markdown report of one `symbol:strategy`, default columns.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// assert!(service.get_report("A", "s").starts_with("# Performance Report: s\n"));
    /// ```
    pub fn get_report(&self, symbol: &str, strategy: &str) -> String {
        let columns = self.layout().columns();
        self.get_report_with(symbol, strategy, &columns)
    }

    /// The markdown report with your own columns; hidden ones are left out.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// use backtest_perf::report::Column;
    /// let report = service.get_report_with("A", "s", &[Column::new("metricType", "Metric", |m| m.metric_type.to_string())]);
    /// assert!(report.contains("| Metric |\n|---|\n| tick |\n"));
    /// ```
    pub fn get_report_with(&self, symbol: &str, strategy: &str, columns: &[Column]) -> String {
        render_layout(&self.get_data(symbol, strategy), columns, self.layout())
    }

    /// Writes the report to `./dump/performance/<strategy>.md`; returns the path.
    ///
    /// ```no_run
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let path = service.dump("A", "my-strategy")?;
    /// assert_eq!(path, std::path::Path::new("./dump/performance/my-strategy.md"));
    /// # Ok::<(), backtest_perf::DumpError>(())
    /// ```
    pub fn dump(&self, symbol: &str, strategy: &str) -> Result<PathBuf, DumpError> {
        self.dump_to(symbol, strategy, DEFAULT_DUMP_DIR)
    }

    /// Writes the report to `<dir>/<strategy>.md` (the name made safe, see
    /// [`safe_file_stem`]) atomically, creating `dir`; returns the path.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = service.dump_to("A", "s", dir.path()).unwrap();
    /// assert_eq!(std::fs::read_to_string(path).unwrap(), service.get_report("A", "s"));
    /// ```
    pub fn dump_to(
        &self,
        symbol: &str,
        strategy: &str,
        dir: impl AsRef<Path>,
    ) -> Result<PathBuf, DumpError> {
        let report = self.get_report(symbol, strategy);
        let key = StorageKey::new(symbol, strategy);
        let file_name = format!("{}.md", safe_file_stem(&key.strategy));
        write_atomic(dir.as_ref(), &file_name, &report)
    }

    /// Forgets one `symbol:strategy`; other keys stay, the storage stays subscribed.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// service.clear("A", "s");
    /// assert_eq!(service.get_data("A", "s").total_events, 0);
    /// ```
    pub fn clear(&self, symbol: &str, strategy: &str) {
        self.storage.clear(StorageKey::new(symbol, strategy));
    }

    /// Forgets every key; the storage stays subscribed.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
    /// service.clear_all();
    /// assert!(service.storage().keys().is_empty());
    /// ```
    pub fn clear_all(&self) {
        self.storage.clear_all();
    }
}

struct Defaults {
    emitter: PerformanceEmitter,
    service: PerformanceService,
}

static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
static SETTINGS: OnceLock<(StorageConfig, StatsPreset)> = OnceLock::new();

fn defaults() -> &'static Defaults {
    DEFAULTS.get_or_init(|| {
        let (config, preset) = SETTINGS.get().copied().unwrap_or_default();
        let emitter = PerformanceEmitter::new();
        let service = PerformanceService::attached_with(&emitter, config, preset);
        Defaults { emitter, service }
    })
}

/// The process-wide bus was already in use: its storage settings can no longer change.
///
/// ```
/// let err = backtest_perf::facade::AlreadyInUse;
/// assert_eq!(err.to_string(), "the process-wide performance bus is already in use; configure it before the first event, listener or report");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the process-wide performance bus is already in use; configure it before the first event, listener or report"
)]
pub struct AlreadyInUse;

/// Sets the storage limits and statistics preset of the process-wide bus and
/// [`Performance`] facade, once, before their first use (the command line does this for
/// `--max-events` and `--layout`). Later calls, or a call after first use, fail.
///
/// ```
/// use backtest_perf::{configure_performance, Performance, StatsPreset, StorageConfig};
/// let config = StorageConfig { max_events: 50_000, ..StorageConfig::default() };
/// configure_performance(config, StatsPreset::Seed).unwrap();
/// assert_eq!(backtest_perf::performance_service().storage().config().max_events, 50_000);
/// assert!(configure_performance(config, StatsPreset::Seed).is_err(), "once");
/// ```
pub fn configure_performance(
    config: StorageConfig,
    preset: StatsPreset,
) -> Result<(), AlreadyInUse> {
    if DEFAULTS.get().is_some() {
        return Err(AlreadyInUse);
    }
    SETTINGS.set((config, preset)).map_err(|_| AlreadyInUse)
}

/// The process-wide bus. Its storage is subscribed from the start, so the
/// [`Performance`] facade sees every event emitted here.
///
/// ```
/// # use backtest_perf::performance_emitter;
/// assert!(performance_emitter().subscriber_count() >= 1);
/// ```
pub fn performance_emitter() -> &'static PerformanceEmitter {
    &defaults().emitter
}

/// The service behind the [`Performance`] facade.
///
/// ```
/// assert_eq!(backtest_perf::performance_service().preset(), backtest_perf::StatsPreset::Seed);
/// ```
pub fn performance_service() -> &'static PerformanceService {
    &defaults().service
}

/// Times `f` onto the process-wide bus as one event of type `metric` for
/// `symbol`:`strategy`; see [`PerformanceEmitter::time`]. Called inside a hook (or another
/// `time`), the event is nested under it.
///
/// ```
/// use backtest_perf::{time, MetricType, Performance};
/// let rows = time("load-csv", "TIMEUSD", "doc-time", || vec![1, 2, 3]);
/// assert_eq!(rows.len(), 3);
/// let stats = Performance::get_data("TIMEUSD", "doc-time");
/// assert_eq!(stats.metric_stats[&MetricType::custom("load-csv")].count, 1);
/// ```
pub fn time<R>(
    metric: impl Into<MetricType>,
    symbol: &str,
    strategy: &str,
    f: impl FnOnce() -> R,
) -> R {
    performance_emitter().time(metric, symbol, strategy, f)
}

/// Times a future until it completes onto the process-wide bus; see
/// [`PerformanceEmitter::time_async`].
///
/// ```
/// use backtest_perf::{time_async, MetricType, Performance};
/// let n = futures::executor::block_on(time_async("fetch-news", "TIMEUSD", "doc-async", async { 7 }));
/// assert_eq!(n, 7);
/// assert_eq!(Performance::get_data("TIMEUSD", "doc-async").metric_stats[&MetricType::custom("fetch-news")].count, 1);
/// ```
pub async fn time_async<F: Future>(
    metric: impl Into<MetricType>,
    symbol: &str,
    strategy: &str,
    future: F,
) -> F::Output {
    performance_emitter()
        .time_async(metric, symbol, strategy, future)
        .await
}

/// Listens to the process-wide bus; see [`PerformanceEmitter::listen`].
///
/// ```
/// # use backtest_perf::{listen_performance, PerformanceContract};
/// let sub = listen_performance(|e: &PerformanceContract| println!("{}", e.metric_type));
/// sub.unsubscribe();
/// ```
pub fn listen_performance<F, R>(callback: F) -> Subscription
where
    F: FnMut(&PerformanceContract) -> R + Send + 'static,
    R: ListenerOutcome,
{
    performance_emitter().listen(callback)
}

/// Listens to the process-wide bus with an async callback; see [`PerformanceEmitter::listen_async`].
///
/// ```
/// let sub = backtest_perf::listen_performance_async(|e: backtest_perf::PerformanceContract| async move {
///     println!("{}", e.metric_type);
/// });
/// sub.unsubscribe();
/// ```
pub fn listen_performance_async<F, Fut>(callback: F) -> Subscription
where
    F: FnMut(PerformanceContract) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ListenerOutcome,
{
    performance_emitter().listen_async(callback)
}

/// Listens to the events that pass `filter`; see [`PerformanceEmitter::listen_filtered`].
///
/// ```
/// use backtest_perf::PerformanceContract;
/// let sub = backtest_perf::listen_performance_filtered(|e| e.duration > 100.0, |e: &PerformanceContract| {
///     eprintln!("slow {}", e.metric_type);
/// });
/// sub.unsubscribe();
/// ```
pub fn listen_performance_filtered<P, F, R>(filter: P, callback: F) -> Subscription
where
    P: Fn(&PerformanceContract) -> bool + Send + Sync + 'static,
    F: FnMut(&PerformanceContract) -> R + Send + 'static,
    R: ListenerOutcome,
{
    performance_emitter().listen_filtered(filter, callback)
}

/// Listens for the first event that passes `filter`; see [`PerformanceEmitter::listen_once`].
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract};
/// let sub = backtest_perf::listen_performance_once(|e| e.metric_type == MetricType::Backtest, |e: &PerformanceContract| {
///     println!("first replay: {} ms", e.duration);
/// });
/// sub.unsubscribe();
/// ```
pub fn listen_performance_once<P, F, R>(filter: P, callback: F) -> Subscription
where
    P: Fn(&PerformanceContract) -> bool + Send + Sync + 'static,
    F: FnOnce(&PerformanceContract) -> R + Send + 'static,
    R: ListenerOutcome,
{
    performance_emitter().listen_once(filter, callback)
}

/// The global facade over the process-wide bus and storage.
///
/// ```no_run
/// use backtest_perf::Performance;
/// let path = Performance::dump("BTCUSDT", "my-strategy")?;
/// println!("report in {}", path.display());
/// # Ok::<(), backtest_perf::DumpError>(())
/// ```
#[derive(Debug)]
pub struct Performance;

impl Performance {
    /// Statistics of one `symbol:strategy`; see [`PerformanceService::get_data`].
    ///
    /// ```
    /// assert_eq!(backtest_perf::Performance::get_data("NONE", "none").total_events, 0);
    /// ```
    pub fn get_data(symbol: &str, strategy: &str) -> PerformanceStatistics {
        performance_service().get_data(symbol, strategy)
    }

    /// The markdown report; see [`PerformanceService::get_report`].
    ///
    /// ```
    /// assert!(backtest_perf::Performance::get_report("NONE", "none").ends_with("No performance metrics recorded yet.\n"));
    /// ```
    pub fn get_report(symbol: &str, strategy: &str) -> String {
        performance_service().get_report(symbol, strategy)
    }

    /// The markdown report with your own columns; see [`PerformanceService::get_report_with`].
    ///
    /// ```
    /// let columns = backtest_perf::report::default_columns();
    /// assert!(backtest_perf::Performance::get_report_with("NONE", "none", &columns).starts_with("# Performance Report: none"));
    /// ```
    pub fn get_report_with(symbol: &str, strategy: &str, columns: &[Column]) -> String {
        performance_service().get_report_with(symbol, strategy, columns)
    }

    /// Writes the report to `./dump/performance/<strategy>.md`; see [`PerformanceService::dump`].
    ///
    /// ```no_run
    /// let path = backtest_perf::Performance::dump("BTCUSDT", "my-strategy")?;
    /// assert!(path.ends_with("dump/performance/my-strategy.md"));
    /// # Ok::<(), backtest_perf::DumpError>(())
    /// ```
    pub fn dump(symbol: &str, strategy: &str) -> Result<PathBuf, DumpError> {
        performance_service().dump(symbol, strategy)
    }

    /// Writes the report into `dir`; see [`PerformanceService::dump_to`].
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = backtest_perf::Performance::dump_to("NONE", "none", dir.path()).unwrap();
    /// assert_eq!(path, dir.path().join("none.md"));
    /// ```
    pub fn dump_to(
        symbol: &str,
        strategy: &str,
        dir: impl AsRef<Path>,
    ) -> Result<PathBuf, DumpError> {
        performance_service().dump_to(symbol, strategy, dir)
    }

    /// Forgets one `symbol:strategy`; other keys stay.
    ///
    /// ```
    /// backtest_perf::Performance::clear("NONE", "none");
    /// assert_eq!(backtest_perf::Performance::get_data("NONE", "none").total_events, 0);
    /// ```
    pub fn clear(symbol: &str, strategy: &str) {
        performance_service().clear(symbol, strategy)
    }

    /// Forgets every key.
    ///
    /// ```
    /// backtest_perf::Performance::clear_all();
    /// ```
    pub fn clear_all() {
        performance_service().clear_all()
    }
}
