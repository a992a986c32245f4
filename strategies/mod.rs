//! The bundled strategies, written the way a user writes one: each file holds a type that
//! implements [`Strategy`](backtest_perf::engine::Strategy) and `Default` (its default
//! parameters), using only the crate's public API.
//!
//! To add a strategy: put `my_strategy.rs` in this folder and add one line
//! `my_strategy::MyStrategy,` to the list below. The command line then knows it by the
//! name its `name()` returns.

use backtest_perf::engine::StrategyEntry;

macro_rules! register {
    ($($module:ident :: $strategy:ident),* $(,)?) => {
        $(
            mod $module;
            pub use $module::$strategy;
        )*

        /// Every bundled strategy, with default parameters, in the order listed.
        ///
        /// ```
        /// let names: Vec<String> = backtest_perf::strategies::registry().into_iter().map(|e| e.name).collect();
                /// assert_eq!(names[..3], ["sma-crossover", "rsi-reversion", "donchian-breakout"]);
        /// ```
        pub fn registry() -> Vec<StrategyEntry> {
            vec![$(StrategyEntry::of::<$strategy>()),*]
        }
    };
}

register! {
    sma_crossover::SmaCrossover,
    rsi_reversion::RsiReversion,
    donchian_breakout::DonchianBreakout,
}

/// The take profit and stop loss `tp_pct` / `sl_pct` percent away from `price`.
pub(crate) fn brackets(long: bool, price: f64, tp_pct: f64, sl_pct: f64) -> (f64, f64) {
    let (up, down) = (1.0 + tp_pct / 100.0, 1.0 - sl_pct / 100.0);
    if long {
        (price * up, price * down)
    } else {
        (price * (2.0 - up), price * (2.0 - down))
    }
}
