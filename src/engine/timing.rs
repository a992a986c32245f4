//! The engine's hook timer: times the five hooks and hands their events to the bus.
//!
//! Events are chained (`previousTimestamp`) per metric type within a run and delivered
//! with [`PerformanceEmitter::emit_batch`] every [`BATCH`] events and when the run ends,
//! so a hook costs two clock reads and a copy; adjacent hook boundaries share one read.
//! With tracking off a hook costs one relaxed atomic load.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::candle::{Millis, to_utc};
use crate::{MetricType, Name, PerformanceContract, PerformanceEmitter};

/// Events buffered before they go to the bus.
pub const BATCH: usize = 1024;

/// The hooks, in the order of [`MetricType::BUILT_IN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A whole tick.
    Tick = 0,
    /// The strategy's signal function.
    GetSignal = 1,
    /// A candle fetch.
    GetCandles = 2,
    /// The VWAP.
    GetAveragePrice = 3,
    /// The replay of an opened signal.
    Backtest = 4,
}

impl Hook {
    fn metric_type(self) -> MetricType {
        MetricType::BUILT_IN[self as usize]
    }
}

/// A started hook: `None` when tracking was off at its start.
#[derive(Clone, Copy, Debug)]
#[must_use = "finish the hook to record it"]
pub struct Started(Option<Instant>);

/// Times the hooks of one run of one symbol:strategy.
pub struct HookTimer {
    bus: PerformanceEmitter,
    symbol: Name,
    strategy: Name,
    base: Instant,
    base_epoch_ms: f64,
    previous: [Option<f64>; 5],
    buffer: Vec<PerformanceContract>,
    /// The last simulated time converted, and its conversion: every hook of a frame
    /// shares one `when`.
    when: (Millis, DateTime<Utc>),
}

impl HookTimer {
    /// A timer emitting onto `bus` for `symbol`:`strategy`.
    pub fn new(bus: PerformanceEmitter, symbol: Name, strategy: Name) -> Self {
        let base_epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        HookTimer {
            bus,
            symbol,
            strategy,
            base: Instant::now(),
            base_epoch_ms,
            previous: [None; 5],
            buffer: Vec::with_capacity(BATCH),
            when: (0, to_utc(0)),
        }
    }

    /// Starts timing a hook.
    #[inline]
    pub fn start(&self) -> Started {
        Started(self.bus.is_enabled().then(Instant::now))
    }

    /// Finishes a hook started with [`start`](Self::start); `when` is the simulated time.
    /// Returns the moment it finished, to start or finish an adjacent hook with (one clock
    /// read serves both).
    #[inline]
    pub fn finish(&mut self, hook: Hook, started: Started, when: Millis) -> Started {
        let Some(start) = started.0 else {
            return Started(None);
        };
        let end = Instant::now();
        self.record(hook, start, end, when);
        Started(Some(end))
    }

    /// Finishes a hook at a moment already read by [`finish`](Self::finish).
    #[inline]
    pub fn finish_at(&mut self, hook: Hook, started: Started, end: Started, when: Millis) {
        if let (Some(start), Some(end)) = (started.0, end.0) {
            self.record(hook, start, end, when);
        }
    }

    #[inline]
    fn record(&mut self, hook: Hook, start: Instant, end: Instant, when: Millis) {
        if self.when.0 != when {
            self.when = (when, to_utc(when));
        }
        let timestamp = self.base_epoch_ms + end.duration_since(self.base).as_secs_f64() * 1000.0;
        let slot = &mut self.previous[hook as usize];
        let previous = slot.replace(timestamp);
        self.buffer.push(PerformanceContract {
            metric_type: hook.metric_type(),
            duration: end.duration_since(start).as_secs_f64() * 1000.0,
            timestamp,
            previous_timestamp: previous,
            symbol: Some(self.symbol),
            strategy_name: Some(self.strategy),
            when: Some(self.when.1),
        });
        if self.buffer.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands buffered events to the bus now.
    pub fn flush(&mut self) {
        self.bus.emit_batch(&mut self.buffer);
    }
}

impl Drop for HookTimer {
    fn drop(&mut self) {
        self.flush();
    }
}
