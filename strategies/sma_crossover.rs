//! SMA crossover: long when the fast average crosses above the slow one, short when it
//! crosses below.

use backtest_perf::engine::{brackets, param, unknown_param, Candle, Context, Signal, Strategy, StrategyError};


/// Trades the cross of two simple moving averages of the close.
///
/// ```
/// use backtest_perf::engine::{Backtest, Strategy, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::SmaCrossover;
/// let mut s = SmaCrossover::default(); // parameters are public fields
/// (s.fast, s.slow) = (5, 20);
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
/// let result = Backtest::new(&exchange, "SYN").unwrap().run(&mut s).unwrap();
/// assert_eq!((s.name(), result.strategy.as_str()), ("sma-crossover", "sma-crossover"));
/// ```
#[derive(Clone, Debug)]
pub struct SmaCrossover {
    /// Candles in the fast average.
    pub fast: usize,
    /// Candles in the slow average.
    pub slow: usize,
    /// Take profit, percent from the last close.
    pub take_profit_pct: f64,
    /// Stop loss, percent from the last close.
    pub stop_loss_pct: f64,
    /// Minutes a position may stay open.
    pub lifetime_minutes: u32,
    /// Open time of the last candle a signal was given on, so that stale data (a
    /// weekend) never signals twice.
    last_signal_candle: Option<i64>,
}

impl Default for SmaCrossover {
    fn default() -> Self {
        SmaCrossover {
            fast: 10,
            slow: 30,
            take_profit_pct: 1.0,
            stop_loss_pct: 0.5,
            lifetime_minutes: 1_440,
            last_signal_candle: None,
        }
    }
}

fn mean_close(candles: &[Candle]) -> f64 {
    candles.iter().map(|c| c.close).sum::<f64>() / candles.len() as f64
}

impl Strategy for SmaCrossover {
    fn name(&self) -> &str {
        "sma-crossover"
    }

    fn description(&self) -> &str {
        "long when the fast SMA crosses above the slow one, short when it crosses below"
    }

    fn set_param(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "fast" => param(&mut self.fast, name, value),
            "slow" => param(&mut self.slow, name, value),
            "take_profit_pct" => param(&mut self.take_profit_pct, name, value),
            "stop_loss_pct" => param(&mut self.stop_loss_pct, name, value),
            "lifetime_minutes" => param(&mut self.lifetime_minutes, name, value),
            _ => Err(unknown_param(self.name(), name, &self.params())),
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![("fast", self.fast.to_string()), ("slow", self.slow.to_string()), ("take_profit_pct", self.take_profit_pct.to_string()), ("stop_loss_pct", self.stop_loss_pct.to_string()), ("lifetime_minutes", self.lifetime_minutes.to_string())]
    }

    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let candles = ctx.candles(self.slow + 1)?;
        if candles.len() < self.slow + 1 || self.fast == 0 || self.fast >= self.slow {
            return Ok(None);
        }
        let (before, now) = (&candles[..self.slow], &candles[1..]);
        let fast_before = mean_close(&before[self.slow - self.fast..]);
        let fast_now = mean_close(&now[self.slow - self.fast..]);
        let (slow_before, slow_now) = (mean_close(before), mean_close(now));
        let last = candles[self.slow];
        let crossed_up = fast_before <= slow_before && fast_now > slow_now;
        let crossed_down = fast_before >= slow_before && fast_now < slow_now;
        if !(crossed_up || crossed_down) || self.last_signal_candle == Some(last.open_time) {
            return Ok(None);
        }
        self.last_signal_candle = Some(last.open_time);
        let (tp, sl) = brackets(crossed_up, last.close, self.take_profit_pct, self.stop_loss_pct);
        let signal = if crossed_up { Signal::long(tp, sl) } else { Signal::short(tp, sl) };
        Ok(Some(signal.lifetime(self.lifetime_minutes)))
    }
}
