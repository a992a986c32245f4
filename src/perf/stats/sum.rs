//! Compensated summation, so totals over many small durations stay exact to the last digit.

/// Neumaier's compensated sum: as exact as a sum of `f64` can be without arbitrary precision.
///
/// ```
/// use backtest_perf::stats::Sum;
///
/// let mut sum = Sum::default();
/// for _ in 0..10 {
///     sum.add(0.1);
/// }
/// assert_eq!(sum.value(), 1.0); // a naive loop gives 0.9999999999999999
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sum {
    total: f64,
    compensation: f64,
}

impl Sum {
    /// Adds one term.
    ///
    /// ```
    /// let mut s = backtest_perf::stats::Sum::default();
    /// s.add(1e16);
    /// s.add(1.0);
    /// s.add(-1e16);
    /// assert_eq!(s.value(), 1.0);
    /// ```
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.total + x;
        if self.total.abs() >= x.abs() {
            self.compensation += (self.total - t) + x;
        } else {
            self.compensation += (x - t) + self.total;
        }
        self.total = t;
    }

    /// Adds another sum's total, keeping both compensations.
    ///
    /// ```
    /// use backtest_perf::stats::Sum;
    /// let mut a: Sum = [1e16, 1.0].into_iter().collect();
    /// let b: Sum = [-1e16, 1.0].into_iter().collect();
    /// a.merge(&b);
    /// assert_eq!(a.value(), 2.0);
    /// ```
    pub fn merge(&mut self, other: &Sum) {
        self.add(other.total);
        self.compensation += other.compensation;
    }

    /// The sum so far.
    ///
    /// ```
    /// assert_eq!([0.5, 0.25].into_iter().collect::<backtest_perf::stats::Sum>().value(), 0.75);
    /// ```
    pub fn value(&self) -> f64 {
        self.total + self.compensation
    }
}

impl FromIterator<f64> for Sum {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Self {
        let mut sum = Sum::default();
        iter.into_iter().for_each(|x| sum.add(x));
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_rounding_that_a_naive_sum_keeps() {
        let terms = [1e16, 1.0, -1e16];
        assert_eq!(terms.iter().sum::<f64>(), 0.0);
        assert_eq!(terms.into_iter().collect::<Sum>().value(), 1.0);
        assert_eq!(Sum::default().value(), 0.0);
    }
}
