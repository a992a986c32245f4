//! Reading candles from CSV: an unnamed date or date-time column, then Open, High, Low,
//! Close, Volume (the format of the bundled `examples/data/*.csv`). Times without a zone
//! are UTC.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::candle::{Candle, CandleSeries, Interval, Millis};
use crate::Name;

/// Bad candle data: where (file, and line when known) and what is wrong.
///
/// ```
/// use backtest_perf::engine::csv::DataError;
/// let e = DataError { path: "a.csv".into(), line: Some(3), problem: "bad".into() };
/// assert_eq!(e.to_string(), "a.csv:3: bad");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DataError {
    /// The file (or the name given to in-memory text).
    pub path: PathBuf,
    /// The 1-based line, when the problem is on one.
    pub line: Option<u64>,
    /// What is wrong, and what to do.
    pub problem: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.problem),
            None => write!(f, "{}: {}", self.path.display(), self.problem),
        }
    }
}

const COLUMNS: [&str; 5] = ["Open", "High", "Low", "Close", "Volume"];

/// Reads a CSV file into a checked series for `symbol`.
///
/// ```
/// use backtest_perf::engine::csv::read_file;
/// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/BTCUSD.csv");
/// assert_eq!(read_file(&path, "BTCUSD".into(), None).unwrap().candles().len(), 156);
/// let missing = read_file("no/such.csv".as_ref(), "X".into(), None).unwrap_err();
/// assert!(missing.to_string().starts_with("no/such.csv: cannot open: "));
/// ```
pub fn read_file(
    path: &Path,
    symbol: Name,
    interval: Option<Interval>,
) -> Result<CandleSeries, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError {
        path: path.to_path_buf(),
        line: None,
        problem: format!("cannot open: {e}; check the path"),
    })?;
    read(path, file, symbol, interval)
}

/// Reads CSV text from `input`; `path` names it in errors.
///
/// ```
/// use backtest_perf::engine::csv::read;
/// let text = ",Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1.5,2,1,1.2,0\n";
/// let series = read("mem.csv".as_ref(), text.as_bytes(), "X".into(), None).unwrap();
/// assert_eq!(series.candles().len(), 2);
///
/// let bad = ",Open,High,Low,Close,Volume\n2024-01-01,1,2,0.5,oops,10\n";
/// let err = read("mem.csv".as_ref(), bad.as_bytes(), "X".into(), None).unwrap_err();
/// assert_eq!(err.to_string(), "mem.csv:2: column Close: `oops` is not a number");
/// ```
pub fn read(
    path: &Path,
    input: impl Read,
    symbol: Name,
    interval: Option<Interval>,
) -> Result<CandleSeries, DataError> {
    let err = |line: Option<u64>, problem: String| DataError {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut records = reader.records();
    let header = match records.next() {
        None => {
            return Err(err(
                None,
                "empty file: expected a header line, then one candle per line".into(),
            ));
        }
        Some(Err(e)) => return Err(err(e.position().map(|p| p.line()), e.to_string())),
        Some(Ok(header)) => header,
    };
    let mut index = [0usize; 5];
    for (slot, name) in index.iter_mut().zip(COLUMNS) {
        *slot = header
            .iter()
            .skip(1)
            .position(|h| h.eq_ignore_ascii_case(name))
            .map(|i| i + 1)
            .ok_or_else(|| {
                err(
                    Some(1),
                    format!("missing column {name}; the header must name Open, High, Low, Close and Volume after the time column"),
                )
            })?;
    }
    let mut candles = Vec::new();
    let mut lines = Vec::new();
    for record in records {
        let record = record.map_err(|e| err(e.position().map(|p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let field = |i: usize, name: &str| {
            record
                .get(i)
                .ok_or_else(|| err(Some(line), format!("column {name} is missing on this line")))
        };
        let time_text = field(0, "time")?;
        let open_time = parse_time(time_text).ok_or_else(|| {
            err(
                Some(line),
                format!("`{time_text}` is not a date or date-time (use 2024-01-31 or 2024-01-31 09:00:00)"),
            )
        })?;
        let mut values = [0.0; 5];
        for ((value, &i), name) in values.iter_mut().zip(&index).zip(COLUMNS) {
            let text = field(i, name)?;
            *value = text.parse().map_err(|_| {
                err(
                    Some(line),
                    format!("column {name}: `{text}` is not a number"),
                )
            })?;
        }
        let [open, high, low, close, volume] = values;
        candles.push(Candle {
            open_time,
            open,
            high,
            low,
            close,
            volume,
        });
        lines.push(line);
    }
    if candles.is_empty() {
        return Err(err(None, "no candles after the header".into()));
    }
    CandleSeries::new(symbol, candles, interval)
        .map_err(|e| err(lines.get(e.index).copied(), e.problem))
}

fn parse_time(text: &str) -> Option<Millis> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<CandleSeries, String> {
        read(Path::new("data.csv"), text.as_bytes(), Name::new("X"), None)
            .map_err(|e| e.to_string())
    }

    const HEADER: &str = ",Open,High,Low,Close,Volume\n";

    #[test]
    fn each_problem_names_the_file_line_and_what_is_wrong() {
        let cases = [
            (
                "".to_string(),
                "data.csv: empty file: expected a header line, then one candle per line",
            ),
            (HEADER.to_string(), "data.csv: no candles after the header"),
            (
                ",Open,High,Low,Close\n2024-01-01,1,1,1,1\n".to_string(),
                "data.csv:1: missing column Volume; the header must name Open, High, Low, Close and Volume after the time column",
            ),
            (
                format!("{HEADER}2024-01-01,1,1,1,1,1\n2024-01-02,1,x,1,1,1\n"),
                "data.csv:3: column High: `x` is not a number",
            ),
            (
                format!("{HEADER}2024-01-02,1,1,1,1,1\n2024-01-01,1,1,1,1,1\n"),
                "data.csv:3: open time 2024-01-01T00:00:00+00:00 is not after the previous candle's 2024-01-02T00:00:00+00:00",
            ),
            (
                format!("{HEADER}2024-01-01,1,1,1,1,1\n2024-01-02,2,1.5,1,2,1\n"),
                "data.csv:3: high 1.5 is below open 2, close 2 or low 1",
            ),
            (
                format!("{HEADER}yesterday,1,1,1,1,1\n"),
                "data.csv:2: `yesterday` is not a date or date-time (use 2024-01-31 or 2024-01-31 09:00:00)",
            ),
            (
                format!("{HEADER}2024-01-01,1,1,1,1,1\n2024-01-02,1,1\n"),
                "data.csv:3: column Low is missing on this line",
            ),
            (
                format!("{HEADER}2024-01-01,1,1,1,1,1\n"),
                "data.csv:2: one candle only: at least two are needed to tell the candle interval",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(read_text(&text).unwrap_err(), message, "{text:?}");
        }
    }

    #[test]
    fn reads_dates_and_date_times() {
        let s = read_text(&format!("{HEADER}2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n2017-04-19 10:00:00,1,1,1,1,0\n")).unwrap();
        assert_eq!(s.interval(), Interval::hours(1));
        assert_eq!(
            s.candles()[0].open_time_utc().to_rfc3339(),
            "2017-04-19T09:00:00+00:00"
        );
        assert_eq!(s.candles()[0].low, 1.07083);
    }

    #[test]
    fn reads_every_bundled_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
        for (file, rows, interval) in [
            ("EURUSD.csv", 5_000, Interval::hours(1)),
            ("GOOG.csv", 2_148, Interval::days(1)),
            ("BTCUSD.csv", 156, Interval::days(31)),
        ] {
            let s = read_file(&dir.join(file), Name::new(file), None).unwrap();
            assert_eq!(
                (s.candles().len(), s.interval()),
                (rows, interval),
                "{file}"
            );
        }
    }
}
