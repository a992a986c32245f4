//! Alert rules, cooldowns on a fixed clock, and delivery to a file, a failing sink, and a
//! webhook on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backtest_perf::alerts::{
    Alert, AlertManager, AlertRule, AlertSink, Condition, FileSink, Severity, Statistic,
};
use backtest_perf::{
    MetricType, PerformanceContract, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig,
};
use chrono::{DateTime, TimeZone, Utc};

fn t(minutes: i64, seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
        + chrono::Duration::seconds(minutes * 60 + seconds)
}

/// getSignal durations 1..=20 ms for A:s, one rejected event, and a cap that drops 2.
fn service() -> (PerformanceEmitter, PerformanceService) {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(
        &bus,
        StorageConfig {
            max_events: 18,
            max_keys: 8,
        },
        StatsPreset::Seed,
    );
    for d in 1..=20 {
        let e = PerformanceContract::new(MetricType::GetSignal, f64::from(d), f64::from(d))
            .with_symbol("A")
            .with_strategy("s");
        bus.emit(e).unwrap();
    }
    let bad = PerformanceContract::new(MetricType::GetSignal, -1.0, 30.0)
        .with_symbol("A")
        .with_strategy("s");
    assert!(bus.emit(bad).is_err());
    (bus, service)
}

#[derive(Default)]
struct Collect(Mutex<Vec<Alert>>);
impl AlertSink for Collect {
    fn deliver(&self, alert: &Alert) -> Result<(), String> {
        self.0.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

struct Broken;
impl AlertSink for Broken {
    fn deliver(&self, _: &Alert) -> Result<(), String> {
        Err("disk full".into())
    }
}

#[test]
fn each_condition_fires_with_its_numbers() {
    let (_bus, service) = service();
    // 1..=20 ms, the newest 18 kept: the whole-run p95 (rank 19, 19 ms) is read from the
    // histogram (within 0.1%); the slow share still counts the window.
    let stats = service.get_data("A", "s");
    let rules = vec![
        AlertRule::new(
            "p95",
            Condition::Above {
                metric: MetricType::GetSignal,
                statistic: Statistic::P95,
                bound: 15.0,
            },
            Severity::Warning,
        ),
        AlertRule::new(
            "p95 fine",
            Condition::Above {
                metric: MetricType::GetSignal,
                statistic: Statistic::P95,
                bound: 25.0,
            },
            Severity::Warning,
        ),
        AlertRule::new(
            "slow share",
            Condition::SlowShareAbove {
                metric: MetricType::GetSignal,
                threshold: 10.0,
                bound_percent: 50.0,
            },
            Severity::Critical,
        ),
        AlertRule::new(
            "rejects",
            Condition::RejectedAbove { bound: 0 },
            Severity::Critical,
        ),
        AlertRule::new(
            "drops",
            Condition::DroppedAbove { bound: 1 },
            Severity::Warning,
        ),
        AlertRule::new(
            "no such metric",
            Condition::Above {
                metric: MetricType::Tick,
                statistic: Statistic::Max,
                bound: 0.0,
            },
            Severity::Warning,
        ),
    ];
    let fired = AlertManager::new(rules).evaluate(&stats, t(0, 0));
    let messages: Vec<&str> = fired.iter().map(|a| a.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "p95: p95 of getSignal is 18.997 ms, above 15.000 ms (A:s)",
            "slow share: 55.6% of getSignal took over 10 ms, above 50% (A:s)",
            "rejects: 1 events rejected, above 0 (A:s)",
            "drops: 2 events dropped, above 1 (A:s)",
        ]
    );
    assert_eq!((fired[1].value * 10.0).round() / 10.0, 55.6); // 10 of 18 above 10 ms
    assert_eq!(
        (
            fired[0].symbol.as_str(),
            fired[0].strategy.as_str(),
            fired[0].at
        ),
        ("A", "s", t(0, 0))
    );
}

#[test]
fn cooldowns_per_rule_and_key_on_a_fixed_clock() {
    let (bus, service) = service();
    for d in [30.0, 40.0] {
        bus.emit(
            PerformanceContract::new(MetricType::GetSignal, d, 1.0)
                .with_symbol("B")
                .with_strategy("s"),
        )
        .unwrap();
    }
    let above = Condition::Above {
        metric: MetricType::GetSignal,
        statistic: Statistic::Max,
        bound: 5.0,
    };
    let custom = AlertRule {
        cooldown: Some(Duration::from_secs(30)),
        ..AlertRule::new("custom", above.clone(), Severity::Warning)
    };
    let manager = AlertManager::new(vec![
        AlertRule::new("critical", above.clone(), Severity::Critical),
        AlertRule::new("warning", above, Severity::Warning),
        custom,
    ]);
    let (a, b) = (service.get_data("A", "s"), service.get_data("B", "s"));
    let names = |alerts: Vec<Alert>| alerts.into_iter().map(|a| a.rule).collect::<Vec<_>>();
    assert_eq!(
        names(manager.evaluate(&a, t(0, 0))),
        ["critical", "warning", "custom"]
    );
    assert_eq!(
        names(manager.evaluate(&b, t(0, 0))),
        ["critical", "warning", "custom"],
        "keys cool down apart"
    );
    assert!(manager.evaluate(&a, t(0, 29)).is_empty());
    assert_eq!(names(manager.evaluate(&a, t(0, 30))), ["custom"]);
    // The 30-second rule is due again long before the 5-minute one.
    assert_eq!(names(manager.evaluate(&a, t(4, 59))), ["custom"]);
    assert_eq!(names(manager.evaluate(&a, t(5, 0))), ["critical"]);
    assert_eq!(
        names(manager.evaluate(&a, t(15, 0))),
        ["critical", "warning", "custom"]
    );
}

#[test]
fn delivery_to_a_file_and_past_a_failing_sink() {
    let (_bus, service) = service();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts").join("log.jsonl");
    let collect = Arc::new(Collect::default());
    let manager = AlertManager::new(vec![AlertRule::new(
        "rejects",
        Condition::RejectedAbove { bound: 0 },
        Severity::Critical,
    )])
    .with_sink(Arc::new(Broken))
    .with_sink(Arc::new(FileSink::new(&path)))
    .with_sink(collect.clone());
    manager.evaluate(&service.get_data("A", "s"), t(0, 0));
    manager.evaluate(&service.get_data("A", "s"), t(10, 0));
    assert_eq!(manager.failures(), 2);
    assert_eq!(manager.failure_reasons(), ["disk full", "disk full"]);
    assert_eq!(collect.0.lock().unwrap().len(), 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["rule"], "rejects");
    assert_eq!(lines[1]["severity"], "critical");
    assert_eq!(lines[1]["at"], "2024-01-01T00:10:00Z");
    assert_eq!(
        lines[0]["message"],
        "rejects: 1 events rejected, above 0 (A:s)"
    );
}

#[cfg(feature = "webhook")]
#[test]
fn a_webhook_receives_the_alert_as_a_json_post() {
    use backtest_perf::alerts::WebhookSink;
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut request = server
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("a request");
        let mut body = String::new();
        request.as_reader().read_to_string(&mut body).unwrap();
        let seen = (
            request.method().to_string(),
            request.url().to_string(),
            request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Content-Type"))
                .map(|h| h.value.to_string()),
            body,
        );
        request.respond(tiny_http::Response::empty(204)).unwrap();
        seen
    });
    let (_bus, service) = service();
    let manager = AlertManager::new(vec![AlertRule::new(
        "rejects",
        Condition::RejectedAbove { bound: 0 },
        Severity::Critical,
    )])
    .with_sink(Arc::new(WebhookSink::new(format!(
        "http://{addr}/hooks/alerts"
    ))));
    manager.evaluate(&service.get_data("A", "s"), t(0, 0));
    let (method, url, content_type, body) = receiver.join().unwrap();
    assert_eq!((method.as_str(), url.as_str()), ("POST", "/hooks/alerts"));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let alert: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        alert["message"],
        "rejects: 1 events rejected, above 0 (A:s)"
    );
    assert_eq!(manager.failures(), 0);

    // Nobody listening: the failure is counted, nothing panics.
    let gone = AlertManager::new(vec![AlertRule::new(
        "rejects",
        Condition::RejectedAbove { bound: 0 },
        Severity::Critical,
    )])
    .with_sink(Arc::new(WebhookSink::new(format!(
        "http://{addr}/hooks/alerts"
    ))));
    gone.evaluate(&service.get_data("A", "s"), t(0, 0));
    assert_eq!(gone.failures(), 1);
}

/// `backtest --alerts` checks the rules while the run goes on, every simulated day by
/// default, on the statistics of that moment, and once more at the run's end.
#[test]
#[cfg(feature = "cli")]
fn rules_are_checked_during_the_run_in_simulated_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"name": "dropping", "severity": "warning", "cooldown": 0, "condition": {"kind": "droppedAbove", "bound": 0}}]"#,
    )
    .unwrap();
    let file = dir.path().join("alerts.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
        .args(["backtest", "--strategy", "sma-crossover", "--alerts"])
        .arg(&rules)
        .arg("--alert-file")
        .arg(&file)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |i: usize| alerts[i]["at"].as_str().unwrap().to_string();
    // The window (10,000 events) first overflows in autumn 2017: from then on every
    // simulated midnight's check fires, judged on the statistics of that moment (as of
    // the batch of hook events that crossed it: 1,024 or more, ending with a tick) ...
    assert_eq!(at(0), "2017-11-01T00:00:00Z");
    assert_eq!(alerts[0]["value"], serde_json::json!(256.0));
    assert_eq!(
        alerts.len(),
        100,
        "99 simulated midnights, 2017-11-01 to 2018-02-07, and the end"
    );
    assert!(
        alerts[..alerts.len() - 1]
            .iter()
            .all(|a| a["at"].as_str().unwrap().ends_with("T00:00:00Z"))
    );
    // ... and the last check is at the run's end, on its final statistics.
    let last = alerts.len() - 1;
    assert_eq!(at(last), "2018-02-07T16:00:00Z");
    assert_eq!(alerts[last]["value"], serde_json::json!(3973.0));
}

/// SLOs: an objective rule fires when its error budget is spent, not before.
#[test]
fn an_objective_fires_when_its_error_budget_is_spent() {
    use backtest_perf::alerts::{AlertManager, objective_status, rules_from_json};
    use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let rules = rules_from_json(
        r#"[{"name": "fast signals", "severity": "critical",
             "condition": {"kind": "objective", "metric": "getSignal", "percentile": 98, "below": 5}}]"#,
    )
    .unwrap();
    let manager = AlertManager::new(rules);
    let emit = |ms: f64| {
        bus.emit(PerformanceContract::new(MetricType::GetSignal, ms, 1.0).with_symbol("A"))
            .unwrap()
    };
    for _ in 0..99 {
        emit(1.0);
    }
    emit(7.0); // 1 of 100 over 5 ms: half the budget of 2
    let stats = service.get_data("A", "");
    let status = objective_status(&stats, MetricType::GetSignal, 98.0, 5.0).unwrap();
    assert_eq!((status.over, status.budget_left_percent), (1, 50.0));
    assert!(manager.evaluate_now(&stats).is_empty());
    emit(8.0); // 2 of 101: the budget of 2.02 is nearly spent, not yet
    assert!(manager.evaluate_now(&service.get_data("A", "")).is_empty());
    emit(9.0); // 3 of 102: spent
    let fired = manager.evaluate_now(&service.get_data("A", ""));
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0].message.contains(
            "98% of getSignal under 5 ms: 2.941% took longer, the error budget of 2.000% is spent"
        ),
        "{}",
        fired[0].message
    );
    let bad = rules_from_json(
        r#"[{"name": "x", "severity": "warning",
             "condition": {"kind": "objective", "metric": "tick", "percentile": 100, "below": 5}}]"#,
    )
    .unwrap_err();
    assert!(
        bad.to_string().contains("percentile above 0 and below 100"),
        "{bad}"
    );
}
