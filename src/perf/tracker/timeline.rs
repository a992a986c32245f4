//! The console timeline of a run: a summary, then its operations as a tree.

use std::collections::HashMap;
use std::fmt::Write;
use std::io::IsTerminal;

use super::report::{EventKind, TrackedEvent, TrackerReport};

/// How to render a timeline.
///
/// ```
/// use backtest_perf::tracker::timeline::TimelineStyle;
/// let plain = TimelineStyle { color: false, metadata: false, root: None };
/// assert_eq!(plain, TimelineStyle::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimelineStyle {
    /// ANSI colours.
    pub color: bool,
    /// A line per metadata field under its event.
    pub metadata: bool,
    /// Only this event and what happened inside it.
    pub root: Option<u64>,
}

impl TimelineStyle {
    /// Colour when standard output is a terminal and `NO_COLOR` is not set; metadata on.
    ///
    /// ```
    /// let style = backtest_perf::tracker::timeline::TimelineStyle::for_stdout();
    /// assert!(style.metadata && style.root.is_none());
    /// ```
    pub fn for_stdout() -> Self {
        TimelineStyle {
            color: color_for_stdout(),
            metadata: true,
            root: None,
        }
    }
}

/// Whether standard output takes colour: a terminal, and no non-empty `NO_COLOR`.
///
/// ```
/// // Piped (as in tests) or with NO_COLOR set: no colour.
/// let _colour: bool = backtest_perf::tracker::timeline::color_for_stdout();
/// ```
pub fn color_for_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

const RULE: usize = 64;

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.wrap("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
    fn warn(&self, t: &str) -> String {
        self.wrap("33", t)
    }
    fn spike(&self, t: &str) -> String {
        self.wrap("35", t)
    }
    fn head(&self, t: &str) -> String {
        self.wrap("36;1", t)
    }
}

/// `+1.5 KiB`, `-512 B`, `+3.0 MiB`.
///
/// ```
/// use backtest_perf::tracker::timeline::bytes;
/// assert_eq!(bytes(512), "+512 B");
/// assert_eq!(bytes(-1536), "-1.5 KiB");
/// assert_eq!(bytes(3 << 20), "+3.0 MiB");
/// ```
pub fn bytes(n: i64) -> String {
    let sign = if n < 0 { '-' } else { '+' };
    let abs = n.unsigned_abs() as f64;
    if abs < 1024.0 {
        format!("{sign}{abs} B")
    } else if abs < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KiB", abs / 1024.0)
    } else {
        format!("{sign}{:.1} MiB", abs / (1024.0 * 1024.0))
    }
}

/// A duration in the unit that reads best, 3 significant digits: never `0.000 ms` for a
/// 30 ns operation.
fn ms(value: f64) -> String {
    crate::report::human(value)
}

/// Renders the timeline of `report`.
///
/// ```
/// use backtest_perf::tracker::timeline::{render, TimelineStyle};
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// tracker.measure("step", || ());
/// let text = render(&tracker.finish().unwrap(), TimelineStyle::default());
/// assert!(text.contains("Performance timeline: doc") && text.contains("\nstep "));
/// ```
pub fn render(report: &TrackerReport, style: TimelineStyle) -> String {
    let paint = Paint(style.color);
    let mut out = String::new();
    let double = "═".repeat(RULE);
    let mut title = format!("Performance timeline: {}", report.run.id);
    let parts: Vec<&str> = [report.run.symbol.as_deref(), report.run.strategy.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !parts.is_empty() {
        let _ = write!(title, " ({})", parts.join(" · "));
    }
    let _ = writeln!(
        out,
        "{}\n{}\n{}",
        paint.head(&double),
        paint.head(&title),
        paint.head(&double)
    );

    let (events, total_ms): (Vec<&TrackedEvent>, f64) = match style.root {
        None => (report.events.iter().collect(), report.total_duration_ms),
        Some(root) => {
            let within = subtree(report, root);
            let total = within.first().map_or(0.0, |e| e.duration_ms);
            (within, total)
        }
    };
    let slow = events.iter().filter(|e| e.slow).count();
    let spikes: Vec<u64> = report.memory_spikes.iter().map(|s| s.id).collect();
    let spiked = events.iter().filter(|e| spikes.contains(&e.id)).count();
    let memory = match style.root {
        None => report.total_memory_delta_bytes.map(bytes),
        Some(_) => events
            .first()
            .and_then(|e| e.memory)
            .map(|m| bytes(m.net())),
    };
    let _ = writeln!(out, "Total duration: {}", ms(total_ms));
    let _ = writeln!(
        out,
        "Memory delta:   {}",
        memory.as_deref().unwrap_or("not tracked")
    );
    let _ = writeln!(out, "Events:         {}", events.len());
    let slow_line = format!("⚠ Slow events:  {slow}");
    let _ = writeln!(
        out,
        "{}",
        if slow > 0 {
            paint.warn(&slow_line)
        } else {
            slow_line
        }
    );
    let spike_line = format!("▲ Memory spikes: {spiked}");
    let _ = writeln!(
        out,
        "{}",
        if spiked > 0 {
            paint.spike(&spike_line)
        } else {
            spike_line
        }
    );
    let _ = writeln!(out, "{}", paint.dim(&"─".repeat(RULE)));

    let kept: HashMap<u64, ()> = events.iter().map(|e| (e.id, ())).collect();
    let mut children: HashMap<Option<u64>, Vec<&TrackedEvent>> = HashMap::new();
    for e in &events {
        let parent = e
            .parent
            .filter(|p| kept.contains_key(p) && Some(e.id) != style.root);
        children.entry(parent).or_default().push(e);
    }
    let mut stack: Vec<(&TrackedEvent, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|e| (*e, 0)).collect())
        .unwrap_or_default();
    while let Some((event, level)) = stack.pop() {
        line(
            &mut out,
            event,
            level,
            &paint,
            spikes.contains(&event.id),
            style.metadata,
            report,
        );
        if let Some(kids) = children.get(&Some(event.id)) {
            stack.extend(kids.iter().rev().map(|k| (*k, level + 1)));
        }
    }
    out
}

fn line(
    out: &mut String,
    e: &TrackedEvent,
    level: usize,
    paint: &Paint,
    spike: bool,
    metadata: bool,
    report: &TrackerReport,
) {
    let indent = "  ".repeat(level);
    let offset = paint.dim(&format!("[@{}]", ms(e.offset_ms)));
    match e.kind {
        EventKind::Mark => {
            let _ = write!(out, "{indent}• {} {offset}", paint.bold(&e.name));
        }
        EventKind::Operation => {
            let _ = write!(
                out,
                "{indent}{} {} {offset}",
                paint.bold(&e.name),
                ms(e.duration_ms)
            );
            if e.self_ms != e.duration_ms {
                let _ = write!(out, " self {}", ms(e.self_ms));
            }
        }
    }
    if let Some(memory) = e.memory {
        let _ = write!(out, " {}", bytes(memory.net()));
    }
    let slow = e
        .slow
        .then(|| report.slow_events.iter().find(|s| s.id == e.id))
        .flatten();
    if e.slow {
        let ratio = slow.map_or(0.0, |s| s.slowness_ratio);
        let _ = write!(out, " {}", paint.warn(&format!("⚠ slow {ratio:.1}x")));
    }
    if spike {
        let _ = write!(out, " {}", paint.spike("▲ memory spike"));
    }
    out.push('\n');
    if let Some(profile) = slow.and_then(|s| s.profile.as_ref()) {
        let _ = writeln!(
            out,
            "{indent}    {}",
            paint.dim(&format!("CPU profile while it ran: {profile}"))
        );
    }
    if metadata && let Some(serde_json::Value::Object(fields)) = &e.metadata {
        for (key, value) in fields {
            let _ = writeln!(out, "{indent}    {}", paint.dim(&format!("{key}: {value}")));
        }
    }
}

/// `root` and every event inside it, by start time.
///
/// ```
/// use backtest_perf::tracker::timeline::subtree;
/// use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
/// let tracker = Tracker::new(RunInfo::named("doc"), TrackerOptions::default());
/// {
///     let _outer = tracker.start("outer", None);
///     tracker.measure("inner", || ());
/// }
/// tracker.measure("after", || ());
/// let report = tracker.finish().unwrap();
/// let names: Vec<&str> = subtree(&report, report.events[0].id).iter().map(|e| e.name.as_ref()).collect();
/// assert_eq!(names, ["outer", "inner"]);
/// ```
pub fn subtree(report: &TrackerReport, root: u64) -> Vec<&TrackedEvent> {
    let mut inside = vec![root];
    let mut found = Vec::new();
    for e in &report.events {
        if e.id == root || e.parent.is_some_and(|p| inside.contains(&p)) {
            inside.push(e.id);
            found.push(e);
        }
    }
    found
}
