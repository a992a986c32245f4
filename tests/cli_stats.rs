//! `backtest-perf stats`, run as a user would run it.
#![cfg(feature = "cli")]

use std::process::Command;

use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
}

const INPUT: &str = r#"{"metricType":"tick","duration":1,"timestamp":1000,"symbol":"BTCUSDT","strategyName":"sma"}
{"reportName":"performance","data":{"metricType":"tick","duration":2,"timestamp":1500,"previousTimestamp":1000,"symbol":"BTCUSDT","strategyName":"sma","exchangeName":"binance","backtest":true}}
{"metricType":"tick","timestamp":1600,"symbol":"BTCUSDT","strategyName":"sma"}

{"metricType":"tick","duration":3,"timestamp":2000,"symbol":"BTCUSDT","strategyName":"sma"}
not json at all
{"metricType":"tick","duration":-4,"timestamp":2100,"symbol":"BTCUSDT","strategyName":"sma"}
{"metricType":"getCandles","duration":4,"timestamp":2200,"symbol":"ETHUSDT","strategyName":"rsi"}
{"reportName":"performance","data":{"metricType":"getCandles","duration":0.5,"timestamp":1732147200123.4567,"symbol":"ETHUSDT","strategyName":"rsi"}}
"#;

fn input_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, INPUT).unwrap();
    (dir, path)
}

#[test]
fn json_statistics_use_the_good_lines_and_report_each_bad_one() {
    let (_dir, path) = input_file();
    let out = bin()
        .args(["stats", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    assert_eq!(
        stderr,
        format!(
            "{p}:3: missing field `duration`\n\
             {p}:6: expected ident at line 1 column 2\n\
             {p}:7: rejected: duration is -4; it must be >= 0 milliseconds\n\
             error: 3 bad line(s) in the input were skipped (see above); fix or remove them\n"
        )
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["rejected"], json!(1));
    let pairs = doc["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2);
    let btc = &pairs[0];
    assert_eq!(
        (btc["symbol"].as_str(), btc["strategyName"].as_str()),
        (Some("BTCUSDT"), Some("sma"))
    );
    assert_eq!(btc["totalEvents"], json!(3));
    assert_eq!(btc["totalDuration"], json!(6.0));
    assert_eq!(btc["rejected"], json!(1));
    let tick = &btc["metricStats"]["tick"];
    assert_eq!(tick["count"], json!(3));
    assert_eq!(tick["avgDuration"], json!(2.0));
    assert_eq!(tick["median"], json!(2.0));
    assert_eq!(tick["p95"], json!(3.0));
    assert_eq!(tick["stdDev"], json!((2.0f64 / 3.0).sqrt()));
    // 1500 - 1000 from the file; the bus chained 2000 after 1500.
    assert_eq!(
        (tick["minWaitTime"].clone(), tick["maxWaitTime"].clone()),
        (json!(500.0), json!(500.0))
    );
    assert!(btc.get("events").is_none(), "events are left out");
    let eth = &pairs[1]["metricStats"]["getCandles"];
    assert_eq!(eth["count"], json!(2));
    assert_eq!(eth["maxWaitTime"], json!(1732147200123.4567 - 2200.0));
}

#[test]
fn markdown_for_one_pair_with_the_backtest_kit_preset() {
    let (_dir, path) = input_file();
    let out = bin()
        .args([
            "stats",
            "--format",
            "md",
            "--stats",
            "backtest-kit",
            "--symbol",
            "BTCUSDT",
            "--input",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("# Performance Report: sma\n\n**Symbol:** BTCUSDT\n**Total events:** 3\n"),
        "{md}"
    );
    // Interpolated: p95 of [1, 2, 3] is 2.9; sample std dev is 1.
    assert!(md.contains("| tick | 3 | 2.00 | 1.00 | 3.00 | 2.00 | 2.90 | 2.98 | 1.00 | 500.00 | 500.00 | 500.00 |"), "{md}");
    assert!(!md.contains("ETHUSDT"));
}

#[test]
fn a_clean_file_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.jsonl");
    std::fs::write(
        &path,
        "{\"metricType\":\"tick\",\"duration\":1,\"timestamp\":1}\n",
    )
    .unwrap();
    let out = bin()
        .args(["stats", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pairs"][0]["symbol"], json!("global"));
    assert_eq!(doc["pairs"][0]["strategyName"], json!("global"));
}

#[test]
fn a_missing_file_says_so() {
    let out = bin()
        .args(["stats", "--input", "/nonexistent/events.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot read /nonexistent/events.jsonl: No such file or directory (os error 2); check the path\n"
    );
}

#[test]
fn bench_prints_one_json_line_with_every_field() {
    let out = bin()
        .args([
            "bench",
            "--events",
            "20000",
            "--pairs",
            "3",
            "--types",
            "7",
            "--skip-backtest",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.starts_with("{\"events\":20000,\"emitS\":"), "{text}");
    let positions: Vec<usize> = [
        "emitS",
        "drainS",
        "eventsPerS",
        "getDataMs",
        "getReportMs",
        "peakRssMb",
    ]
    .iter()
    .map(|k| text.find(&format!("\"{k}")).unwrap())
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "fields in the documented order: {text}"
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "events",
        "emitS",
        "drainS",
        "eventsPerS",
        "getDataMsPerPair",
        "getReportMsPerPair",
        "peakRssMb",
        "keyStateKbPerType",
        "yearBacktestOffMs",
        "yearBacktestOnMs",
        "yearBacktestSampled32Ms",
        "yearBacktestExportersMs",
        "yearBacktestExportersWrittenMs",
        "yearBacktestExportersAloneMs",
        "yearBacktestExportersSpans",
        "otelJsonNsPerSpan",
        "otelProtobufNsPerSpan",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    // The README's example line has the same fields, in the same order.
    let readme = include_str!("../README.md");
    let example = readme
        .lines()
        .find(|l| l.starts_with("{\"events\":"))
        .expect("the README shows a bench line");
    let field_order = |line: &str| -> Vec<String> {
        let mut fields = Vec::new();
        let mut rest = line;
        while let Some(at) = rest.find("\":") {
            let start = rest[..at].rfind('"').unwrap() + 1;
            fields.push(rest[start..at].to_string());
            rest = &rest[at + 2..];
        }
        fields
    };
    assert_eq!(field_order(example), field_order(&text));
    let example: Value = serde_json::from_str(example).unwrap();
    assert_eq!(example["events"], json!(1_000_000));
    assert_eq!(doc["events"], json!(20000));
    assert!(doc["eventsPerS"].as_f64().unwrap() > 0.0);
    assert!(doc["keyStateKbPerType"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["yearBacktestOnMs"], Value::Null, "skipped");
    assert_eq!(doc["otelJsonNsPerSpan"], Value::Null, "skipped");
}

/// `stats` over a JSONL file, its JSON output fed back, and the same events from
/// standard input: all three merge into what one run over the concatenation gives.
#[test]
fn outputs_and_standard_input_merge_into_the_statistics_of_the_concatenation() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = (1..=40)
        .map(|i| {
            format!(
                "{{\"metricType\":\"tick\",\"duration\":{},\"timestamp\":{},\"symbol\":\"BTCUSDT\",\"strategyName\":\"sma\"}}\n",
                f64::from(i) / 1000.0,
                1000 + i
            )
        })
        .collect();
    let (a, b) = events.split_at(events.len() / 2);
    std::fs::write(dir.path().join("a.jsonl"), a).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), b).unwrap();
    std::fs::write(dir.path().join("all.jsonl"), &events).unwrap();
    let stats = |args: &[&str], stdin: Option<&str>| -> Value {
        let mut cmd = bin();
        cmd.arg("stats").current_dir(dir.path());
        for input in args {
            cmd.args(["--input", input]);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let whole = stats(&["all.jsonl"], None);
    let first = stats(&["a.jsonl"], None);
    std::fs::write(dir.path().join("first.json"), first.to_string()).unwrap();
    // The first half as a stats output, the second half from standard input.
    let merged = stats(&["first.json", "-"], Some(b));
    let tick = |doc: &Value| doc["pairs"][0]["metricStats"]["tick"].clone();
    let (w, m) = (tick(&whole), tick(&merged));
    for field in ["count", "minDuration", "maxDuration", "avgWaitTime"] {
        assert_eq!(m[field], w[field], "{field}");
    }
    for field in ["totalDuration", "avgDuration", "stdDev"] {
        let (x, y) = (m[field].as_f64().unwrap(), w[field].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12 * y.abs(), "{field}: {x} vs {y}");
    }
    assert_eq!(w["count"], json!(40));
    assert_eq!(w["exact"], json!(true));
    // Merged from a histogram, the percentiles are within 0.1% and say so.
    assert_eq!(m["exact"], json!(false));
    for field in ["median", "p95", "p99"] {
        let (x, y) = (m[field].as_f64().unwrap(), w[field].as_f64().unwrap());
        assert!((x - y).abs() <= 0.001 * y, "{field}: {x} vs {y}");
    }
}

#[test]
fn a_report_without_aggregates_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    std::fs::write(
        &path,
        "{\n  \"symbol\": \"A\",\n  \"strategyName\": \"s\",\n  \"metricStats\": {}\n}\n",
    )
    .unwrap();
    let out = bin()
        .args(["stats", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("old.json: A:s has no whole-run aggregates (written by an older version); run it again to merge it"),
        "{stderr}"
    );
}
