//! The HTML report: self-contained, escaped, every chart present. (scripts/check-html.sh
//! renders a real one in headless Chromium.)

use std::sync::Arc;

use backtest_perf::export::html::{render_html, write_html};
use backtest_perf::tracker::{ManualClock, RunInfo, Tracker, TrackerOptions};
use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};

fn service() -> (PerformanceEmitter, PerformanceService) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let name = "<script>alert(1)</script>";
    for (metric, duration) in [
        (MetricType::Tick, 0.0005),
        (MetricType::Tick, 0.02),
        (MetricType::GetCandles, 3.0),
    ] {
        bus.emit(
            PerformanceContract::new(metric, duration, 1.0)
                .with_symbol("A&B")
                .with_strategy(name),
        )
        .unwrap();
    }
    (bus, service)
}

#[test]
fn a_self_contained_escaped_page_with_every_chart() {
    let (_bus, service) = service();
    let stats = service.get_data("A&B", "<script>alert(1)</script>");
    let clock = Arc::new(ManualClock::default());
    let tracker = Tracker::with_clock(
        RunInfo::named("html"),
        TrackerOptions::default(),
        clock.clone(),
    );
    let tick = tracker.start("tick", None);
    clock.advance_ms(1.0);
    tracker.measure("getSignal", || clock.advance_ms(2.0));
    tick.end();
    let report = tracker.finish().unwrap();
    let root = report.events[0].id;

    let html = render_html(&stats, Some((&report, root)));
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(
        !html.contains("<script"),
        "names are escaped, and the page has no scripts"
    );
    assert!(
        html.contains("<title>Performance Report: &lt;script&gt;alert(1)&lt;/script&gt;</title>")
    );
    assert!(html.contains("Symbol: <b>A&amp;B</b>"));
    for forbidden in ["src=", "href=", "url(", "@import"] {
        assert!(
            !html.contains(forbidden),
            "{forbidden}: the page must load nothing"
        );
    }
    // 1 distribution + 2 histograms + the timeline.
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("<figcaption>tick (2 events, the whole run)</figcaption>"));
    // The markdown report's columns and unit: the typical average (tick's 10.25 µs) reads
    // as 0.0103 ms, so the table is in ms and tick's min of 500 ns is 0.000500.
    assert!(html.contains("<h2>Detailed metrics (durations in ms)</h2>"));
    assert!(html.contains("<td>0.000500</td>"), "min of tick");
    assert!(
        html.contains("<th>Self</th>"),
        "the same columns as the markdown"
    );
    assert!(
        html.contains("<title>getSignal 2.00 ms</title>"),
        "the timeline holds the nested operation"
    );
    // 0.5 µs and 20 µs land in different bins; each bin's tooltip counts its events.
    assert_eq!(html.matches("<title>1 events</title>").count(), 3);

    let dir = tempfile::tempdir().unwrap();
    let path = write_html(&stats, None, dir.path()).unwrap();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".html")
    );
    assert!(file.contains("Not tracked: run with <code>--timeline</code> to include it."));
}

#[test]
fn an_empty_report_says_so() {
    let service = PerformanceService::attached(&PerformanceEmitter::new());
    let html = render_html(&service.get_data("X", "none"), None);
    assert!(html.contains(
        "<h1>Performance Report: none</h1>\n<p>No performance metrics recorded yet.</p>"
    ));
}

#[test]
fn the_latency_histograms_cover_the_whole_run_not_the_window() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        backtest_perf::StorageConfig {
            max_events: 1,
            ..Default::default()
        },
        Default::default(),
    );
    for d in [0.001, 0.002, 0.004] {
        bus.emit(
            PerformanceContract::new(MetricType::Tick, d, 1.0)
                .with_symbol("W")
                .with_strategy("w"),
        )
        .unwrap();
    }
    let html = render_html(&service.get_data("W", "w"), None);
    assert!(
        html.contains("<figcaption>tick (3 events, the whole run)</figcaption>"),
        "{html}"
    );
    assert!(
        html.contains(
            "Events: <b>3</b> (statistics over all of them; the newest 1 kept as events)"
        )
    );
}
