//! Your own strategy through the whole command line (progress bar, reports, exporters,
//! alerts, `--param`), without forking this crate: a `main` of a few lines.
//!
//! ```sh
//! cargo run --release --example own_cli -- backtest --strategy buy-the-dip --param drop_pct=8
//! cargo run --release --example own_cli -- backtest --help   # lists buy-the-dip beside the bundled ones
//! ```

use backtest_perf::engine::{
    Context, Signal, Strategy, StrategyError, brackets, param, unknown_param,
};

/// Buys after a candle that closed far below its open, betting on a rebound.
struct BuyTheDip {
    /// How far below its open a candle must close, percent.
    drop_pct: f64,
    /// Take profit, percent from the average price.
    take_profit_pct: f64,
    /// Stop loss, percent from the average price.
    stop_loss_pct: f64,
}

impl Default for BuyTheDip {
    fn default() -> Self {
        BuyTheDip {
            drop_pct: 0.3,
            take_profit_pct: 0.6,
            stop_loss_pct: 0.4,
        }
    }
}

impl Strategy for BuyTheDip {
    fn name(&self) -> &str {
        "buy-the-dip"
    }

    fn description(&self) -> &str {
        "long after a candle that closed far below its open"
    }

    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let Some(last) = ctx.candles(1)?.last().copied() else {
            return Ok(None);
        };
        if last.close > last.open * (1.0 - self.drop_pct / 100.0) {
            return Ok(None);
        }
        let Some(entry) = ctx.average_price()? else {
            return Ok(None);
        };
        let (take_profit, stop_loss) =
            brackets(true, entry, self.take_profit_pct, self.stop_loss_pct);
        Ok(Some(Signal::long(take_profit, stop_loss).lifetime(24 * 60)))
    }

    fn set_param(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "drop_pct" => param(&mut self.drop_pct, name, value),
            "take_profit_pct" => param(&mut self.take_profit_pct, name, value),
            "stop_loss_pct" => param(&mut self.stop_loss_pct, name, value),
            _ => Err(unknown_param(self.name(), name, &self.params())),
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("drop_pct", self.drop_pct.to_string()),
            ("take_profit_pct", self.take_profit_pct.to_string()),
            ("stop_loss_pct", self.stop_loss_pct.to_string()),
        ]
    }
}

fn main() -> std::process::ExitCode {
    backtest_perf::cli::Cli::default()
        .with_strategy::<BuyTheDip>()
        .run()
}
