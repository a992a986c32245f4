//! What a measurement was taken on, so that two reports are compared fairly.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{MetricType, PerformanceContract, PerformanceEmitter};

/// The machine, the build, and the cost of measuring itself.
///
/// ```
/// let env = backtest_perf::export::environment::Environment::capture();
/// assert!(env.rustc.starts_with("rustc ") && ["debug", "release"].contains(&env.build_profile.as_str()));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// CPU model, from `/proc/cpuinfo` where there is one.
    pub cpu_model: Option<String>,
    /// Logical cores available.
    pub cores: usize,
    /// Operating system and architecture, e.g. `linux x86_64`.
    pub os: String,
    /// Kernel release, where known.
    pub kernel: Option<String>,
    /// The compiler that built this program.
    pub rustc: String,
    /// `release` or `debug`.
    pub build_profile: String,
    /// What timing and emitting one hook event costs on this machine, ns (median of
    /// rounds over a bus with one sink), so a comparison can tell overhead from change.
    pub tracking_overhead_ns: f64,
}

impl Environment {
    /// Reads the environment now (measuring the overhead takes about a millisecond).
    ///
    /// ```
    /// let env = backtest_perf::export::environment::Environment::capture();
    /// assert!(env.cores >= 1 && env.tracking_overhead_ns > 0.0);
    /// ```
    pub fn capture() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            });
        Environment {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_string()),
            rustc: env!("BACKTEST_PERF_RUSTC").to_string(),
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            tracking_overhead_ns: tracking_overhead_ns(),
        }
    }
}

/// Median over rounds of timing an empty operation and emitting its event to a bus with
/// one counting sink.
fn tracking_overhead_ns() -> f64 {
    struct Count;
    impl crate::Sink for Count {}
    let bus = PerformanceEmitter::new();
    bus.add_sink(std::sync::Arc::new(Count));
    const PER_ROUND: u32 = 1_000;
    let mut rounds: Vec<f64> = (0..9)
        .map(|_| {
            let t0 = Instant::now();
            for i in 0..PER_ROUND {
                let start = Instant::now();
                let duration = start.elapsed().as_secs_f64() * 1000.0;
                let _ = bus.emit(PerformanceContract::new(
                    MetricType::Tick,
                    duration,
                    f64::from(i),
                ));
            }
            t0.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}
