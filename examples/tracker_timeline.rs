//! Track a unit of work of your own and print its timeline.
//!
//! ```sh
//! cargo run --example tracker_timeline
//! ```

use std::sync::Arc;

use backtest_perf::thresholds::Thresholds;
use backtest_perf::tracker::timeline::{TimelineStyle, render};
use backtest_perf::tracker::{ManualClock, RunInfo, Tracker, TrackerOptions};
use serde_json::json;

fn main() {
    // A hand-driven clock makes the output the same on every run; use `Tracker::new`
    // for real timings.
    let clock = Arc::new(ManualClock::default());
    let options = TrackerOptions {
        thresholds: Thresholds::default().with("getCandles", 0.25).unwrap(),
        ..TrackerOptions::default()
    };
    let run = RunInfo {
        id: "demo".into(),
        symbol: Some("BTCUSDT".into()),
        strategy: Some("my-strategy".into()),
        ..Default::default()
    };
    let tracker = Tracker::with_clock(run, options, clock.clone());
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
    let report = tracker.finish().expect("enabled");
    print!("{}", render(&report, TimelineStyle::for_stdout()));
}
