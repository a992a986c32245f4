//! The run tracker: operations, nesting, self time, thresholds, cap, sampling, report and
//! timeline (snapshots on a hand-driven clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backtest_perf::thresholds::Thresholds;
use backtest_perf::tracker::timeline::{TimelineStyle, render};
use backtest_perf::tracker::{
    EventKind, ManualClock, RunInfo, Tracker, TrackerOptions, TrackerReport,
};
use serde_json::json;

fn run() -> RunInfo {
    RunInfo {
        id: "demo".into(),
        symbol: Some("BTCUSDT".into()),
        strategy: Some("my-strategy".into()),
        ..Default::default()
    }
}

fn options() -> TrackerOptions {
    TrackerOptions {
        thresholds: Thresholds::default().with("getCandles", 0.25).unwrap(),
        ..TrackerOptions::default()
    }
}

/// tick(4 ms) > getSignal(2.75 ms) > getCandles(0.5 ms, slow against 0.25 ms), and a mark.
fn scripted() -> TrackerReport {
    let clock = Arc::new(ManualClock::default());
    let tracker = Tracker::with_clock(run(), options(), clock.clone());
    tracker.track("run-start", None);
    let tick = tracker.start("tick", Some(json!({"frame": 1})));
    clock.advance_ms(1.0);
    let signal = tracker.start("getSignal", None);
    clock.advance_ms(2.0);
    let candles = tracker.start("getCandles", Some(json!({"limit": 31})));
    clock.advance_ms(0.5);
    candles.end();
    clock.advance_ms(0.25);
    signal.end();
    clock.advance_ms(0.25);
    tick.end_with(json!({"signal": false}));
    clock.advance_ms(1.0);
    tracker.finish().unwrap()
}

const PLAIN: &str = "\
════════════════════════════════════════════════════════════════
Performance timeline: demo (BTCUSDT · my-strategy)
════════════════════════════════════════════════════════════════
Total duration: 5.00 ms
Memory delta:   not tracked
Events:         4
⚠ Slow events:  1
▲ Memory spikes: 0
────────────────────────────────────────────────────────────────
• run-start [@0 ns]
tick 4.00 ms [@0 ns] self 1.25 ms
    duration: 4.0
    frame: 1
    signal: false
  getSignal 2.75 ms [@1.00 ms] self 2.25 ms
    getCandles 500 µs [@3.00 ms] ⚠ slow 2.0x
        duration: 0.5
        limit: 31
";

#[test]
fn timeline_snapshot_plain() {
    let style = TimelineStyle {
        color: false,
        metadata: true,
        root: None,
    };
    assert_eq!(render(&scripted(), style), PLAIN);
}

#[test]
fn timeline_snapshot_without_metadata_and_for_one_subtree() {
    let report = scripted();
    let signal = report
        .events
        .iter()
        .find(|e| e.name == "getSignal")
        .unwrap()
        .id;
    let style = TimelineStyle {
        color: false,
        metadata: false,
        root: Some(signal),
    };
    let text = render(&report, style);
    let body: Vec<&str> = text.lines().skip(3).collect();
    assert_eq!(
        body,
        [
            "Total duration: 2.75 ms",
            "Memory delta:   not tracked",
            "Events:         2",
            "⚠ Slow events:  1",
            "▲ Memory spikes: 0",
            "────────────────────────────────────────────────────────────────",
            "getSignal 2.75 ms [@1.00 ms] self 2.25 ms",
            "  getCandles 500 µs [@3.00 ms] ⚠ slow 2.0x",
        ]
    );
}

#[test]
fn timeline_in_colour_marks_slow_lines() {
    let text = render(
        &scripted(),
        TimelineStyle {
            color: true,
            metadata: false,
            root: None,
        },
    );
    assert!(text.contains("\u{1b}[33m⚠ slow 2.0x\u{1b}[0m"), "{text}");
    assert!(text.contains("\u{1b}[1mtick\u{1b}[0m"), "{text}");
    let stripped: String = {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let plain = render(
        &scripted(),
        TimelineStyle {
            color: false,
            metadata: false,
            root: None,
        },
    );
    assert_eq!(stripped, plain);
}

#[test]
fn report_fields_offsets_gaps_and_self_times() {
    let report = scripted();
    let by_name = |n: &str| report.events.iter().find(|e| e.name == n).unwrap();
    let (tick, signal, candles) = (by_name("tick"), by_name("getSignal"), by_name("getCandles"));
    assert_eq!(report.events[0].kind, EventKind::Mark);
    assert_eq!(
        (tick.duration_ms, tick.self_ms, tick.offset_ms, tick.depth),
        (4.0, 1.25, 0.0, 0)
    );
    assert_eq!(
        (
            signal.duration_ms,
            signal.self_ms,
            signal.gap_ms,
            signal.depth
        ),
        (2.75, 2.25, 1.0, 1)
    );
    assert_eq!(
        (candles.parent, candles.gap_ms, candles.depth),
        (Some(signal.id), 2.0, 2)
    );
    assert_eq!(signal.parent, Some(tick.id));
    assert_eq!(
        tick.metadata,
        Some(json!({"frame": 1, "signal": false, "duration": 4.0}))
    );
    assert_eq!(report.total_duration_ms, 5.0);
    assert_eq!(report.event_count, 4);
    assert_eq!(report.slow_events.len(), 1);
    let slow = &report.slow_events[0];
    assert_eq!(
        (
            slow.name.as_ref(),
            slow.duration_ms,
            slow.threshold_ms,
            slow.slowness_ratio
        ),
        ("getCandles", 0.5, 0.25, 2.0)
    );
    let stats = &report.stats["getCandles"];
    assert_eq!(
        (
            stats.count,
            stats.slow_count,
            stats.slow_percent,
            stats.avg_ms
        ),
        (1, 1, 100.0, 0.5)
    );
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "run",
        "totalDurationMs",
        "totalMemoryDeltaBytes",
        "eventCount",
        "events",
        "slowEvents",
        "memorySpikes",
        "thresholds",
        "dropped",
        "stats",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    assert_eq!(
        json["thresholds"]["byNameMs"],
        json!({"getCandles": 0.25, "getSignal": 5.0})
    );
    assert_eq!(json["run"]["symbol"], json!("BTCUSDT"));
}

#[test]
fn same_name_operations_never_overwrite_each_other() {
    let clock = Arc::new(ManualClock::default());
    let tracker = Tracker::with_clock(
        RunInfo::named("x"),
        TrackerOptions::default(),
        clock.clone(),
    );
    let first = tracker.start("work", None);
    clock.advance_ms(1.0);
    let second = tracker.start("work", None);
    clock.advance_ms(1.0);
    first.end(); // ended out of order: 2 ms
    clock.advance_ms(3.0);
    drop(second); // a guard ends on drop: 4 ms
    let report = tracker.finish().unwrap();
    let durations: Vec<f64> = report.events.iter().map(|e| e.duration_ms).collect();
    assert_eq!(durations, [2.0, 4.0]);
    assert_eq!(report.stats["work"].count, 2);
}

#[test]
fn operations_on_other_threads_are_not_children() {
    let tracker = Tracker::new(RunInfo::named("threads"), TrackerOptions::default());
    let outer = tracker.start("outer", None);
    let t = tracker.clone();
    std::thread::spawn(move || t.measure("elsewhere", || ()))
        .join()
        .unwrap();
    outer.end();
    let report = tracker.finish().unwrap();
    assert!(report.events.iter().all(|e| e.parent.is_none()));
}

#[test]
fn wrap_times_every_call() {
    let tracker = Tracker::new(RunInfo::named("wrap"), TrackerOptions::default());
    let double = tracker.wrap("double", |x: i32| x * 2, Some(json!({"kind": "math"})));
    assert_eq!((double(1), double(2), double(3)), (2, 4, 6));
    let report = tracker.finish().unwrap();
    assert_eq!(report.events.len(), 3);
    assert!(
        report
            .events
            .iter()
            .all(|e| e.name == "double" && e.metadata.as_ref().unwrap()["kind"] == "math")
    );
}

#[tokio::test]
async fn an_async_measure_lasts_until_the_future_completes() {
    let tracker = Tracker::new(RunInfo::named("async"), TrackerOptions::default());
    tracker
        .measure_async("sleep", tokio::time::sleep(Duration::from_millis(30)))
        .await;
    let report = tracker.finish().unwrap();
    assert!(
        report.events[0].duration_ms >= 30.0,
        "{}",
        report.events[0].duration_ms
    );
}

#[test]
fn past_the_cap_slow_events_are_kept_and_the_rest_counted() {
    let clock = Arc::new(ManualClock::default());
    let options = TrackerOptions {
        max_events: 3,
        thresholds: Thresholds::new(5.0).unwrap(),
        ..TrackerOptions::default()
    };
    let tracker = Tracker::with_clock(RunInfo::named("cap"), options, clock.clone());
    for i in 0..10 {
        let span = tracker.start("op", None);
        clock.advance_ms(if i == 6 || i == 8 { 10.0 } else { 1.0 });
        span.end();
    }
    let report = tracker.finish().unwrap();
    let durations: Vec<f64> = report.events.iter().map(|e| e.duration_ms).collect();
    assert_eq!(durations, [1.0, 1.0, 1.0, 10.0, 10.0]);
    assert_eq!((report.dropped, report.event_count), (5, 10));
    assert_eq!(
        report.stats["op"].count, 10,
        "statistics cover dropped events too"
    );
    assert_eq!(report.stats["op"].slow_count, 2);
    assert_eq!(report.stats["op"].max_ms, 10.0);
}

#[test]
fn sampling_is_decided_per_run_id() {
    let none = TrackerOptions {
        sampling_rate: 0.0,
        ..TrackerOptions::default()
    };
    assert!(!Tracker::new(RunInfo::named("a"), none).is_enabled());
    let half = TrackerOptions {
        sampling_rate: 0.5,
        ..TrackerOptions::default()
    };
    let decisions: Vec<bool> = (0..20)
        .map(|i| Tracker::new(RunInfo::named(format!("run-{i}")), half.clone()).is_enabled())
        .collect();
    let again: Vec<bool> = (0..20)
        .map(|i| Tracker::new(RunInfo::named(format!("run-{i}")), half.clone()).is_enabled())
        .collect();
    assert_eq!(decisions, again);
    assert!(decisions.contains(&true) && decisions.contains(&false));
    assert!(!Tracker::new(RunInfo::named("x"), TrackerOptions::disabled()).is_enabled());
}

#[test]
fn on_complete_receives_the_report_and_a_disabled_tracker_reports_nothing() {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    let options = TrackerOptions {
        on_complete: Some(Arc::new(move |r: &TrackerReport| {
            s.lock().unwrap().push(r.event_count)
        })),
        ..TrackerOptions::default()
    };
    let tracker = Tracker::new(RunInfo::named("done"), options);
    tracker.measure("a", || ());
    tracker.track("b", None);
    let report = tracker.finish().unwrap();
    assert_eq!(*seen.lock().unwrap(), [2]);
    assert_eq!(report.event_count, 2);

    let off = Tracker::disabled();
    let span = off.start("nothing", None);
    span.end();
    assert_eq!(off.measure("x", || 5), 5);
    assert!(off.finish().is_none());
}

#[test]
fn keeping_the_slowest_roots_holds_the_warm_up_and_the_k_slowest_subtrees() {
    let clock = Arc::new(ManualClock::default());
    let options = TrackerOptions {
        keep_slowest_roots: Some(2),
        ..TrackerOptions::default()
    };
    let tracker = Tracker::with_clock(run(), options, clock.clone());
    // Ticks of 10 (the first), 1, 5, 3 and 4 ms, each with one nested step of 0.5 ms.
    for ms in [10.0, 1.0, 5.0, 3.0, 4.0] {
        let tick = tracker.start("tick", None);
        tracker.measure("step", || clock.advance_ms(0.5));
        clock.advance_ms(ms - 0.5);
        tick.end();
    }
    let report = tracker.finish().unwrap();
    let roots: Vec<(f64, Option<u64>)> = report
        .events
        .iter()
        .filter(|e| e.name == "tick")
        .map(|e| (e.duration_ms, e.parent))
        .collect();
    // Start order: the warm-up (10 ms), then the 5 and 4 ms ticks; 1 and 3 ms are gone.
    assert_eq!(roots, [(10.0, None), (5.0, None), (4.0, None)]);
    assert_eq!(report.events.len(), 6, "each kept tick with its step");
    assert_eq!((report.event_count, report.dropped), (10, 4));
    let duration = |id: u64| {
        report
            .events
            .iter()
            .find(|e| e.id == id)
            .unwrap()
            .duration_ms
    };
    assert_eq!(
        report.warm_ups.len(),
        1,
        "no later tick ran anything for the first time"
    );
    assert_eq!(duration(report.warm_ups[0].root), 10.0);
    assert_eq!(report.warm_ups[0].first_runs, ["step", "tick"]);
    let slowest: Vec<f64> = report
        .slowest_roots
        .iter()
        .map(|&id| duration(id))
        .collect();
    assert_eq!(slowest, [5.0, 4.0], "slowest first");
    // Per-name statistics still count every tick.
    assert_eq!(report.stats["tick"].count, 5);
}

#[test]
fn a_later_tick_inside_which_an_operation_first_ran_is_a_warm_up_not_the_slowest() {
    let clock = Arc::new(ManualClock::default());
    let options = TrackerOptions {
        keep_slowest_roots: Some(1),
        ..TrackerOptions::default()
    };
    let tracker = Tracker::with_clock(run(), options, clock.clone());
    // Ticks of 1, 2, 9 (the first `open` runs inside it), 3 and 8 ms (`open` again).
    for (ms, opens) in [
        (1.0, false),
        (2.0, false),
        (9.0, true),
        (3.0, false),
        (8.0, true),
    ] {
        let tick = tracker.start("tick", None);
        if opens {
            tracker.measure("open", || clock.advance_ms(0.5));
            clock.advance_ms(ms - 0.5);
        } else {
            clock.advance_ms(ms);
        }
        tick.end();
    }
    let report = tracker.finish().unwrap();
    let duration = |id: u64| {
        report
            .events
            .iter()
            .find(|e| e.id == id)
            .unwrap()
            .duration_ms
    };
    let warm_ups: Vec<(f64, Vec<String>)> = report
        .warm_ups
        .iter()
        .map(|w| (duration(w.root), w.first_runs.clone()))
        .collect();
    assert_eq!(
        warm_ups,
        [
            (1.0, vec!["tick".to_string()]),
            (9.0, vec!["open".to_string()])
        ]
    );
    // The slowest tick that is not a warm-up: 8 ms, although 9 ms took longer.
    let slowest: Vec<f64> = report
        .slowest_roots
        .iter()
        .map(|&id| duration(id))
        .collect();
    assert_eq!(slowest, [8.0]);
    assert_eq!(report.stats["tick"].count, 5);
}
