//! Candles made as a run goes: a window over a regular series (seeded synthetic candles)
//! that holds what a strategy may still look back on and what a position may replay
//! ahead, never the whole series. Ten years of minutes are 5.3 million candles, 252 MB
//! held at once; a window holds a few megabytes.
//!
//! Positions are the series' own (0 is its first candle), as in a
//! [`CandleSeries`](super::CandleSeries): only the candles in memory change.

use super::candle::{Candle, CandleSeries, Interval, Millis, Regular};
use super::exchange::{Exchange, ExchangeError};
use super::synthetic::{SyntheticCandles, SyntheticConfig};
use crate::Name;

/// Candles made ahead of the newest closed one, between ticks (at least half as many are
/// always made): a position replayed from there (120 minutes' wait and a day's lifetime
/// by default) finds them made already.
pub(crate) const AHEAD: usize = 4_096;

/// Where a run's candles come from: a series held whole (asked through its exchange, so
/// an exchange's own candle queries are what the hooks time), or a window.
pub(crate) enum Source<'a> {
    Series {
        exchange: &'a dyn Exchange,
        series: &'a CandleSeries,
        /// The exchange [`serves_untimed`](Exchange::serves_untimed), asked once.
        untimed: bool,
    },
    Window(Box<Window>),
}

impl Source<'_> {
    #[inline]
    pub(crate) fn symbol(&self) -> Name {
        match self {
            Source::Series { series, .. } => series.symbol(),
            Source::Window(w) => w.symbol(),
        }
    }

    #[inline]
    pub(crate) fn interval(&self) -> Interval {
        match self {
            Source::Series { series, .. } => series.interval(),
            Source::Window(w) => w.interval(),
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Source::Series { series, .. } => series.candles().len(),
            Source::Window(w) => w.len(),
        }
    }

    #[inline]
    pub(crate) fn close_time(&self, index: usize) -> Millis {
        match self {
            Source::Series { series, .. } => series.close_time(index),
            Source::Window(w) => w.close_time(index),
        }
    }

    #[inline]
    pub(crate) fn closed_by(&self, when: Millis) -> usize {
        match self {
            Source::Series { series, .. } => series.closed_by(when),
            Source::Window(w) => w.closed_by(when),
        }
    }

    #[inline]
    pub(crate) fn first_open_at_or_after(&self, since: Millis) -> usize {
        match self {
            Source::Series { series, .. } => series.first_open_at_or_after(since),
            Source::Window(w) => w.first_open_at_or_after(since),
        }
    }

    /// Whether fetching candles from here times nothing inside the fetch: this crate's
    /// windows and exchanges (see [`Exchange::serves_untimed`]).
    #[inline]
    pub(crate) fn fetches_untimed(&self) -> bool {
        match self {
            Source::Series { untimed, .. } => *untimed,
            Source::Window(_) => true,
        }
    }

    /// Gets ready for a tick at `when` (a window makes and drops candles).
    #[inline]
    pub(crate) fn advance(&mut self, when: Millis) -> Result<(), ExchangeError> {
        match self {
            Source::Series { .. } => Ok(()),
            Source::Window(w) => w.advance(when),
        }
    }

    /// Makes the candles before position `end` (a window; a series has them all).
    #[inline]
    pub(crate) fn load_to(&mut self, end: usize) -> Result<(), ExchangeError> {
        match self {
            Source::Series { .. } => Ok(()),
            Source::Window(w) => w.load_to(end),
        }
    }

    /// The last `limit` candles closed by `when`: what a strategy may see then.
    #[inline]
    pub(crate) fn closed(&self, when: Millis, limit: usize) -> Result<&[Candle], ExchangeError> {
        match self {
            Source::Series {
                exchange, series, ..
            } => exchange.get_closed_candles(series.symbol(), series.interval(), when, limit),
            Source::Window(w) => w.closed(when, limit),
        }
    }

    /// At most `limit` candles opening at or after `since`; a window made them first
    /// ([`load_to`](Self::load_to)).
    #[inline]
    pub(crate) fn from(&self, since: Millis, limit: usize) -> Result<&[Candle], ExchangeError> {
        match self {
            Source::Series {
                exchange, series, ..
            } => exchange.get_candles(series.symbol(), series.interval(), since, limit),
            Source::Window(w) => {
                let from = w.first_open_at_or_after(since);
                w.slice(from, from.saturating_add(limit).min(w.len()))
            }
        }
    }

    /// Candle `index`, made already.
    #[inline]
    pub(crate) fn candle(&self, index: usize) -> Result<&Candle, ExchangeError> {
        match self {
            Source::Series { series, .. } => {
                series
                    .candles()
                    .get(index)
                    .ok_or_else(|| ExchangeError::Candle {
                        symbol: series.symbol().to_string(),
                        index,
                        problem: "past the series' end (a bug in the runner: please report it)"
                            .into(),
                    })
            }
            Source::Window(w) => Ok(&w.slice(index, index + 1)?[0]),
        }
    }
}

/// A regular series, made candle by candle, of which a window is kept.
#[derive(Debug)]
pub(crate) struct Window {
    symbol: Name,
    positions: Regular,
    source: SyntheticCandles,
    /// Candles `base..base + buf.len()` of the series.
    buf: Vec<Candle>,
    base: usize,
    /// Past candles kept: the most a strategy may ask for.
    keep: usize,
}

impl Window {
    /// The window over `config`'s candles, keeping `keep` (at least 1) past candles.
    pub(crate) fn synthetic(
        symbol: Name,
        config: &SyntheticConfig,
        keep: usize,
    ) -> Result<Self, super::CandleError> {
        Ok(Window {
            symbol,
            positions: Regular {
                first_open: config.start,
                interval: Interval::MINUTE,
                len: config.minutes,
            },
            source: SyntheticCandles::new(config)?,
            buf: Vec::new(),
            base: 0,
            keep: keep.max(1),
        })
    }

    #[inline]
    pub(crate) fn symbol(&self) -> Name {
        self.symbol
    }

    #[inline]
    pub(crate) fn interval(&self) -> Interval {
        self.positions.interval
    }

    /// Candles in the whole series.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.positions.len
    }

    /// When candle `index` closes: one interval after it opened (the series is regular).
    #[inline]
    pub(crate) fn close_time(&self, index: usize) -> Millis {
        self.positions.close_time(index)
    }

    /// Candles closed by `when` (as [`CandleSeries::closed_by`](super::CandleSeries::closed_by)).
    #[inline]
    pub(crate) fn closed_by(&self, when: Millis) -> usize {
        self.positions.closed_by(when)
    }

    /// The first candle opening at or after `since` (as
    /// [`CandleSeries::first_open_at_or_after`](super::CandleSeries::first_open_at_or_after)).
    #[inline]
    pub(crate) fn first_open_at_or_after(&self, since: Millis) -> usize {
        self.positions.first_open_at_or_after(since)
    }

    fn loaded_end(&self) -> usize {
        self.base + self.buf.len()
    }

    /// Makes the candles before position `end` (or to the series' end), each checked as
    /// a [`CandleSeries`](super::CandleSeries) checks its candles.
    pub(crate) fn load_to(&mut self, end: usize) -> Result<(), ExchangeError> {
        let end = end.min(self.len());
        self.buf.reserve(end.saturating_sub(self.loaded_end()));
        while self.loaded_end() < end {
            let index = self.loaded_end();
            let invalid = |problem: String| ExchangeError::Candle {
                symbol: self.symbol.to_string(),
                index,
                problem,
            };
            let candle = self
                .source
                .next()
                .ok_or_else(|| invalid("the series ended before its last candle".into()))?;
            candle.check().map_err(invalid)?;
            self.buf.push(candle);
        }
        Ok(())
    }

    /// Gets ready for a tick at `when`: makes the candles closed by then and [`AHEAD`]
    /// more, and forgets the ones no strategy may ask for any more. Dropping moves the
    /// kept candles to the front, so it waits until half as many are dropped as kept:
    /// each candle is moved about twice, and the window holds at most 1.5 times what it
    /// keeps.
    pub(crate) fn advance(&mut self, when: Millis) -> Result<(), ExchangeError> {
        let closed = self.closed_by(when);
        if self.loaded_end() < closed.saturating_add(AHEAD / 2) {
            self.load_to(closed.saturating_add(AHEAD))?;
        }
        let dead = closed.saturating_sub(self.keep).saturating_sub(self.base);
        if dead > 0 && dead >= ((self.buf.len() - dead) / 2).max(AHEAD) {
            self.buf.drain(..dead);
            self.base += dead;
        }
        Ok(())
    }

    /// Candles `from..to`, which [`load_to`](Self::load_to) made.
    #[inline]
    pub(crate) fn slice(&self, from: usize, to: usize) -> Result<&[Candle], ExchangeError> {
        if from < self.base {
            return Err(ExchangeError::LookbackTooLong {
                symbol: self.symbol.to_string(),
                asked: to.saturating_sub(from),
                kept: self.keep,
            });
        }
        self.buf
            .get(from - self.base..to.saturating_sub(self.base))
            .ok_or_else(|| ExchangeError::Candle {
                symbol: self.symbol.to_string(),
                index: to.saturating_sub(1),
                problem: "asked for before it was made (a bug in the runner: please report it)"
                    .into(),
            })
    }

    /// The last `limit` candles closed by `when`, as
    /// [`Exchange::get_closed_candles`](super::Exchange::get_closed_candles) gives them;
    /// asking for more than the window keeps, with more to see, is an error whatever the
    /// window holds at the moment, so that a run never depends on when it last dropped
    /// candles.
    #[inline]
    pub(crate) fn closed(&self, when: Millis, limit: usize) -> Result<&[Candle], ExchangeError> {
        let to = self.closed_by(when);
        let from = to.saturating_sub(limit);
        if to - from > self.keep {
            return Err(ExchangeError::LookbackTooLong {
                symbol: self.symbol.to_string(),
                asked: limit,
                kept: self.keep,
            });
        }
        self.slice(from, to)
    }

    /// How many candles the window holds now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synthetic::generate;

    #[test]
    fn a_window_gives_what_the_whole_series_gives_and_holds_a_bounded_part_of_it() {
        let config = SyntheticConfig::days(20);
        let series = generate(Name::new("S"), &config).unwrap();
        let keep = 3_000;
        let mut window = Window::synthetic(Name::new("S"), &config, keep).unwrap();
        let mut most_held = 0;
        for when in (series.close_time(0) - 60_000..series.close_time(28_799) + 120_000)
            .step_by(7 * 60_000 + 13_000)
        {
            window.advance(when).unwrap();
            most_held = most_held.max(window.held());
            assert_eq!(window.closed_by(when), series.closed_by(when), "{when}");
            for limit in [0, 1, 50, keep] {
                let to = series.closed_by(when);
                assert_eq!(
                    window.closed(when, limit).unwrap(),
                    &series.candles()[to.saturating_sub(limit)..to],
                    "{limit} candles at {when}"
                );
            }
            let from = window.first_open_at_or_after(when);
            assert_eq!(from, series.first_open_at_or_after(when));
            window.load_to(from + 2_000).unwrap();
            let to = (from + 2_000).min(series.candles().len());
            assert_eq!(window.slice(from, to).unwrap(), &series.candles()[from..to]);
        }
        assert_eq!(window.len(), 28_800);
        // Kept, ahead, and half as many again waiting to be dropped, at most.
        assert!(
            most_held <= 3 * (keep + 2_000 + AHEAD) / 2,
            "held {most_held} candles at once"
        );
        assert!(most_held < 28_800 / 2, "held {most_held} of 28,800 candles");
    }

    #[test]
    fn asking_further_back_than_kept_is_an_error_that_says_what_to_change() {
        let config = SyntheticConfig::days(2);
        let mut window = Window::synthetic(Name::new("S"), &config, 100).unwrap();
        let when = window.close_time(500);
        window.advance(when).unwrap();
        assert_eq!(window.closed(when, 100).unwrap().len(), 100);
        let err = window.closed(when, 101).unwrap_err();
        assert_eq!(
            err.to_string(),
            "101 past candles of S were asked for; a streamed run keeps the last 100 \
             (raise BacktestConfig::stream_lookback, or backtest --lookback, to keep more)"
        );
        // With no more than that to see, the request is served.
        let early = window.close_time(50);
        let mut fresh = Window::synthetic(Name::new("S"), &config, 100).unwrap();
        fresh.advance(early).unwrap();
        assert_eq!(fresh.closed(early, 10_000).unwrap().len(), 51);
    }

    #[test]
    fn a_candle_that_is_not_valid_is_an_error_naming_its_position() {
        // A drift this large overflows prices within a few candles.
        let config = SyntheticConfig {
            drift: 1e9,
            volatility: 0.0,
            ..SyntheticConfig::days(1)
        };
        let mut window = Window::synthetic(Name::new("S"), &config, 100).unwrap();
        match window.load_to(1_440).unwrap_err() {
            ExchangeError::Candle {
                symbol,
                index,
                problem,
            } => {
                assert_eq!(symbol, "S");
                assert!(index < 1_440);
                assert!(problem.contains("must be finite"), "{problem}");
            }
            other => panic!("{other}"),
        }
    }
}
