//! `backtest-perf stats`: statistics of events read from JSONL files, merged with the
//! whole-run statistics of `stats` and `backtest --format json` outputs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use backtest_perf::report::render_layout;
use backtest_perf::stats::Aggregate;
use backtest_perf::{
    MetricStats, MetricType, Name, PerformanceEmitter, PerformanceService, StatsPreset,
    StorageConfig, StorageKey,
};
use serde::{Deserialize, Serialize};

use super::jsonl::{LineRead, MAX_LINE, NameBudget, parse_line, read_line};
use super::{CliError, OutputFormat};

/// What `stats` was asked to do.
pub struct StatsArgs {
    /// The inputs, in order; `-` is standard input.
    pub inputs: Vec<PathBuf>,
    pub symbol: Option<String>,
    pub strategy: Option<String>,
    pub format: OutputFormat,
    pub preset: StatsPreset,
    /// Raw events kept per key (the statistics cover every event).
    pub max_events: usize,
    /// Include the raw events in the JSON.
    pub with_events: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairJson<'a> {
    symbol: &'a str,
    strategy_name: &'a str,
    total_events: usize,
    total_duration: f64,
    self_duration: f64,
    metric_stats: &'a BTreeMap<MetricType, MetricStats>,
    rejected: u64,
    dropped: u64,
    /// What another `stats` run merges.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    aggregates: &'a BTreeMap<MetricType, Aggregate>,
    /// The newest raw events, with `--with-events` (what `compare` tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<&'a [backtest_perf::PerformanceContract]>,
}

/// One key's whole-run statistics in a JSON document: a `backtest --format json` report,
/// or one of the `pairs` of a `stats` output.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairDoc {
    symbol: Name,
    strategy_name: Name,
    aggregates: Option<BTreeMap<MetricType, Aggregate>>,
    #[serde(default)]
    rejected: u64,
}

/// Runs `stats`; returns how many bad lines or documents were skipped (each reported on
/// `err` with its file and line).
pub fn run(args: &StatsArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u64, CliError> {
    let bus = PerformanceEmitter::new();
    // An offline tool keeps every key it is given.
    let config = StorageConfig {
        max_events: args.max_events,
        max_keys: usize::MAX,
    };
    let service = PerformanceService::attached_with(&bus, config, args.preset);
    let mut bad = 0;
    let mut merged_documents = false;
    let mut names = NameBudget::default();
    for path in &args.inputs {
        let (label, input): (PathBuf, Box<dyn Read>) = if path.as_os_str() == "-" {
            (PathBuf::from("<stdin>"), Box::new(std::io::stdin().lock()))
        } else {
            let file = std::fs::File::open(path).map_err(|source| CliError::Input {
                path: path.clone(),
                source,
            })?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let progress = super::progress_bar(
                size,
                8 << 20,
                "reading {bar:40} {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(indicatif::ProgressBar::hidden);
            (path.clone(), Box::new(progress.wrap_read(file)))
        };
        let outcome = read_input(&label, input, &bus, &service, &mut names, err)?;
        bad += outcome.bad;
        merged_documents |= outcome.documents;
    }
    if merged_documents && args.preset == StatsPreset::BacktestKit {
        let _ = writeln!(
            err,
            "note: the backtest-kit preset computes over raw events; merged reports carry whole-run statistics only, so use the default preset to see them"
        );
    }

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
            "no events matched; check the inputs, --symbol and --strategy"
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
                    self_duration: s.self_duration,
                    metric_stats: &s.metric_stats,
                    rejected: s.rejected,
                    dropped: s.dropped,
                    aggregates: &s.aggregates,
                    events: args.with_events.then_some(s.events.as_slice()),
                })
                .collect();
            let rejected: u64 = stats.iter().map(|s| s.rejected).sum();
            let doc = serde_json::json!({ "pairs": pairs, "rejected": rejected });
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

struct Outcome {
    bad: u64,
    documents: bool,
}

/// Reads one input: JSONL events, or a JSON document (a `stats` output on one line, or a
/// pretty-printed `backtest --format json` report), told apart by the first line.
fn read_input(
    path: &Path,
    input: impl Read,
    bus: &PerformanceEmitter,
    service: &PerformanceService,
    names: &mut NameBudget,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let mut reader = BufReader::new(input);
    let mut first = Vec::new();
    let first_read = read_line(&mut reader, &mut first).map_err(|source| CliError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    if first_read == LineRead::TooLong {
        let _ = writeln!(err, "{}:1: {}", path.display(), too_long());
        return Ok(Outcome {
            bad: 1,
            documents: false,
        });
    }
    let text = String::from_utf8_lossy(&first);
    let trimmed = text.trim();
    let is_document = trimmed == "{"
        || serde_json::from_str::<serde_json::Value>(trimmed)
            .is_ok_and(|v| v.get("pairs").is_some());
    if !is_document {
        let bad = feed(path, &first, reader, bus, names, err)?;
        return Ok(Outcome {
            bad,
            documents: false,
        });
    }
    let mut rest = Vec::new();
    (&mut reader)
        .take(MAX_DOCUMENT)
        .read_to_end(&mut rest)
        .map_err(|source| CliError::Input {
            path: path.to_path_buf(),
            source,
        })?;
    first.extend_from_slice(&rest);
    if rest.len() as u64 == MAX_DOCUMENT {
        let _ = writeln!(
            err,
            "{}: a JSON document longer than {} MiB is not a stats output or a backtest report",
            path.display(),
            MAX_DOCUMENT >> 20
        );
        return Ok(Outcome {
            bad: 1,
            documents: true,
        });
    }
    let bad = match merge_document(&first, service) {
        Ok(()) => 0,
        Err(why) => {
            let _ = writeln!(err, "{}: {why}", path.display());
            1
        }
    };
    Ok(Outcome {
        bad,
        documents: true,
    })
}

/// Merges a document's whole-run statistics into the storage, key by key.
fn merge_document(bytes: &[u8], service: &PerformanceService) -> Result<(), String> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON document: {e}"))?;
    let pairs = match doc.get("pairs") {
        Some(pairs) => serde_json::from_value::<Vec<PairDoc>>(pairs.clone()),
        None => serde_json::from_value::<PairDoc>(doc).map(|p| vec![p]),
    }
    .map_err(|e| format!("not a stats output or a backtest JSON report: {e}"))?;
    for pair in &pairs {
        if pair.aggregates.is_none() {
            return Err(format!(
                "{}:{} has no whole-run aggregates (written by an older version); run it again to merge it",
                pair.symbol, pair.strategy_name
            ));
        }
    }
    for pair in pairs {
        let key = StorageKey::new(&pair.symbol, &pair.strategy_name);
        let aggregates = pair.aggregates.unwrap_or_default();
        service
            .storage()
            .merge(key, aggregates.iter().map(|(m, a)| (*m, a)), pair.rejected);
    }
    Ok(())
}

/// The largest JSON document read (a report of 10,000 events is about 3 MB).
const MAX_DOCUMENT: u64 = 256 << 20;

fn too_long() -> String {
    format!(
        "a line longer than {} MiB: not JSONL (one event per line); the rest of this input is not read, what came before is kept",
        MAX_LINE >> 20
    )
}

/// Feeds JSONL events to the bus, `first` being the line already read; reports each bad
/// line with its number.
fn feed(
    path: &Path,
    first: &[u8],
    mut reader: impl BufRead,
    bus: &PerformanceEmitter,
    names: &mut NameBudget,
    err: &mut dyn Write,
) -> Result<u64, CliError> {
    let mut buf = first.to_vec();
    let mut bad = 0;
    let mut number: u64 = 1;
    loop {
        if buf.is_empty() {
            break;
        }
        let problem = match std::str::from_utf8(&buf) {
            Err(e) => Some(format!("not UTF-8 text ({e})")),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => match parse_line(line.trim_end(), names) {
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
        number = number.saturating_add(1);
        match read_line(&mut reader, &mut buf).map_err(|source| CliError::Input {
            path: path.to_path_buf(),
            source,
        })? {
            LineRead::Line => {}
            LineRead::End => break,
            LineRead::TooLong => {
                bad += 1;
                let _ = writeln!(err, "{}:{number}: {}", path.display(), too_long());
                break;
            }
        }
    }
    Ok(bad)
}
