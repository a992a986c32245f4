//! Donchian breakout: long when the close breaks above the highest high of the channel,
//! short when it breaks below the lowest low.

use backtest_perf::engine::{brackets, param, unknown_param, Context, Signal, Strategy, StrategyError};


/// Trades breakouts of the prior `period` candles' range.
///
/// ```
/// use backtest_perf::engine::{Backtest, Strategy, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::DonchianBreakout;
/// let mut s = DonchianBreakout::default(); // parameters are public fields
/// s.period = 55;
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
/// let result = Backtest::new(&exchange, "SYN").unwrap().run(&mut s).unwrap();
/// assert_eq!((s.name(), result.strategy.as_str()), ("donchian-breakout", "donchian-breakout"));
/// ```
#[derive(Clone, Debug)]
pub struct DonchianBreakout {
    /// Candles in the channel (before the last one).
    pub period: usize,
    /// Take profit, percent from the last close.
    pub take_profit_pct: f64,
    /// Stop loss, percent from the last close.
    pub stop_loss_pct: f64,
    /// Minutes a position may stay open.
    pub lifetime_minutes: u32,
    last_signal_candle: Option<i64>,
}

impl Default for DonchianBreakout {
    fn default() -> Self {
        DonchianBreakout {
            period: 20,
            take_profit_pct: 1.5,
            stop_loss_pct: 0.75,
            lifetime_minutes: 720,
            last_signal_candle: None,
        }
    }
}

impl Strategy for DonchianBreakout {
    fn name(&self) -> &str {
        "donchian-breakout"
    }

    fn description(&self) -> &str {
        "long above the highest high of the channel, short below its lowest low"
    }

    fn set_param(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "period" => param(&mut self.period, name, value),
            "take_profit_pct" => param(&mut self.take_profit_pct, name, value),
            "stop_loss_pct" => param(&mut self.stop_loss_pct, name, value),
            "lifetime_minutes" => param(&mut self.lifetime_minutes, name, value),
            _ => Err(unknown_param(self.name(), name, &self.params())),
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![("period", self.period.to_string()), ("take_profit_pct", self.take_profit_pct.to_string()), ("stop_loss_pct", self.stop_loss_pct.to_string()), ("lifetime_minutes", self.lifetime_minutes.to_string())]
    }

    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let candles = ctx.candles(self.period + 1)?;
        let Some((last, channel)) = candles.split_last() else { return Ok(None) };
        if channel.len() < self.period || self.last_signal_candle == Some(last.open_time) {
            return Ok(None);
        }
        let high = channel.iter().map(|c| c.high).fold(f64::NEG_INFINITY, f64::max);
        let low = channel.iter().map(|c| c.low).fold(f64::INFINITY, f64::min);
        let long = if last.close > high {
            true
        } else if last.close < low {
            false
        } else {
            return Ok(None);
        };
        self.last_signal_candle = Some(last.open_time);
        let (tp, sl) = brackets(long, last.close, self.take_profit_pct, self.stop_loss_pct);
        let signal = if long { Signal::long(tp, sl) } else { Signal::short(tp, sl) };
        Ok(Some(signal.lifetime(self.lifetime_minutes)))
    }
}
