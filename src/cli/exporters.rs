//! The optional exporters of `backtest`: Prometheus (feature `prometheus`) and
//! OpenTelemetry (feature `otel`), with the flags that turn them on.

#[cfg(feature = "otel")]
use std::path::PathBuf;

#[cfg(feature = "prometheus")]
use std::sync::Arc;

#[cfg(feature = "prometheus")]
use backtest_perf::performance_service;
#[cfg(any(feature = "prometheus", feature = "otel"))]
use backtest_perf::thresholds::Thresholds;

#[cfg(any(feature = "prometheus", feature = "otel"))]
use super::CliError;

/// The default labels the flags and OpenTelemetry's variables give.
#[cfg(any(feature = "prometheus", feature = "otel"))]
fn labels(args: &ExporterArgs) -> backtest_perf::export::labels::DefaultLabels {
    backtest_perf::export::labels::DefaultLabels::from_env()
        .with(args.service_name.clone(), args.environment.clone())
}

/// The exporters' flags, flattened into `backtest`'s.
#[derive(clap::Args, Debug, Default)]
pub struct ExporterArgs {
    /// The `service` label of every metric and the `service.name` of every span
    /// (default: OTEL_SERVICE_NAME, else backtest-perf).
    #[cfg(any(feature = "prometheus", feature = "otel"))]
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    /// The `environment` label of every metric and the `deployment.environment` of every
    /// span (default: OTEL_RESOURCE_ATTRIBUTES' deployment.environment, else none).
    #[cfg(any(feature = "prometheus", feature = "otel"))]
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics while the backtests run
    /// (default 127.0.0.1:9464 when given without an address).
    #[cfg(feature = "prometheus")]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub metrics_addr: Option<String>,
    /// Write the Prometheus metrics to OUT/backtest-perf.prom at the end (for the
    /// node_exporter textfile collector or a Pushgateway).
    #[cfg(feature = "prometheus")]
    #[arg(long)]
    pub metrics_textfile: bool,
    /// Keep serving /metrics after the backtests end, until interrupted (Ctrl-C), so a
    /// Prometheus server gets to scrape a short run.
    #[cfg(feature = "prometheus")]
    #[arg(long, requires = "metrics_addr")]
    pub serve_after: bool,
    /// Push the metrics to this Pushgateway (e.g. http://127.0.0.1:9091) when the
    /// backtests end, as job `backtest-perf`.
    #[cfg(feature = "prometheus")]
    #[arg(long, value_name = "URL")]
    pub metrics_push: Option<String>,
    /// Send the spans (one trace per tick) to this OTLP/HTTP endpoint, e.g.
    /// http://localhost:4318/v1/traces; without a URL, to OTEL_EXPORTER_OTLP_ENDPOINT
    /// (or localhost:4318). OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, OTEL_SERVICE_NAME and
    /// OTEL_RESOURCE_ATTRIBUTES apply.
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub otlp_endpoint: Option<String>,
    /// OTLP/HTTP wire format: http/protobuf or http/json (default:
    /// OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "PROTOCOL", requires = "otlp_endpoint")]
    pub otlp_protocol: Option<String>,
    /// Write the spans to this file as OTLP-JSON lines.
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "FILE")]
    pub otlp_file: Option<PathBuf>,
    /// Keep this ratio (0 to 1) of the tick traces, and every trace with a slow or failed
    /// span (default: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else all).
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "RATIO")]
    pub otlp_sample: Option<f64>,
    /// Sample the CPU while the runs go on (every thread, 1,000 times per CPU second) and
    /// write OUT/profile.pb (pprof) and OUT/profile.svg (a flamegraph of the code).
    #[cfg(feature = "profile")]
    #[arg(long)]
    pub profile: bool,
    /// Write each strategy's whole-run self time by stack of hooks and user steps, as
    /// OUT/<strategy>.folded and OUT/<strategy>.flamegraph.svg.
    #[cfg(feature = "flamegraph")]
    #[arg(long)]
    pub flamegraph: bool,
}

/// The folded stacks of a `backtest` call, when `--flamegraph` asks for them.
#[cfg(feature = "flamegraph")]
pub struct Flamegraphs(Option<std::sync::Arc<backtest_perf::export::flamegraph::FoldedStacks>>);

#[cfg(feature = "flamegraph")]
impl Flamegraphs {
    /// Subscribes the folded stacks to the bus if `--flamegraph` was given.
    pub fn start(args: &ExporterArgs) -> Self {
        Flamegraphs(args.flamegraph.then(|| {
            let stacks =
                std::sync::Arc::new(backtest_perf::export::flamegraph::FoldedStacks::default());
            backtest_perf::performance_emitter().add_sink(stacks.clone());
            stacks
        }))
    }

    /// Writes one run's folded stacks and SVG into `out`; prints their paths.
    pub fn write(
        &self,
        key: backtest_perf::StorageKey,
        out: &std::path::Path,
    ) -> Result<(), backtest_perf::DumpError> {
        if let Some(stacks) = &self.0 {
            let (folded, svg) = stacks.write(key, out)?;
            say!("flamegraph: {} ({})", svg.display(), folded.display());
        }
        Ok(())
    }
}

/// The Prometheus exporter of a `backtest` call, and its endpoint.
#[cfg(feature = "prometheus")]
pub struct Metrics {
    exporter: Option<Arc<backtest_perf::export::prometheus::PrometheusExporter>>,
    _server: Option<backtest_perf::export::prometheus::MetricsServer>,
}

#[cfg(feature = "prometheus")]
impl Metrics {
    /// Starts what the flags ask for (nothing when they ask for nothing).
    pub fn start(args: &ExporterArgs, thresholds: &Thresholds) -> Result<Self, CliError> {
        use backtest_perf::export::prometheus::PrometheusExporter;
        if args.metrics_addr.is_none() && !args.metrics_textfile && args.metrics_push.is_none() {
            return Ok(Metrics {
                exporter: None,
                _server: None,
            });
        }
        let storage = performance_service().storage().clone();
        // Renders the storage's whole-run statistics when scraped: nothing per event.
        let exporter = Arc::new(
            PrometheusExporter::new(thresholds.clone(), storage).with_labels(&labels(args)),
        );
        let server = match &args.metrics_addr {
            None => None,
            Some(addr) => {
                let server = exporter.serve(addr).map_err(|source| CliError::Serve {
                    addr: addr.clone(),
                    source,
                })?;
                say!(
                    "metrics: http://{0}/metrics (live statistics as JSON: http://{0}/stats)",
                    server.addr()
                );
                Some(server)
            }
        };
        Ok(Metrics {
            exporter: Some(exporter),
            _server: server,
        })
    }

    /// With `--serve-after`, keeps the endpoint up until the process is interrupted.
    pub fn hold(&self, args: &ExporterArgs) {
        if let (true, Some(server)) = (args.serve_after, &self._server) {
            say!(
                "metrics: still serving http://{}/metrics; interrupt (Ctrl-C) to stop",
                server.addr()
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    /// Writes the textfile, if asked for.
    /// Writes the textfile and pushes to the Pushgateway, if asked for; returns what
    /// failed, each with what to do.
    pub fn finish(&self, args: &ExporterArgs, out: &std::path::Path) -> Vec<String> {
        let mut failed = Vec::new();
        let Some(exporter) = &self.exporter else {
            return failed;
        };
        if args.metrics_textfile {
            match exporter.write_textfile(out, "backtest-perf") {
                Ok(path) => say!("metrics: {}", path.display()),
                Err(e) => failed.push(format!("Prometheus textfile: {e}")),
            }
        }
        if let Some(url) = &args.metrics_push {
            match exporter.push(url, "backtest-perf") {
                Ok(()) => say!("metrics: pushed to {url} (job backtest-perf)"),
                Err(e) => failed.push(format!(
                    "Prometheus push: {e}; check that the Pushgateway is up at {url}"
                )),
            }
        }
        failed
    }
}

/// The OpenTelemetry spans of a `backtest` call.
#[cfg(feature = "otel")]
pub struct Spans(Option<backtest_perf::export::otel::SpanExport>);

#[cfg(feature = "otel")]
impl Spans {
    /// Makes what the flags ask for (nothing when they ask for nothing), not yet
    /// listening (see [`listen`](Self::listen)). A bad configuration (URL, protocol,
    /// sampler, an unwritable file) is refused before any backtest runs.
    pub fn start(args: &ExporterArgs, thresholds: &Thresholds) -> Result<Self, CliError> {
        use backtest_perf::export::otel::{
            OtlpJsonFileExporter, OtlpProtocol, Sampler, SpanExport, otlp_http,
        };
        if args.otlp_endpoint.is_none() && args.otlp_file.is_none() {
            return Ok(Spans(None));
        }
        let sampler = match args.otlp_sample {
            Some(ratio) => Sampler::ratio(ratio),
            None => Sampler::from_env(),
        }
        .map_err(CliError::Spans)?;
        let mut export = SpanExport::new(thresholds.clone(), sampler).with_labels(&labels(args));
        if let Some(endpoint) = &args.otlp_endpoint {
            let protocol = args
                .otlp_protocol
                .as_deref()
                .map(OtlpProtocol::parse)
                .transpose()
                .map_err(CliError::Spans)?;
            let url = (!endpoint.is_empty()).then_some(endpoint.as_str());
            let exporter = otlp_http(url, protocol).map_err(CliError::Spans)?;
            let name = match url {
                Some(url) => format!("OTLP export to {url}"),
                None => "OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT)".to_string(),
            };
            export = export.to(
                format!("{name}; check that a collector listens there (OTLP/HTTP)"),
                exporter,
            );
        }
        if let Some(path) = &args.otlp_file {
            let exporter =
                OtlpJsonFileExporter::create(path).map_err(|source| CliError::CreateFile {
                    path: path.clone(),
                    source,
                })?;
            export = export.to(format!("OTLP-JSON file {}", path.display()), exporter);
        }
        Ok(Spans(Some(export)))
    }

    /// Starts taking the bus's events. Called after every other subscriber is added: as
    /// the bus's last subscriber, the export takes the engine's buffers without a copy.
    pub fn listen(self) -> Self {
        Spans(
            self.0
                .map(|export| export.listen(backtest_perf::performance_emitter())),
        )
    }

    /// Waits until every span was built and exported; prints what was sent; returns what
    /// failed, each with what to do.
    pub fn finish(self) -> Vec<String> {
        let Some(export) = self.0 else {
            return Vec::new();
        };
        let report = export.finish();
        let sampled = if report.traces_sampled_out > 0 {
            format!(
                "; {} traces left out by sampling (those with a slow or failed span are all kept)",
                report.traces_sampled_out
            )
        } else {
            String::new()
        };
        let orphans = if report.orphans > 0 {
            format!("; {} spans without their parent", report.orphans)
        } else {
            String::new()
        };
        say!(
            "spans: {} in {} traces (one per tick){sampled}{orphans}",
            report.spans,
            report.traces
        );
        report.failures
    }
}

/// The CPU profile of a `backtest` call, when `--profile` asks for it.
#[cfg(feature = "profile")]
pub struct Profile(Option<Result<backtest_perf::export::profile::CpuProfile, String>>);

#[cfg(feature = "profile")]
impl Profile {
    /// Starts profiling if `--profile` was given.
    pub fn start(args: &ExporterArgs) -> Self {
        Profile(
            args.profile
                .then(|| backtest_perf::export::profile::CpuProfile::start(1_000)),
        )
    }

    /// Stops, writes the profile into `out`, prints where and what it holds; returns
    /// what failed.
    pub fn finish(self, out: &std::path::Path) -> Vec<String> {
        match self.0 {
            None => Vec::new(),
            Some(Err(e)) => vec![format!("CPU profile: {e}")],
            Some(Ok(profile)) => match profile.finish(out, "profile") {
                Ok(report) => {
                    let top: Vec<String> = report
                        .top
                        .iter()
                        .take(3)
                        .map(|(name, n)| {
                            format!(
                                "{name} {:.1}%",
                                *n as f64 / report.samples.max(1) as f64 * 100.0
                            )
                        })
                        .collect();
                    say!(
                        "profile: {} ({} samples; on the CPU most: {}), flamegraph {}",
                        report.pprof.display(),
                        report.samples,
                        top.join(", "),
                        report.svg.display()
                    );
                    Vec::new()
                }
                Err(e) => vec![format!("CPU profile: {e}")],
            },
        }
    }
}
