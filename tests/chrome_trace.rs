//! The trace-viewer file of a real backtest, checked strictly against the Trace Event
//! format that Perfetto and chrome://tracing read (Perfetto's trace processor downloads
//! its binary at run time, which cannot happen here).

use std::collections::HashMap;

use backtest_perf::PerformanceEmitter;
use backtest_perf::engine::{Backtest, BacktestConfig, SyntheticConfig, SyntheticExchange};
use backtest_perf::export::chrome_trace::write_chrome_trace;
use backtest_perf::strategies::SmaCrossover;
use backtest_perf::tracker::TrackerOptions;
use serde_json::Value;

fn number(event: &Value, field: &str) -> f64 {
    let value = event[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {event}"));
    assert!(
        value.is_finite() && value >= 0.0,
        "{field} = {value} in {event}"
    );
    value
}

/// Checks every rule of the format the viewers rely on; returns the complete events'
/// names.
fn check(trace: &Value) -> Vec<String> {
    let events = trace["traceEvents"]
        .as_array()
        .expect("traceEvents is an array");
    assert!(matches!(
        trace["displayTimeUnit"].as_str(),
        Some("ms" | "ns")
    ));
    let mut names = Vec::new();
    let mut by_thread: HashMap<u64, Vec<(f64, f64)>> = HashMap::new();
    for e in events {
        let object = e.as_object().expect("each event is an object");
        let name = e["name"].as_str().expect("name is a string");
        assert!(!name.is_empty());
        e["pid"].as_u64().expect("pid is a non-negative integer");
        let tid = e["tid"].as_u64().expect("tid is a non-negative integer");
        match e["ph"].as_str().expect("ph is a string") {
            "X" => {
                let (ts, dur) = (number(e, "ts"), number(e, "dur"));
                assert!(e["cat"].is_string(), "{e}");
                // No per-event args on a frame: speedscope would split frames by them.
                assert!(e.get("args").is_none(), "{e}");
                by_thread.entry(tid).or_default().push((ts, ts + dur));
                names.push(name.to_string());
            }
            "i" => {
                number(e, "ts");
                assert!(matches!(e["s"].as_str(), Some("g" | "p" | "t")), "{e}");
            }
            "M" => {
                assert!(matches!(name, "process_name" | "thread_name"), "{e}");
                assert!(e["args"]["name"].is_string(), "{e}");
            }
            other => panic!("unexpected phase {other} in {e}"),
        }
        for key in object.keys() {
            assert!(
                ["name", "cat", "ph", "ts", "dur", "pid", "tid", "args", "s"]
                    .contains(&key.as_str()),
                "unknown field {key}"
            );
        }
    }
    // Complete events on one thread nest or follow each other: never overlap partly.
    for (tid, mut spans) in by_thread {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut open: Vec<f64> = Vec::new();
        for (start, end) in spans {
            while open.last().is_some_and(|&top| top <= start) {
                open.pop();
            }
            if let Some(&top) = open.last() {
                assert!(
                    end <= top + 1e-6,
                    "thread {tid}: [{start}, {end}] overlaps its parent ending at {top}"
                );
            }
            open.push(end);
        }
    }
    names
}

#[test]
fn a_backtest_trace_is_well_formed_and_holds_every_hook() {
    let exchange = SyntheticExchange::new("TRACE".into(), SyntheticConfig::days(1)).unwrap();
    let config = BacktestConfig {
        tracker: TrackerOptions::default(),
        ..BacktestConfig::default()
    };
    let result = Backtest::new(&exchange, "TRACE")
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .with_config(config)
        .run(&mut SmaCrossover::default())
        .unwrap();
    let report = result.tracker.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_chrome_trace(&report, dir.path(), "sma-crossover").unwrap();
    assert_eq!(path, dir.path().join("sma-crossover.trace.json"));

    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let names = check(&trace);
    for hook in [
        "tick",
        "getSignal",
        "getCandles",
        "getAveragePrice",
        "backtest",
    ] {
        assert!(names.iter().any(|n| n == hook), "{hook} missing");
    }
    assert_eq!(names.len(), report.events.len());
    assert_eq!(
        trace["traceEvents"][0]["args"]["name"],
        "TRACE · sma-crossover"
    );
    assert_eq!(trace["otherData"]["droppedEvents"], report.dropped);
}
