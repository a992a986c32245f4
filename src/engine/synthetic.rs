//! Seeded synthetic 1-minute candles: geometric Brownian motion. The same seed gives the
//! same candles, on every machine.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::candle::{Candle, CandleError, CandleSeries, Interval, Millis};
use crate::Name;

const MINUTES_PER_YEAR: f64 = 525_600.0;

/// The generator's parameters.
///
/// ```
/// use backtest_perf::engine::synthetic::{generate, SyntheticConfig};
/// let a = generate("SYN".into(), &SyntheticConfig { minutes: 1_000, ..Default::default() }).unwrap();
/// let b = generate("SYN".into(), &SyntheticConfig { minutes: 1_000, ..Default::default() }).unwrap();
/// assert_eq!(a.candles(), b.candles());
/// assert_eq!(a.candles().len(), 1_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
    /// Open time of the first candle, epoch ms (default 2024-01-01T00:00:00Z).
    pub start: Millis,
    /// Number of 1-minute candles.
    pub minutes: usize,
    /// First open price.
    pub start_price: f64,
    /// Yearly drift of the log price.
    pub drift: f64,
    /// Yearly volatility of the log price.
    pub volatility: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 42,
            start: 1_704_067_200_000,
            minutes: 1_440,
            start_price: 100.0,
            drift: 0.05,
            volatility: 0.6,
        }
    }
}

impl SyntheticConfig {
    /// `days` days of candles, other parameters default.
    ///
    /// ```
    /// # use backtest_perf::engine::SyntheticConfig;
    /// assert_eq!(SyntheticConfig::days(365).minutes, 525_600);
    /// ```
    pub fn days(days: usize) -> Self {
        SyntheticConfig {
            minutes: days * 1_440,
            ..Default::default()
        }
    }
}

/// Generates the candles. Each close follows the open by one GBM step; high and low
/// reach beyond them by half-normal excursions; volume is log-normal.
///
/// Fails, naming the parameter, for no minutes, a start price that is not a finite
/// number above zero, a drift that is not finite, a volatility that is not finite and
/// >= 0, or a path whose prices overflow.
///
/// ```
/// use backtest_perf::engine::synthetic::{generate, SyntheticConfig};
/// let series = generate("SYN".into(), &SyntheticConfig::days(1)).unwrap();
/// assert_eq!(series.candles().len(), 1_440);
/// assert!(generate("SYN".into(), &SyntheticConfig { volatility: -1.0, ..SyntheticConfig::days(1) }).is_err());
/// ```
pub fn generate(symbol: Name, config: &SyntheticConfig) -> Result<CandleSeries, CandleError> {
    let candles = SyntheticCandles::new(config)?.collect();
    CandleSeries::new(symbol, candles, Some(Interval::MINUTE))
}

/// The candles of [`generate`] one at a time, oldest first, none kept: a run over years
/// of minutes holds only the ones it still needs (see
/// [`Backtest::synthetic`](crate::engine::Backtest::synthetic)). The same config gives
/// the same candles as [`generate`].
///
/// ```
/// use backtest_perf::engine::synthetic::{generate, SyntheticCandles, SyntheticConfig};
/// let config = SyntheticConfig::days(1);
/// let streamed: Vec<_> = SyntheticCandles::new(&config).unwrap().collect();
/// assert_eq!(streamed, generate("SYN".into(), &config).unwrap().candles());
/// assert!(SyntheticCandles::new(&SyntheticConfig { minutes: 0, ..config }).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct SyntheticCandles {
    rng: rand_chacha::ChaCha8Rng,
    start: Millis,
    minutes: usize,
    next: usize,
    price: f64,
    step: f64,
    mean: f64,
}

impl SyntheticCandles {
    /// Checks the parameters (as [`generate`] does) and starts the path.
    pub fn new(config: &SyntheticConfig) -> Result<Self, CandleError> {
        let bad = |problem: String| CandleError { index: 0, problem };
        if config.minutes == 0 {
            return Err(bad("minutes is 0; generate at least two candles".into()));
        }
        if !(config.start_price.is_finite() && config.start_price > 0.0) {
            return Err(bad(format!(
                "start_price is {}; it must be a finite number above 0",
                config.start_price
            )));
        }
        if !config.drift.is_finite() {
            return Err(bad(format!("drift is {}; it must be finite", config.drift)));
        }
        if !(config.volatility.is_finite() && config.volatility >= 0.0) {
            return Err(bad(format!(
                "volatility is {}; it must be finite and >= 0",
                config.volatility
            )));
        }
        let last_close = i64::try_from(config.minutes)
            .ok()
            .and_then(|m| m.checked_mul(Interval::MINUTE.millis()))
            .and_then(|span| config.start.checked_add(span));
        if last_close.is_none() {
            return Err(bad(format!(
                "{} minutes from {} run past the last time epoch milliseconds hold; generate fewer",
                config.minutes, config.start
            )));
        }
        let dt = 1.0 / MINUTES_PER_YEAR;
        Ok(SyntheticCandles {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(config.seed),
            start: config.start,
            minutes: config.minutes,
            next: 0,
            price: config.start_price,
            step: config.volatility * dt.sqrt(),
            mean: (config.drift - config.volatility * config.volatility / 2.0) * dt,
        })
    }
}

impl Iterator for SyntheticCandles {
    type Item = Candle;

    fn next(&mut self) -> Option<Candle> {
        if self.next >= self.minutes {
            return None;
        }
        let mut normal = || -> f64 { StandardNormal.sample(&mut self.rng) };
        let open = self.price;
        let close = open * (self.mean + self.step * normal()).exp();
        let high = open.max(close) * (0.5 * self.step * normal().abs()).exp();
        let low = open.min(close) * (-0.5 * self.step * normal().abs()).exp();
        let volume = (2.0 + 0.5 * normal()).exp();
        self.price = close;
        let i = self.next as Millis;
        self.next += 1;
        Some(Candle {
            open_time: self.start + i * Interval::MINUTE.millis(),
            open,
            high,
            low,
            close,
            volume,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.minutes - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for SyntheticCandles {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decide_the_path() {
        let config = SyntheticConfig {
            minutes: 500,
            ..Default::default()
        };
        let a = generate(Name::new("S"), &config).unwrap();
        let b = generate(Name::new("S"), &SyntheticConfig { seed: 7, ..config }).unwrap();
        assert_ne!(a.candles(), b.candles());
        assert_eq!(a.candles()[0].open, 100.0);
        assert_eq!(a.candles()[1].open, a.candles()[0].close);
        assert_eq!(
            a.candles()[499].open_time - a.candles()[0].open_time,
            499 * 60_000
        );
    }
}
