//! Reading events from JSONL: a `PerformanceContract` per line, or a backtest-kit report
//! line `{"reportName":"performance","data":{...}}`.

use backtest_perf::{MetricType, Name, PerformanceContract};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Every field optional, so that a missing one is named in the error. The same shape
/// reads both kinds of line: a bare event, or a report line wrapping one in `data`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    report_name: Option<String>,
    data: Option<Box<RawEvent>>,
    metric_type: Option<MetricType>,
    duration: Option<f64>,
    timestamp: Option<f64>,
    previous_timestamp: Option<f64>,
    symbol: Option<Name>,
    strategy_name: Option<Name>,
    when: Option<DateTime<Utc>>,
    self_duration: Option<f64>,
    id: Option<u64>,
    parent_id: Option<u64>,
    ok: Option<bool>,
}

impl RawEvent {
    fn into_contract(self, prefix: &str) -> Result<PerformanceContract, String> {
        let missing = |field: &str| format!("missing field `{prefix}{field}`");
        Ok(PerformanceContract {
            metric_type: self.metric_type.ok_or_else(|| missing("metricType"))?,
            duration: self.duration.ok_or_else(|| missing("duration"))?,
            timestamp: self.timestamp.ok_or_else(|| missing("timestamp"))?,
            previous_timestamp: self.previous_timestamp,
            symbol: self.symbol,
            strategy_name: self.strategy_name,
            when: self.when,
            self_duration: self.self_duration,
            id: self.id,
            parent_id: self.parent_id,
            ok: self.ok,
        })
    }
}

/// Parses one line; the error says what is wrong (the caller adds where).
pub fn parse_line(line: &str) -> Result<PerformanceContract, String> {
    let mut json = serde_json::Deserializer::from_str(line);
    let raw: RawEvent = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    match raw.report_name.as_deref() {
        None => raw.into_contract(""),
        Some("performance") => raw
            .data
            .ok_or_else(|| "report line has no `data` object".to_string())?
            .into_contract("data."),
        Some(name) => Err(format!(
            "reportName is {name:?}; only \"performance\" report lines hold performance events"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_read_the_same_event() {
        let plain = r#"{"metricType":"tick","duration":2.5,"timestamp":1732147200123.4567,"symbol":"BTCUSDT","strategyName":"s"}"#;
        let report = r#"{"reportName":"performance","data":{"metricType":"tick","duration":2.5,"timestamp":1732147200123.4567,"symbol":"BTCUSDT","strategyName":"s","exchangeName":"x"}}"#;
        let a = parse_line(plain).unwrap();
        assert_eq!(a, parse_line(report).unwrap());
        assert_eq!(a.timestamp, 1732147200123.4567);
        assert_eq!(a.metric_type, MetricType::Tick);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                r#"{"metricType":"tick","timestamp":1}"#,
                "missing field `duration`",
            ),
            (
                r#"{"reportName":"performance","data":{"metricType":"tick","duration":1}}"#,
                "missing field `data.timestamp`",
            ),
            (
                r#"{"reportName":"heat","data":{}}"#,
                "reportName is \"heat\"; only \"performance\" report lines hold performance events",
            ),
            (
                r#"{"reportName":"performance"}"#,
                "report line has no `data` object",
            ),
            (
                r#"{"metricType":"tick","duration":"fast","timestamp":1}"#,
                "duration: invalid type: string \"fast\", expected f64 at line 1 column 38",
            ),
            (
                r#"{"reportName":"performance","data":{"metricType":"tick","duration":1,"timestamp":"x"}}"#,
                "data.timestamp: invalid type: string \"x\", expected f64 at line 1 column 84",
            ),
            (
                r#"{"metricType":"tick","duration":1,"timestamp":1,"when":"yesterday"}"#,
                "when: input contains invalid characters at line 1 column 66",
            ),
            ("not json", "expected ident at line 1 column 2"),
        ];
        for (line, message) in cases {
            assert_eq!(parse_line(line).unwrap_err(), message, "{line}");
        }
    }
}
