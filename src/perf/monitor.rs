//! A resource monitor: while a run goes on, a thread of its own samples the process's CPU
//! time (user and system), resident memory, thread count and the depth of the listeners'
//! queues every interval (1 s by default), until it is stopped with the run. The samples
//! are a time series (at most [`MAX_SAMPLES`]: past it every other one is dropped and the
//! spacing doubles, so memory stays bounded however long the run), and each sample can be
//! handed to a callback as it is taken (the command line checks the `cpuAbove`,
//! `rssAbove` and `queueDepthAbove` alert rules there).
//!
//! ```
//! use std::time::Duration;
//! use backtest_perf::monitor::ResourceMonitor;
//! let bus = backtest_perf::PerformanceEmitter::new();
//! let monitor = ResourceMonitor::start(&bus, Duration::from_millis(10), None);
//! let samples = monitor.stop();
//! assert!(!samples.is_empty(), "stopping takes a last sample");
//! # #[cfg(target_os = "linux")]
//! assert!(samples[0].rss_bytes.unwrap() > 0);
//! ```

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::PerformanceEmitter;
use crate::tracker::ResourceSnapshot;

/// The most samples kept.
pub const MAX_SAMPLES: usize = 3_600;

/// One sample of the process's resources.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSample {
    /// Since the monitor started, ms.
    pub elapsed_ms: f64,
    /// CPU time in user mode so far, ms.
    pub cpu_user_ms: Option<f64>,
    /// CPU time in the kernel so far, ms.
    pub cpu_system_ms: Option<f64>,
    /// CPU used since the previous reading at least 100 ms before, percent of one core
    /// (200 is two cores busy); `None` until 100 ms have passed (the kernel counts CPU
    /// time in 10 ms ticks).
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Threads of the process.
    pub threads: Option<u64>,
    /// The deepest listener queue of the bus: events accepted and not yet handled.
    pub queue_depth: usize,
}

/// The process's thread count, from `/proc/self/status` (Linux; `None` elsewhere).
///
/// ```
/// # #[cfg(target_os = "linux")]
/// assert!(backtest_perf::monitor::thread_count().unwrap() >= 1);
/// ```
pub fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

type OnSample = Box<dyn Fn(&ResourceSample) + Send>;

struct Shared {
    samples: Mutex<Vec<ResourceSample>>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// A running monitor; [`stop`](Self::stop) ends it (dropping it does too).
pub struct ResourceMonitor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ResourceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceMonitor")
            .field("samples", &self.shared.samples.lock().len())
            .finish()
    }
}

impl ResourceMonitor {
    /// Starts sampling every `interval` (at least 1 ms) the process and `bus`'s
    /// listeners, calling `on_sample` with each sample on the monitor's thread.
    pub fn start(
        bus: &PerformanceEmitter,
        interval: Duration,
        on_sample: Option<OnSample>,
    ) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let shared = Arc::new(Shared {
            samples: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let bus = bus.clone();
        let thread = std::thread::Builder::new()
            .name("backtest-perf-monitor".into())
            .spawn(move || {
                let started = Instant::now();
                let mut previous: Option<(f64, f64)> = None;
                let mut stride = 1usize;
                let mut taken = 0usize;
                loop {
                    let sample = sample(&bus, started, &mut previous);
                    if let Some(on_sample) = &on_sample {
                        on_sample(&sample);
                    }
                    taken += 1;
                    if taken.is_multiple_of(stride) {
                        let mut samples = worker.samples.lock();
                        samples.push(sample);
                        if samples.len() >= MAX_SAMPLES {
                            // Every other one goes; the series keeps its span.
                            let mut i = 0;
                            samples.retain(|_| {
                                i += 1;
                                i % 2 == 1
                            });
                            stride *= 2;
                        }
                    }
                    let mut stopped = worker.stopped.lock();
                    if !*stopped {
                        worker.wake.wait_for(&mut stopped, interval);
                    }
                    if *stopped {
                        drop(stopped);
                        // A last sample at the stop.
                        let last = self::sample(&bus, started, &mut previous);
                        if let Some(on_sample) = &on_sample {
                            on_sample(&last);
                        }
                        worker.samples.lock().push(last);
                        return;
                    }
                }
            })
            .ok();
        ResourceMonitor { shared, thread }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<ResourceSample> {
        self.shared.samples.lock().clone()
    }

    /// Stops the monitor (it takes a last sample) and returns every sample kept.
    pub fn stop(mut self) -> Vec<ResourceSample> {
        self.halt();
        std::mem::take(&mut *self.shared.samples.lock())
    }

    fn halt(&mut self) {
        *self.shared.stopped.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ResourceMonitor {
    fn drop(&mut self) {
        self.halt();
    }
}

fn sample(
    bus: &PerformanceEmitter,
    started: Instant,
    previous: &mut Option<(f64, f64)>,
) -> ResourceSample {
    let now = ResourceSnapshot::now();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cpu_total = now.cpu_user_ms.zip(now.cpu_system_ms).map(|(u, s)| u + s);
    // The kernel counts CPU time in 10 ms ticks: over less than 100 ms the share would
    // be mostly rounding (a 20 ms window could read 350% on two cores), so none is given,
    // and the previous reading is kept until 100 ms have passed. It never exceeds the
    // cores there are.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_percent = match (cpu_total, *previous) {
        (Some(cpu), Some((cpu_before, at_before))) if elapsed_ms - at_before >= 100.0 => {
            *previous = Some((cpu, elapsed_ms));
            Some(((cpu - cpu_before) / (elapsed_ms - at_before) * 100.0).clamp(0.0, cores * 100.0))
        }
        (Some(cpu), None) => {
            *previous = Some((cpu, elapsed_ms));
            None
        }
        _ => None,
    };
    ResourceSample {
        elapsed_ms,
        cpu_user_ms: now.cpu_user_ms,
        cpu_system_ms: now.cpu_system_ms,
        cpu_percent,
        rss_bytes: now.rss_bytes,
        threads: thread_count(),
        queue_depth: bus.queue_depths().into_iter().max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue depth of a blocked listener is seen by the monitor; every sample is
    /// handed to the callback; stopping returns promptly however long the interval.
    #[test]
    fn samples_see_a_blocked_listeners_queue_and_stop_promptly() {
        let bus = PerformanceEmitter::new();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let sub = bus.listen(move |_: &crate::PerformanceContract| {
            let _ = blocked.recv();
        });
        for i in 0..100 {
            bus.emit(crate::PerformanceContract::new(
                crate::MetricType::Tick,
                1.0,
                f64::from(i),
            ))
            .unwrap();
        }
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        let monitor = ResourceMonitor::start(
            &bus,
            Duration::from_secs(3600),
            Some(Box::new(move |_| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        );
        let samples = monitor.stop();
        // The first sample, and the last one taken at the stop.
        assert_eq!(samples.len(), 2);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        // 100 accepted, at most one being handled: 99 or 100 wait.
        assert!(samples.iter().all(|s| s.queue_depth >= 99), "{samples:?}");
        drop(release);
        sub.flush();
    }
}
