//! A self-contained HTML report per strategy: the statistics, the time distribution, a
//! latency histogram per metric type, and the slowest tick's timeline, all as inline SVG.
//! No scripts, no fonts or images from elsewhere: the file opens offline.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::report::{self, sorted_rows, thousands};
use crate::stats::{MetricStats, PerformanceStatistics};
use crate::tracker::timeline::subtree;
use crate::tracker::{EventKind, TrackerReport};

/// Histogram bin edges, ms: log-spaced from 100 ns to 10 s, three bins a decade.
fn edges() -> Vec<f64> {
    (0..=24)
        .map(|i| 10f64.powf(-4.0 + f64::from(i) / 3.0))
        .collect()
}

pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn short(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.0}s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms:.0}ms")
    } else if ms >= 0.001 {
        format!("{:.0}µs", ms * 1000.0)
    } else {
        format!("{:.0}ns", ms * 1e6)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th:first-child,td:first-child{text-align:left}\
th{background:#f3f3f3}.meta span{margin-right:1.5rem}figure{margin:1rem 0}figcaption{font-weight:600}\
svg text{font:11px system-ui,sans-serif;fill:#333}.slow{fill:#d9822b}.bar{fill:#4a7fb5}.op{fill:#7fa7d0}";

/// The share of self time of each metric type (nested operations counted once).
fn distribution_svg(rows: &[&MetricStats], total: f64) -> String {
    let (width, row) = (700.0, 24.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"time distribution\">",
        row * rows.len() as f64 + 4.0
    );
    for (i, m) in rows.iter().enumerate() {
        let share = if total > 0.0 {
            m.self_duration / total
        } else {
            0.0
        };
        let y = i as f64 * row;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><rect class=\"bar\" x=\"150\" y=\"{}\" width=\"{:.1}\" height=\"16\"/><text x=\"{:.1}\" y=\"{}\">{:.1}% ({} self)</text>",
            y + 14.0,
            esc(m.metric_type.as_str()),
            y + 2.0,
            share * 400.0,
            156.0 + share * 400.0,
            y + 14.0,
            share * 100.0,
            report::human(m.self_duration)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A log-scale histogram of (duration ms, count) pairs.
fn histogram_svg(durations: &[(f64, u64)]) -> String {
    let edges = edges();
    let mut counts = vec![0u64; edges.len() + 1];
    for &(d, n) in durations {
        let bin = &mut counts[edges.partition_point(|&e| e < d)];
        *bin = bin.saturating_add(n);
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (bar, height) = (28.0, 120.0);
    let width = bar * counts.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"latency histogram\">",
        height + 34.0
    );
    for (i, &n) in counts.iter().enumerate() {
        let h = n as f64 / max * height;
        let x = i as f64 * bar;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{n} events</title></rect>",
            x + 2.0,
            height - h,
            bar - 4.0
        );
        // Bin i holds durations below edges[i]: its label marks the bin's right side.
        if i % 3 == 0 && i < edges.len() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\">{}</text>",
                x + bar - 10.0,
                height + 14.0,
                short(edges[i])
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\">duration (log scale); bar height: events</text></svg>",
        height + 30.0
    );
    svg
}

fn timeline_svg(report: &TrackerReport, root: u64) -> Option<String> {
    let events = subtree(report, root);
    let first = events.first()?;
    let (start, span) = (first.start_ns, first.duration_ns.max(1) as f64);
    let base_depth = first.depth;
    let (width, row) = (900.0, 22.0);
    let rows = events
        .iter()
        .map(|e| e.depth - base_depth)
        .max()
        .unwrap_or(0) as f64
        + 1.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"slowest tick timeline\">",
        rows * row + 20.0
    );
    for e in &events {
        let x = (e.start_ns - start) as f64 / span * width;
        let w = (e.duration_ns as f64 / span * width).max(1.0);
        let y = f64::from(e.depth - base_depth) * row;
        let class = if e.slow { "slow" } else { "op" };
        let label = match e.kind {
            EventKind::Operation => format!("{} {}", e.name, report::human(e.duration_ms)),
            EventKind::Mark => format!("• {}", e.name),
        };
        let _ = write!(
            svg,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            esc(&label),
            x + 3.0,
            y + 13.0,
            esc(&label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{:.1}\">0 to {}</text></svg>",
        rows * row + 14.0,
        report::human(first.duration_ms)
    );
    Some(svg)
}

/// The page for `stats`; with `timeline`, the run's report and the id of its slowest tick.
///
/// ```
/// use backtest_perf::export::html::render_html;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 0.4, 1.0).with_symbol("A").with_strategy("s")).unwrap();
/// let page = render_html(&service.get_data("A", "s"), None);
/// assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg") && !page.contains("<script"));
/// ```
pub fn render_html(
    stats: &PerformanceStatistics,
    timeline: Option<(&TrackerReport, u64)>,
) -> String {
    render_html_with(stats, timeline, None, &[])
}

/// [`render_html`] with the run's health (a "Health" table) and the resource monitor's
/// samples (a chart of resident memory and CPU over the run).
///
/// ```
/// use backtest_perf::analysis::analyze;
/// use backtest_perf::export::html::render_html_with;
/// use backtest_perf::monitor::ResourceSample;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.4, 1.0)).unwrap();
/// let stats = service.get_data("", "");
/// let health = analyze(&stats, &Default::default());
/// let sample = |ms: f64, mb: u64| ResourceSample { elapsed_ms: ms, cpu_user_ms: None, cpu_system_ms: None,
///     cpu_percent: Some(50.0), rss_bytes: Some(mb << 20), threads: Some(2), queue_depth: 0 };
/// let page = render_html_with(&stats, None, Some(&health), &[sample(0.0, 10), sample(1000.0, 12)]);
/// assert!(page.contains("<h2>Health</h2>") && page.contains("<tr class=\"finding\">"));
/// assert!(page.contains("<h2>Resources</h2>") && page.contains("<polyline"));
/// ```
pub fn render_html_with(
    stats: &PerformanceStatistics,
    timeline: Option<(&TrackerReport, u64)>,
    health: Option<&crate::analysis::Health>,
    resources: &[crate::monitor::ResourceSample],
) -> String {
    let title = format!("Performance Report: {}", stats.strategy_name);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    if stats.total_events == 0 {
        html.push_str("<p>No performance metrics recorded yet.</p></body></html>\n");
        return html;
    }
    let _ = writeln!(
        html,
        "<p class=\"meta\"><span>Symbol: <b>{}</b></span><span>Events: <b>{}</b> ({})</span><span>Time in hooks: <b>{}</b> (self time)</span><span>Wall time: <b>{}</b></span><span>Metric types: <b>{}</b></span><span>Rejected: <b>{}</b></span><span>Left the window: <b>{}</b></span></p>",
        esc(&stats.symbol),
        thousands(stats.total_events as f64, 0),
        esc(&report::coverage(stats)),
        report::human(stats.self_duration),
        report::human(stats.wall_duration),
        stats.metric_stats.len(),
        stats.rejected,
        stats.dropped
    );
    if let Some(note) = report::sampling(stats) {
        let _ = writeln!(html, "<p class=\"meta\">Sampled: {}</p>", esc(&note));
    }
    if let Some(note) = report::wait_resolution(stats) {
        let _ = writeln!(html, "<p class=\"meta\">Note: {}</p>", esc(&note));
    }
    let rows = sorted_rows(stats);
    let unit = report::Unit::for_stats(stats);
    let _ = write!(
        html,
        "<h2>Detailed metrics (durations in {})</h2>\n<table><thead><tr>",
        unit.label()
    );
    let columns = report::default_columns();
    for column in &columns {
        let _ = write!(html, "<th>{}</th>", esc(column.label()));
    }
    html.push_str("</tr></thead><tbody>\n");
    for m in &rows {
        html.push_str("<tr>");
        for column in &columns {
            let _ = write!(html, "<td>{}</td>", esc(&column.format_in(m, unit)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n<h2>Where the time goes (self time)</h2>\n");
    html.push_str(&distribution_svg(&rows, stats.self_duration));
    html.push_str("\n<h2>Latency histograms</h2>\n");
    for m in &rows {
        // The whole run from the aggregate's histogram; the window's raw events when the
        // statistics were computed from the window (the backtest-kit preset).
        let (durations, what): (Vec<(f64, u64)>, &str) = match stats.aggregates.get(&m.metric_type)
        {
            Some(aggregate) => (aggregate.buckets(), "events, the whole run"),
            None => (
                stats
                    .events
                    .iter()
                    .filter(|e| e.metric_type == m.metric_type)
                    .map(|e| (e.duration, 1))
                    .collect(),
                "events kept in the window",
            ),
        };
        let total: u64 = durations.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            html,
            "<figure><figcaption>{} ({} {what})</figcaption>{}</figure>",
            esc(m.metric_type.as_str()),
            thousands(total as f64, 0),
            histogram_svg(&durations)
        );
    }
    html.push_str("<h2>Slowest tick</h2>\n");
    match timeline.and_then(|(report, root)| timeline_svg(report, root)) {
        Some(svg) => html.push_str(&svg),
        None => {
            html.push_str("<p>Not tracked: run with <code>--timeline</code> to include it.</p>")
        }
    }
    if let Some(health) = health {
        html.push_str(&health_html(health));
    }
    if let Some(svg) = resources_svg(resources) {
        html.push_str("\n<h2>Resources</h2>\n");
        html.push_str(&svg);
    }
    html.push_str("\n</body></html>\n");
    html
}

/// The health as a table.
fn health_html(health: &crate::analysis::Health) -> String {
    let mut out = format!(
        "\n<h2>Health</h2>\n<p class=\"meta\">Score: <b>{}</b></p>\n",
        esc(&health.summary)
    );
    if health.findings.is_empty() {
        return out;
    }
    out.push_str("<table class=\"health\"><thead><tr class=\"finding-head\"><th>Priority</th><th>Category</th><th>Metric</th><th>Evidence</th><th>Advice</th><th>Expected gain</th></tr></thead><tbody>\n");
    for f in &health.findings {
        let _ = writeln!(
            out,
            "<tr class=\"finding\"><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.priority,
            esc(f.category),
            esc(&f.metric),
            esc(&f.evidence),
            esc(&f.advice),
            esc(&f.expected_gain)
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// Resident memory (MB) and CPU (percent of a core) over the run, as one SVG with two
/// lines on their own scales; `None` with fewer than two samples.
fn resources_svg(samples: &[crate::monitor::ResourceSample]) -> Option<String> {
    if samples.len() < 2 {
        return None;
    }
    let (width, height, pad) = (900.0, 220.0, 40.0);
    let t_max = samples
        .iter()
        .map(|s| s.elapsed_ms)
        .fold(0.0, f64::max)
        .max(1.0);
    let line = |values: Vec<(f64, f64)>, colour: &str| -> String {
        let v_max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9);
        let points: Vec<String> = values
            .iter()
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + t / t_max * (width - 2.0 * pad),
                    height - pad - v / v_max * (height - 2.0 * pad)
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        )
    };
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.rss_bytes.map(|b| (s.elapsed_ms, b as f64 / 1e6)))
        .collect();
    let cpu: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.cpu_percent.map(|c| (s.elapsed_ms, c)))
        .collect();
    let peak = |values: &[(f64, f64)]| values.iter().map(|v| v.1).fold(0.0, f64::max);
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\"><title>Resources over the run</title>{}{}<text x=\"{pad}\" y=\"20\" font-size=\"13\" fill=\"#1f6feb\">resident memory, peak {} MB</text><text x=\"{}\" y=\"20\" font-size=\"13\" fill=\"#d1242f\">CPU, peak {}% of a core</text><text x=\"{pad}\" y=\"{}\" font-size=\"12\">0</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{} s</text></svg>",
        line(rss.clone(), "#1f6feb"),
        line(cpu.clone(), "#d1242f"),
        crate::report::sig3(peak(&rss)),
        width / 2.0,
        crate::report::sig3(peak(&cpu)),
        height - 10.0,
        width - pad,
        height - 10.0,
        crate::report::sig3(t_max / 1000.0)
    ))
}

/// Writes the page atomically to `dir/<strategy>.html`; returns the path.
///
/// ```
/// # use backtest_perf::{PerformanceEmitter, PerformanceService};
/// let service = PerformanceService::attached(&PerformanceEmitter::new());
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::export::html::write_html(&service.get_data("A", "s"), None, dir.path()).unwrap();
/// assert_eq!(path, dir.path().join("s.html"));
/// ```
pub fn write_html(
    stats: &PerformanceStatistics,
    timeline: Option<(&TrackerReport, u64)>,
    dir: &Path,
) -> Result<PathBuf, DumpError> {
    let name = format!("{}.html", safe_file_stem(&stats.strategy_name));
    write_atomic(dir, &name, &render_html(stats, timeline))
}
