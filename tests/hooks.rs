//! A backtest times its five hooks onto the global bus; a listener sees them; the report
//! is dumped.

use std::sync::{Arc, Mutex};

use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
use backtest_perf::strategies::SmaCrossover;
use backtest_perf::{MetricType, Performance, PerformanceContract, listen_performance};

#[test]
fn a_backtest_emits_every_hook_and_dumps_its_report() {
    let events: Arc<Mutex<Vec<PerformanceContract>>> = Arc::default();
    let log = events.clone();
    let sub = listen_performance(move |e: &PerformanceContract| {
        if e.symbol.is_some_and(|s| s == "HOOKS") {
            log.lock().unwrap().push(*e);
        }
    });
    let exchange = SyntheticExchange::new("HOOKS".into(), SyntheticConfig::days(1)).unwrap();
    let series_start = 1_704_067_200_000;
    let result = Backtest::new(&exchange, "HOOKS")
        .unwrap()
        .run(&mut SmaCrossover::default())
        .unwrap();
    sub.flush();
    assert!(result.summary.signals > 0, "the day has crossovers");

    let events = events.lock().unwrap();
    let count = |t: MetricType| events.iter().filter(|e| e.metric_type == t).count();
    assert_eq!(count(MetricType::Tick) as u64, result.frames);
    assert_eq!(
        count(MetricType::GetSignal) as u64,
        result.frames,
        "throttle of one minute: every tick asks"
    );
    let opened = result.closed.len() + result.rejected.len();
    assert_eq!(
        count(MetricType::GetAveragePrice),
        opened,
        "one VWAP per market signal"
    );
    assert_eq!(count(MetricType::Backtest), result.closed.len());
    assert_eq!(
        count(MetricType::GetCandles),
        result.frames as usize + result.closed.len(),
        "history each tick, plus the replay candles of each signal"
    );
    for e in events.iter() {
        assert_eq!(e.strategy_name.unwrap(), "sma-crossover");
        let when = e
            .when
            .expect("every hook carries the simulated time")
            .timestamp_millis();
        assert!(
            (series_start..=series_start + 86_400_000).contains(&when),
            "{when}"
        );
        assert!(e.duration >= 0.0);
    }
    for t in MetricType::BUILT_IN {
        let series: Vec<&PerformanceContract> =
            events.iter().filter(|e| e.metric_type == t).collect();
        assert_eq!(
            series[0].previous_timestamp, None,
            "{t}: first of its type in this key"
        );
        for pair in series.windows(2) {
            assert_eq!(pair[1].previous_timestamp, Some(pair[0].timestamp), "{t}");
        }
    }

    let stats = Performance::get_data("HOOKS", "sma-crossover");
    assert_eq!(stats.total_events, events.len());
    assert_eq!(stats.metric_stats.len(), 5);
    let path = Performance::dump("HOOKS", "sma-crossover").unwrap();
    assert_eq!(
        path,
        std::path::Path::new("./dump/performance/sma-crossover.md")
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        Performance::get_report("HOOKS", "sma-crossover")
    );
}
