//! Alerts: rules on a bucket's statistics, each with a severity and a cooldown, delivered
//! to sinks (a log, a JSON-lines file, and with the `webhook` feature a webhook POST).
//!
//! Rules are evaluated against [`PerformanceStatistics`] at a time you pass in: the wall
//! clock ([`AlertManager::evaluate_now`]) or a backtest's simulated time
//! ([`AlertManager::evaluate`]). After a rule fires for a `symbol:strategy`, it stays
//! quiet for that key until its cooldown passed (default 5 minutes for critical, 15 for
//! warning).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity, Statistic};
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
//!
//! let bus = PerformanceEmitter::new();
//! let service = PerformanceService::attached(&bus);
//! for d in [1.0, 2.0, 9.0] {
//!     bus.emit(PerformanceContract::new(MetricType::GetSignal, d, 1.0).with_symbol("A").with_strategy("s")).unwrap();
//! }
//! let rule = AlertRule::new(
//!     "slow signals",
//!     Condition::Above { metric: MetricType::GetSignal, statistic: Statistic::P95, bound: 5.0 },
//!     Severity::Warning,
//! );
//! let manager = AlertManager::new(vec![rule]);
//! let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
//! let fired = manager.evaluate(&service.get_data("A", "s"), at);
//! assert_eq!(fired[0].message, "slow signals: p95 of getSignal is 9.000 ms, above 5.000 ms (A:s)");
//! assert!(manager.evaluate(&service.get_data("A", "s"), at).is_empty(), "cooling down");
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::MetricType;
use crate::key::StorageKey;
use crate::stats::{MetricStats, PerformanceStatistics};

/// How bad an alert is.
///
/// ```
/// assert_eq!(serde_json::to_string(&backtest_perf::alerts::Severity::Critical).unwrap(), "\"critical\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Look at it soon.
    Warning,
    /// Look at it now.
    Critical,
}

impl Severity {
    /// The default cooldown: 5 minutes for critical, 15 for warning.
    ///
    /// ```
    /// use backtest_perf::alerts::Severity;
    /// assert_eq!(Severity::Warning.default_cooldown().as_secs(), 15 * 60);
    /// ```
    pub fn default_cooldown(self) -> Duration {
        match self {
            Severity::Critical => Duration::from_secs(5 * 60),
            Severity::Warning => Duration::from_secs(15 * 60),
        }
    }
}

/// A statistic of one metric type, in ms (or percent for the slow share).
///
/// ```
/// assert_eq!(serde_json::from_str::<backtest_perf::alerts::Statistic>("\"p95\"").unwrap(), backtest_perf::alerts::Statistic::P95);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Statistic {
    /// Mean duration.
    Avg,
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// Longest duration.
    Max,
}

impl Statistic {
    fn of(self, m: &MetricStats) -> f64 {
        match self {
            Statistic::Avg => m.avg_duration,
            Statistic::P50 => m.median,
            Statistic::P95 => m.p95,
            Statistic::P99 => m.p99,
            Statistic::Max => m.max_duration,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Statistic::Avg => "avg",
            Statistic::P50 => "p50",
            Statistic::P95 => "p95",
            Statistic::P99 => "p99",
            Statistic::Max => "max",
        }
    }
}

/// When a rule fires.
///
/// ```
/// use backtest_perf::alerts::Condition;
/// let c: Condition = serde_json::from_str(r#"{"kind": "droppedAbove", "bound": 10}"#).unwrap();
/// assert_eq!(c, Condition::DroppedAbove { bound: 10 });
/// // Fields are camelCase too, and a misspelt one is refused.
/// let c: Condition = serde_json::from_str(r#"{"kind": "slowShareAbove", "metric": "getCandles", "threshold": 50, "boundPercent": 10}"#).unwrap();
/// assert!(matches!(c, Condition::SlowShareAbove { bound_percent, .. } if bound_percent == 10.0));
/// assert!(serde_json::from_str::<Condition>(r#"{"kind": "droppedAbove", "bound": 1, "bund": 2}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind",
    deny_unknown_fields
)]
pub enum Condition {
    /// A statistic of a metric type is above `bound` ms.
    Above {
        /// The metric type.
        #[serde(deserialize_with = "typed_metric")]
        metric: MetricType,
        /// The statistic.
        statistic: Statistic,
        /// The bound, ms.
        bound: f64,
    },
    /// More than `bound_percent` of a metric type's events took longer than `threshold` ms.
    SlowShareAbove {
        /// The metric type.
        #[serde(deserialize_with = "typed_metric")]
        metric: MetricType,
        /// What counts as slow, ms.
        threshold: f64,
        /// The share, percent.
        bound_percent: f64,
    },
    /// A service level objective: `percentile` percent of a metric type's operations take
    /// under `below` ms (`{"kind": "objective", "metric": "getSignal", "percentile": 99,
    /// "below": 5}`: 99% of getSignal under 5 ms). The other `100 - percentile` percent is
    /// the error budget; the rule fires when it is spent. See [`objective_status`].
    Objective {
        /// The metric type.
        #[serde(deserialize_with = "typed_metric")]
        metric: MetricType,
        /// The share of operations that must be fast, percent (above 0, below 100).
        percentile: f64,
        /// What fast means, ms.
        below: f64,
    },
    /// More than `bound_percent` of a metric type's operations failed (`ok: false`).
    ErrorRateAbove {
        /// The metric type.
        #[serde(deserialize_with = "typed_metric")]
        metric: MetricType,
        /// The failed share, percent.
        bound_percent: f64,
    },
    /// The process used more than `percent` of one core's CPU time since the resource
    /// monitor's previous sample (200 is two cores busy).
    CpuAbove {
        /// Percent of one core.
        percent: f64,
    },
    /// The process's resident memory is above `megabytes` MB (10^6 bytes).
    RssAbove {
        /// Megabytes.
        megabytes: f64,
    },
    /// A listener's queue holds more than `bound` events not yet handled.
    QueueDepthAbove {
        /// Events.
        bound: u64,
    },
    /// More than `bound` events were rejected.
    RejectedAbove {
        /// The bound.
        bound: u64,
    },
    /// More than `bound` events were dropped from a full storage.
    DroppedAbove {
        /// The bound.
        bound: u64,
    },
}

/// `12.500 ms`, or `3.200 µs` below a millisecond.
fn duration(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{:.3} µs", ms * 1e3)
    }
}

impl Condition {
    /// Whether a resource condition holds for `sample`: the value, the bound and the
    /// reason; `None` for the conditions on statistics.
    pub fn check_resources(
        &self,
        sample: &crate::monitor::ResourceSample,
    ) -> Option<(f64, f64, String)> {
        match self {
            Condition::CpuAbove { percent } => {
                let used = sample.cpu_percent?;
                (used > *percent).then(|| {
                    (
                        used,
                        *percent,
                        format!(
                            "the process used {}% of a core, above {percent}%",
                            crate::report::sig3(used)
                        ),
                    )
                })
            }
            Condition::RssAbove { megabytes } => {
                let mb = sample.rss_bytes? as f64 / 1e6;
                (mb > *megabytes).then(|| {
                    (
                        mb,
                        *megabytes,
                        format!("resident memory is {mb:.1} MB, above {megabytes} MB"),
                    )
                })
            }
            Condition::QueueDepthAbove { bound } => {
                let depth = sample.queue_depth as u64;
                (depth > *bound).then(|| {
                    (
                        depth as f64,
                        *bound as f64,
                        format!("a listener queue holds {depth} events, above {bound}"),
                    )
                })
            }
            _ => None,
        }
    }
    /// `(value, bound, description)` when the condition holds for `stats`.
    fn check(&self, stats: &PerformanceStatistics) -> Option<(f64, f64, String)> {
        match self {
            Condition::Above {
                metric,
                statistic,
                bound,
            } => {
                let value = statistic.of(stats.metric_stats.get(metric)?);
                (value > *bound).then(|| {
                    let text = format!(
                        "{} of {metric} is {}, above {}",
                        statistic.name(),
                        duration(value),
                        duration(*bound)
                    );
                    (value, *bound, text)
                })
            }
            Condition::SlowShareAbove {
                metric,
                threshold,
                bound_percent,
            } => {
                let events: Vec<f64> = stats
                    .events
                    .iter()
                    .filter(|e| e.metric_type == *metric)
                    .map(|e| e.duration)
                    .collect();
                if events.is_empty() {
                    return None;
                }
                let share = events.iter().filter(|&&d| d > *threshold).count() as f64
                    / events.len() as f64
                    * 100.0;
                (share > *bound_percent).then(|| {
                    let text = format!(
                        "{share:.1}% of {metric} took over {threshold} ms, above {bound_percent}%"
                    );
                    (share, *bound_percent, text)
                })
            }
            Condition::Objective {
                metric,
                percentile,
                below,
            } => {
                let status = objective_status(stats, *metric, *percentile, *below)?;
                (status.budget_left_percent <= 0.0).then(|| {
                        let text = format!(
                            "{percentile}% of {metric} under {below} ms: {:.3}% took longer, the error budget of {:.3}% is spent",
                            status.over_share_percent,
                            100.0 - percentile
                        );
                        (status.over_share_percent, 100.0 - percentile, text)
                    })
            }
            Condition::ErrorRateAbove {
                metric,
                bound_percent,
            } => {
                let m = stats.metric_stats.get(metric)?;
                (m.error_rate > *bound_percent).then(|| {
                    let text = format!(
                        "{metric}: {} of {} operations failed ({:.3}%), above {bound_percent}%",
                        m.errors, m.count, m.error_rate
                    );
                    (m.error_rate, *bound_percent, text)
                })
            }
            // Resource conditions are checked on the monitor's samples.
            Condition::CpuAbove { .. }
            | Condition::RssAbove { .. }
            | Condition::QueueDepthAbove { .. } => None,
            Condition::RejectedAbove { bound } => (stats.rejected > *bound).then(|| {
                let text = format!("{} events rejected, above {bound}", stats.rejected);
                (stats.rejected as f64, *bound as f64, text)
            }),
            Condition::DroppedAbove { bound } => (stats.dropped > *bound).then(|| {
                let text = format!("{} events dropped, above {bound}", stats.dropped);
                (stats.dropped as f64, *bound as f64, text)
            }),
        }
    }
}

/// Where a service level objective stands.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveStatus {
    /// Operations of the metric type.
    pub count: u64,
    /// Of them, those that took `below` ms or longer.
    pub over: u64,
    /// `over / count`, percent.
    pub over_share_percent: f64,
    /// The measured `percentile`, ms.
    pub measured_ms: f64,
    /// What is left of the error budget (`100 - percentile` percent of the operations),
    /// percent of it; below 0 when overspent.
    pub budget_left_percent: f64,
}

/// How `percentile` percent of `metric` under `below` ms stands in `stats`: exact from the
/// raw events while the window holds every event of the type, else from the whole-run
/// histogram (a bucket's operations count as over when the bucket lies at or above
/// `below`; within 0.1%). `None` when the metric type has no operations or the objective
/// is malformed.
///
/// ```
/// use backtest_perf::alerts::objective_status;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// for i in 0..100 {
///     let ms = if i < 98 { 1.0 } else { 9.0 }; // 2 slow calls in 100
///     bus.emit(PerformanceContract::new(MetricType::GetSignal, ms, 1.0)).unwrap();
/// }
/// let stats = service.get_data("", "");
/// let status = objective_status(&stats, MetricType::GetSignal, 99.0, 5.0).unwrap();
/// assert_eq!((status.count, status.over, status.measured_ms), (100, 2, 9.0));
/// assert_eq!(status.budget_left_percent, -100.0, "a budget of 1 call, 2 spent");
/// let looser = objective_status(&stats, MetricType::GetSignal, 95.0, 5.0).unwrap();
/// assert_eq!(looser.budget_left_percent, 60.0, "2 of a budget of 5 spent");
/// ```
pub fn objective_status(
    stats: &PerformanceStatistics,
    metric: MetricType,
    percentile: f64,
    below: f64,
) -> Option<ObjectiveStatus> {
    if !(percentile > 0.0 && percentile < 100.0 && below.is_finite() && below > 0.0) {
        return None;
    }
    let mut window: Vec<f64> = stats
        .events
        .iter()
        .filter(|e| e.metric_type == metric)
        .map(|e| e.duration)
        .collect();
    let aggregate = stats.aggregates.get(&metric);
    // Exact from the raw events while every event of the type is still in the window.
    let (count, over, measured_ms) = match aggregate {
        Some(aggregate) if aggregate.count() != window.len() as u64 => (
            aggregate.count(),
            aggregate
                .buckets()
                .iter()
                .filter(|(ms, _)| *ms >= below)
                .map(|(_, n)| *n)
                .sum::<u64>(),
            aggregate
                .percentiles(&[percentile])
                .first()
                .copied()
                .unwrap_or(0.0),
        ),
        _ => {
            window.sort_by(f64::total_cmp);
            let count = window.len() as u64;
            let over = window.iter().filter(|&&d| d >= below).count() as u64;
            let measured = crate::stats::percentile(
                &window,
                percentile,
                crate::stats::PercentileMethod::NearestRank,
            );
            (count, over, measured)
        }
    };
    if count == 0 {
        return None;
    }
    let budget = (100.0 - percentile) / 100.0 * count as f64;
    Some(ObjectiveStatus {
        count,
        over,
        over_share_percent: over as f64 / count as f64 * 100.0,
        measured_ms,
        budget_left_percent: (1.0 - over as f64 / budget) * 100.0,
    })
}

/// The objectives among `rules`, each with where it stands in `stats`, as a markdown
/// section ("## Objectives"); `None` when there are no objectives.
///
/// ```
/// use backtest_perf::alerts::{objectives_markdown, rules_from_json};
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// for ms in [1.0, 1.0, 1.0, 9.0] {
///     bus.emit(PerformanceContract::new(MetricType::GetSignal, ms, 1.0)).unwrap();
/// }
/// let rules = rules_from_json(r#"[{"name": "fast signals", "severity": "critical",
///     "condition": {"kind": "objective", "metric": "getSignal", "percentile": 50, "below": 5}}]"#).unwrap();
/// let section = objectives_markdown(&service.get_data("", ""), &rules).unwrap();
/// assert_eq!(section, "\n## Objectives\n\n| Objective | Measured | Over | Error budget left |\n|---|---|---|---|\n| fast signals: 50% of getSignal under 5 ms | p50 1.00 ms | 1 of 4 (25.0%) | 50.0% |\n");
/// ```
pub fn objectives_markdown(stats: &PerformanceStatistics, rules: &[AlertRule]) -> Option<String> {
    let mut rows = Vec::new();
    for rule in rules {
        let Condition::Objective {
            metric,
            percentile,
            below,
        } = rule.condition
        else {
            continue;
        };
        let objective = format!(
            "{}: {percentile}% of {metric} under {below} ms",
            crate::report::escape(&rule.name)
        );
        let row = match objective_status(stats, metric, percentile, below) {
            None => format!("| {objective} | no operations | - | - |"),
            Some(status) => format!(
                "| {objective} | p{percentile} {} ms | {} of {} ({}%) | {} |",
                crate::report::sig3(status.measured_ms),
                crate::report::thousands(status.over as f64, 0),
                crate::report::thousands(status.count as f64, 0),
                crate::report::sig3(status.over_share_percent),
                if status.budget_left_percent <= 0.0 {
                    format!(
                        "{}% (spent)",
                        crate::report::sig3(status.budget_left_percent)
                    )
                } else {
                    format!("{}%", crate::report::sig3(status.budget_left_percent))
                }
            ),
        };
        rows.push(row);
    }
    (!rows.is_empty()).then(|| {
        format!(
            "\n## Objectives\n\n| Objective | Measured | Over | Error budget left |\n|---|---|---|---|\n{}\n",
            rows.join("\n")
        )
    })
}

/// A named condition with a severity and a cooldown.
///
/// ```
/// let rules = backtest_perf::alerts::rules_from_json(r#"[{"name": "x", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "warning"}]"#).unwrap();
/// assert_eq!(rules[0].cooldown().as_secs(), 900);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRule {
    /// Its name, first in every message.
    pub name: String,
    /// When it fires.
    pub condition: Condition,
    /// How bad it is.
    pub severity: Severity,
    /// Quiet time per key after firing; the severity's default when absent.
    #[serde(default, with = "optional_seconds")]
    pub cooldown: Option<Duration>,
}

impl AlertRule {
    /// A rule with the severity's default cooldown.
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertRule, Condition, Severity};
    /// let rule = AlertRule::new("drops", Condition::DroppedAbove { bound: 0 }, Severity::Critical);
    /// assert_eq!(rule.cooldown().as_secs(), 300);
    /// ```
    pub fn new(name: impl Into<String>, condition: Condition, severity: Severity) -> Self {
        AlertRule {
            name: name.into(),
            condition,
            severity,
            cooldown: None,
        }
    }

    /// The cooldown in force.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backtest_perf::alerts::{AlertRule, Condition, Severity};
    /// let rule = AlertRule { cooldown: Some(Duration::from_secs(10)), ..AlertRule::new("r", Condition::RejectedAbove { bound: 0 }, Severity::Critical) };
    /// assert_eq!(rule.cooldown(), Duration::from_secs(10));
    /// ```
    pub fn cooldown(&self) -> Duration {
        self.cooldown
            .unwrap_or_else(|| self.severity.default_cooldown())
    }
}

/// A rule's metric type, as a person typed it: see [`MetricType::parse_strict`].
fn typed_metric<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MetricType, D::Error> {
    let name = String::deserialize(d)?;
    MetricType::parse_strict(&name).map_err(serde::de::Error::custom)
}

mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let seconds = Option::<f64>::deserialize(d)?;
        seconds
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A fired rule.
///
/// ```
/// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// let _ = bus.emit(PerformanceContract::new(MetricType::Tick, -1.0, 1.0).with_symbol("A").with_strategy("s"));
/// let rule = AlertRule::new("rejects", Condition::RejectedAbove { bound: 0 }, Severity::Critical);
/// let alert = &AlertManager::new(vec![rule]).evaluate_now(&service.get_data("A", "s"))[0];
/// assert_eq!((alert.symbol.as_str(), alert.value, alert.bound), ("A", 1.0, 0.0));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: Severity,
    /// The symbol.
    pub symbol: String,
    /// The strategy.
    pub strategy: String,
    /// The value that crossed the bound.
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// When it fired (wall or simulated time, as evaluated).
    pub at: DateTime<Utc>,
    /// `rule: what happened (symbol:strategy)`.
    pub message: String,
}

/// Where alerts go. A sink that fails is counted and logged; the others still get the alert.
///
/// ```
/// use backtest_perf::alerts::{Alert, AlertSink};
/// struct Stdout;
/// impl AlertSink for Stdout {
///     fn deliver(&self, alert: &Alert) -> Result<(), String> {
///         println!("{}", alert.message);
///         Ok(())
///     }
/// }
/// ```
pub trait AlertSink: Send + Sync {
    /// Delivers one alert.
    fn deliver(&self, alert: &Alert) -> Result<(), String>;
}

/// Logs alerts with `tracing` (error for critical, warn for warning) and on stderr.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::alerts::{AlertManager, LogSink};
/// let _manager = AlertManager::new(vec![]).with_sink(Arc::new(LogSink));
/// ```
#[derive(Debug, Default)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn deliver(&self, alert: &Alert) -> Result<(), String> {
        match alert.severity {
            Severity::Critical => {
                tracing::error!(target: "backtest_perf::alerts", "{}", alert.message)
            }
            Severity::Warning => {
                tracing::warn!(target: "backtest_perf::alerts", "{}", alert.message)
            }
        }
        eprintln!("alert [{:?}] {}", alert.severity, alert.message);
        Ok(())
    }
}

/// Appends each alert as one JSON line to a file, creating its folder.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::alerts::{AlertManager, FileSink};
/// let dir = tempfile::tempdir().unwrap();
/// let _manager = AlertManager::new(vec![]).with_sink(Arc::new(FileSink::new(dir.path().join("alerts.jsonl"))));
/// ```
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileSink {
    /// A sink appending to `path`.
    ///
    /// ```
    /// let _sink = backtest_perf::alerts::FileSink::new("alerts/log.jsonl");
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }
}

impl AlertSink for FileSink {
    fn deliver(&self, alert: &Alert) -> Result<(), String> {
        let _one_writer = self.lock.lock();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut line = serde_json::to_string(alert).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        // One write of the whole line: readers never see half an alert.
        file.write_all(line.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// The body a webhook destination takes.
///
/// ```
/// use backtest_perf::alerts::WebhookFormat;
/// assert_eq!(WebhookFormat::parse_destination("slack=https://hooks.slack.com/x"), (WebhookFormat::Slack, "https://hooks.slack.com/x"));
/// assert_eq!(WebhookFormat::parse_destination("http://127.0.0.1:9000/a"), (WebhookFormat::Json, "http://127.0.0.1:9000/a"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The [`Alert`] as JSON, as it is.
    Json,
    /// Prometheus Alertmanager's `POST /api/v2/alerts`: an array of alerts with labels
    /// (`alertname`, `severity`, `symbol`, `strategy`), annotations (`summary`, `value`,
    /// `bound`) and `startsAt`. Give the Alertmanager's base URL or the full API URL.
    Alertmanager,
    /// A Slack-compatible incoming webhook: `{"text": "..."}`.
    Slack,
}

impl WebhookFormat {
    /// Reads a destination: `alertmanager=URL`, `slack=URL`, `json=URL`, or a bare URL
    /// (plain JSON).
    ///
    /// ```
    /// use backtest_perf::alerts::WebhookFormat;
    /// assert_eq!(WebhookFormat::parse_destination("alertmanager=http://127.0.0.1:9093").0, WebhookFormat::Alertmanager);
    /// ```
    pub fn parse_destination(destination: &str) -> (WebhookFormat, &str) {
        for (prefix, format) in [
            ("alertmanager=", WebhookFormat::Alertmanager),
            ("slack=", WebhookFormat::Slack),
            ("json=", WebhookFormat::Json),
        ] {
            if let Some(url) = destination.strip_prefix(prefix) {
                return (format, url);
            }
        }
        (WebhookFormat::Json, destination)
    }

    /// The body for `alert`.
    ///
    /// ```
    /// use backtest_perf::alerts::{Alert, Severity, WebhookFormat};
    /// let alert = Alert {
    ///     rule: "slow signals".into(), severity: Severity::Warning, symbol: "BTCUSDT".into(),
    ///     strategy: "sma".into(), value: 7.5, bound: 5.0, at: chrono::DateTime::UNIX_EPOCH,
    ///     message: "slow signals: p95 of getSignal is 7.500 ms, above 5.000 ms (BTCUSDT:sma)".into(),
    /// };
    /// let body: serde_json::Value = serde_json::from_str(&WebhookFormat::Alertmanager.body(&alert)).unwrap();
    /// assert_eq!(body[0]["labels"]["alertname"], "slow signals");
    /// assert_eq!(body[0]["labels"]["severity"], "warning");
    /// assert_eq!(body[0]["startsAt"], "1970-01-01T00:00:00Z");
    /// let slack: serde_json::Value = serde_json::from_str(&WebhookFormat::Slack.body(&alert)).unwrap();
    /// assert_eq!(slack["text"], "[warning] slow signals: p95 of getSignal is 7.500 ms, above 5.000 ms (BTCUSDT:sma)");
    /// ```
    pub fn body(self, alert: &Alert) -> String {
        let severity = match alert.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        };
        let value = match self {
            WebhookFormat::Json => serde_json::to_value(alert).unwrap_or_default(),
            WebhookFormat::Alertmanager => serde_json::json!([{
                "labels": {
                    "alertname": alert.rule,
                    "severity": severity,
                    "symbol": alert.symbol,
                    "strategy": alert.strategy,
                    "source": "backtest-perf",
                },
                "annotations": {
                    "summary": alert.message,
                    "value": alert.value.to_string(),
                    "bound": alert.bound.to_string(),
                },
                "startsAt": alert.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            }]),
            WebhookFormat::Slack => serde_json::json!({
                "text": format!("[{severity}] {}", alert.message),
            }),
        };
        value.to_string()
    }
}

/// POSTs each alert to a URL (feature `webhook`), in the format the destination takes,
/// with a 5-second timeout.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::alerts::{AlertManager, WebhookFormat, WebhookSink};
/// let _manager = AlertManager::new(vec![]).with_sink(Arc::new(WebhookSink::new("https://hooks.example.com/alerts")));
/// let _am = WebhookSink::with_format("http://127.0.0.1:9093", WebhookFormat::Alertmanager);
/// ```
#[cfg(feature = "webhook")]
#[derive(Debug)]
pub struct WebhookSink {
    post: crate::export::http::JsonPost,
    format: WebhookFormat,
}

#[cfg(feature = "webhook")]
impl WebhookSink {
    /// A sink posting plain JSON to `url`.
    ///
    /// ```
    /// let _sink = backtest_perf::alerts::WebhookSink::new("http://127.0.0.1:9000/alerts");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_format(url, WebhookFormat::Json)
    }

    /// A sink posting to `url` in `format`. For Alertmanager a base URL gets
    /// `/api/v2/alerts` added.
    ///
    /// ```
    /// use backtest_perf::alerts::{WebhookFormat, WebhookSink};
    /// let _sink = WebhookSink::with_format("slack=https://hooks.slack.com/x", WebhookFormat::Slack);
    /// ```
    pub fn with_format(url: impl Into<String>, format: WebhookFormat) -> Self {
        let mut url: String = url.into();
        if format == WebhookFormat::Alertmanager && !url.contains("/api/v2/alerts") {
            url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
        }
        WebhookSink {
            post: crate::export::http::JsonPost::new(url),
            format,
        }
    }

    /// A sink for a destination as [`WebhookFormat::parse_destination`] reads it.
    ///
    /// ```
    /// let _sink = backtest_perf::alerts::WebhookSink::to("alertmanager=http://127.0.0.1:9093");
    /// ```
    pub fn to(destination: &str) -> Self {
        let (format, url) = WebhookFormat::parse_destination(destination);
        Self::with_format(url, format)
    }
}

#[cfg(feature = "webhook")]
impl AlertSink for WebhookSink {
    fn deliver(&self, alert: &Alert) -> Result<(), String> {
        self.post.send(self.format.body(alert))
    }
}

/// Evaluates rules and delivers what fires; see the [module documentation](self).
///
/// ```
/// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
/// use backtest_perf::{PerformanceEmitter, PerformanceService};
/// let service = PerformanceService::attached(&PerformanceEmitter::new());
/// let rule = AlertRule::new("never", Condition::RejectedAbove { bound: 0 }, Severity::Warning);
/// let manager = AlertManager::new(vec![rule]);
/// assert!(manager.evaluate_now(&service.get_data("A", "s")).is_empty());
/// ```
pub struct AlertManager {
    rules: Vec<AlertRule>,
    sinks: Vec<Arc<dyn AlertSink>>,
    last_fired: Mutex<HashMap<(usize, StorageKey), DateTime<Utc>>>,
    failures: AtomicU64,
    /// Why the first deliveries failed (at most [`FAILURE_REASONS_KEPT`]).
    failure_reasons: Mutex<Vec<String>>,
}

/// Delivery failure reasons an [`AlertManager`] keeps; past it they are only counted.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use backtest_perf::alerts::*;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// struct Down;
/// impl AlertSink for Down {
///     fn deliver(&self, alert: &Alert) -> Result<(), String> {
///         Err(format!("down at {}", alert.at.timestamp()))
///     }
/// }
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0).with_symbol("A").with_strategy("s")).unwrap();
/// let rule = AlertRule {
///     cooldown: Some(Duration::ZERO),
///     ..AlertRule::new("slow", Condition::Above { metric: MetricType::Tick, statistic: Statistic::Max, bound: 1.0 }, Severity::Critical)
/// };
/// let manager = AlertManager::new(vec![rule]).with_sink(Arc::new(Down));
/// let stats = service.get_data("A", "s");
/// for second in 0..20 {
///     let now = chrono::DateTime::from_timestamp(second, 0).unwrap();
///     assert_eq!(manager.evaluate(&stats, now).len(), 1);
/// }
/// assert_eq!(manager.failures(), 20);
/// let reasons = manager.failure_reasons();
/// assert_eq!(reasons.len(), FAILURE_REASONS_KEPT);
/// assert_eq!((reasons[0].as_str(), reasons[FAILURE_REASONS_KEPT - 1].as_str()), ("down at 0", "down at 7"));
/// ```
pub const FAILURE_REASONS_KEPT: usize = 8;

impl std::fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertManager")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl AlertManager {
    /// The rules, in the order given.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// A manager with `rules` and no sinks (fired alerts are only returned).
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let rule = AlertRule::new("never", Condition::RejectedAbove { bound: 0 }, Severity::Warning);
    /// let manager = AlertManager::new(vec![rule]);
    /// assert_eq!(manager.failures(), 0);
    /// ```
    pub fn new(rules: Vec<AlertRule>) -> Self {
        AlertManager {
            rules,
            sinks: Vec::new(),
            last_fired: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            failure_reasons: Mutex::new(Vec::new()),
        }
    }

    /// Adds a sink.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let manager = backtest_perf::alerts::AlertManager::new(vec![]).with_sink(Arc::new(backtest_perf::alerts::LogSink));
    /// assert_eq!(manager.failures(), 0);
    /// ```
    pub fn with_sink(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Deliveries that failed.
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let rule = AlertRule::new("never", Condition::RejectedAbove { bound: 0 }, Severity::Warning);
    /// let manager = AlertManager::new(vec![rule]);
    /// manager.evaluate_now(&service.get_data("A", "s"));
    /// assert_eq!(manager.failures(), 0);
    /// ```
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the first failed deliveries failed (at most [`FAILURE_REASONS_KEPT`]), so a
    /// program with no `tracing` subscriber can still say it.
    ///
    /// ```
    /// assert!(backtest_perf::alerts::AlertManager::new(vec![]).failure_reasons().is_empty());
    /// ```
    pub fn failure_reasons(&self) -> Vec<String> {
        self.failure_reasons.lock().clone()
    }

    /// Evaluates every rule on `stats` at wall-clock now.
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let rule = AlertRule::new("never", Condition::RejectedAbove { bound: 0 }, Severity::Warning);
    /// let manager = AlertManager::new(vec![rule]);
    /// assert!(manager.evaluate_now(&service.get_data("A", "s")).is_empty(), "nothing was rejected");
    /// ```
    pub fn evaluate_now(&self, stats: &PerformanceStatistics) -> Vec<Alert> {
        self.evaluate(stats, DateTime::<Utc>::from(std::time::SystemTime::now()))
    }

    /// Evaluates every rule on `stats` at time `now`; delivers and returns what fires.
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, Severity};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let rule = AlertRule::new("never", Condition::RejectedAbove { bound: 0 }, Severity::Warning);
    /// let manager = AlertManager::new(vec![rule]);
    /// let at = backtest_perf::engine::candle::to_utc(1_704_067_200_000);
    /// assert!(manager.evaluate(&service.get_data("A", "s"), at).is_empty());
    /// ```
    pub fn evaluate(&self, stats: &PerformanceStatistics, now: DateTime<Utc>) -> Vec<Alert> {
        let key = StorageKey::new(&stats.symbol, &stats.strategy_name);
        self.fire(key, now, |condition| condition.check(stats))
    }

    /// Checks the resource rules (`cpuAbove`, `rssAbove`, `queueDepthAbove`) on one
    /// sample of the resource monitor, for the process as a whole (`global:global`).
    ///
    /// ```
    /// use backtest_perf::alerts::{AlertManager, rules_from_json};
    /// use backtest_perf::monitor::ResourceSample;
    /// let rules = rules_from_json(r#"[{"name": "backlog", "severity": "warning",
    ///     "condition": {"kind": "queueDepthAbove", "bound": 1000}}]"#).unwrap();
    /// let sample = ResourceSample { elapsed_ms: 0.0, cpu_user_ms: None, cpu_system_ms: None,
    ///     cpu_percent: Some(150.0), rss_bytes: Some(1 << 30), threads: Some(4), queue_depth: 5000 };
    /// let fired = AlertManager::new(rules).evaluate_resources(&sample, chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()));
    /// assert_eq!(fired[0].message, "backlog: a listener queue holds 5000 events, above 1000 (global:global)");
    /// ```
    pub fn evaluate_resources(
        &self,
        sample: &crate::monitor::ResourceSample,
        now: DateTime<Utc>,
    ) -> Vec<Alert> {
        self.fire(StorageKey::new("", ""), now, |condition| {
            condition.check_resources(sample)
        })
    }

    /// Fires the rules whose condition `check` finds met, past their cooldown for `key`.
    fn fire(
        &self,
        key: StorageKey,
        now: DateTime<Utc>,
        check: impl Fn(&Condition) -> Option<(f64, f64, String)>,
    ) -> Vec<Alert> {
        let mut fired = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some((value, bound, what)) = check(&rule.condition) else {
                continue;
            };
            {
                let mut last = self.last_fired.lock();
                let cooldown =
                    chrono::Duration::from_std(rule.cooldown()).unwrap_or(chrono::Duration::MAX);
                // A cooldown that ends beyond the calendar never ends.
                if let Some(previous) = last.get(&(index, key))
                    && previous
                        .checked_add_signed(cooldown)
                        .is_none_or(|until| now < until)
                {
                    continue;
                }
                last.insert((index, key), now);
            }
            let alert = Alert {
                rule: rule.name.clone(),
                severity: rule.severity,
                symbol: key.symbol.to_string(),
                strategy: key.strategy.to_string(),
                value,
                bound,
                at: now,
                message: format!("{}: {what} ({key})", rule.name),
            };
            for sink in &self.sinks {
                if let Err(why) = sink.deliver(&alert) {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "backtest_perf::alerts", "alert delivery failed: {why}");
                    let mut reasons = self.failure_reasons.lock();
                    if reasons.len() < FAILURE_REASONS_KEPT {
                        reasons.push(why);
                    }
                }
            }
            fired.push(alert);
        }
        fired
    }
}

/// Checks alert rules while a run goes on: a [`Sink`](crate::Sink) that evaluates the
/// rules on a key's statistics each time the key's simulated time (`when`) passes the
/// next multiple of `every`, on the emitting thread, so an alert is judged on the
/// statistics of that moment (as of the batch that crossed it). Events without `when`
/// are not looked at. Evaluations per key are bounded by the simulated span over `every`.
///
/// ```
/// use std::sync::Arc;
/// use backtest_perf::alerts::{AlertManager, AlertRule, Condition, InRunAlerts, Severity};
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StorageConfig};
/// use chrono::{TimeDelta, TimeZone, Utc};
///
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached_with(&bus, StorageConfig { max_events: 1, ..Default::default() }, Default::default());
/// let rule = AlertRule::new("dropping", Condition::DroppedAbove { bound: 0 }, Severity::Warning);
/// let manager = Arc::new(AlertManager::new(vec![rule]));
/// let checker = Arc::new(InRunAlerts::new(manager.clone(), service.clone(), TimeDelta::hours(1)));
/// bus.add_sink(checker.clone());
/// let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
/// for minute in 0..150 {
///     let when = start + TimeDelta::minutes(minute);
///     bus.emit(PerformanceContract::new(MetricType::Tick, 0.001, 1.7e12).with_symbol("A").with_when(when)).unwrap();
/// }
/// // Checked at 01:00 and 02:00 of simulated time; events were dropped by then.
/// assert_eq!(checker.fired().iter().map(|a| a.at.format("%H:%M").to_string()).collect::<Vec<_>>(), ["01:00", "02:00"]);
/// ```
pub struct InRunAlerts {
    manager: Arc<AlertManager>,
    service: crate::PerformanceService,
    every_ms: i64,
    /// The next check per key, in simulated epoch ms.
    next: Mutex<HashMap<StorageKey, i64>>,
    fired: Mutex<Vec<Alert>>,
}

/// Keys whose next check [`InRunAlerts`] keeps; past it the map starts over.
pub const MAX_CHECKED_KEYS: usize = 4_096;

impl std::fmt::Debug for InRunAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InRunAlerts")
            .field("every_ms", &self.every_ms)
            .finish_non_exhaustive()
    }
}

impl InRunAlerts {
    /// Checks `manager`'s rules on `service`'s statistics every `every` of simulated
    /// time (at least a minute).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::alerts::{AlertManager, InRunAlerts};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let _checker = InRunAlerts::new(Arc::new(AlertManager::new(vec![])), service, chrono::TimeDelta::days(1));
    /// ```
    pub fn new(
        manager: Arc<AlertManager>,
        service: crate::PerformanceService,
        every: chrono::TimeDelta,
    ) -> Self {
        InRunAlerts {
            manager,
            service,
            every_ms: every.num_milliseconds().max(60_000),
            next: Mutex::new(HashMap::new()),
            fired: Mutex::new(Vec::new()),
        }
    }

    /// The alerts fired during the run so far.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use backtest_perf::alerts::{AlertManager, InRunAlerts};
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let service = PerformanceService::attached(&PerformanceEmitter::new());
    /// let checker = InRunAlerts::new(Arc::new(AlertManager::new(vec![])), service, chrono::TimeDelta::days(1));
    /// assert!(checker.fired().is_empty());
    /// ```
    pub fn fired(&self) -> Vec<Alert> {
        self.fired.lock().clone()
    }

    fn check(&self, event: &crate::PerformanceContract) {
        let Some(when) = event.when else { return };
        let at = when.timestamp_millis();
        let key = StorageKey::of(event);
        let due = {
            let mut next = self.next.lock();
            if !next.contains_key(&key) && next.len() >= MAX_CHECKED_KEYS {
                // Bounded: keys past the cap start over (their next check is recomputed).
                next.clear();
            }
            let slot = next.entry(key).or_insert_with(|| {
                (at.div_euclid(self.every_ms) + 1).saturating_mul(self.every_ms)
            });
            if at < *slot {
                return;
            }
            let due = *slot;
            *slot = (at.div_euclid(self.every_ms) + 1).saturating_mul(self.every_ms);
            due
        };
        let Some(due) = DateTime::<Utc>::from_timestamp_millis(due) else {
            return;
        };
        let stats = self.service.get_data_for(key);
        let fired = self.manager.evaluate(&stats, due);
        self.fired.lock().extend(fired);
    }
}

impl crate::Sink for InRunAlerts {
    fn on_event(&self, event: &crate::PerformanceContract) {
        self.check(event);
    }

    fn on_batch(&self, events: &[crate::PerformanceContract]) {
        for event in events {
            self.check(event);
        }
    }
}

/// Reads rules from JSON: an array of rules.
///
/// ```
/// let rules = backtest_perf::alerts::rules_from_json(
///     r#"[{"name": "rejects", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "critical", "cooldown": 60}]"#,
/// ).unwrap();
/// assert_eq!(rules[0].cooldown(), std::time::Duration::from_secs(60));
/// ```
pub fn rules_from_json(text: &str) -> Result<Vec<AlertRule>, serde_json::Error> {
    let rules: Vec<AlertRule> = serde_json::from_str(text)?;
    for rule in &rules {
        if let Condition::Objective {
            percentile, below, ..
        } = rule.condition
            && !(percentile > 0.0 && percentile < 100.0 && below.is_finite() && below > 0.0)
        {
            return Err(serde::de::Error::custom(format!(
                "rule {:?}: an objective needs a percentile above 0 and below 100 and `below` a number of ms above 0 (got {percentile} and {below})",
                rule.name
            )));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, Sink};

    #[test]
    fn in_run_checks_keep_at_most_the_key_cap_and_start_over_past_it() {
        let service = PerformanceService::attached(&PerformanceEmitter::new());
        let checker = InRunAlerts::new(
            Arc::new(AlertManager::new(vec![])),
            service,
            chrono::TimeDelta::days(1),
        );
        let when = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let event = |k: usize| {
            PerformanceContract::new(MetricType::Tick, 1.0, 1.0)
                .with_symbol(format!("K{k}"))
                .with_strategy("s")
                .with_when(when)
        };
        for k in 0..MAX_CHECKED_KEYS {
            checker.on_event(&event(k));
        }
        assert_eq!(checker.next.lock().len(), MAX_CHECKED_KEYS);
        // A known key adds nothing; one more key starts the map over.
        checker.on_event(&event(0));
        assert_eq!(checker.next.lock().len(), MAX_CHECKED_KEYS);
        checker.on_event(&event(MAX_CHECKED_KEYS));
        assert_eq!(checker.next.lock().len(), 1);
    }
}
