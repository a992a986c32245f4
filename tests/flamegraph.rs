//! With the `flamegraph` feature, `backtest --flamegraph` writes the whole run's self time
//! by stack, and those numbers are the report's.
#![cfg(all(feature = "flamegraph", feature = "cli"))]

#[test]
fn the_folded_stacks_nest_every_hook_and_add_up_to_the_time_in_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--format",
            "json",
            "--flamegraph",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = std::fs::read_to_string(dir.path().join("sma-crossover.folded")).unwrap();
    let stacks: Vec<(&str, u64)> = folded
        .lines()
        .map(|l| {
            let (stack, ns) = l.rsplit_once(' ').unwrap();
            (stack, ns.parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = stacks.iter().map(|(s, _)| *s).collect();
    // Every hook where it runs: the strategy's fetch inside getSignal, the replay's fetch
    // inside backtest, all inside tick.
    assert_eq!(
        names,
        [
            "tick",
            "tick;backtest",
            "tick;backtest;getCandles",
            "tick;getAveragePrice",
            "tick;getSignal",
            "tick;getSignal;getCandles",
        ]
    );
    // The same numbers as the report: the folded self times add up to its time in hooks
    // (each event's self time rounded to the nanosecond).
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("sma-crossover.json")).unwrap(),
    )
    .unwrap();
    let total_ns: u64 = stacks.iter().map(|(_, ns)| ns).sum();
    let self_ms = report["selfDuration"].as_f64().unwrap();
    let events = report["totalEvents"].as_f64().unwrap();
    assert!(
        (total_ns as f64 / 1e6 - self_ms).abs() <= events * 0.5e-6,
        "{total_ns} ns against {self_ms} ms"
    );
    let svg = std::fs::read_to_string(dir.path().join("sma-crossover.flamegraph.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("getSignal"));
}
