//! The host engine: candles, exchanges, frames, signals, strategies and the runner. It
//! times five hooks onto the performance bus and uses only the plugin's public API.

pub mod candle;
pub mod csv;
pub mod exchange;
pub mod frame;
pub mod parallel;
pub mod runner;
pub mod signal;
pub mod strategy;
pub mod synthetic;
pub mod timing;

pub use candle::{Candle, CandleError, CandleSeries, Interval, Millis};
pub use exchange::{CsvExchange, Exchange, ExchangeError, MemoryExchange, SyntheticExchange};
pub use frame::Frame;
pub use runner::{Backtest, BacktestConfig, BacktestError, BacktestResult, Progress, Summary};
pub use signal::{
    CancelledSignal, CloseReason, ClosedSignal, Costs, Position, RejectedSignal, Rejection, Signal,
    pnl_percent,
};
pub use strategy::{Context, Strategy, StrategyEntry, StrategyError, vwap};
pub use synthetic::SyntheticConfig;
