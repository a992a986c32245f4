//! Percentiles of sorted durations: nearest rank and linear interpolation.

/// How a percentile is picked from sorted samples.
///
/// ```
/// use backtest_perf::stats::PercentileMethod;
/// assert_eq!(PercentileMethod::default(), PercentileMethod::NearestRank);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PercentileMethod {
    /// `d[max(0, ceil(n * p / 100) - 1)]`: always one of the samples.
    #[default]
    NearestRank,
    /// `d[lo] * (1 - f) + d[hi] * f` with `r = p / 100 * (n - 1)`, `lo = floor(r)`,
    /// `hi = ceil(r)`, `f = r - lo` (backtest-kit since 10.2).
    Linear,
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending); 0 for no samples.
///
/// ```
/// use backtest_perf::stats::{percentile, PercentileMethod};
///
/// let d = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(percentile(&d, 50.0, PercentileMethod::NearestRank), 2.0);
/// assert_eq!(percentile(&d, 50.0, PercentileMethod::Linear), 2.5);
/// assert_eq!(percentile(&[], 95.0, PercentileMethod::Linear), 0.0);
/// ```
pub fn percentile(sorted: &[f64], p: f64, method: PercentileMethod) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let p = p.clamp(0.0, 100.0);
    match method {
        PercentileMethod::NearestRank => {
            let rank = nearest_rank(n as u64, p) as usize;
            sorted[rank.saturating_sub(1).min(n - 1)]
        }
        PercentileMethod::Linear => {
            let r = p / 100.0 * (n - 1) as f64;
            let lo = r.floor() as usize;
            let hi = (r.ceil() as usize).min(n - 1);
            let f = r - lo as f64;
            sorted[lo] * (1.0 - f) + sorted[hi] * f
        }
    }
}

/// The 1-based rank of percentile `p` (0-100) among `n` values: `max(1, ceil(n * p / 100))`,
/// at most `n`.
///
/// ```
/// use backtest_perf::stats::nearest_rank;
/// assert_eq!(nearest_rank(4, 50.0), 2);
/// assert_eq!(nearest_rank(20, 95.0), 19);
/// assert_eq!(nearest_rank(4, 0.0), 1);
/// assert_eq!(nearest_rank(4, 100.0), 4);
/// ```
pub fn nearest_rank(n: u64, p: f64) -> u64 {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // `as` saturates, and the rank is kept within 1..=n.
    ((n as f64 * p / 100.0).ceil() as u64).clamp(1, n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PercentileMethod::*;

    #[test]
    fn nearest_rank_picks_samples() {
        let d = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&d, 50.0, NearestRank), 2.0);
        assert_eq!(percentile(&d, 95.0, NearestRank), 4.0);
        assert_eq!(percentile(&d, 99.0, NearestRank), 4.0);
        assert_eq!(percentile(&d, 0.0, NearestRank), 1.0);
        assert_eq!(percentile(&d, 25.0, NearestRank), 1.0);
        assert_eq!(percentile(&d, 26.0, NearestRank), 2.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 95.0, NearestRank), 95.0);
        assert_eq!(percentile(&hundred, 99.0, NearestRank), 99.0);
        assert_eq!(percentile(&hundred, 50.0, NearestRank), 50.0);
    }

    #[test]
    fn linear_interpolates_between_neighbours() {
        let d = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&d, 50.0, Linear), 2.5);
        assert!((percentile(&d, 95.0, Linear) - 3.85).abs() < 1e-12);
        assert!((percentile(&d, 99.0, Linear) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&d, 100.0, Linear), 4.0);
        assert_eq!(percentile(&[7.0], 99.0, Linear), 7.0);
    }

    #[test]
    fn single_sample_and_ties() {
        assert_eq!(percentile(&[7.0], 50.0, NearestRank), 7.0);
        let ties = [2.0, 2.0, 2.0, 9.0];
        assert_eq!(percentile(&ties, 50.0, NearestRank), 2.0);
        assert_eq!(percentile(&ties, 50.0, Linear), 2.0);
        assert_eq!(percentile(&ties, 75.0, NearestRank), 2.0);
        assert_eq!(percentile(&ties, 76.0, NearestRank), 9.0);
    }
}
