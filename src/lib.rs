//! # backtest-perf
//!
//! Where does the time go in a backtest? `backtest-perf` times the hooks of a backtesting
//! engine (`tick`, `getSignal`, `getCandles`, `getAveragePrice`, `backtest`) and any code
//! of yours, carries each measurement as a [`PerformanceContract`] on a bus, and turns
//! them into statistics and markdown reports per `symbol:strategy`.
//!
//! ```
//! use backtest_perf::{listen_performance, performance_emitter, MetricType, Performance, PerformanceContract};
//!
//! // 1. Listen (callbacks run off the emitting thread, one at a time, in order).
//! let sub = listen_performance(|e: &PerformanceContract| {
//!     if e.duration > 100.0 {
//!         eprintln!("slow {}: {:.1} ms", e.metric_type, e.duration);
//!     }
//! });
//!
//! // 2. Emit: the engine does this for its hooks; user code may add its own types.
//! let event = PerformanceContract::new(MetricType::custom("fetch-news"), 42.0, 1_732_147_200_000.0)
//!     .with_symbol("LIBUSD")
//!     .with_strategy("lib-doc");
//! performance_emitter().emit(event).unwrap();
//! sub.flush();
//!
//! // 3. Read statistics or the report; `Performance::dump` writes it to ./dump/performance.
//! let stats = Performance::get_data("LIBUSD", "lib-doc");
//! assert_eq!(stats.metric_stats[&MetricType::custom("fetch-news")].p95, 42.0);
//! assert!(Performance::get_report("LIBUSD", "lib-doc").starts_with("# Performance Report: lib-doc"));
//! ```
//!
//! The pieces, each usable alone: [`emitter`] (the bus), [`listener`] (queued callbacks),
//! [`storage`], [`stats`], [`report`], [`dump`] and the [`facade`]. The [`engine`] is a
//! backtesting engine that times its five hooks onto the bus, built on that public API
//! only; [`strategies`] holds the bundled strategies.
#![warn(missing_docs)]
// Unsafe code is denied everywhere but in the counting allocator (`tracker::memory`) and
// the profile's SIGPROF handler (`export::profile::samples`), which cannot be written
// without it.
#![deny(unsafe_code)]

// Lets the bundled strategies name the crate as users do: `use backtest_perf::...`.
extern crate self as backtest_perf;

#[cfg(feature = "cli")]
pub mod cli;

/// Every Rust block of README.md, compiled and run as a doc test (`cargo test`).
#[cfg(all(doctest, feature = "cli"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub mod engine;
mod perf;
#[path = "../strategies/mod.rs"]
pub mod strategies;

#[cfg(feature = "tracing-layer")]
pub use perf::tracing_layer;
pub use perf::{
    alerts, analysis, compare, dump, emitter, event, export, facade, key, listener, monitor, name,
    report, span, stats, storage, thresholds, tracker,
};

pub use perf::dump::DumpError;
pub use perf::emitter::{PerformanceEmitter, Rejected, Sink, SubscriberId};
pub use perf::event::{InvalidEvent, MetricType, PerformanceContract};
pub use perf::facade::{
    Performance, PerformanceService, configure_performance, listen_performance,
    listen_performance_async, listen_performance_filtered, listen_performance_once,
    performance_emitter, performance_service, time, time_async,
};
pub use perf::key::{GLOBAL, KeyedBatch, StorageKey};
pub use perf::listener::{ListenerGuard, ListenerOutcome, QueueBound, Subscription, WhenFull};
pub use perf::name::Name;
pub use perf::report::Column;
pub use perf::stats::{MetricStats, PerformanceStatistics, StatsPreset};
pub use perf::storage::{StorageConfig, StorageService};
