//! The markdown report: [`render`] statistics through a list of [`Column`]s.
//!
//! Pure text, no I/O; [`crate::dump`] writes it to disk.
//!
//! ```
//! use backtest_perf::{MetricType, PerformanceContract, StorageKey};
//! use backtest_perf::report::{default_columns, render};
//! use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
//!
//! let events = vec![PerformanceContract::new(MetricType::Tick, 1234.5, 1.0)];
//! let stats = PerformanceStatistics::compute(StorageKey::new("BTCUSDT", "sma"), events, 0, 0, StatsPreset::Seed);
//! let text = render(&stats, &default_columns());
//! assert!(text.starts_with("# Performance Report: sma\n\n**Symbol:** BTCUSDT\n**Total events:** 1\n**Total execution time:** 1,234.50ms\n"));
//! ```

use std::fmt::Write;
use std::sync::Arc;

use super::stats::{MetricStats, PerformanceStatistics};

type Format = Arc<dyn Fn(&MetricStats) -> String + Send + Sync>;
type Visible = Arc<dyn Fn() -> bool + Send + Sync>;

/// One column of the detailed metrics table: a key, a header label, how to format a cell,
/// and whether it shows. Labels and cells are plain text: the renderer escapes them.
///
/// ```
/// use backtest_perf::report::Column;
///
/// let spread = Column::new("spread", "Max - Min (ms)", |m| format!("{:.2}", m.max_duration - m.min_duration));
/// assert_eq!(spread.key(), "spread");
/// let hidden = Column::ms("p99", "P99 (ms)", |m| m.p99).with_visible(|| false);
/// assert!(!hidden.is_visible());
/// ```
#[derive(Clone)]
pub struct Column {
    key: String,
    label: String,
    format: Format,
    visible: Visible,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column")
            .field("key", &self.key)
            .field("label", &self.label)
            .field("visible", &self.is_visible())
            .finish()
    }
}

impl Column {
    /// A visible column.
    ///
    /// ```
    /// use backtest_perf::report::Column;
    /// let c = Column::new("count", "N", |m| m.count.to_string());
    /// assert_eq!((c.key(), c.label(), c.is_visible()), ("count", "N", true));
    /// ```
    pub fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        format: impl Fn(&MetricStats) -> String + Send + Sync + 'static,
    ) -> Self {
        Column {
            key: key.into(),
            label: label.into(),
            format: Arc::new(format),
            visible: Arc::new(|| true),
        }
    }

    /// A visible column showing a number with 2 decimals and no separators.
    ///
    /// ```
    /// use backtest_perf::report::Column;
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = MetricStats::from_durations("tick".into(), &[1.0, 2.0], StatsPreset::Seed);
    /// assert_eq!(Column::ms("avg", "Avg (ms)", |m| m.avg_duration).format(&m), "1.50");
    /// ```
    pub fn ms(
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Fn(&MetricStats) -> f64 + Send + Sync + 'static,
    ) -> Self {
        Column::new(key, label, move |m| format!("{:.2}", value(m)))
    }

    /// The same column, shown only while `visible()` is true (asked at each render).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// static SHOW: AtomicBool = AtomicBool::new(false);
    /// let c = backtest_perf::report::Column::ms("p99", "P99", |m| m.p99).with_visible(|| SHOW.load(Ordering::Relaxed));
    /// assert!(!c.is_visible());
    /// SHOW.store(true, Ordering::Relaxed);
    /// assert!(c.is_visible());
    /// ```
    pub fn with_visible(mut self, visible: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.visible = Arc::new(visible);
        self
    }

    /// The same column, never shown.
    ///
    /// ```
    /// assert!(!backtest_perf::report::Column::ms("p99", "P99", |m| m.p99).hidden().is_visible());
    /// ```
    pub fn hidden(self) -> Self {
        self.with_visible(|| false)
    }

    /// The column's key.
    ///
    /// ```
    /// assert_eq!(backtest_perf::report::default_columns()[0].key(), "metricType");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The header label.
    ///
    /// ```
    /// assert_eq!(backtest_perf::report::default_columns()[1].label(), "Count");
    /// ```
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The cell text for one metric.
    ///
    /// ```
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = MetricStats::from_durations("tick".into(), &[4.0], StatsPreset::Seed);
    /// assert_eq!(backtest_perf::report::default_columns()[0].format(&m), "tick");
    /// ```
    pub fn format(&self, stats: &MetricStats) -> String {
        (self.format)(stats)
    }

    /// Whether the column shows now.
    ///
    /// ```
    /// assert!(backtest_perf::report::default_columns().iter().all(|c| c.is_visible()));
    /// ```
    pub fn is_visible(&self) -> bool {
        (self.visible)()
    }
}

/// The columns of the reference report, in order.
///
/// ```
/// let labels: Vec<String> = backtest_perf::report::default_columns().iter().map(|c| c.label().to_string()).collect();
/// assert_eq!(labels[..3], ["Metric", "Count", "Avg (ms)"]);
/// assert_eq!(labels.len(), 12);
/// ```
pub fn default_columns() -> Vec<Column> {
    vec![
        Column::new("metricType", "Metric", |m| m.metric_type.to_string()),
        Column::new("count", "Count", |m| m.count.to_string()),
        Column::ms("avgDuration", "Avg (ms)", |m| m.avg_duration),
        Column::ms("minDuration", "Min (ms)", |m| m.min_duration),
        Column::ms("maxDuration", "Max (ms)", |m| m.max_duration),
        Column::ms("median", "Median (ms)", |m| m.median),
        Column::ms("p95", "P95 (ms)", |m| m.p95),
        Column::ms("p99", "P99 (ms)", |m| m.p99),
        Column::ms("stdDev", "Std Dev", |m| m.std_dev),
        Column::ms("avgWaitTime", "Avg Wait (ms)", |m| m.avg_wait_time),
        Column::ms("minWaitTime", "Min Wait (ms)", |m| m.min_wait_time),
        Column::ms("maxWaitTime", "Max Wait (ms)", |m| m.max_wait_time),
    ]
}

const NOTE: &str = "**Note:** All durations are in milliseconds. P95/P99 represent 95th and 99th percentile response times. Wait times show the interval between consecutive events of the same type.";

/// Renders the markdown report of `stats` with the visible `columns`.
///
/// Rows and distribution lines are sorted by total duration, largest first, ties by name.
/// No events gives the short "No performance metrics recorded yet." report.
///
/// ```
/// use backtest_perf::report::{default_columns, render};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::Seed);
/// assert_eq!(render(&empty, &default_columns()), "# Performance Report: s\n\nNo performance metrics recorded yet.\n");
/// ```
pub fn render(stats: &PerformanceStatistics, columns: &[Column]) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        "# Performance Report: {}\n",
        escape(&stats.strategy_name)
    );
    let counters = |out: &mut String| {
        if stats.rejected > 0 {
            let _ = writeln!(
                out,
                "**Rejected events:** {}",
                thousands(stats.rejected as f64, 0)
            );
        }
        if stats.dropped > 0 {
            let _ = writeln!(
                out,
                "**Dropped events:** {}",
                thousands(stats.dropped as f64, 0)
            );
        }
    };
    if stats.total_events == 0 {
        out.push_str("No performance metrics recorded yet.\n");
        if stats.rejected > 0 || stats.dropped > 0 {
            out.push('\n');
            counters(&mut out);
        }
        return out;
    }
    let _ = writeln!(out, "**Symbol:** {}", escape(&stats.symbol));
    let _ = writeln!(
        out,
        "**Total events:** {}",
        thousands(stats.total_events as f64, 0)
    );
    let _ = writeln!(
        out,
        "**Total execution time:** {}ms",
        thousands(stats.total_duration, 2)
    );
    let _ = writeln!(
        out,
        "**Number of metric types:** {}",
        stats.metric_stats.len()
    );
    counters(&mut out);

    out.push_str("\n## Time Distribution\n\n");
    for m in sorted_rows(stats) {
        let percent = if stats.total_duration > 0.0 {
            m.total_duration / stats.total_duration * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "- **{}**: {percent:.1}% ({}ms total)",
            escape(m.metric_type.as_str()),
            thousands(m.total_duration, 2)
        );
    }

    out.push_str("\n## Detailed Metrics\n\n");
    out.push_str(&table(stats, columns));
    out.push('\n');
    out.push_str(NOTE);
    out.push('\n');
    out
}

/// The detailed metrics table alone: header, separator and one row per metric type,
/// sorted by total duration (largest first, ties by name). Empty for no events.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// use backtest_perf::report::{default_columns, table, Column};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
///
/// let events = vec![PerformanceContract::new(MetricType::Tick, 2.0, 1.0)];
/// let stats = PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed);
/// let columns = [Column::new("metricType", "Metric", |m| m.metric_type.to_string()), Column::ms("p95", "P95", |m| m.p95)];
/// assert_eq!(table(&stats, &columns), "| Metric | P95 |\n|---|---|\n| tick | 2.00 |\n");
/// ```
pub fn table(stats: &PerformanceStatistics, columns: &[Column]) -> String {
    let mut out = String::new();
    if stats.metric_stats.is_empty() {
        return out;
    }
    let visible: Vec<&Column> = columns.iter().filter(|c| c.is_visible()).collect();
    table_row(&mut out, visible.iter().map(|c| escape(c.label())));
    out.push('|');
    out.push_str(&"---|".repeat(visible.len()));
    out.push('\n');
    for m in sorted_rows(stats) {
        table_row(&mut out, visible.iter().map(|c| escape(&c.format(m))));
    }
    out
}

/// Metric rows by total duration, largest first, ties by name: the order of every table.
pub(crate) fn sorted_rows(stats: &PerformanceStatistics) -> Vec<&MetricStats> {
    let mut rows: Vec<&MetricStats> = stats.metric_stats.values().collect();
    rows.sort_by(|a, b| {
        b.total_duration
            .total_cmp(&a.total_duration)
            .then_with(|| a.metric_type.cmp(&b.metric_type))
    });
    rows
}

fn table_row(out: &mut String, cells: impl Iterator<Item = String>) {
    out.push('|');
    for cell in cells {
        out.push(' ');
        out.push_str(&cell);
        out.push_str(" |");
    }
    out.push('\n');
}

/// Escapes a name so that it shows as written and never breaks the layout: markdown
/// punctuation gets a backslash, line breaks and other control characters are shown as
/// escapes (`\n`, `\u{7}`).
///
/// ```
/// use backtest_perf::report::escape;
/// assert_eq!(escape("my-strategy"), "my-strategy");
/// assert_eq!(escape("a|b\nc_d"), "a\\|b\\nc\\_d");
/// ```
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `value` with `decimals` decimals and `,` between thousands: `45678.92` -> `45,678.92`.
///
/// ```
/// use backtest_perf::report::thousands;
/// assert_eq!(thousands(45678.921, 2), "45,678.92");
/// assert_eq!(thousands(1234.0, 0), "1,234");
/// assert_eq!(thousands(999.999, 2), "1,000.00");
/// ```
pub fn thousands(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = match unsigned.find('.') {
        Some(dot) => unsigned.split_at(dot),
        None => (unsigned, ""),
    };
    let mut grouped = String::with_capacity(text.len() + int.len() / 3);
    grouped.push_str(sign);
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped.push_str(frac);
    grouped
}
