//! With the `profile` feature: a CPU profile of a run finds the function that burns the
//! CPU. One test in this file: one profiler per process.
#![cfg(feature = "profile")]

use backtest_perf::engine::{
    Backtest, BacktestConfig, Context, Signal, Strategy, StrategyError, SyntheticConfig,
    SyntheticExchange,
};
use backtest_perf::export::profile::CpuProfile;
use backtest_perf::thresholds::Thresholds;
use backtest_perf::tracker::TrackerOptions;

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

/// Sample signals each stall raises itself.
const STALL_SIGNALS: u32 = 8;

/// A rare stall: 8 rounds of a 1 ms spin, each ending with a SIGPROF the stall raises
/// itself, as the profiler's timer would. The timer's own samples depend on how the
/// scheduler shares a loaded machine's CPU; these do not, so the stall holds at least
/// [`STALL_SIGNALS`] samples however loaded the machine is. It takes over 8 ms: slow for
/// getSignal's 5 ms threshold.
#[inline(never)]
fn rare_stall(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..STALL_SIGNALS {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(1) {
            for _ in 0..1_000 {
                x = std::hint::black_box(x.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(3));
            }
        }
        // SAFETY: raising a signal on this thread; the profiler handles SIGPROF.
        assert_eq!(unsafe { libc::raise(libc::SIGPROF) }, 0);
    }
    x
}

#[derive(Default)]
struct Slow {
    state: u64,
    calls: u64,
}

impl Strategy for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        self.state = deliberately_slow_indicator(self.state);
        self.calls += 1;
        if self.calls.is_multiple_of(1_000) {
            // A step of the strategy's own, timed by the run's tracker.
            let state = self.state;
            self.state = ctx.tracker().measure("stall", || rare_stall(state));
        }
        Ok(None)
    }
}

#[test]
fn the_profile_names_the_slow_function() {
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
    let profile = CpuProfile::start(1_000).unwrap();
    assert_eq!(profile.links_slow_hooks(), Ok(()));
    // 2,880 calls of 200 µs: about 0.6 s of CPU, some 600 samples at 1 kHz; and two
    // stalls of 8 ms (calls 1,000 and 2,000), each a slow getSignal (over 5 ms).
    // The run's tracker records, and judges the strategy's "stall" step slow over 5 ms.
    let thresholds = Thresholds::default().with("stall", 5.0).unwrap();
    let config = BacktestConfig {
        tracker: TrackerOptions {
            thresholds,
            ..TrackerOptions::default()
        },
        ..BacktestConfig::default()
    };
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(backtest_perf::PerformanceEmitter::new())
        .with_config(config)
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

    // Each stall is a slow getSignal, and its samples are those taken while it ran:
    // the stall on top, not the indicator that holds most of the run's samples. (Its
    // tick is slow too and holds the same samples.)
    // (A pre-empted call of the indicator may be slow too: only the stalls' are
    // checked.)
    let stalls: Vec<_> = result
        .slow_hooks
        .iter()
        .filter(|s| s.metric_type.as_str() == "getSignal")
        .filter(|s| {
            let when = s.when.to_rfc3339();
            when == "2024-01-01T16:40:00+00:00" || when == "2024-01-02T09:20:00+00:00"
        })
        .collect();
    assert_eq!(stalls.len(), 2, "{:?}", result.slow_hooks);
    for stall in stalls {
        let profile = stall.profile.as_ref().expect("a profile ran");
        assert!(profile.samples >= STALL_SIGNALS, "{profile:?}");
        assert!(!profile.truncated);
        assert!(
            profile.on_cpu[0].function.contains("rare_stall"),
            "{profile:?}"
        );
        assert!(
            !profile.stack.contains("deliberately_slow_indicator"),
            "{profile:?}"
        );
        // Outermost first: the hook, then the stall (an inlined function's name comes
        // without its path in a release build's line tables).
        let frames: Vec<&str> = profile.stack.split(';').collect();
        let hook = frames.iter().position(|f| f.ends_with("get_signal"));
        let stall = frames.iter().position(|f| f.ends_with("rare_stall"));
        assert!(
            matches!((hook, stall), (Some(h), Some(s)) if h < s),
            "{profile:?}"
        );
    }

    // The step itself, as the run's tracker lists it: the same samples, named the same.
    let tracker = result.tracker.as_ref().expect("the tracker recorded");
    let steps: Vec<_> = tracker
        .slow_events
        .iter()
        .filter(|s| s.name == "stall")
        .collect();
    assert_eq!(steps.len(), 2, "{:?}", tracker.slow_events);
    for step in steps {
        let profile = step.profile.as_ref().expect("a profile ran");
        assert!(profile.samples >= STALL_SIGNALS, "{profile:?}");
        assert!(
            profile.on_cpu[0].function.contains("rare_stall"),
            "{profile:?}"
        );
    }
    let timeline = backtest_perf::tracker::timeline::render(
        tracker,
        backtest_perf::tracker::timeline::TimelineStyle::default(),
    );
    assert!(
        timeline.contains("CPU profile while it ran: "),
        "{timeline}"
    );
}
