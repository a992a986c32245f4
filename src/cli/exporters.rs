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

/// The exporters' flags, flattened into `backtest`'s.
#[derive(clap::Args, Debug, Default)]
pub struct ExporterArgs {
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
    /// Send one OpenTelemetry span per hook to this OTLP/HTTP endpoint
    /// (e.g. http://localhost:4318/v1/traces).
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Write one OpenTelemetry span per hook to this file as OTLP-JSON lines.
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "FILE")]
    pub otlp_file: Option<PathBuf>,
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
            println!("flamegraph: {} ({})", svg.display(), folded.display());
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
        let exporter = Arc::new(PrometheusExporter::new(thresholds.clone(), storage));
        let server = match &args.metrics_addr {
            None => None,
            Some(addr) => {
                let server = exporter.serve(addr).map_err(|source| CliError::Serve {
                    addr: addr.clone(),
                    source,
                })?;
                println!("metrics: http://{}/metrics", server.addr());
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
            println!(
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
                Ok(path) => println!("metrics: {}", path.display()),
                Err(e) => failed.push(format!("Prometheus textfile: {e}")),
            }
        }
        if let Some(url) = &args.metrics_push {
            match exporter.push(url, "backtest-perf") {
                Ok(()) => println!("metrics: pushed to {url} (job backtest-perf)"),
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
pub struct Spans {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    subscription: Option<backtest_perf::Subscription>,
}

#[cfg(feature = "otel")]
impl Spans {
    /// Starts what the flags ask for (nothing when they ask for nothing).
    pub fn start(args: &ExporterArgs, thresholds: &Thresholds) -> Result<Self, CliError> {
        use backtest_perf::export::otel::{
            Batched, OtlpHttpExporter, OtlpJsonFileExporter, listen,
        };
        if args.otlp_endpoint.is_none() && args.otlp_file.is_none() {
            return Ok(Spans {
                provider: None,
                subscription: None,
            });
        }
        let mut builder = opentelemetry_sdk::trace::SdkTracerProvider::builder();
        if let Some(url) = &args.otlp_endpoint {
            builder =
                builder.with_simple_exporter(Batched::new(OtlpHttpExporter::new(url.clone()), 512));
        }
        if let Some(path) = &args.otlp_file {
            let exporter =
                OtlpJsonFileExporter::create(path).map_err(|source| CliError::Input {
                    path: path.clone(),
                    source,
                })?;
            builder = builder.with_simple_exporter(Batched::new(exporter, 512));
        }
        let provider = builder.build();
        let subscription = listen(
            backtest_perf::performance_emitter(),
            &provider,
            thresholds.clone(),
        );
        Ok(Spans {
            provider: Some(provider),
            subscription: Some(subscription),
        })
    }

    /// Waits until every span was built and exported.
    pub fn finish(self) -> Result<(), CliError> {
        if let Some(subscription) = self.subscription {
            subscription.flush();
        }
        if let Some(provider) = self.provider {
            provider
                .force_flush()
                .map_err(|e| CliError::Spans(e.to_string()))?;
            provider
                .shutdown()
                .map_err(|e| CliError::Spans(e.to_string()))?;
        }
        Ok(())
    }
}
