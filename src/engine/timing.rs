//! The engine's hook timer: times the five hooks and hands their events to the bus.
//!
//! Events are chained (`previousTimestamp`) per metric type within a run and delivered
//! with [`PerformanceEmitter::emit_batch`] at the end of the first tick that brings the
//! buffer to [`BATCH`] events (so that a hook's outcome can be marked until its tick
//! ends), and when the run ends,
//! so a hook costs two clock reads and a copy; adjacent hook boundaries share one read.
//! Each event carries its id, its parent's id and its self time (the hooks nest: `tick`
//! holds `getSignal`, which holds the strategy's `getCandles` and `getAveragePrice`;
//! `backtest` holds its own `getCandles`).
//! With tracking off a hook costs one relaxed atomic load.
//!
//! Each measured hook is also checked against its threshold (the run's
//! [`TrackerOptions`]: `getCandles` 50 ms, `getSignal` 5 ms, others 100 ms by default);
//! the slow ones are listed in the run's result.

use chrono::{DateTime, Utc};

use super::candle::{Millis, to_utc};
use super::stream::Source;
use serde::Serialize;

use crate::span::{self, Open};
use crate::thresholds::Thresholds;
pub use crate::tracker::{SampledFunction, SlowProfile};
use crate::tracker::{Tracker, TrackerOptions};
use crate::{MetricType, Name, PerformanceContract, PerformanceEmitter};

/// Slow hooks listed per run; past it they are only counted.
///
/// ```
/// use backtest_perf::engine::timing::SLOW_HOOKS_KEPT;
/// use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::SmaCrossover;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::tracker::TrackerOptions;
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// // Every tick over a threshold of a millionth of a nanosecond: hundreds of slow ticks.
/// let thresholds = Thresholds::new(1e3).unwrap().with("tick", 1e-12).unwrap();
/// let config = BacktestConfig {
///     tracker: TrackerOptions { thresholds, ..TrackerOptions::disabled() },
///     ..BacktestConfig::default()
/// };
/// let result = Backtest::new(&exchange, "SYN").unwrap().with_config(config)
///     .run(&mut SmaCrossover::default()).unwrap();
/// assert!(result.frames > SLOW_HOOKS_KEPT as u64);
/// assert_eq!((result.slow_hooks.len(), result.slow_hooks_total), (SLOW_HOOKS_KEPT, result.frames));
/// ```
pub const SLOW_HOOKS_KEPT: usize = 100;

/// A hook that took longer than its threshold, as listed in a run's result.
///
/// ```
/// use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::SmaCrossover;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::tracker::TrackerOptions;
/// let thresholds = Thresholds::default().with("tick", 1e-6).unwrap(); // 1 ns
/// let tracker = TrackerOptions { thresholds, ..TrackerOptions::disabled() };
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let config = BacktestConfig { tracker, ..BacktestConfig::default() };
/// let result = Backtest::new(&exchange, "SYN").unwrap().with_config(config).run(&mut SmaCrossover::default()).unwrap();
/// assert_eq!(result.slow_hooks[0].metric_type.as_str(), "tick");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowHook {
    /// Which hook.
    pub metric_type: MetricType,
    /// The simulated time.
    pub when: DateTime<Utc>,
    /// How long it took, ms.
    pub duration_ms: f64,
    /// Its threshold, ms.
    pub threshold_ms: f64,
    /// `duration / threshold`.
    pub slowness_ratio: f64,
    /// The thread's CPU time during a slow tick, ms, when the run's tracker records (it
    /// costs a system call a tick, and a second for a tick that is slow or kept): near
    /// the duration, the thread ran (slow code, or interrupts and, on a virtual machine,
    /// exits to the host that the kernel charges to the running thread: they cannot be
    /// told apart from here); far below it, the thread waited (pre-empted or blocked).
    /// `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_cpu_ms: Option<f64>,
    /// The CPU profile's samples taken on the run's thread while this hook ran, when a
    /// profile runs (`backtest --profile`); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<SlowProfile>,
}

impl SlowHook {
    /// Whether the thread ran (`Some(true)`: at least 80% of the wall time on the CPU) or
    /// waited (`Some(false)`) during this slow hook; `None` when not measured.
    ///
    /// ```
    /// use backtest_perf::engine::timing::SlowHook;
    /// use backtest_perf::MetricType;
    /// let slow = SlowHook {
    ///     metric_type: MetricType::Tick,
    ///     when: chrono::DateTime::UNIX_EPOCH,
    ///     duration_ms: 10.0,
    ///     threshold_ms: 5.0,
    ///     slowness_ratio: 2.0,
    ///     thread_cpu_ms: Some(1.0),
    ///     profile: None,
    /// };
    /// assert_eq!(slow.thread_ran(), Some(false), "1 ms on the CPU of 10: it waited");
    /// ```
    pub fn thread_ran(&self) -> Option<bool> {
        Some(crate::thresholds::thread_ran(
            self.thread_cpu_ms?,
            self.duration_ms,
        ))
    }
}

/// The "Slow hooks" section of a run's markdown report: the hooks over their thresholds
/// (at most [`SLOW_HOOKS_KEPT`] listed, all counted), whether the thread ran or waited,
/// and with a CPU profile the samples taken while each ran. Empty when none was slow.
///
/// ```
/// use backtest_perf::engine::timing::{SampledFunction, SlowHook, SlowProfile, slow_hooks_markdown};
/// use backtest_perf::MetricType;
/// let slow = SlowHook {
///     metric_type: MetricType::GetSignal,
///     when: "2024-03-05T12:00:00Z".parse().unwrap(),
///     duration_ms: 41.3,
///     threshold_ms: 5.0,
///     slowness_ratio: 8.26,
///     thread_cpu_ms: None,
///     profile: Some(SlowProfile {
///         samples: 10,
///         on_cpu: vec![SampledFunction { function: "my_strategy::score".into(), samples: 9 }],
///         stack: "main;my_strategy::score".into(),
///         stack_samples: 9,
///         ..SlowProfile::default()
///     }),
/// };
/// let section = slow_hooks_markdown(&[slow], 3);
/// assert!(section.starts_with("\n## Slow hooks\n\n3 hooks took longer than their thresholds; the first 1:"));
/// assert!(section.contains("| getSignal | 2024-03-05T12:00:00+00:00 | 41.3 ms | 8.26× 5.00 ms | not measured | 10 samples, on the CPU: my\\_strategy::score 90.0% |"));
/// assert_eq!(slow_hooks_markdown(&[], 0), "");
/// ```
pub fn slow_hooks_markdown(slow: &[SlowHook], total: u64) -> String {
    use crate::report::escape;
    use std::fmt::Write;
    if total == 0 {
        return String::new();
    }
    let hooks = if total == 1 { "hook" } else { "hooks" };
    let mut out = format!(
        "\n## Slow hooks\n\n{total} {hooks} took longer than their thresholds; the first {}:\n\n",
        slow.len()
    );
    out.push_str("| Hook | When (simulated) | Duration | × threshold | Thread | CPU profile samples while it ran |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for hook in slow {
        let cells = slow_hook_cells(hook).map(|cell| escape(&cell));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if slow.iter().any(|h| h.profile.is_some()) {
        out.push_str(
            "\nThe samples are the CPU profile's own (`profile.pb`), taken on the run's thread \
             between the hook's start and end; the JSON report has each hook's most frequent \
             stack.\n",
        );
    }
    out
}

/// The "Slow hooks" section of a run's HTML report, with the same rows as
/// [`slow_hooks_markdown`]; the most frequent stack of each hook's samples shows on
/// hovering its profile cell. Empty when none was slow.
///
/// ```
/// use backtest_perf::engine::timing::{SlowHook, SlowProfile, slow_hooks_html};
/// use backtest_perf::MetricType;
/// let slow = SlowHook {
///     metric_type: MetricType::Tick,
///     when: "2024-03-05T12:00:00Z".parse().unwrap(),
///     duration_ms: 41.3,
///     threshold_ms: 5.0,
///     slowness_ratio: 8.26,
///     thread_cpu_ms: Some(40.0),
///     profile: Some(SlowProfile { samples: 2, stack: "main;a<b>".into(), stack_samples: 2, ..SlowProfile::default() }),
/// };
/// let section = slow_hooks_html(&[slow], 1);
/// assert!(section.contains("<tr class=\"slow\"><td>tick</td><td>2024-03-05T12:00:00+00:00</td><td>41.3 ms</td><td>8.26× 5.00 ms</td><td>ran (slow code, or interrupts charged to the thread)</td><td title=\"main;a&lt;b&gt; (2 samples)\">2 samples</td></tr>"));
/// assert_eq!(slow_hooks_html(&[], 0), "");
/// ```
pub fn slow_hooks_html(slow: &[SlowHook], total: u64) -> String {
    use crate::export::html::esc;
    use std::fmt::Write;
    if total == 0 {
        return String::new();
    }
    let hooks = if total == 1 { "hook" } else { "hooks" };
    let mut out = format!(
        "\n<h2>Slow hooks</h2>\n<p class=\"meta\">{total} {hooks} took longer than their thresholds; the first {}:</p>\n<table><thead><tr><th>Hook</th><th>When (simulated)</th><th>Duration</th><th>× threshold</th><th>Thread</th><th>CPU profile samples while it ran</th></tr></thead><tbody>\n",
        slow.len()
    );
    for hook in slow {
        let [name, when, duration, ratio, thread, profile] = slow_hook_cells(hook).map(|c| esc(&c));
        // The most frequent stack shows on hovering the profile cell.
        let stack = hook
            .profile
            .as_ref()
            .filter(|p| !p.stack.is_empty())
            .map_or_else(String::new, |p| {
                format!(" title=\"{} ({} samples)\"", esc(&p.stack), p.stack_samples)
            });
        let _ = writeln!(
            out,
            "<tr class=\"slow\"><td>{name}</td><td>{when}</td><td>{duration}</td><td>{ratio}</td><td>{thread}</td><td{stack}>{profile}</td></tr>",
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// A slow hook's row of the reports' "Slow hooks" table, as plain text (each output
/// escapes it): hook, simulated time, duration, ratio to the threshold, whether its
/// thread ran, and what the profile saw.
fn slow_hook_cells(hook: &SlowHook) -> [String; 6] {
    use crate::report::{human, sig3};
    let thread = match hook.thread_ran() {
        Some(true) => "ran (slow code, or interrupts charged to the thread)",
        Some(false) => "waited (pre-empted or blocked)",
        None => "not measured",
    };
    [
        hook.metric_type.as_str().to_string(),
        hook.when.to_rfc3339(),
        human(hook.duration_ms),
        format!(
            "{}× {}",
            sig3(hook.slowness_ratio),
            human(hook.threshold_ms)
        ),
        thread.to_string(),
        hook.profile
            .as_ref()
            .map_or_else(|| "no profile ran".to_string(), ToString::to_string),
    ]
}

/// Milliseconds in a day: chrono's timestamps have no leap seconds, so every day of
/// [`to_utc`] is this long.
const DAY_MS: Millis = 86_400_000;

/// The simulated time of the hooks being recorded, converted to UTC once per change.
///
/// The date of the day it lies in is kept too: another time the same day (the engine
/// steps a minute at a time) is then that date at a new time of day, a division and a
/// few comparisons, where [`to_utc`] walks the calendar from the epoch.
#[derive(Clone, Copy, Debug)]
struct SimulatedTime {
    when: Millis,
    utc: DateTime<Utc>,
    /// The first millisecond of `when`'s day and its date; `None` when `when` lies
    /// outside chrono's range (its conversion was clamped).
    day: Option<(Millis, chrono::NaiveDate)>,
}

impl SimulatedTime {
    fn new(when: Millis) -> Self {
        // Converted once: outside chrono's range, `to_utc` clamps and no day is kept.
        let exact = DateTime::from_timestamp_millis(when);
        SimulatedTime {
            when,
            utc: exact.unwrap_or_else(|| to_utc(when)),
            day: exact.map(|utc| (when - when.rem_euclid(DAY_MS), utc.date_naive())),
        }
    }

    /// Moves to `when`: what [`SimulatedTime::new`] gives, without the calendar's walk
    /// within the same day.
    #[inline]
    fn step(&mut self, when: Millis) {
        if let Some((start, date)) = self.day
            && let Some(ms) = when.checked_sub(start)
            && let Ok(ms) = u32::try_from(ms)
            && i64::from(ms) < DAY_MS
            && let Some(time) = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                ms / 1000,
                ms % 1000 * 1_000_000,
            )
        {
            self.when = when;
            self.utc = date.and_time(time).and_utc();
            return;
        }
        *self = SimulatedTime::new(when);
    }
}

/// Events buffered before they go to the bus (at the end of the tick that reaches it).
pub const BATCH: usize = 1024;

/// The hooks, in the order of [`MetricType::BUILT_IN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A whole tick.
    Tick = 0,
    /// The strategy's signal function.
    GetSignal = 1,
    /// A candle fetch.
    GetCandles = 2,
    /// The VWAP.
    GetAveragePrice = 3,
    /// The replay of an opened signal.
    Backtest = 4,
}

impl Hook {
    /// The metric type it is reported as.
    pub(crate) fn metric_type(self) -> MetricType {
        MetricType::BUILT_IN[self as usize]
    }

    /// Its name: the metric type's.
    pub(crate) fn name(self) -> &'static str {
        self.metric_type().as_str()
    }
}

/// A started hook: `None` when tracking was off at its start.
#[derive(Debug)]
#[must_use = "finish the hook to record it"]
pub(crate) struct Started(Option<Begun>);

/// How a timed hook began.
#[derive(Debug)]
enum Begun {
    /// On the thread's span stack: operations may open inside it.
    Open(Open),
    /// At this moment (ns of the process clock), not pushed: a leaf, inside which nothing
    /// is timed, closed with [`span::close_leaf`].
    Leaf(u64),
}

/// The moment a hook finished (ns of the process clock), to start or finish an adjacent
/// hook with: one clock read serves both. `None` when tracking was off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended(Option<u64>);

/// Times the hooks of one run of one symbol:strategy.
///
/// Every hook is measured once, with the process clock of [`crate::span`], and opened on
/// the thread's span stack, so nested hooks (and user code timed with
/// [`crate::facade::time`] inside them) get their parent's id and leave their parent's
/// self time.
pub(crate) struct HookTimer {
    bus: PerformanceEmitter,
    symbol: Name,
    strategy: Name,
    previous: [Option<f64>; 5],
    buffer: Vec<PerformanceContract>,
    /// The last simulated time converted, and its conversion: every hook of a frame
    /// shares one `when`.
    when: SimulatedTime,
    /// The hooks' thresholds in ns, for comparing clock readings; `thresholds` judges.
    thresholds_ns: [u64; 5],
    thresholds: Thresholds,
    slow: Vec<SlowHook>,
    slow_total: u64,
    /// The run's tracker: it keeps these measurements for its timeline instead of
    /// timing the hooks again.
    tracker: Tracker,
    /// The thread's CPU time when the current tick started, while the tracker records.
    tick_cpu_ns: Option<u64>,
    /// Allocation counters when the signal function started (memory tracking on).
    signal_memory: Option<(u64, u64)>,
    /// Allocation counters when the current tick started (memory tracking on).
    tick_memory: Option<(u64, u64)>,
    /// Whether the current tick is left untimed (sampling), and the hooks so left since
    /// the last flush.
    paused: bool,
    untimed: [u64; 5],
    /// This thread's CPU-profile samples while a profile runs, and the stacks taken
    /// during each kept slow hook (resolved to names when the run ends).
    #[cfg(all(feature = "profile", target_os = "linux"))]
    samples: Option<crate::export::profile::samples::ThreadSamples>,
    #[cfg(all(feature = "profile", target_os = "linux"))]
    slow_samples: Vec<crate::export::profile::samples::Taken>,
}

/// Stacks kept per slow hook for its profile (the newest; all are counted).
#[cfg(all(feature = "profile", target_os = "linux"))]
const SLOW_STACKS_KEPT: usize = 256;

impl HookTimer {
    /// A timer emitting onto `bus` for `symbol`:`strategy`, judging slowness by the
    /// thresholds of `options`.
    pub(crate) fn new(
        bus: PerformanceEmitter,
        symbol: Name,
        strategy: Name,
        options: &TrackerOptions,
        tracker: Tracker,
    ) -> Self {
        let thresholds_ns =
            MetricType::BUILT_IN.map(|t| options.thresholds.threshold_ns(t.as_str()));
        // Only a run whose events go to the bus fills it: one the storage kept from a run
        // before, or a new one.
        let buffer = if bus.is_enabled() {
            bus.take_buffer(BUFFER).unwrap_or_else(touched_buffer)
        } else {
            Vec::new()
        };
        HookTimer {
            bus,
            symbol,
            strategy,
            previous: [None; 5],
            buffer,
            when: SimulatedTime::new(0),
            thresholds_ns,
            thresholds: options.thresholds.clone(),
            slow: Vec::new(),
            slow_total: 0,
            tracker,
            tick_cpu_ns: None,
            signal_memory: None,
            tick_memory: None,
            paused: false,
            untimed: [0; 5],
            #[cfg(all(feature = "profile", target_os = "linux"))]
            samples: crate::export::profile::samples::ThreadSamples::attach(),
            #[cfg(all(feature = "profile", target_os = "linux"))]
            slow_samples: Vec::new(),
        }
    }

    /// Times the hooks from now on (`true`), or only counts them (`false`: a tick a
    /// sampled run leaves untimed, with everything nested inside it).
    #[inline]
    pub(crate) fn set_timed(&mut self, timed: bool) {
        if self.paused == timed {
            self.paused = !timed;
            span::set_untimed(!timed);
        }
    }

    /// Starts timing a hook now.
    #[inline]
    pub(crate) fn start(&self) -> Started {
        Started(
            self.timing()
                .then(|| Begun::Open(span::enter_at(span::now_ns()))),
        )
    }

    /// Starts timing a candle fetch from `source` now: as a leaf, never pushed on the
    /// thread's span stack, when nothing inside it can be timed (this crate's exchanges
    /// and windows); otherwise as [`start`](Self::start) does.
    #[inline(always)]
    pub(crate) fn start_fetch(&self, source: &Source<'_>) -> Started {
        if !source.fetches_untimed() {
            return self.start();
        }
        Started(self.timing().then(|| Begun::Leaf(span::now_ns())))
    }

    /// Whether hooks started now are timed: the bus is on and the tick is not left
    /// untimed by sampling.
    #[inline]
    fn timing(&self) -> bool {
        !self.paused && self.bus.is_enabled()
    }

    /// Starts timing a tick. While the tracker keeps a timeline, the thread's CPU time is
    /// read around it too, so a slow tick says whether its thread ran or waited.
    #[inline]
    pub(crate) fn start_tick(&mut self) -> Started {
        if self.timing() {
            self.prefetch_tick_slots();
            self.read_tick_cpu();
        }
        self.start()
    }

    /// Asks for the cache lines of the buffer slots that this tick's events, and the
    /// next tick's, will be written to. The buffer was last written a window ago (the
    /// storage's window held it) or in a run before: its lines are out of the L1 cache,
    /// and a tick's stores into them held up its recording (in a run sampled 1 tick in
    /// 32, `perf annotate` found 43% of `finish_pair_timed` waiting at those stores).
    #[inline(always)]
    fn prefetch_tick_slots(&self) {
        crate::perf::event::prefetch_slots::<TICK_SLOTS_AHEAD>(
            self.buffer.as_ptr().wrapping_add(self.buffer.len()),
        );
    }

    /// Reads the thread's CPU time and allocation counters as a timed tick starts, while
    /// the tracker records: before the clock, so that the system call is not in the
    /// tick's time.
    #[inline]
    fn read_tick_cpu(&mut self) {
        if self.tracker.is_enabled() {
            self.tick_cpu_ns = span::thread_cpu_ns();
            self.tick_memory = self.tracker.memory_counters();
        }
    }

    /// Starts timing a tick and the signal function it calls at once, as
    /// [`start_tick`](Self::start_tick) and then starting the signal function at the same
    /// moment would, with one visit to the thread's span stack.
    #[inline]
    pub(crate) fn start_tick_and_signal(&mut self) -> (Started, Started) {
        if !self.timing() {
            return (Started(None), Started(None));
        }
        self.prefetch_tick_slots();
        self.read_tick_cpu();
        let (tick, signal) = span::enter_pair_at(span::now_ns());
        (
            Started(Some(Begun::Open(tick))),
            Started(Some(Begun::Open(signal))),
        )
    }

    /// Finishes a hook started with [`start`](Self::start); `when` is the simulated time.
    /// Returns the moment it finished.
    #[inline]
    pub(crate) fn finish(&mut self, hook: Hook, started: Started, when: Millis) -> Ended {
        let Some(begun) = started.0 else {
            if self.paused {
                self.untimed[hook as usize] += 1;
            }
            return Ended(None);
        };
        self.finish_timed(hook, begun, when)
    }

    /// [`finish`](Self::finish) of a timed hook, out of line: an untimed hook (31 in 32
    /// of a run sampled 1 in 32) then costs a branch and a count in the caller, not a
    /// call into the whole recording path.
    #[inline(never)]
    fn finish_timed(&mut self, hook: Hook, begun: Begun, when: Millis) -> Ended {
        let end = span::now_ns();
        self.record(hook, begun, end, when);
        Ended(Some(end))
    }

    /// Finishes a hook at a moment already read by [`finish`](Self::finish).
    #[inline]
    pub(crate) fn finish_at(&mut self, hook: Hook, started: Started, end: Ended, when: Millis) {
        match (started.0, end.0) {
            (Some(begun), Some(end)) => self.record(hook, begun, end, when),
            _ if self.paused => self.untimed[hook as usize] += 1,
            _ => {}
        }
    }

    #[inline]
    fn record(&mut self, hook: Hook, begun: Begun, end_ns: u64, when: Millis) {
        let (start_ns, closed, depth) = match begun {
            Begun::Open(open) => {
                let (start_ns, depth) = (open.start_ns, open.depth);
                (start_ns, span::exit_at(open, end_ns), depth)
            }
            Begun::Leaf(start_ns) => {
                let (closed, depth) = span::close_leaf(start_ns, end_ns);
                (start_ns, closed, depth)
            }
        };
        self.record_closed(hook, (start_ns, end_ns), depth, closed, when);
    }

    /// Finishes the signal function and the tick that called it at the same moment (the
    /// tick had nothing else to do): what [`finish`](Self::finish) and then
    /// [`finish_at`](Self::finish_at) with its moment do, with one visit to the thread's
    /// span stack.
    #[inline]
    pub(crate) fn finish_signal_and_tick(&mut self, signal: Started, tick: Started, when: Millis) {
        match (signal.0, tick.0) {
            (Some(Begun::Open(signal)), Some(Begun::Open(tick))) => {
                self.finish_pair_timed((signal, tick), when);
            }
            (signal, tick) => {
                let end = self.finish(Hook::GetSignal, Started(signal), when);
                self.finish_at(Hook::Tick, Started(tick), end, when);
            }
        }
    }

    /// [`finish_signal_and_tick`](Self::finish_signal_and_tick) of a timed tick, out of
    /// line as [`finish_timed`](Self::finish_timed) is.
    #[inline(never)]
    fn finish_pair_timed(&mut self, (signal, tick): (Open, Open), when: Millis) {
        let end_ns = span::now_ns();
        let (signal_at, tick_at) = ((signal.start_ns, signal.depth), (tick.start_ns, tick.depth));
        let (signal, tick) = span::exit_pair_at(signal, tick, end_ns);
        self.record_closed(
            Hook::GetSignal,
            (signal_at.0, end_ns),
            signal_at.1,
            signal,
            when,
        );
        self.record_closed(Hook::Tick, (tick_at.0, end_ns), tick_at.1, tick, when);
    }

    /// Records a closed hook that ran from `start_ns` to `end_ns` at `depth`. Always
    /// inlined: called out of line, it took more instructions than it saved.
    #[inline(always)]
    fn record_closed(
        &mut self,
        hook: Hook,
        (start_ns, end_ns): (u64, u64),
        depth: u32,
        closed: span::Closed,
        when: Millis,
    ) {
        if self.when.when != when {
            self.when.step(when);
        }
        let thread_cpu_ms = if self.tracker.is_enabled() {
            self.track(hook, start_ns, depth, &closed)
        } else {
            None
        };
        if closed.duration_ns > self.thresholds_ns[hook as usize] {
            self.slow_hook(hook, (start_ns, end_ns), closed.duration_ns, thread_cpu_ms);
        }
        let event = closed.event(hook.metric_type(), end_ns);
        let previous = self.previous[hook as usize].replace(event.timestamp);
        if self.buffer.len() == self.buffer.capacity() {
            // A tick holds the buffer past BATCH until it ends; growing it is this
            // crate's bookkeeping, not memory the hook running now allocated.
            grow(&mut self.buffer);
        }
        self.buffer.push(PerformanceContract {
            previous_timestamp: previous,
            symbol: Some(self.symbol),
            strategy_name: Some(self.strategy),
            when: Some(self.when.utc),
            ..event
        });
        // Handed over at a tick's end only, so that a hook's outcome can still be marked
        // (`fail_last`) until its tick ends.
        if hook == Hook::Tick && self.buffer.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands a timed hook to the run's tracker (its timeline and slow operations), with
    /// the thread's CPU time of a listed tick; returns that CPU time, ms. Out of line:
    /// only a run with a timeline or memory tracking comes here, and inlined, its
    /// registers made every hook's recording save and restore more of them.
    #[inline(never)]
    fn track(
        &mut self,
        hook: Hook,
        start_ns: u64,
        depth: u32,
        closed: &span::Closed,
    ) -> Option<f64> {
        // The tracker's bookkeeping (the metadata below) is not the hook's memory.
        let _own = crate::tracker::memory::Uncounted::begin();
        let cpu_start = if hook == Hook::Tick {
            self.tick_cpu_ns.take()
        } else {
            None
        };
        // The second system call only for a tick that is listed: over its threshold
        // (a slow hook), or kept by the tracker (a warm-up or among the slowest).
        let listed = |closed: &span::Closed| {
            closed.parent.is_some()
                || closed.duration_ns > self.thresholds_ns[hook as usize]
                || self.tracker.would_keep_root(closed.duration_ns)
        };
        let thread_cpu_ms = cpu_start.filter(|_| listed(closed)).and_then(|cpu_start| {
            span::thread_cpu_ns().map(|cpu_end| cpu_end.saturating_sub(cpu_start) as f64 / 1e6)
        });
        let meta = thread_cpu_ms.map(|cpu_ms| serde_json::json!({ "threadCpuMs": cpu_ms }));
        let memory_at_start = match hook {
            Hook::GetSignal => self.signal_memory.take(),
            Hook::Tick => self.tick_memory.take(),
            _ => None,
        };
        self.tracker.record_measured_with_memory(
            hook.name(),
            start_ns,
            depth,
            closed,
            meta,
            memory_at_start,
        );
        thread_cpu_ms
    }

    /// Reads the allocation counters as the signal function starts, when the tracker
    /// records memory: its getSignal then carries what it allocated.
    #[inline]
    pub(crate) fn mark_signal_memory(&mut self) {
        self.signal_memory = self.tracker.memory_counters();
    }

    /// Marks the latest event of `hook` still buffered as failed (`ok: false`): a
    /// strategy that returned an error, a signal that was rejected.
    pub(crate) fn fail_last(&mut self, hook: Hook) {
        let metric = hook.metric_type();
        if let Some(event) = self
            .buffer
            .iter_mut()
            .rev()
            .find(|e| e.metric_type == metric)
        {
            event.ok = Some(false);
        }
    }

    #[cold]
    fn slow_hook(
        &mut self,
        hook: Hook,
        (start_ns, end_ns): (u64, u64),
        duration_ns: u64,
        thread_cpu_ms: Option<f64>,
    ) {
        let duration_ms = duration_ns as f64 / 1e6;
        self.slow_total += 1;
        if self.slow.len() < SLOW_HOOKS_KEPT {
            // The list grows inside the enclosing hook (a tick around a slow signal
            // function): this crate's bookkeeping, not memory that hook allocated.
            let _own = crate::tracker::memory::Uncounted::begin();
            #[cfg(all(feature = "profile", target_os = "linux"))]
            if let Some(samples) = &self.samples {
                self.slow_samples
                    .push(samples.between(start_ns, end_ns, SLOW_STACKS_KEPT));
            }
            #[cfg(not(all(feature = "profile", target_os = "linux")))]
            let _ = (start_ns, end_ns);
            let name = hook.name();
            let (threshold_ms, slowness_ratio) = (
                self.thresholds.threshold_ms(name),
                self.thresholds.ratio(name, duration_ms),
            );
            self.slow.push(SlowHook {
                metric_type: hook.metric_type(),
                when: self.when.utc,
                duration_ms,
                threshold_ms,
                slowness_ratio,
                thread_cpu_ms,
                profile: None,
            });
        }
    }

    /// The slow hooks so far (at most [`SLOW_HOOKS_KEPT`]) and how many there were.
    /// With a CPU profile running, each carries the samples taken while it ran.
    pub(crate) fn take_slow(&mut self) -> (Vec<SlowHook>, u64) {
        #[cfg_attr(not(all(feature = "profile", target_os = "linux")), allow(unused_mut))]
        let mut slow = std::mem::take(&mut self.slow);
        #[cfg(all(feature = "profile", target_os = "linux"))]
        if self.samples.take().is_some() {
            let mut symbols = crate::export::profile::samples::Symbols::default();
            for (hook, taken) in slow.iter_mut().zip(std::mem::take(&mut self.slow_samples)) {
                hook.profile = Some(crate::export::profile::samples::describe(
                    &mut symbols,
                    &taken,
                ));
            }
        }
        (slow, self.slow_total)
    }

    /// Hands buffered events, and the counts of untimed hooks, to the bus now.
    pub(crate) fn flush(&mut self) {
        self.bus.emit_measured_batch(&mut self.buffer);
        for (i, metric) in MetricType::BUILT_IN.into_iter().enumerate() {
            let count = std::mem::take(&mut self.untimed[i]);
            self.bus
                .count_untimed(&self.symbol, &self.strategy, metric, count);
        }
    }
}

/// Event slots asked for as a tick starts (about two ticks' events of the bundled
/// strategies). The year with tracking on ran 0.2-0.4 ms faster with 8 than with 4, and
/// 0.4-0.6 ms slower with 16.
const TICK_SLOTS_AHEAD: usize = 8;

/// The events the engine's buffer holds: see [`touched_buffer`].
const BUFFER: usize = BATCH + 64;

/// Room for the events of a batch and of the tick that completes it (a tick holds the
/// buffer past [`BATCH`] until it ends; 64 more events than a batch hold any tick of the
/// bundled strategies), its pages touched now: growing or first touching it inside a hook
/// (the buffer is allocated by `mmap`) took 50 µs, and made that tick the run's slowest.
fn touched_buffer() -> Vec<PerformanceContract> {
    let mut buffer = Vec::with_capacity(BUFFER);
    crate::tracker::memory::touch_spare(&mut buffer);
    buffer
}

/// Makes room for another batch, uncounted by the tracker's memory readings.
#[cold]
fn grow(buffer: &mut Vec<PerformanceContract>) {
    let _own = crate::tracker::memory::Uncounted::begin();
    buffer.reserve(BATCH);
}

impl Drop for HookTimer {
    fn drop(&mut self) {
        self.set_timed(true);
        self.flush();
        // Its pages in memory: the storage keeps it for the next run.
        self.bus.give_buffer(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `--timeline` run reads the thread's CPU time (a system call) at the start of
    /// each timed tick and at the end of each one it lists: a sampled run reads it for
    /// the ticks it times only.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_sampled_timeline_reads_the_cpu_time_of_timed_ticks_only() {
        use crate::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
        use crate::span::CPU_READS;
        let exchange = SyntheticExchange::new(Name::new("SYN"), SyntheticConfig::days(2))
            .unwrap_or_else(|e| panic!("{e}"));
        let bus = PerformanceEmitter::new();
        let config = BacktestConfig {
            sample_every: 4,
            tracker: TrackerOptions {
                keep_slowest_roots: Some(3),
                ..TrackerOptions::default()
            },
            ..BacktestConfig::default()
        };
        let backtest = Backtest::new(&exchange, "SYN")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_bus(bus)
            .with_config(config);
        let before = CPU_READS.with(std::cell::Cell::get);
        let result = backtest
            .run(&mut crate::strategies::SmaCrossover::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let reads = CPU_READS.with(std::cell::Cell::get) - before;
        let timed = result.frames.div_ceil(4);
        assert!(result.frames > 400, "{}", result.frames);
        // One read per timed tick, and a second for those it lists (warm-ups, the
        // slowest so far, slow ones; at most all of them): never one for an untimed tick.
        assert!(
            (timed..=timed * 2).contains(&reads),
            "{reads} reads for {timed} timed ticks of {}",
            result.frames
        );
    }

    #[test]
    fn a_run_hands_its_buffer_to_the_storage_and_the_next_run_takes_it_back() {
        use crate::PerformanceService;
        use crate::engine::{Backtest, SyntheticConfig, SyntheticExchange};
        // Short runs: fewer events than a batch, handed over once, as the run ends.
        let config = SyntheticConfig {
            minutes: 300,
            ..SyntheticConfig::days(1)
        };
        let exchange =
            SyntheticExchange::new(Name::new("SYN"), config).unwrap_or_else(|e| panic!("{e}"));
        let bus = PerformanceEmitter::new();
        let service = PerformanceService::attached(&bus);
        let run = || {
            Backtest::new(&exchange, "SYN")
                .unwrap_or_else(|e| panic!("{e}"))
                .with_bus(bus.clone())
                .run(&mut crate::strategies::SmaCrossover::default())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(service.storage().kept_buffers().is_empty());
        let first = run();
        assert!(first.frames > 50, "{}", first.frames);
        // The window adopted the run's buffer as the run ended and gave it a new one in
        // its place, which the run handed to the storage as it ended.
        let kept = service.storage().kept_buffers();
        assert_eq!(kept.len(), 1);
        // The next run starts with that buffer: its window adopts it, and the buffer the
        // storage keeps afterwards is another.
        let _second = run();
        let now = service.storage().kept_buffers();
        assert_eq!(now.len(), 1);
        assert_ne!(now, kept, "the next run took the kept buffer");
    }

    #[test]
    fn stepping_the_simulated_time_converts_as_the_calendar_does() {
        // Across a day, a month, a leap day and a year; backwards; by more than a day;
        // at the ends of the representable range.
        let starts = [
            0,
            1_709_164_740_000, // 2024-02-28T23:59:00Z
            1_735_689_540_000, // 2024-12-31T23:59:00Z
            -86_400_001,
            i64::MAX - 5,
            i64::MIN + 5,
            // A minute inside the ends of chrono's range, stepping out of it.
            DateTime::<Utc>::MAX_UTC.timestamp_millis() - 60_000,
            DateTime::<Utc>::MIN_UTC.timestamp_millis() + 60_000,
        ];
        let steps = [1, 60_000, 86_399_999, 86_400_000, 86_400_001, -60_000, 3];
        let mut checked = 0;
        for start in starts {
            let mut at = SimulatedTime::new(start);
            for _ in 0..3 {
                for step in steps {
                    let from = at.when;
                    let when = from.saturating_add(step);
                    at.step(when);
                    assert_eq!(
                        (at.when, at.utc),
                        (when, to_utc(when)),
                        "from {from} by {step}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8 * 3 * 7);
    }
}
