//! What was tried against every input path, as an attacker and as a careless user would
//! (issue 10). Each test runs the real binary or the public API with the hostile input,
//! kept small: large inputs are generated here, bounded in time.

#[cfg(feature = "cli")]
use std::io::Write;
#[cfg(feature = "cli")]
use std::process::{Command, Output, Stdio};

use backtest_perf::alerts::{AlertManager, rules_from_json};
use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};

#[cfg(feature = "cli")]
fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
}

#[cfg(feature = "cli")]
fn stats_of(dir: &std::path::Path, name: &str, content: &[u8]) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    bin()
        .args(["stats", "--input"])
        .arg(&path)
        .output()
        .unwrap()
}

#[cfg(feature = "cli")]
const EVENT: &str = r#"{"metricType":"tick","duration":1,"timestamp":5}"#;

/// Item 1: Anything after the event on its line is an error, not ignored.
#[test]
#[cfg(feature = "cli")]
fn text_after_an_event_on_its_line_is_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, line) in [
        ("trailing.jsonl", format!("{EVENT} trailing\n")),
        ("two.jsonl", format!("{EVENT}{EVENT}\n")),
    ] {
        let out = stats_of(dir.path(), name, line.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("{name}:1: trailing characters at line 1 column"))
                && stderr.contains("one JSON object per line"),
            "{stderr}"
        );
    }
}

/// Item 1: A UTF-8 byte-order mark (as Windows editors write) does not spoil line 1.
#[test]
#[cfg(feature = "cli")]
fn a_byte_order_mark_is_read_past() {
    let dir = tempfile::tempdir().unwrap();
    let out = stats_of(
        dir.path(),
        "bom.jsonl",
        format!("\u{feff}{EVENT}\n{EVENT}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pairs"][0]["totalEvents"], 2);
}

/// Item 1: An input without newlines is not read into memory whole: the line limit stops it
/// with a message, and the good lines before it are kept.
#[test]
#[cfg(feature = "cli")]
fn a_line_without_end_stops_at_the_limit_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = format!("{EVENT}\n").into_bytes();
    content.extend(std::iter::repeat_n(b'0', 3 << 20));
    let out = stats_of(dir.path(), "endless.jsonl", &content);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("endless.jsonl:2: a line longer than 1 MiB: not JSONL"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pairs"][0]["totalEvents"], 1);
    // /dev/zero, the reproduction itself, ends just as quickly.
    if std::path::Path::new("/dev/zero").exists() {
        let out = bin()
            .args(["stats", "--input", "/dev/zero"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8(out.stderr)
                .unwrap()
                .contains("/dev/zero:1: a line longer than 1 MiB")
        );
    }
}

/// Item 5: A closed standard output (`backtest | head -1`) costs nothing: the reports are
/// written and the exit status is 0.
#[test]
#[cfg(feature = "cli")]
fn a_closed_pipe_on_standard_output_still_writes_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["backtest", "--strategy", "sma-crossover", "--out"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("sma-crossover.md").exists());
}

#[cfg(feature = "cli")]
fn write_csv(dir: &std::path::Path, rows: &[&str]) -> std::path::PathBuf {
    let path = dir.join("gaps.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, ",Open,High,Low,Close,Volume").unwrap();
    for row in rows {
        writeln!(file, "{row},1,1,1,1,1").unwrap();
    }
    path
}

/// Item 6: Three candles whose most common gap is 1 ms would be 13 billion frames: refused at
/// once, naming the file, the inferred interval and how to set it; `--interval` runs it.
#[test]
#[cfg(feature = "cli")]
fn an_interval_absurd_for_the_data_is_refused_and_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(
        dir.path(),
        &[
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00.001",
            "2024-06-01 00:00:00",
        ],
    );
    let out = bin()
        .args(["backtest", "--strategy", "sma-crossover", "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "gaps.csv:2: 3 candles from 2024-01-01T00:00:00+00:00 to 2024-06-01T00:00:00+00:00 at an interval of 1ms (inferred from the most common gap between candles) make 13132800001 frames, over 100 per candle"
        ) && stderr.contains("--interval, for example --interval 1h"),
        "{stderr}"
    );
    let csv = write_csv(
        dir.path(),
        &[
            "2024-01-01 00:00:00",
            "2024-01-01 01:00:00",
            "2024-01-01 05:00:00",
        ],
    );
    let out = bin()
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--interval",
            "1h",
            "--data",
        ])
        .arg(&csv)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("sma-crossover on gaps: 6 frames")
    );
    let out = bin()
        .args(["backtest", "--interval", "0h", "--data"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("`0h` is not a candle interval")
    );
}

/// Item 4: A gate that cannot gate is refused: NaN, infinite or huge thresholds, and an alpha
/// outside (0, 1).
#[test]
#[cfg(feature = "cli")]
fn compare_refuses_a_gate_that_is_off() {
    for (flag, value, says) in [
        ("--threshold", "nan", "is not a percentage above 0"),
        ("--threshold", "inf", "is not a percentage above 0"),
        ("--threshold", "1e400", "is not a percentage above 0"),
        ("--threshold", "0", "is not a percentage above 0"),
        ("--alpha", "nan", "is not a p-value above 0 and below 1"),
        ("--alpha", "2", "is not a p-value above 0 and below 1"),
        ("--alpha", "0", "is not a p-value above 0 and below 1"),
    ] {
        let out = bin()
            .args(["compare", "a.json", "b.json", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

/// Item 4: Samples on one side only cannot be tested: no "unchanged" verdict.
#[test]
fn samples_against_none_are_untested_not_unchanged() {
    use backtest_perf::compare::{Verdict, compare};
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    for i in 0..50 {
        bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, f64::from(i)).with_symbol("A"))
            .unwrap();
    }
    let mut without = service.get_data("A", "");
    let with = without.clone();
    without.events.clear();
    let rows = compare(&with, &without, 20.0, 0.05);
    assert_eq!(rows[0].verdict, Verdict::Untested);
    assert_eq!(rows[0].samples, (50, 0));
}

/// Item 3: A cooldown that ends beyond the calendar, and a `now` at its end, never panic.
#[test]
fn cooldowns_beyond_the_calendar_do_not_panic() {
    let rules = rules_from_json(
        r#"[{"name": "any", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "critical", "cooldown": 1e13}]"#,
    )
    .unwrap();
    let manager = AlertManager::new(rules);
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let _ = bus.emit(PerformanceContract::new(MetricType::Tick, -1.0, 1.0).with_symbol("A"));
    let stats = service.get_data("A", "");
    let start = chrono::DateTime::<chrono::Utc>::MIN_UTC;
    assert_eq!(manager.evaluate(&stats, start).len(), 1);
    assert_eq!(manager.evaluate(&stats, start).len(), 0, "cooling down");
    // Near the calendar's end, the end of any cooldown is past it: before the fix this
    // second call panicked on `DateTime + TimeDelta`.
    let end = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    let manager = AlertManager::new(
        rules_from_json(r#"[{"name": "any", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "critical"}]"#)
            .unwrap(),
    );
    assert_eq!(manager.evaluate(&stats, end).len(), 1);
    assert_eq!(
        manager.evaluate(&stats, end).len(),
        0,
        "a cooldown past the calendar never ends"
    );
}

/// Item 11: a bounded queue that blocks holds at most its capacity while the callback
/// lags, and loses nothing.
#[test]
fn a_blocking_bound_holds_its_capacity_and_loses_nothing() {
    use backtest_perf::{QueueBound, WhenFull};
    let bus = PerformanceEmitter::new();
    let bound = QueueBound {
        capacity: 16,
        when_full: WhenFull::Block,
    };
    let sum = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = sum.clone();
    let sub = bus.listen_bounded(bound, move |e: &PerformanceContract| {
        std::thread::yield_now(); // a callback slower than the emitter
        total.fetch_add(e.duration as u64, std::sync::atomic::Ordering::Relaxed);
    });
    let mut deepest = 0;
    for i in 1..=2_000u32 {
        bus.emit(PerformanceContract::new(
            MetricType::Tick,
            f64::from(i),
            1.0,
        ))
        .unwrap();
        deepest = deepest.max(sub.queue_depth());
    }
    sub.flush();
    // The queue holds at most 16; the batch the worker is on, at most 16 more.
    assert!(deepest <= 32, "{deepest} events waited");
    assert_eq!((sub.handled(), sub.dropped()), (2_000, 0));
    assert_eq!(
        sum.load(std::sync::atomic::Ordering::Relaxed),
        2_000 * 2_001 / 2
    );
}

/// Item 11: a listener stuck while many events arrive holds at most its capacity with
/// `DropOldest`, counts the rest, and gets the newest.
#[test]
fn a_dropping_bound_keeps_memory_flat_under_a_stuck_callback() {
    use backtest_perf::{QueueBound, WhenFull};
    let bus = PerformanceEmitter::new();
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let last = std::sync::Arc::new(std::sync::Mutex::new(0.0));
    let seen = last.clone();
    let bound = QueueBound {
        capacity: 1_000,
        when_full: WhenFull::DropOldest,
    };
    let sub = bus.listen_bounded(bound, move |e: &PerformanceContract| {
        let _ = stuck.recv();
        *seen.lock().unwrap() = e.duration;
    });
    for i in 1..=200_000u32 {
        bus.emit(PerformanceContract::new(
            MetricType::Tick,
            f64::from(i),
            1.0,
        ))
        .unwrap();
        assert!(
            sub.queue_depth() <= 2_000,
            "the queue holds at most 1,000 and the worker's batch at most 1,000 more"
        );
    }
    drop(release); // the callback goes on without waiting
    sub.flush();
    assert_eq!(sub.handled() + sub.dropped(), 200_000);
    assert!(sub.handled() <= 2_000, "{} handled", sub.handled());
    assert_eq!(*last.lock().unwrap(), 200_000.0, "the newest event arrived");
}

/// Item 12: a filter that panics is contained: counted as the listener's failure, and
/// the subscribers after it still get the event.
#[test]
fn a_panicking_filter_is_contained() {
    let bus = PerformanceEmitter::new();
    let broken = bus.listen_filtered(|_| panic!("filter bug"), |_: &PerformanceContract| {});
    let after = bus.listen(|_: &PerformanceContract| {});
    bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0))
        .unwrap();
    after.flush();
    broken.flush();
    assert_eq!(after.handled(), 1);
    assert_eq!((broken.handled(), broken.failed()), (0, 1));
    assert_eq!(bus.listener_failures(), 1);
}

/// Item 15: `flush` on a once-listener returns only when its event is counted and it is
/// closed. Many iterations while another thread loads the CPU: before the fix, the count
/// was sometimes still 0 (the listener closed before counting).
#[test]
fn a_once_listener_is_counted_and_closed_when_flush_returns() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = stop.clone();
    let load = std::thread::spawn(move || {
        let mut x = 0u64;
        while !spin.load(std::sync::atomic::Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    });
    let bus = PerformanceEmitter::new();
    for _ in 0..2_000 {
        let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let set = got.clone();
        let first = bus.listen_once(
            |e| e.metric_type == MetricType::Backtest,
            move |e: &PerformanceContract| {
                set.store(e.duration as u64, std::sync::atomic::Ordering::SeqCst);
            },
        );
        for ms in 1..=3 {
            bus.emit(PerformanceContract::new(
                MetricType::Backtest,
                f64::from(ms),
                1.0,
            ))
            .unwrap();
        }
        first.flush();
        assert_eq!(first.handled(), 1);
        assert!(!first.is_active());
        assert_eq!(
            got.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the callback's effect is visible"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
}

/// Item 2: an offline `stats` keeps every key it is given, far past the live storage's cap.
#[test]
#[cfg(feature = "cli")]
fn stats_keeps_every_key_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..5_000)
        .map(|i| {
            format!(
                "{{\"metricType\":\"tick\",\"duration\":1,\"timestamp\":{i},\"symbol\":\"S{i}\",\"strategyName\":\"k\"}}\n"
            )
        })
        .collect();
    let out = stats_of(dir.path(), "keys.jsonl", lines.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pairs"].as_array().unwrap().len(), 5_000);
}

/// Item 8: names that would share a report file get their own.
#[test]
fn report_files_never_collide() {
    use backtest_perf::dump::safe_file_stem;
    let hashed = safe_file_stem("a/b");
    let names = [
        "a/b",
        hashed.as_str(),
        "a_b",
        "CON",
        "con",
        "Con",
        "NUL",
        "com1",
        "aux.txt",
        "x.",
    ];
    let stems: Vec<String> = names.iter().map(|n| safe_file_stem(n)).collect();
    let folded: std::collections::HashSet<String> =
        stems.iter().map(|s| s.to_lowercase()).collect();
    assert_eq!(folded.len(), names.len(), "{stems:?}");
    for (name, stem) in names.iter().zip(&stems) {
        let base = stem.split('.').next().unwrap().to_lowercase();
        assert!(
            !["con", "nul", "aux", "prn", "com1"].contains(&base.as_str()),
            "{name} -> {stem}"
        );
        assert!(!stem.ends_with('.'), "{name} -> {stem}");
    }
}

/// Item 9: a metric name in the wrong case, or empty, is refused, not silently unused.
#[test]
#[cfg(feature = "cli")]
fn metric_names_in_the_wrong_case_are_refused() {
    let out = bin()
        .args(["backtest", "--slow", "getsignal=5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr).unwrap().contains(
            "metric type `getsignal` is not one the hooks emit; did you mean `getSignal`?"
        )
    );
    let out = bin().args(["backtest", "--slow", "=5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("the metric type is empty")
    );
    let err = rules_from_json(
        r#"[{"name": "x", "condition": {"kind": "above", "metric": "GETCANDLES", "statistic": "p95", "bound": 5}, "severity": "warning"}]"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean `getCandles`?"),
        "{err}"
    );
    let err = rules_from_json(
        r#"[{"name": "x", "condition": {"kind": "rejectedAbove", "bound": 0}, "severity": "warning", "cooldwon": 5}]"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `cooldwon`"),
        "{err}"
    );
}

/// Item 10: an unwritable report folder is found before any backtest runs.
#[test]
#[cfg(feature = "cli")]
fn an_unwritable_report_folder_fails_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = bin()
        .args(["backtest", "--out"])
        .arg(file.join("reports"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "",
        "no backtest ran"
    );
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("could not create report folder")
    );
}

/// Item 4: a report whose summary disagrees with its own events is not trusted.
#[test]
#[cfg(feature = "cli")]
fn an_edited_report_is_refused_by_compare() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "backtest",
            "--strategy",
            "sma-crossover",
            "--format",
            "json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.path().join("sma-crossover.json");
    let mut report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    report["metricStats"]["getSignal"]["maxDuration"] = serde_json::json!(0.0);
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, report.to_string()).unwrap();
    let out = bin()
        .arg("compare")
        .arg(&path)
        .arg(&edited)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("edited.json is not a backtest-perf JSON report")
            && stderr.contains("its summary disagrees with its own events (getSignal: its statistics are out of order"),
        "{stderr}"
    );
}

/// Item 7: durations and timestamps near f64::MAX are refused with the number written
/// short, and nothing non-finite reaches the statistics.
#[cfg(feature = "cli")]
#[test]
fn values_near_the_largest_float_are_refused_and_said_short() {
    let dir = tempfile::tempdir().unwrap();
    let out = stats_of(
        dir.path(),
        "big.jsonl",
        concat!(
            r#"{"metricType":"tick","duration":1e308,"timestamp":5}"#,
            "\n",
            r#"{"metricType":"tick","duration":0,"timestamp":-1.7e308}"#,
            "\n",
            r#"{"metricType":"tick","duration":2,"timestamp":6}"#,
            "\n"
        )
        .as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "big.jsonl:1: rejected: duration is 1e308; it must be at most 1e12 milliseconds"
        ),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("big.jsonl:2: rejected: timestamp -1.7e308 is beyond 1e15 ms from the epoch"),
        "{stderr}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("null") && !text.contains("NaN"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["pairs"][0]["metricStats"]["tick"]["maxDuration"], 2.0);
}

/// Items 4 and 9: comparing different runs is warned about; `--seed` without
/// `--synthetic` is refused; `compare | head -1` does not panic.
#[cfg(feature = "cli")]
#[test]
fn compare_warns_about_different_runs_and_seed_needs_synthetic() {
    let dir = tempfile::tempdir().unwrap();
    for strategy in ["sma-crossover", "rsi-reversion"] {
        let out = bin()
            .args([
                "backtest",
                "--strategy",
                strategy,
                "--format",
                "json",
                "--out",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let mut child = bin()
        .arg("compare")
        .arg(dir.path().join("sma-crossover.json"))
        .arg(dir.path().join("rsi-reversion.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`: nobody reads
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(
            "warning: comparing different runs: EURUSD:sma-crossover against EURUSD:rsi-reversion"
        ),
        "{stderr}"
    );
    let out = bin().args(["backtest", "--seed", "7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--synthetic")
    );
}
