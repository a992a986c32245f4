//! Standard deviation, population or sample.

/// Which standard deviation to report.
///
/// ```
/// use backtest_perf::stats::StdDevKind;
/// assert_eq!(StdDevKind::default(), StdDevKind::Population);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StdDevKind {
    /// `sqrt(sum((d - avg)^2) / n)`; 0 for no samples.
    #[default]
    Population,
    /// `sqrt(sum((d - avg)^2) / (n - 1))`; 0 for fewer than two samples.
    Sample,
}

/// The standard deviation of `samples` around their mean `mean`.
///
/// ```
/// use backtest_perf::stats::{std_dev, StdDevKind};
///
/// let d = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(std_dev(&d, 2.5, StdDevKind::Population), 1.25f64.sqrt());
/// assert_eq!(std_dev(&[5.0], 5.0, StdDevKind::Sample), 0.0);
/// ```
pub fn std_dev(samples: &[f64], mean: f64, kind: StdDevKind) -> f64 {
    let n = samples.len();
    let divisor = match kind {
        StdDevKind::Population if n >= 1 => n as f64,
        StdDevKind::Sample if n >= 2 => (n - 1) as f64,
        _ => return 0.0,
    };
    let squares: f64 = samples.iter().map(|d| (d - mean) * (d - mean)).sum();
    (squares / divisor).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_and_sample_of_one_to_four() {
        let d = [1.0, 2.0, 3.0, 4.0];
        let population = std_dev(&d, 2.5, StdDevKind::Population);
        let sample = std_dev(&d, 2.5, StdDevKind::Sample);
        assert_eq!(population, 1.25f64.sqrt());
        assert_eq!(sample, (5.0f64 / 3.0).sqrt());
        assert_eq!(format!("{population:.4}"), "1.1180");
        assert_eq!(format!("{sample:.4}"), "1.2910");
    }

    #[test]
    fn empty_single_and_constant_samples_are_zero() {
        assert_eq!(std_dev(&[], 0.0, StdDevKind::Population), 0.0);
        assert_eq!(std_dev(&[], 0.0, StdDevKind::Sample), 0.0);
        assert_eq!(std_dev(&[3.0], 3.0, StdDevKind::Population), 0.0);
        assert_eq!(std_dev(&[0.0; 5], 0.0, StdDevKind::Sample), 0.0);
    }
}
