//! Whole-run aggregates of one metric type: every event counted, in memory that does not
//! grow with the number of events, and mergeable.
//!
//! An [`Aggregate`] keeps the exact count, the compensated total and self total, min,
//! max, mean and variance (Welford's update; the parallel formula to merge), wait times,
//! failures, the span of wall time the events cover, and a latency histogram
//! ([`hdrhistogram`], three significant digits) for percentiles once the raw events are
//! gone.
//!
//! ```
//! use backtest_perf::{MetricType, PerformanceContract};
//! use backtest_perf::stats::Aggregate;
//!
//! let mut a = Aggregate::default();
//! for d in [1.0, 2.0, 3.0, 4.0] {
//!     a.record(&PerformanceContract::new(MetricType::Tick, d, 10.0));
//! }
//! assert_eq!((a.count(), a.total(), a.mean(), a.min(), a.max()), (4, 10.0, 2.5, 1.0, 4.0));
//! assert_eq!(a.population_std_dev(), 1.25f64.sqrt());
//! // Read from the histogram: within 0.1% (2 ms lies in a bucket 1 µs wide).
//! assert!((a.percentile(50.0) - 2.0).abs() <= 2.0 * 0.001);
//! assert_eq!(a.percentile(95.0), 4.0, "the top rank is the exact max");
//! ```

use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::sum::Sum;
use crate::PerformanceContract;

/// Durations are recorded in the histogram in nanoseconds, three significant digits:
/// values below 2,048 ns exactly (to the nanosecond), larger ones within 1/2,048.
const NS_PER_MS: f64 = 1e6;
/// The largest value the histogram takes (the crate's own limit, about 146 years in ns);
/// larger durations are recorded as it, and percentiles are clamped to the exact max.
const HISTOGRAM_MAX_NS: u64 = (i64::MAX / 2) as u64;

/// A latency histogram that starts with 16-bit counters (a quarter of the memory), moves
/// to 32-bit ones before any counter could saturate, and to 64-bit ones before the total
/// could pass 32 bits.
#[derive(Clone, Debug)]
enum Hist {
    Narrow(Histogram<u16>),
    Small(Histogram<u32>),
    Large(Histogram<u64>),
}

impl Default for Hist {
    fn default() -> Self {
        // Three significant digits and auto-resizing cannot fail to build.
        match Histogram::new(3) {
            Ok(h) => Hist::Narrow(h),
            Err(_) => unreachable!("sigfig 3 is in range"),
        }
    }
}

/// Two histograms are equal when they hold the same counts, whatever their counters' width.
impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.counts() == other.counts()
    }
}

/// How many values one 16-bit counter may hold (lower in tests, to exercise the move).
const NARROW_LIMIT: u64 = if cfg!(test) { 100 } else { u16::MAX as u64 };
/// How many values in all a histogram with 32-bit counters may hold.
const SMALL_LIMIT: u64 = if cfg!(test) { 1_000 } else { u32::MAX as u64 };

/// The same histogram with counters of type `B`, which the caller knows hold every count
/// of `h` (wider ones, or a total that fits).
fn convert<A: Counter, B: Counter>(h: &Histogram<A>) -> Histogram<B> {
    let mut wide = Histogram::<B>::new_from(h);
    for v in h.iter_recorded() {
        // A value of a bucket of `h` lands in the same bucket: this cannot fail.
        if let Some(n) = B::from_u64(v.count_at_value().as_u64()) {
            let _ = wide.record_n(v.value_iterated_to(), n);
        }
    }
    wide
}

/// Every non-empty bucket of `h` as (a value in it, ns; its count), ascending.
fn counts_of<T: Counter>(h: &Histogram<T>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value().as_u64()))
        .collect()
}

impl Hist {
    /// Records `n` values of `ns`; `total_after` is how many values the histogram holds
    /// afterwards. Counters widen first when the bucket's count would pass 16 bits, or the
    /// total [`SMALL_LIMIT`].
    #[inline]
    fn record_n(&mut self, ns: u64, n: u64, total_after: u64) {
        match self {
            // No bucket holds more than the total: while it fits 16 bits, so does every
            // bucket, and the bucket need not be read first. Auto-resizing up to
            // HISTOGRAM_MAX_NS, with counts that fit: recording cannot fail.
            Hist::Narrow(h)
                if total_after < SMALL_LIMIT
                    && (total_after <= NARROW_LIMIT
                        || h.count_at(ns).as_u64().saturating_add(n) <= NARROW_LIMIT) =>
            {
                let _ = h.record_n(ns, u16::try_from(n).unwrap_or(u16::MAX));
            }
            // Every count below SMALL_LIMIT fits 32 bits.
            Hist::Small(h) if total_after < SMALL_LIMIT => {
                let _ = h.record_n(ns, u32::try_from(n).unwrap_or(u32::MAX));
            }
            Hist::Large(h) => {
                let _ = h.record_n(ns, n);
            }
            _ => self.widen_and_record_n(ns, n, total_after),
        }
    }

    /// [`record_n`](Self::record_n) into wider counters: a few times in a histogram's
    /// life, kept out of the inlined path.
    #[cold]
    #[inline(never)]
    fn widen_and_record_n(&mut self, ns: u64, n: u64, total_after: u64) {
        *self = if total_after < SMALL_LIMIT {
            Hist::Small(self.converted())
        } else {
            Hist::Large(self.converted())
        };
        self.record_n(ns, n, total_after);
    }

    /// The same counts with counters of type `B`, which must hold every count.
    fn converted<B: Counter>(&self) -> Histogram<B> {
        match self {
            Hist::Narrow(h) => convert(h),
            Hist::Small(h) => convert(h),
            Hist::Large(h) => convert(h),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Hist::Narrow(h) => h.len(),
            Hist::Small(h) => h.len(),
            Hist::Large(h) => h.len(),
        }
    }

    fn counts(&self) -> Vec<(u64, u64)> {
        match self {
            Hist::Narrow(h) => counts_of(h),
            Hist::Small(h) => counts_of(h),
            Hist::Large(h) => counts_of(h),
        }
    }

    /// Bytes of counters.
    fn bytes(&self) -> usize {
        match self {
            Hist::Narrow(h) => h.distinct_values() * 2,
            Hist::Small(h) => h.distinct_values() * 4,
            Hist::Large(h) => h.distinct_values() * 8,
        }
    }
}

#[inline]
fn to_ns(ms: f64) -> u64 {
    // Durations are >= 0 (validated), so adding a half and truncating rounds to the
    // nearest ns without a call to libm's `round` (the baseline x86-64 target has no
    // rounding instruction). `as` saturates: huge values clamp.
    // Through i64, which x86-64 converts in one instruction (`as u64` takes several); `as`
    // saturates, and a duration is never negative.
    ((ms * NS_PER_MS + 0.5) as i64).clamp(0, HISTOGRAM_MAX_NS as i64) as u64
}

/// Durations below this many ns are counted in a plain array first: `hdrhistogram`'s
/// first bucket holds them exactly (1 ns wide at three significant digits), so folding
/// the array in later gives the very histogram recording each would have, and most hooks
/// of the engine take less than this.
const LOW: usize = 2048;

/// The latency histogram of an [`Aggregate`]: an `hdrhistogram`, and the counts of short
/// durations not folded into it yet (16-bit, folded in whenever one would overflow, and
/// before any read).
#[derive(Clone, Debug, Default)]
struct Latencies {
    hist: Hist,
    low: Option<Box<[u16; LOW]>>,
}

impl PartialEq for Latencies {
    fn eq(&self, other: &Self) -> bool {
        *self.folded() == *other.folded()
    }
}

impl Latencies {
    /// Records one duration; `count_before` is how many the aggregate holds before it.
    #[inline]
    fn record(&mut self, ms: f64, count_before: u64) {
        let ns = to_ns(ms);
        if let Ok(i) = usize::try_from(ns)
            && i < LOW
        {
            let low = self.low.get_or_insert_with(|| Box::new([0; LOW]));
            if low[i] == u16::MAX {
                low[i] = 0;
                self.hist
                    .record_n(ns, u64::from(u16::MAX), count_before.saturating_add(1));
            }
            low[i] += 1;
            return;
        }
        self.hist.record_n(ns, 1, count_before.saturating_add(1));
    }

    /// The histogram with the short durations folded in (borrowed when there are none).
    fn folded(&self) -> std::borrow::Cow<'_, Hist> {
        let Some(low) = &self.low else {
            return std::borrow::Cow::Borrowed(&self.hist);
        };
        let mut hist = self.hist.clone();
        fold_into(&mut hist, low);
        std::borrow::Cow::Owned(hist)
    }

    /// Folds the short durations into the histogram.
    fn fold(&mut self) {
        if let Some(low) = self.low.take() {
            fold_into(&mut self.hist, &low);
        }
    }

    fn merge(&mut self, other: &Latencies, count_after: u64) {
        self.fold();
        let other = other.folded();
        // The sum of two histograms holding fewer than SMALL_LIMIT values in all fits
        // 32-bit counters (not always 16-bit ones).
        self.hist = if count_after < SMALL_LIMIT {
            let mut merged = self.hist.converted::<u32>();
            let _ = merged.add(other.converted::<u32>());
            Hist::Small(merged)
        } else {
            let mut merged = self.hist.converted::<u64>();
            let _ = merged.add(other.converted::<u64>());
            Hist::Large(merged)
        };
    }

    /// The value (ns, the middle of its bucket) at each of several nearest ranks,
    /// ascending; a rank above the count gives the histogram's maximum.
    fn at_ranks(&self, ranks: &[u64]) -> Vec<u64> {
        match &*self.folded() {
            Hist::Narrow(h) => at_ranks(h, ranks),
            Hist::Small(h) => at_ranks(h, ranks),
            Hist::Large(h) => at_ranks(h, ranks),
        }
    }

    /// Every non-empty bucket as (a value in it, ns; its count), ascending.
    fn buckets(&self) -> Vec<(u64, u64)> {
        self.folded().counts()
    }

    fn bytes(&self) -> usize {
        let low = if self.low.is_some() { LOW * 2 } else { 0 };
        low + self.hist.bytes()
    }
}

/// Below this many values a rank converts to a quantile exactly (see [`at_ranks`]).
const EXACT_RANKS_BELOW: u64 = 1 << 50;

/// [`Latencies::at_ranks`] on one histogram. Below [`EXACT_RANKS_BELOW`] values,
/// `(rank - 1/2) / len` times `len` lies within 2^-2 of `rank - 1/2`, so that quantile's
/// nearest rank, `ceil(q * len)`, is `rank` itself. hdrhistogram's summing scan then finds
/// the rank's bucket, about five times faster than [`walk_ranks`], which steps its iterator
/// bucket by bucket and is kept for larger counts.
fn at_ranks<T: hdrhistogram::Counter>(h: &Histogram<T>, ranks: &[u64]) -> Vec<u64> {
    let len = h.len();
    if len == 0 || len >= EXACT_RANKS_BELOW {
        return walk_ranks(h, ranks);
    }
    ranks
        .iter()
        .map(|&rank| {
            if rank > len {
                h.max()
            } else {
                let q = (rank.max(1) as f64 - 0.5) / len as f64;
                h.median_equivalent(h.value_at_quantile(q))
            }
        })
        .collect()
}

/// [`at_ranks`] by stepping through the recorded buckets once.
fn walk_ranks<T: hdrhistogram::Counter>(h: &Histogram<T>, ranks: &[u64]) -> Vec<u64> {
    let mut found = Vec::with_capacity(ranks.len());
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen = seen.saturating_add(v.count_at_value().as_u64());
        while let Some(&rank) = ranks.get(found.len())
            && seen >= rank
        {
            found.push(h.median_equivalent(v.value_iterated_to()));
        }
        if found.len() == ranks.len() {
            return found;
        }
    }
    found.resize(ranks.len(), h.max());
    found
}

/// Adds the short durations' counts to `hist`.
fn fold_into(hist: &mut Hist, low: &[u16; LOW]) {
    let total: u64 = low.iter().map(|&n| u64::from(n)).sum();
    let total_after = hist.len().saturating_add(total);
    if total_after >= SMALL_LIMIT && !matches!(hist, Hist::Large(_)) {
        // Widen once, before adding anything.
        *hist = Hist::Large(hist.converted());
    }
    for (ns, &n) in low.iter().enumerate() {
        if n > 0 {
            hist.record_n(ns as u64, u64::from(n), total_after);
        }
    }
}

/// Running statistics of every event of one metric type: exact count, compensated totals
/// and self total, min, max, Welford mean and variance, wait times, failures, the wall
/// time the events cover, and an `hdrhistogram` (3 significant digits, in ns) for
/// percentiles. Memory does not grow with the number of events; two aggregates merge
/// exactly ([`merge`](Self::merge)).
///
/// ```
/// use backtest_perf::stats::Aggregate;
/// let a = Aggregate::default();
/// assert_eq!((a.count(), a.total(), a.mean(), a.population_std_dev()), (0, 0.0, 0.0, 0.0));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AggregateJson", into = "AggregateJson")]
pub struct Aggregate {
    count: u64,
    total: Sum,
    self_total: Sum,
    min: f64,
    max: f64,
    mean: f64,
    /// Sum of squared differences from the mean (Welford's M2).
    m2: f64,
    wait_count: u64,
    wait_total: Sum,
    wait_min: f64,
    wait_max: f64,
    failures: u64,
    /// The earliest start (`timestamp - duration`) and the latest end seen.
    first_start: f64,
    last_end: f64,
    latencies: Latencies,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            count: 0,
            total: Sum::default(),
            self_total: Sum::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            wait_count: 0,
            wait_total: Sum::default(),
            wait_min: f64::INFINITY,
            wait_max: f64::NEG_INFINITY,
            failures: 0,
            first_start: f64::INFINITY,
            last_end: f64::NEG_INFINITY,
            latencies: Latencies::default(),
        }
    }
}

impl Aggregate {
    /// Adds one valid event.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// use backtest_perf::stats::Aggregate;
    /// let mut a = Aggregate::default();
    /// a.record(&PerformanceContract::new(MetricType::Tick, 3.0, 20.0).with_previous_timestamp(5.0).with_self_duration(1.0));
    /// assert_eq!((a.self_total(), a.wait_mean(), a.wait_min(), a.wait_max()), (1.0, 15.0, 15.0, 15.0));
    /// ```
    // Always inlined: in the storage's loop over a batch, the call's prologue and spills
    // were 12 of 477 instructions an event (cachegrind).
    #[inline(always)]
    pub fn record(&mut self, event: &PerformanceContract) {
        let d = event.duration;
        self.latencies.record(d, self.count);
        self.count += 1;
        self.total.add(d);
        self.self_total.add(event.self_time());
        // Comparisons rather than `f64::min`/`max`: the same result for every input (a
        // NaN compares false and changes nothing, as `min` ignores it), in a third of the
        // instructions on this, the hottest path of a tracked run.
        if d < self.min {
            self.min = d;
        }
        if d > self.max {
            self.max = d;
        }
        let delta = d - self.mean;
        self.mean += delta / crate::span::to_f64(self.count);
        self.m2 += delta * (d - self.mean);
        if let Some(previous) = event.previous_timestamp {
            let wait = event.timestamp - previous;
            self.wait_count += 1;
            self.wait_total.add(wait);
            if wait < self.wait_min {
                self.wait_min = wait;
            }
            if wait > self.wait_max {
                self.wait_max = wait;
            }
        }
        if !event.succeeded() {
            self.failures += 1;
        }
        let start = event.timestamp - d;
        if start < self.first_start {
            self.first_start = start;
        }
        if event.timestamp > self.last_end {
            self.last_end = event.timestamp;
        }
    }

    /// Adds everything `other` holds: afterwards `self` is what one aggregate fed both
    /// streams would hold (the variance by the parallel formula, histograms bucket by
    /// bucket).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// use backtest_perf::stats::Aggregate;
    /// let event = |d| PerformanceContract::new(MetricType::Tick, d, 1.0);
    /// let (mut a, mut b, mut both) = (Aggregate::default(), Aggregate::default(), Aggregate::default());
    /// for d in [1.0, 2.0] { a.record(&event(d)); both.record(&event(d)); }
    /// for d in [3.0, 4.0] { b.record(&event(d)); both.record(&event(d)); }
    /// a.merge(&b);
    /// assert_eq!((a.count(), a.mean(), a.population_std_dev()), (both.count(), both.mean(), both.population_std_dev()));
    /// assert_eq!(a.percentile(50.0), both.percentile(50.0));
    /// ```
    pub fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        let count = self.count.saturating_add(other.count);
        self.latencies.merge(&other.latencies, count);
        let (n_a, n_b, n) = (self.count as f64, other.count as f64, count as f64);
        let delta = other.mean - self.mean;
        self.mean += delta * (n_b / n);
        self.m2 += other.m2 + delta * delta * (n_a * n_b / n);
        self.count = count;
        self.total.merge(&other.total);
        self.self_total.merge(&other.self_total);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.wait_count = self.wait_count.saturating_add(other.wait_count);
        self.wait_total.merge(&other.wait_total);
        self.wait_min = self.wait_min.min(other.wait_min);
        self.wait_max = self.wait_max.max(other.wait_max);
        self.failures = self.failures.saturating_add(other.failures);
        self.first_start = self.first_start.min(other.first_start);
        self.last_end = self.last_end.max(other.last_end);
    }

    /// Events recorded.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of durations, ms (compensated).
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().total(), 0.0);
    /// ```
    pub fn total(&self) -> f64 {
        self.total.value()
    }

    /// Sum of self times, ms.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().self_total(), 0.0);
    /// ```
    pub fn self_total(&self) -> f64 {
        self.self_total.value()
    }

    /// Mean duration, ms; 0 with no events.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().mean(), 0.0);
    /// ```
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            // The exact total over the count, as a report's reader would compute it.
            self.total() / self.count as f64
        }
    }

    /// Shortest duration, ms; 0 with no events.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().min(), 0.0);
    /// ```
    pub fn min(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.min }
    }

    /// Longest duration, ms; 0 with no events.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().max(), 0.0);
    /// ```
    pub fn max(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.max }
    }

    /// Population standard deviation, `sqrt(M2 / n)`; 0 with no events.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().population_std_dev(), 0.0);
    /// ```
    pub fn population_std_dev(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2.max(0.0) / self.count as f64).sqrt()
        }
    }

    /// Mean wait (`timestamp - previousTimestamp`) over events that have one; 0 if none.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().wait_mean(), 0.0);
    /// ```
    pub fn wait_mean(&self) -> f64 {
        if self.wait_count == 0 {
            0.0
        } else {
            self.wait_total.value() / self.wait_count as f64
        }
    }

    /// Shortest wait; 0 if none.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().wait_min(), 0.0);
    /// ```
    pub fn wait_min(&self) -> f64 {
        if self.wait_count == 0 {
            0.0
        } else {
            self.wait_min
        }
    }

    /// Longest wait; 0 if none.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().wait_max(), 0.0);
    /// ```
    pub fn wait_max(&self) -> f64 {
        if self.wait_count == 0 {
            0.0
        } else {
            self.wait_max
        }
    }

    /// Events with `ok: false`.
    ///
    /// ```
    /// assert_eq!(backtest_perf::stats::Aggregate::default().failures(), 0);
    /// ```
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The earliest start and the latest end of the events (epoch ms), if any.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// let mut a = backtest_perf::stats::Aggregate::default();
    /// a.record(&PerformanceContract::new(MetricType::Tick, 2.0, 10.0));
    /// a.record(&PerformanceContract::new(MetricType::Tick, 1.0, 15.0));
    /// assert_eq!(a.span(), Some((8.0, 15.0)));
    /// ```
    pub fn span(&self) -> Option<(f64, f64)> {
        (self.count > 0).then_some((self.first_start, self.last_end))
    }

    /// Nearest-rank percentile `p` (0-100) read from the histogram: the duration of rank
    /// `max(1, ceil(n * p / 100))`, within 0.1% (exact below 2,048 ns, to the nanosecond;
    /// the top rank is the exact max), clamped to the exact min and max. 0 with no events.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// let mut a = backtest_perf::stats::Aggregate::default();
    /// for i in 1..=100 { a.record(&PerformanceContract::new(MetricType::Tick, i as f64, 1.0)); }
    /// assert!((a.percentile(95.0) - 95.0).abs() <= 95.0 * 0.001);
    /// assert_eq!(a.percentile(100.0), 100.0);
    /// // Below 2,048 ns every nanosecond has its own bucket: exact.
    /// let mut fast = backtest_perf::stats::Aggregate::default();
    /// for ns in [38.0, 41.0, 52.0] { fast.record(&PerformanceContract::new(MetricType::Tick, ns / 1e6, 1.0)); }
    /// assert_eq!(fast.percentile(50.0), 41.0 / 1e6);
    /// ```
    pub fn percentile(&self, p: f64) -> f64 {
        self.percentiles(&[p])[0]
    }

    /// [`percentile`](Self::percentile) for several percentiles (ascending) in one walk of
    /// the histogram.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// let mut a = backtest_perf::stats::Aggregate::default();
    /// for ns in 1..=1000 { a.record(&PerformanceContract::new(MetricType::Tick, ns as f64 / 1e6, 1.0)); }
    /// assert_eq!(a.percentiles(&[50.0, 95.0, 99.0]), [500.0 / 1e6, 950.0 / 1e6, 990.0 / 1e6]);
    /// ```
    pub fn percentiles(&self, ps: &[f64]) -> Vec<f64> {
        if self.count == 0 {
            return vec![0.0; ps.len()];
        }
        let ranks: Vec<u64> = ps
            .iter()
            .map(|&p| super::percentile::nearest_rank(self.count, p))
            .collect();
        let values = self.latencies.at_ranks(&ranks);
        ranks
            .iter()
            .zip(values)
            .map(|(&rank, ns)| {
                if rank == self.count {
                    self.max
                } else {
                    (ns as f64 / NS_PER_MS).clamp(self.min, self.max)
                }
            })
            .collect()
    }

    /// The histogram's non-empty buckets, ascending: (a duration in the bucket, ms; how
    /// many events fell in it). Their counts add up to [`count`](Self::count).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract};
    /// let mut a = backtest_perf::stats::Aggregate::default();
    /// for ns in [40.0, 40.0, 900.0] { a.record(&PerformanceContract::new(MetricType::Tick, ns / 1e6, 1.0)); }
    /// assert_eq!(a.buckets(), [(40.0 / 1e6, 2), (900.0 / 1e6, 1)]);
    /// ```
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.latencies
            .buckets()
            .into_iter()
            .map(|(ns, n)| (ns as f64 / NS_PER_MS, n))
            .collect()
    }

    /// Bytes the histogram's counters take now (the rest of the aggregate is fixed size).
    ///
    /// ```
    /// let a = backtest_perf::stats::Aggregate::default();
    /// assert!(a.histogram_bytes() < 16 * 1024);
    /// ```
    pub fn histogram_bytes(&self) -> usize {
        self.latencies.bytes()
    }
}

/// An [`Aggregate`] as JSON: its running values and its histogram's non-empty buckets,
/// so statistics written by one run merge exactly into another's (`stats` over several
/// files).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AggregateJson {
    count: u64,
    total: f64,
    self_total: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    wait_count: u64,
    wait_total: f64,
    wait_min: f64,
    wait_max: f64,
    failures: u64,
    first_start: f64,
    last_end: f64,
    /// (a duration in the bucket, ns; events in the bucket), ascending.
    histogram: Vec<(u64, u64)>,
}

impl From<Aggregate> for AggregateJson {
    fn from(a: Aggregate) -> Self {
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        AggregateJson {
            count: a.count,
            total: a.total(),
            self_total: a.self_total(),
            min: a.min(),
            max: a.max(),
            mean: a.mean,
            m2: a.m2,
            wait_count: a.wait_count,
            wait_total: a.wait_total.value(),
            wait_min: a.wait_min(),
            wait_max: a.wait_max(),
            failures: a.failures,
            first_start: finite(a.first_start),
            last_end: finite(a.last_end),
            histogram: a.latencies.buckets(),
        }
    }
}

impl TryFrom<AggregateJson> for Aggregate {
    type Error = String;

    /// Refuses what no run could have written: non-finite or negative durations, min
    /// above max, bucket counts that do not add up to the count.
    fn try_from(j: AggregateJson) -> Result<Self, String> {
        let values = [
            ("total", j.total),
            ("selfTotal", j.self_total),
            ("min", j.min),
            ("max", j.max),
            ("mean", j.mean),
            ("m2", j.m2),
            ("waitTotal", j.wait_total),
            ("waitMin", j.wait_min),
            ("waitMax", j.wait_max),
            ("firstStart", j.first_start),
            ("lastEnd", j.last_end),
        ];
        if let Some((name, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("{name} is {value}; it must be a finite number"));
        }
        if j.count == 0 {
            return Err("count is 0; an aggregate holds at least one event".to_string());
        }
        if !(0.0 <= j.min && j.min <= j.max && j.max <= crate::event::MAX_DURATION_MS) {
            return Err(format!(
                "min {} and max {} must satisfy 0 <= min <= max <= 1e12 ms",
                j.min, j.max
            ));
        }
        if j.failures > j.count || j.wait_count > j.count {
            return Err("failures and waitCount cannot exceed count".to_string());
        }
        let mut seen = 0u64;
        for &(ns, n) in &j.histogram {
            if ns > HISTOGRAM_MAX_NS {
                return Err(format!(
                    "histogram value {ns} ns is above the histogram's range"
                ));
            }
            seen = seen
                .checked_add(n)
                .ok_or("histogram counts overflow".to_string())?;
        }
        if seen != j.count {
            return Err(format!(
                "the histogram holds {seen} events but count is {}",
                j.count
            ));
        }
        // Every value is in range (checked above), so recording cannot fail; the counters
        // widen as the counts need.
        let mut hist = Hist::default();
        let mut so_far = 0u64;
        for &(ns, n) in &j.histogram {
            so_far = so_far.saturating_add(n);
            hist.record_n(ns, n, so_far);
        }
        let latencies = Latencies { hist, low: None };
        let sum = |x: f64| {
            let mut s = Sum::default();
            s.add(x);
            s
        };
        Ok(Aggregate {
            count: j.count,
            total: sum(j.total),
            self_total: sum(j.self_total),
            min: j.min,
            max: j.max,
            mean: j.mean,
            m2: j.m2,
            wait_count: j.wait_count,
            wait_total: sum(j.wait_total),
            wait_min: if j.wait_count == 0 {
                f64::INFINITY
            } else {
                j.wait_min
            },
            wait_max: if j.wait_count == 0 {
                f64::NEG_INFINITY
            } else {
                j.wait_max
            },
            failures: j.failures,
            first_start: j.first_start,
            last_end: j.last_end,
            latencies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricType;

    impl Aggregate {
        fn default_with(durations: &[f64]) -> Aggregate {
            let mut a = Aggregate::default();
            durations.iter().for_each(|&d| a.record(&event(d)));
            a
        }
    }

    fn event(d: f64) -> PerformanceContract {
        PerformanceContract::new(MetricType::Tick, d, 1e12)
    }

    #[test]
    fn ranks_found_by_the_quantile_scan_are_the_ranks_the_bucket_walk_finds() {
        let mut h = Histogram::<u32>::new(3).unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // 1 ns .. 1 s over many buckets, some of them hit many times.
            let ns = 1 + (rng % 1_000) * 10u64.pow((rng >> 32) as u32 % 7);
            h.record_n(ns, 1 + (rng >> 40) as u32 % 5).unwrap();
        }
        let len = h.len();
        // Many buckets, not the slots hdrhistogram's `distinct_values` counts.
        assert_eq!((len, h.iter_recorded().count()), (5_933, 1_706));
        // Every rank alone, a rank past the end, and many at once.
        for rank in 0..=len + 1 {
            assert_eq!(
                at_ranks(&h, &[rank]),
                walk_ranks(&h, &[rank]),
                "rank {rank}"
            );
        }
        let ranks: Vec<u64> = (1..=len).step_by(7).collect();
        assert_eq!(at_ranks(&h, &ranks), walk_ranks(&h, &ranks));
        assert_eq!(at_ranks(&h, &[len + 5]), [h.max()]);
        let empty = Histogram::<u16>::new(3).unwrap();
        assert_eq!(at_ranks(&empty, &[1, 2]), walk_ranks(&empty, &[1, 2]));
    }

    #[test]
    fn percentiles_are_within_a_tenth_of_a_percent_of_the_exact_ones() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut durations = Vec::new();
        let mut a = Aggregate::default();
        for _ in 0..50_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // 20 ns .. 20 ms, log-uniform.
            let d = 2e-5 * 10f64.powf((rng % 1_000_000) as f64 / 1_000_000.0 * 6.0);
            let d = (d * 1e6).round() / 1e6; // whole ns, as clocks give them
            durations.push(d);
            a.record(&event(d));
        }
        durations.sort_by(f64::total_cmp);
        for p in [1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9] {
            let exact = super::super::percentile(
                &durations,
                p,
                super::super::PercentileMethod::NearestRank,
            );
            let got = a.percentile(p);
            assert!(
                ((got - exact) / exact).abs() <= 0.001,
                "p{p}: {got} vs exact {exact}"
            );
        }
        assert_eq!(a.percentile(100.0), durations[durations.len() - 1]);
    }

    #[test]
    fn short_durations_counted_apart_give_the_histogram_recording_each_would() {
        // 70,000 of one value overflow its 16-bit counter (folded in at 65,535); with
        // SMALL_LIMIT 1,000 in tests the histogram widens meanwhile.
        let mut a = Aggregate::default();
        let mut direct = Hist::default();
        for i in 0..70_000u64 {
            let ns = if i % 7 == 0 { 1_500 } else { 40 };
            a.record(&event(ns as f64 / 1e6));
            direct.record_n(ns, 1, i + 1);
        }
        a.record(&event(5_000.0 / 1e6)); // above LOW: straight into the histogram
        direct.record_n(5_000, 1, 70_001);
        assert_eq!(*a.latencies.folded(), direct);
        assert_eq!(
            a.buckets(),
            // 5,000 ns lies in a bucket 4 ns wide, shown by its highest value.
            [
                (40.0 / 1e6, 60_000),
                (1_500.0 / 1e6, 10_000),
                (5_003.0 / 1e6, 1)
            ]
        );
        assert_eq!(a.percentiles(&[50.0, 90.0]), [40.0 / 1e6, 1_500.0 / 1e6]);
        // Merging folds both sides in.
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.buckets().iter().map(|(_, n)| n).sum::<u64>(), 140_002);
        assert_eq!(b, {
            let mut c = a.clone();
            c.latencies.fold();
            c.merge(&a);
            c
        });
    }

    #[test]
    fn moving_to_wide_counters_keeps_every_count() {
        // Past SMALL_LIMIT (1,000 in tests) the histogram widens its counters.
        let (mut a, mut b) = (Aggregate::default(), Aggregate::default());
        for i in 0..1500u32 {
            a.record(&event(f64::from(i % 100 + 1) / 1e6));
            b.record(&event(f64::from(i % 100 + 1) / 1e6));
        }
        assert!(matches!(*a.latencies.folded(), Hist::Large(_)));
        assert_eq!(
            a.latencies.buckets().iter().map(|(_, n)| n).sum::<u64>(),
            1500
        );
        assert_eq!(a.percentile(50.0), 50.0 / 1e6, "exact below 2,048 ns");
        a.merge(&b);
        assert_eq!(
            a.latencies.buckets().iter().map(|(_, n)| n).sum::<u64>(),
            3000
        );
        assert_eq!(a.percentile(99.0), 99.0 / 1e6);
    }

    #[test]
    fn merging_equals_one_stream() {
        let (mut a, mut b, mut both) = (
            Aggregate::default(),
            Aggregate::default(),
            Aggregate::default(),
        );
        for i in 0..1000 {
            let d = (i % 37) as f64 * 0.013 + 0.001;
            let e = event(d).with_previous_timestamp(1e12 - i as f64);
            both.record(&e);
            if i % 3 == 0 {
                a.record(&e)
            } else {
                b.record(&e)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), both.count());
        assert_eq!(a.total(), both.total());
        assert_eq!((a.min(), a.max()), (both.min(), both.max()));
        assert!((a.population_std_dev() - both.population_std_dev()).abs() < 1e-12);
        assert_eq!(
            (a.wait_min(), a.wait_max(), a.wait_mean()),
            (both.wait_min(), both.wait_max(), both.wait_mean())
        );
        for p in [50.0, 95.0, 99.0] {
            assert_eq!(a.percentile(p), both.percentile(p));
        }
    }

    #[test]
    fn json_round_trips_and_merges_like_the_original() {
        let mut a = Aggregate::default();
        for i in 0..5000 {
            let d = (i % 97) as f64 * 0.0137 + 0.00002;
            a.record(&event(d).with_previous_timestamp(1e12 - 1.0));
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: Aggregate = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count(), a.count());
        assert_eq!((back.min(), back.max()), (a.min(), a.max()));
        assert_eq!(back.population_std_dev(), a.population_std_dev());
        for p in [50.0, 95.0, 99.0] {
            assert_eq!(back.percentile(p), a.percentile(p));
        }
        let mut twice = a.clone();
        twice.merge(&back);
        assert_eq!(twice.count(), 10_000);
        assert_eq!(twice.percentile(50.0), a.percentile(50.0));
    }

    #[test]
    fn json_that_no_run_could_write_is_refused_with_its_reason() {
        let good = serde_json::to_value(Aggregate::default_with(&[1.0, 2.0])).unwrap();
        let bad = |field: &str, value: serde_json::Value| {
            let mut doc = good.clone();
            doc[field] = value;
            serde_json::from_value::<Aggregate>(doc)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad("count", 3.into()),
            "the histogram holds 2 events but count is 3"
        );
        assert_eq!(
            bad("min", (-1.0).into()),
            "min -1 and max 2 must satisfy 0 <= min <= max <= 1e12 ms"
        );
        assert_eq!(
            bad("count", 0.into()),
            "count is 0; an aggregate holds at least one event"
        );
        assert!(bad("cooldwon", 1.into()).contains("unknown field `cooldwon`"));
    }

    #[test]
    fn huge_and_zero_durations_stay_finite() {
        let mut a = Aggregate::default();
        // The largest valid duration (a longer one is rejected at validation).
        let max = crate::event::MAX_DURATION_MS;
        a.record(&event(0.0));
        a.record(&event(max));
        a.record(&event(max));
        assert_eq!(a.percentile(50.0), max);
        assert_eq!(a.percentile(10.0), 0.0);
        assert_eq!(a.population_std_dev(), (2.0f64 / 9.0).sqrt() * max);
        assert_eq!(a.total(), 2.0 * max);
    }

    #[test]
    fn a_hook_sized_histogram_fits_in_64_kib() {
        let mut a = Aggregate::default();
        // 20 ns up to 8 ms: the range of this engine's hooks.
        for ns in [20u64, 1_000, 100_000, 8_000_000] {
            a.record(&event(ns as f64 / 1e6));
        }
        // 2,048 16-bit counts below 2,048 ns, and 13 buckets of 1,024 above (to 8.4 ms).
        assert_eq!(a.histogram_bytes(), 2 * 2_048 + 2 * 14 * 1_024);
    }

    #[test]
    fn a_counter_about_to_pass_16_bits_widens_first_and_keeps_every_count() {
        // NARROW_LIMIT is 100 in tests. 5,000 ns lies in a bucket 4 ns wide.
        let mut a = Aggregate::default();
        for _ in 0..100 {
            a.record(&event(5_000.0 / 1e6));
        }
        assert!(matches!(a.latencies.hist, Hist::Narrow(_)));
        let narrow = a.histogram_bytes();
        a.record(&event(5_000.0 / 1e6));
        assert!(matches!(a.latencies.hist, Hist::Small(_)));
        assert_eq!(
            a.histogram_bytes(),
            2 * narrow,
            "32-bit counters take twice the room"
        );
        assert_eq!(a.buckets(), [(5_003.0 / 1e6, 101)]);
        // Equal to the same counts recorded into 32-bit counters from the start.
        let mut wide = Hist::Small(Histogram::new(3).expect("sigfig 3 is in range"));
        wide.record_n(5_000, 101, 101);
        assert_eq!(a.latencies.hist, wide);
        // A merge whose buckets would pass 16 bits holds them in 32.
        let mut b = Aggregate::default();
        for _ in 0..60 {
            b.record(&event(5_000.0 / 1e6));
        }
        let mut c = b.clone();
        c.merge(&b);
        assert_eq!(c.buckets(), [(5_003.0 / 1e6, 120)]);
    }
}
