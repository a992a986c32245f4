//! With the `profile` feature: a CPU profile of a run finds the function that burns the
//! CPU. One test in this file: one profiler per process.
#![cfg(feature = "profile")]

use backtest_perf::engine::{
    Backtest, Context, Signal, Strategy, StrategyError, SyntheticConfig, SyntheticExchange,
};
use backtest_perf::export::profile::CpuProfile;

/// Spins for about 200 µs of CPU: the deliberately slow part of the signal function.
#[inline(never)]
fn deliberately_slow_indicator(seed: u64) -> u64 {
    let started = std::time::Instant::now();
    let mut x = seed;
    while started.elapsed() < std::time::Duration::from_micros(200) {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    x
}

#[derive(Default)]
struct Slow {
    state: u64,
}

impl Strategy for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        self.state = deliberately_slow_indicator(self.state);
        Ok(None)
    }
}

#[test]
fn the_profile_names_the_slow_function() {
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
    let profile = CpuProfile::start(1_000).unwrap();
    // 2,880 calls of 200 µs: about 0.6 s of CPU, some 600 samples at 1 kHz.
    Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(backtest_perf::PerformanceEmitter::new())
        .run(&mut Slow::default())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = profile.finish(dir.path(), "slow").unwrap();
    let slow: u64 = report
        .functions
        .iter()
        .filter(|(name, _)| name.contains("deliberately_slow_indicator"))
        .map(|(_, n)| *n)
        .sum();
    assert!(slow > 0, "not in the profile: {:?}", report.top);
    assert!(
        slow * 2 > report.samples,
        "it holds most samples: {slow} of {}",
        report.samples
    );
    assert!(std::fs::metadata(&report.pprof).unwrap().len() > 0);
    let svg = std::fs::read_to_string(&report.svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("deliberately_slow_indicator"));
}
