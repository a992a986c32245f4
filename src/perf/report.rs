//! The markdown report: [`render`] statistics through a list of [`Column`]s.
//!
//! Pure text, no I/O; [`crate::dump`] writes it to disk. The default layout answers "where
//! does the time go" for the whole run: every event counted, self time so nested hooks are
//! counted once, one unit per table ([`Unit::for_stats`]) and three significant digits
//! ([`sig3`]). [`ReportLayout::BacktestKit`] renders the reference's layout byte for byte.
//!
//! ```
//! use backtest_perf::{MetricType, PerformanceContract, StorageKey};
//! use backtest_perf::report::{default_columns, render};
//! use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
//!
//! let events = vec![PerformanceContract::new(MetricType::Tick, 0.000038, 1.0)];
//! let stats = PerformanceStatistics::compute(StorageKey::new("BTCUSDT", "sma"), events, 0, 0, StatsPreset::Seed);
//! let text = render(&stats, &default_columns());
//! assert!(text.starts_with("# Performance Report: sma\n\n**Symbol:** BTCUSDT\n**Events:** 1 (statistics over all of them; all kept as events)\n"));
//! assert!(text.contains("## Detailed Metrics (durations in µs)\n"));
//! // 38 ns: in µs it reads 0.0380 (2 leading zeros); in ms it would need 4.
//! assert!(text.contains("| tick | 1 | 0.0380 | 0.0380 | 0.0380 |"));
//! ```

use std::fmt::Write;
use std::sync::Arc;

use super::stats::{MetricStats, PerformanceStatistics};

type Format = Arc<dyn Fn(&MetricStats) -> String + Send + Sync>;
type Value = Arc<dyn Fn(&MetricStats) -> f64 + Send + Sync>;
type Visible = Arc<dyn Fn() -> bool + Send + Sync>;

/// Which report [`render_layout`] writes.
///
/// ```
/// use backtest_perf::report::ReportLayout;
/// assert_eq!(ReportLayout::default(), ReportLayout::WholeRun);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReportLayout {
    /// The whole run in readable units, with self time (SPEC section 6).
    #[default]
    WholeRun,
    /// backtest-kit's layout byte for byte: ms with 2 decimals, its 12 columns, over the
    /// window (use it with the `backtest-kit` statistics preset).
    BacktestKit,
}

impl ReportLayout {
    /// The default columns of this layout.
    ///
    /// ```
    /// use backtest_perf::report::ReportLayout;
    /// assert_eq!(ReportLayout::WholeRun.columns().len(), 14);
    /// assert_eq!(ReportLayout::BacktestKit.columns().len(), 12);
    /// ```
    pub fn columns(self) -> Vec<Column> {
        match self {
            ReportLayout::WholeRun => default_columns(),
            ReportLayout::BacktestKit => backtest_kit_columns(),
        }
    }
}

/// The unit of a table's durations.
///
/// ```
/// use backtest_perf::report::Unit;
/// assert_eq!(Unit::Us.from_ms(0.5), 500.0);
/// assert_eq!(Unit::Ns.label(), "ns");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Unit {
    /// Its symbol.
    ///
    /// ```
    /// assert_eq!(backtest_perf::report::Unit::Us.label(), "µs");
    /// ```
    pub fn label(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "µs",
            Unit::Ms => "ms",
            Unit::S => "s",
        }
    }

    /// A duration in milliseconds, in this unit.
    ///
    /// ```
    /// assert_eq!(backtest_perf::report::Unit::S.from_ms(1500.0), 1.5);
    /// ```
    pub fn from_ms(self, ms: f64) -> f64 {
        match self {
            Unit::Ns => ms * 1e6,
            Unit::Us => ms * 1e3,
            Unit::Ms => ms,
            Unit::S => ms / 1e3,
        }
    }

    /// The unit of a statistics table: the largest in which the typical duration (the
    /// median of the metric types' averages) reads with at most 3 leading zeros (is at
    /// least 0.001). Nanoseconds when every average is 0.
    ///
    /// ```
    /// use backtest_perf::report::Unit;
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = |ms: f64| MetricStats::from_durations("tick".into(), &[ms], StatsPreset::Seed);
    /// assert_eq!(Unit::for_averages([m(0.000038)].iter()), Unit::Us); // 0.038 µs
    /// assert_eq!(Unit::for_averages([m(0.0000009)].iter()), Unit::Ns); // 0.9 ns
    /// assert_eq!(Unit::for_averages([m(2.5)].iter()), Unit::S); // 0.0025 s
    /// ```
    pub fn for_averages<'a>(rows: impl Iterator<Item = &'a MetricStats>) -> Unit {
        let mut averages: Vec<f64> = rows
            .map(|m| m.avg_duration)
            .filter(|a| *a > 0.0 && a.is_finite())
            .collect();
        if averages.is_empty() {
            return Unit::Ns;
        }
        averages.sort_by(f64::total_cmp);
        let typical = averages[(averages.len() - 1) / 2];
        [Unit::S, Unit::Ms, Unit::Us]
            .into_iter()
            .find(|u| u.from_ms(typical) >= 0.001)
            .unwrap_or(Unit::Ns)
    }

    /// [`for_averages`](Self::for_averages) over every metric type of `stats`.
    ///
    /// ```
    /// use backtest_perf::report::Unit;
    /// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
    /// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::Seed);
    /// assert_eq!(Unit::for_stats(&empty), Unit::Ns);
    /// ```
    pub fn for_stats(stats: &PerformanceStatistics) -> Unit {
        Unit::for_averages(stats.metric_stats.values())
    }
}

/// `value` with 3 significant digits, more where the integer part is longer (those get
/// thousands separators and no decimals); `0` for zero. A value that is not zero never
/// prints as zero.
///
/// ```
/// use backtest_perf::report::sig3;
/// assert_eq!(sig3(0.0), "0");
/// assert_eq!(sig3(0.038), "0.0380");
/// assert_eq!(sig3(52.04), "52.0");
/// assert_eq!(sig3(1.2345), "1.23");
/// assert_eq!(sig3(99.96), "100");
/// assert_eq!(sig3(20_123.4), "20,123");
/// assert_eq!(sig3(0.000_000_123_4), "0.000000123");
/// ```
pub fn sig3(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() {
            "0".to_string()
        } else {
            value.to_string()
        };
    }
    let decimals = |v: f64| (2 - v.abs().log10().floor() as i32).max(0) as usize;
    if value.abs() >= 99.95 {
        return thousands(value, 0);
    }
    // Round once, then count the digits of the rounded value (9.996 becomes 10.0).
    let rounded: f64 = format!("{value:.*}", decimals(value))
        .parse()
        .unwrap_or(value);
    if rounded.abs() >= 99.95 {
        return thousands(rounded, 0);
    }
    format!("{rounded:.*}", decimals(rounded))
}

/// A duration for people, in the unit that gives it 1 to 3 integer digits, 3 significant
/// digits: `41.3 ms`, `18.7 µs`, `512 ns`, `1.20 s`.
///
/// ```
/// use backtest_perf::report::human;
/// assert_eq!(human(41.3), "41.3 ms");
/// assert_eq!(human(0.0187), "18.7 µs");
/// assert_eq!(human(0.000512), "512 ns");
/// assert_eq!(human(1200.0), "1.20 s");
/// assert_eq!(human(0.0), "0 ns");
/// ```
pub fn human(ms: f64) -> String {
    let unit = [Unit::S, Unit::Ms, Unit::Us]
        .into_iter()
        .find(|u| u.from_ms(ms) >= 1.0)
        .unwrap_or(Unit::Ns);
    format!("{} {}", sig3(unit.from_ms(ms)), unit.label())
}

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
    cell: Cell,
    visible: Visible,
}

/// What a column shows: text, or a duration written in the table's unit.
#[derive(Clone)]
enum Cell {
    Text(Format),
    Duration(Value),
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
        Column::with_cell(key, label, Cell::Text(Arc::new(format)))
    }

    fn with_cell(key: impl Into<String>, label: impl Into<String>, cell: Cell) -> Self {
        Column {
            key: key.into(),
            label: label.into(),
            cell,
            visible: Arc::new(|| true),
        }
    }

    /// A visible column of a duration (ms), written in the table's unit with 3
    /// significant digits.
    ///
    /// ```
    /// use backtest_perf::report::{Column, Unit};
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = MetricStats::from_durations("tick".into(), &[0.0012345], StatsPreset::Seed);
    /// let avg = Column::duration("avgDuration", "Avg", |m| m.avg_duration);
    /// assert_eq!(avg.format_in(&m, Unit::Us), "1.23");
    /// assert_eq!(avg.value(&m), Some(0.0012345));
    /// ```
    pub fn duration(
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Fn(&MetricStats) -> f64 + Send + Sync + 'static,
    ) -> Self {
        Column::with_cell(key, label, Cell::Duration(Arc::new(value)))
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
        self.format_in(stats, Unit::Ms)
    }

    /// The cell text with durations written in `unit`.
    ///
    /// ```
    /// use backtest_perf::report::{default_columns, Unit};
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = MetricStats::from_durations("tick".into(), &[0.5], StatsPreset::Seed);
    /// assert_eq!(default_columns()[4].format_in(&m, Unit::Us), "500");
    /// ```
    pub fn format_in(&self, stats: &MetricStats, unit: Unit) -> String {
        match &self.cell {
            Cell::Text(format) => format(stats),
            Cell::Duration(value) => sig3(unit.from_ms(value(stats))),
        }
    }

    /// The duration a duration column shows, in ms; `None` for a text column.
    ///
    /// ```
    /// use backtest_perf::report::default_columns;
    /// use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let m = MetricStats::from_durations("tick".into(), &[0.5], StatsPreset::Seed);
    /// assert_eq!(default_columns()[0].value(&m), None);
    /// assert_eq!(default_columns()[4].value(&m), Some(0.5));
    /// ```
    pub fn value(&self, stats: &MetricStats) -> Option<f64> {
        match &self.cell {
            Cell::Text(_) => None,
            Cell::Duration(value) => Some(value(stats)),
        }
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

/// The columns of the whole-run report, in order: metric, count, then durations in the
/// table's unit.
///
/// ```
/// let labels: Vec<String> = backtest_perf::report::default_columns().iter().map(|c| c.label().to_string()).collect();
/// assert_eq!(labels, ["Metric", "Count", "Total", "Self", "Avg", "Min", "Max", "Median", "P95", "P99", "Std Dev", "Avg Wait", "Min Wait", "Max Wait"]);
/// ```
pub fn default_columns() -> Vec<Column> {
    vec![
        Column::new("metricType", "Metric", |m| m.metric_type.to_string()),
        Column::new("count", "Count", |m| thousands(m.count as f64, 0)),
        Column::duration("totalDuration", "Total", |m| m.total_duration),
        Column::duration("selfDuration", "Self", |m| m.self_duration),
        Column::duration("avgDuration", "Avg", |m| m.avg_duration),
        Column::duration("minDuration", "Min", |m| m.min_duration),
        Column::duration("maxDuration", "Max", |m| m.max_duration),
        Column::duration("median", "Median", |m| m.median),
        Column::duration("p95", "P95", |m| m.p95),
        Column::duration("p99", "P99", |m| m.p99),
        Column::duration("stdDev", "Std Dev", |m| m.std_dev),
        Column::duration("avgWaitTime", "Avg Wait", |m| m.avg_wait_time),
        Column::duration("minWaitTime", "Min Wait", |m| m.min_wait_time),
        Column::duration("maxWaitTime", "Max Wait", |m| m.max_wait_time),
    ]
}

/// The columns of backtest-kit's report, in order: ms with 2 decimals.
///
/// ```
/// let labels: Vec<String> = backtest_perf::report::backtest_kit_columns().iter().map(|c| c.label().to_string()).collect();
/// assert_eq!(labels[..3], ["Metric", "Count", "Avg (ms)"]);
/// assert_eq!(labels.len(), 12);
/// ```
pub fn backtest_kit_columns() -> Vec<Column> {
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

const BACKTEST_KIT_NOTE: &str = "**Note:** All durations are in milliseconds. P95/P99 represent 95th and 99th percentile response times. Wait times show the interval between consecutive events of the same type.";

/// Renders `stats` in `layout`, with the visible `columns`.
///
/// ```
/// use backtest_perf::report::{backtest_kit_columns, render_layout, ReportLayout};
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let events = vec![PerformanceContract::new(MetricType::Tick, 1234.5, 1.0)];
/// let stats = PerformanceStatistics::compute(StorageKey::new("BTCUSDT", "sma"), events, 0, 0, StatsPreset::BacktestKit);
/// let text = render_layout(&stats, &backtest_kit_columns(), ReportLayout::BacktestKit);
/// assert!(text.starts_with("# Performance Report: sma\n\n**Symbol:** BTCUSDT\n**Total events:** 1\n**Total execution time:** 1,234.50ms\n"));
/// ```
pub fn render_layout(
    stats: &PerformanceStatistics,
    columns: &[Column],
    layout: ReportLayout,
) -> String {
    match layout {
        ReportLayout::WholeRun => render(stats, columns),
        ReportLayout::BacktestKit => render_backtest_kit(stats, columns),
    }
}

fn no_events(out: &mut String, stats: &PerformanceStatistics) -> bool {
    if stats.total_events != 0 {
        return false;
    }
    out.push_str("No performance metrics recorded yet.\n");
    if stats.rejected > 0 || stats.dropped > 0 {
        out.push('\n');
        counters_backtest_kit(out, stats);
    }
    true
}

fn counters_backtest_kit(out: &mut String, stats: &PerformanceStatistics) {
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
}

/// Renders the whole-run markdown report of `stats` with the visible `columns` (SPEC
/// section 6): what the statistics cover, the time in hooks (self time) against the wall
/// time, where the time goes by self time, and the table in one unit.
///
/// Rows and distribution lines are sorted by self time, largest first, ties by name. No
/// events gives the short "No performance metrics recorded yet." report.
///
/// ```
/// use backtest_perf::report::{default_columns, render};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::Seed);
/// assert_eq!(render(&empty, &default_columns()), "# Performance Report: s\n\nNo performance metrics recorded yet.\n");
/// ```
pub fn render(stats: &PerformanceStatistics, columns: &[Column]) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# Performance Report: {}\n",
        escape(&stats.strategy_name)
    );
    if no_events(&mut out, stats) {
        return out;
    }
    let total = stats.total_events as f64;
    let _ = writeln!(out, "**Symbol:** {}", escape(&stats.symbol));
    let _ = writeln!(
        out,
        "**Events:** {} ({})",
        thousands(total, 0),
        coverage(stats)
    );
    let _ = writeln!(
        out,
        "**Time in hooks:** {} (self time; nested hooks are not counted twice)",
        human(stats.self_duration)
    );
    if stats.wall_duration > 0.0 {
        let _ = writeln!(
            out,
            "**Wall time:** {} from the first event's start to the last one's end (time in hooks is {:.1}% of it)",
            human(stats.wall_duration),
            stats.self_duration / stats.wall_duration * 100.0
        );
    }
    let _ = writeln!(out, "**Metric types:** {}", stats.metric_stats.len());
    if let Some(note) = sampling(stats) {
        let _ = writeln!(out, "**Sampled:** {note}");
    }
    if let Some(failed) = failures(stats) {
        let _ = writeln!(out, "**Failed operations (ok: false):** {failed}");
    }
    if stats.rejected > 0 {
        let _ = writeln!(
            out,
            "**Rejected events:** {} (invalid, never counted)",
            thousands(stats.rejected as f64, 0)
        );
    }
    if stats.dropped > 0 {
        let _ = writeln!(
            out,
            "**Left the window:** {} events (the statistics above still count them; only the raw events are gone)",
            thousands(stats.dropped as f64, 0)
        );
    }
    if stats.evicted_keys > 0 {
        let _ = writeln!(
            out,
            "**Evicted keys:** {} other symbol:strategy keys were evicted to stay within the key cap; their statistics are gone",
            thousands(stats.evicted_keys as f64, 0)
        );
    }

    out.push_str("\n## Where the time goes (self time)\n\n");
    let rows = sorted_rows(stats);
    for m in &rows {
        let percent = if stats.self_duration > 0.0 {
            m.self_duration / stats.self_duration * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "- **{}**: {percent:.1}% ({} self, {} total)",
            escape(m.metric_type.as_str()),
            human(m.self_duration),
            human(m.total_duration)
        );
    }

    let unit = Unit::for_stats(stats);
    let _ = writeln!(
        out,
        "\n## Detailed Metrics (durations in {})\n",
        unit.label()
    );
    out.push_str(&table_in(stats, columns, unit, &rows));
    out.push('\n');
    out.push_str("**Note:** Total is the time inside each operation; Self is the part not spent in operations nested inside it, so the Self column adds up to the time in hooks. Count, Total, Self, Avg, Min, Max, Std Dev (population) and the wait times cover every event. Median, P95 and P99 are nearest-rank percentiles");
    let approximate: Vec<String> = rows
        .iter()
        .filter(|m| !m.exact)
        .map(|m| escape(m.metric_type.as_str()))
        .collect();
    if approximate.is_empty() {
        out.push_str(", exact.");
    } else {
        let _ = write!(
            out,
            ": exact, except those of {}, which are read from the whole-run histogram (within 0.1%) because some of their events have left the window (it keeps the newest events of all types together).",
            approximate.join(", ")
        );
    }
    out.push_str(" Wait times are the intervals between consecutive events of the same type");
    match wait_resolution(stats) {
        Some(resolution) => {
            let _ = writeln!(out, "; {resolution}.");
        }
        None => out.push_str(".\n"),
    }
    out
}

/// The failed operations (`ok: false`) per metric type with their rate, in words; `None`
/// when none failed.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// for ok in [true, true, true, false] {
///     bus.emit(PerformanceContract::new(MetricType::GetSignal, 1.0, 1.0).with_ok(ok)).unwrap();
/// }
/// let stats = service.get_data("", "");
/// assert_eq!(backtest_perf::report::failures(&stats).unwrap(), "getSignal 1 of 4 (25.0%)");
/// ```
pub fn failures(stats: &PerformanceStatistics) -> Option<String> {
    let failed: Vec<String> = stats
        .metric_stats
        .values()
        .filter(|m| m.errors > 0)
        .map(|m| {
            format!(
                "{} {} of {} ({}%)",
                escape(m.metric_type.as_str()),
                thousands(m.errors as f64, 0),
                thousands(m.count as f64, 0),
                sig3(m.error_rate)
            )
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

/// What the statistics cover and what the window keeps, in words: every output of a run
/// says it the same way.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let events = vec![PerformanceContract::new(MetricType::Tick, 1.0, 1.0)];
/// let stats = PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed);
/// assert_eq!(backtest_perf::report::coverage(&stats), "statistics over all of them; all kept as events");
/// ```
pub fn coverage(stats: &PerformanceStatistics) -> String {
    let window = stats.events.len();
    let kept = if window >= stats.total_events {
        "all kept as events".to_string()
    } else if window == 0 {
        "no raw events kept: merged from whole-run statistics".to_string()
    } else {
        format!("the newest {} kept as events", thousands(window as f64, 0))
    };
    format!("statistics over all of them; {kept}")
}

/// How finely the wait times could be measured, in words, when some are short enough for it
/// to matter (a minimum under 1 µs); `None` otherwise. Wait times are differences of event
/// timestamps, epoch milliseconds held in an `f64`: at present-day dates two timestamps
/// less than 244 ns apart are the same number, so a shorter wait reads as 0.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// let t = 1_763_800_000_000.0; // 2025-11-22
/// for at in [t, t + 0.0001, t + 0.01] {
///     bus.emit(PerformanceContract::new(MetricType::Tick, 0.001, at).with_symbol("A")).unwrap();
/// }
/// // 100 ns later is the same f64: the first wait is 0.
/// assert_eq!(service.get_data("A", "").metric_stats[&MetricType::Tick].min_wait_time, 0.0);
/// assert_eq!(
///     backtest_perf::report::wait_resolution(&service.get_data("A", "")).unwrap(),
///     "event timestamps are epoch ms in an f64, which resolve 244 ns at these dates: a wait shorter than that shows as 0"
/// );
/// bus.emit(PerformanceContract::new(MetricType::Tick, 0.001, t).with_symbol("B")).unwrap();
/// bus.emit(PerformanceContract::new(MetricType::Tick, 0.001, t + 5.0).with_symbol("B")).unwrap();
/// assert_eq!(backtest_perf::report::wait_resolution(&service.get_data("B", "")), None);
/// ```
pub fn wait_resolution(stats: &PerformanceStatistics) -> Option<String> {
    let short = stats
        .metric_stats
        .values()
        .any(|m| m.max_wait_time > 0.0 && m.min_wait_time < 0.001);
    let newest = stats
        .events
        .iter()
        .map(|e| e.timestamp.abs())
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    if !short || newest == 0.0 {
        return None;
    }
    let step = f64::from_bits(newest.to_bits() + 1) - newest;
    Some(format!(
        "event timestamps are epoch ms in an f64, which resolve {} at these dates: a wait shorter than that shows as 0",
        human(step)
    ))
}

/// What a sampled run timed, in words; `None` when every operation was timed.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A")).unwrap();
/// bus.count_untimed("A", "", MetricType::Tick, 31);
/// assert_eq!(
///     backtest_perf::report::sampling(&service.get_data("A", "")).unwrap(),
///     "1 of 32 ticks timed, with everything nested inside them; Count includes the untimed operations, the durations cover the timed ones"
/// );
/// ```
pub fn sampling(stats: &PerformanceStatistics) -> Option<String> {
    let untimed: u64 = stats.metric_stats.values().map(|m| m.untimed).sum();
    if untimed == 0 {
        return None;
    }
    let (timed, all, what) = match stats
        .metric_stats
        .values()
        .find(|m| m.metric_type.as_str() == "tick")
    {
        Some(tick) => (
            (tick.count as u64).saturating_sub(tick.untimed),
            tick.count as u64,
            "ticks",
        ),
        None => {
            let all: u64 = stats.metric_stats.values().map(|m| m.count as u64).sum();
            (all.saturating_sub(untimed), all, "operations")
        }
    };
    Some(format!(
        "{} of {} {what} timed, with everything nested inside them; Count includes the untimed operations, the durations cover the timed ones",
        thousands(timed as f64, 0),
        thousands(all as f64, 0)
    ))
}

/// Renders backtest-kit's report layout byte for byte: its header, the total-duration
/// distribution and the detailed table with `columns` (normally
/// [`backtest_kit_columns`]), rows by total duration.
///
/// ```
/// use backtest_perf::report::{backtest_kit_columns, render_backtest_kit};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::BacktestKit);
/// assert_eq!(render_backtest_kit(&empty, &backtest_kit_columns()), "# Performance Report: s\n\nNo performance metrics recorded yet.\n");
/// ```
pub fn render_backtest_kit(stats: &PerformanceStatistics, columns: &[Column]) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        "# Performance Report: {}\n",
        escape(&stats.strategy_name)
    );
    if no_events(&mut out, stats) {
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
    counters_backtest_kit(&mut out, stats);

    out.push_str("\n## Time Distribution\n\n");
    let rows = rows_by_total(stats);
    for m in &rows {
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
    out.push_str(&table_in(stats, columns, Unit::Ms, &rows));
    out.push('\n');
    out.push_str(BACKTEST_KIT_NOTE);
    out.push('\n');
    out
}

/// The detailed metrics table alone, durations in the table's unit
/// ([`Unit::for_stats`]): header, separator and one row per metric type, sorted by self
/// time (largest first, ties by name). Empty for no events.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// use backtest_perf::report::{table, Column};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
///
/// let events = vec![PerformanceContract::new(MetricType::Tick, 2.0, 1.0)];
/// let stats = PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed);
/// let columns = [Column::new("metricType", "Metric", |m| m.metric_type.to_string()), Column::duration("p95", "P95", |m| m.p95)];
/// assert_eq!(table(&stats, &columns), "| Metric | P95 |\n|---|---|\n| tick | 0.00200 |\n", "2 ms in seconds");
/// ```
pub fn table(stats: &PerformanceStatistics, columns: &[Column]) -> String {
    table_in(stats, columns, Unit::for_stats(stats), &sorted_rows(stats))
}

fn table_in(
    stats: &PerformanceStatistics,
    columns: &[Column],
    unit: Unit,
    rows: &[&MetricStats],
) -> String {
    let mut out = String::new();
    if stats.metric_stats.is_empty() {
        return out;
    }
    let visible: Vec<&Column> = columns.iter().filter(|c| c.is_visible()).collect();
    table_row(&mut out, visible.iter().map(|c| escape(c.label())));
    out.push('|');
    out.push_str(&"---|".repeat(visible.len()));
    out.push('\n');
    for m in rows {
        table_row(
            &mut out,
            visible.iter().map(|c| escape(&c.format_in(m, unit))),
        );
    }
    out
}

/// Metric rows by self time, largest first, ties by name: the order of every whole-run
/// table and list.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
/// bus.emit(PerformanceContract::new(MetricType::GetSignal, 2.0, 1.0)).unwrap();
/// let stats = service.get_data("", "");
/// let rows = backtest_perf::report::sorted_rows(&stats);
/// assert_eq!(rows[0].metric_type, MetricType::GetSignal);
/// ```
pub fn sorted_rows(stats: &PerformanceStatistics) -> Vec<&MetricStats> {
    rows_by(stats, |m| m.self_duration)
}

/// Metric rows by total duration, largest first, ties by name: backtest-kit's order.
fn rows_by_total(stats: &PerformanceStatistics) -> Vec<&MetricStats> {
    rows_by(stats, |m| m.total_duration)
}

fn rows_by(stats: &PerformanceStatistics, key: fn(&MetricStats) -> f64) -> Vec<&MetricStats> {
    let mut rows: Vec<&MetricStats> = stats.metric_stats.values().collect();
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
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
