//! What a tracker records, and the report it ends with.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::memory::ResourceSnapshot;
use super::{Precision, RunInfo, TrackerOptions};

/// A mark or an operation.
///
/// ```
/// assert_eq!(serde_json::to_string(&backtest_perf::tracker::EventKind::Mark).unwrap(), "\"mark\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An instant ([`Tracker::track`](super::Tracker::track)).
    Mark,
    /// A timed operation.
    Operation,
}

/// Memory of one operation: what its thread allocated and freed meanwhile (with the
/// counting allocator installed), and the process RSS when it ended.
///
/// ```
/// use backtest_perf::tracker::MemoryDelta;
/// let m = MemoryDelta { allocated: 4096, freed: 1024, rss_bytes: Some(1 << 20) };
/// assert_eq!(m.net(), 3072);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryDelta {
    /// Bytes allocated.
    pub allocated: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Resident set size at the end, bytes.
    pub rss_bytes: Option<u64>,
}

impl MemoryDelta {
    /// Allocated minus freed.
    ///
    /// ```
    /// # use backtest_perf::tracker::MemoryDelta;
    /// assert_eq!(MemoryDelta { allocated: 100, freed: 300, rss_bytes: None }.net(), -200);
    /// ```
    pub fn net(&self) -> i64 {
        self.allocated as i64 - self.freed as i64
    }
}

/// One recorded mark or operation. Times in milliseconds, at the tracker's precision
/// (see [`TrackerReport`] for a whole report).
///
/// ```
/// use backtest_perf::tracker::{EventKind, RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("r"), TrackerOptions::default());
/// tracker.track("ready", None);
/// let event = &tracker.finish().unwrap().events[0];
/// assert_eq!((event.kind, event.duration_ms, event.name.as_ref()), (EventKind::Mark, 0.0, "ready"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedEvent {
    /// Unique within the run.
    pub id: u64,
    /// The operation it happened inside, on the same thread.
    pub parent: Option<u64>,
    /// Nesting depth (0 at the top).
    pub depth: u32,
    /// Its name.
    pub name: Cow<'static, str>,
    /// Mark or operation.
    pub kind: EventKind,
    /// When it started, from the run's start.
    pub offset_ms: f64,
    /// How long it took (0 for a mark).
    pub duration_ms: f64,
    /// Time since the previous event started.
    pub gap_ms: f64,
    /// Its duration less the durations of its children.
    pub self_ms: f64,
    /// Metadata given at start and end; an operation's metadata gains its `duration` (ms).
    pub metadata: Option<Value>,
    /// Memory, when tracked.
    pub memory: Option<MemoryDelta>,
    /// Whether it exceeded its threshold.
    pub slow: bool,
    /// Start from the run's start, ns, as measured (the fields above are rounded).
    #[serde(skip)]
    pub start_ns: u64,
    /// Duration, ns, as measured.
    #[serde(skip)]
    pub duration_ns: u64,
    /// The thread that recorded it ([`crate::span::thread_index`]).
    pub thread: u64,
}

/// An event as recorded on the hot path: raw nanoseconds, converted in the report.
pub(crate) struct Raw {
    pub id: u64,
    /// The recording thread's index.
    pub thread: u64,
    pub parent: Option<u64>,
    pub depth: u32,
    pub name: Cow<'static, str>,
    pub kind: EventKind,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub self_ns: u64,
    /// Metadata and memory, boxed: rare, and the event is moved on the hot path.
    pub detail: Option<Box<Detail>>,
    pub slow: bool,
}

/// The rarely present parts of a recorded event.
#[derive(Default)]
pub(crate) struct Detail {
    pub meta: Option<Value>,
    pub extra: Option<Value>,
    pub memory: Option<MemoryDelta>,
}

impl Detail {
    /// `None` when there is nothing to keep.
    pub fn boxed(
        meta: Option<Value>,
        extra: Option<Value>,
        memory: Option<MemoryDelta>,
    ) -> Option<Box<Detail>> {
        (meta.is_some() || extra.is_some() || memory.is_some()).then(|| {
            Box::new(Detail {
                meta,
                extra,
                memory,
            })
        })
    }
}

impl TrackedEvent {
    fn from_raw(raw: &Raw, options: &TrackerOptions) -> Self {
        let p = options.precision;
        let duration_ms = p.ms(raw.duration_ns);
        let empty = Detail::default();
        let detail = raw.detail.as_deref().unwrap_or(&empty);
        let metadata = if !options.include_metadata {
            None
        } else if raw.kind == EventKind::Mark {
            detail.meta.clone()
        } else if detail.meta.is_some() || detail.extra.is_some() {
            let mut fields = match detail.meta.clone() {
                Some(Value::Object(map)) => map,
                Some(other) => serde_json::Map::from_iter([("value".to_string(), other)]),
                None => serde_json::Map::new(),
            };
            match detail.extra.clone() {
                Some(Value::Object(map)) => fields.extend(map),
                Some(other) => {
                    fields.insert("end".to_string(), other);
                }
                None => {}
            }
            fields.insert("duration".to_string(), Value::from(duration_ms));
            Some(Value::Object(fields))
        } else {
            None
        };
        TrackedEvent {
            id: raw.id,
            parent: raw.parent,
            depth: raw.depth,
            name: raw.name.clone(),
            kind: raw.kind,
            offset_ms: p.ms(raw.start_ns),
            duration_ms,
            gap_ms: 0.0, // set in the report, from start order
            self_ms: p.ms(raw.self_ns),
            metadata,
            memory: detail.memory,
            slow: raw.slow,
            start_ns: raw.start_ns,
            thread: raw.thread,
            duration_ns: raw.duration_ns,
        }
    }
}

/// An operation over its threshold (see [`TrackerReport`] for one in a report).
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// // A threshold of 1 ns: every operation is slow.
/// let options = TrackerOptions { thresholds: backtest_perf::thresholds::Thresholds::new(1e-6).unwrap(), ..TrackerOptions::default() };
/// let tracker = Tracker::new(RunInfo::named("doc"), options);
/// tracker.measure("op", || std::thread::sleep(std::time::Duration::from_millis(1)));
/// let report = tracker.finish().unwrap();
/// let slow = &report.slow_events[0];
/// assert_eq!((slow.name.as_ref(), slow.threshold_ms), ("op", 1e-6));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowEvent {
    /// The event's id.
    pub id: u64,
    /// Its name.
    pub name: Cow<'static, str>,
    /// When it started, from the run's start, ms.
    pub offset_ms: f64,
    /// How long it took, ms.
    pub duration_ms: f64,
    /// The threshold it exceeded, ms.
    pub threshold_ms: f64,
    /// `duration / threshold`.
    pub slowness_ratio: f64,
    /// CPU time and RSS when it was detected.
    pub resources: ResourceSnapshot,
    /// The CPU profile's samples taken on its thread while it ran, when a profile runs
    /// (`backtest --profile`) and the operation ran inside a backtest; `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<SlowProfile>,
}

/// What a CPU profile saw while a slow operation ran: the samples taken on its thread
/// between its start and its end (the same samples as the profile file's).
///
/// ```
/// use backtest_perf::tracker::{SampledFunction, SlowProfile};
/// let profile = SlowProfile {
///     samples: 4,
///     truncated: false,
///     on_cpu: vec![SampledFunction { function: "my_strategy::score".into(), samples: 3 }],
///     stack: "main;my_strategy::signal;my_strategy::score".into(),
///     stack_samples: 3,
/// };
/// assert_eq!(profile.to_string(), "4 samples, on the CPU: my_strategy::score 75.0%");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowProfile {
    /// Samples taken while the operation ran.
    pub samples: u32,
    /// Whether the operation ran longer than the samples kept on a thread (4,096): its
    /// oldest samples were gone when it ended.
    pub truncated: bool,
    /// Where the CPU was: per sample, the innermost function of the program's own code
    /// (not the standard library's, a dependency's or the C library's; the innermost
    /// when none is), most samples first (at most 5).
    pub on_cpu: Vec<SampledFunction>,
    /// The stack seen most often, outermost first, `;`-separated (the folded format
    /// flamegraph tools read); empty without samples.
    pub stack: String,
    /// Samples with that stack.
    pub stack_samples: u32,
}

/// A function and the samples in which it was on top of the stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SampledFunction {
    /// The function's name, demangled.
    pub function: String,
    /// Samples.
    pub samples: u32,
}

impl std::fmt::Display for SlowProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let samples = if self.samples == 1 {
            "sample"
        } else {
            "samples"
        };
        write!(f, "{} {samples}", self.samples)?;
        if self.samples == 0 {
            // Most operations are far shorter than the sampling period.
            return write!(f, " (the profiler samples every 1 to 4 ms of CPU time)");
        }
        if self.truncated {
            write!(f, " (the newest; older ones were gone)")?;
        }
        if !self.on_cpu.is_empty() {
            let top: Vec<String> = self
                .on_cpu
                .iter()
                .take(3)
                .map(|s| {
                    format!(
                        "{} {}%",
                        s.function,
                        crate::report::sig3(
                            f64::from(s.samples) / f64::from(self.samples.max(1)) * 100.0
                        )
                    )
                })
                .collect();
            write!(f, ", on the CPU: {}", top.join(", "))?;
        }
        Ok(())
    }
}

/// An operation whose thread allocated more than the memory threshold beyond what it
/// freed (needs the counting allocator; see [`crate::tracker::memory`]).
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// // A threshold of 1 ns: every operation is slow.
/// let options = TrackerOptions { thresholds: backtest_perf::thresholds::Thresholds::new(1e-6).unwrap(), ..TrackerOptions::default() };
/// let tracker = Tracker::new(RunInfo::named("doc"), options);
/// tracker.measure("op", || std::thread::sleep(std::time::Duration::from_millis(1)));
/// let report = tracker.finish().unwrap();
/// assert!(report.memory_spikes.is_empty(), "memory was not tracked");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemorySpike {
    /// The event's id.
    pub id: u64,
    /// Its name.
    pub name: Cow<'static, str>,
    /// When it started, from the run's start, ms.
    pub offset_ms: f64,
    /// Allocated minus freed, bytes.
    pub net_bytes: i64,
}

/// Slow-operation statistics of one operation name, over every operation (dropped ones too).
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// // A threshold of 1 ns: every operation is slow.
/// let options = TrackerOptions { thresholds: backtest_perf::thresholds::Thresholds::new(1e-6).unwrap(), ..TrackerOptions::default() };
/// let tracker = Tracker::new(RunInfo::named("doc"), options);
/// tracker.measure("op", || std::thread::sleep(std::time::Duration::from_millis(1)));
/// let report = tracker.finish().unwrap();
/// let op = report.stats["op"];
/// assert_eq!((op.count, op.slow_count, op.slow_percent), (1, 1, 100.0));
/// assert!(op.min_ms >= 1.0 && op.min_ms == op.max_ms);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowStats {
    /// Operations.
    pub count: u64,
    /// Slow ones.
    pub slow_count: u64,
    /// `slow_count / count * 100`.
    pub slow_percent: f64,
    /// Mean duration, ms.
    pub avg_ms: f64,
    /// Shortest, ms.
    pub min_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
}

/// The thresholds a run was judged by.
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// // A threshold of 1 ns: every operation is slow.
/// let options = TrackerOptions { thresholds: backtest_perf::thresholds::Thresholds::new(1e-6).unwrap(), ..TrackerOptions::default() };
/// let tracker = Tracker::new(RunInfo::named("doc"), options);
/// tracker.measure("op", || std::thread::sleep(std::time::Duration::from_millis(1)));
/// let report = tracker.finish().unwrap();
/// assert_eq!(report.thresholds.slow_ms, 1e-6);
/// assert!(report.thresholds.by_name_ms.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Default slow threshold, ms.
    pub slow_ms: f64,
    /// Thresholds by name, ms.
    pub by_name_ms: BTreeMap<String, f64>,
    /// Memory spike threshold, bytes.
    pub memory_bytes: u64,
}

/// Everything a tracker recorded in one run. Serializes to JSON.
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("r"), TrackerOptions { thresholds: backtest_perf::thresholds::Thresholds::new(1e-6).unwrap(), ..Default::default() });
/// tracker.measure("step", || std::thread::sleep(std::time::Duration::from_millis(1)));
/// let report = tracker.finish().unwrap();
/// assert_eq!((report.event_count, report.slow_events.len(), report.stats["step"].slow_count), (1, 1, 1));
/// assert!(report.slow_events[0].slowness_ratio >= 1e6, "1 ms against 1 ns");
/// assert!(serde_json::to_value(&report).unwrap()["events"][0]["durationMs"].as_f64().unwrap() >= 1.0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerReport {
    /// With [`TrackerOptions::keep_slowest_roots`]: the root operations (ticks) whose
    /// one-time costs (first allocations, cold caches, lazy initialisation) make them
    /// warm-ups rather than slow code: the first one, and each later one inside which an
    /// operation ran for the first time (at most [`WARM_UPS_KEPT`]), in start order.
    /// Their subtrees are in `events`; they are left out of `slowest_roots`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warm_ups: Vec<WarmUp>,
    /// With [`TrackerOptions::keep_slowest_roots`]: the ids of the slowest root operations
    /// after the warm-up, slowest first; their subtrees are in `events`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slowest_roots: Vec<u64>,
    /// The run.
    pub run: RunInfo,
    /// From the tracker's creation to `finish`, ms.
    pub total_duration_ms: f64,
    /// RSS at finish minus RSS at creation, bytes (with memory tracking).
    pub total_memory_delta_bytes: Option<i64>,
    /// Events recorded, dropped ones included.
    pub event_count: u64,
    /// The kept events, by start time.
    pub events: Vec<TrackedEvent>,
    /// Every slow operation.
    pub slow_events: Vec<SlowEvent>,
    /// Every memory spike.
    pub memory_spikes: Vec<MemorySpike>,
    /// The thresholds in force.
    pub thresholds: Thresholds,
    /// Events not kept because of `max_events` (never slow ones).
    pub dropped: u64,
    /// Slow-operation statistics by operation name (for the engine: by metric type).
    pub stats: BTreeMap<String, SlowStats>,
    /// The precision of the times above.
    pub precision: Precision,
}

fn slow_event(event: &Raw, options: &TrackerOptions) -> SlowEvent {
    let threshold_ms = options.threshold_ms(&event.name);
    let duration_ms = event.duration_ns as f64 / 1e6;
    SlowEvent {
        id: event.id,
        name: event.name.clone(),
        offset_ms: options.precision.ms(event.start_ns),
        duration_ms: options.precision.ms(event.duration_ns),
        threshold_ms,
        slowness_ratio: options.thresholds.ratio(&event.name, duration_ms),
        resources: ResourceSnapshot::now(),
        profile: None,
    }
}

/// Stacks kept per slow operation of a tracker for its profile (all are counted): 1,000
/// slow operations listed at most, about 6 KB each.
#[cfg(all(feature = "profile", target_os = "linux"))]
const TRACKER_STACKS_KEPT: usize = 16;

#[derive(Clone, Copy, Default)]
struct Running {
    threshold_ns: u64,
    count: u64,
    slow: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

type Fast = foldhash::fast::RandomState;

#[derive(Default)]
pub(crate) struct State {
    events: Vec<Raw>,
    dropped: u64,
    /// With [`TrackerOptions::keep_slowest_roots`]: the events of the root operation in
    /// progress (children close first, then the root), the first root's subtree (its
    /// warm-up), and the slowest later subtrees by the root's duration.
    pending: Vec<Raw>,
    warm_ups: Vec<(WarmUp, Vec<Raw>)>,
    /// The operations run for the first time since the last root closed.
    first_runs: Vec<Cow<'static, str>>,
    slowest: Vec<(u64, Vec<Raw>)>,
    /// Running statistics by name, in order of first use.
    running: Vec<(Cow<'static, str>, Running)>,
    index: HashMap<Cow<'static, str>, usize, Fast>,
    /// The last `&'static str` name looked up (address, length) and its slot: names in
    /// code are static, and a pointer comparison finds them without hashing.
    last_static: Option<(usize, usize, usize)>,
    slow: Vec<SlowEvent>,
    /// The profile samples of listed slow operations, by id, resolved to names when a
    /// report is made.
    #[cfg(all(feature = "profile", target_os = "linux"))]
    slow_samples: Vec<(u64, crate::export::profile::samples::Taken)>,
    spikes: Vec<MemorySpike>,
}

/// A root operation holding one-time costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmUp {
    /// The root operation's id.
    pub root: u64,
    /// The operations that ran for the first time inside it, in order of first run.
    pub first_runs: Vec<String>,
}

/// Warm-up subtrees kept at most (after these, a root whose subtree holds a first run
/// competes for the slowest like any other): operation names may be many.
pub const WARM_UPS_KEPT: usize = 8;

/// Slow events listed in a report, at most; the per-name statistics count them all.
pub const SLOW_EVENTS_KEPT: usize = 1_000;

/// Room made at the start for the subtree of one root operation, so that collecting it
/// allocates nothing inside the operations being measured.
const SUBTREE_ROOM: usize = 64;

impl State {
    pub(crate) fn new(options: &TrackerOptions) -> Self {
        State {
            pending: match options.keep_slowest_roots {
                Some(_) => Vec::with_capacity(SUBTREE_ROOM),
                None => Vec::new(),
            },
            ..State::default()
        }
    }

    /// The running statistics of `name`, created on first use.
    // A `&Cow`, not a `&str`: only a borrowed `'static` name may be found by its address.
    #[allow(clippy::ptr_arg)]
    fn running(&mut self, name: &Cow<'static, str>, options: &TrackerOptions) -> &mut Running {
        let key = match name {
            Cow::Borrowed(s) => Some((s.as_ptr() as usize, s.len())),
            Cow::Owned(_) => None,
        };
        let slot = match (key, self.last_static) {
            (Some(key), Some((ptr, len, slot))) if key == (ptr, len) => slot,
            _ => {
                let slot = match self.index.get(name.as_ref()) {
                    Some(&slot) => slot,
                    None => {
                        if options.keep_slowest_roots.is_some()
                            && self.warm_ups.len() < WARM_UPS_KEPT
                        {
                            self.first_runs.push(name.clone());
                        }
                        self.running.push((
                            name.clone(),
                            Running {
                                min_ns: u64::MAX,
                                threshold_ns: options.thresholds.threshold_ns(name),
                                ..Running::default()
                            },
                        ));
                        self.index.insert(name.clone(), self.running.len() - 1);
                        self.running.len() - 1
                    }
                };
                if let Some((ptr, len)) = key {
                    self.last_static = Some((ptr, len, slot));
                }
                slot
            }
        };
        &mut self.running[slot].1
    }
}

impl State {
    /// Records an event; an operation is judged slow here, against the threshold of its
    /// name (looked up once per name, then kept with its running statistics).
    /// Records `event`; `origin_ns` is the process-clock time its offsets count from
    /// (`None` on another clock), to find the profile samples of a slow one.
    pub(crate) fn record(
        &mut self,
        mut event: Raw,
        options: &TrackerOptions,
        #[cfg_attr(
            not(all(feature = "profile", target_os = "linux")),
            allow(unused_variables)
        )]
        origin_ns: Option<u64>,
    ) {
        if event.kind == EventKind::Operation {
            let running = self.running(&event.name, options);
            event.slow = event.duration_ns > running.threshold_ns;
            running.count += 1;
            running.sum_ns += u128::from(event.duration_ns);
            running.min_ns = running.min_ns.min(event.duration_ns);
            running.max_ns = running.max_ns.max(event.duration_ns);
            if event.slow {
                running.slow += 1;
                self.slow.push(slow_event(&event, options));
                #[cfg(all(feature = "profile", target_os = "linux"))]
                if self.slow.len() <= SLOW_EVENTS_KEPT
                    && let Some(origin) = origin_ns
                {
                    let start = origin.saturating_add(event.start_ns);
                    let end = start.saturating_add(event.duration_ns);
                    if let Some(taken) =
                        crate::export::profile::samples::here(start, end, TRACKER_STACKS_KEPT)
                    {
                        self.slow_samples.push((event.id, taken));
                    }
                }
            }
            if let Some(memory) = event.detail.as_ref().and_then(|d| d.memory)
                && memory.net() > options.memory_threshold_bytes as i64
            {
                self.spikes.push(MemorySpike {
                    id: event.id,
                    name: event.name.clone(),
                    offset_ms: options.precision.ms(event.start_ns),
                    net_bytes: memory.net(),
                });
            }
        }
        if event.slow && self.slow.len() > SLOW_EVENTS_KEPT {
            // Listed slow events are bounded; the statistics above still count them.
            self.slow.pop();
        }
        if let Some(k) = options.keep_slowest_roots {
            self.keep_if_slowest(event, k);
            return;
        }
        let full = self.events.len() >= options.max_events;
        if (full && !event.slow)
            || self.events.len() >= options.max_events.saturating_add(SLOW_EVENTS_KEPT)
        {
            self.dropped += 1;
            return;
        }
        self.events.push(event);
    }

    /// The listed slow operations, each with its profile samples named when it has them.
    fn slow_events(&self) -> Vec<SlowEvent> {
        #[cfg_attr(not(all(feature = "profile", target_os = "linux")), allow(unused_mut))]
        let mut slow = self.slow.clone();
        #[cfg(all(feature = "profile", target_os = "linux"))]
        if !self.slow_samples.is_empty() {
            let mut symbols = crate::export::profile::samples::Symbols::default();
            for (id, taken) in &self.slow_samples {
                if let Some(event) = slow.iter_mut().find(|s| s.id == *id) {
                    event.profile = Some(crate::export::profile::samples::describe(
                        &mut symbols,
                        taken,
                    ));
                }
            }
        }
        slow
    }

    /// Collects a root operation's subtree, then keeps it if it is a warm-up (the first
    /// root, or one inside which an operation ran for the first time) or among the `k`
    /// slowest other roots: memory holds `k + 1 + WARM_UPS_KEPT` subtrees.
    ///
    /// The buffer collecting a subtree keeps its room, not given away with each root: a
    /// new one would be allocated by the first child of the next root, inside its parent
    /// still running, and show as memory that parent allocated. Kept subtrees are copied
    /// out when their root closes, outside any measured operation.
    fn keep_if_slowest(&mut self, event: Raw, k: usize) {
        let is_root = event.parent.is_none() && event.kind == EventKind::Operation;
        self.pending.push(event);
        if !is_root {
            return;
        }
        let (duration, root) = self
            .pending
            .last()
            .map_or((0, 0), |root| (root.duration_ns, root.id));
        let warm_up = self.next_root_is_warm_up();
        let first_runs = std::mem::take(&mut self.first_runs);
        if warm_up {
            let warm_up = WarmUp {
                root,
                first_runs: first_runs.iter().map(|n| n.to_string()).collect(),
            };
            self.warm_ups
                .push((warm_up, self.pending.drain(..).collect()));
            return;
        }
        let fastest = self
            .slowest
            .iter()
            .enumerate()
            .min_by_key(|(_, (d, _))| *d)
            .map(|(i, (d, _))| (i, *d));
        match fastest {
            _ if self.slowest.len() < k => {
                let subtree = self.pending.drain(..).collect();
                self.slowest.push((duration, subtree));
            }
            Some((i, d)) if duration > d => {
                let replaced = &mut self.slowest[i];
                self.dropped += replaced.1.len() as u64;
                replaced.0 = duration;
                replaced.1.clear();
                replaced.1.append(&mut self.pending);
            }
            _ => {
                self.dropped += self.pending.len() as u64;
                self.pending.clear();
            }
        }
    }

    /// Whether the root operation closing next is a warm-up: the first root, or one inside
    /// which an operation ran for the first time (while fewer than [`WARM_UPS_KEPT`] are kept).
    fn next_root_is_warm_up(&self) -> bool {
        self.warm_ups.is_empty()
            || (!self.first_runs.is_empty() && self.warm_ups.len() < WARM_UPS_KEPT)
    }

    /// Whether a root operation of `duration_ns` closing next would be kept by
    /// [`keep_if_slowest`](Self::keep_if_slowest) with `k` slowest: a warm-up, or one
    /// of the `k` slowest so far.
    pub(crate) fn would_keep_root(&self, duration_ns: u64, k: usize) -> bool {
        self.next_root_is_warm_up()
            || self.slowest.len() < k
            || self.slowest.iter().any(|(d, _)| duration_ns > *d)
    }

    pub(crate) fn report(
        &mut self,
        run: &RunInfo,
        options: &TrackerOptions,
        total_ns: u64,
        memory_delta: Option<i64>,
    ) -> TrackerReport {
        let warm_ups = self.warm_ups.iter().map(|(w, _)| w.clone()).collect();
        let mut by_duration: Vec<&(u64, Vec<Raw>)> = self.slowest.iter().collect();
        by_duration.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let slowest_roots: Vec<u64> = by_duration
            .iter()
            .filter_map(|(_, subtree)| subtree.last().map(|root| root.id))
            .collect();
        let kept = self
            .events
            .iter()
            .chain(self.warm_ups.iter().flat_map(|(_, s)| s))
            .chain(self.slowest.iter().flat_map(|(_, s)| s))
            .chain(self.pending.iter());
        let mut events: Vec<TrackedEvent> = kept
            .map(|raw| TrackedEvent::from_raw(raw, options))
            .collect();
        let kept_count = events.len() as u64;
        events.sort_by_key(|e| (e.start_ns, e.id));
        let mut previous = 0;
        for event in &mut events {
            event.gap_ms = options.precision.ms(event.start_ns - previous);
            previous = event.start_ns;
        }
        let p = options.precision;
        let stats = self
            .running
            .iter()
            .map(|(name, r)| {
                let count = r.count.max(1);
                let stats = SlowStats {
                    count: r.count,
                    slow_count: r.slow,
                    slow_percent: r.slow as f64 / count as f64 * 100.0,
                    avg_ms: p.ms((r.sum_ns / u128::from(count)) as u64),
                    min_ms: p.ms(if r.count == 0 { 0 } else { r.min_ns }),
                    max_ms: p.ms(r.max_ns),
                };
                (name.to_string(), stats)
            })
            .collect();
        TrackerReport {
            run: run.clone(),
            total_duration_ms: p.ms(total_ns),
            total_memory_delta_bytes: memory_delta,
            event_count: kept_count + self.dropped,
            warm_ups,
            slowest_roots,
            events,
            slow_events: self.slow_events(),
            memory_spikes: self.spikes.clone(),
            thresholds: Thresholds {
                slow_ms: options.thresholds.default_ms(),
                by_name_ms: options
                    .thresholds
                    .by_metric()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                memory_bytes: options.memory_threshold_bytes,
            },
            dropped: self.dropped,
            stats,
            precision: p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: u64, parent: Option<u64>, name: &'static str, duration_ns: u64) -> Raw {
        Raw {
            id,
            thread: 1,
            parent,
            depth: u32::from(parent.is_some()),
            name: Cow::Borrowed(name),
            kind: EventKind::Operation,
            start_ns: id * 1_000,
            duration_ns,
            self_ns: duration_ns,
            detail: None,
            slow: false,
        }
    }

    /// `would_keep_root` is asked before a root closes (the engine reads the thread's CPU
    /// time only for the roots it says yes to): it must say exactly what keeping does.
    #[test]
    fn the_prediction_of_keeping_a_root_matches_the_keeping() {
        let options = TrackerOptions {
            keep_slowest_roots: Some(3),
            ..TrackerOptions::default()
        };
        let mut state = State::new(&options);
        let durations = [50, 10, 70, 20, 90, 30, 90, 5, 100, 60, 40, 200, 1, 150];
        let mut id = 0;
        let mut said = Vec::new();
        let mut kept = Vec::new();
        for (i, &d) in durations.iter().enumerate() {
            id += 1;
            let root = id;
            // A child first seen at roots 0, 4 and 9 makes those warm-ups.
            let child = if matches!(i, 0 | 4 | 9) {
                "first"
            } else {
                "again"
            };
            let child = if i == 4 {
                "second"
            } else if i == 9 {
                "third"
            } else {
                child
            };
            id += 1;
            state.record(raw(id, Some(root), child, d / 2), &options, Some(0));
            said.push(state.would_keep_root(d, 3));
            state.record(raw(root, None, "tick", d), &options, Some(0));
            let in_warm_ups = state.warm_ups.iter().any(|(w, _)| w.root == root);
            let in_slowest = state
                .slowest
                .iter()
                .any(|(_, subtree)| subtree.iter().any(|e| e.id == root));
            kept.push(in_warm_ups || in_slowest);
        }
        assert_eq!(said, kept);
        // Warm-ups (roots 0, 4, 9), the first three others, then only new slowest ones.
        assert_eq!(
            said,
            [
                true, true, true, true, true, true, true, false, true, true, false, true, false,
                true
            ]
        );
    }
}
