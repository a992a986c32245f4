//! The run tracker: marks and timed operations of one run, with nesting, self time,
//! memory, slow-operation and memory-spike detection, and a report.
//!
//! A [`Tracker`] belongs to one run (a backtest, or any unit of work you define). A
//! disabled tracker (the default in the engine, or a run left out by sampling) costs one
//! branch per call and allocates nothing.
//!
//! ```
//! use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
//! use serde_json::json;
//!
//! let tracker = Tracker::new(RunInfo::named("nightly-sweep"), TrackerOptions::default());
//! tracker.track("start", Some(json!({"symbols": 4})));
//! {
//!     let _load = tracker.start("load-data", None); // ends when dropped
//!     let parsed = tracker.measure("parse", || "1,2,3".split(',').count());
//!     assert_eq!(parsed, 3);
//! }
//! let sum = tracker.wrap("sum", |x: u64| x * 2, None);
//! assert_eq!(sum(21), 42);
//! let report = tracker.finish().unwrap();
//! assert_eq!(report.events.len(), 4);
//! assert_eq!(report.events[2].name, "parse");
//! assert_eq!(report.events[2].parent, Some(report.events[1].id));
//! ```
//!
//! Nesting is per thread: an operation started while another of the same tracker is
//! open on the same thread is its child, and the parent's self time leaves the child's
//! duration out. Operations with the same name never overwrite each other: each `start`
//! returns its own [`Span`], which stays on the thread that started it. The gap of an
//! event is the time since the previous event (in start order) started.

mod clock;
pub mod memory;
mod report;
pub mod timeline;

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use super::emitter::PerformanceEmitter;
use super::event::{MetricType, PerformanceContract};
use super::name::Name;
use super::span;
use super::thresholds::Thresholds;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use memory::{CountingAllocator, ResourceSnapshot};
use report::Detail;
pub use report::{
    EventKind, MemoryDelta, MemorySpike, SampledFunction, SlowEvent, SlowProfile, SlowStats,
    TrackedEvent, TrackerReport, WARM_UPS_KEPT, WarmUp,
};

/// How finely durations and offsets are reported.
///
/// ```
/// use backtest_perf::tracker::Precision;
/// assert_eq!(Precision::default(), Precision::Nanoseconds);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Whole milliseconds.
    Milliseconds,
    /// Milliseconds with 3 decimals.
    Microseconds,
    /// Milliseconds with 6 decimals: the default, so an operation of a few nanoseconds
    /// never reads as zero.
    #[default]
    Nanoseconds,
}

impl Precision {
    /// Rounds a nanosecond count to milliseconds at this precision.
    ///
    /// ```
    /// use backtest_perf::tracker::Precision;
    /// assert_eq!(Precision::Microseconds.ms(1_234_567), 1.235);
    /// assert_eq!(Precision::Milliseconds.ms(1_500_000), 2.0);
    /// assert_eq!(Precision::Nanoseconds.ms(1_234_567), 1.234567);
    /// ```
    pub fn ms(self, ns: u64) -> f64 {
        let ms = ns as f64 / 1e6;
        let scale = match self {
            Precision::Milliseconds => 1.0,
            Precision::Microseconds => 1e3,
            Precision::Nanoseconds => 1e6,
        };
        (ms * scale).round() / scale
    }
}

/// Receives the report when a run finishes.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::tracker::{OnComplete, TrackerReport};
/// let print: OnComplete = Arc::new(|report: &TrackerReport| println!("{} events", report.event_count));
/// ```
pub type OnComplete = Arc<dyn Fn(&TrackerReport) + Send + Sync>;

/// What a tracker records and when it calls something slow.
///
/// ```
/// use backtest_perf::tracker::TrackerOptions;
/// let options = TrackerOptions { sampling_rate: 0.1, max_events: 1_000, ..TrackerOptions::default() };
/// assert_eq!(options.threshold_ms("getSignal"), 5.0);
/// ```
#[derive(Clone)]
pub struct TrackerOptions {
    /// Off: every call is one branch.
    pub enabled: bool,
    /// Share of runs tracked, 0 to 1, decided from a hash of the run id (the same run
    /// is always sampled the same way).
    pub sampling_rate: f64,
    /// When an operation is slow: by its name's threshold, or the default (100 ms;
    /// `getCandles` 50 and `getSignal` 5).
    pub thresholds: Thresholds,
    /// An operation whose thread allocated this many bytes more than it freed is a
    /// memory spike.
    pub memory_threshold_bytes: u64,
    /// Record allocation counts (with [`CountingAllocator`] installed) and RSS per
    /// operation; RSS is read at most once per millisecond.
    pub track_memory: bool,
    /// Keep metadata in the events.
    pub include_metadata: bool,
    /// Events kept; past it slow events are still kept (up to 1,000 more) and the others
    /// are counted.
    pub max_events: usize,
    /// Keep only the subtrees of the warm-ups (the first root operation, and each later
    /// one inside which an operation ran for the first time, up to [`WARM_UPS_KEPT`]) and
    /// of the `K` slowest other ones, whatever the run's length (`--timeline`): memory
    /// holds at most `K + 1 + WARM_UPS_KEPT` subtrees. `None` keeps events up to
    /// `max_events`.
    pub keep_slowest_roots: Option<usize>,
    /// Rounding of reported durations and offsets.
    pub precision: Precision,
    /// Called with the report when the run finishes.
    pub on_complete: Option<OnComplete>,
}

impl std::fmt::Debug for TrackerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerOptions")
            .field("enabled", &self.enabled)
            .field("sampling_rate", &self.sampling_rate)
            .field("thresholds", &self.thresholds)
            .field("max_events", &self.max_events)
            .finish_non_exhaustive()
    }
}

impl Default for TrackerOptions {
    /// Enabled, every run, slow above 100 ms (`getCandles` 50 ms, `getSignal` 5 ms),
    /// memory spikes above 10 MiB, no memory tracking, metadata kept, 10,000 events.
    fn default() -> Self {
        TrackerOptions {
            enabled: true,
            sampling_rate: 1.0,
            thresholds: Thresholds::default(),
            memory_threshold_bytes: 10 << 20,
            track_memory: false,
            include_metadata: true,
            max_events: 10_000,
            keep_slowest_roots: None,
            precision: Precision::default(),
            on_complete: None,
        }
    }
}

impl TrackerOptions {
    /// Tracking off.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// assert!(!Tracker::new(RunInfo::named("x"), TrackerOptions::disabled()).is_enabled());
    /// ```
    pub fn disabled() -> Self {
        TrackerOptions {
            enabled: false,
            ..Self::default()
        }
    }

    /// The threshold in ms for operations named `name`.
    ///
    /// ```
    /// use backtest_perf::tracker::TrackerOptions;
    /// let options = TrackerOptions::default();
    /// assert_eq!((options.threshold_ms("getCandles"), options.threshold_ms("anything")), (50.0, 100.0));
    /// ```
    pub fn threshold_ms(&self, name: &str) -> f64 {
        self.thresholds.threshold_ms(name)
    }

    /// Whether the run with this id is tracked under `sampling_rate`.
    ///
    /// ```
    /// use backtest_perf::tracker::TrackerOptions;
    /// let half = TrackerOptions { sampling_rate: 0.5, ..Default::default() };
    /// let picked = (0..1000).filter(|i| half.samples(&format!("run-{i}"))).count();
    /// assert!((400..600).contains(&picked), "{picked}");
    /// assert_eq!(half.samples("run-7"), half.samples("run-7"));
    /// ```
    pub fn samples(&self, run_id: &str) -> bool {
        if self.sampling_rate >= 1.0 {
            return true;
        }
        if self.sampling_rate <= 0.0 {
            return false;
        }
        // The top 53 bits of a stable hash, as a fraction in [0, 1). FNV-1a barely moves
        // its top bits for the last bytes (ids differing in a suffix), so mix it first
        // (murmur3's 64-bit finaliser).
        let mut h = crate::dump::fnv1a(run_id.as_bytes());
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        let fraction = (h >> 11) as f64 / (1u64 << 53) as f64;
        fraction < self.sampling_rate
    }
}

/// What a run is: an id (for sampling), and optionally its symbol, strategy and the
/// simulated time range it covers.
///
/// ```
/// use backtest_perf::tracker::RunInfo;
/// let run = RunInfo { symbol: Some("BTCUSDT".into()), strategy: Some("sma".into()), ..RunInfo::named("nightly") };
/// assert_eq!(serde_json::to_value(&run).unwrap()["symbol"], "BTCUSDT");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    /// Identifies the run; sampling hashes it.
    pub id: String,
    /// The symbol.
    pub symbol: Option<String>,
    /// The strategy.
    pub strategy: Option<String>,
    /// Start of the simulated time range.
    pub from: Option<DateTime<Utc>>,
    /// End of the simulated time range.
    pub to: Option<DateTime<Utc>>,
}

impl RunInfo {
    /// A run known by its id only.
    ///
    /// ```
    /// assert_eq!(backtest_perf::tracker::RunInfo::named("r1").id, "r1");
    /// ```
    pub fn named(id: impl Into<String>) -> Self {
        RunInfo {
            id: id.into(),
            ..Default::default()
        }
    }
}

/// An open operation, held by its [`Span`] until it ends (the thread's span stack of
/// [`crate::span`] holds its place in the nesting). Small, since it moves with the span:
/// what is rarely there sits behind one box.
struct Frame<'t> {
    inner: &'t Inner,
    /// Its place on the thread's span stack: id, parent, depth and start.
    open: span::Open,
    name: Cow<'static, str>,
    extras: Option<Box<Extras>>,
}

/// Metadata and the allocation counters at the start, when there are any.
struct Extras {
    meta: Option<Value>,
    memory: Option<(u64, u64)>,
}

/// Where a tracker's operations go on the bus: each becomes one event of a custom metric
/// type named after the operation, for this symbol:strategy.
#[derive(Clone, Debug)]
pub struct BusTarget {
    /// The bus.
    pub bus: PerformanceEmitter,
    /// The symbol of the events.
    pub symbol: Name,
    /// The strategy of the events.
    pub strategy: Name,
}

struct Inner {
    /// Whether it keeps a report (`false`: it only puts operations on the bus).
    recording: bool,
    bus: Option<BusTarget>,
    run: RunInfo,
    options: TrackerOptions,
    clock: ClockSource,
    started_ns: u64,
    rss_at_start: Option<u64>,
    state: Mutex<report::State>,
}

/// The machine's clock, called directly (inlined), or another one through its trait.
enum ClockSource {
    Monotonic(MonotonicClock),
    Other(Arc<dyn Clock>),
}

impl ClockSource {
    #[inline]
    fn now_ns(&self) -> u64 {
        match self {
            ClockSource::Monotonic(clock) => clock.now_ns(),
            ClockSource::Other(clock) => clock.now_ns(),
        }
    }
}

impl Inner {
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now_ns().saturating_sub(self.started_ns)
    }

    fn memory_now(&self) -> Option<(u64, u64)> {
        if self.options.track_memory {
            memory::thread_counters()
        } else {
            None
        }
    }

    fn memory_since(&self, at_start: Option<(u64, u64)>) -> Option<MemoryDelta> {
        let (allocated, freed) = at_start?;
        let (now_allocated, now_freed) = memory::thread_counters()?;
        Some(MemoryDelta {
            allocated: now_allocated.wrapping_sub(allocated),
            freed: now_freed.wrapping_sub(freed),
            // Read when a root operation ended (`record`), not here: this may run inside
            // an operation whose time a read would add to.
            rss_bytes: memory::rss_bytes_last(),
        })
    }

    fn record(&self, event: report::Raw) {
        if self.recording {
            let _own = memory::Uncounted::begin();
            let origin = match self.clock {
                ClockSource::Monotonic(_) => Some(self.started_ns),
                ClockSource::Other(_) => None,
            };
            let root = event.parent.is_none();
            self.state.lock().record(event, &self.options, origin);
            if root && self.options.track_memory {
                // Between root operations nothing is being timed: the place to read the
                // resident set size (at most once a millisecond) for the next ones.
                memory::rss_bytes_sampled();
            }
        }
    }

    /// Counts an operation of a sampled run's untimed tick on the bus, if the tracker has
    /// one.
    #[cold]
    fn count_untimed(&self, name: &str) {
        if let Some(target) = &self.bus {
            target.bus.count_untimed(
                &target.symbol,
                &target.strategy,
                MetricType::custom(name),
                1,
            );
        }
    }

    /// Puts a closed operation on the bus, if the tracker has one.
    fn emit(&self, name: &str, closed: &span::Closed, end_ns: u64) {
        let Some(target) = &self.bus else { return };
        let _own = memory::Uncounted::begin();
        // On the process clock the end is already known; on another clock (a test's),
        // the timestamp reads the process clock.
        let end = match self.clock {
            ClockSource::Monotonic(_) => end_ns.saturating_add(self.started_ns),
            ClockSource::Other(_) => span::now_ns(),
        };
        let event = PerformanceContract {
            symbol: Some(target.symbol),
            strategy_name: Some(target.strategy),
            ..closed.event(MetricType::custom(name), end)
        };
        let _ = target.bus.emit(event);
    }
}

/// The tracker of one run. Cheap to clone: clones record into the same run.
///
/// See the [module documentation](self).
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// let same_run = tracker.clone();
/// same_run.track("from a clone", None);
/// assert_eq!(tracker.finish().unwrap().event_count, 1);
/// ```
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Tracker(disabled)"),
            Some(inner) => write!(f, "Tracker({:?})", inner.run.id),
        }
    }
}

impl Tracker {
    /// A tracker for `run`, on the monotonic clock. Disabled when `options.enabled` is
    /// off or sampling leaves the run out.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// assert!(tracker.is_enabled());
    /// ```
    pub fn new(run: RunInfo, options: TrackerOptions) -> Self {
        Self::build(
            run,
            options,
            ClockSource::Monotonic(MonotonicClock::default()),
        )
    }

    /// A tracker on a clock of your own (a [`ManualClock`] in tests).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::tracker::{ManualClock, RunInfo, Tracker, TrackerOptions};
    /// let clock = Arc::new(ManualClock::default());
    /// let tracker = Tracker::with_clock(RunInfo::named("t"), TrackerOptions::default(), clock.clone());
    /// let span = tracker.start("op", None);
    /// clock.advance_ms(3.0);
    /// span.end();
    /// assert_eq!(tracker.finish().unwrap().events[0].duration_ms, 3.0);
    /// ```
    pub fn with_clock(run: RunInfo, options: TrackerOptions, clock: Arc<dyn Clock>) -> Self {
        Self::build(run, options, ClockSource::Other(clock))
    }

    /// A tracker whose operations also go on `bus` as events (a custom metric type per
    /// operation name, with their ids, parents and self time), whether or not it keeps a
    /// report: the engine gives each run one, so a strategy's steps timed through
    /// `ctx.tracker()` appear in `get_data`, the reports and the exports.
    ///
    /// ```
    /// use backtest_perf::tracker::{BusTarget, RunInfo, Tracker, TrackerOptions};
    /// use backtest_perf::{MetricType, Name, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// let target = BusTarget { bus: bus.clone(), symbol: Name::new("A"), strategy: Name::new("s") };
    /// let tracker = Tracker::on_bus(RunInfo::named("run"), TrackerOptions::disabled(), target);
    /// assert!(!tracker.is_enabled(), "no report is kept");
    /// tracker.measure("warm-cache", || ());
    /// assert_eq!(service.get_data("A", "s").metric_stats[&MetricType::custom("warm-cache")].count, 1);
    /// ```
    pub fn on_bus(run: RunInfo, options: TrackerOptions, target: BusTarget) -> Self {
        Self::build_with(
            run,
            options,
            ClockSource::Monotonic(MonotonicClock::default()),
            Some(target),
        )
    }

    fn build(run: RunInfo, options: TrackerOptions, clock: ClockSource) -> Self {
        Self::build_with(run, options, clock, None)
    }

    fn build_with(
        run: RunInfo,
        options: TrackerOptions,
        clock: ClockSource,
        bus: Option<BusTarget>,
    ) -> Self {
        let recording = options.enabled && options.samples(&run.id);
        if !recording && bus.is_none() {
            return Tracker::disabled();
        }
        let started_ns = clock.now_ns();
        let rss_at_start = if options.track_memory {
            // Also the reading the first operations carry.
            memory::rss_bytes_sampled();
            memory::rss_bytes()
        } else {
            None
        };
        let state = Mutex::new(report::State::new(&options));
        Tracker {
            inner: Some(Arc::new(Inner {
                recording,
                bus,
                run,
                options,
                clock,
                started_ns,
                rss_at_start,
                state,
            })),
        }
    }

    /// A tracker that records nothing.
    ///
    /// ```
    /// assert!(!backtest_perf::tracker::Tracker::disabled().is_enabled());
    /// ```
    pub const fn disabled() -> Self {
        Tracker { inner: None }
    }

    /// Whether this tracker records.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// assert!(tracker.is_enabled());
    /// ```
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.recording)
    }

    /// This thread's allocation counters now, when the tracker records memory (and the
    /// counting allocator is installed).
    pub(crate) fn memory_counters(&self) -> Option<(u64, u64)> {
        self.inner.as_ref().filter(|i| i.recording)?.memory_now()
    }

    /// Whether a root operation of `duration_ns` closing now would be kept in the report:
    /// always when every operation is kept, else when it is a warm-up or among the slowest
    /// roots (`keep_slowest_roots`). Details that cost a system call (the thread's CPU
    /// time) are read only for those.
    pub(crate) fn would_keep_root(&self, duration_ns: u64) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if !inner.recording {
            return false;
        }
        match inner.options.keep_slowest_roots {
            None => true,
            Some(k) => inner.state.lock().would_keep_root(duration_ns, k),
        }
    }

    /// [`record_measured`](Self::record_measured) with the allocations since
    /// `memory_at_start` (from [`memory_counters`](Self::memory_counters)).
    pub(crate) fn record_measured_with_memory(
        &self,
        name: &'static str,
        start_ns: u64,
        depth: u32,
        closed: &span::Closed,
        meta: Option<Value>,
        memory_at_start: Option<(u64, u64)>,
    ) {
        let Some(inner) = &self.inner else { return };
        if !inner.recording || !matches!(inner.clock, ClockSource::Monotonic(_)) {
            return;
        }
        let _own = memory::Uncounted::begin();
        let memory = inner.memory_since(memory_at_start);
        inner.record(report::Raw {
            thread: span::thread_index(),
            id: closed.id,
            parent: closed.parent,
            depth,
            name: Cow::Borrowed(name),
            kind: EventKind::Operation,
            start_ns: start_ns.saturating_sub(inner.started_ns),
            duration_ns: closed.duration_ns,
            self_ns: closed.self_ns,
            detail: Detail::boxed(meta, None, memory),
            slow: false,
        });
    }

    /// Records an operation measured elsewhere (the engine's hook timer), so it is timed
    /// once: `start_ns` and `closed` are on the process clock; `meta` is kept with it.
    /// Nothing for a tracker that keeps no report or runs on another clock.
    ///
    /// ```
    /// use backtest_perf::span::{enter_at, exit_at};
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// let now = backtest_perf::span::now_ns();
    /// let open = enter_at(now);
    /// let (start, depth) = (open.start_ns, open.depth);
    /// let closed = exit_at(open, now + 5_000);
    /// tracker.record_measured("tick", start, depth, &closed, None);
    /// let report = tracker.finish().unwrap();
    /// assert_eq!((report.events[0].name.as_ref(), report.events[0].duration_ms), ("tick", 0.005));
    /// ```
    pub fn record_measured(
        &self,
        name: &'static str,
        start_ns: u64,
        depth: u32,
        closed: &span::Closed,
        meta: Option<Value>,
    ) {
        self.record_measured_with_memory(name, start_ns, depth, closed, meta, None);
    }

    /// Records an instant mark.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// tracker.track("checkpoint", Some(serde_json::json!({"frame": 10})));
    /// assert_eq!(tracker.finish().unwrap().events[0].metadata, Some(serde_json::json!({"frame": 10})));
    /// ```
    pub fn track(&self, name: impl Into<Cow<'static, str>>, meta: Option<Value>) {
        let Some(inner) = &self.inner else { return };
        inner.record(report::Raw {
            thread: span::thread_index(),
            id: span::next_id(),
            parent: span::current(),
            depth: 0,
            name: name.into(),
            kind: EventKind::Mark,
            start_ns: inner.now(),
            duration_ns: 0,
            self_ns: 0,
            detail: Detail::boxed(meta, None, None),
            slow: false,
        });
    }

    /// Starts a timed operation; it ends when the returned [`Span`] is ended or dropped.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// {
    ///     let _load = tracker.start("load", None);
    ///     let _parse = tracker.start("parse", None); // nested under "load"
    /// }
    /// let report = tracker.finish().unwrap();
    /// assert_eq!(report.events[1].parent, Some(report.events[0].id));
    /// ```
    #[inline(always)]
    pub fn start(&self, name: impl Into<Cow<'static, str>>, meta: Option<Value>) -> Span<'_> {
        match &self.inner {
            None => Span::NONE,
            Some(inner) if span::is_untimed() => {
                inner.count_untimed(&name.into());
                Span::NONE
            }
            Some(inner) => begin(inner, name.into(), meta),
        }
    }

    /// Times `f`.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// assert_eq!(tracker.measure("sum", || 2 + 2), 4);
    /// ```
    #[inline]
    pub fn measure<T>(&self, name: impl Into<Cow<'static, str>>, f: impl FnOnce() -> T) -> T {
        let span = self.start(name, None);
        let value = f();
        span.end();
        value
    }

    /// Times a future until it completes (not only until its first `.await`). Its parent
    /// is the operation open on this thread where it was created; it may run elsewhere,
    /// so operations inside it are not subtracted from its own self time.
    ///
    /// ```
    /// # use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let tracker = Tracker::new(RunInfo::named("io"), TrackerOptions::default());
    /// tracker.measure_async("sleep", tokio::time::sleep(std::time::Duration::from_millis(30))).await;
    /// let report = tracker.finish().unwrap();
    /// assert!(report.events[0].duration_ms >= 30.0);
    /// # });
    /// ```
    pub async fn measure_async<F: Future>(
        &self,
        name: impl Into<Cow<'static, str>>,
        future: F,
    ) -> F::Output {
        let Some(inner) = &self.inner else {
            return future.await;
        };
        let name = name.into();
        let (id, parent) = (span::next_id(), span::current());
        let start_ns = inner.now();
        let value = future.await;
        let end_ns = inner.now();
        let closed = span::close_detached(id, parent, start_ns, end_ns);
        let duration_ns = closed.duration_ns;
        inner.emit(&name, &closed, end_ns);
        inner.record(report::Raw {
            thread: span::thread_index(),
            id,
            parent,
            depth: 0,
            name,
            kind: EventKind::Operation,
            start_ns,
            duration_ns,
            self_ns: duration_ns,
            detail: None,
            slow: false,
        });
        value
    }

    /// A function that times every call of `f` as `name`.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// let square = tracker.wrap("square", |x: u32| x * x, None);
    /// assert_eq!(square(3) + square(4), 25);
    /// assert_eq!(tracker.finish().unwrap().stats["square"].count, 2);
    /// ```
    pub fn wrap<A, T>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: impl Fn(A) -> T,
        meta: Option<Value>,
    ) -> impl Fn(A) -> T {
        let tracker = self.clone();
        let name: Cow<'static, str> = name.into();
        move |arg| {
            let span = tracker.start(name.clone(), meta.clone());
            let value = f(arg);
            span.end();
            value
        }
    }

    /// A function that times every call of the async `f` as `name`, until the future it
    /// returns completes (not until it is created).
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// let fetch = tracker.wrap_async("fetch", |ms: u64| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    ///     ms
    /// });
    /// assert_eq!(fetch(20).await, 20);
    /// let report = tracker.finish().unwrap();
    /// assert_eq!(report.stats["fetch"].count, 1);
    /// assert!(report.events[0].duration_ms >= 20.0, "timed until the future completed");
    /// # });
    /// ```
    pub fn wrap_async<A, F, Fut>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> impl Fn(A) -> std::pin::Pin<Box<dyn Future<Output = Fut::Output> + Send>>
    where
        F: Fn(A) -> Fut,
        Fut: Future + Send + 'static,
    {
        let tracker = self.clone();
        let name: Cow<'static, str> = name.into();
        move |arg| {
            let (tracker, name) = (tracker.clone(), name.clone());
            let future = f(arg);
            Box::pin(async move { tracker.measure_async(name, future).await })
        }
    }

    /// Ends the run: builds the report, hands it to `on_complete`, and returns it
    /// (`None` for a disabled tracker). Operations still open are not in it.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// tracker.measure("op", || ());
    /// let report = tracker.finish().unwrap();
    /// assert_eq!((report.event_count, report.dropped), (1, 0));
    /// assert!(backtest_perf::tracker::Tracker::disabled().finish().is_none());
    /// ```
    pub fn finish(&self) -> Option<TrackerReport> {
        let inner = self.inner.as_ref().filter(|i| i.recording)?;
        let total_ns = inner.now();
        let rss_now = if inner.options.track_memory {
            memory::rss_bytes()
        } else {
            None
        };
        let memory_delta = match (inner.rss_at_start, rss_now) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        };
        let report = inner
            .state
            .lock()
            .report(&inner.run, &inner.options, total_ns, memory_delta);
        if let Some(on_complete) = &inner.options.on_complete {
            on_complete(&report);
        }
        Some(report)
    }
}

#[inline(never)]
fn begin<'t>(inner: &'t Arc<Inner>, name: Cow<'static, str>, meta: Option<Value>) -> Span<'t> {
    let own = memory::Uncounted::begin();
    let memory = inner.memory_now();
    let extras = (meta.is_some() || memory.is_some()).then(|| Box::new(Extras { meta, memory }));
    let open = span::enter_at(inner.now());
    drop(own);
    Span {
        open: Some(Frame {
            inner,
            open,
            name,
            extras,
        }),
        _on_this_thread: PhantomData,
    }
}

#[inline(never)]
fn end(frame: Frame<'_>, extra: Option<Value>) {
    let inner = frame.inner;
    let end_ns = inner.now();
    let _own = memory::Uncounted::begin();
    let (id, start_ns, depth) = (frame.open.id, frame.open.start_ns, frame.open.depth);
    let closed = span::exit_at(frame.open, end_ns);
    inner.emit(&frame.name, &closed, end_ns);
    let (meta, memory) = frame.extras.map_or((None, None), |e| (e.meta, e.memory));
    inner.record(report::Raw {
        thread: span::thread_index(),
        id,
        parent: closed.parent,
        depth,
        kind: EventKind::Operation,
        slow: false, // judged when recorded
        name: frame.name,
        start_ns,
        duration_ns: closed.duration_ns,
        self_ns: closed.self_ns,
        detail: Detail::boxed(meta, extra, inner.memory_since(memory)),
    });
}

/// A timed operation in progress. It ends on [`end`](Span::end), or when dropped, on the
/// thread that started it.
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// let span = tracker.start("op", None);
/// drop(span); // ends here
/// assert_eq!(tracker.finish().unwrap().events.len(), 1);
/// ```
#[must_use = "the operation ends when this is dropped; bind it to a variable"]
pub struct Span<'t> {
    /// The open operation; `None` when disabled.
    open: Option<Frame<'t>>,
    /// Nesting lives in a thread-local stack: a span must end where it started.
    _on_this_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Span<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.open {
            None => f.write_str("Span(disabled)"),
            Some(frame) => write!(f, "Span({})", frame.open.id),
        }
    }
}

impl Span<'_> {
    const NONE: Span<'static> = Span {
        open: None,
        _on_this_thread: PhantomData,
    };

    /// Ends the operation now.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// tracker.start("op", None).end();
    /// assert_eq!(tracker.finish().unwrap().events.len(), 1);
    /// ```
    #[inline(always)]
    pub fn end(mut self) {
        if let Some(frame) = self.open.take() {
            end(frame, None);
        }
    }

    /// Ends the operation now, adding `meta`'s fields to its metadata.
    ///
    /// ```
    /// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
    /// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
    /// tracker.start("op", Some(serde_json::json!({"a": 1}))).end_with(serde_json::json!({"b": 2}));
    /// let meta = tracker.finish().unwrap().events[0].metadata.clone().unwrap();
    /// assert_eq!((meta["a"].as_i64(), meta["b"].as_i64()), (Some(1), Some(2)));
    /// ```
    pub fn end_with(mut self, meta: Value) {
        if let Some(frame) = self.open.take() {
            end(frame, Some(meta));
        }
    }
}

impl Drop for Span<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(frame) = self.open.take() {
            end(frame, None);
        }
    }
}
