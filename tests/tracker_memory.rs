//! Per-operation memory with the counting allocator installed, as a binary opts in.

use backtest_perf::tracker::memory::{counting, thread_counters};
use backtest_perf::tracker::{CountingAllocator, RunInfo, Tracker, TrackerOptions};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

#[test]
fn operations_report_what_their_thread_allocated_and_spikes_are_flagged() {
    let _warm = Box::new(0u64); // a heap allocation: the allocator has counted something
    assert!(counting());
    let options = TrackerOptions {
        track_memory: true,
        memory_threshold_bytes: 1 << 20,
        ..TrackerOptions::default()
    };
    let tracker = Tracker::new(RunInfo::named("memory"), options);
    let kept = tracker.measure("allocate-2mib", || vec![1u8; 2 << 20]);
    tracker.measure("allocate-and-free", || drop(vec![1u8; 4 << 20]));
    let report = tracker.finish().unwrap();

    let first = report.events[0].memory.expect("memory tracked");
    assert!(
        first.allocated >= 2 << 20 && first.allocated < (2 << 20) + 4096,
        "{first:?}"
    );
    assert!(first.net() >= 2 << 20);
    assert!(first.rss_bytes.unwrap() > 2 << 20);
    let second = report.events[1].memory.unwrap();
    assert!(
        second.allocated >= 4 << 20 && second.freed >= 4 << 20,
        "{second:?}"
    );
    assert!(second.net().abs() < 4096, "{second:?}");

    assert_eq!(report.memory_spikes.len(), 1);
    assert_eq!(report.memory_spikes[0].name, "allocate-2mib");
    assert!(report.total_memory_delta_bytes.is_some());
    drop(kept);
}

#[test]
fn a_disabled_tracker_allocates_nothing() {
    let _warm = Box::new(0u64);
    let tracker = Tracker::disabled();
    let before = thread_counters().unwrap();
    for _ in 0..1_000 {
        let span = tracker.start("nothing", None);
        span.end();
        tracker.track("mark", None);
        tracker.measure("closure", || ());
    }
    assert_eq!(thread_counters().unwrap(), before);
}

#[test]
fn recording_nested_operations_allocates_nothing_inside_their_parents() {
    let _warm = Box::new(0u64);
    let options = TrackerOptions {
        track_memory: true,
        keep_slowest_roots: Some(2),
        ..TrackerOptions::default()
    };
    let tracker = Tracker::new(RunInfo::named("roots"), options);
    for _ in 0..20 {
        let tick = tracker.start("tick", None);
        tracker.measure("outer", || tracker.measure("inner", || ()));
        tick.end();
    }
    let report = tracker.finish().unwrap();
    // The first tick (the warm-up) and the 2 slowest later ones are kept; whichever they
    // are, `outer` allocated nothing itself: recording `inner` inside it must not count.
    let outer: Vec<(u64, u64)> = report
        .events
        .iter()
        .filter(|e| e.name == "outer")
        .map(|e| {
            let m = e.memory.expect("memory tracked");
            (m.allocated, m.freed)
        })
        .collect();
    assert_eq!(outer, [(0, 0); 3]);
}

#[test]
fn a_tracked_backtest_allocates_nothing_inside_its_ticks_after_the_warm_ups() {
    use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
    use backtest_perf::strategies::SmaCrossover;
    use backtest_perf::{PerformanceEmitter, PerformanceService};

    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(30)).unwrap();
    let bus = PerformanceEmitter::new();
    let _service = PerformanceService::attached(&bus);
    let config = BacktestConfig {
        tracker: TrackerOptions {
            keep_slowest_roots: Some(20),
            track_memory: true,
            ..TrackerOptions::default()
        },
        ..BacktestConfig::default()
    };
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .with_config(config)
        .run(&mut SmaCrossover::default())
        .unwrap();
    assert!(
        result.closed.len() > 100,
        "signals were handled: {}",
        result.closed.len()
    );
    let report = result.tracker.unwrap();
    assert_eq!(report.slowest_roots.len(), 20);
    // The strategy allocates nothing, and neither may the engine inside a tick: not its
    // event buffer, not the growth of its results, not the tracker's own records (all of
    // them done before the run or between ticks). Whichever ticks were slowest, each
    // measured operation in them allocated nothing.
    let kept: Vec<(String, u64)> = report
        .events
        .iter()
        .filter(|e| !report.warm_ups.iter().any(|w| w.root == e.id))
        .filter_map(|e| e.memory.map(|m| (e.name.to_string(), m.allocated)))
        .collect();
    assert!(kept.iter().filter(|(name, _)| name == "tick").count() >= 20);
    assert!(
        kept.iter().all(|(_, allocated)| *allocated == 0),
        "{kept:?}"
    );
}

#[test]
fn a_backtest_with_tracking_off_allocates_no_event_buffer() {
    use backtest_perf::PerformanceEmitter;
    use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    use backtest_perf::strategies::SmaCrossover;

    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    let bus = PerformanceEmitter::new();
    let run = |enabled: bool| {
        bus.set_enabled(enabled);
        let backtest = Backtest::new(&exchange, "SYN")
            .unwrap()
            .with_bus(bus.clone());
        let mut strategy = SmaCrossover::default();
        let before = thread_counters().unwrap().0;
        let result = backtest.run(&mut strategy).unwrap();
        let allocated = thread_counters().unwrap().0 - before;
        (result.frames, allocated)
    };
    // The event buffer holds a batch of 1,024 events of 128 bytes and more: a run that
    // emits nothing must not make (and touch) one.
    let buffer = 1024 * std::mem::size_of::<backtest_perf::PerformanceContract>() as u64;
    let (frames, off) = run(false);
    assert!(frames > 400);
    assert!(off < buffer / 4, "tracking off allocated {off} bytes");
    let (_, on) = run(true);
    assert!(on >= buffer, "tracking on allocated {on} bytes");
}

/// The same with every operation kept (no `--timeline` selection): whatever the timing,
/// each tick after the first is checked. Every signal function is slow against its
/// threshold of 1 ns: keeping the list of slow hooks, which grows inside the tick, is
/// this crate's bookkeeping and not counted as the tick's memory. (A signal function
/// slowed by a busy machine once made this test fail that way.)
#[test]
fn every_tick_after_the_first_allocates_nothing_when_all_are_kept() {
    use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
    use backtest_perf::strategies::SmaCrossover;
    use backtest_perf::thresholds::Thresholds;
    use backtest_perf::{PerformanceEmitter, PerformanceService};

    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(30)).unwrap();
    let bus = PerformanceEmitter::new();
    let _service = PerformanceService::attached(&bus);
    let config = BacktestConfig {
        tracker: TrackerOptions {
            max_events: 1_000_000,
            track_memory: true,
            thresholds: Thresholds::default().with("getSignal", 1e-6).unwrap(),
            ..TrackerOptions::default()
        },
        ..BacktestConfig::default()
    };
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .with_config(config)
        .run(&mut SmaCrossover::default())
        .unwrap();
    assert!(result.closed.len() > 100, "{}", result.closed.len());
    let report = result.tracker.unwrap();
    assert_eq!(report.dropped, 0);
    assert_eq!(result.slow_hooks_total, report.stats["getSignal"].count);
    let first_tick = report.events.iter().position(|e| e.name == "tick").unwrap();
    let allocating: Vec<(usize, &str, u64)> = report
        .events
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != first_tick)
        .filter_map(|(i, e)| {
            e.memory
                .filter(|m| m.allocated > 0)
                .map(|m| (i, e.name.as_ref(), m.allocated))
        })
        .collect();
    assert_eq!(allocating, [], "of {} events", report.events.len());
}
