//! `backtest-perf` (the default job) and `backtest-perf backtest`, run as a user would.
#![cfg(feature = "cli")]

use std::process::Command;

/// Runs `command`, which must succeed (its stderr is the failure's message), and returns
/// its stdout.
fn succeeded(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
}

#[test]
fn the_default_job_reports_every_strategy_into_dump_performance() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().current_dir(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar when piped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reports = dir.path().join("dump/performance");
    let mut files: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "donchian-breakout.md",
            "rsi-reversion.md",
            "sma-crossover.md"
        ]
    );
    for strategy in ["sma-crossover", "rsi-reversion", "donchian-breakout"] {
        assert!(
            stdout.contains(&format!("{strategy} on EURUSD: ")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("report: ./dump/performance/{strategy}.md")),
            "{stdout}"
        );
        let report = std::fs::read_to_string(reports.join(format!("{strategy}.md"))).unwrap();
        assert!(
            report.starts_with(&format!(
                "# Performance Report: {strategy}\n\n**Symbol:** EURUSD\n"
            )),
            "{report}"
        );
        for metric in [
            "tick",
            "getSignal",
            "getCandles",
            "getAveragePrice",
            "backtest",
        ] {
            assert!(
                report.contains(&format!("\n| {metric} | ")),
                "{strategy} lacks {metric}"
            );
        }
    }
    // The console shows the markdown report's columns, over the whole run, aligned.
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| Metric "))
        .expect("a table");
    let labels: Vec<&str> = header
        .split('|')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        labels,
        [
            "Metric", "Count", "Total", "Self", "Avg", "Min", "Max", "Median", "P95", "P99",
            "Std Dev", "Avg Wait", "Min Wait", "Max Wait"
        ]
    );
    let widths = |line: &str| line.split('|').map(str::len).collect::<Vec<_>>();
    let separator = stdout.lines().find(|l| l.starts_with("|---")).unwrap();
    assert_eq!(widths(header), widths(separator), "columns are aligned");
    assert!(
        stdout.contains("13,973 events (statistics over all of them; the newest 10,000 kept as events); time in hooks "),
        "{stdout}"
    );
}

#[test]
fn backtest_runs_the_chosen_strategies_on_synthetic_data_into_the_given_folder() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        bin()
            .args([
                "backtest",
                "--synthetic",
                "2",
                "--symbol",
                "SYN",
                "--strategy",
                "donchian-breakout",
                "--strategy",
                "donchian-breakout",
                "--out",
            ])
            .arg(dir.path()),
    );
    assert_eq!(
        stdout.matches(" on SYN: ").count(),
        1,
        "a repeated name runs once: {stdout}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["donchian-breakout.md"]);
}

#[test]
fn a_synthetic_run_keeps_lookback_candles_and_says_which_flag_to_raise() {
    let dir = tempfile::tempdir().unwrap();
    let run = |lookback: &str| {
        bin()
            .args([
                "backtest",
                "--synthetic",
                "2",
                "--strategy",
                "sma-crossover",
                "--param",
                "slow=1500",
                "--lookback",
                lookback,
                "--out",
            ])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run("1000");
    assert_eq!(out.status.code(), Some(1));
    // The first call with more than 1,000 closed candles: 1,001 minutes in.
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: strategy sma-crossover failed at 2024-01-01T16:41:00+00:00: 1501 past candles \
         of SYNTH were asked for; a streamed run keeps the last 1000 (raise \
         BacktestConfig::stream_lookback, or backtest --lookback, to keep more)\n"
    );
    let out = run("1501");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["backtest", "--synthetic", "2", "--lookback", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("invalid value '0' for '--lookback <CANDLES>'")
    );
}

#[test]
fn the_json_report_holds_every_trade_of_the_run() {
    use backtest_perf::PerformanceEmitter;
    use backtest_perf::engine::{Backtest, SyntheticConfig};
    let dir = tempfile::tempdir().unwrap();
    succeeded(
        bin()
            .args([
                "backtest",
                "--synthetic",
                "5",
                "--strategy",
                "rsi-reversion",
                "--format",
                "json",
                "--out",
            ])
            .arg(dir.path()),
    );
    let text = std::fs::read_to_string(dir.path().join("rsi-reversion.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let result = Backtest::synthetic("SYNTH", SyntheticConfig::days(5))
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .run(&mut backtest_perf::strategies::RsiReversion::default())
        .unwrap();
    let trades = &report["trades"];
    assert_eq!((result.closed.len(), result.cancelled.len()), (77, 3));
    assert_eq!(
        trades["closed"],
        serde_json::to_value(&result.closed).unwrap()
    );
    assert_eq!(
        trades["cancelled"],
        serde_json::to_value(&result.cancelled).unwrap()
    );
    assert_eq!(trades["rejected"], serde_json::json!([]));
    assert_eq!(
        trades["summary"]["signals"],
        serde_json::json!(result.summary.signals)
    );
    assert_eq!(
        trades["summary"]["totalPnlIs"],
        "the sum of per-trade percentages, not compounded"
    );
    // The report's keys are sorted, the trades' among them.
    let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let at = |key: &str| text.find(&format!("\n  \"{key}\": ")).unwrap();
    assert!(at("totalEvents") < at("trades") && at("trades") < at("wallDuration"));
}

#[test]
fn an_unknown_strategy_lists_the_known_ones() {
    let out = bin()
        .args(["backtest", "--strategy", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: unknown strategy \"nope\"; the known strategies are: sma-crossover, rsi-reversion, donchian-breakout\n"
    );
}

#[test]
fn bad_csv_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        ",Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,1,1\n2024-01-02,1,0.9,0.5,1,1\n",
    )
    .unwrap();
    let out = bin()
        .args(["backtest", "--data"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: {}:3: high 0.9 is below open 1, close 1 or low 0.5\n",
            path.display()
        )
    );
}

#[test]
fn timeline_prints_the_slowest_tick_and_slow_hooks_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        bin()
            .args([
                "backtest",
                "--synthetic",
                "1",
                "--strategy",
                "sma-crossover",
                "--timeline",
                "--slow",
                "tick=0.000001",
                "--out",
            ])
            .arg(dir.path())
            .env("NO_COLOR", "1"),
    );
    // Every tick is slow against 0 ms: the list shows ten, then the count of the rest.
    let slow_line = stdout
        .lines()
        .find(|l| l.starts_with("slow hooks: "))
        .expect("slow hooks listed");
    let total: u64 = slow_line["slow hooks: ".len()..].parse().unwrap();
    assert!(total > 10, "{slow_line}");
    assert!(
        stdout.contains("  tick at 2024-01-01T00:01:00+00:00: "),
        "{stdout}"
    );
    // With --timeline the thread's CPU time is read around each tick: every slow tick
    // listed says whether its thread ran or waited.
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  tick at "))
        .collect();
    assert_eq!(listed.len(), 10, "{stdout}");
    assert!(
        listed
            .iter()
            .all(|l| l.ends_with("; the thread ran: slow code, or interrupts or virtual-machine exits charged to the thread")
                || l.ends_with("; the thread waited: pre-empted or blocked, not slow code")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  ... and {} more", total - 10)),
        "{stdout}"
    );
    // The timeline of the slowest tick: the tick, the signal function inside it, the fetch inside that.
    let timeline = &stdout[stdout
        .find("Performance timeline: SYNTH:sma-crossover:")
        .expect("timeline")..];
    // Metadata lines (`key: value`) stand under their event.
    let tree: Vec<&str> = timeline
        .lines()
        .skip_while(|l| !l.starts_with('─'))
        .skip(1)
        .filter(|l| !l.trim_start().contains(": "))
        .take(3)
        .collect();
    assert!(tree[0].starts_with("tick "), "{timeline}");
    assert!(tree[1].starts_with("  getSignal "), "{timeline}");
    assert!(tree[2].starts_with("    getCandles "), "{timeline}");
    assert!(!stdout.contains('\u{1b}'), "no colour when piped");
    // The first tick is a warm-up, named as such and left out of the slowest, and so is
    // the first signal's tick, inside which two hooks ran for the first time; the slowest
    // says whether its thread ran (its CPU time against its wall time).
    assert!(
        stdout.contains("first tick (warm-up, one-time costs; left out of the slowest): "),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            " (warm-up: the first run of getAveragePrice, backtest; left out of the slowest): "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("slowest tick: thread CPU time "),
        "{stdout}"
    );
    assert!(timeline.contains("    threadCpuMs: "), "{timeline}");
}

#[test]
fn a_bad_threshold_is_refused_with_its_reason() {
    let out = bin().args(["backtest", "--slow", "tick"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("`tick` is not HOOK=MS (for example getSignal=5)"),
        "{stderr}"
    );
    // A zero threshold would make every ratio infinite: refused before anything runs.
    let out = bin()
        .args(["backtest", "--slow", "tick=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "`tick=0`: the `tick` slow threshold is 0 ms; give a number of milliseconds above 0 (for example 5)"
        ),
        "{stderr}"
    );
}

/// Writes `json` with every `getCandles` duration (events and statistics) scaled by `factor`.
fn scaled(json: &str, factor: f64) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(json).unwrap();
    for e in doc["events"].as_array_mut().unwrap() {
        if e["metricType"] == "getCandles" {
            e["duration"] = (e["duration"].as_f64().unwrap() * factor).into();
        }
    }
    let stats = doc["metricStats"]["getCandles"].as_object_mut().unwrap();
    for field in [
        "avgDuration",
        "median",
        "p95",
        "p99",
        "minDuration",
        "maxDuration",
        "totalDuration",
    ] {
        stats[field] = (stats[field].as_f64().unwrap() * factor).into();
    }
    doc.to_string()
}

#[test]
fn json_reports_feed_compare_which_fails_only_on_a_confirmed_regression() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "backtest",
            "--synthetic",
            "2",
            "--strategy",
            "sma-crossover",
            "--format",
            "md,json",
            "--trace",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "sma-crossover.json",
            "sma-crossover.md",
            "sma-crossover.trace.json"
        ]
    );
    let baseline = dir.path().join("sma-crossover.json");
    let json = std::fs::read_to_string(&baseline).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(report["environment"]["cores"].as_u64().unwrap() >= 1);
    assert!(
        report["environment"]["trackingOverheadNs"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        report["environment"]["rustc"]
            .as_str()
            .unwrap()
            .starts_with("rustc ")
    );

    let same = bin()
        .arg("compare")
        .arg(&baseline)
        .arg(&baseline)
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert_eq!(
        String::from_utf8(same.stdout)
            .unwrap()
            .matches("| unchanged |")
            .count(),
        5
    );

    let slower = dir.path().join("slower.json");
    std::fs::write(&slower, scaled(&json, 1.5)).unwrap();
    let regressed = bin()
        .arg("compare")
        .arg(&baseline)
        .arg(&slower)
        .output()
        .unwrap();
    assert_eq!(regressed.status.code(), Some(1));
    let table = String::from_utf8(regressed.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("| getCandles |"))
        .unwrap();
    assert!(
        row.ends_with("| REGRESSION |") && row.contains("(+50.0%)"),
        "{row}"
    );
    assert_eq!(
        String::from_utf8(regressed.stderr).unwrap(),
        "error: performance regressed beyond 20% (Mann-Whitney p < 0.05): getCandles\n"
    );

    // Faster is reported, never a failure; a small change is not flagged at all.
    std::fs::write(&slower, scaled(&json, 0.5)).unwrap();
    let faster = bin()
        .arg("compare")
        .arg(&baseline)
        .arg(&slower)
        .output()
        .unwrap();
    assert!(faster.status.success());
    assert!(
        String::from_utf8(faster.stdout)
            .unwrap()
            .contains("| improvement |")
    );
    std::fs::write(&slower, scaled(&json, 1.1)).unwrap();
    let small = bin()
        .arg("compare")
        .arg(&baseline)
        .arg(&slower)
        .output()
        .unwrap();
    assert!(small.status.success());
}

#[test]
fn compare_names_a_file_that_is_not_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, "{\"hello\": 1}").unwrap();
    let out = bin().arg("compare").arg(&path).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("error: {} is not a backtest-perf JSON report (write one with `backtest --format json`): missing field", path.display())),
        "{stderr}"
    );
}

#[test]
fn alert_rules_fire_into_the_log_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"name": "any signal", "condition": {"kind": "above", "metric": "getSignal", "statistic": "max", "bound": 0}, "severity": "critical"},
            {"name": "rejects", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "critical"}]"#,
    )
    .unwrap();
    let log = dir.path().join("alerts.jsonl");
    let out = bin()
        .args([
            "backtest",
            "--synthetic",
            "1",
            "--strategy",
            "sma-crossover",
            "--out",
        ])
        .arg(dir.path())
        .arg("--alerts")
        .arg(&rules)
        .arg("--alert-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("alert [Critical] any signal: max of getSignal is "),
        "{stderr}"
    );
    assert!(
        stderr.contains(", above 0.000 µs (SYNTH:sma-crossover)"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "nothing was rejected");
    assert_eq!(lines[0]["rule"], "any signal");
    assert_eq!(lines[0]["strategy"], "sma-crossover");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"name": 1}]"#).unwrap();
    let out = bin()
        .args(["backtest", "--alerts"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: {}: invalid type: integer `1`, expected a string at line 1 column 11; the file must be a JSON array of rules (see the README)\n",
            bad.display()
        )
    );
}

#[test]
fn max_events_sizes_the_window_and_layout_picks_backtest_kits_report() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        bin()
            .args([
                "backtest",
                "--strategy",
                "sma-crossover",
                "--max-events",
                "20000",
                "--out",
            ])
            .arg(dir.path()),
    );
    assert!(
        stdout.contains("13,973 events (statistics over all of them; all kept as events)"),
        "{stdout}"
    );
    let out = bin()
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--layout",
            "backtest-kit",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = std::fs::read_to_string(dir.path().join("sma-crossover.md")).unwrap();
    // backtest-kit's layout over its window of the newest 10,000 events.
    assert!(
        report.starts_with("# Performance Report: sma-crossover\n\n**Symbol:** EURUSD\n**Total events:** 10,000\n**Total execution time:** "),
        "{report}"
    );
    assert!(report.contains("\n**Dropped events:** 3,973\n"), "{report}");
    let out = bin()
        .args(["backtest", "--max-events", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("`0` is not a number of events of at least 1 (for example 10000)")
    );
}

/// `--profile`: every slow hook says what the profile saw while it ran, the same on
/// stdout, in the markdown's "Slow hooks" section and in the JSON's `slowHooks`.
#[cfg(all(feature = "profile", target_os = "linux"))]
#[test]
fn with_a_profile_every_slow_hook_shows_its_samples_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        bin()
            .args([
                "backtest",
                "--synthetic",
                "1",
                "--strategy",
                "sma-crossover",
                "--profile",
                "--slow",
                "tick=0.000001",
                "--format",
                "md",
                "--format",
                "json",
                "--format",
                "html",
                "--out",
            ])
            .arg(dir.path()),
    );
    // Ten slow ticks listed on stdout, each followed by its profile line.
    let lines: Vec<&str> = stdout.lines().collect();
    let listed: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("  tick at "))
        .collect();
    assert_eq!(listed.len(), 10, "{stdout}");
    for i in listed {
        assert!(
            lines[i + 1].starts_with("    CPU profile while it ran: "),
            "{stdout}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("sma-crossover.json")).unwrap(),
    )
    .unwrap();
    let total = json["slowHooks"]["total"].as_u64().unwrap();
    let kept = json["slowHooks"]["listed"].as_array().unwrap();
    // 465 ticks (a day, signals replayed in between), every one slow against 1 ns; the
    // first 100 listed.
    assert_eq!((total, kept.len()), (465, 100));
    for hook in kept {
        let profile = &hook["profile"];
        let samples = profile["samples"].as_u64().unwrap();
        let on_cpu: u64 = profile["onCpu"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["samples"].as_u64().unwrap())
            .sum();
        // Every sample counted has a function on top (at most 5 functions are listed).
        assert!(on_cpu <= samples, "{hook}");
        assert_eq!(profile["stack"] == "", samples == 0, "{hook}");
    }
    let md = std::fs::read_to_string(dir.path().join("sma-crossover.md")).unwrap();
    let section = &md[md.find("\n## Slow hooks\n").expect("a Slow hooks section")..];
    assert!(
        section.contains("465 hooks took longer than their thresholds; the first 100:"),
        "{section}"
    );
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| tick |"))
        .collect();
    assert_eq!(rows.len(), 100, "{section}");
    assert!(rows.iter().all(|r| r.contains(" sample")), "{section}");
    let html = std::fs::read_to_string(dir.path().join("sma-crossover.html")).unwrap();
    assert!(
        html.contains("<h2>Slow hooks</h2>\n<p class=\"meta\">465 hooks took longer than their thresholds; the first 100:</p>"),
        "{html}"
    );
    assert_eq!(
        html.matches("<tr class=\"slow\"><td>tick</td>").count(),
        100,
        "{html}"
    );
    assert!(html.ends_with("</tbody></table>\n\n</body></html>\n"));
    assert!(dir.path().join("profile.pb").exists() && dir.path().join("profile.svg").exists());
}
