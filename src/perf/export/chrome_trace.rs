//! A run's timeline as Chrome Trace Event JSON, which Perfetto (ui.perfetto.dev) and
//! `chrome://tracing` open.
//!
//! Operations become complete events (`"ph": "X"`), marks instant events (`"ph": "i"`),
//! each on the thread that recorded it; times are microseconds from the run's start.
//! A complete event carries no `args`: viewers such as speedscope key their frames by
//! name *and* args, so per-event numbers would split every frame in their aggregated
//! views. An operation's self time, metadata, memory and slowness go into an instant
//! event named `<operation> details` at its start instead (Perfetto shows it on the same
//! track). `otherData` says how many operations the run had and how many the trace holds.
//!
//! ```
//! use backtest_perf::export::chrome_trace::chrome_trace;
//! use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
//!
//! let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
//! tracker.measure("work", || ());
//! let trace = chrome_trace(&tracker.finish().unwrap());
//! assert_eq!(trace["traceEvents"][2]["name"], "work");
//! assert_eq!(trace["traceEvents"][2]["ph"], "X");
//! assert_eq!(trace["traceEvents"][2].get("args"), None, "no per-event args on a frame");
//! assert_eq!(trace["traceEvents"][3]["name"], "work details");
//! ```

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::tracker::{EventKind, TrackedEvent, TrackerReport};

/// The process id used in traces: one run is one process.
const PID: u64 = 1;

/// The thread an event was recorded on: the high bits of its id.
fn thread_of(event: &TrackedEvent) -> u64 {
    event.thread
}

/// The trace of `report`.
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// tracker.measure("step", || ());
/// let report = tracker.finish().unwrap();
/// let trace = backtest_perf::export::chrome_trace::chrome_trace(&report);
/// assert_eq!(trace["displayTimeUnit"], "ms");
/// ```
pub fn chrome_trace(report: &TrackerReport) -> Value {
    let mut title = report.run.id.clone();
    if let (Some(symbol), Some(strategy)) = (&report.run.symbol, &report.run.strategy) {
        title = format!("{symbol} · {strategy}");
    }
    let mut events = vec![
        json!({"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": title}}),
    ];
    let mut threads: Vec<u64> = report.events.iter().map(thread_of).collect();
    threads.sort_unstable();
    threads.dedup();
    for tid in &threads {
        events.push(json!({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": format!("thread {tid}")}}));
    }
    for e in &report.events {
        let mut args = serde_json::Map::new();
        if let Some(Value::Object(meta)) = &e.metadata {
            args.extend(meta.clone());
        }
        if let Some(memory) = e.memory {
            args.insert("allocatedBytes".into(), memory.allocated.into());
            args.insert("freedBytes".into(), memory.freed.into());
            if let Some(rss) = memory.rss_bytes {
                args.insert("rssBytes".into(), rss.into());
            }
        }
        if e.slow {
            args.insert("slow".into(), true.into());
        }
        args.insert("selfMs".into(), e.self_ms.into());
        // Raw nanoseconds, not the report's rounded milliseconds: rounding start and
        // duration apart could push a child past its parent's end.
        let ts = e.start_ns as f64 / 1000.0;
        let dur = e.duration_ns as f64 / 1000.0;
        match e.kind {
            EventKind::Operation => {
                events.push(json!({
                    "name": e.name, "cat": "backtest", "ph": "X", "ts": ts, "dur": dur,
                    "pid": PID, "tid": thread_of(e),
                }));
                events.push(json!({
                    "name": format!("{} details", e.name), "cat": "details", "ph": "i", "s": "t",
                    "ts": ts, "pid": PID, "tid": thread_of(e), "args": args,
                }));
            }
            EventKind::Mark => events.push(json!({
                "name": e.name, "cat": "backtest", "ph": "i", "s": "t", "ts": ts,
                "pid": PID, "tid": thread_of(e), "args": args,
            })),
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run": report.run.id,
            "symbol": report.run.symbol,
            "strategy": report.run.strategy,
            "totalDurationMs": report.total_duration_ms,
            "operationsInRun": report.event_count,
            "operationsInTrace": report.events.len(),
            "droppedEvents": report.dropped,
        },
    })
}

/// Writes the trace of `report` atomically to `dir/<name>.trace.json` (the name made
/// safe); returns the path.
///
/// ```
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// tracker.measure("step", || ());
/// let report = tracker.finish().unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::export::chrome_trace::write_chrome_trace(&report, dir.path(), "run").unwrap();
/// assert_eq!(path, dir.path().join("run.trace.json"));
/// ```
pub fn write_chrome_trace(
    report: &TrackerReport,
    dir: &Path,
    name: &str,
) -> Result<PathBuf, DumpError> {
    let text = chrome_trace(report).to_string();
    write_atomic(dir, &format!("{}.trace.json", safe_file_stem(name)), &text)
}
