//! Signals: what a strategy asks for, how it is checked, and how a closed one is scored.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Long or short; serialized in lowercase.
///
/// ```
/// # use backtest_perf::engine::Position;
/// assert_eq!(serde_json::to_string(&Position::Short).unwrap(), "\"short\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// Profits when the price rises.
    Long,
    /// Profits when the price falls.
    Short,
}

/// Default lifetime of a signal, minutes.
///
/// ```
/// use backtest_perf::engine::{signal::DEFAULT_LIFETIME_MINUTES, Signal};
/// assert_eq!(Signal::long(2.0, 1.0).lifetime_minutes, DEFAULT_LIFETIME_MINUTES);
/// ```
pub const DEFAULT_LIFETIME_MINUTES: u32 = 1_440;

/// A strategy's request to open a position.
///
/// Without an entry price it opens at once at the VWAP of the last closed candles; with
/// one, it waits (at most 120 minutes by default) for the price to touch it.
///
/// ```
/// use backtest_perf::engine::{Position, Signal};
/// let s = Signal::long(110.0, 95.0).at(100.0).lifetime(60);
/// assert_eq!((s.position, s.price_open, s.lifetime_minutes), (Position::Long, Some(100.0), 60));
/// assert!(s.check(100.0).is_ok());
/// assert_eq!(
///     Signal::short(110.0, 95.0).check(100.0).unwrap_err().to_string(),
///     "short needs stop loss > entry > take profit; got stop loss 95, entry 100, take profit 110"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// Long or short.
    pub position: Position,
    /// Entry price; `None` opens at once at the VWAP.
    pub price_open: Option<f64>,
    /// Closes with a profit here.
    pub take_profit: f64,
    /// Closes with a loss here.
    pub stop_loss: f64,
    /// Minutes the position may stay open.
    pub lifetime_minutes: u32,
}

impl Signal {
    /// A long signal, opening at once (at the VWAP).
    ///
    /// ```
    /// # use backtest_perf::engine::{Position, Signal};
    /// let s = Signal::long(110.0, 95.0);
    /// assert_eq!((s.position, s.price_open, s.lifetime_minutes), (Position::Long, None, 1_440));
    /// ```
    pub fn long(take_profit: f64, stop_loss: f64) -> Self {
        Self::new(Position::Long, take_profit, stop_loss)
    }

    /// A short signal, opening at once (at the VWAP).
    ///
    /// ```
    /// # use backtest_perf::engine::{Position, Signal};
    /// assert!(Signal::short(90.0, 105.0).check(100.0).is_ok());
    /// ```
    pub fn short(take_profit: f64, stop_loss: f64) -> Self {
        Self::new(Position::Short, take_profit, stop_loss)
    }

    fn new(position: Position, take_profit: f64, stop_loss: f64) -> Self {
        Signal {
            position,
            price_open: None,
            take_profit,
            stop_loss,
            lifetime_minutes: DEFAULT_LIFETIME_MINUTES,
        }
    }

    /// Waits (at most 120 minutes by default) for the price to touch `price`.
    ///
    /// ```
    /// # use backtest_perf::engine::Signal;
    /// assert_eq!(Signal::long(110.0, 95.0).at(99.0).price_open, Some(99.0));
    /// ```
    pub fn at(mut self, price: f64) -> Self {
        self.price_open = Some(price);
        self
    }

    /// Sets the lifetime in minutes.
    ///
    /// ```
    /// # use backtest_perf::engine::Signal;
    /// assert_eq!(Signal::long(110.0, 95.0).lifetime(60).lifetime_minutes, 60);
    /// ```
    pub fn lifetime(mut self, minutes: u32) -> Self {
        self.lifetime_minutes = minutes;
        self
    }

    /// Checks the signal for an entry at `entry`.
    ///
    /// ```
    /// # use backtest_perf::engine::{Rejection, Signal};
    /// assert_eq!(Signal::long(110.0, 95.0).lifetime(0).check(100.0), Err(Rejection::NoLifetime));
    /// ```
    pub fn check(&self, entry: f64) -> Result<(), Rejection> {
        for (field, value) in [
            ("entry", entry),
            ("take profit", self.take_profit),
            ("stop loss", self.stop_loss),
        ] {
            if !value.is_finite() || value <= 0.0 {
                return Err(Rejection::Price { field, value });
            }
        }
        if self.lifetime_minutes == 0 {
            return Err(Rejection::NoLifetime);
        }
        let (tp, sl) = (self.take_profit, self.stop_loss);
        match self.position {
            Position::Long if !(tp > entry && entry > sl) => Err(Rejection::LongOrder {
                take_profit: tp,
                entry,
                stop_loss: sl,
            }),
            Position::Short if !(sl > entry && entry > tp) => Err(Rejection::ShortOrder {
                take_profit: tp,
                entry,
                stop_loss: sl,
            }),
            _ => Ok(()),
        }
    }
}

/// Why a signal was not opened.
///
/// ```
/// # use backtest_perf::engine::Rejection;
/// assert_eq!(Rejection::NoPrice.to_string(), "no closed candle yet to price the entry at the VWAP");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Rejection {
    /// A price was not a finite number above zero.
    #[error("{field} is {value}; prices must be finite and > 0")]
    Price {
        /// Which price.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A zero lifetime could never be replayed.
    #[error("lifetime is 0 minutes; give the signal at least one minute")]
    NoLifetime,
    /// A long signal's prices were out of order.
    #[error(
        "long needs take profit > entry > stop loss; got take profit {take_profit}, entry {entry}, stop loss {stop_loss}"
    )]
    LongOrder {
        /// Take profit.
        take_profit: f64,
        /// Entry.
        entry: f64,
        /// Stop loss.
        stop_loss: f64,
    },
    /// A short signal's prices were out of order.
    #[error(
        "short needs stop loss > entry > take profit; got stop loss {stop_loss}, entry {entry}, take profit {take_profit}"
    )]
    ShortOrder {
        /// Take profit.
        take_profit: f64,
        /// Entry.
        entry: f64,
        /// Stop loss.
        stop_loss: f64,
    },
    /// There was no closed candle to price an immediate entry with.
    #[error("no closed candle yet to price the entry at the VWAP")]
    NoPrice,
    /// No candle opens at or after the signal's time (it came at the last frame): there
    /// is nothing to replay it over.
    #[error("no candle after the signal to replay it over (signalled at the last frame)")]
    NoLaterCandle,
}

/// Why a position closed; serialized in snake case.
///
/// ```
/// # use backtest_perf::engine::CloseReason;
/// assert_eq!(serde_json::to_string(&CloseReason::TimeExpired).unwrap(), "\"time_expired\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The take profit was touched.
    TakeProfit,
    /// The stop loss was touched (also when one candle touched both).
    StopLoss,
    /// The lifetime ended; closed at the last close.
    TimeExpired,
    /// The data ended first; closed at the last close.
    EndOfData,
}

/// Trading costs per side, as fractions (0.001 = 0.1%).
///
/// ```
/// # use backtest_perf::engine::Costs;
/// assert_eq!(Costs::default(), Costs { fee: 0.001, slippage: 0.001 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Costs {
    /// Fee per side.
    pub fee: f64,
    /// Slippage per side.
    pub slippage: f64,
}

impl Default for Costs {
    fn default() -> Self {
        Costs {
            fee: 0.001,
            slippage: 0.001,
        }
    }
}

/// PnL in percent of a position opened at `open` and closed at `close`, after slippage on
/// both prices and a fee on each side.
///
/// ```
/// use backtest_perf::engine::{pnl_percent, Costs, Position};
/// let free = Costs { fee: 0.0, slippage: 0.0 };
/// assert_eq!(pnl_percent(Position::Long, 100.0, 110.0, free), 10.0);
/// assert_eq!(pnl_percent(Position::Short, 100.0, 90.0, free), 10.0);
/// ```
pub fn pnl_percent(position: Position, open: f64, close: f64, costs: Costs) -> f64 {
    let fees = 2.0 * costs.fee * 100.0;
    match position {
        Position::Long => {
            let entry = open * (1.0 + costs.slippage);
            let exit = close * (1.0 - costs.slippage);
            (exit - entry) / entry * 100.0 - fees
        }
        Position::Short => {
            let entry = open * (1.0 - costs.slippage);
            let exit = close * (1.0 + costs.slippage);
            (entry - exit) / entry * 100.0 - fees
        }
    }
}

/// A position that opened and closed.
///
/// ```
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::RsiReversion;
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(3)).unwrap();
/// let r = Backtest::new(&exchange, "SYN").unwrap().run(&mut RsiReversion::default()).unwrap();
/// for c in &r.closed {
///     assert!(c.signalled_at <= c.opened_at && c.opened_at <= c.closed_at);
/// }
/// assert!(r.cancelled.iter().all(|c| (c.cancelled_at - c.at).num_minutes() == 120));
/// assert!(r.rejected.iter().all(|x| !x.reason.to_string().is_empty()));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedSignal {
    /// The signal as the strategy gave it.
    pub signal: Signal,
    /// When the strategy gave it.
    pub signalled_at: DateTime<Utc>,
    /// When the position opened.
    pub opened_at: DateTime<Utc>,
    /// When it closed.
    pub closed_at: DateTime<Utc>,
    /// Entry price before slippage.
    pub price_open: f64,
    /// Exit price before slippage.
    pub price_close: f64,
    /// Why it closed.
    pub reason: CloseReason,
    /// PnL in percent after costs.
    pub pnl_percent: f64,
}

/// A signal that failed its check; the run went on (see [`ClosedSignal`] for a run).
///
/// ```
/// use backtest_perf::engine::{Rejection, RejectedSignal, Signal};
/// let r = RejectedSignal { signal: Signal::long(1.0, 2.0), at: backtest_perf::engine::candle::to_utc(0), reason: Rejection::NoPrice };
/// assert_eq!(serde_json::to_value(&r).unwrap()["reason"]["kind"], "noPrice");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedSignal {
    /// The signal.
    pub signal: Signal,
    /// When the strategy gave it.
    pub at: DateTime<Utc>,
    /// Why it was rejected.
    pub reason: Rejection,
}

/// A waiting signal whose entry price was not touched in time.
///
/// ```
/// use backtest_perf::engine::{CancelledSignal, Signal, candle::to_utc};
/// let c = CancelledSignal { signal: Signal::long(2.0, 1.0).at(1.5), at: to_utc(0), cancelled_at: to_utc(120 * 60_000) };
/// assert_eq!((c.cancelled_at - c.at).num_minutes(), 120);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelledSignal {
    /// The signal.
    pub signal: Signal,
    /// When the strategy gave it.
    pub at: DateTime<Utc>,
    /// When the wait ended.
    pub cancelled_at: DateTime<Utc>,
}

/// The take profit and stop loss `tp_pct` and `sl_pct` percent away from `price`, for a
/// long position (`long`) or a short one.
///
/// ```
/// use backtest_perf::engine::brackets;
/// assert_eq!(brackets(true, 100.0, 2.0, 1.0), (102.0, 99.0));
/// assert_eq!(brackets(false, 100.0, 2.0, 1.0), (98.0, 101.0));
/// ```
pub fn brackets(long: bool, price: f64, tp_pct: f64, sl_pct: f64) -> (f64, f64) {
    let (up, down) = (1.0 + tp_pct / 100.0, 1.0 - sl_pct / 100.0);
    if long {
        (price * up, price * down)
    } else {
        (price * (2.0 - up), price * (2.0 - down))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pnl_with_fees_and_slippage_by_hand() {
        let costs = Costs::default();
        // Long 100 -> 110: entry 100.1, exit 109.89, (9.79 / 100.1) * 100 - 0.2
        let long = pnl_percent(Position::Long, 100.0, 110.0, costs);
        assert!(
            (long - (9.79 / 100.1 * 100.0 - 0.2)).abs() < 1e-12,
            "{long}"
        );
        assert_eq!(format!("{long:.6}"), "9.580220");
        // Short 100 -> 90: entry 99.9, exit 90.09, (9.81 / 99.9) * 100 - 0.2
        let short = pnl_percent(Position::Short, 100.0, 90.0, costs);
        assert!(
            (short - (9.81 / 99.9 * 100.0 - 0.2)).abs() < 1e-12,
            "{short}"
        );
        assert_eq!(format!("{short:.6}"), "9.619820");
        // Flat: costs only.
        let flat = pnl_percent(Position::Long, 100.0, 100.0, costs);
        assert_eq!(format!("{flat:.6}"), "-0.399800");
    }

    #[test]
    fn checks_each_rule() {
        assert_eq!(
            Signal::long(110.0, 90.0)
                .check(f64::NAN)
                .unwrap_err()
                .to_string(),
            "entry is NaN; prices must be finite and > 0"
        );
        assert_eq!(
            Signal::long(110.0, 0.0)
                .check(100.0)
                .unwrap_err()
                .to_string(),
            "stop loss is 0; prices must be finite and > 0"
        );
        assert_eq!(
            Signal::long(110.0, 90.0).lifetime(0).check(100.0),
            Err(Rejection::NoLifetime)
        );
        assert_eq!(
            Signal::long(100.0, 90.0)
                .check(100.0)
                .unwrap_err()
                .to_string(),
            "long needs take profit > entry > stop loss; got take profit 100, entry 100, stop loss 90"
        );
        assert!(Signal::short(90.0, 110.0).check(100.0).is_ok());
    }
}
