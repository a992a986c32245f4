//! Exchanges: where candles come from. [`CsvExchange`], [`SyntheticExchange`] and
//! [`MemoryExchange`] all serve candle series held in memory;
//! [`Backtest::synthetic`](super::Backtest::synthetic) makes synthetic candles as a run
//! goes instead, holding only a window of them.

use std::collections::HashMap;
use std::path::Path;

use super::candle::{Candle, CandleSeries, Interval, Millis};
use super::csv::{DataError, read_file};
use super::synthetic::{SyntheticConfig, generate};
use crate::Name;

/// A candle request the exchange cannot serve; each message says what it has instead.
///
/// ```
/// use backtest_perf::engine::{Exchange, ExchangeError, MemoryExchange};
/// assert!(matches!(MemoryExchange::new().series("X".into()), Err(ExchangeError::UnknownSymbol { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No candles for that symbol. Fix: ask for one of the listed symbols.
    #[error("no candles for symbol {symbol}; this exchange has: {known}")]
    UnknownSymbol {
        /// The symbol asked for.
        symbol: String,
        /// The symbols it has, comma-separated.
        known: String,
    },
    /// Candles of another interval were asked for. Fix: ask for the interval it serves.
    #[error("{symbol} candles are {serves}; {asked} candles were asked for")]
    Interval {
        /// The symbol.
        symbol: String,
        /// The interval asked for.
        asked: Interval,
        /// The interval it serves.
        serves: Interval,
    },
    /// A candle made during a streamed run is not valid (a synthetic path whose prices
    /// overflowed). Fix: lower the drift or the volatility.
    #[error("candle {index} of {symbol} is not valid: {problem}")]
    Candle {
        /// The symbol.
        symbol: String,
        /// The candle's position in the series, 0-based.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// A strategy asked a streamed run for more past candles than it keeps. Fix: ask for
    /// fewer, or raise [`BacktestConfig::stream_lookback`](super::BacktestConfig::stream_lookback).
    #[error(
        "{asked} past candles of {symbol} were asked for; a streamed run keeps the last {kept} \
         (raise BacktestConfig::stream_lookback, or backtest --lookback, to keep more)"
    )]
    LookbackTooLong {
        /// The symbol.
        symbol: String,
        /// Candles asked for.
        asked: usize,
        /// Candles kept.
        kept: usize,
    },
}

/// A source of candles. Symbols are [`Name`]s (`"BTCUSDT".into()`), so that looking one
/// up costs a hash that was computed once.
///
/// Implement [`series`](Exchange::series) (and [`symbols`](Exchange::symbols)); the
/// candle queries come with it.
///
/// ```
/// use backtest_perf::engine::{CandleSeries, Exchange, ExchangeError};
/// use backtest_perf::Name;
/// /// One series, served as it is.
/// struct One(CandleSeries);
/// impl Exchange for One {
///     fn series(&self, symbol: Name) -> Result<&CandleSeries, ExchangeError> {
///         if symbol == self.0.symbol() { Ok(&self.0) } else {
///             Err(ExchangeError::UnknownSymbol { symbol: symbol.to_string(), known: self.0.symbol().to_string() })
///         }
///     }
///     fn symbols(&self) -> Vec<Name> {
///         vec![self.0.symbol()]
///     }
/// }
/// ```
pub trait Exchange: Send + Sync {
    /// The series of one symbol.
    ///
    /// ```
    /// # use backtest_perf::engine::{Exchange, SyntheticConfig, SyntheticExchange};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// assert_eq!(ex.series("SYN".into()).unwrap().symbol(), "SYN");
    /// ```
    fn series(&self, symbol: Name) -> Result<&CandleSeries, ExchangeError>;

    /// The symbols served, sorted.
    ///
    /// ```
    /// # use backtest_perf::engine::{Exchange, SyntheticConfig, SyntheticExchange};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// assert_eq!(ex.symbols(), ["SYN"]);
    /// ```
    fn symbols(&self) -> Vec<Name>;

    /// At most `limit` candles with open time >= `since`, oldest first.
    ///
    /// ```
    /// use backtest_perf::engine::{Exchange, Interval, SyntheticExchange, SyntheticConfig};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let start = ex.series("SYN".into()).unwrap().candles()[0].open_time;
    /// let c = ex.get_candles("SYN".into(), Interval::MINUTE, start + 90_000, 3).unwrap();
    /// assert_eq!(c.len(), 3);
    /// assert_eq!(c[0].open_time, start + 120_000);
    /// ```
    fn get_candles(
        &self,
        symbol: Name,
        interval: Interval,
        since: Millis,
        limit: usize,
    ) -> Result<&[Candle], ExchangeError> {
        let series = self.checked(symbol, interval)?;
        let from = series.first_open_at_or_after(since);
        let to = from.saturating_add(limit).min(series.candles().len());
        Ok(&series.candles()[from..to])
    }

    /// The last `limit` candles that closed by `until`, oldest first: what a strategy
    /// may see at time `until`.
    ///
    /// ```
    /// # use backtest_perf::engine::{Exchange, Interval, SyntheticConfig, SyntheticExchange};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let start = ex.series("SYN".into()).unwrap().candles()[0].open_time;
    /// // Two minutes in, two candles have closed.
    /// assert_eq!(ex.get_closed_candles("SYN".into(), Interval::MINUTE, start + 120_000, 10).unwrap().len(), 2);
    /// ```
    fn get_closed_candles(
        &self,
        symbol: Name,
        interval: Interval,
        until: Millis,
        limit: usize,
    ) -> Result<&[Candle], ExchangeError> {
        let series = self.checked(symbol, interval)?;
        let to = series.closed_by(until);
        Ok(&series.candles()[to.saturating_sub(limit)..to])
    }

    /// Whether serving candles runs nothing that is timed itself (no
    /// [`time`](crate::time) call or tracker step inside [`series`](Self::series) or
    /// the candle queries): the engine then closes each candle fetch it times without
    /// pushing it on the thread's span stack, which costs less. Only this crate's
    /// exchanges say so; the default, `false`, is right for every other, and an exchange
    /// that says `true` and times work inside a fetch gets that work's self time counted
    /// in the fetch's parent as well.
    #[doc(hidden)]
    fn serves_untimed(&self) -> bool {
        false
    }

    /// The series, if it serves `interval`.
    ///
    /// ```
    /// # use backtest_perf::engine::{Exchange, Interval, SyntheticConfig, SyntheticExchange};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// assert_eq!(
    ///     ex.checked("SYN".into(), Interval::hours(1)).unwrap_err().to_string(),
    ///     "SYN candles are 1m; 1h candles were asked for"
    /// );
    /// ```
    fn checked(&self, symbol: Name, interval: Interval) -> Result<&CandleSeries, ExchangeError> {
        let series = self.series(symbol)?;
        if series.interval() != interval {
            return Err(ExchangeError::Interval {
                symbol: symbol.to_string(),
                asked: interval,
                serves: series.interval(),
            });
        }
        Ok(series)
    }
}

/// Candles given in memory, any number of symbols.
///
/// ```
/// use backtest_perf::engine::{Candle, Exchange, Interval, MemoryExchange};
/// let c = |m: i64, p: f64| Candle { open_time: m * 60_000, open: p, high: p, low: p, close: p, volume: 1.0 };
/// let ex = MemoryExchange::new().with("X", vec![c(0, 1.0), c(1, 2.0)], None).unwrap();
/// assert_eq!(ex.get_closed_candles("X".into(), Interval::MINUTE, 120_000, 5).unwrap().len(), 2);
/// assert_eq!(
///     ex.series("Y".into()).unwrap_err().to_string(),
///     "no candles for symbol Y; this exchange has: X"
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryExchange {
    series: HashMap<Name, CandleSeries, foldhash::fast::RandomState>,
}

impl MemoryExchange {
    /// An exchange with no symbols.
    ///
    /// ```
    /// # use backtest_perf::engine::{Exchange, MemoryExchange};
    /// assert!(MemoryExchange::new().symbols().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the candles of `symbol`; `interval` as in [`CandleSeries::new`].
    ///
    /// ```
    /// # use backtest_perf::engine::{Candle, Exchange, MemoryExchange};
    /// let c = |m: i64| Candle { open_time: m * 60_000, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
    /// let ex = MemoryExchange::new().with("A", vec![c(0), c(1)], None).unwrap().with("B", vec![c(0), c(1)], None).unwrap();
    /// assert_eq!(ex.symbols(), ["A", "B"]);
    /// ```
    pub fn with(
        mut self,
        symbol: &str,
        candles: Vec<Candle>,
        interval: Option<Interval>,
    ) -> Result<Self, super::candle::CandleError> {
        let name = Name::new(symbol);
        self.series
            .insert(name, CandleSeries::new(name, candles, interval)?);
        Ok(self)
    }

    /// Adds a series built elsewhere.
    ///
    /// ```
    /// use backtest_perf::engine::{synthetic::generate, Exchange, MemoryExchange, SyntheticConfig};
    /// let ex = MemoryExchange::new().with_series(generate("SYN".into(), &SyntheticConfig::days(1)).unwrap());
    /// assert_eq!(ex.symbols(), ["SYN"]);
    /// ```
    pub fn with_series(mut self, series: CandleSeries) -> Self {
        self.series.insert(series.symbol(), series);
        self
    }
}

impl Exchange for MemoryExchange {
    fn serves_untimed(&self) -> bool {
        true
    }
    fn series(&self, symbol: Name) -> Result<&CandleSeries, ExchangeError> {
        self.series
            .get(&symbol)
            .ok_or_else(|| ExchangeError::UnknownSymbol {
                symbol: symbol.to_string(),
                known: join(self.symbols()),
            })
    }

    fn symbols(&self) -> Vec<Name> {
        let mut names: Vec<Name> = self.series.keys().copied().collect();
        names.sort();
        names
    }
}

fn join(names: Vec<Name>) -> String {
    names
        .iter()
        .map(Name::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One symbol's candles read from a CSV file.
///
/// ```
/// use backtest_perf::engine::{CsvExchange, Exchange};
/// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/EURUSD.csv");
/// let ex = CsvExchange::open(&path, "EURUSD").unwrap();
/// assert_eq!(ex.series("EURUSD".into()).unwrap().candles().len(), 5_000);
/// ```
#[derive(Clone, Debug)]
pub struct CsvExchange(MemoryExchange);

impl CsvExchange {
    /// Reads `path` as the candles of `symbol` (see [`crate::engine::csv`]).
    ///
    /// ```
    /// use backtest_perf::engine::{CsvExchange, Exchange, Interval};
    /// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/GOOG.csv");
    /// let goog = CsvExchange::open(&path, "GOOG").unwrap();
    /// assert_eq!(goog.series("GOOG".into()).unwrap().interval(), Interval::days(1));
    /// ```
    pub fn open(path: &Path, symbol: &str) -> Result<Self, DataError> {
        Self::open_with_interval(path, symbol, None)
    }

    /// [`open`](Self::open) with the candle interval given instead of inferred from the
    /// most common gap.
    pub fn open_with_interval(
        path: &Path,
        symbol: &str,
        interval: Option<super::Interval>,
    ) -> Result<Self, DataError> {
        let series = read_file(path, Name::new(symbol), interval)?;
        Ok(CsvExchange(MemoryExchange::new().with_series(series)))
    }

    /// CSV text held in memory (for example bundled with `include_str!`); `name` stands
    /// for the file in errors.
    ///
    /// ```
    /// use backtest_perf::engine::CsvExchange;
    /// let err = CsvExchange::from_text("mine.csv", ",Open,High,Low,Close\n", "X").unwrap_err();
    /// assert!(err.to_string().starts_with("mine.csv:1: missing column Volume"));
    /// ```
    pub fn from_text(name: &str, text: &str, symbol: &str) -> Result<Self, DataError> {
        let series = super::csv::read(Path::new(name), text.as_bytes(), Name::new(symbol), None)?;
        Ok(CsvExchange(MemoryExchange::new().with_series(series)))
    }
}

/// One symbol's seeded synthetic 1-minute candles (see [`crate::engine::synthetic`]).
///
/// ```
/// use backtest_perf::engine::{Exchange, SyntheticConfig, SyntheticExchange};
/// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig { seed: 7, ..SyntheticConfig::days(1) }).unwrap();
/// assert_eq!(ex.symbols(), ["SYN"]);
/// ```
#[derive(Clone, Debug)]
pub struct SyntheticExchange(MemoryExchange);

impl SyntheticExchange {
    /// Generates the candles of `symbol`; fails on bad parameters (see [`generate`]).
    ///
    /// ```
    /// use backtest_perf::engine::{Exchange, SyntheticConfig, SyntheticExchange};
    /// let ex = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
    /// assert_eq!(ex.series("SYN".into()).unwrap().candles().len(), 2 * 1_440);
    /// ```
    pub fn new(symbol: Name, config: SyntheticConfig) -> Result<Self, super::candle::CandleError> {
        Ok(SyntheticExchange(
            MemoryExchange::new().with_series(generate(symbol, &config)?),
        ))
    }
}

impl Exchange for CsvExchange {
    fn serves_untimed(&self) -> bool {
        true
    }
    fn series(&self, symbol: Name) -> Result<&CandleSeries, ExchangeError> {
        self.0.series(symbol)
    }
    fn symbols(&self) -> Vec<Name> {
        self.0.symbols()
    }
}

impl Exchange for SyntheticExchange {
    fn serves_untimed(&self) -> bool {
        true
    }
    fn series(&self, symbol: Name) -> Result<&CandleSeries, ExchangeError> {
        self.0.series(symbol)
    }
    fn symbols(&self) -> Vec<Name> {
        self.0.symbols()
    }
}
