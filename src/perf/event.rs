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
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// One whole tick of a strategy at one frame time, including nested hooks.
    Tick,
    /// The fast replay of one opened signal until it closes.
    Backtest,
    /// The strategy's own signal function.
    GetSignal,
    /// One candle fetch from the exchange.
    GetCandles,
    /// The VWAP of the last closed candles.
    GetAveragePrice,
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

    /// A custom metric type with the given name.
    ///
    /// ```
    /// # use backtest_perf::MetricType;
    /// assert_eq!(MetricType::custom("load-model").as_str(), "load-model");
    /// ```
    pub fn custom(name: &str) -> Self {
        MetricType::parse(name)
    }

    /// A well-mixed hash: constant for the built-in types, the interned hash for custom ones.
    #[inline]
    pub(crate) fn prehash(&self) -> u64 {
        match self {
            MetricType::Tick => 0x9e37_79b9_7f4a_7c15,
            MetricType::Backtest => 0xbf58_476d_1ce4_e5b9,
            MetricType::GetSignal => 0x94d0_49bb_1331_11eb,
            MetricType::GetCandles => 0x2545_f491_4f6c_dd1d,
            MetricType::GetAveragePrice => 0xd6e8_feb8_6659_fd93,
            MetricType::Custom(name) => name.precomputed_hash(),
        }
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
}

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
        }
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
        if !self.timestamp.is_finite() {
            return Err(InvalidEvent::NonFiniteTimestamp(self.timestamp));
        }
        if self.metric_type.as_str().is_empty() {
            return Err(InvalidEvent::EmptyMetricType);
        }
        if let Some(previous) = self.previous_timestamp {
            if !previous.is_finite() {
                return Err(InvalidEvent::NonFinitePreviousTimestamp(previous));
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
    #[error("duration is {0}; it must be >= 0 milliseconds")]
    NegativeDuration(f64),
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
        "previousTimestamp {previous} is later than timestamp {timestamp}; leave it empty for the bus to fill"
    )]
    PreviousAfterTimestamp {
        /// The previous timestamp given.
        previous: f64,
        /// The event's own timestamp.
        timestamp: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

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
