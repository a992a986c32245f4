//! Property tests over the readers of user input (issue 10): the CSV reader, alert rules,
//! and what `compare` reads. Whatever the input: never a panic, and every error says
//! where (file and line for CSV) and what. The JSONL line reader's properties are in
//! `src/cli/jsonl.rs`, beside it.

use std::path::Path;

use backtest_perf::alerts::{AlertManager, rules_from_json};
use backtest_perf::compare::compare;
use backtest_perf::engine::csv::read;
use backtest_perf::export::json::JsonReport;
use backtest_perf::{
    MetricType, Name, PerformanceContract, PerformanceEmitter, PerformanceService,
};
use proptest::prelude::*;

/// CSV-ish text: a header, then rows of cells drawn from values that break readers.
fn csv_text() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        Just(String::new()),
        Just("nan".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("2024-01-01 00:00:00".to_string()),
        Just("2024-01-01 00:00:00.001".to_string()),
        Just("9999-12-31 23:59:59".to_string()),
        Just("0000-01-01 00:00:00".to_string()),
        "[0-9]{1,13}",
        "-?[0-9]{1,4}\\.[0-9]{1,6}",
        ".{0,12}",
    ];
    let row = proptest::collection::vec(cell, 0..8).prop_map(|cells| cells.join(","));
    let header = prop_oneof![
        Just(",Open,High,Low,Close,Volume".to_string()),
        Just("time,Open,High,Low,Close".to_string()),
        ".{0,30}",
    ];
    (header, proptest::collection::vec(row, 0..12))
        .prop_map(|(header, rows)| format!("{header}\n{}", rows.join("\n")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_csv_reader_never_panics_and_names_file_and_line(text in csv_text()) {
        match read(Path::new("p.csv"), text.as_bytes(), Name::new("P"), None) {
            Ok(series) => prop_assert!(!series.candles().is_empty()),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("p.csv"), "{message}");
                if let Some(line) = e.line {
                    prop_assert!(line >= 1);
                    let at_line = format!("p.csv:{line}: ");
                    prop_assert!(message.starts_with(&at_line), "{message}");
                }
                prop_assert!(message.len() > "p.csv: ".len());
            }
        }
    }

    #[test]
    fn the_csv_reader_takes_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = read(Path::new("p.csv"), bytes.as_slice(), Name::new("P"), None) {
            prop_assert!(e.to_string().starts_with("p.csv"));
        }
    }

    #[test]
    fn alert_rules_never_panic_and_parsed_rules_evaluate(
        kind in prop_oneof![Just("above".to_string()), Just("slowShareAbove".to_string()), Just("rejectedAbove".to_string()), Just("droppedAbove".to_string()), ".{0,8}"],
        metric in prop_oneof![Just("getSignal".to_string()), Just("getsignal".to_string()), Just("".to_string()), Just("tick".to_string()), "[a-zA-Z]{0,10}"],
        statistic in prop_oneof![Just("p95".to_string()), Just("max".to_string()), Just("mean".to_string()), ".{0,5}"],
        bound in prop_oneof![Just("0".to_string()), Just("-1".to_string()), Just("1e308".to_string()), Just("\"x\"".to_string()), "[0-9]{1,20}", Just("1e400".to_string())],
        cooldown in prop_oneof![Just("60".to_string()), Just("1e13".to_string()), Just("-1".to_string()), Just("1e300".to_string()), Just("null".to_string())],
        extra in prop_oneof![Just(String::new()), Just(", \"cooldwon\": 5".to_string())],
        at in any::<i64>(),
    ) {
        let text = format!(
            r#"[{{"name": "r", "condition": {{"kind": "{kind}", "metric": "{metric}", "statistic": "{statistic}", "bound": {bound}, "threshold": {bound}, "boundPercent": {bound}}}, "severity": "warning", "cooldown": {cooldown}{extra}}}]"#
        );
        match rules_from_json(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(rules) => {
                let manager = AlertManager::new(rules);
                let bus = PerformanceEmitter::new();
                let service = PerformanceService::attached(&bus);
                for i in 0..5 {
                    let _ = bus.emit(PerformanceContract::new(MetricType::GetSignal, f64::from(i), f64::from(i)).with_symbol("A"));
                }
                let _ = bus.emit(PerformanceContract::new(MetricType::Tick, -1.0, 1.0).with_symbol("A"));
                let stats = service.get_data("A", "");
                let when = chrono::DateTime::from_timestamp_millis(at)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                manager.evaluate(&stats, when);
                manager.evaluate(&stats, when);
            }
        }
    }

    #[test]
    fn compare_reads_any_text_without_panicking(text in ".{0,200}") {
        let _ = serde_json::from_str::<JsonReport>(&text);
    }

    #[test]
    fn compare_holds_for_any_two_runs(
        a in proptest::collection::vec((0u8..3, 0.0f64..1e9), 0..40),
        b in proptest::collection::vec((0u8..3, 0.0f64..1e9), 0..40),
        threshold in 0.001f64..1e6,
        alpha in 0.0001f64..0.9999,
    ) {
        let stats = |events: &[(u8, f64)]| {
            let bus = PerformanceEmitter::new();
            let service = PerformanceService::attached(&bus);
            for (i, (metric, duration)) in events.iter().enumerate() {
                let metric = MetricType::BUILT_IN[usize::from(*metric)];
                bus.emit(PerformanceContract::new(metric, *duration, i as f64).with_symbol("A")).unwrap();
            }
            service.get_data("A", "")
        };
        let (base, cur) = (stats(&a), stats(&b));
        for row in compare(&base, &cur, threshold, alpha) {
            if let Some(change) = row.change_percent {
                prop_assert!(change.iter().all(|c| !c.is_nan()));
            }
        }
    }
}
