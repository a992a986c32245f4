//! Regression checks: a current measurement against a baseline, per metric type.
//!
//! A metric type regresses when its mean, median, p95 or p99 grew beyond the threshold
//! (default 20%) **and** a one-sided Mann-Whitney U test on the raw durations says the
//! current ones are larger (p below `alpha`, default 0.05). A change the test cannot
//! confirm (noise, too few samples) is reported, never flagged.

use std::collections::BTreeMap;

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::stats::PerformanceStatistics;
use crate::{MetricStats, MetricType};

/// One-sided Mann-Whitney U test: the p-value of "`current` tends to be larger than
/// `baseline`", by the normal approximation with tie and continuity corrections.
/// 1 when either side is empty or every value ties.
///
/// ```
/// use backtest_perf::compare::mann_whitney_greater;
/// let base: Vec<f64> = (0..50).map(f64::from).collect();
/// let slower: Vec<f64> = (25..75).map(f64::from).collect();
/// assert!(mann_whitney_greater(&slower, &base) < 0.001);
/// assert!(mann_whitney_greater(&base, &slower) > 0.99);
/// assert_eq!(mann_whitney_greater(&[1.0; 5], &[1.0; 5]), 1.0);
/// ```
pub fn mann_whitney_greater(current: &[f64], baseline: &[f64]) -> f64 {
    let (n1, n2) = (current.len() as f64, baseline.len() as f64);
    if current.is_empty() || baseline.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = current
        .iter()
        .map(|&d| (d, true))
        .chain(baseline.iter().map(|&d| (d, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len() as f64;
    let (mut rank_sum, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * all[i..=j].iter().filter(|(_, mine)| *mine).count() as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    let standard = Normal::standard();
    1.0 - standard.cdf(z)
}

/// What a comparison found for one metric type.
///
/// ```
/// use backtest_perf::compare::{compare, Verdict};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// let stats = |scale: f64| {
///     let events = (1..=40).map(|i| PerformanceContract::new(MetricType::Tick, f64::from(i) * scale, 0.0)).collect();
///     PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed)
/// };
/// let rows = compare(&stats(1.0), &stats(2.0), 20.0, 0.05);
/// assert_eq!(rows[0].verdict, Verdict::Regression);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Slower beyond the threshold, and the test confirms it.
    Regression,
    /// Faster beyond the threshold, and the test confirms it.
    Improvement,
    /// Beyond the threshold, but the test does not confirm it.
    Unconfirmed,
    /// Within the threshold.
    Unchanged,
    /// In one measurement only.
    Missing,
    /// One side holds no raw durations of this type (its window lost them, or it was
    /// merged from statistics): no test can run, so no verdict is given.
    Untested,
}

/// One metric type, baseline against current.
///
/// ```
/// use backtest_perf::compare::{compare, Verdict};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// let stats = |scale: f64| {
///     let events = (1..=40).map(|i| PerformanceContract::new(MetricType::Tick, f64::from(i) * scale, 0.0)).collect();
///     PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed)
/// };
/// let rows = compare(&stats(1.0), &stats(2.0), 20.0, 0.05);
/// assert_eq!(rows[0].samples, (40, 40));
/// assert_eq!(rows[0].change_percent.unwrap()[0], 100.0);
/// assert!(rows[0].p_slower < 0.001);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparison {
    /// The metric type.
    pub metric_type: MetricType,
    /// Samples on each side.
    pub samples: (usize, usize),
    /// Baseline (mean, median, p95, p99), ms.
    pub baseline: Option<[f64; 4]>,
    /// Current (mean, median, p95, p99), ms.
    pub current: Option<[f64; 4]>,
    /// Change of each, percent.
    pub change_percent: Option<[f64; 4]>,
    /// p-value that the current durations are larger.
    pub p_slower: f64,
    /// p-value that the current durations are smaller.
    pub p_faster: f64,
    /// The verdict.
    pub verdict: Verdict,
}

fn summary(m: &MetricStats) -> [f64; 4] {
    [m.avg_duration, m.median, m.p95, m.p99]
}

fn durations(stats: &PerformanceStatistics, metric: MetricType) -> Vec<f64> {
    stats
        .events
        .iter()
        .filter(|e| e.metric_type == metric)
        .map(|e| e.duration)
        .collect()
}

/// Checks that a report agrees with itself before it is trusted as a baseline: per
/// metric type, the statistics are ordered (min ≤ mean, median, p95, p99 ≤ max), the
/// events it holds are no more than its count and lie within its min and max, and the
/// counts add up to the total. The error names the first disagreement.
///
/// ```
/// use backtest_perf::compare::check_consistent;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 1.0)).unwrap();
/// let mut stats = service.get_data("", "");
/// assert!(check_consistent(&stats).is_ok());
/// stats.metric_stats.get_mut(&MetricType::Tick).unwrap().max_duration = 1.0;
/// assert_eq!(
///     check_consistent(&stats).unwrap_err(),
///     "tick: its statistics are out of order (min 2, mean 2, median 2, p95 2, p99 2, max 1 ms)"
/// );
/// ```
pub fn check_consistent(stats: &PerformanceStatistics) -> Result<(), String> {
    let mut total = 0usize;
    for (metric, m) in &stats.metric_stats {
        total = total.saturating_add(m.count);
        let inner = [m.avg_duration, m.median, m.p95, m.p99];
        let low = m.min_duration * (1.0 - 1e-9) - 1e-12;
        let high = m.max_duration * (1.0 + 1e-9) + 1e-12;
        // NaN is outside too: `contains` is false for it.
        if m.count > 0 && inner.iter().any(|v| !(low..=high).contains(v)) {
            return Err(format!(
                "{metric}: its statistics are out of order (min {}, mean {}, median {}, p95 {}, p99 {}, max {} ms)",
                m.min_duration, m.avg_duration, m.median, m.p95, m.p99, m.max_duration
            ));
        }
        let held: Vec<f64> = stats
            .events
            .iter()
            .filter(|e| e.metric_type == *metric)
            .map(|e| e.duration)
            .collect();
        if held.len() > m.count {
            return Err(format!(
                "{metric}: it holds {} events but counts {}",
                held.len(),
                m.count
            ));
        }
        if let Some(outside) = held
            .iter()
            .find(|&&d| d < m.min_duration - 1e-12 || d > m.max_duration + 1e-12)
        {
            return Err(format!(
                "{metric}: an event took {outside} ms, outside its min {} and max {}",
                m.min_duration, m.max_duration
            ));
        }
    }
    if !stats.metric_stats.is_empty() && total != stats.total_events {
        return Err(format!(
            "its metric types count {total} events but its total is {}",
            stats.total_events
        ));
    }
    Ok(())
}

/// Compares every metric type of `baseline` and `current`.
///
/// ```
/// use backtest_perf::compare::{compare, Verdict};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// let stats = |scale: f64| {
///     let events = (1..=40).map(|i| PerformanceContract::new(MetricType::Tick, f64::from(i) * scale, 0.0)).collect();
///     PerformanceStatistics::compute(StorageKey::new("A", "s"), events, 0, 0, StatsPreset::Seed)
/// };
/// let rows = compare(&stats(1.0), &stats(2.0), 20.0, 0.05);
/// assert_eq!(compare(&stats(1.0), &stats(1.0), 20.0, 0.05)[0].verdict, Verdict::Unchanged);
/// assert_eq!(rows[0].metric_type, MetricType::Tick);
/// ```
pub fn compare(
    baseline: &PerformanceStatistics,
    current: &PerformanceStatistics,
    threshold_percent: f64,
    alpha: f64,
) -> Vec<MetricComparison> {
    let mut metrics: BTreeMap<MetricType, ()> = BTreeMap::new();
    metrics.extend(baseline.metric_stats.keys().map(|m| (*m, ())));
    metrics.extend(current.metric_stats.keys().map(|m| (*m, ())));
    metrics
        .into_keys()
        .map(|metric| {
            let (base, cur) = (durations(baseline, metric), durations(current, metric));
            let b = baseline.metric_stats.get(&metric).map(summary);
            let c = current.metric_stats.get(&metric).map(summary);
            let change = b.zip(c).map(|(b, c)| {
                std::array::from_fn(|i| {
                    if b[i] > 0.0 {
                        (c[i] - b[i]) / b[i] * 100.0
                    } else if c[i] > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                })
            });
            let (p_slower, p_faster) = (
                mann_whitney_greater(&cur, &base),
                mann_whitney_greater(&base, &cur),
            );
            let verdict = match change {
                None => Verdict::Missing,
                Some(_) if base.is_empty() || cur.is_empty() => Verdict::Untested,
                Some(change) => {
                    let slower = change.iter().any(|&c| c > threshold_percent);
                    let faster = change.iter().any(|&c| c < -threshold_percent);
                    if slower && p_slower < alpha {
                        Verdict::Regression
                    } else if faster && p_faster < alpha {
                        Verdict::Improvement
                    } else if slower || faster {
                        Verdict::Unconfirmed
                    } else {
                        Verdict::Unchanged
                    }
                }
            };
            MetricComparison {
                metric_type: metric,
                samples: (base.len(), cur.len()),
                baseline: b,
                current: c,
                change_percent: change,
                p_slower,
                p_faster,
                verdict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_matches_a_hand_computed_case() {
        // current [3, 4, 5], baseline [1, 2, 3]: ranks 1, 2, 3.5, 3.5, 5, 6.
        // R = 3.5 + 5 + 6 = 14.5, U = 14.5 - 6 = 8.5, mean 4.5,
        // variance = 9/12 * (7 - (8 - 2) / 30) = 0.75 * 6.8 = 5.1,
        // z = (8.5 - 4.5 - 0.5) / sqrt(5.1).
        let z: f64 = 3.5 / 5.1f64.sqrt();
        let expected = 1.0 - Normal::standard().cdf(z);
        assert_eq!(
            mann_whitney_greater(&[3.0, 4.0, 5.0], &[1.0, 2.0, 3.0]),
            expected
        );
        assert!((expected - 0.0604).abs() < 1e-3, "{expected}");
    }
}
