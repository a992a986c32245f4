//! Write your own strategy, backtest it on real data, watch its hooks, dump the report.
//!
//! ```sh
//! cargo run --release --example custom_strategy
//! ```

use std::path::Path;

use backtest_perf::engine::{Backtest, Context, CsvExchange, Signal, Strategy, StrategyError};
use backtest_perf::{MetricType, Performance, PerformanceContract, listen_performance};

/// Buys after a month that closed far below its open, betting on a rebound.
struct BuyTheDip {
    /// How far below its open a month must close, percent.
    drop_pct: f64,
}

impl Strategy for BuyTheDip {
    fn name(&self) -> &str {
        "my-strategy"
    }

    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let Some(last) = ctx.candles(1)?.last().copied() else {
            return Ok(None);
        };
        if last.close > last.open * (1.0 - self.drop_pct / 100.0) {
            return Ok(None);
        }
        // The position opens at the average price of the last months: bracket around it.
        // Take 30% profit or cut at 20% loss, within about two months.
        let Some(entry) = ctx.average_price()? else {
            return Ok(None);
        };
        Ok(Some(
            Signal::long(entry * 1.3, entry * 0.8).lifetime(60 * 24 * 62),
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/BTCUSD.csv");
    let exchange = CsvExchange::open(&data, "BTCUSDT")?;

    // Print every replay of an opened signal as it is timed.
    let replays = listen_performance(|e: &PerformanceContract| {
        if e.metric_type == MetricType::Backtest {
            let when = e
                .when
                .map(|w| w.format("%Y-%m").to_string())
                .unwrap_or_default();
            println!(
                "replayed the signal of {when} in {:.1} µs",
                e.duration * 1000.0
            );
        }
    });

    let result = Backtest::new(&exchange, "BTCUSDT")?.run(&mut BuyTheDip { drop_pct: 15.0 })?;
    replays.flush();

    for trade in &result.closed {
        println!(
            "{} -> {}: {:?} at {:.2}, {:+.1}%",
            trade.opened_at.format("%Y-%m"),
            trade.closed_at.format("%Y-%m"),
            trade.reason,
            trade.price_close,
            trade.pnl_percent
        );
    }
    let s = result.summary;
    println!(
        "{} trades, win rate {:.0}%, total PnL {:+.1}%",
        s.signals, s.win_rate, s.total_pnl
    );

    let path = Performance::dump("BTCUSDT", "my-strategy")?;
    println!("performance report: {}", path.display());
    Ok(())
}
