//! Candles, candle intervals, and a validated series of candles.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Name;

/// Unix epoch milliseconds, UTC: the engine's clock. chrono appears only at the edges.
///
/// ```
/// let noon: backtest_perf::engine::Millis = 1_704_110_400_000; // 2024-01-01T12:00:00Z
/// assert_eq!(backtest_perf::engine::candle::to_utc(noon).to_rfc3339(), "2024-01-01T12:00:00+00:00");
/// ```
pub type Millis = i64;

/// A series whose frames would outnumber its candles more than this many times is
/// refused (its interval is too small for its data).
pub const MAX_FRAMES_PER_CANDLE: u64 = 100;

/// A candle interval (and the step of a frame), in whole milliseconds.
///
/// ```
/// use backtest_perf::engine::Interval;
/// assert_eq!(Interval::hours(1).to_string(), "1h");
/// assert_eq!(Interval::minutes(90).to_string(), "90m");
/// assert_eq!(Interval::days(1).millis(), 86_400_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Interval(Millis);

impl Interval {
    /// One minute.
    ///
    /// ```
    /// assert_eq!(backtest_perf::engine::Interval::MINUTE.millis(), 60_000);
    /// ```
    pub const MINUTE: Interval = Interval(60_000);

    /// An interval of `ms` milliseconds (at least 1).
    ///
    /// ```
    /// # use backtest_perf::engine::Interval;
    /// assert_eq!(Interval::from_millis(0).millis(), 1);
    /// ```
    pub fn from_millis(ms: Millis) -> Self {
        Interval(ms.max(1))
    }

    /// `n` minutes.
    ///
    /// ```
    /// # use backtest_perf::engine::Interval;
    /// assert_eq!(Interval::minutes(15).to_string(), "15m");
    /// ```
    pub fn minutes(n: i64) -> Self {
        Self::from_millis(n * 60_000)
    }

    /// `n` hours.
    ///
    /// ```
    /// # use backtest_perf::engine::Interval;
    /// assert_eq!(Interval::hours(4), Interval::minutes(240));
    /// ```
    pub fn hours(n: i64) -> Self {
        Self::from_millis(n * 3_600_000)
    }

    /// `n` days.
    ///
    /// ```
    /// # use backtest_perf::engine::Interval;
    /// assert_eq!(Interval::days(2).to_string(), "2d");
    /// ```
    pub fn days(n: i64) -> Self {
        Self::from_millis(n * 86_400_000)
    }

    /// The length in milliseconds.
    ///
    /// ```
    /// # use backtest_perf::engine::Interval;
    /// assert_eq!(Interval::hours(1).millis(), 3_600_000);
    /// ```
    pub fn millis(self) -> Millis {
        self.0
    }
}

impl std::str::FromStr for Interval {
    type Err = String;

    /// A whole number and a unit: `s`, `m`, `h` or `d` (`30s`, `15m`, `1h`, `1d`).
    ///
    /// ```
    /// use backtest_perf::engine::Interval;
    /// assert_eq!("15m".parse::<Interval>().unwrap(), Interval::minutes(15));
    /// assert_eq!("1d".parse::<Interval>().unwrap(), Interval::days(1));
    /// assert!("0h".parse::<Interval>().unwrap_err().contains("for example 1h"));
    /// assert!("1y".parse::<Interval>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{text}` is not a candle interval: a whole number above 0 and a unit s, m, h or d, for example 1h or 15m"
            )
        };
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let size: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        match number.checked_mul(size) {
            Some(ms) if number > 0 && ms <= 366 * 86_400_000 => Ok(Interval(ms)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// One OHLCV candle. `open_time` is epoch milliseconds, UTC.
///
/// ```
/// use backtest_perf::engine::Candle;
/// let c = Candle { open_time: 0, open: 10.0, high: 12.0, low: 9.0, close: 11.0, volume: 3.0 };
/// assert_eq!(c.typical_price(), (12.0 + 9.0 + 11.0) / 3.0);
/// assert_eq!(c.open_time_utc().to_rfc3339(), "1970-01-01T00:00:00+00:00");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Candle {
    /// When the candle opened, epoch ms UTC.
    pub open_time: Millis,
    /// First price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Traded volume.
    pub volume: f64,
}

impl Candle {
    /// `(high + low + close) / 3`.
    ///
    /// ```
    /// use backtest_perf::engine::Candle;
    /// let c = Candle { open_time: 60_000, open: 10.0, high: 12.0, low: 9.0, close: 11.0, volume: 2.0 };
    /// assert_eq!(c.typical_price(), (12.0 + 9.0 + 11.0) / 3.0);
    /// ```
    pub fn typical_price(&self) -> f64 {
        (self.high + self.low + self.close) / 3.0
    }

    /// The open time as a chrono date-time.
    ///
    /// ```
    /// use backtest_perf::engine::Candle;
    /// let c = Candle { open_time: 60_000, open: 10.0, high: 12.0, low: 9.0, close: 11.0, volume: 2.0 };
    /// assert_eq!(c.open_time_utc().to_rfc3339(), "1970-01-01T00:01:00+00:00");
    /// ```
    pub fn open_time_utc(&self) -> DateTime<Utc> {
        to_utc(self.open_time)
    }

    /// What is wrong with this candle, if anything.
    ///
    /// ```
    /// # use backtest_perf::engine::Candle;
    /// let c = Candle { open_time: 0, open: 10.0, high: 9.0, low: 8.0, close: 9.5, volume: 1.0 };
    /// assert_eq!(c.check().unwrap_err(), "high 9 is below open 10, close 9.5 or low 8");
    /// ```
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
        ] {
            if !value.is_finite() {
                return Err(format!(
                    "{field} is {value}; prices and volume must be finite"
                ));
            }
            if value < 0.0 {
                return Err(format!(
                    "{field} is {value}; prices and volume must be >= 0"
                ));
            }
        }
        let (o, h, l, c) = (self.open, self.high, self.low, self.close);
        if h < o || h < c || h < l {
            return Err(format!("high {h} is below open {o}, close {c} or low {l}"));
        }
        if l > o || l > c {
            return Err(format!("low {l} is above open {o} or close {c}"));
        }
        Ok(())
    }
}

/// Epoch milliseconds as a chrono date-time (clamped to chrono's range).
///
/// ```
/// assert_eq!(backtest_perf::engine::candle::to_utc(86_400_000).to_rfc3339(), "1970-01-02T00:00:00+00:00");
/// ```
pub fn to_utc(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A candle series failed a check: which candle (0-based) and why.
///
/// ```
/// use backtest_perf::engine::{CandleError, CandleSeries};
/// let err: CandleError = CandleSeries::new("X".into(), vec![], None).unwrap_err();
/// assert_eq!(err.to_string(), "candle 0: no candles");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("candle {index}: {problem}")]
pub struct CandleError {
    /// Position of the offending candle in the series, 0-based.
    pub index: usize,
    /// What is wrong.
    pub problem: String,
}

/// The candles of one symbol, checked: valid prices, open times strictly increasing.
///
/// A candle counts as closed at the next candle's open time, or one [`interval`] after
/// its own open if that comes first (so gaps such as weekends never show a candle
/// early): no strategy can see a candle before it closed.
///
/// [`interval`]: CandleSeries::interval
///
/// ```
/// use backtest_perf::engine::{Candle, CandleSeries};
/// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
/// let s = CandleSeries::new("X".into(), vec![c(0), c(1), c(2)], None).unwrap();
/// assert_eq!(s.candles().len(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct CandleSeries {
    symbol: Name,
    interval: Interval,
    candles: Vec<Candle>,
    close_times: Vec<Millis>,
    /// Every gap equals the interval: positions follow from times by arithmetic.
    regular: bool,
}

impl CandleSeries {
    /// Checks `candles` and builds the series. With no `interval` given, it is the most
    /// common gap between open times (the smallest among equally common ones).
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries, Interval};
    /// let c = |t: i64| Candle { open_time: t * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let series = CandleSeries::new("X".into(), vec![c(0), c(1), c(2), c(5)], None).unwrap();
    /// assert_eq!(series.interval(), Interval::MINUTE);
    /// assert_eq!(series.close_time(3), 6 * 60_000);
    /// ```
    pub fn new(
        symbol: Name,
        candles: Vec<Candle>,
        interval: Option<Interval>,
    ) -> Result<Self, CandleError> {
        if candles.is_empty() {
            return Err(CandleError {
                index: 0,
                problem: "no candles".into(),
            });
        }
        for (index, candle) in candles.iter().enumerate() {
            candle
                .check()
                .map_err(|problem| CandleError { index, problem })?;
            if index > 0 && candle.open_time <= candles[index - 1].open_time {
                return Err(CandleError {
                    index,
                    problem: format!(
                        "open time {} is not after the previous candle's {}",
                        candle.open_time_utc().to_rfc3339(),
                        candles[index - 1].open_time_utc().to_rfc3339()
                    ),
                });
            }
        }
        let inferred = interval.is_none();
        let interval = match interval {
            Some(interval) => interval,
            None => most_common_gap(&candles).ok_or_else(|| CandleError {
                index: 0,
                problem: "one candle only: at least two are needed to tell the candle interval"
                    .into(),
            })?,
        };
        // Every frame is a step of the interval from the first candle to the last: an
        // interval far smaller than the data's (a few gaps of 1 ms in daily data) would
        // make billions of frames. More than this many per candle is refused.
        let (first, last) = (candles[0].open_time, candles[candles.len() - 1].open_time);
        let frames = (i128::from(last) - i128::from(first)) / i128::from(interval.millis()) + 1;
        let most = MAX_FRAMES_PER_CANDLE as i128 * candles.len() as i128 + 10_000;
        if frames > most {
            return Err(CandleError {
                index: 0,
                problem: format!(
                    "{} candles from {} to {} at an interval of {interval} ({}) make {frames} frames, \
                     over {MAX_FRAMES_PER_CANDLE} per candle: the interval is too small for this data; \
                     set it (backtest --interval, for example --interval 1h)",
                    candles.len(),
                    candles[0].open_time_utc().to_rfc3339(),
                    candles[candles.len() - 1].open_time_utc().to_rfc3339(),
                    if inferred {
                        "inferred from the most common gap between candles"
                    } else {
                        "as given"
                    },
                ),
            });
        }
        let regular = candles
            .windows(2)
            .all(|w| w[1].open_time - w[0].open_time == interval.millis());
        // A regular series' close times follow from its open times; only an irregular one
        // keeps them (8 bytes a candle: 42 MB for ten years of minutes).
        let close_times = if regular {
            Vec::new()
        } else {
            candles
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let full = c.open_time + interval.millis();
                    candles
                        .get(i + 1)
                        .map_or(full, |next| next.open_time.min(full))
                })
                .collect()
        };
        Ok(CandleSeries {
            symbol,
            interval,
            candles,
            close_times,
            regular,
        })
    }

    /// The symbol.
    ///
    /// ```
    /// # use backtest_perf::engine::{Candle, CandleSeries, Interval};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), vec![c(0), c(1)], None).unwrap();
    /// assert_eq!((s.symbol().as_str(), s.interval(), s.candles().len()), ("X", Interval::MINUTE, 2));
    /// assert_eq!((s.close_time(1), s.first_open_at_or_after(1)), (120_000, 1));
    /// ```
    pub fn symbol(&self) -> Name {
        self.symbol
    }

    /// The candle interval.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), vec![c(0), c(1), c(2)], None).unwrap();
    /// assert_eq!(s.interval(), backtest_perf::engine::Interval::MINUTE);
    /// ```
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// All candles, oldest first.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), vec![c(0), c(1), c(2)], None).unwrap();
    /// assert_eq!(s.candles()[2].open_time, 120_000);
    /// ```
    pub fn candles(&self) -> &[Candle] {
        &self.candles
    }

    /// When candle `index` closed.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), vec![c(0), c(1), c(2)], None).unwrap();
    /// assert_eq!(s.close_time(0), 60_000);
    /// ```
    pub fn close_time(&self, index: usize) -> Millis {
        if self.regular {
            self.candles[index].open_time + self.interval.millis()
        } else {
            self.close_times[index]
        }
    }

    /// Number of candles closed by `when`: the ones a strategy may see then.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), (0..5).map(c).collect(), None).unwrap();
    /// assert_eq!((s.closed_by(59_999), s.closed_by(60_000), s.closed_by(10_000_000)), (0, 1, 5));
    /// ```
    #[inline]
    pub fn closed_by(&self, when: Millis) -> usize {
        if self.regular {
            return self.as_regular().closed_by(when);
        }
        self.close_times.partition_point(|&t| t <= when)
    }

    /// Index of the first candle that opens at or after `since`.
    ///
    /// ```
    /// use backtest_perf::engine::{Candle, CandleSeries};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let s = CandleSeries::new("X".into(), vec![c(0), c(1), c(2)], None).unwrap();
    /// assert_eq!((s.first_open_at_or_after(0), s.first_open_at_or_after(1), s.first_open_at_or_after(999_999)), (0, 1, 3));
    /// ```
    #[inline]
    pub fn first_open_at_or_after(&self, since: Millis) -> usize {
        if self.regular {
            return self.as_regular().first_open_at_or_after(since);
        }
        self.candles.partition_point(|c| c.open_time < since)
    }

    /// The positions of a regular series (every gap the interval).
    #[inline]
    fn as_regular(&self) -> Regular {
        Regular {
            first_open: self.candles[0].open_time,
            interval: self.interval,
            len: self.candles.len(),
        }
    }
}

/// A regular series' positions by arithmetic: `len` candles, the first opening at
/// `first_open`, each one `interval` after the one before and closing one `interval`
/// after it opened. A [`CandleSeries`] whose gaps all equal its interval and a run's
/// window of candles made as it goes both answer with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Regular {
    pub(crate) first_open: Millis,
    pub(crate) interval: Interval,
    pub(crate) len: usize,
}

impl Regular {
    /// When candle `index` closes.
    #[inline]
    pub(crate) fn close_time(self, index: usize) -> Millis {
        self.first_open + (index as Millis + 1) * self.interval.millis()
    }

    /// Candles closed by `when`.
    #[inline]
    pub(crate) fn closed_by(self, when: Millis) -> usize {
        let first = self.close_time(0);
        if when < first {
            return 0;
        }
        (((when - first) / self.interval.millis()) as usize)
            .saturating_add(1)
            .min(self.len)
    }

    /// The first candle opening at or after `since`.
    #[inline]
    pub(crate) fn first_open_at_or_after(self, since: Millis) -> usize {
        if since <= self.first_open {
            return 0;
        }
        let step = self.interval.millis();
        (((since - self.first_open).saturating_add(step - 1) / step) as usize).min(self.len)
    }
}

fn most_common_gap(candles: &[Candle]) -> Option<Interval> {
    let mut gaps: Vec<Millis> = candles
        .windows(2)
        .map(|w| w[1].open_time - w[0].open_time)
        .collect();
    gaps.sort_unstable();
    let mut best: Option<(usize, Millis)> = None;
    for run in gaps.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(count, _)| run.len() > count) {
            best = Some((run.len(), run[0]));
        }
    }
    best.map(|(_, gap)| Interval::from_millis(gap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(t: Millis, o: f64, h: f64, l: f64, c: f64) -> Candle {
        Candle {
            open_time: t,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: 1.0,
        }
    }

    #[test]
    fn rejects_bad_candles_with_their_position() {
        let ok = candle(0, 10.0, 11.0, 9.0, 10.5);
        let cases = [
            (vec![], CandleError { index: 0, problem: "no candles".into() }),
            (
                vec![ok, candle(1, 10.0, 9.5, 9.0, 10.0)],
                CandleError { index: 1, problem: "high 9.5 is below open 10, close 10 or low 9".into() },
            ),
            (
                vec![ok, candle(1, 10.0, 11.0, 10.5, 10.6)],
                CandleError { index: 1, problem: "low 10.5 is above open 10 or close 10.6".into() },
            ),
            (
                vec![ok, candle(1, f64::NAN, 11.0, 9.0, 10.0)],
                CandleError { index: 1, problem: "open is NaN; prices and volume must be finite".into() },
            ),
            (
                vec![ok, ok],
                CandleError {
                    index: 1,
                    problem: "open time 1970-01-01T00:00:00+00:00 is not after the previous candle's 1970-01-01T00:00:00+00:00".into(),
                },
            ),
        ];
        for (candles, expected) in cases {
            assert_eq!(
                CandleSeries::new(Name::new("X"), candles, None).unwrap_err(),
                expected
            );
        }
    }

    #[test]
    fn regular_series_find_positions_by_arithmetic_like_a_search_would() {
        let minute = 60_000;
        let candles: Vec<Candle> = (0..50)
            .map(|i| candle(1_000 + i * minute, 1.0, 1.0, 1.0, 1.0))
            .collect();
        let s = CandleSeries::new(Name::new("X"), candles, None).unwrap();
        assert!(s.regular);
        assert!(
            s.close_times.is_empty(),
            "a regular series keeps no close times"
        );
        let close_times: Vec<Millis> = (0..50).map(|i| 1_000 + (i + 1) * minute).collect();
        assert_eq!(
            (0..50).map(|i| s.close_time(i)).collect::<Vec<_>>(),
            close_times
        );
        for t in (-2 * minute..55 * minute).step_by(7_001).chain([
            1_000,
            1_000 + minute,
            1_000 + 50 * minute,
        ]) {
            assert_eq!(
                s.closed_by(t),
                close_times.partition_point(|&c| c <= t),
                "closed_by({t})"
            );
            let search = s.candles.partition_point(|c| c.open_time < t);
            assert_eq!(
                s.first_open_at_or_after(t),
                search,
                "first_open_at_or_after({t})"
            );
        }
    }

    #[test]
    fn close_times_never_run_past_the_next_open() {
        let day = 86_400_000;
        // Thu, Fri, then Mon: the weekend gap does not delay Friday's close past Saturday.
        let candles = vec![
            candle(0, 1.0, 1.0, 1.0, 1.0),
            candle(day, 1.0, 1.0, 1.0, 1.0),
            candle(4 * day, 1.0, 1.0, 1.0, 1.0),
        ];
        let s = CandleSeries::new(Name::new("X"), candles, None).unwrap();
        assert_eq!(s.interval(), Interval::days(1));
        assert_eq!(
            [s.close_time(0), s.close_time(1), s.close_time(2)],
            [day, 2 * day, 5 * day]
        );
        assert_eq!(s.closed_by(day - 1), 0);
        assert_eq!(s.closed_by(day), 1);
        assert_eq!(s.closed_by(4 * day), 2);
        assert_eq!(s.first_open_at_or_after(day + 1), 2);
    }
}
