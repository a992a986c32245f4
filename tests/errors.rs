//! Errors, the golden signal (issue 12): operations that failed carry `ok: false`, are
//! counted per metric type with their rate in `get_data` and the report, and an
//! `errorRateAbove` rule fires on them.

use backtest_perf::alerts::{AlertManager, rules_from_json};
use backtest_perf::engine::{
    Backtest, Context, Signal, Strategy, StrategyError, SyntheticConfig, SyntheticExchange,
};
use backtest_perf::{MetricType, PerformanceEmitter, PerformanceService};

/// Gives an invalid long signal (take profit below the stop loss) on every 10th call.
#[derive(Default)]
struct Inverted {
    calls: u64,
}

impl Strategy for Inverted {
    fn name(&self) -> &str {
        "inverted"
    }
    fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        self.calls += 1;
        Ok(self
            .calls
            .is_multiple_of(10)
            .then(|| Signal::long(1.0, 2.0)))
    }
}

/// Fails on its 5th call.
#[derive(Default)]
struct Failing {
    calls: u64,
}

impl Strategy for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        self.calls += 1;
        if self.calls == 5 {
            return Err("the model server is down".into());
        }
        Ok(None)
    }
}

#[test]
fn rejected_signals_are_failed_get_signal_calls_counted_reported_and_alerted() {
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let result = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .run(&mut Inverted::default())
        .unwrap();
    let calls = result.frames;
    assert_eq!(
        calls, 1_440,
        "one day of 1-minute frames, no position ever opens"
    );
    let stats = service.get_data("SYN", "inverted");
    let signal = &stats.metric_stats[&MetricType::GetSignal];
    assert_eq!(signal.count as u64, calls);
    assert_eq!(signal.errors, calls / 10);
    assert_eq!(result.rejected.len() as u64, calls / 10);
    assert_eq!(
        signal.error_rate,
        (calls / 10) as f64 / calls as f64 * 100.0
    );
    assert_eq!(stats.metric_stats[&MetricType::Tick].errors, 0);
    let report = backtest_perf::report::render(&stats, &backtest_perf::report::default_columns());
    assert!(
        report.contains("\n**Failed operations (ok: false):** getSignal 144 of 1,440 (10.0%)\n"),
        "{report}"
    );
    let rules = rules_from_json(
        r#"[{"name": "signals failing", "severity": "critical",
             "condition": {"kind": "errorRateAbove", "metric": "getSignal", "boundPercent": 5}}]"#,
    )
    .unwrap();
    let alerts = AlertManager::new(rules).evaluate_now(&stats);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].value, signal.error_rate);
    let quiet = rules_from_json(
        r#"[{"name": "x", "severity": "warning",
             "condition": {"kind": "errorRateAbove", "metric": "getSignal", "boundPercent": 20}}]"#,
    )
    .unwrap();
    assert!(AlertManager::new(quiet).evaluate_now(&stats).is_empty());
}

#[test]
fn a_strategy_error_stops_the_run_and_its_call_is_recorded_as_failed() {
    let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let err = Backtest::new(&exchange, "SYN")
        .unwrap()
        .with_bus(bus)
        .run(&mut Failing::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("the model server is down"),
        "{err}"
    );
    let stats = service.get_data("SYN", "failing");
    let signal = &stats.metric_stats[&MetricType::GetSignal];
    assert_eq!((signal.count, signal.errors), (5, 1));
    let tick = &stats.metric_stats[&MetricType::Tick];
    assert_eq!((tick.count, tick.errors), (5, 1));
}
