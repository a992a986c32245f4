//! Slowness, judged in one place: [`Thresholds`] per metric type and one slowness ratio.
//!
//! The engine's hook timer, the run tracker, the Prometheus and OpenTelemetry exporters
//! all ask the same value whether an operation was slow and by how much, so the outputs
//! of one run agree. A threshold is a finite number of milliseconds above 0: a zero or
//! negative one is refused when it is set, never turned into an infinity in an output.
//!
//! ```
//! use backtest_perf::thresholds::Thresholds;
//!
//! let t = Thresholds::default().with("getSignal", 2.0).unwrap();
//! assert_eq!(t.threshold_ms("getSignal"), 2.0);
//! assert_eq!(t.threshold_ms("tick"), 100.0, "the default");
//! assert!(t.is_slow("getSignal", 3.0));
//! assert_eq!(t.ratio("getSignal", 3.0), 1.5);
//! assert!(Thresholds::default().with("tick", 0.0).is_err());
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

/// Slow-operation thresholds, ms: one per metric type, and a default for the rest.
///
/// The default value holds the engine's defaults: `getCandles` 50 ms, `getSignal` 5 ms,
/// everything else 100 ms.
///
/// ```
/// use backtest_perf::thresholds::Thresholds;
/// let t = Thresholds::default();
/// assert_eq!((t.threshold_ms("getCandles"), t.threshold_ms("getSignal"), t.default_ms()), (50.0, 5.0, 100.0));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    default_ms: f64,
    by_metric: BTreeMap<String, f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            default_ms: 100.0,
            by_metric: [
                ("getCandles".to_string(), 50.0),
                ("getSignal".to_string(), 5.0),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// The share of its wall time a thread must have spent on the CPU for a slow operation
/// to count as slow code rather than waiting (pre-empted or blocked).
///
/// ```
/// use backtest_perf::thresholds::{thread_ran, RAN_SHARE};
/// assert!(thread_ran(RAN_SHARE * 10.0, 10.0));
/// assert!(!thread_ran(RAN_SHARE * 10.0 - 0.01, 10.0));
/// ```
pub const RAN_SHARE: f64 = 0.8;

/// Whether a thread that used `cpu_ms` of CPU over `wall_ms` of wall time ran (slow
/// code), rather than waited: at least [`RAN_SHARE`] of the wall time on the CPU.
///
/// ```
/// use backtest_perf::thresholds::thread_ran;
/// assert!(thread_ran(9.0, 10.0));
/// assert!(!thread_ran(1.0, 10.0));
/// assert!(thread_ran(0.0, 0.0), "nothing to wait for");
/// ```
pub fn thread_ran(cpu_ms: f64, wall_ms: f64) -> bool {
    wall_ms <= 0.0 || cpu_ms >= RAN_SHARE * wall_ms
}

/// A threshold that is not a finite number of milliseconds above 0.
///
/// ```
/// use backtest_perf::thresholds::Thresholds;
/// let err = Thresholds::new(-1.0).unwrap_err();
/// assert_eq!(err.to_string(), "the default slow threshold is -1 ms; give a number of milliseconds above 0 (for example 5)");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "the {} slow threshold is {value} ms; give a number of milliseconds above 0 (for example 5)",
    metric.as_deref().map_or("default".to_string(), |m| format!("`{m}`"))
)]
pub struct InvalidThreshold {
    /// The metric type it was for; `None` for the default.
    pub metric: Option<String>,
    /// The value given.
    pub value: f64,
}

fn check(metric: Option<&str>, ms: f64) -> Result<f64, InvalidThreshold> {
    if ms.is_finite() && ms > 0.0 {
        Ok(ms)
    } else {
        Err(InvalidThreshold {
            metric: metric.map(str::to_string),
            value: ms,
        })
    }
}

impl Thresholds {
    /// Thresholds with `default_ms` for every metric type and no others.
    ///
    /// ```
    /// use backtest_perf::thresholds::Thresholds;
    /// assert_eq!(Thresholds::new(20.0).unwrap().threshold_ms("getSignal"), 20.0);
    /// ```
    pub fn new(default_ms: f64) -> Result<Self, InvalidThreshold> {
        Ok(Thresholds {
            default_ms: check(None, default_ms)?,
            by_metric: BTreeMap::new(),
        })
    }

    /// The same thresholds with `metric`'s set to `ms`.
    ///
    /// ```
    /// use backtest_perf::thresholds::Thresholds;
    /// let t = Thresholds::default().with("backtest", 250.0).unwrap();
    /// assert_eq!(t.threshold_ms("backtest"), 250.0);
    /// ```
    pub fn with(mut self, metric: &str, ms: f64) -> Result<Self, InvalidThreshold> {
        self.set(metric, ms)?;
        Ok(self)
    }

    /// Sets `metric`'s threshold to `ms`.
    ///
    /// ```
    /// use backtest_perf::thresholds::Thresholds;
    /// let mut t = Thresholds::default();
    /// t.set("tick", 1.0).unwrap();
    /// assert!(t.set("tick", f64::NAN).is_err());
    /// assert_eq!(t.threshold_ms("tick"), 1.0, "a refused value changes nothing");
    /// ```
    pub fn set(&mut self, metric: &str, ms: f64) -> Result<(), InvalidThreshold> {
        let ms = check(Some(metric), ms)?;
        self.by_metric.insert(metric.to_string(), ms);
        Ok(())
    }

    /// The threshold of metric types without their own.
    ///
    /// ```
    /// assert_eq!(backtest_perf::thresholds::Thresholds::default().default_ms(), 100.0);
    /// ```
    pub fn default_ms(&self) -> f64 {
        self.default_ms
    }

    /// The metric types with a threshold of their own, by name.
    ///
    /// ```
    /// let t = backtest_perf::thresholds::Thresholds::default();
    /// assert_eq!(t.by_metric().map(|(m, _)| m).collect::<Vec<_>>(), ["getCandles", "getSignal"]);
    /// ```
    pub fn by_metric(&self) -> impl Iterator<Item = (&str, f64)> {
        self.by_metric.iter().map(|(m, ms)| (m.as_str(), *ms))
    }

    /// `metric`'s threshold, ms: its own, or the default.
    ///
    /// ```
    /// assert_eq!(backtest_perf::thresholds::Thresholds::default().threshold_ms("getSignal"), 5.0);
    /// ```
    pub fn threshold_ms(&self, metric: &str) -> f64 {
        self.by_metric
            .get(metric)
            .copied()
            .unwrap_or(self.default_ms)
    }

    /// `metric`'s threshold in whole nanoseconds (at least 1), for comparing clock
    /// readings without converting each one.
    ///
    /// ```
    /// assert_eq!(backtest_perf::thresholds::Thresholds::default().threshold_ns("getSignal"), 5_000_000);
    /// ```
    pub fn threshold_ns(&self, metric: &str) -> u64 {
        ((self.threshold_ms(metric) * 1e6) as u64).max(1)
    }

    /// Whether an operation of `metric` that took `duration_ms` was slow: longer than its
    /// threshold.
    ///
    /// ```
    /// let t = backtest_perf::thresholds::Thresholds::default();
    /// assert!(!t.is_slow("getSignal", 5.0));
    /// assert!(t.is_slow("getSignal", 5.01));
    /// ```
    pub fn is_slow(&self, metric: &str, duration_ms: f64) -> bool {
        duration_ms > self.threshold_ms(metric)
    }

    /// The slowness ratio: `duration_ms / threshold`, always finite for a finite duration.
    ///
    /// ```
    /// assert_eq!(backtest_perf::thresholds::Thresholds::default().ratio("getCandles", 125.0), 2.5);
    /// ```
    pub fn ratio(&self, metric: &str, duration_ms: f64) -> f64 {
        duration_ms / self.threshold_ms(metric)
    }
}
