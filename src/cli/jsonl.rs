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
    metric_type: Option<String>,
    duration: Option<f64>,
    timestamp: Option<f64>,
    previous_timestamp: Option<f64>,
    symbol: Option<String>,
    strategy_name: Option<String>,
    when: Option<DateTime<Utc>>,
    self_duration: Option<f64>,
    id: Option<u64>,
    parent_id: Option<u64>,
    ok: Option<bool>,
}

/// The longest name (symbol, strategy, metric type) read, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// How many names one command may add to the process's interned names: interned text
/// lives until the process ends, so a file with millions of distinct names must not
/// grow it without bound.
pub const MAX_NEW_NAMES: usize = 100_000;

/// The names a reader may still intern.
#[derive(Debug)]
pub struct NameBudget {
    left: usize,
}

impl Default for NameBudget {
    fn default() -> Self {
        NameBudget {
            left: MAX_NEW_NAMES,
        }
    }
}

impl NameBudget {
    /// A budget of `left` new names.
    #[cfg(test)]
    pub fn new(left: usize) -> Self {
        NameBudget { left }
    }

    /// The name of `text` for `field`: found if interned already, else interned while
    /// the budget lasts.
    fn name(&mut self, field: &str, text: &str) -> Result<Name, String> {
        if text.len() > MAX_NAME_LEN {
            return Err(format!(
                "{field} is {} bytes long; names are at most {MAX_NAME_LEN}",
                text.len()
            ));
        }
        if let Some(name) = Name::existing(text) {
            return Ok(name);
        }
        if self.left == 0 {
            return Err(format!(
                "{field} {text:?} would be a new name past the {MAX_NEW_NAMES} this command keeps; split the input by symbol or strategy"
            ));
        }
        self.left -= 1;
        Ok(Name::new(text))
    }
}

impl RawEvent {
    fn into_contract(
        self,
        prefix: &str,
        names: &mut NameBudget,
    ) -> Result<PerformanceContract, String> {
        let missing = |field: &str| format!("missing field `{prefix}{field}`");
        let metric = self.metric_type.ok_or_else(|| missing("metricType"))?;
        let duration = self.duration.ok_or_else(|| missing("duration"))?;
        let timestamp = self.timestamp.ok_or_else(|| missing("timestamp"))?;
        let mut name = |field: &str, text: Option<String>| {
            text.map(|t| names.name(&format!("{prefix}{field}"), &t))
                .transpose()
        };
        let metric_type = match MetricType::BUILT_IN.iter().find(|m| m.as_str() == metric) {
            Some(built_in) => *built_in,
            None => MetricType::Custom(
                name("metricType", Some(metric))?.unwrap_or_else(|| Name::new("")),
            ),
        };
        let symbol = name("symbol", self.symbol)?;
        let strategy_name = name("strategyName", self.strategy_name)?;
        Ok(PerformanceContract {
            metric_type,
            duration,
            timestamp,
            previous_timestamp: self.previous_timestamp,
            symbol,
            strategy_name,
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
pub fn parse_line(line: &str, names: &mut NameBudget) -> Result<PerformanceContract, String> {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let mut json = serde_json::Deserializer::from_str(line);
    let raw: RawEvent = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        // "." is the whole line, "?" a key that did not parse: no field to name.
        if path == "." || path == "?" {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    json.end().map_err(|e| {
        format!("{e}: a line holds one event and nothing after it (one JSON object per line)")
    })?;
    match raw.report_name.as_deref() {
        None => raw.into_contract("", names),
        Some("performance") => raw
            .data
            .ok_or_else(|| "report line has no `data` object".to_string())?
            .into_contract("data.", names),
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
        let a = parse_line(plain, &mut NameBudget::default()).unwrap();
        assert_eq!(a, parse_line(report, &mut NameBudget::default()).unwrap());
        assert_eq!(a.timestamp, 1732147200123.4567);
        assert_eq!(a.metric_type, MetricType::Tick);
    }

    use proptest::prelude::*;

    /// JSON-ish lines: objects with the event's fields set to values that break readers,
    /// wrapped or not, with text around them.
    fn line() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("1".to_string()),
            Just("-1".to_string()),
            Just("1e308".to_string()),
            Just("1e400".to_string()),
            Just("null".to_string()),
            Just("\"tick\"".to_string()),
            Just("\"\"".to_string()),
            Just("{}".to_string()),
            Just("[1]".to_string()),
            Just("18446744073709551616".to_string()),
            "\"[^\"\\\\]{0,10}\"",
        ];
        let field = prop_oneof![
            Just("metricType"),
            Just("duration"),
            Just("timestamp"),
            Just("previousTimestamp"),
            Just("symbol"),
            Just("strategyName"),
            Just("when"),
            Just("selfDuration"),
            Just("id"),
            Just("parentId"),
            Just("ok"),
            Just("reportName"),
            Just("data"),
        ];
        let object = proptest::collection::vec((field, value), 0..8).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(f, v)| format!("\"{f}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        });
        (
            object,
            prop_oneof![Just(""), Just(" x"), Just("{}"), Just("\u{feff}")],
            any::<bool>(),
        )
            .prop_map(|(object, tail, wrap)| {
                if wrap {
                    format!("{{\"reportName\":\"performance\",\"data\":{object}}}{tail}")
                } else {
                    format!("{object}{tail}")
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn a_line_is_an_event_or_a_reason_never_a_panic(line in line()) {
            match parse_line(&line, &mut NameBudget::default()) {
                Ok(event) => prop_assert!(event.duration.is_finite() || event.validate().is_err()),
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }

        #[test]
        fn any_text_is_an_event_or_a_reason(text in ".{0,120}") {
            if let Err(why) = parse_line(&text, &mut NameBudget::default()) {
                prop_assert!(!why.is_empty());
            }
        }
    }

    #[test]
    fn new_names_stop_at_the_budget_and_long_ones_are_refused() {
        let mut names = NameBudget::new(1);
        let line = |symbol: &str| {
            format!(r#"{{"metricType":"tick","duration":1,"timestamp":1,"symbol":"{symbol}"}}"#)
        };
        let fresh = "budget-test-symbol-9c2e";
        let _ = Name::new("global");
        parse_line(&line(fresh), &mut names).unwrap();
        // Known names cost nothing.
        parse_line(&line(fresh), &mut names).unwrap();
        parse_line(&line("global"), &mut names).unwrap();
        let err = parse_line(&line("budget-test-symbol-7d1f"), &mut names).unwrap_err();
        assert!(
            err.starts_with(
                "symbol \"budget-test-symbol-7d1f\" would be a new name past the 100000"
            ),
            "{err}"
        );
        assert_eq!(
            Name::existing("budget-test-symbol-7d1f"),
            None,
            "not interned"
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            parse_line(&line(&long), &mut NameBudget::default()).unwrap_err(),
            "symbol is 257 bytes long; names are at most 256"
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_event() {
        let line = "\u{feff}{\"metricType\":\"tick\",\"duration\":1,\"timestamp\":1}";
        assert_eq!(
            parse_line(line, &mut NameBudget::default())
                .unwrap()
                .duration,
            1.0
        );
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
            ("{bad", "key must be a string at line 1 column 2"),
            (
                r#"{"metricType":"tick","#,
                "EOF while parsing a value at line 1 column 21",
            ),
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
            assert_eq!(
                parse_line(line, &mut NameBudget::default()).unwrap_err(),
                message,
                "{line}"
            );
        }
    }
}
