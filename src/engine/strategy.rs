//! Strategies and what they see: the [`Strategy`] trait and its [`Context`].

use chrono::{DateTime, Utc};

use super::candle::{Candle, Interval, Millis, to_utc};
use super::exchange::ExchangeError;
use super::signal::Signal;
use super::stream::Source;
use super::timing::{Hook, HookTimer};
use crate::Name;
use crate::tracker::Tracker;

/// What a strategy's signal function may fail with: any error (`?` works on all of them).
///
/// ```
/// let err: backtest_perf::engine::StrategyError = "model not loaded".into();
/// assert_eq!(err.to_string(), "model not loaded");
/// ```
pub type StrategyError = Box<dyn std::error::Error + Send + Sync>;

/// A trading strategy: a name, a throttle interval, and a signal function.
///
/// ```
/// use backtest_perf::engine::{Context, Signal, Strategy, StrategyError};
///
/// /// Buys when the last close is above the one before.
/// struct Momentum;
///
/// impl Strategy for Momentum {
///     fn name(&self) -> &str {
///         "momentum"
///     }
///     fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
///         let candles = ctx.candles(2)?;
///         let [before, last] = candles else { return Ok(None) };
///         Ok((last.close > before.close).then(|| Signal::long(last.close * 1.01, last.close * 0.99)))
///     }
/// }
/// ```
pub trait Strategy: Send {
    /// The name under which its performance is stored and reported.
    fn name(&self) -> &str;

    /// One line on what it does (empty by default).
    ///
    /// ```
    /// # use backtest_perf::engine::Strategy;
    /// let sma = backtest_perf::strategies::SmaCrossover::default();
    /// assert!(sma.description().starts_with("long when the fast SMA"));
    /// ```
    fn description(&self) -> &str {
        ""
    }

    /// `get_signal` is called at most once per this interval (default: every frame of
    /// a 1-minute frame).
    ///
    /// ```
    /// # use backtest_perf::engine::{Interval, Strategy};
    /// assert_eq!(backtest_perf::strategies::RsiReversion::default().interval(), Interval::minutes(15));
    /// ```
    fn interval(&self) -> Interval {
        Interval::MINUTE
    }

    /// Looks at the market through `ctx` and maybe asks to open a position.
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError>;

    /// Sets parameter `name` from text (the command line's `--param fast=10`), so that
    /// parameters can be swept without recompiling. The default knows none; parse values
    /// with [`param`].
    ///
    /// ```
    /// use backtest_perf::engine::Strategy;
    /// let mut sma = backtest_perf::strategies::SmaCrossover::default();
    /// sma.set_param("fast", "5").unwrap();
    /// assert_eq!(sma.fast, 5);
    /// assert_eq!(sma.set_param("fast", "five").unwrap_err(), "fast: `five` is not a valid value (now 5)");
    /// assert!(sma.set_param("speed", "1").unwrap_err().starts_with("sma-crossover has no parameter `speed`"));
    /// ```
    fn set_param(&mut self, name: &str, _value: &str) -> Result<(), String> {
        Err(unknown_param(self.name(), name, &self.params()))
    }

    /// The parameters [`set_param`](Self::set_param) knows, with their current values.
    ///
    /// ```
    /// use backtest_perf::engine::Strategy;
    /// let sma = backtest_perf::strategies::SmaCrossover::default();
    /// assert_eq!(sma.params()[0], ("fast", "10".to_string()));
    /// ```
    fn params(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Parses a parameter's value for [`Strategy::set_param`] into `target`; the error names
/// the parameter, the text and the value it keeps.
///
/// ```
/// let mut fast = 10usize;
/// backtest_perf::engine::param(&mut fast, "fast", "12").unwrap();
/// assert_eq!(fast, 12);
/// assert!(backtest_perf::engine::param(&mut fast, "fast", "-1").is_err());
/// assert_eq!(fast, 12);
/// ```
pub fn param<T: std::str::FromStr + std::fmt::Display>(
    target: &mut T,
    name: &str,
    value: &str,
) -> Result<(), String> {
    match value.trim().parse::<T>() {
        Ok(parsed) => {
            *target = parsed;
            Ok(())
        }
        Err(_) => Err(format!(
            "{name}: `{value}` is not a valid value (now {target})"
        )),
    }
}

/// The error for a parameter a strategy does not have, listing those it has.
///
/// ```
/// let message = backtest_perf::engine::unknown_param("s", "x", &[("fast", "10".into())]);
/// assert_eq!(message, "s has no parameter `x`; its parameters: fast=10");
/// ```
pub fn unknown_param(strategy: &str, name: &str, params: &[(&'static str, String)]) -> String {
    if params.is_empty() {
        return format!("{strategy} has no parameter `{name}`; it takes none");
    }
    let known: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!(
        "{strategy} has no parameter `{name}`; its parameters: {}",
        known.join(", ")
    )
}

/// What a strategy sees at one frame time: only candles that closed by then.
///
/// ```
/// use backtest_perf::engine::{Context, Signal, Strategy, StrategyError};
/// struct Looker;
/// impl Strategy for Looker {
///     fn name(&self) -> &str { "looker" }
///     fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
///         let seen = ctx.candles(3)?;
///         assert!(seen.iter().all(|c| c.open_time + ctx.interval().millis() <= ctx.when_millis()));
///         Ok(None)
///     }
/// }
/// ```
pub struct Context<'r> {
    pub(crate) source: &'r Source<'r>,
    pub(crate) when: Millis,
    pub(crate) timer: &'r mut HookTimer,
    pub(crate) tracker: &'r Tracker,
    pub(crate) vwap_candles: usize,
}

impl<'r> Context<'r> {
    /// The simulated time (see the [`Strategy`] example for a whole signal function).
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     println!("{} at {} ({} ms), {} candles", ctx.symbol(), ctx.when(), ctx.when_millis(), ctx.interval());
    ///     Ok(None)
    /// }
    /// ```
    pub fn when(&self) -> DateTime<Utc> {
        to_utc(self.when)
    }

    /// The simulated time, epoch ms.
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     println!("{} at {} ({} ms), {} candles", ctx.symbol(), ctx.when(), ctx.when_millis(), ctx.interval());
    ///     Ok(None)
    /// }
    /// ```
    pub fn when_millis(&self) -> Millis {
        self.when
    }

    /// The symbol traded.
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     println!("{} at {} ({} ms), {} candles", ctx.symbol(), ctx.when(), ctx.when_millis(), ctx.interval());
    ///     Ok(None)
    /// }
    /// ```
    pub fn symbol(&self) -> Name {
        self.source.symbol()
    }

    /// The candle interval of the data.
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     println!("{} at {} ({} ms), {} candles", ctx.symbol(), ctx.when(), ctx.when_millis(), ctx.interval());
    ///     Ok(None)
    /// }
    /// ```
    pub fn interval(&self) -> Interval {
        self.source.interval()
    }

    /// The run's tracker: time your own steps with it, and they nest under the hook they
    /// run in (disabled unless the run's config enables it; then each call is one branch).
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     let candles = ctx.candles(200)?;
    ///     let mean = ctx.tracker().measure("mean-close", || candles.iter().map(|c| c.close).sum::<f64>() / 200.0);
    ///     Ok(None)
    /// }
    /// ```
    pub fn tracker(&self) -> &'r Tracker {
        self.tracker
    }

    /// The last `limit` closed candles, oldest first (fewer near the start of the data).
    /// Fetched from the exchange (in a [`Backtest::synthetic`](super::Backtest::synthetic)
    /// run, from the candles made so far) and timed as `getCandles`.
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     let candles = ctx.candles(20)?;
    ///     // Never a candle that closes after ctx.when(): no look-ahead.
    ///     assert!(candles.len() <= 20);
    ///     Ok(None)
    /// }
    /// ```
    pub fn candles(&mut self, limit: usize) -> Result<&'r [Candle], ExchangeError> {
        let started = self.timer.start_fetch(self.source);
        let candles = self.source.closed(self.when, limit);
        let _ = self.timer.finish(Hook::GetCandles, started, self.when);
        candles
    }

    /// The VWAP of the last closed candles (5 by default), timed as `getAveragePrice`;
    /// `None` before the first candle closed. Immediate signals open at this price.
    ///
    /// ```
    /// # use backtest_perf::engine::{Context, Signal, StrategyError};
    /// fn get_signal(ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
    ///     let Some(entry) = ctx.average_price()? else { return Ok(None) };
    ///     Ok(Some(Signal::long(entry * 1.02, entry * 0.99)))
    /// }
    /// ```
    pub fn average_price(&mut self) -> Result<Option<f64>, ExchangeError> {
        average_price(self.source, self.when, self.vwap_candles, self.timer)
    }
}

/// The VWAP of the last `n` candles closed by `when`, timed as `getAveragePrice`.
pub(crate) fn average_price(
    source: &Source<'_>,
    when: Millis,
    n: usize,
    timer: &mut HookTimer,
) -> Result<Option<f64>, ExchangeError> {
    let started = timer.start_fetch(source);
    let result = source.closed(when, n).map(vwap);
    let _ = timer.finish(Hook::GetAveragePrice, started, when);
    result
}

/// `sum(typical * volume) / sum(volume)`; the mean close when no volume traded; `None`
/// for no candles.
///
/// ```
/// use backtest_perf::engine::{vwap, Candle};
/// let c = |h: f64, l: f64, cl: f64, v: f64| Candle { open_time: 0, open: cl, high: h, low: l, close: cl, volume: v };
/// assert_eq!(vwap(&[c(12.0, 9.0, 9.0, 1.0), c(6.0, 3.0, 3.0, 3.0)]), Some((10.0 + 3.0 * 4.0) / 4.0));
/// assert_eq!(vwap(&[c(12.0, 9.0, 9.0, 0.0), c(6.0, 3.0, 3.0, 0.0)]), Some(6.0));
/// assert_eq!(vwap(&[]), None);
/// ```
pub fn vwap(candles: &[Candle]) -> Option<f64> {
    if candles.is_empty() {
        return None;
    }
    let volume: f64 = candles.iter().map(|c| c.volume).sum();
    if volume > 0.0 {
        Some(
            candles
                .iter()
                .map(|c| c.typical_price() * c.volume)
                .sum::<f64>()
                / volume,
        )
    } else {
        Some(candles.iter().map(|c| c.close).sum::<f64>() / candles.len() as f64)
    }
}

/// A registered strategy: its name, and a way to make one with its default parameters.
///
/// ```
/// let entries = backtest_perf::strategies::registry();
/// let sma = entries.iter().find(|e| e.name == "sma-crossover").unwrap();
/// assert_eq!((sma.build)().name(), "sma-crossover");
/// ```
#[derive(Clone)]
pub struct StrategyEntry {
    /// The strategy's name.
    pub name: String,
    /// One line on what it does.
    pub description: String,
    /// Makes a strategy with default parameters.
    pub build: fn() -> Box<dyn Strategy>,
}

impl StrategyEntry {
    /// The entry of a strategy type with default parameters.
    ///
    /// ```
    /// use backtest_perf::engine::StrategyEntry;
    /// use backtest_perf::strategies::SmaCrossover;
    /// let entry = StrategyEntry::of::<SmaCrossover>();
    /// assert_eq!(entry.name, "sma-crossover");
    /// assert_eq!((entry.build)().name(), "sma-crossover");
    /// ```
    pub fn of<S: Strategy + Default + 'static>() -> Self {
        let sample = S::default();
        StrategyEntry {
            name: sample.name().to_string(),
            description: sample.description().to_string(),
            build: || Box::new(S::default()),
        }
    }
}

impl std::fmt::Debug for StrategyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategyEntry")
            .field("name", &self.name)
            .finish()
    }
}
