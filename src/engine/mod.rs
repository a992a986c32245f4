//! The host engine: candles, exchanges, frames, signals, strategies and the runner. It
//! times five hooks onto the performance bus and uses only the plugin's public API.
//!
//! ```
//! use backtest_perf::engine::{Backtest, CsvExchange};
//! use backtest_perf::strategies::SmaCrossover;
//!
//! let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/EURUSD.csv");
//! let exchange = CsvExchange::open(&path, "EURUSD").unwrap();
//! let result = Backtest::new(&exchange, "EURUSD").unwrap().run(&mut SmaCrossover::default()).unwrap();
//! println!("{} signals, total PnL {:.2}%", result.summary.signals, result.summary.total_pnl);
//! ```

pub mod candle;
pub mod csv;
pub mod exchange;
pub mod frame;
pub mod parallel;
pub mod runner;
pub mod signal;
pub mod strategy;
pub(crate) mod stream;
pub mod synthetic;
pub mod timing;

pub use candle::{Candle, CandleError, CandleSeries, Interval, Millis};
pub use exchange::{CsvExchange, Exchange, ExchangeError, MemoryExchange, SyntheticExchange};
pub use frame::Frame;
pub use runner::{Backtest, BacktestConfig, BacktestError, BacktestResult, Progress, Summary};
pub use signal::{
    CancelledSignal, CloseReason, ClosedSignal, Costs, Position, RejectedSignal, Rejection, Signal,
    brackets, pnl_percent,
};
pub use strategy::{Context, Strategy, StrategyEntry, StrategyError, param, unknown_param, vwap};
pub use synthetic::SyntheticConfig;
