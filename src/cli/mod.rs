//! The `backtest-perf` command line as a library (feature `cli`), so that a crate of
//! your own gets the whole command line (progress bar, reports, exporters, alerts) with
//! its own strategies, in a few lines of `main`:
//!
//! ```no_run
//! use backtest_perf::engine::{Context, Signal, Strategy, StrategyError};
//!
//! #[derive(Default)]
//! struct Always;
//!
//! impl Strategy for Always {
//!     fn name(&self) -> &str {
//!         "always-long"
//!     }
//!     fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
//!         let Some(price) = ctx.average_price()? else { return Ok(None) };
//!         Ok(Some(Signal::long(price * 1.01, price * 0.99)))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     backtest_perf::cli::Cli::default().with_strategy::<Always>().run()
//! }
//! ```

/// `println!` for the command line's standard output that survives a closed pipe
/// (`backtest | head -1`): what cannot be printed is dropped and the command goes on to
/// write its reports, where `println!` would panic.
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that survives a closed pipe; see [`say!`].
macro_rules! put {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub(crate) mod backtest;
pub(crate) mod bench;
pub(crate) mod compare;
pub(crate) mod exporters;
pub(crate) mod jsonl;
pub(crate) mod stats;

use std::path::PathBuf;

use std::ffi::OsString;
use std::process::ExitCode;

use backtest_perf::engine::{Strategy, StrategyEntry};
use backtest_perf::{
    DumpError, StatsPreset, StorageConfig, performance_emitter, performance_service,
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Where the time goes in your backtests: timing, statistics and reports.
#[derive(Parser, Debug)]
#[command(
    name = "backtest-perf",
    version,
    about,
    after_help = "With no command, runs the main job: every strategy on the bundled EURUSD hourly \
                  data, one markdown report per strategy in ./dump/performance (the same as \
                  `backtest-perf backtest`)."
)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The command line with its strategies: the bundled ones by default, and any added
/// with [`with_strategy`](Self::with_strategy).
///
/// ```
/// use backtest_perf::cli::Cli;
/// let cli = Cli::default().with_strategy::<backtest_perf::strategies::SmaCrossover>();
/// assert_eq!(cli.strategy_names(), ["sma-crossover", "rsi-reversion", "donchian-breakout"]);
/// ```
#[derive(Debug, Clone)]
pub struct Cli {
    strategies: Vec<StrategyEntry>,
}

impl Default for Cli {
    /// The bundled strategies.
    fn default() -> Self {
        Cli {
            strategies: backtest_perf::strategies::registry(),
        }
    }
}

impl Cli {
    /// A command line with no strategies yet.
    ///
    /// ```
    /// assert!(backtest_perf::cli::Cli::empty().strategy_names().is_empty());
    /// ```
    pub fn empty() -> Self {
        Cli {
            strategies: Vec::new(),
        }
    }

    /// Adds a strategy type, built with its `Default` parameters (`--param` changes them);
    /// one with the same name is replaced.
    pub fn with_strategy<S: Strategy + Default + 'static>(self) -> Self {
        self.with_entry(StrategyEntry::of::<S>())
    }

    /// Adds a strategy entry; one with the same name is replaced.
    pub fn with_entry(mut self, entry: StrategyEntry) -> Self {
        match self.strategies.iter_mut().find(|e| e.name == entry.name) {
            Some(same) => *same = entry,
            None => self.strategies.push(entry),
        }
        self
    }

    /// The strategies' names, in the order they run.
    pub fn strategy_names(&self) -> Vec<&str> {
        self.strategies.iter().map(|e| e.name.as_str()).collect()
    }

    /// Parses the process's arguments and runs; prints what failed on stderr and returns
    /// the exit status: 0, 1 (failed), 2 (bad arguments) or 3 (the reports were written
    /// but an export or alert delivery failed).
    pub fn run(self) -> ExitCode {
        self.run_with(std::env::args_os())
    }

    /// [`run`](Self::run) with these arguments (the first is the program's name).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let status = backtest_perf::cli::Cli::default().run_with([
    ///     "backtest-perf", "backtest", "--strategy", "sma-crossover", "--out",
    ///     dir.path().to_str().unwrap(),
    /// ]);
    /// assert_eq!(status, std::process::ExitCode::SUCCESS);
    /// assert!(dir.path().join("sma-crossover.md").exists());
    /// ```
    pub fn run_with<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = match self.command().try_get_matches_from(args) {
            Ok(matches) => matches,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        };
        let args = match Args::from_arg_matches(&matches) {
            Ok(args) => args,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(2);
            }
        };
        match run(args, &self.strategies) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ CliError::SideJobs(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_SIDE_JOBS_FAILED)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// The clap command, its `backtest --help` listing these strategies.
    fn command(&self) -> clap::Command {
        let width = self
            .strategies
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(0);
        let listing: Vec<String> = self
            .strategies
            .iter()
            .map(|e| {
                let params: Vec<String> = (e.build)()
                    .params()
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                let params = if params.is_empty() {
                    String::new()
                } else {
                    format!("\n  {:width$}  --param {}", "", params.join(" "))
                };
                format!("  {:width$}  {}{params}", e.name, e.description)
            })
            .collect();
        let strategies = format!(
            "Strategies (all run unless --strategy names some):\n{}",
            listing.join("\n")
        );
        Args::command().mut_subcommand("backtest", |c| c.after_help(strategies))
    }
}

/// The subcommands; none runs the main job (every strategy on the bundled EURUSD hourly
/// data, reports in ./dump/performance).
#[derive(Subcommand, Debug)]
// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Backtest strategies on a symbol; print trades and timings; dump one report per strategy.
    Backtest(backtest::BacktestCli),
    /// Statistics of performance events read from JSONL files, merged with the whole-run
    /// statistics of `stats` and `backtest --format json` outputs.
    Stats {
        /// An input (repeat for several; `-` is standard input): one event per line (a
        /// PerformanceContract, or a backtest-kit `{"reportName":"performance","data":{...}}`
        /// line), or a `stats` output or `backtest --format json` report to merge.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Only this symbol.
        #[arg(long)]
        symbol: Option<String>,
        /// Only this strategy.
        #[arg(long)]
        strategy: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        format: OutputFormat,
        /// How percentiles and the standard deviation are computed.
        #[arg(long = "stats", value_enum, default_value_t = PresetArg::Seed)]
        preset: PresetArg,
        /// Raw events kept per symbol:strategy (for the backtest-kit preset); the default
        /// statistics cover every event whatever this is.
        #[arg(long, default_value_t = StorageConfig::default().max_events, value_parser = parse_max_events)]
        max_events: usize,
        /// Include each pair's newest raw events (at most --max-events) in the JSON, so
        /// that `compare` can test the samples.
        #[arg(long)]
        with_events: bool,
    },
    /// Compare two measurements (`backtest --format json` reports, or `stats` outputs of
    /// one symbol:strategy) and fail on a confirmed regression.
    Compare {
        /// The baseline report.
        baseline: PathBuf,
        /// The current report.
        current: PathBuf,
        /// A change beyond this many percent (of the mean, median, p95 or p99) counts;
        /// above 0 and at most 1,000,000.
        #[arg(long, default_value_t = 20.0, value_parser = parse_percent)]
        threshold: f64,
        /// The Mann-Whitney test must reach this p-value for a change to count; above 0
        /// and below 1.
        #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
        alpha: f64,
    },
    /// The health of a run (a `backtest --format json` report, or a `stats` output of one
    /// symbol:strategy): a score, a grade and recommendations from the measured numbers.
    Analyze {
        /// The report.
        report: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Md)]
        format: OutputFormat,
    },
    /// Push synthetic events through the default pipeline and print one JSON line of timings.
    Bench {
        /// Events to emit.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// symbol:strategy pairs, round-robin.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        pairs: u64,
        /// Metric types, round-robin (the five hooks first).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        types: u64,
        /// Leave out the year backtests and the span export costs (their fields print as null).
        #[arg(long)]
        skip_backtest: bool,
    },
}

/// A progress bar for `total` units on stderr, or `None` when stderr is not a terminal
/// or the work is too small (under `min`) to be worth one.
pub(crate) fn progress_bar(total: u64, min: u64, template: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || total < min {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Reads `HOOK=MS`.
fn parse_threshold(text: &str) -> Result<(String, f64), String> {
    let (name, ms) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not HOOK=MS (for example getSignal=5)"))?;
    backtest_perf::MetricType::parse_strict(name).map_err(|e| format!("`{text}`: {e}"))?;
    let ms: f64 = ms
        .parse()
        .map_err(|_| format!("`{ms}` in `{text}` is not a number of milliseconds"))?;
    // The one place slowness is defined checks it: a finite number of ms above 0.
    backtest_perf::thresholds::Thresholds::default()
        .with(name, ms)
        .map_err(|e| format!("`{text}`: {e}"))?;
    Ok((name.to_string(), ms))
}

/// Report files `backtest` writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    /// The markdown report.
    Md,
    /// Statistics and events as JSON, with the environment: the input of `compare`.
    Json,
    /// A self-contained HTML page with charts (the slowest tick with `--timeline`).
    Html,
}

/// Output formats of `stats`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// `{"pairs":[...],"rejected":N}` on one line.
    Json,
    /// The markdown report of each pair.
    Md,
}

/// `--layout` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutArg {
    /// The whole run in readable units, with self time.
    WholeRun,
    /// backtest-kit's layout byte for byte, over the window (the `backtest-kit` preset).
    BacktestKit,
}

impl From<LayoutArg> for StatsPreset {
    fn from(layout: LayoutArg) -> Self {
        match layout {
            LayoutArg::WholeRun => StatsPreset::Seed,
            LayoutArg::BacktestKit => StatsPreset::BacktestKit,
        }
    }
}

/// `compare --threshold`: a finite percentage above 0 (an infinite or NaN one would
/// switch the gate off without a word).
fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1e6 => Ok(p),
        _ => Err(format!(
            "`{text}` is not a percentage above 0 and at most 1000000 (for example 20)"
        )),
    }
}

/// `compare --alpha`: a p-value strictly between 0 and 1.
fn parse_alpha(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(a) if a > 0.0 && a < 1.0 => Ok(a),
        _ => Err(format!(
            "`{text}` is not a p-value above 0 and below 1 (for example 0.05)"
        )),
    }
}

/// `--max-events`: a whole number of events, at least 1.
fn parse_max_events(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{text}` is not a number of events of at least 1 (for example 10000)"
        )),
    }
}

/// `--stats` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PresetArg {
    /// Nearest-rank percentiles, population standard deviation.
    Seed,
    /// Interpolated percentiles, sample standard deviation (backtest-kit >= 10.2).
    BacktestKit,
}

impl From<PresetArg> for StatsPreset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Seed => StatsPreset::Seed,
            PresetArg::BacktestKit => StatsPreset::BacktestKit,
        }
    }
}

/// The exit status of a run whose reports were written but whose export or alert
/// delivery failed: distinct from 1 (the run itself failed) and 2 (bad arguments).
pub const EXIT_SIDE_JOBS_FAILED: u8 = 3;

/// Why a command failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The input could not be read.
    #[error("cannot read {}: {source}; check the path", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The process-wide bus was configured too late.
    #[error(transparent)]
    AlreadyInUse(#[from] backtest_perf::facade::AlreadyInUse),
    /// A slow-operation threshold was not a number of ms above 0.
    #[error(transparent)]
    Threshold(#[from] backtest_perf::thresholds::InvalidThreshold),
    /// Standard output could not be written.
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    /// A report could not be written.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The metrics endpoint could not start.
    #[cfg(feature = "prometheus")]
    #[error("cannot serve metrics on {addr}: {source}; pick another address or port")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    /// Candle data could not be read.
    #[error(transparent)]
    Data(#[from] backtest_perf::engine::csv::DataError),
    /// The exchange could not serve the backtest.
    #[error(transparent)]
    Exchange(#[from] backtest_perf::engine::ExchangeError),
    /// A backtest failed.
    #[error(transparent)]
    Backtest(#[from] backtest_perf::engine::BacktestError),
    /// A `--param` was refused by a strategy.
    #[error("--param: {0}")]
    Param(String),
    /// No strategy has that name.
    #[error("unknown strategy {name:?}; the known strategies are: {known}")]
    UnknownStrategy { name: String, known: String },
    /// The OpenTelemetry export was misconfigured.
    #[cfg(feature = "otel")]
    #[error("OpenTelemetry export: {0}")]
    Spans(String),
    /// An output file could not be created.
    #[cfg(feature = "otel")]
    #[error("cannot create {}: {source}; check that its folder is writable", path.display())]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The reports were written, but an export or alert delivery failed.
    #[error(
        "the reports above are complete, but {} side job(s) failed:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    SideJobs(Vec<String>),
    /// The synthetic candles could not be generated.
    #[error("cannot generate synthetic candles: {0}")]
    Synthetic(String),
    /// The alert rules could not be read.
    #[error("{}: {reason}; the file must be a JSON array of rules (see the README)", path.display())]
    Rules { path: PathBuf, reason: String },
    /// A file was not a JSON report.
    #[error("{} is not a backtest-perf JSON report (write one with `backtest --format json`): {reason}", path.display())]
    Report { path: PathBuf, reason: String },
    /// `compare` found a confirmed regression.
    #[error("performance regressed beyond {threshold}% (Mann-Whitney p < {alpha}): {metrics}")]
    Regression {
        metrics: String,
        threshold: f64,
        alpha: f64,
    },
    /// Some input lines were bad (each was reported above).
    #[error("{0} bad line(s) in the input were skipped (see above); fix or remove them")]
    BadLines(u64),
}

/// Runs the parsed command line with these strategies.
fn run(args: Args, strategies: &[StrategyEntry]) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match args.command {
        None => backtest::run(&backtest::BacktestArgs {
            registry: strategies.to_vec(),
            ..backtest::BacktestArgs::default()
        })
        .map(drop),
        Some(Command::Backtest(cli)) => {
            backtest::run(&backtest::BacktestArgs::from_cli(cli, strategies)?).map(drop)
        }
        Some(Command::Stats {
            inputs,
            symbol,
            strategy,
            format,
            preset,
            max_events,
            with_events,
        }) => {
            let args = stats::StatsArgs {
                with_events,
                inputs,
                symbol,
                strategy,
                format,
                preset: preset.into(),
                max_events,
            };
            let bad = stats::run(&args, &mut stdout.lock(), &mut stderr.lock())?;
            if bad > 0 {
                return Err(CliError::BadLines(bad));
            }
            Ok(())
        }
        Some(Command::Compare {
            baseline,
            current,
            threshold,
            alpha,
        }) => compare::run(&baseline, &current, threshold, alpha),
        Some(Command::Analyze { report, format }) => {
            let loaded = compare::load(&report)?;
            let health = backtest_perf::analysis::analyze(
                &loaded.statistics,
                &backtest_perf::thresholds::Thresholds::default(),
            );
            match format {
                OutputFormat::Md => put!(
                    "{}",
                    backtest_perf::analysis::markdown(&health).trim_start()
                ),
                OutputFormat::Json => say!(
                    "{}",
                    serde_json::to_string(&health).map_err(|e| CliError::Output(e.into()))?
                ),
            }
            Ok(())
        }
        Some(Command::Bench {
            events,
            pairs,
            types,
            skip_backtest,
        }) => {
            let args = bench::BenchArgs {
                events,
                pairs: pairs as usize,
                types: types as usize,
                backtest: !skip_backtest,
            };
            let result = bench::run(&args, performance_emitter(), performance_service());
            say!(
                "{}",
                serde_json::to_string(&result).map_err(|e| CliError::Output(e.into()))?
            );
            Ok(())
        }
    }
}
