//! `backtest-perf compare BASELINE.json CURRENT.json`: a regression gate for CI.

use backtest_perf::report::sig3;
use std::path::Path;

use backtest_perf::compare::{MetricComparison, Verdict, compare};
use backtest_perf::export::environment::Environment;
use backtest_perf::export::json::JsonReport;

use super::CliError;

/// A measurement to compare: its statistics, and where it was measured when the file
/// says (a `stats` output does not).
pub(crate) struct Loaded {
    pub(crate) statistics: backtest_perf::PerformanceStatistics,
    environment: Option<Environment>,
}

/// Reads a `backtest --format json` report, or a `stats` output holding one
/// symbol:strategy (choose one with `stats --symbol --strategy`).
pub(crate) fn load(path: &Path) -> Result<Loaded, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CliError::Report {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let loaded = match value.get("pairs").and_then(|p| p.as_array()) {
        Some(pairs) => {
            let [pair] = pairs.as_slice() else {
                let keys: Vec<String> = pairs
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{}",
                            p["symbol"].as_str().unwrap_or("?"),
                            p["strategyName"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                return Err(bad(format!(
                    "a stats output must hold one symbol:strategy to compare, this one holds {} ({}); choose one with `stats --symbol S --strategy N`",
                    pairs.len(),
                    keys.join(", ")
                )));
            };
            Loaded {
                statistics: serde_json::from_value(pair.clone()).map_err(|e| bad(e.to_string()))?,
                environment: None,
            }
        }
        None => {
            let report: JsonReport =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            Loaded {
                statistics: report.statistics,
                environment: Some(report.environment),
            }
        }
    };
    backtest_perf::compare::check_consistent(&loaded.statistics).map_err(|why| {
        bad(format!(
            "its summary disagrees with its own events ({why}); was it edited?"
        ))
    })?;
    Ok(loaded)
}

fn describe(env: Option<&Environment>) -> String {
    let Some(env) = env else {
        return "a stats output: environment not recorded".into();
    };
    format!(
        "{}, {} cores, {}, {}, {} build, tracking overhead {:.0} ns/event",
        env.cpu_model.as_deref().unwrap_or("unknown CPU"),
        env.cores,
        env.os,
        env.rustc,
        env.build_profile,
        env.tracking_overhead_ns
    )
}

fn cell(comparison: &MetricComparison, i: usize) -> String {
    match (
        comparison.baseline,
        comparison.current,
        comparison.change_percent,
    ) {
        // µs with 3 significant digits: a 40 ns hook never reads as 0.00.
        (Some(b), Some(c), Some(d)) => {
            format!(
                "{} → {} ({:+.1}%)",
                sig3(b[i] * 1e3),
                sig3(c[i] * 1e3),
                d[i]
            )
        }
        (Some(b), None, _) => format!("{} → -", sig3(b[i] * 1e3)),
        (None, Some(c), _) => format!("- → {}", sig3(c[i] * 1e3)),
        _ => "-".into(),
    }
}

/// Compares, prints the table, and fails on a confirmed regression.
pub fn run(baseline: &Path, current: &Path, threshold: f64, alpha: f64) -> Result<(), CliError> {
    let (base, cur) = (load(baseline)?, load(current)?);
    say!(
        "baseline: {} ({})",
        baseline.display(),
        describe(base.environment.as_ref())
    );
    say!(
        "current:  {} ({})",
        current.display(),
        describe(cur.environment.as_ref())
    );
    let (bs, cs) = (&base.statistics, &cur.statistics);
    if (bs.symbol, bs.strategy_name) != (cs.symbol, cs.strategy_name) {
        eprintln!(
            "warning: comparing different runs: {}:{} against {}:{}",
            bs.symbol, bs.strategy_name, cs.symbol, cs.strategy_name
        );
    }
    let differs: Vec<&str> = match (&base.environment, &cur.environment) {
        (Some(b), Some(c)) => [
            ("CPU", b.cpu_model != c.cpu_model),
            ("cores", b.cores != c.cores),
            ("OS", b.os != c.os),
            ("compiler", b.rustc != c.rustc),
            ("build profile", b.build_profile != c.build_profile),
        ]
        .into_iter()
        .filter_map(|(what, differs)| differs.then_some(what))
        .collect(),
        _ => Vec::new(),
    };
    if !differs.is_empty() {
        say!(
            "warning: measured with a different {}: the comparison may not be fair",
            differs.join(", ")
        );
    }
    say!();
    say!(
        "| Metric | Samples | Mean (µs) | Median (µs) | P95 (µs) | P99 (µs) | p (slower) | Verdict |"
    );
    say!("|---|---|---|---|---|---|---|---|");
    let rows = compare(&base.statistics, &cur.statistics, threshold, alpha);
    for row in &rows {
        let verdict = match row.verdict {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::Unconfirmed => "not confirmed",
            Verdict::Unchanged => "unchanged",
            Verdict::Missing => "missing on one side",
            Verdict::Untested => "untested: no samples on one side",
        };
        say!(
            "| {} | {} → {} | {} | {} | {} | {} | {:.4} | {verdict} |",
            row.metric_type,
            row.samples.0,
            row.samples.1,
            cell(row, 0),
            cell(row, 1),
            cell(row, 2),
            cell(row, 3),
            row.p_slower
        );
    }
    if [&base, &cur]
        .iter()
        .any(|m| m.statistics.events.is_empty() && m.environment.is_none())
    {
        say!();
        say!(
            "note: a stats output without raw events cannot be tested; write it with `stats --with-events`"
        );
    }
    let regressed: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .map(|r| r.metric_type.to_string())
        .collect();
    if regressed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Regression {
            metrics: regressed.join(", "),
            threshold,
            alpha,
        })
    }
}
