//! RSI mean reversion: after an oversold reading, wait to buy a little below the average
//! price; after an overbought one, wait to sell a little above it.

use backtest_perf::engine::{brackets, param, unknown_param, Context, Interval, Signal, Strategy, StrategyError};


/// Fades RSI extremes with a limit entry.
///
/// ```
/// use backtest_perf::engine::{Backtest, Strategy, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::RsiReversion;
/// let mut s = RsiReversion { oversold: 25.0, overbought: 75.0, ..RsiReversion::default() };
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
/// let result = Backtest::new(&exchange, "SYN").unwrap().run(&mut s).unwrap();
/// assert_eq!((s.name(), result.strategy.as_str()), ("rsi-reversion", "rsi-reversion"));
/// ```
#[derive(Clone, Debug)]
pub struct RsiReversion {
    /// Price changes in the RSI.
    pub period: usize,
    /// Long below this RSI.
    pub oversold: f64,
    /// Short above this RSI.
    pub overbought: f64,
    /// How far beyond the VWAP the entry waits, percent.
    pub entry_offset_pct: f64,
    /// Take profit, percent from the entry.
    pub take_profit_pct: f64,
    /// Stop loss, percent from the entry.
    pub stop_loss_pct: f64,
    /// How often to look, minutes.
    pub every_minutes: i64,
}

impl Default for RsiReversion {
    fn default() -> Self {
        RsiReversion {
            period: 14,
            oversold: 30.0,
            overbought: 70.0,
            entry_offset_pct: 0.05,
            take_profit_pct: 0.8,
            stop_loss_pct: 0.6,
            every_minutes: 15,
        }
    }
}

/// The RSI of the closes' changes: `100 - 100 / (1 + avg gain / avg loss)`; 100 with no
/// losses, 50 with no change at all.
pub fn rsi(closes: impl Iterator<Item = f64>) -> f64 {
    let (mut gain, mut loss, mut previous) = (0.0, 0.0, None);
    for close in closes {
        if let Some(p) = previous {
            let change: f64 = close - p;
            if change > 0.0 {
                gain += change;
            } else {
                loss -= change;
            }
        }
        previous = Some(close);
    }
    match (gain > 0.0, loss > 0.0) {
        (false, false) => 50.0,
        (_, false) => 100.0,
        _ => 100.0 - 100.0 / (1.0 + gain / loss),
    }
}

impl Strategy for RsiReversion {
    fn name(&self) -> &str {
        "rsi-reversion"
    }

    fn description(&self) -> &str {
        "limit entries against RSI extremes (oversold: buy lower, overbought: sell higher)"
    }

    fn set_param(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "period" => param(&mut self.period, name, value),
            "oversold" => param(&mut self.oversold, name, value),
            "overbought" => param(&mut self.overbought, name, value),
            "entry_offset_pct" => param(&mut self.entry_offset_pct, name, value),
            "take_profit_pct" => param(&mut self.take_profit_pct, name, value),
            "stop_loss_pct" => param(&mut self.stop_loss_pct, name, value),
            "every_minutes" => param(&mut self.every_minutes, name, value),
            _ => Err(unknown_param(self.name(), name, &self.params())),
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![("period", self.period.to_string()), ("oversold", self.oversold.to_string()), ("overbought", self.overbought.to_string()), ("entry_offset_pct", self.entry_offset_pct.to_string()), ("take_profit_pct", self.take_profit_pct.to_string()), ("stop_loss_pct", self.stop_loss_pct.to_string()), ("every_minutes", self.every_minutes.to_string())]
    }

    fn interval(&self) -> Interval {
        Interval::minutes(self.every_minutes)
    }

    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let candles = ctx.candles(self.period + 1)?;
        if candles.len() < self.period + 1 {
            return Ok(None);
        }
        let value = rsi(candles.iter().map(|c| c.close));
        let long = if value < self.oversold {
            true
        } else if value > self.overbought {
            false
        } else {
            return Ok(None);
        };
        let Some(average) = ctx.average_price()? else { return Ok(None) };
        let offset = self.entry_offset_pct / 100.0;
        let entry = if long { average * (1.0 - offset) } else { average * (1.0 + offset) };
        let (tp, sl) = brackets(long, entry, self.take_profit_pct, self.stop_loss_pct);
        let signal = if long { Signal::long(tp, sl) } else { Signal::short(tp, sl) };
        Ok(Some(signal.at(entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::rsi;

    #[test]
    fn rsi_by_hand() {
        // Changes +2, -1, +1: gains 3, losses 1: 100 - 100 / 4 = 75.
        assert_eq!(rsi([10.0, 12.0, 11.0, 12.0].into_iter()), 75.0);
        assert_eq!(rsi([1.0, 2.0, 3.0].into_iter()), 100.0);
        assert_eq!(rsi([3.0, 2.0, 1.0].into_iter()), 0.0);
        assert_eq!(rsi([5.0, 5.0].into_iter()), 50.0);
    }
}
