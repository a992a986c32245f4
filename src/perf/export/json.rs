//! `get_data` as JSON beside the markdown report, with the environment it was measured on:
//! the input of `backtest-perf compare`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::environment::Environment;
use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::stats::PerformanceStatistics;

/// A saved measurement: the statistics (events included) and the environment.
///
/// ```
/// use backtest_perf::export::json::JsonReport;
/// let dir = tempfile::tempdir().unwrap();
/// let service = backtest_perf::PerformanceService::attached(&backtest_perf::PerformanceEmitter::new());
/// let path = backtest_perf::export::json::write_json(&service.get_data("A", "s"), dir.path()).unwrap();
/// let report: JsonReport = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
/// assert!(report.environment.cores >= 1);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonReport {
    /// What `get_data` returned.
    #[serde(flatten)]
    pub statistics: PerformanceStatistics,
    /// Where it was measured.
    pub environment: Environment,
}

/// Writes `statistics` and the current environment atomically to
/// `dir/<strategy>.json` (the name made safe); returns the path.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.5, 1.0).with_symbol("A").with_strategy("s")).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = backtest_perf::export::json::write_json(&service.get_data("A", "s"), dir.path()).unwrap();
/// let back: backtest_perf::export::json::JsonReport =
///     serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
/// assert_eq!(back.statistics.total_duration, 1.5);
/// ```
pub fn write_json(statistics: &PerformanceStatistics, dir: &Path) -> Result<PathBuf, DumpError> {
    let report = JsonReport {
        statistics: statistics.clone(),
        environment: Environment::capture(),
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| DumpError::Write {
        path: dir.join(format!(
            "{}.json",
            safe_file_stem(&statistics.strategy_name)
        )),
        source: e.into(),
    })?;
    write_atomic(
        dir,
        &format!("{}.json", safe_file_stem(&statistics.strategy_name)),
        &text,
    )
}
