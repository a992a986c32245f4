//! The event on the bus: [`PerformanceContract`], its [`MetricType`], and validation.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::name::Name;

/// What an event timed: one of the engine's five hooks, or a custom type from user code.
///
/// Serialized as its camelCase name (`tick`, `getSignal`, ...); any other string reads as
/// [`MetricType::Custom`]. Ordering is by name.
///
/// ```
/// use backtest_perf::MetricType;
///
/// assert_eq!(MetricType::parse("getCandles"), MetricType::GetCandles);
/// assert_eq!(MetricType::parse("db-query").as_str(), "db-query");
/// assert_eq!(MetricType::GetSignal.to_string(), "getSignal");
/// ```
// The built-in variants are in the order of `BUILT_IN`, so that `built_in_index` is the
// variant's own number: a comparison instead of a jump through a table on every event.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// One whole tick of a strategy at one frame time, including nested hooks.
    Tick,
    /// The strategy's own signal function.
    GetSignal,
    /// One candle fetch from the exchange.
    GetCandles,
    /// The VWAP of the last closed candles.
    GetAveragePrice,
    /// The fast replay of one opened signal until it closes.
    Backtest,
    /// Any other operation, named by user code.
    Custom(Name),
}

impl MetricType {
    /// The five metric types the engine emits, in hook order.
    ///
    /// ```
    /// let names: Vec<&str> = backtest_perf::MetricType::BUILT_IN.iter().map(|t| t.as_str()).collect();
    /// assert_eq!(names, ["tick", "getSignal", "getCandles", "getAveragePrice", "backtest"]);
    /// ```
    pub const BUILT_IN: [MetricType; 5] = [
        MetricType::Tick,
        MetricType::GetSignal,
        MetricType::GetCandles,
        MetricType::GetAveragePrice,
        MetricType::Backtest,
    ];

    /// The place of a built-in type in [`BUILT_IN`](Self::BUILT_IN); `None` for a custom
    /// one. Per-type state of the engine's events is an array indexed by it.
    #[inline]
    pub(crate) fn built_in_index(self) -> Option<usize> {
        match self {
            MetricType::Tick => Some(0),
            MetricType::GetSignal => Some(1),
            MetricType::GetCandles => Some(2),
            MetricType::GetAveragePrice => Some(3),
            MetricType::Backtest => Some(4),
            MetricType::Custom(_) => None,
        }
    }

    /// Reads a metric type from its name; unknown names become [`MetricType::Custom`].
    ///
    /// ```
    /// # use backtest_perf::MetricType;
    /// assert_eq!(MetricType::parse("tick"), MetricType::Tick);
    /// assert!(matches!(MetricType::parse("tick2"), MetricType::Custom(_)));
    /// ```
    pub fn parse(name: &str) -> Self {
        match name {
            "tick" => MetricType::Tick,
            "backtest" => MetricType::Backtest,
            "getSignal" => MetricType::GetSignal,
            "getCandles" => MetricType::GetCandles,
            "getAveragePrice" => MetricType::GetAveragePrice,
            other => MetricType::Custom(Name::new(other)),
        }
    }

    /// [`parse`](Self::parse) for names a person typed (a `--slow` threshold, an alert
    /// rule): an empty name, or a built-in one in the wrong case, is an error that says
    /// which was meant, where `parse` would make a custom type that never matches.
    ///
    /// ```
    /// # use backtest_perf::MetricType;
    /// assert_eq!(MetricType::parse_strict("getSignal").unwrap(), MetricType::GetSignal);
    /// assert_eq!(MetricType::parse_strict("load-model").unwrap().as_str(), "load-model");
    /// assert_eq!(
    ///     MetricType::parse_strict("getsignal").unwrap_err(),
    ///     "metric type `getsignal` is not one the hooks emit; did you mean `getSignal`? (names are case-sensitive)"
    /// );
    /// assert!(MetricType::parse_strict(" ").unwrap_err().contains("empty"));
    /// ```
    pub fn parse_strict(name: &str) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("the metric type is empty; name one (tick, getSignal, getCandles, getAveragePrice, backtest or a custom name)".into());
        }
        let metric = MetricType::parse(name);
        if let MetricType::Custom(_) = metric
            && let Some(meant) = MetricType::BUILT_IN
                .iter()
                .find(|m| m.as_str().eq_ignore_ascii_case(name.trim()))
        {
            return Err(format!(
                "metric type `{name}` is not one the hooks emit; did you mean `{}`? (names are case-sensitive)",
                meant.as_str()
            ));
        }
        Ok(metric)
    }

    /// A custom metric type with the given name.
    ///
    /// ```
    /// # use backtest_perf::MetricType;
    /// assert_eq!(MetricType::custom("load-model").as_str(), "load-model");
    /// ```
    pub fn custom(name: &str) -> Self {
        MetricType::parse(name)
    }

    /// The name as it appears in JSON and reports.
    ///
    /// ```
    /// # use backtest_perf::MetricType;
    /// assert_eq!(MetricType::GetAveragePrice.as_str(), "getAveragePrice");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricType::Tick => "tick",
            MetricType::Backtest => "backtest",
            MetricType::GetSignal => "getSignal",
            MetricType::GetCandles => "getCandles",
            MetricType::GetAveragePrice => "getAveragePrice",
            MetricType::Custom(name) => name.as_str(),
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricType({:?})", self.as_str())
    }
}

impl PartialOrd for MetricType {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MetricType {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl From<&str> for MetricType {
    fn from(name: &str) -> Self {
        MetricType::parse(name)
    }
}

impl Serialize for MetricType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MetricType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Name::deserialize(deserializer).map(|name| MetricType::parse(&name))
    }
}

/// One timed operation, as carried by the bus.
///
/// Field names in JSON are camelCase, as written by backtest-kit; unknown JSON fields are
/// ignored. The struct is `Copy`: names are interned, so handing an event to a queue is a
/// plain copy.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract};
///
/// let event = PerformanceContract::new(MetricType::Tick, 1.25, 1_732_147_200_000.0)
///     .with_symbol("BTCUSDT")
///     .with_strategy("my-strategy");
/// assert_eq!(event.symbol.unwrap(), "BTCUSDT");
/// assert!(event.validate().is_ok());
///
/// let json = serde_json::to_string(&event).unwrap();
/// assert_eq!(
///     json,
///     r#"{"metricType":"tick","duration":1.25,"timestamp":1732147200000.0,"previousTimestamp":null,"symbol":"BTCUSDT","strategyName":"my-strategy","when":null}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceContract {
    /// What was timed.
    pub metric_type: MetricType,
    /// Milliseconds the operation took; finite and >= 0.
    pub duration: f64,
    /// Wall-clock Unix epoch milliseconds when the operation completed.
    pub timestamp: f64,
    /// `timestamp` of the previous event of the same metric type for the same
    /// symbol:strategy; `None` for the first. The emitter fills it when left empty.
    #[serde(default)]
    pub previous_timestamp: Option<f64>,
    /// The traded symbol, e.g. `BTCUSDT`.
    #[serde(default)]
    pub symbol: Option<Name>,
    /// The strategy's name.
    #[serde(default)]
    pub strategy_name: Option<Name>,
    /// Simulated (backtest) time of the operation.
    #[serde(default)]
    pub when: Option<DateTime<Utc>>,
    /// Milliseconds of `duration` not spent in operations nested inside this one; `None`
    /// means all of it ([`self_time`](Self::self_time)). Never above `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_duration: Option<f64>,
    /// This operation's id, unique within the process run (below 2^53, so JSON keeps it
    /// exact). Producers take it from [`crate::span::next_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The id of the operation this one ran inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<u64>,
    /// `Some(false)` when the operation failed; `None` means it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// The largest id that JSON numbers (IEEE doubles) carry exactly: 2^53.
///
/// ```
/// use backtest_perf::event::MAX_ID;
/// use backtest_perf::{InvalidEvent, MetricType, PerformanceContract};
/// let event = |id| PerformanceContract { id: Some(id), ..PerformanceContract::new(MetricType::Tick, 1.0, 5.0) };
/// assert_eq!(event(MAX_ID).validate(), Ok(()));
/// assert_eq!(event(MAX_ID + 1).validate(), Err(InvalidEvent::IdTooLarge(MAX_ID + 1)));
/// ```
pub const MAX_ID: u64 = 1 << 53;

/// The longest duration an event may carry: 10^12 ms, about 31.7 years. Longer ones are
/// rejected, so sums, variances and wait times never overflow to infinity, and every
/// valid duration fits the latency histogram exactly as recorded.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, event::MAX_DURATION_MS};
/// assert!(PerformanceContract::new(MetricType::Tick, MAX_DURATION_MS, 0.0).validate().is_ok());
/// assert!(PerformanceContract::new(MetricType::Tick, 1e200, 0.0).validate().is_err());
/// ```
pub const MAX_DURATION_MS: f64 = 1e12;

/// The largest timestamp magnitude an event may carry: 10^15 ms from the epoch (about the
/// year 33,658, either way).
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, event::MAX_TIMESTAMP_MS};
/// assert!(PerformanceContract::new(MetricType::Tick, 1.0, -MAX_TIMESTAMP_MS).validate().is_ok());
/// assert!(PerformanceContract::new(MetricType::Tick, 1.0, 1.7e308).validate().is_err());
/// ```
pub const MAX_TIMESTAMP_MS: f64 = 1e15;

impl PerformanceContract {
    /// An event with no symbol, strategy, simulated time or previous timestamp.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::GetSignal, 0.5, 10.0);
    /// assert_eq!(e.previous_timestamp, None);
    /// ```
    pub fn new(metric_type: MetricType, duration: f64, timestamp: f64) -> Self {
        PerformanceContract {
            metric_type,
            duration,
            timestamp,
            previous_timestamp: None,
            symbol: None,
            strategy_name: None,
            when: None,
            self_duration: None,
            id: None,
            parent_id: None,
            ok: None,
        }
    }

    /// The self time: [`self_duration`](Self::self_duration), or the whole `duration` when
    /// nothing nested inside was measured.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 3.0, 10.0);
    /// assert_eq!(e.self_time(), 3.0);
    /// assert_eq!(e.with_self_duration(1.0).self_time(), 1.0);
    /// ```
    #[inline]
    pub fn self_time(&self) -> f64 {
        self.self_duration.unwrap_or(self.duration)
    }

    /// Whether the operation succeeded (`ok` absent or `true`).
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 3.0, 10.0);
    /// assert!(e.succeeded());
    /// assert!(!e.with_ok(false).succeeded());
    /// ```
    #[inline]
    pub fn succeeded(&self) -> bool {
        self.ok != Some(false)
    }

    /// Sets the self time, ms.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 3.0, 10.0).with_self_duration(0.5);
    /// assert_eq!(e.self_duration, Some(0.5));
    /// ```
    pub fn with_self_duration(mut self, self_duration: f64) -> Self {
        self.self_duration = Some(self_duration);
        self
    }

    /// Sets this operation's id.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// assert_eq!(PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_id(7).id, Some(7));
    /// ```
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the id of the operation this one ran inside.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// assert_eq!(PerformanceContract::new(MetricType::GetSignal, 1.0, 1.0).with_parent(7).parent_id, Some(7));
    /// ```
    pub fn with_parent(mut self, parent_id: u64) -> Self {
        self.parent_id = Some(parent_id);
        self
    }

    /// Sets the outcome: `false` for a failed operation.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// assert_eq!(PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_ok(false).ok, Some(false));
    /// ```
    pub fn with_ok(mut self, ok: bool) -> Self {
        self.ok = Some(ok);
        self
    }

    /// Sets the symbol.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("ETHUSDT");
    /// assert_eq!(e.symbol.unwrap().as_str(), "ETHUSDT");
    /// ```
    pub fn with_symbol(mut self, symbol: impl Into<Name>) -> Self {
        self.symbol = Some(symbol.into());
        self
    }

    /// Sets the strategy name.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_strategy("sma");
    /// assert_eq!(e.strategy_name.unwrap().as_str(), "sma");
    /// ```
    pub fn with_strategy(mut self, strategy: impl Into<Name>) -> Self {
        self.strategy_name = Some(strategy.into());
        self
    }

    /// Sets the previous timestamp of the same series.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 5.0).with_previous_timestamp(3.0);
    /// assert_eq!(e.previous_timestamp, Some(3.0));
    /// ```
    pub fn with_previous_timestamp(mut self, previous: f64) -> Self {
        self.previous_timestamp = Some(previous);
        self
    }

    /// Sets the simulated time.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract};
    /// use chrono::{TimeZone, Utc};
    /// let when = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 5.0).with_when(when);
    /// assert_eq!(e.when, Some(when));
    /// ```
    pub fn with_when(mut self, when: DateTime<Utc>) -> Self {
        self.when = Some(when);
        self
    }

    /// Whether [`validate`](Self::validate) accepts the event: the same checks as a few
    /// comparisons that all fail on NaN, with no early exit. The bus checks each event
    /// with it, and asks `validate` why only for one that fails.
    #[inline]
    pub(crate) fn is_valid(&self) -> bool {
        let (d, t) = (self.duration, self.timestamp);
        let mut ok = (0.0..=MAX_DURATION_MS).contains(&d) & (t.abs() <= MAX_TIMESTAMP_MS);
        ok &= !self.metric_type.as_str().is_empty();
        if let Some(s) = self.self_duration {
            ok &= (s >= 0.0) & (s <= d);
        }
        ok &= self.id.is_none_or(|id| id <= MAX_ID) & self.parent_id.is_none_or(|id| id <= MAX_ID);
        if let Some(p) = self.previous_timestamp {
            ok &= (p.abs() <= MAX_TIMESTAMP_MS) & (p <= t);
        }
        ok
    }

    /// Checks the event against the contract; the bus rejects (and counts) what fails.
    ///
    /// ```
    /// # use backtest_perf::{InvalidEvent, MetricType, PerformanceContract};
    /// let bad = PerformanceContract::new(MetricType::Tick, -1.0, 5.0);
    /// assert_eq!(bad.validate(), Err(InvalidEvent::NegativeDuration(-1.0)));
    /// ```
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if !self.duration.is_finite() {
            return Err(InvalidEvent::NonFiniteDuration(self.duration));
        }
        if self.duration < 0.0 {
            return Err(InvalidEvent::NegativeDuration(self.duration));
        }
        if self.duration > MAX_DURATION_MS {
            return Err(InvalidEvent::DurationTooLarge(self.duration));
        }
        if !self.timestamp.is_finite() {
            return Err(InvalidEvent::NonFiniteTimestamp(self.timestamp));
        }
        if self.timestamp.abs() > MAX_TIMESTAMP_MS {
            return Err(InvalidEvent::TimestampOutOfRange(self.timestamp));
        }
        if self.metric_type.as_str().is_empty() {
            return Err(InvalidEvent::EmptyMetricType);
        }
        if let Some(self_duration) = self.self_duration
            && !(self_duration >= 0.0 && self_duration <= self.duration)
        {
            return Err(InvalidEvent::SelfDurationOutOfRange {
                self_duration,
                duration: self.duration,
            });
        }
        for id in [self.id, self.parent_id].into_iter().flatten() {
            if id > MAX_ID {
                return Err(InvalidEvent::IdTooLarge(id));
            }
        }
        if let Some(previous) = self.previous_timestamp {
            if !previous.is_finite() {
                return Err(InvalidEvent::NonFinitePreviousTimestamp(previous));
            }
            if previous.abs() > MAX_TIMESTAMP_MS {
                return Err(InvalidEvent::TimestampOutOfRange(previous));
            }
            if previous > self.timestamp {
                return Err(InvalidEvent::PreviousAfterTimestamp {
                    previous,
                    timestamp: self.timestamp,
                });
            }
        }
        Ok(())
    }
}

/// A number in a message: as written when short, in scientific notation when Rust would
/// print hundreds of digits (`1e308`).
struct Short(f64);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() && self.0.abs() >= 1e16 {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Why an event was rejected; each message names the field and what is expected.
///
/// ```
/// # use backtest_perf::InvalidEvent;
/// assert_eq!(
///     InvalidEvent::EmptyMetricType.to_string(),
///     "metricType is empty; name the operation (for example `tick` or a custom name)"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum InvalidEvent {
    /// `duration` was NaN or infinite. Fix: measure with a monotonic clock and pass milliseconds.
    #[error("duration is {0}; it must be a finite number of milliseconds")]
    NonFiniteDuration(f64),
    /// `duration` was below zero. Fix: subtract the start from the end, not the reverse.
    #[error("duration is {}; it must be >= 0 milliseconds", Short(*.0))]
    NegativeDuration(f64),
    /// `duration` was above [`MAX_DURATION_MS`]. Fix: pass milliseconds, not a larger unit's
    /// count or a raw timestamp.
    #[error("duration is {}; it must be at most 1e12 milliseconds (about 31.7 years)", Short(*.0))]
    DurationTooLarge(f64),
    /// A timestamp's magnitude was above [`MAX_TIMESTAMP_MS`]. Fix: pass Unix epoch
    /// milliseconds, not microseconds or nanoseconds.
    #[error("timestamp {} is beyond 1e15 ms from the epoch; pass Unix epoch milliseconds", Short(*.0))]
    TimestampOutOfRange(f64),
    /// `timestamp` was NaN or infinite. Fix: pass Unix epoch milliseconds.
    #[error("timestamp is {0}; it must be finite Unix epoch milliseconds")]
    NonFiniteTimestamp(f64),
    /// `metricType` was the empty string. Fix: name the operation.
    #[error("metricType is empty; name the operation (for example `tick` or a custom name)")]
    EmptyMetricType,
    /// `previousTimestamp` was NaN or infinite. Fix: leave it empty and let the bus fill it.
    #[error("previousTimestamp is {0}; it must be finite, or left empty for the bus to fill")]
    NonFinitePreviousTimestamp(f64),
    /// `previousTimestamp` was later than `timestamp`. Fix: leave it empty and let the bus fill it.
    #[error(
        "previousTimestamp {} is later than timestamp {}; leave it empty for the bus to fill", Short(*previous), Short(*timestamp)
    )]
    PreviousAfterTimestamp {
        /// The previous timestamp given.
        previous: f64,
        /// The event's own timestamp.
        timestamp: f64,
    },
    /// `selfDuration` was negative, NaN, or above `duration`. Fix: subtract the nested
    /// operations' durations from the operation's own, or leave it empty.
    #[error(
        "selfDuration {} is outside 0..=duration ({}); subtract the nested operations' time from the duration, or leave it empty", Short(*self_duration), Short(*duration)
    )]
    SelfDurationOutOfRange {
        /// The self duration given.
        self_duration: f64,
        /// The event's duration.
        duration: f64,
    },
    /// `id` or `parentId` was above 2^53, which JSON cannot carry exactly. Fix: take ids
    /// from `span::next_id`.
    #[error(
        "id {0} is above 2^53, which JSON numbers cannot carry exactly; take ids from span::next_id"
    )]
    IdTooLarge(u64),
}

/// Asks the CPU for the cache lines of the event slot at `slot`, with intent to write,
/// before an event is copied there. A store into a slot far out in memory (a window
/// slot last written a window ago, a queue slot another thread last read) held up the
/// next locked instruction, a lock's release, until it reached the cache: about 20 ns
/// an event. A hint only: any address will do, nothing is read.
#[inline(always)]
pub(crate) fn prefetch_slot(slot: *const PerformanceContract) {
    prefetch_slots::<1>(slot);
}

/// Asks the CPU for the cache lines of the `N` event slots from `first`, with intent to
/// write (see [`prefetch_slot`]). A hint only: any address will do.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch_slots<const N: usize>(first: *const PerformanceContract) {
    const { assert!(N > 0) };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        let bytes = first.cast::<i8>();
        let last = N * std::mem::size_of::<PerformanceContract>() - 1;
        // SAFETY: a prefetch only hints the cache: it reads nothing the program sees,
        // never faults, and takes any address (even one past an allocation), so the
        // wrapping pointers need not point into one.
        unsafe {
            for offset in (0..last).step_by(64) {
                _mm_prefetch::<_MM_HINT_ET0>(bytes.wrapping_add(offset));
            }
            // The slots need not start on a line: the last line they reach.
            _mm_prefetch::<_MM_HINT_ET0>(bytes.wrapping_add(last));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = first;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_check_accepts_exactly_what_validate_accepts() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            MAX_DURATION_MS,
            MAX_DURATION_MS * (1.0 + f64::EPSILON),
            MAX_TIMESTAMP_MS,
            -MAX_TIMESTAMP_MS,
            MAX_TIMESTAMP_MS * (1.0 + f64::EPSILON),
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ];
        let ids = [None, Some(0), Some(MAX_ID), Some(MAX_ID + 1)];
        let mut checked = 0;
        for (i, &d) in specials.iter().enumerate() {
            for &t in &specials {
                let base = PerformanceContract::new(MetricType::Tick, d, t);
                let rotate = |k: usize| specials[(i + k) % specials.len()];
                let variants = [
                    base,
                    base.with_self_duration(rotate(1)),
                    base.with_self_duration(d),
                    PerformanceContract {
                        previous_timestamp: Some(rotate(2)),
                        ..base
                    },
                    PerformanceContract {
                        previous_timestamp: Some(t),
                        ..base
                    },
                    PerformanceContract {
                        id: ids[i % 4],
                        parent_id: ids[(i + 1) % 4],
                        ..base
                    },
                    PerformanceContract {
                        metric_type: MetricType::Custom(crate::Name::new("")),
                        ..base
                    },
                ];
                for e in variants {
                    assert_eq!(e.is_valid(), e.validate().is_ok(), "{e:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 13 * 13 * 7);
    }

    fn event() -> PerformanceContract {
        PerformanceContract::new(MetricType::Tick, 1.0, 100.0)
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        let cases = [
            (
                PerformanceContract {
                    duration: f64::NAN,
                    ..event()
                }
                .validate(),
                "duration is NaN; it must be a finite number of milliseconds",
            ),
            (
                PerformanceContract {
                    duration: f64::INFINITY,
                    ..event()
                }
                .validate(),
                "duration is inf; it must be a finite number of milliseconds",
            ),
            (
                PerformanceContract {
                    duration: -0.5,
                    ..event()
                }
                .validate(),
                "duration is -0.5; it must be >= 0 milliseconds",
            ),
            (
                PerformanceContract {
                    timestamp: f64::NEG_INFINITY,
                    ..event()
                }
                .validate(),
                "timestamp is -inf; it must be finite Unix epoch milliseconds",
            ),
            (
                PerformanceContract {
                    metric_type: MetricType::custom(""),
                    ..event()
                }
                .validate(),
                "metricType is empty; name the operation (for example `tick` or a custom name)",
            ),
            (
                event().with_previous_timestamp(101.0).validate(),
                "previousTimestamp 101 is later than timestamp 100; leave it empty for the bus to fill",
            ),
            (
                event().with_previous_timestamp(f64::NAN).validate(),
                "previousTimestamp is NaN; it must be finite, or left empty for the bus to fill",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn zero_duration_and_equal_previous_timestamp_are_valid() {
        let e = PerformanceContract {
            duration: 0.0,
            ..event()
        }
        .with_previous_timestamp(100.0);
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn reads_backtest_kit_events_and_ignores_unknown_fields() {
        let line = r#"{"timestamp":1732147200123.4567,"previousTimestamp":1732147200000,"metricType":"getCandles","duration":3.5,"strategyName":"s","exchangeName":"binance","frameName":"1d","symbol":"BTCUSDT","backtest":true}"#;
        let e: PerformanceContract = serde_json::from_str(line).unwrap();
        assert_eq!(e.metric_type, MetricType::GetCandles);
        assert_eq!(e.timestamp, 1732147200123.4567);
        assert_eq!(e.previous_timestamp, Some(1732147200000.0));
        assert_eq!(e.symbol.unwrap(), "BTCUSDT");
        assert_eq!(e.strategy_name.unwrap(), "s");
        assert_eq!(e.when, None);
    }

    #[test]
    fn json_round_trips_timestamps_exactly() {
        for ts in [
            1732147200123.4567,
            0.1 + 0.2,
            1e-300,
            1732147200123.4568,
            f64::MAX,
        ] {
            let e = PerformanceContract::new(MetricType::Tick, 0.3, ts);
            let back: PerformanceContract =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back.timestamp.to_bits(), ts.to_bits(), "{ts}");
        }
    }

    #[test]
    fn metric_types_order_by_name_and_read_custom_names() {
        let mut types = [
            MetricType::Tick,
            MetricType::custom("alpha"),
            MetricType::GetCandles,
        ];
        types.sort();
        let names: Vec<_> = types.iter().map(MetricType::as_str).collect();
        assert_eq!(names, ["alpha", "getCandles", "tick"]);
        let parsed: MetricType = serde_json::from_str("\"getAveragePrice\"").unwrap();
        assert_eq!(parsed, MetricType::GetAveragePrice);
    }
}
