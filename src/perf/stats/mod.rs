//! Statistics of a `symbol:strategy`: [`PerformanceStatistics`] and per-type [`MetricStats`].
//!
//! The default preset reads the whole run from each type's [`Aggregate`] (every event since
//! the key was created or cleared; percentiles exact while the window holds every event of
//! the type, else from the histogram within 0.1%). The `backtest-kit` preset computes over
//! the window of raw events, exactly as backtest-kit 19.5. One file per statistic:
//! [`Aggregate`], [`percentile`], [`std_dev`], compensated [`Sum`].

mod aggregate;
mod percentile;
mod std_dev;
mod sum;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use aggregate::Aggregate;
pub use percentile::{PercentileMethod, nearest_rank, percentile};
pub use std_dev::{StdDevKind, std_dev};
pub use sum::Sum;

use super::event::{MetricType, PerformanceContract};
use super::key::StorageKey;
use super::name::Name;
use super::storage::Snapshot;

/// How percentiles and the standard deviation are computed.
///
/// ```
/// use backtest_perf::stats::{MetricStats, StatsPreset};
///
/// let d = [1.0, 2.0, 3.0, 4.0];
/// let seed = MetricStats::from_durations("tick".into(), &d, StatsPreset::Seed);
/// assert_eq!((seed.median, seed.p95, seed.p99), (2.0, 4.0, 4.0));
/// let bk = MetricStats::from_durations("tick".into(), &d, StatsPreset::BacktestKit);
/// assert_eq!(bk.median, 2.5);
/// assert_eq!(format!("{:.2} {:.2} {:.4}", bk.p95, bk.p99, bk.std_dev), "3.85 3.97 1.2910");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatsPreset {
    /// Nearest-rank percentiles and population standard deviation, as the reference
    /// documents them. The default.
    #[default]
    Seed,
    /// Linearly interpolated percentiles and sample standard deviation, as backtest-kit
    /// computes them since its 10.2 release.
    BacktestKit,
}

impl StatsPreset {
    /// The percentile method of this preset.
    ///
    /// ```
    /// use backtest_perf::stats::{PercentileMethod, StatsPreset};
    /// assert_eq!(StatsPreset::BacktestKit.percentile_method(), PercentileMethod::Linear);
    /// ```
    pub fn percentile_method(self) -> PercentileMethod {
        match self {
            StatsPreset::Seed => PercentileMethod::NearestRank,
            StatsPreset::BacktestKit => PercentileMethod::Linear,
        }
    }

    /// The standard deviation of this preset.
    ///
    /// ```
    /// use backtest_perf::stats::{StatsPreset, StdDevKind};
    /// assert_eq!(StatsPreset::Seed.std_dev_kind(), StdDevKind::Population);
    /// ```
    pub fn std_dev_kind(self) -> StdDevKind {
        match self {
            StatsPreset::Seed => StdDevKind::Population,
            StatsPreset::BacktestKit => StdDevKind::Sample,
        }
    }
}

/// Statistics of one metric type in one `symbol:strategy` bucket; durations in ms.
///
/// ```
/// use backtest_perf::stats::{MetricStats, StatsPreset};
/// let m = MetricStats::from_durations("getSignal".into(), &[1.0, 3.0], StatsPreset::Seed);
/// assert_eq!(serde_json::to_value(m).unwrap()["avgDuration"], 2.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricStats {
    /// The metric type.
    pub metric_type: MetricType,
    /// Number of operations: the timed events, plus the untimed ones of a sampled run.
    pub count: usize,
    /// Operations counted but not timed (a sampled run); the durations cover the others.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untimed: u64,
    /// Sum of durations.
    pub total_duration: f64,
    /// Sum of self times: durations less the operations nested inside them.
    #[serde(default)]
    pub self_duration: f64,
    /// Mean duration.
    pub avg_duration: f64,
    /// Shortest duration.
    pub min_duration: f64,
    /// Longest duration.
    pub max_duration: f64,
    /// Standard deviation of durations.
    pub std_dev: f64,
    /// 50th percentile.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean of `timestamp - previousTimestamp` over events that have a previous timestamp.
    pub avg_wait_time: f64,
    /// Shortest wait.
    pub min_wait_time: f64,
    /// Longest wait.
    pub max_wait_time: f64,
    /// Whether the percentiles are exact (every event of this type is still in the window)
    /// or read from the whole-run histogram (within 0.1%).
    #[serde(default = "exact_by_default")]
    pub exact: bool,
    /// Operations that failed (`ok: false`): a strategy's error, a rejected signal, a
    /// timed closure that returned `Err`.
    #[serde(default)]
    pub errors: u64,
    /// `errors / count`, percent; 0 with no operations.
    #[serde(default)]
    pub error_rate: f64,
}

fn exact_by_default() -> bool {
    true
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MetricStats {
    /// Statistics of bare durations (any order) with no wait times.
    ///
    /// ```
    /// # use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let s = MetricStats::from_durations("tick".into(), &[3.0, 1.0], StatsPreset::Seed);
    /// assert_eq!((s.count, s.min_duration, s.max_duration, s.avg_duration), (2, 1.0, 3.0, 2.0));
    /// ```
    pub fn from_durations(metric_type: MetricType, durations: &[f64], preset: StatsPreset) -> Self {
        let mut sorted = durations.to_vec();
        Self::from_sorted(metric_type, &mut sorted, &[], preset)
    }

    /// Statistics from durations (sorted here, in place) and wait times.
    fn from_sorted(
        metric_type: MetricType,
        durations: &mut [f64],
        waits: &[f64],
        preset: StatsPreset,
    ) -> Self {
        sort_durations(durations);
        let count = durations.len();
        let total = durations.iter().copied().collect::<Sum>().value();
        let avg = if count == 0 {
            0.0
        } else {
            total / count as f64
        };
        let method = preset.percentile_method();
        let (avg_wait, min_wait, max_wait) = if waits.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            let sum = waits.iter().copied().collect::<Sum>().value();
            let min = waits.iter().copied().fold(f64::INFINITY, f64::min);
            let max = waits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (sum / waits.len() as f64, min, max)
        };
        MetricStats {
            metric_type,
            count,
            untimed: 0,
            total_duration: total,
            self_duration: total,
            avg_duration: avg,
            min_duration: durations.first().copied().unwrap_or(0.0),
            max_duration: durations.last().copied().unwrap_or(0.0),
            std_dev: std_dev(durations, avg, preset.std_dev_kind()),
            median: percentile(durations, 50.0, method),
            p95: percentile(durations, 95.0, method),
            p99: percentile(durations, 99.0, method),
            avg_wait_time: avg_wait,
            min_wait_time: min_wait,
            max_wait_time: max_wait,
            exact: true,
            errors: 0,
            error_rate: 0.0,
        }
    }

    /// The same statistics with `errors` failed operations (and their rate).
    ///
    /// ```
    /// # use backtest_perf::stats::{MetricStats, StatsPreset};
    /// let s = MetricStats::from_durations("tick".into(), &[1.0, 1.0, 1.0, 1.0], StatsPreset::Seed).with_errors(1);
    /// assert_eq!((s.errors, s.error_rate), (1, 25.0));
    /// ```
    pub fn with_errors(mut self, errors: u64) -> Self {
        self.errors = errors;
        self.error_rate = if self.count == 0 {
            0.0
        } else {
            errors as f64 / self.count as f64 * 100.0
        };
        self
    }

    /// Whole-run statistics of one metric type (the default preset): everything from the
    /// aggregate, percentiles exact from `window` (this type's durations, any order) when
    /// no event of the type left it, else from the histogram.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// use backtest_perf::stats::{Aggregate, MetricStats};
    /// let mut a = Aggregate::default();
    /// for d in [1.0, 2.0, 3.0, 4.0] { a.record(&PerformanceContract::new(MetricType::Tick, d, 1.0)); }
    /// let exact = MetricStats::from_aggregate(MetricType::Tick, &a, Some(&mut [4.0, 3.0, 2.0, 1.0]));
    /// assert_eq!((exact.median, exact.p95, exact.exact), (2.0, 4.0, true));
    /// let read = MetricStats::from_aggregate(MetricType::Tick, &a, None);
    /// assert!(!read.exact && (read.median - 2.0).abs() <= 2.0 * 0.001, "within 0.1%");
    /// ```
    pub fn from_aggregate(
        metric_type: MetricType,
        aggregate: &Aggregate,
        window: Option<&mut [f64]>,
    ) -> Self {
        let (median, p95, p99, exact) = match window {
            Some(durations) => {
                sort_durations(durations);
                let p = |q| percentile(durations, q, PercentileMethod::NearestRank);
                (p(50.0), p(95.0), p(99.0), true)
            }
            None => match aggregate.percentiles(&[50.0, 95.0, 99.0])[..] {
                [p50, p95, p99] => (p50, p95, p99, false),
                _ => (0.0, 0.0, 0.0, false),
            },
        };
        MetricStats {
            metric_type,
            count: usize::try_from(aggregate.count()).unwrap_or(usize::MAX),
            untimed: 0,
            total_duration: aggregate.total(),
            self_duration: aggregate.self_total(),
            avg_duration: aggregate.mean(),
            min_duration: aggregate.min(),
            max_duration: aggregate.max(),
            std_dev: aggregate.population_std_dev(),
            median,
            p95,
            p99,
            avg_wait_time: aggregate.wait_mean(),
            min_wait_time: aggregate.wait_min(),
            max_wait_time: aggregate.wait_max(),
            exact,
            errors: 0,
            error_rate: 0.0,
        }
        .with_errors(aggregate.failures())
    }
}

/// Sorts ascending. Validated durations are finite and >= 0, and for those the IEEE bit
/// patterns order like the numbers, so an integer sort does (with -0.0 made 0.0 first);
/// anything else falls back to `total_cmp`.
fn sort_durations(durations: &mut [f64]) {
    if durations.iter().all(|d| *d >= 0.0 && d.is_finite()) {
        let mut bits: Vec<u64> = durations.iter().map(|d| (d + 0.0).to_bits()).collect();
        bits.sort_unstable();
        for (d, b) in durations.iter_mut().zip(bits) {
            *d = f64::from_bits(b);
        }
    } else {
        durations.sort_unstable_by(f64::total_cmp);
    }
}

/// Everything known about one `symbol:strategy` bucket, as `get_data` returns it.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let events = vec![PerformanceContract::new(MetricType::Tick, 1.0, 1.0)];
/// let stats = PerformanceStatistics::compute(StorageKey::new("", ""), events, 2, 0, StatsPreset::Seed);
/// let json = serde_json::to_value(&stats).unwrap();
/// assert_eq!((json["symbol"].as_str(), json["totalEvents"].as_u64(), json["rejected"].as_u64()), (Some("global"), Some(1), Some(2)));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceStatistics {
    /// The symbol, or `global`.
    pub symbol: Name,
    /// The strategy name, or `global`.
    pub strategy_name: Name,
    /// Number of events the statistics cover: every event since the key was created or
    /// cleared (the `backtest-kit` preset: the window).
    pub total_events: usize,
    /// Sum of their durations, ms.
    pub total_duration: f64,
    /// Sum of their self times, ms: the time spent in them, nested operations counted once.
    #[serde(default)]
    pub self_duration: f64,
    /// Wall time from the earliest event's start to the latest event's end, ms.
    #[serde(default)]
    pub wall_duration: f64,
    /// Statistics per metric type.
    pub metric_stats: BTreeMap<MetricType, MetricStats>,
    /// The stored events, newest first (absent from a `stats` output without
    /// `--with-events`: none).
    #[serde(default)]
    pub events: Vec<PerformanceContract>,
    /// Events for this key the bus rejected as invalid (never stored).
    pub rejected: u64,
    /// Events that left the window (the oldest go first); the whole-run statistics still
    /// count them.
    pub dropped: u64,
    /// Keys the storage evicted to stay within its key cap, over all keys.
    #[serde(default)]
    pub evicted_keys: u64,
    /// The whole-run aggregates behind `metricStats` (default preset), histograms
    /// included: what `stats` merges when given this JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregates: BTreeMap<MetricType, Aggregate>,
}

impl PerformanceStatistics {
    /// Computes the statistics of `events` (newest first) stored under `key`.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageKey};
    /// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
    ///
    /// let events = vec![
    ///     PerformanceContract::new(MetricType::Tick, 3.0, 20.0).with_previous_timestamp(10.0),
    ///     PerformanceContract::new(MetricType::Tick, 1.0, 10.0),
    /// ];
    /// let key = StorageKey::new("BTCUSDT", "sma");
    /// let stats = PerformanceStatistics::compute(key, events, 0, 0, StatsPreset::Seed);
    /// let tick = &stats.metric_stats[&MetricType::Tick];
    /// assert_eq!((stats.total_duration, tick.avg_duration, tick.avg_wait_time), (4.0, 2.0, 10.0));
    /// ```
    pub fn compute(
        key: StorageKey,
        events: Vec<PerformanceContract>,
        rejected: u64,
        dropped: u64,
        preset: StatsPreset,
    ) -> Self {
        struct Bucket {
            durations: Vec<f64>,
            waits: Vec<f64>,
            errors: u64,
        }
        let mut index: HashMap<MetricType, usize, foldhash::fast::RandomState> = HashMap::default();
        let mut buckets: Vec<(MetricType, Bucket)> = Vec::new();
        let mut total = Sum::default();
        for event in &events {
            total.add(event.duration);
            let slot = *index.entry(event.metric_type).or_insert_with(|| {
                buckets.push((
                    event.metric_type,
                    Bucket {
                        durations: Vec::new(),
                        waits: Vec::new(),
                        errors: 0,
                    },
                ));
                buckets.len() - 1
            });
            let bucket = &mut buckets[slot].1;
            bucket.durations.push(event.duration);
            bucket.errors += u64::from(!event.succeeded());
            if let Some(previous) = event.previous_timestamp {
                bucket.waits.push(event.timestamp - previous);
            }
        }
        let metric_stats = buckets
            .into_iter()
            .map(|(metric, mut bucket)| {
                let stats =
                    MetricStats::from_sorted(metric, &mut bucket.durations, &bucket.waits, preset)
                        .with_errors(bucket.errors);
                (metric, stats)
            })
            .collect();
        let (start, end) = events
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(s, e), ev| {
                (s.min(ev.timestamp - ev.duration), e.max(ev.timestamp))
            });
        PerformanceStatistics {
            symbol: key.symbol,
            strategy_name: key.strategy,
            total_events: events.len(),
            total_duration: total.value(),
            self_duration: events
                .iter()
                .map(PerformanceContract::self_time)
                .collect::<Sum>()
                .value(),
            wall_duration: if events.is_empty() {
                0.0
            } else {
                (end - start).max(0.0)
            },
            metric_stats,
            events,
            rejected,
            dropped,
            evicted_keys: 0,
            aggregates: BTreeMap::new(),
        }
    }

    /// Whole-run statistics of a key (the default preset) from its storage snapshot.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// use backtest_perf::stats::PerformanceStatistics;
    /// let storage = StorageService::new(StorageConfig { max_events: 2, ..StorageConfig::default() });
    /// for d in [1.0, 2.0, 3.0, 4.0] {
    ///     storage.record(&PerformanceContract::new(MetricType::Tick, d, 10.0 * d).with_symbol("A"));
    /// }
    /// let key = StorageKey::new("A", "");
    /// let stats = PerformanceStatistics::whole_run(key, storage.snapshot(key).unwrap());
    /// assert_eq!((stats.total_events, stats.total_duration, stats.events.len()), (4, 10.0, 2));
    /// let tick = &stats.metric_stats[&MetricType::Tick];
    /// assert_eq!((tick.count, tick.max_duration, tick.exact), (4, 4.0, false));
    /// assert!((tick.median - 2.0).abs() <= 2.0 * 0.001, "from the histogram, within 0.1%");
    /// ```
    pub fn whole_run(key: StorageKey, snapshot: Snapshot) -> Self {
        let mut total = Sum::default();
        let mut self_total = Sum::default();
        let mut total_events = 0u64;
        let (mut start, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut metric_stats = BTreeMap::new();
        let mut aggregates = BTreeMap::new();
        let Snapshot {
            events,
            metrics,
            rejected,
            dropped,
        } = snapshot;
        for m in metrics {
            let a = &m.aggregate;
            total.add(a.total());
            self_total.add(a.self_total());
            total_events = total_events.saturating_add(a.count());
            if let Some((s, e)) = a.span() {
                start = start.min(s);
                end = end.max(e);
            }
            let mut window: Option<Vec<f64>> = m.all_in_window.then(|| {
                events
                    .iter()
                    .filter(|e| e.metric_type == m.metric)
                    .map(|e| e.duration)
                    .collect()
            });
            let mut stats = MetricStats::from_aggregate(m.metric, a, window.as_deref_mut());
            stats.untimed = m.untimed;
            stats.count = stats
                .count
                .saturating_add(usize::try_from(m.untimed).unwrap_or(usize::MAX));
            metric_stats.insert(m.metric, stats);
            aggregates.insert(m.metric, m.aggregate);
        }
        PerformanceStatistics {
            symbol: key.symbol,
            strategy_name: key.strategy,
            total_events: usize::try_from(total_events).unwrap_or(usize::MAX),
            total_duration: total.value(),
            self_duration: self_total.value(),
            wall_duration: if end >= start { end - start } else { 0.0 },
            metric_stats,
            events,
            rejected,
            dropped,
            evicted_keys: 0,
            aggregates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(duration: f64, timestamp: f64, previous: Option<f64>) -> PerformanceContract {
        PerformanceContract {
            previous_timestamp: previous,
            ..PerformanceContract::new(MetricType::Tick, duration, timestamp)
        }
    }

    fn stats_of(events: Vec<PerformanceContract>, preset: StatsPreset) -> PerformanceStatistics {
        PerformanceStatistics::compute(StorageKey::new("S", "X"), events, 0, 0, preset)
    }

    #[test]
    fn one_to_four_under_both_presets() {
        let events: Vec<_> = [4.0, 2.0, 1.0, 3.0]
            .iter()
            .map(|&d| tick(d, 0.0, None))
            .collect();
        let seed = stats_of(events.clone(), StatsPreset::Seed).metric_stats[&MetricType::Tick];
        assert_eq!(seed.count, 4);
        assert_eq!(seed.total_duration, 10.0);
        assert_eq!(seed.avg_duration, 2.5);
        assert_eq!((seed.min_duration, seed.max_duration), (1.0, 4.0));
        assert_eq!((seed.median, seed.p95, seed.p99), (2.0, 4.0, 4.0));
        assert_eq!(seed.std_dev, 1.25f64.sqrt());
        let bk = stats_of(events, StatsPreset::BacktestKit).metric_stats[&MetricType::Tick];
        assert_eq!(bk.median, 2.5);
        assert!((bk.p95 - 3.85).abs() < 1e-12, "{}", bk.p95);
        assert!((bk.p99 - 3.97).abs() < 1e-12, "{}", bk.p99);
        assert_eq!(bk.std_dev, (5.0f64 / 3.0).sqrt());
    }

    #[test]
    fn empty_bucket_has_zero_totals_and_no_metrics() {
        for preset in [StatsPreset::Seed, StatsPreset::BacktestKit] {
            let s = stats_of(vec![], preset);
            assert_eq!((s.total_events, s.total_duration), (0, 0.0));
            assert!(s.metric_stats.is_empty());
        }
    }

    #[test]
    fn one_event() {
        for preset in [StatsPreset::Seed, StatsPreset::BacktestKit] {
            let m = stats_of(vec![tick(7.5, 1.0, None)], preset).metric_stats[&MetricType::Tick];
            assert_eq!(
                (m.count, m.avg_duration, m.median, m.p95, m.p99, m.std_dev),
                (1, 7.5, 7.5, 7.5, 7.5, 0.0)
            );
            assert_eq!(
                (m.avg_wait_time, m.min_wait_time, m.max_wait_time),
                (0.0, 0.0, 0.0)
            );
        }
    }

    #[test]
    fn all_zero_durations_give_zeros_not_nan() {
        for preset in [StatsPreset::Seed, StatsPreset::BacktestKit] {
            let s = stats_of(vec![tick(0.0, 1.0, None); 5], preset);
            let m = s.metric_stats[&MetricType::Tick];
            for value in [
                m.total_duration,
                m.avg_duration,
                m.std_dev,
                m.median,
                m.p95,
                m.p99,
            ] {
                assert_eq!(value, 0.0);
            }
            assert_eq!(s.total_duration, 0.0);
        }
    }

    #[test]
    fn ties_and_a_large_outlier() {
        let mut events: Vec<_> = (0..99).map(|_| tick(1.0, 0.0, None)).collect();
        events.push(tick(1_000_000.0, 0.0, None));
        let m = stats_of(events.clone(), StatsPreset::Seed).metric_stats[&MetricType::Tick];
        assert_eq!(
            (m.median, m.p95, m.p99, m.max_duration),
            (1.0, 1.0, 1.0, 1_000_000.0)
        );
        assert_eq!(m.total_duration, 1_000_099.0);
        assert_eq!(m.avg_duration, 10_000.99);
        // population: sqrt((99 * (1 - 10000.99)^2 + (1e6 - 10000.99)^2) / 100)
        let expected = ((99.0 * 9999.99f64.powi(2) + 989_999.01f64.powi(2)) / 100.0).sqrt();
        assert!(
            (m.std_dev - expected).abs() < 1e-6,
            "{} vs {expected}",
            m.std_dev
        );
        let bk = stats_of(events, StatsPreset::BacktestKit).metric_stats[&MetricType::Tick];
        // r = 0.99 * 99 = 98.01: between the last tie (1.0) and the outlier.
        assert!(
            (bk.p99 - (1.0 * (1.0 - 0.01) + 1_000_000.0 * 0.01)).abs() < 1e-6,
            "{}",
            bk.p99
        );
        assert_eq!(bk.median, 1.0);
    }

    #[test]
    fn wait_times_per_metric_type() {
        let events = vec![
            tick(1.0, 130.0, Some(100.0)),
            tick(1.0, 100.0, Some(90.0)),
            tick(1.0, 90.0, None),
            PerformanceContract::new(MetricType::GetCandles, 2.0, 125.0)
                .with_previous_timestamp(120.0),
            PerformanceContract::new(MetricType::GetCandles, 4.0, 120.0),
        ];
        let s = stats_of(events, StatsPreset::Seed);
        let t = s.metric_stats[&MetricType::Tick];
        assert_eq!(
            (t.avg_wait_time, t.min_wait_time, t.max_wait_time),
            (20.0, 10.0, 30.0)
        );
        let c = s.metric_stats[&MetricType::GetCandles];
        assert_eq!(
            (c.avg_wait_time, c.min_wait_time, c.max_wait_time),
            (5.0, 5.0, 5.0)
        );
        assert_eq!((c.count, c.avg_duration), (2, 3.0));
        assert_eq!((s.total_events, s.total_duration), (5, 9.0));
    }

    #[test]
    fn statistics_of_two_merged_storages_equal_those_of_one_fed_both_streams() {
        use crate::perf::storage::{StorageConfig, StorageService};
        let key = StorageKey::new("M", "merge");
        let config = StorageConfig {
            max_events: 64,
            max_keys: 8,
        };
        let (one, a, b) = (
            StorageService::new(config),
            StorageService::new(config),
            StorageService::new(config),
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..5_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let metric = MetricType::BUILT_IN[(x % 5) as usize];
            let duration = ((x >> 20) % 1_000_000) as f64 / 1e4; // 0 .. 100 ms
            let event = PerformanceContract::new(metric, duration, f64::from(i))
                .with_symbol("M")
                .with_strategy("merge")
                .with_previous_timestamp(f64::from(i) - 1.5);
            one.record(&event);
            if x & (1 << 40) == 0 {
                a.record(&event)
            } else {
                b.record(&event)
            }
        }
        let other = b.snapshot(key).unwrap();
        a.merge(
            key,
            other.metrics.iter().map(|m| (m.metric, &m.aggregate)),
            other.rejected,
        );
        let merged = PerformanceStatistics::whole_run(key, a.snapshot(key).unwrap());
        let whole = PerformanceStatistics::whole_run(key, one.snapshot(key).unwrap());
        assert_eq!(merged.total_events, 5_000);
        assert_eq!(merged.total_events, whole.total_events);
        let close = |x: f64, y: f64, rel: f64| (x - y).abs() <= rel * y.abs().max(1e-12);
        for (metric, w) in &whole.metric_stats {
            let m = &merged.metric_stats[metric];
            assert_eq!(
                (m.count, m.min_duration, m.max_duration),
                (w.count, w.min_duration, w.max_duration)
            );
            assert!(
                close(m.total_duration, w.total_duration, 1e-12),
                "{metric} total"
            );
            assert!(close(m.std_dev, w.std_dev, 1e-9), "{metric} std dev");
            assert_eq!(
                (m.min_wait_time, m.max_wait_time),
                (w.min_wait_time, w.max_wait_time)
            );
            assert!(
                close(m.avg_wait_time, w.avg_wait_time, 1e-12),
                "{metric} wait"
            );
            for (x, y) in [(m.median, w.median), (m.p95, w.p95), (m.p99, w.p99)] {
                assert!(close(x, y, 0.001), "{metric}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn totals_use_compensated_sums() {
        let events: Vec<_> = (0..10).map(|_| tick(0.1, 0.0, None)).collect();
        let s = stats_of(events, StatsPreset::Seed);
        assert_eq!(s.total_duration, 1.0);
        assert_eq!(s.metric_stats[&MetricType::Tick].avg_duration, 0.1);
    }
}
