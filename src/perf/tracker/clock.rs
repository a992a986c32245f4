//! Time sources for the tracker: the monotonic clock, or a hand-driven one for tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic clock in nanoseconds from an arbitrary origin.
///
/// ```
/// use backtest_perf::tracker::{Clock, MonotonicClock};
/// let clock = MonotonicClock::default();
/// let (a, b) = (clock.now_ns(), clock.now_ns());
/// assert!(b >= a);
/// ```
pub trait Clock: Send + Sync {
    /// Nanoseconds since the clock's origin.
    fn now_ns(&self) -> u64;
}

/// The process clock of [`crate::span`]: the machine's monotonic clock, read through the
/// CPU's time-stamp counter where it is invariant (a few nanoseconds a read) and the OS
/// clock elsewhere ([`quanta`]). Every producer of events reads this one clock, so the
/// tracker's times and the engine's hooks line up.
///
/// ```
/// use backtest_perf::tracker::{Clock, MonotonicClock};
/// let clock = MonotonicClock::default();
/// let before = clock.now_ns();
/// std::thread::sleep(std::time::Duration::from_millis(2));
/// assert!(clock.now_ns() - before >= 2_000_000);
/// ```
#[derive(Debug, Default)]
pub struct MonotonicClock {
    _private: (),
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        crate::span::now_ns()
    }
}

/// A clock that moves only when told to: exact offsets and durations in tests.
///
/// ```
/// use backtest_perf::tracker::{Clock, ManualClock};
/// let clock = ManualClock::default();
/// clock.advance_ms(1.5);
/// assert_eq!(clock.now_ns(), 1_500_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `ns` nanoseconds.
    ///
    /// ```
    /// use backtest_perf::tracker::{Clock, ManualClock};
    /// let clock = ManualClock::default();
    /// clock.advance_ns(250);
    /// assert_eq!(clock.now_ns(), 250);
    /// ```
    pub fn advance_ns(&self, ns: u64) {
        self.now.fetch_add(ns, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` milliseconds.
    ///
    /// ```
    /// use backtest_perf::tracker::{Clock, ManualClock};
    /// let clock = ManualClock::default();
    /// clock.advance_ms(0.25);
    /// assert_eq!(clock.now_ns(), 250_000);
    /// ```
    pub fn advance_ms(&self, ms: f64) {
        self.advance_ns((ms * 1e6).round() as u64);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
