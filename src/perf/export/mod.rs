//! Exports to the tools people already run: Chrome traces, JSON and HTML reports, and
//! with features Prometheus and OpenTelemetry.
//!
//! ```
//! use backtest_perf::export::chrome_trace::chrome_trace;
//! use backtest_perf::tracker::{RunInfo, Tracker, TrackerOptions};
//! let tracker = Tracker::new(RunInfo::named("export"), TrackerOptions::default());
//! tracker.measure("step", || ());
//! assert!(chrome_trace(&tracker.finish().unwrap())["traceEvents"].is_array());
//! ```

pub mod chrome_trace;
pub mod environment;
#[cfg(feature = "flamegraph")]
pub mod flamegraph;
pub mod html;
#[cfg(feature = "webhook")]
pub mod http;
pub mod json;
pub mod labels;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "profile")]
pub mod profile;
#[cfg(feature = "prometheus")]
pub mod prometheus;
