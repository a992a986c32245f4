//! The markdown report, byte for byte, and `dump`.

use backtest_perf::report::{Column, default_columns};
use backtest_perf::{
    MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig,
};

fn event(metric: MetricType, duration: f64, timestamp: f64) -> PerformanceContract {
    PerformanceContract::new(metric, duration, timestamp)
        .with_symbol("BTCUSDT")
        .with_strategy("my-strategy")
}

/// A fixed event set: 3 ticks, 2 candle fetches, 1 signal; chained timestamps.
fn fixed_service() -> (PerformanceEmitter, PerformanceService) {
    fixed_service_with(StatsPreset::Seed)
}

fn fixed_service_with(preset: StatsPreset) -> (PerformanceEmitter, PerformanceService) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(&bus, StorageConfig::default(), preset);
    let events = [
        event(MetricType::Tick, 1000.0, 1000.0),
        event(MetricType::GetCandles, 250.5, 1010.0),
        event(MetricType::Tick, 2000.0, 3000.0),
        event(MetricType::GetCandles, 749.5, 3010.0),
        event(MetricType::Tick, 3000.0, 6000.0),
        event(MetricType::GetSignal, 0.25, 6001.0),
    ];
    for e in events {
        bus.emit(e).unwrap();
    }
    (bus, service)
}

/// The whole-run layout. The typical duration (the median of the averages, 500 ms) makes
/// the table's unit seconds. Waits: ticks 2,000 and 3,000 ms apart, candle fetches 2,000.
/// Wall time: the first tick started at 0 ms, the signal ended at 6,001 ms; the events
/// overlap (they were made up, not nested), so the time in them exceeds the wall time.
const EXPECTED: &str = "# Performance Report: my-strategy

**Symbol:** BTCUSDT
**Events:** 6 (statistics over all of them; all kept as events)
**Time in hooks:** 7.00 s (self time; nested hooks are not counted twice)
**Wall time:** 6.00 s from the first event's start to the last one's end (time in hooks is 116.7% of it)
**Metric types:** 3

## Where the time goes (self time)

- **tick**: 85.7% (6.00 s self, 6.00 s total)
- **getCandles**: 14.3% (1.00 s self, 1.00 s total)
- **getSignal**: 0.0% (250 µs self, 250 µs total)

## Detailed Metrics (durations in s)

| Metric | Count | Total | Self | Avg | Min | Max | Median | P95 | P99 | Std Dev | Avg Wait | Min Wait | Max Wait |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| tick | 3 | 6.00 | 6.00 | 2.00 | 1.00 | 3.00 | 2.00 | 3.00 | 3.00 | 0.816 | 2.50 | 2.00 | 3.00 |
| getCandles | 2 | 1.00 | 1.00 | 0.500 | 0.251 | 0.750 | 0.251 | 0.750 | 0.750 | 0.249 | 2.00 | 2.00 | 2.00 |
| getSignal | 1 | 0.000250 | 0.000250 | 0.000250 | 0.000250 | 0.000250 | 0.000250 | 0.000250 | 0.000250 | 0 | 0 | 0 | 0 |

**Note:** Total is the time inside each operation; Self is the part not spent in operations nested inside it, so the Self column adds up to the time in hooks. Count, Total, Self, Avg, Min, Max, Std Dev (population) and the wait times cover every event. Median, P95 and P99 are nearest-rank percentiles, exact. Wait times are the intervals between consecutive events of the same type.
";

/// backtest-kit's layout, byte for byte as before, under the `backtest-kit` preset: linear
/// percentiles (tick p95: 2000 * 0.1 + 3000 * 0.9) and the sample standard deviation.
const EXPECTED_BACKTEST_KIT: &str = "# Performance Report: my-strategy

**Symbol:** BTCUSDT
**Total events:** 6
**Total execution time:** 7,000.25ms
**Number of metric types:** 3

## Time Distribution

- **tick**: 85.7% (6,000.00ms total)
- **getCandles**: 14.3% (1,000.00ms total)
- **getSignal**: 0.0% (0.25ms total)

## Detailed Metrics

| Metric | Count | Avg (ms) | Min (ms) | Max (ms) | Median (ms) | P95 (ms) | P99 (ms) | Std Dev | Avg Wait (ms) | Min Wait (ms) | Max Wait (ms) |
|---|---|---|---|---|---|---|---|---|---|---|---|
| tick | 3 | 2000.00 | 1000.00 | 3000.00 | 2000.00 | 2900.00 | 2980.00 | 1000.00 | 2500.00 | 2000.00 | 3000.00 |
| getCandles | 2 | 500.00 | 250.50 | 749.50 | 500.00 | 724.55 | 744.51 | 352.85 | 2000.00 | 2000.00 | 2000.00 |
| getSignal | 1 | 0.25 | 0.25 | 0.25 | 0.25 | 0.25 | 0.25 | 0.00 | 0.00 | 0.00 | 0.00 |

**Note:** All durations are in milliseconds. P95/P99 represent 95th and 99th percentile response times. Wait times show the interval between consecutive events of the same type.
";

#[test]
fn whole_run_report_byte_for_byte() {
    let (_bus, service) = fixed_service();
    assert_eq!(service.get_report("BTCUSDT", "my-strategy"), EXPECTED);
}

#[test]
fn report_matches_the_reference_layout_byte_for_byte() {
    let (_bus, service) = fixed_service_with(StatsPreset::BacktestKit);
    assert_eq!(
        service.get_report("BTCUSDT", "my-strategy"),
        EXPECTED_BACKTEST_KIT
    );
}

#[test]
fn waits_under_the_timestamps_resolution_are_explained_where_they_show() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    // 2025-11-22, when an f64 of epoch ms resolves 2^-12 ms (244 ns): the second tick's
    // timestamp, 100 ns after the first, is the same number, and its wait reads 0.
    let t = 1_763_800_000_000.0;
    for at in [t, t + 0.0001, t + 0.01] {
        bus.emit(event(MetricType::Tick, 0.001, at)).unwrap();
    }
    let stats = service.get_data("BTCUSDT", "my-strategy");
    assert_eq!(
        (
            stats.metric_stats[&MetricType::Tick].min_wait_time,
            stats.metric_stats[&MetricType::Tick].max_wait_time
        ),
        (0.0, 0.010009765625)
    );
    let note = "event timestamps are epoch ms in an f64, which resolve 244 ns at these dates: a wait shorter than that shows as 0";
    assert!(
        service
            .get_report("BTCUSDT", "my-strategy")
            .ends_with(&format!(" Wait times are the intervals between consecutive events of the same type; {note}.\n"))
    );
    let page = backtest_perf::export::html::render_html(&stats, None);
    assert!(page.contains(&format!("<p class=\"meta\">Note: {note}</p>")));
}

#[test]
fn the_note_names_the_types_whose_percentiles_come_from_the_histogram() {
    let bus = PerformanceEmitter::new();
    let config = StorageConfig {
        max_events: 3,
        ..StorageConfig::default()
    };
    let service = PerformanceService::attached_with(&bus, config, StatsPreset::Seed);
    // The one signal leaves the window of three as the ticks arrive after it.
    bus.emit(event(MetricType::GetSignal, 0.5, 1.0)).unwrap();
    for at in 2..6 {
        bus.emit(event(MetricType::Tick, 1.0, f64::from(at)))
            .unwrap();
    }
    let report = service.get_report("BTCUSDT", "my-strategy");
    assert!(
        report.contains("Median, P95 and P99 are nearest-rank percentiles: exact, except those of tick, getSignal, which are read from the whole-run histogram (within 0.1%) because some of their events have left the window (it keeps the newest events of all types together)."),
        "{report}"
    );
}

#[test]
fn empty_report() {
    let service = PerformanceService::attached(&PerformanceEmitter::new());
    assert_eq!(
        service.get_report("BTCUSDT", "none"),
        "# Performance Report: none\n\nNo performance metrics recorded yet.\n"
    );
}

#[test]
fn rejected_and_dropped_events_show_in_the_report() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        backtest_perf::StorageConfig {
            max_events: 1,
            max_keys: 10,
        },
        Default::default(),
    );
    assert!(bus.emit(event(MetricType::Tick, -5.0, 1.0)).is_err());
    assert_eq!(
        service.get_report("BTCUSDT", "my-strategy"),
        "# Performance Report: my-strategy\n\nNo performance metrics recorded yet.\n\n**Rejected events:** 1\n"
    );
    bus.emit(event(MetricType::Tick, 1.0, 2.0)).unwrap();
    bus.emit(event(MetricType::Tick, 1.0, 3.0)).unwrap();
    let report = service.get_report("BTCUSDT", "my-strategy");
    assert!(
        report.contains("**Metric types:** 1\n**Rejected events:** 1 (invalid, never counted)\n**Left the window:** 1 events (the statistics above still count them; only the raw events are gone)\n\n## Where"),
        "{report}"
    );
    assert!(
        report
            .contains("**Events:** 2 (statistics over all of them; the newest 1 kept as events)\n"),
        "{report}"
    );
    let data = service.get_data("BTCUSDT", "my-strategy");
    // Two events in the whole run, one kept in the window.
    assert_eq!(
        (
            data.total_events,
            data.events.len(),
            data.rejected,
            data.dropped
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn percent_is_zero_when_the_total_is_zero() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    bus.emit(event(MetricType::Tick, 0.0, 1.0)).unwrap();
    let report = service.get_report("BTCUSDT", "my-strategy");
    assert!(
        report.contains("- **tick**: 0.0% (0 ns self, 0 ns total)\n"),
        "{report}"
    );
    assert!(!report.contains("NaN"));
}

#[test]
fn custom_and_hidden_columns() {
    let (_bus, service) = fixed_service();
    let columns = vec![
        Column::new("metricType", "Metric", |m| m.metric_type.to_string()),
        Column::new("count", "N", |m| m.count.to_string()),
        Column::ms("p99", "P99 (ms)", |m| m.p99).hidden(),
        Column::new("spread", "Spread", |m| {
            format!("{:.1}", m.max_duration - m.min_duration)
        }),
    ];
    let report = service.get_report_with("BTCUSDT", "my-strategy", &columns);
    let table: Vec<&str> = report.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(
        table,
        [
            "| Metric | N | Spread |",
            "|---|---|---|",
            "| tick | 3 | 2000.0 |",
            "| getCandles | 2 | 499.0 |",
            "| getSignal | 1 | 0.0 |",
        ]
    );
    let default_table = service.get_report_with("BTCUSDT", "my-strategy", &default_columns());
    assert_eq!(default_table, EXPECTED);
}

#[test]
fn names_with_pipes_and_newlines_keep_the_layout() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let e = PerformanceContract::new(MetricType::custom("a|b\nc"), 1.0, 1.0)
        .with_symbol("BTC|USDT")
        .with_strategy("my\nstrat*_x");
    bus.emit(e).unwrap();
    let report = service.get_report("BTC|USDT", "my\nstrat*_x");
    let expected_head = "# Performance Report: my\\nstrat\\*\\_x\n\n**Symbol:** BTC\\|USDT\n";
    assert!(report.starts_with(expected_head), "{report}");
    assert!(
        report.contains("- **a\\|b\\nc**: 100.0% (1.00 ms self, 1.00 ms total)\n"),
        "{report}"
    );
    let row = report.lines().find(|l| l.starts_with("| a")).unwrap();
    assert_eq!(
        row,
        "| a\\|b\\nc | 1 | 0.00100 | 0.00100 | 0.00100 | 0.00100 | 0.00100 | 0.00100 | 0.00100 | 0.00100 | 0 | 0 | 0 | 0 |",
        "1 ms in a table in seconds (0.001 s has 3 leading zeros)"
    );
    // Every table line has the same number of unescaped cell separators.
    let separators = |l: &str| l.replace("\\|", "").matches('|').count();
    for line in report.lines().filter(|l| l.starts_with('|')) {
        assert_eq!(separators(line), 15, "{line}");
    }
}

#[test]
fn dump_writes_the_report_and_returns_the_path() {
    let (_bus, service) = fixed_service();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested").join("performance");
    let path = service.dump_to("BTCUSDT", "my-strategy", &out).unwrap();
    assert_eq!(path, out.join("my-strategy.md"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXPECTED);
}

#[test]
fn unsafe_strategy_names_stay_inside_the_folder() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for name in ["../../x", "", "a/b", "стратегия", "..", "/abs"] {
        bus.emit(
            PerformanceContract::new(MetricType::Tick, 1.0, 1.0)
                .with_symbol("S")
                .with_strategy(name),
        )
        .unwrap();
        let path = service.dump_to("S", name, &out).unwrap();
        assert_eq!(
            path.parent().unwrap(),
            out,
            "{name:?} -> {}",
            path.display()
        );
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(file.ends_with(".md") && !file.starts_with('.'), "{file}");
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 6);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing written beside the folder"
    );
    assert!(out.join("global.md").exists());
}

/// Makes a folder read-only for as long as it lives: mode 0555, and for root (whom modes do
/// not stop) the immutable attribute.
#[cfg(target_os = "linux")]
struct ReadOnly<'a>(&'a std::path::Path, bool);

#[cfg(target_os = "linux")]
impl<'a> ReadOnly<'a> {
    fn new(dir: &'a std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let writable = || {
            let probe = dir.join(".probe");
            let ok = std::fs::write(&probe, "x").is_ok();
            let _ = std::fs::remove_file(probe);
            ok
        };
        let mut immutable = false;
        if writable() {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status();
            immutable = status.map(|s| s.success()).unwrap_or(false);
        }
        assert!(
            !writable(),
            "could not make {} read-only (mode 0555, chattr +i)",
            dir.display()
        );
        ReadOnly(dir, immutable)
    }
}

#[cfg(target_os = "linux")]
impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn read_only_folder_gives_a_typed_error_and_keeps_the_earlier_report() {
    let (bus, service) = fixed_service();
    let dir = tempfile::tempdir().unwrap();
    let path = service
        .dump_to("BTCUSDT", "my-strategy", dir.path())
        .unwrap();
    bus.emit(event(MetricType::Tick, 99.0, 9999.0)).unwrap();
    let err = {
        let _read_only = ReadOnly::new(dir.path());
        service
            .dump_to("BTCUSDT", "my-strategy", dir.path())
            .unwrap_err()
    };
    assert_eq!(err.path(), path);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("could not write report {}: ", path.display())),
        "{message}"
    );
    assert!(
        message.ends_with("check free space and the folder's permissions"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXPECTED);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["my-strategy.md"], "no temporary file left behind");
}

#[test]
fn a_folder_that_cannot_be_created_is_named_in_the_error() {
    let (_bus, service) = fixed_service();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let err = service
        .dump_to("BTCUSDT", "my-strategy", blocker.join("sub"))
        .unwrap_err();
    assert_eq!(err.path(), blocker.join("sub"));
    assert!(err.to_string().starts_with(&format!(
        "could not create report folder {}: ",
        blocker.join("sub").display()
    )));
}

#[cfg(unix)]
#[test]
fn dumped_reports_are_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let (_bus, service) = fixed_service();
    let dir = tempfile::tempdir().unwrap();
    let path = service
        .dump_to("BTCUSDT", "my-strategy", dir.path())
        .unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
