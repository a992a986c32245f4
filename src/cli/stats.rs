//! `backtest-perf stats`: statistics of events read from a JSONL file.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use backtest_perf::report::render_layout;
use backtest_perf::{
    PerformanceEmitter, PerformanceService, StatsPreset, StorageConfig, StorageKey,
};
use serde::Serialize;

use super::jsonl::parse_line;
use super::{CliError, OutputFormat};

/// What `stats` was asked to do.
pub struct StatsArgs {
    pub input: PathBuf,
    pub symbol: Option<String>,
    pub strategy: Option<String>,
    pub format: OutputFormat,
    pub preset: StatsPreset,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairJson<'a> {
    symbol: &'a str,
    strategy_name: &'a str,
    total_events: usize,
    total_duration: f64,
    metric_stats:
        &'a std::collections::BTreeMap<backtest_perf::MetricType, backtest_perf::MetricStats>,
    rejected: u64,
    dropped: u64,
}

/// Runs `stats`, writing results to `out` and problems to `err`. Returns the number of
/// bad lines.
pub fn run(args: &StatsArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u64, CliError> {
    let file = std::fs::File::open(&args.input).map_err(|source| CliError::Input {
        path: args.input.clone(),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = super::progress_bar(
        size,
        8 << 20,
        "reading {bar:40} {bytes}/{total_bytes} ({eta})",
    )
    .unwrap_or_else(indicatif::ProgressBar::hidden);
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached_with(&bus, StorageConfig::default(), args.preset);
    let bad = feed(&args.input, progress.wrap_read(file), &bus, err)?;
    progress.finish_and_clear();

    let keys: Vec<StorageKey> = service
        .storage()
        .keys()
        .into_iter()
        .filter(|k| {
            args.symbol
                .as_deref()
                .is_none_or(|s| k.symbol == StorageKey::new(s, "").symbol)
        })
        .filter(|k| {
            args.strategy
                .as_deref()
                .is_none_or(|s| k.strategy == StorageKey::new("", s).strategy)
        })
        .collect();
    if keys.is_empty() {
        let _ = writeln!(
            err,
            "{}: no events matched; check --symbol and --strategy",
            args.input.display()
        );
    }
    let stats: Vec<_> = keys.iter().map(|k| service.get_data_for(*k)).collect();
    let write = |e| CliError::Output(e);
    match args.format {
        OutputFormat::Json => {
            let pairs: Vec<PairJson> = stats
                .iter()
                .map(|s| PairJson {
                    symbol: s.symbol.as_str(),
                    strategy_name: s.strategy_name.as_str(),
                    total_events: s.total_events,
                    total_duration: s.total_duration,
                    metric_stats: &s.metric_stats,
                    rejected: s.rejected,
                    dropped: s.dropped,
                })
                .collect();
            let doc = serde_json::json!({ "pairs": pairs, "rejected": bus.rejected() });
            writeln!(out, "{doc}").map_err(write)?;
        }
        OutputFormat::Md => {
            let layout = service.layout();
            let columns = layout.columns();
            for (i, s) in stats.iter().enumerate() {
                if i > 0 {
                    writeln!(out).map_err(write)?;
                }
                out.write_all(render_layout(s, &columns, layout).as_bytes())
                    .map_err(write)?;
            }
        }
    }
    Ok(bad)
}

/// Emits every good line into `bus`; reports each bad one on `err`. Returns the bad count.
fn feed(
    path: &Path,
    input: impl Read,
    bus: &PerformanceEmitter,
    err: &mut dyn Write,
) -> Result<u64, CliError> {
    let mut reader = BufReader::new(input);
    let mut buf = Vec::new();
    let mut bad = 0;
    for number in 1.. {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CliError::Input {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        let problem = match std::str::from_utf8(&buf) {
            Err(e) => Some(format!("not UTF-8 text ({e})")),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => match parse_line(line.trim_end()) {
                Err(why) => Some(why),
                Ok(event) => bus
                    .emit(event)
                    .err()
                    .map(|r| format!("rejected: {}", r.reason)),
            },
        };
        if let Some(why) = problem {
            bad += 1;
            let _ = writeln!(err, "{}:{number}: {why}", path.display());
        }
    }
    Ok(bad)
}
