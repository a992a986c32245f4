//! Compensated summation, so totals over many small durations stay exact to the last digit.

/// Neumaier's compensated sum: as exact as a sum of `f64` can be without arbitrary precision.
/// Each term's rounding error is found with Knuth's TwoSum, which gives Neumaier's error
/// term exactly, without comparing magnitudes.
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
        // TwoSum: `t + error == self.total + x` exactly, whichever term is larger. The
        // error is the very value Neumaier's branch computes ((total - t) + x when
        // |total| >= |x|, else (x - t) + total), in six additions instead of two
        // absolute values, a comparison and a select: the hottest path of a tracked run
        // adds three sums an event.
        let x_part = t - self.total;
        let error = (self.total - (t - x_part)) + (x - x_part);
        self.compensation += error;
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

    /// Neumaier's own error term, as this type computed it before TwoSum.
    fn neumaier(total: f64, x: f64) -> f64 {
        let t = total + x;
        if total.abs() >= x.abs() {
            (total - t) + x
        } else {
            (x - t) + total
        }
    }

    #[test]
    fn twosum_gives_neumaiers_error_term_bit_for_bit() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut checked = 0;
        while checked < 200_000 {
            // Finite values of every sign and magnitude, from raw bits.
            let (a, b) = (f64::from_bits(next()), f64::from_bits(next()));
            if !a.is_finite() || !b.is_finite() || !(a + b).is_finite() {
                continue;
            }
            let mut sum = Sum {
                total: a,
                compensation: 0.0,
            };
            sum.add(b);
            assert_eq!(
                sum.compensation.to_bits(),
                neumaier(a, b).to_bits(),
                "{a:e} + {b:e}"
            );
            checked += 1;
        }
        // Close magnitudes, where the sum cancels: values like durations and wait times,
        // of either sign, within a few orders of magnitude of each other.
        let mut unit = || (next() >> 11) as f64 / (1u64 << 53) as f64;
        let mut close = Vec::new();
        for _ in 0..200_000 {
            let a = (unit() - 0.5) * 10f64.powi((unit() * 8.0) as i32 - 4);
            let b = (unit() - 0.5) * 10f64.powi((unit() * 8.0) as i32 - 4);
            close.push((a, b));
        }
        close.extend([
            (0.1, 0.2),
            (1e16, 1.0),
            (1.0, 1e16),
            (-0.3, 0.1),
            (2.5e-4, 7.1e3),
        ]);
        for (a, b) in close {
            let mut sum = Sum {
                total: a,
                compensation: 0.0,
            };
            sum.add(b);
            assert_eq!(sum.compensation.to_bits(), neumaier(a, b).to_bits());
        }
    }

    #[test]
    fn cancels_rounding_that_a_naive_sum_keeps() {
        let terms = [1e16, 1.0, -1e16];
        assert_eq!(terms.iter().sum::<f64>(), 0.0);
        assert_eq!(terms.into_iter().collect::<Sum>().value(), 1.0);
        assert_eq!(Sum::default().value(), 0.0);
    }
}
