//! Frames: the simulated times at which a strategy ticks.

use super::candle::{CandleSeries, Interval, Millis};

/// From `start` to `end` inclusive, stepping by `interval`.
///
/// ```
/// use backtest_perf::engine::{Frame, Interval};
/// let day = Frame { start: 0, end: 86_400_000 - 60_000, interval: Interval::MINUTE };
/// assert_eq!(day.count(), 1_440);
/// assert_eq!(Frame { start: 0, end: 0, interval: Interval::MINUTE }.count(), 1);
/// assert_eq!(day.first_at_or_after(90_001), 120_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The first frame time, epoch ms.
    pub start: Millis,
    /// The last frame time (inclusive), epoch ms.
    pub end: Millis,
    /// The step.
    pub interval: Interval,
}

impl Frame {
    /// From the first candle's close to the last one's, at the series' interval.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries, Frame};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let series = CandleSeries::new("X".into(), (0..10).map(c).collect(), None).unwrap();
    /// let frame = Frame::of_series(&series);
    /// assert_eq!((frame.start, frame.end, frame.count()), (60_000, 600_000, 10));
    /// ```
    pub fn of_series(series: &CandleSeries) -> Self {
        let last = series.candles().len() - 1;
        Frame {
            start: series.close_time(0),
            end: series.close_time(last),
            interval: series.interval(),
        }
    }

    /// Number of frame times (both ends included).
    ///
    /// ```
    /// # use backtest_perf::engine::{Frame, Interval};
    /// assert_eq!(Frame { start: 0, end: 3_600_000, interval: Interval::hours(1) }.count(), 2);
    /// assert_eq!(Frame { start: 1, end: 0, interval: Interval::MINUTE }.count(), 0);
    /// ```
    pub fn count(&self) -> u64 {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.interval.millis()) as u64 + 1
        }
    }

    /// The first frame time at or after `t` (may lie past `end`).
    ///
    /// ```
    /// # use backtest_perf::engine::{Frame, Interval};
    /// let f = Frame { start: 0, end: 600_000, interval: Interval::MINUTE };
    /// assert_eq!((f.first_at_or_after(60_000), f.first_at_or_after(60_001)), (60_000, 120_000));
    /// ```
    pub fn first_at_or_after(&self, t: Millis) -> Millis {
        if t <= self.start {
            return self.start;
        }
        let step = self.interval.millis();
        self.start + (t - self.start + step - 1) / step * step
    }
}
