//! The bundled strategies, written the way a user writes one: each file holds a type that
//! implements [`Strategy`](backtest_perf::engine::Strategy) and `Default` (its default
//! parameters), using only the crate's public API.
//!
//! To add a strategy: put `my_strategy.rs` in this folder and add one line
//! `my_strategy::MyStrategy,` to the list below. The command line then knows it by the
//! name its `name()` returns. Document the type and its public fields (`///` lines):
//! the crate denies missing docs. A strategy in a crate of your own needs none of this:
//! see `backtest_perf::cli::Cli::with_strategy`.

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
