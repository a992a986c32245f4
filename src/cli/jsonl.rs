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

/// The longest line read, in bytes: an event is a few hundred.
pub const MAX_LINE: usize = 1 << 20;

/// How a bounded line read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (with its `\n` if it had one) is in the buffer.
    Line,
    /// The input ended: nothing was read.
    End,
    /// The line was longer than [`MAX_LINE`]; the buffer holds its start.
    TooLong,
}

/// Reads one line into `buf` (cleared first), never holding more than [`MAX_LINE`] bytes,
/// so that an input without newlines (`/dev/zero`) cannot exhaust memory.
pub fn read_line(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::End
            } else {
                LineRead::Line
            });
        }
        let room = MAX_LINE - buf.len();
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (available.len().min(room), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
        if buf.len() >= MAX_LINE {
            return Ok(LineRead::TooLong);
        }
    }
}

/// Parses one line; the error says what is wrong (the caller adds where). A UTF-8
/// byte-order mark before the event is ignored; anything after it is an error.
pub fn parse_line(line: &str) -> Result<PerformanceContract, String> {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let mut json = serde_json::Deserializer::from_str(line);
    let raw: RawEvent = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    json.end().map_err(|e| {
        format!("{e}: a line holds one event and nothing after it (one JSON object per line)")
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
    use std::io::Read;

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
    fn a_byte_order_mark_is_not_part_of_the_event() {
        let line = "\u{feff}{\"metricType\":\"tick\",\"duration\":1,\"timestamp\":1}";
        assert_eq!(parse_line(line).unwrap().duration, 1.0);
    }

    #[test]
    fn lines_are_read_whole_up_to_the_limit_and_never_beyond() {
        let input = b"ab\ncd".to_vec();
        let mut reader = std::io::BufReader::with_capacity(1, input.as_slice());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"ab\n");
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"cd");
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::End);
        let zeros = std::io::repeat(0).take(3 * MAX_LINE as u64);
        let mut reader = std::io::BufReader::new(zeros);
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::TooLong);
        assert_eq!(buf.len(), MAX_LINE);
        let mut exact = vec![b'y'; MAX_LINE - 1];
        exact.push(b'\n');
        let mut reader = std::io::BufReader::new(exact.as_slice());
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf.len(), MAX_LINE);
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
            (
                r#"{"metricType":"tick","duration":1,"timestamp":1} trailing"#,
                "trailing characters at line 1 column 50: a line holds one event and nothing after it (one JSON object per line)",
            ),
            (
                r#"{"metricType":"tick","duration":1,"timestamp":1}{"metricType":"tick","duration":1,"timestamp":1}"#,
                "trailing characters at line 1 column 49: a line holds one event and nothing after it (one JSON object per line)",
            ),
        ];
        for (line, message) in cases {
            assert_eq!(parse_line(line).unwrap_err(), message, "{line}");
        }
    }
}
