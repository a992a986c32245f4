//! `backtest-perf backtest` and the default job: run strategies, print what they did and
//! where the time went, dump one report per strategy.

use std::path::PathBuf;
use std::sync::Arc;

use backtest_perf::DumpError;
use backtest_perf::alerts::{AlertManager, FileSink, LogSink, rules_from_json};
use backtest_perf::engine::BacktestConfig;
use backtest_perf::engine::parallel::{Job, default_threads, run_parallel};
use backtest_perf::engine::{
    Backtest, BacktestResult, CsvExchange, Exchange, StrategyEntry, SyntheticConfig,
};
use backtest_perf::export::chrome_trace::write_chrome_trace;
use backtest_perf::report::{Unit, coverage, default_columns, human, sampling, thousands};
use backtest_perf::tracker::TrackerOptions;
use backtest_perf::tracker::TrackerReport;
use backtest_perf::tracker::timeline::{TimelineStyle, render};
use backtest_perf::{
    PerformanceStatistics, StorageConfig, configure_performance, performance_service, strategies,
};

use super::{CliError, ReportFormat, parse_max_events, parse_threshold};

/// The data the default job runs on, bundled into the binary.
pub const BUNDLED_NAME: &str = "examples/data/EURUSD.csv";
const BUNDLED_CSV: &str = include_str!("../../examples/data/EURUSD.csv");
const BUNDLED_SYMBOL: &str = "EURUSD";

/// Where the candles come from.
pub enum Data {
    /// The bundled EURUSD hourly candles.
    Bundled,
    /// A CSV file, and its candle interval when given (else the most common gap).
    Csv(PathBuf, Option<backtest_perf::engine::Interval>),
    /// Seeded synthetic 1-minute candles, made as each run goes, keeping `lookback` past
    /// candles for the strategies.
    Synthetic {
        days: usize,
        seed: u64,
        lookback: usize,
    },
}

/// What `backtest` was asked to do.
pub struct BacktestArgs {
    pub data: Data,
    pub symbol: Option<String>,
    pub strategies: Vec<String>,
    /// The strategies the command line knows.
    pub registry: Vec<StrategyEntry>,
    /// `--param NAME=VALUE`, set on every strategy that runs.
    pub params: Vec<(String, String)>,
    pub out: PathBuf,
    pub threads: usize,
    /// Print the timeline of each strategy's slowest tick.
    pub timeline: bool,
    /// Slow-hook thresholds by hook name, ms, over the defaults.
    pub thresholds: Vec<(String, f64)>,
    /// Report files to write.
    pub formats: Vec<super::ReportFormat>,
    /// Raw events kept per symbol:strategy (the statistics cover every event).
    pub max_events: usize,
    /// Time 1 tick in this many (1: every tick).
    pub sample: u32,
    /// The report layout: the whole run, or backtest-kit's over the window.
    pub layout: super::LayoutArg,
    /// Write each run's Chrome trace.
    pub trace: bool,
    /// Check these alert rules on each run's statistics.
    pub alerts: Option<Arc<AlertManager>>,
    /// Check the alert rules every this many simulated minutes while the runs go on.
    pub alert_every_minutes: u32,
    /// Resource monitor interval, ms (0: off).
    pub monitor_interval_ms: u64,
    /// The exporters' flags (owned by the exporters' module; empty without their features).
    #[cfg_attr(
        not(any(
            feature = "prometheus",
            feature = "otel",
            feature = "flamegraph",
            feature = "profile"
        )),
        allow(dead_code)
    )]
    pub exporters: super::exporters::ExporterArgs,
}

impl Default for BacktestArgs {
    fn default() -> Self {
        BacktestArgs {
            data: Data::Bundled,
            symbol: None,
            strategies: Vec::new(),
            registry: strategies::registry(),
            params: Vec::new(),
            out: PathBuf::from(backtest_perf::dump::DEFAULT_DUMP_DIR),
            threads: default_threads(),
            timeline: false,
            thresholds: Vec::new(),
            formats: vec![super::ReportFormat::Md],
            max_events: StorageConfig::default().max_events,
            layout: super::LayoutArg::WholeRun,
            sample: 1,
            trace: false,
            alerts: None,
            alert_every_minutes: 1440,
            monitor_interval_ms: 1000,
            exporters: super::exporters::ExporterArgs::default(),
        }
    }
}

/// The flags of `backtest-perf backtest`.
#[derive(clap::Args, Debug)]
pub struct BacktestCli {
    /// Candles from this CSV file (unnamed time column, then Open, High, Low, Close, Volume).
    #[arg(long, conflicts_with = "synthetic")]
    pub data: Option<PathBuf>,
    /// The candle interval of --data (30s, 15m, 1h, 1d, ...); by default the most common
    /// gap between candles.
    #[arg(long, requires = "data", value_parser = |t: &str| t.parse::<backtest_perf::engine::Interval>())]
    pub interval: Option<backtest_perf::engine::Interval>,
    /// Seeded synthetic 1-minute candles for this many days instead.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_650))]
    pub synthetic: Option<u64>,
    /// Seed of the synthetic candles.
    #[arg(long, default_value_t = 42, requires = "synthetic")]
    pub seed: u64,
    /// Past candles a --synthetic run keeps for its strategies to look back on: the
    /// candles are made as the run goes, and a strategy asking for more stops the run
    /// (48 bytes a candle).
    #[arg(long, value_name = "CANDLES", default_value_t = 100_000, requires = "synthetic",
          value_parser = clap::value_parser!(u64).range(1..=5_256_000))]
    pub lookback: u64,
    /// The symbol's name (default: the file name, SYNTH, or EURUSD for the bundled data).
    #[arg(long)]
    pub symbol: Option<String>,
    /// A strategy to run (repeat for several; default: all, listed below).
    #[arg(long = "strategy")]
    pub strategies: Vec<String>,
    /// Set a strategy parameter (repeatable), e.g. --param fast=5 --param slow=20; each
    /// strategy that runs must know it (its parameters are listed below).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Folder for the reports.
    #[arg(long, default_value = backtest_perf::dump::DEFAULT_DUMP_DIR)]
    pub out: PathBuf,
    /// Reports to write: md, json (statistics and events, with the environment, for
    /// `compare`), html (charts), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "md")]
    pub format: Vec<ReportFormat>,
    /// Also write each run's timeline as Chrome Trace Event JSON (Perfetto,
    /// chrome://tracing) into the output folder.
    #[arg(long)]
    pub trace: bool,
    #[command(flatten)]
    pub exporters: super::exporters::ExporterArgs,
    /// Alert rules (a JSON array, see the README), checked on each run's statistics at
    /// its end; what fires is logged on stderr.
    #[arg(long, value_name = "RULES.json")]
    pub alerts: Option<PathBuf>,
    /// Also append fired alerts as JSON lines to this file.
    #[arg(long, value_name = "FILE", requires = "alerts")]
    pub alert_file: Option<PathBuf>,
    /// Also POST fired alerts to this destination, repeatable: `alertmanager=URL`
    /// (Prometheus Alertmanager's /api/v2/alerts), `slack=URL` (a Slack-compatible
    /// incoming webhook), or a bare URL (the alert as plain JSON).
    #[cfg(feature = "webhook")]
    #[arg(long, value_name = "[FORMAT=]URL", requires = "alerts")]
    pub alert_webhook: Vec<String>,
    /// While the runs go on, check the alert rules every MINUTES of simulated time (and at
    /// each run's end).
    #[arg(long, value_name = "MINUTES", default_value_t = 1440, requires = "alerts", value_parser = clap::value_parser!(u32).range(1..))]
    pub alert_every: u32,
    /// Sample the process's CPU, memory, threads and listener queues every MS
    /// milliseconds while the runs go on (0: off); the JSON report holds the samples and
    /// the cpuAbove, rssAbove and queueDepthAbove rules are checked on each.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub monitor_interval: u64,
    /// Print the timeline of each strategy's slowest tick that is not a warm-up (the first
    /// tick, or one inside which a hook first ran), and whether its thread ran or waited;
    /// memory holds only the warm-ups and the slowest few ticks.
    #[arg(long)]
    pub timeline: bool,
    /// Raw events kept per symbol:strategy, for the JSON report's events and the
    /// backtest-kit layout; the statistics cover every event whatever this is.
    #[arg(long, default_value_t = StorageConfig::default().max_events, value_parser = parse_max_events)]
    pub max_events: usize,
    /// The markdown report's layout: the whole run in readable units, or backtest-kit's
    /// (ms with 2 decimals, over the newest --max-events events) byte for byte.
    #[arg(long, value_enum, default_value_t = super::LayoutArg::WholeRun)]
    pub layout: super::LayoutArg,
    /// Time 1 tick in N (the first, then every N-th) with everything nested inside it;
    /// the others are counted, not timed, so counts stay exact. The reports say so.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,
    /// A slow-hook threshold, e.g. `getSignal=5` or `tick=0.5` (ms; repeat for several).
    /// Defaults: getCandles 50, getSignal 5, the others 100.
    #[arg(long = "slow", value_name = "HOOK=MS", value_parser = parse_threshold)]
    pub slow: Vec<(String, f64)>,
    /// Backtests run at once (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
}

impl BacktestArgs {
    /// What the flags ask for, with the defaults filled in and the alert rules read.
    pub fn from_cli(cli: BacktestCli, registry: &[StrategyEntry]) -> Result<Self, CliError> {
        let data = match (cli.data, cli.synthetic) {
            (Some(path), _) => Data::Csv(path, cli.interval),
            (None, Some(days)) => Data::Synthetic {
                days: days as usize,
                seed: cli.seed,
                lookback: cli.lookback as usize,
            },
            (None, None) => Data::Bundled,
        };
        let alerts = match cli.alerts {
            None => None,
            Some(rules) => Some(Arc::new(alert_manager(
                &rules,
                cli.alert_file,
                #[cfg(feature = "webhook")]
                cli.alert_webhook,
            )?)),
        };
        Ok(BacktestArgs {
            data,
            symbol: cli.symbol,
            strategies: cli.strategies,
            registry: registry.to_vec(),
            params: cli.params,
            out: cli.out,
            threads: cli.threads.map_or_else(default_threads, |t| t as usize),
            timeline: cli.timeline,
            thresholds: cli.slow,
            formats: cli.format,
            max_events: cli.max_events,
            layout: cli.layout,
            sample: cli.sample,
            trace: cli.trace,
            alerts,
            alert_every_minutes: cli.alert_every,
            monitor_interval_ms: cli.monitor_interval,
            exporters: cli.exporters,
        })
    }
}

/// `--param`: `NAME=VALUE`.
fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not NAME=VALUE (for example fast=10)")),
    }
}

/// The registry entries for `names` (all with none given), in the order given, once each.
pub fn select(
    names: &[String],
    registry: &[StrategyEntry],
) -> Result<Vec<StrategyEntry>, CliError> {
    if names.is_empty() {
        return Ok(registry.to_vec());
    }
    let mut chosen: Vec<StrategyEntry> = Vec::new();
    for name in names {
        let entry =
            registry
                .iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| CliError::UnknownStrategy {
                    name: name.clone(),
                    known: registry
                        .iter()
                        .map(|e| e.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        if !chosen.iter().any(|c| c.name == entry.name) {
            chosen.push(entry.clone());
        }
    }
    Ok(chosen)
}

/// The run's candles: a series read whole, or synthetic candles made as each run goes
/// (ten years of minutes held whole would take 252 MB).
enum Loaded {
    Exchange(Box<dyn Exchange>, String),
    Synthetic(SyntheticConfig, String),
}

impl Loaded {
    /// A backtest of the candles, with `config`.
    fn backtest(&self, config: &BacktestConfig) -> Result<Backtest<'_>, CliError> {
        let backtest = match self {
            Loaded::Exchange(exchange, symbol) => Backtest::new(exchange.as_ref(), symbol)?,
            Loaded::Synthetic(synthetic, symbol) => Backtest::synthetic(symbol, *synthetic)
                .map_err(|e| CliError::Synthetic(e.problem))?,
        };
        Ok(backtest.with_config(config.clone()))
    }
}

fn load(args: &BacktestArgs) -> Result<Loaded, CliError> {
    Ok(match &args.data {
        Data::Bundled => {
            let symbol = args.symbol.clone().unwrap_or_else(|| BUNDLED_SYMBOL.into());
            Loaded::Exchange(
                Box::new(CsvExchange::from_text(BUNDLED_NAME, BUNDLED_CSV, &symbol)?),
                symbol,
            )
        }
        Data::Csv(path, interval) => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("DATA");
            let symbol = args.symbol.clone().unwrap_or_else(|| stem.to_string());
            Loaded::Exchange(
                Box::new(CsvExchange::open_with_interval(path, &symbol, *interval)?),
                symbol,
            )
        }
        Data::Synthetic { days, seed, .. } => {
            let symbol = args.symbol.clone().unwrap_or_else(|| "SYNTH".into());
            let config = SyntheticConfig {
                seed: *seed,
                ..SyntheticConfig::days(*days)
            };
            Loaded::Synthetic(config, symbol)
        }
    })
}

/// One line on the resources the monitor saw, if it ran.
fn resources_line(
    samples: &[backtest_perf::monitor::ResourceSample],
    interval_ms: u64,
) -> Option<String> {
    if samples.is_empty() {
        return None;
    }
    let peak_rss = samples.iter().filter_map(|s| s.rss_bytes).max();
    let peak_cpu = samples
        .iter()
        .filter_map(|s| s.cpu_percent)
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
    let threads = samples.iter().filter_map(|s| s.threads).max();
    let queue = samples.iter().map(|s| s.queue_depth).max().unwrap_or(0);
    Some(format!(
        "resources: {} samples every {interval_ms} ms; peak resident memory {}, peak CPU {}, up to {} threads, deepest listener queue {queue} events",
        samples.len(),
        peak_rss.map_or("unknown".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        peak_cpu.map_or(
            "not measured (samples under 100 ms apart)".into(),
            |c| format!("{}% of a core", backtest_perf::report::sig3(c))
        ),
        threads.map_or("unknown".into(), |t| t.to_string()),
    ))
}

/// The run's JSON report: `get_data` and the environment (what `compare` reads), and the
/// trades: closed, rejected with their reasons, cancelled, and the summary.
fn write_report_json(
    stats: &PerformanceStatistics,
    result: &BacktestResult,
    resources: &[backtest_perf::monitor::ResourceSample],
    out: &std::path::Path,
) -> Result<std::path::PathBuf, CliError> {
    let report = backtest_perf::export::json::JsonReport {
        statistics: stats.clone(),
        environment: backtest_perf::export::environment::Environment::capture(),
    };
    let file_name = format!(
        "{}.json",
        backtest_perf::dump::safe_file_stem(&stats.strategy_name)
    );
    let failed = |e: serde_json::Error| {
        CliError::Dump(DumpError::Write {
            path: out.join(&file_name),
            source: e.into(),
        })
    };
    let mut value = serde_json::to_value(&report).map_err(failed)?;
    let rejected: Vec<serde_json::Value> = result
        .rejected
        .iter()
        .map(|r| {
            serde_json::json!({
                "signal": r.signal,
                "at": r.at,
                "reason": r.reason,
                "message": r.reason.to_string(),
            })
        })
        .collect();
    let mut summary = serde_json::to_value(result.summary).map_err(failed)?;
    summary["totalPnlIs"] = "the sum of per-trade percentages, not compounded".into();
    // Its place among the sorted keys; the trades are written from `result` directly.
    value["trades"] = serde_json::Value::Null;
    // The hooks over their thresholds, with the profile's samples while each ran.
    value["slowHooks"] = serde_json::json!({
        "total": result.slow_hooks_total,
        "listed": serde_json::to_value(&result.slow_hooks).map_err(failed)?,
    });
    // The process's resources while the runs went on (all strategies ran at once).
    value["resources"] = serde_json::to_value(resources).map_err(failed)?;
    let serde_json::Value::Object(report) = value else {
        return Err(failed(serde::ser::Error::custom(
            "the report is not a JSON object",
        )));
    };
    let whole = WithTrades {
        report: &report,
        trades: Trades {
            cancelled: &result.cancelled,
            closed: &result.closed,
            rejected,
            summary,
        },
    };
    Ok(backtest_perf::dump::write_atomic_with(
        out,
        &file_name,
        |file| serde_json::to_writer_pretty(file, &whole).map_err(std::io::Error::from),
    )?)
}

/// The JSON report written as it is serialized, its trades straight from the run's
/// result: ten years of minutes make about 50,000 trades a strategy, which as a JSON tree
/// and then one string took 160 MB. Keys come out sorted, as from a tree.
struct WithTrades<'a> {
    report: &'a serde_json::Map<String, serde_json::Value>,
    trades: Trades<'a>,
}

/// The trades, fields in sorted order like the rest of the report.
#[derive(serde::Serialize)]
struct Trades<'a> {
    cancelled: &'a [backtest_perf::engine::CancelledSignal],
    closed: &'a [backtest_perf::engine::ClosedSignal],
    rejected: Vec<serde_json::Value>,
    summary: serde_json::Value,
}

impl serde::Serialize for WithTrades<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.report.len()))?;
        for (key, value) in self.report {
            if key == "trades" {
                map.serialize_entry(key, &self.trades)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Runs the backtests, prints a summary and the performance table per strategy, and
/// dumps one report per strategy into `args.out`.
pub fn run(args: &BacktestArgs) -> Result<Vec<BacktestResult>, CliError> {
    let entries = select(&args.strategies, &args.registry)?;
    // Every strategy is built and given its parameters before anything runs.
    let mut built = Vec::with_capacity(entries.len());
    for entry in &entries {
        let mut strategy = (entry.build)();
        for (name, value) in &args.params {
            strategy.set_param(name, value).map_err(CliError::Param)?;
        }
        built.push(strategy);
    }
    let mut built = built.into_iter();
    let config = StorageConfig {
        max_events: args.max_events,
        ..StorageConfig::default()
    };
    if config != StorageConfig::default() || args.layout != super::LayoutArg::WholeRun {
        configure_performance(config, args.layout.into())?;
    }
    // The reports' folder is checked before any backtest runs, not after all of them.
    backtest_perf::dump::check_writable(&args.out)?;
    let loaded = load(args)?;
    let template = loaded.backtest(&BacktestConfig::default())?;
    let frames = template.frame().count() * entries.len() as u64;
    let mut tracker = if args.trace && !args.timeline {
        TrackerOptions::default()
    } else if args.timeline {
        // The warm-ups and the slowest other ticks are kept with what ran
        // inside them, whatever the run's length: memory does not grow with the run.
        TrackerOptions {
            keep_slowest_roots: Some(TIMELINE_TICKS),
            track_memory: true,
            ..TrackerOptions::default()
        }
    } else {
        TrackerOptions::disabled()
    };
    for (metric, ms) in &args.thresholds {
        tracker.thresholds.set(metric, *ms)?;
    }
    let config = BacktestConfig {
        tracker,
        sample_every: args.sample,
        stream_lookback: match args.data {
            Data::Synthetic { lookback, .. } => lookback,
            _ => BacktestConfig::default().stream_lookback,
        },
        ..BacktestConfig::default()
    };
    let bar = super::progress_bar(
        frames,
        200_000,
        "backtesting {bar:40} {human_pos}/{human_len} frames ({eta})",
    );
    let jobs: Vec<Job> = entries
        .iter()
        .map(|entry| {
            let mut backtest = loaded.backtest(&config)?;
            if let Some(bar) = &bar {
                let bar = bar.clone();
                backtest = backtest.with_progress(Arc::new(move |n| bar.inc(n)));
            }
            let strategy = built.next().unwrap_or_else(|| (entry.build)());
            Ok((backtest, strategy))
        })
        .collect::<Result<_, CliError>>()?;
    #[cfg(feature = "prometheus")]
    let metrics = super::exporters::Metrics::start(&args.exporters, &config.tracker.thresholds)?;
    #[cfg(feature = "otel")]
    let spans = super::exporters::Spans::start(&args.exporters, &config.tracker.thresholds)?;
    let _in_run_alerts = args.alerts.as_ref().map(|alerts| {
        let checker = Arc::new(backtest_perf::alerts::InRunAlerts::new(
            alerts.clone(),
            performance_service().clone(),
            chrono::TimeDelta::minutes(i64::from(args.alert_every_minutes)),
        ));
        backtest_perf::performance_emitter().add_sink(checker.clone());
        checker
    });
    #[cfg(feature = "flamegraph")]
    let flamegraphs = super::exporters::Flamegraphs::start(&args.exporters);
    // The resource monitor samples while the runs go on; resource rules are checked on
    // each sample, in wall time.
    let monitor = (args.monitor_interval_ms > 0).then(|| {
        let alerts = args.alerts.clone();
        backtest_perf::monitor::ResourceMonitor::start(
            backtest_perf::performance_emitter(),
            std::time::Duration::from_millis(args.monitor_interval_ms),
            Some(Box::new(move |sample| {
                if let Some(alerts) = &alerts {
                    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
                    alerts.evaluate_resources(sample, now);
                }
            })),
        )
    });
    #[cfg(feature = "profile")]
    let profile = super::exporters::Profile::start(&args.exporters);
    // The last subscriber: the export then takes the engine's batches without a copy.
    #[cfg(feature = "otel")]
    let spans = spans.listen();
    let results = run_parallel(jobs, args.threads);
    let resources = monitor.map(|m| m.stop()).unwrap_or_default();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut done = Vec::new();
    for result in results {
        let result = result?;
        // One snapshot of the statistics serves the console, the alerts and every report.
        let stats = performance_service().get_data(&result.symbol, &result.strategy);
        print_result(&result, &stats);
        print_slow_hooks(&result, &config.tracker);
        if args.timeline {
            print_slowest_tick(&result);
        }
        if let Some(section) = args
            .alerts
            .as_ref()
            .and_then(|alerts| backtest_perf::alerts::objectives_markdown(&stats, alerts.rules()))
        {
            put!("{}", section.trim_start());
        }
        if let Some(alerts) = &args.alerts {
            // At the run's end, in the same simulated time as the checks during it.
            match stats.events.iter().find_map(|e| e.when) {
                Some(end) => alerts.evaluate(&stats, end),
                None => alerts.evaluate_now(&stats),
            };
        }
        for format in &args.formats {
            let path = match format {
                super::ReportFormat::Md => {
                    // The report; with objectives in the rules, where each stands; and
                    // the run's health.
                    let mut report =
                        performance_service().get_report(&result.symbol, &result.strategy);
                    if let Some(section) = args.alerts.as_ref().and_then(|alerts| {
                        backtest_perf::alerts::objectives_markdown(&stats, alerts.rules())
                    }) {
                        report.push_str(&section);
                    }
                    report.push_str(&backtest_perf::analysis::markdown(
                        &backtest_perf::analysis::analyze_run(
                            &stats,
                            &config.tracker.thresholds,
                            result.tracker.as_ref(),
                        ),
                    ));
                    report.push_str(&backtest_perf::engine::timing::slow_hooks_markdown(
                        &result.slow_hooks,
                        result.slow_hooks_total,
                    ));
                    let file_name = format!(
                        "{}.md",
                        backtest_perf::dump::safe_file_stem(&result.strategy)
                    );
                    backtest_perf::dump::write_atomic(&args.out, &file_name, &report)?
                }
                super::ReportFormat::Json => {
                    write_report_json(&stats, &result, &resources, &args.out)?
                }
                super::ReportFormat::Html => {
                    let health = backtest_perf::analysis::analyze_run(
                        &stats,
                        &config.tracker.thresholds,
                        result.tracker.as_ref(),
                    );
                    let mut page = backtest_perf::export::html::render_html_with(
                        &stats,
                        slowest_tick(&result),
                        Some(&health),
                        &resources,
                    );
                    let slow = backtest_perf::engine::timing::slow_hooks_html(
                        &result.slow_hooks,
                        result.slow_hooks_total,
                    );
                    if let Some(end) = page.rfind("\n</body></html>") {
                        page.insert_str(end, &slow);
                    }
                    let file_name = format!(
                        "{}.html",
                        backtest_perf::dump::safe_file_stem(&result.strategy)
                    );
                    backtest_perf::dump::write_atomic(&args.out, &file_name, &page)?
                }
            };
            say!("report: {}", path.display());
        }
        #[cfg(feature = "flamegraph")]
        flamegraphs.write(
            backtest_perf::StorageKey::new(&result.symbol, &result.strategy),
            &args.out,
        )?;
        if args.trace
            && let Some(report) = &result.tracker
        {
            let path = write_chrome_trace(report, &args.out, &result.strategy)?;
            // Say which operations the trace holds when it is not all of them.
            let held = if report.dropped > 0 {
                format!(
                    "; it holds the first {} of the run's {} operations, the statistics cover all",
                    thousands(report.events.len() as f64, 0),
                    thousands(report.event_count as f64, 0)
                )
            } else {
                String::new()
            };
            say!(
                "trace: {} (open in ui.perfetto.dev, chrome://tracing or speedscope{held})",
                path.display()
            );
        }
        say!();
        done.push(result);
    }
    if let Some(line) = resources_line(&resources, args.monitor_interval_ms) {
        say!("{line}");
    }
    // The reports are written: only now may a side job fail, and it costs nothing above.
    let mut failed = Vec::new();
    #[cfg(feature = "profile")]
    failed.extend(profile.finish(&args.out));
    #[cfg(feature = "prometheus")]
    failed.extend(metrics.finish(&args.exporters, &args.out));
    #[cfg(feature = "otel")]
    failed.extend(spans.finish());
    if let Some(alerts) = &args.alerts
        && alerts.failures() > 0
    {
        failed.push(format!(
            "{} alert deliveries failed ({}); check the webhook URL or the alert file's folder",
            alerts.failures(),
            alerts.failure_reasons().join("; ")
        ));
    }
    #[cfg(feature = "prometheus")]
    if args.exporters.serve_after {
        // Serving never returns: say now what failed.
        if !failed.is_empty() {
            eprintln!("error: {}", CliError::SideJobs(failed.clone()));
        }
        metrics.hold(&args.exporters);
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(CliError::SideJobs(failed))
    }
}

fn print_result(result: &BacktestResult, stats: &PerformanceStatistics) {
    let s = &result.summary;
    say!(
        "{} on {}: {} frames, {} signals, win rate {:.1}%, total PnL {:+.2}% (the sum of per-trade percentages, not compounded), avg PnL {:+.3}% ({} rejected, {} cancelled)",
        result.strategy,
        result.symbol,
        thousands(result.frames as f64, 0),
        s.signals,
        s.win_rate,
        s.total_pnl,
        s.avg_pnl,
        result.rejected.len(),
        result.cancelled.len(),
    );
    // Why signals were rejected, counted by reason, with the first of each.
    let mut reasons: Vec<(
        std::mem::Discriminant<backtest_perf::engine::Rejection>,
        usize,
        String,
    )> = Vec::new();
    for rejected in &result.rejected {
        let kind = std::mem::discriminant(&rejected.reason);
        match reasons.iter_mut().find(|(k, ..)| *k == kind) {
            Some((_, count, _)) => *count += 1,
            None => reasons.push((
                kind,
                1,
                format!(
                    "{} (first at {})",
                    rejected.reason,
                    rejected.at.to_rfc3339()
                ),
            )),
        }
    }
    for (_, count, first) in &reasons {
        say!("  rejected {count}×: {first}");
    }
    if stats.total_events == 0 {
        return;
    }
    say!(
        "{} events ({}); time in hooks {} (self time), wall time {}; durations in {}:",
        thousands(stats.total_events as f64, 0),
        coverage(stats),
        human(stats.self_duration),
        human(stats.wall_duration),
        Unit::for_stats(stats).label()
    );
    if let Some(note) = sampling(stats) {
        say!("sampled: {note}");
    }
    if let Some(note) = backtest_perf::report::wait_resolution(stats) {
        say!("note: {note}");
    }
    put!("{}", terminal_table(stats));
}

/// The statistics as an aligned table for the terminal (`tabled`), with the columns and
/// order of the markdown report; the markdown keeps its own compact layout, which
/// backtest-kit's layout fixes byte for byte.
fn terminal_table(stats: &PerformanceStatistics) -> String {
    use tabled::settings::{Alignment, Style, object::Columns};
    let columns: Vec<_> = default_columns()
        .into_iter()
        .filter(|c| c.is_visible())
        .collect();
    let unit = backtest_perf::report::Unit::for_stats(stats);
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(columns.iter().map(|c| c.label().to_string()));
    for m in backtest_perf::report::sorted_rows(stats) {
        builder.push_record(columns.iter().map(|c| c.format_in(m, unit)));
    }
    let mut table = builder.build();
    table
        .with(Style::markdown())
        .modify(Columns::new(1..), Alignment::right());
    format!("{table}\n")
}

/// The alert rules of `rules` (a JSON array), delivered to the log and the given sinks.
pub fn alert_manager(
    rules: &std::path::Path,
    file: Option<PathBuf>,
    #[cfg(feature = "webhook")] webhook: Vec<String>,
) -> Result<AlertManager, CliError> {
    let text = std::fs::read_to_string(rules).map_err(|source| CliError::Input {
        path: rules.to_path_buf(),
        source,
    })?;
    let rules_read = rules_from_json(&text).map_err(|e| CliError::Rules {
        path: rules.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut manager = AlertManager::new(rules_read).with_sink(Arc::new(LogSink));
    if let Some(file) = file {
        manager = manager.with_sink(Arc::new(FileSink::new(file)));
    }
    #[cfg(feature = "webhook")]
    for destination in webhook {
        manager = manager.with_sink(Arc::new(backtest_perf::alerts::WebhookSink::to(
            &destination,
        )));
    }
    Ok(manager)
}

/// The run's slow hooks, if any: the first ten, and how many more.
fn print_slow_hooks(result: &BacktestResult, options: &TrackerOptions) {
    if result.slow_hooks_total == 0 {
        return;
    }
    say!("slow hooks: {}", result.slow_hooks_total);
    for slow in result.slow_hooks.iter().take(10) {
        say!(
            "  {} at {}: {}, {:.1}x its {} threshold{}",
            slow.metric_type,
            slow.when.to_rfc3339(),
            human(slow.duration_ms),
            slow.slowness_ratio,
            human(options.threshold_ms(slow.metric_type.as_str())),
            slow.thread_ran()
                .map_or(String::new(), |ran| format!("; {}", verdict(ran)))
        );
        if let Some(profile) = &slow.profile {
            say!("    CPU profile while it ran: {profile}");
        }
    }
    if result.slow_hooks_total > 10 {
        say!("  ... and {} more", result.slow_hooks_total - 10);
    }
}

/// Ticks `--timeline` keeps besides the warm-up: the slowest ones.
const TIMELINE_TICKS: usize = 3;

/// The run's tracker report and the id of its slowest tick that is not a warm-up, from
/// the tracker's kept subtrees, if it was tracked.
fn slowest_tick(result: &BacktestResult) -> Option<(&TrackerReport, u64)> {
    let report = result.tracker.as_ref()?;
    let root = report
        .slowest_roots
        .first()
        .or(report.warm_ups.first().map(|w| &w.root))?;
    Some((report, *root))
}

/// What a thread's CPU time says of a slow operation, in words.
fn verdict(ran: bool) -> &'static str {
    if ran {
        "the thread ran: slow code, or interrupts or virtual-machine exits charged to the thread"
    } else {
        "the thread waited: pre-empted or blocked, not slow code"
    }
}

/// Whether a tick's thread ran or waited: its thread CPU time against its wall time.
fn ran_or_waited(report: &TrackerReport, id: u64) -> Option<String> {
    let tick = report.events.iter().find(|e| e.id == id)?;
    let cpu_ms = tick.metadata.as_ref()?.get("threadCpuMs")?.as_f64()?;
    let share = if tick.duration_ms > 0.0 {
        (cpu_ms / tick.duration_ms * 100.0).min(100.0)
    } else {
        100.0
    };
    Some(format!(
        "thread CPU time {} of {} wall ({}%): {}",
        human(cpu_ms),
        human(tick.duration_ms),
        backtest_perf::report::sig3(share),
        verdict(backtest_perf::thresholds::thread_ran(
            cpu_ms,
            tick.duration_ms
        ))
    ))
}

/// The timeline of the run's slowest tick.
fn print_slowest_tick(result: &BacktestResult) {
    if let Some(report) = &result.tracker {
        for (i, warm_up) in report.warm_ups.iter().enumerate() {
            let Some(tick) = report.events.iter().find(|e| e.id == warm_up.root) else {
                continue;
            };
            if i == 0 {
                say!(
                    "first tick (warm-up, one-time costs; left out of the slowest): {}",
                    human(tick.duration_ms)
                );
            } else {
                say!(
                    "tick at {} (warm-up: the first run of {}; left out of the slowest): {}",
                    human(tick.offset_ms),
                    warm_up.first_runs.join(", "),
                    human(tick.duration_ms)
                );
            }
        }
    }
    if let Some((report, root)) = slowest_tick(result) {
        if let Some(line) = ran_or_waited(report, root) {
            say!("slowest tick: {line}");
        }
        let style = TimelineStyle {
            root: Some(root),
            ..TimelineStyle::for_stdout()
        };
        put!("{}", render(report, style));
    }
}
