//! [`StorageKey`]: which `symbol:strategy` bucket an event belongs to.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use super::event::PerformanceContract;
use super::name::Name;

/// The name a missing (absent, null or empty) symbol or strategy is stored and reported as.
///
/// ```
/// assert_eq!(backtest_perf::StorageKey::new("", "").to_string(), format!("{0}:{0}", backtest_perf::GLOBAL));
/// ```
pub const GLOBAL: &str = "global";

/// A `symbol:strategy` pair; a missing part is [`GLOBAL`]. Prints as `symbol:strategy`.
///
/// ```
/// use backtest_perf::StorageKey;
///
/// assert_eq!(StorageKey::new("BTCUSDT", "sma").to_string(), "BTCUSDT:sma");
/// assert_eq!(StorageKey::new("", "sma").to_string(), "global:sma");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct StorageKey {
    /// The symbol, or `global`.
    pub symbol: Name,
    /// The strategy name, or `global`.
    pub strategy: Name,
}

impl StorageKey {
    /// The key for a symbol and strategy given as text; empty text means [`GLOBAL`].
    ///
    /// ```
    /// # use backtest_perf::StorageKey;
    /// assert_eq!(StorageKey::new("ETHUSDT", "").strategy, "global");
    /// ```
    pub fn new(symbol: &str, strategy: &str) -> Self {
        StorageKey {
            symbol: normalize(Some(Name::new(symbol))),
            strategy: normalize(Some(Name::new(strategy))),
        }
    }

    /// The key an event is stored under.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, StorageKey};
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("BTCUSDT");
    /// assert_eq!(StorageKey::of(&e).to_string(), "BTCUSDT:global");
    /// ```
    pub fn of(event: &PerformanceContract) -> Self {
        StorageKey {
            symbol: normalize(event.symbol),
            strategy: normalize(event.strategy_name),
        }
    }
}

fn normalize(name: Option<Name>) -> Name {
    static GLOBAL_NAME: OnceLock<Name> = OnceLock::new();
    match name {
        Some(name) if !name.is_empty() => name,
        _ => *GLOBAL_NAME.get_or_init(|| Name::new(GLOBAL)),
    }
}

impl StorageKey {
    /// A hash of the key made from its names' precomputed hashes.
    #[inline]
    pub(crate) fn prehash(&self) -> u64 {
        self.symbol.precomputed_hash() ^ self.strategy.precomputed_hash().rotate_left(29)
    }
}

impl Hash for StorageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.prehash());
    }
}

/// A hasher for keys that hash themselves with one `write_u64` of an already good hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    #[inline]
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by our keys; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`PrehashedHasher`]s.
pub(crate) type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.symbol, self.strategy)
    }
}

/// The key of the first event and how many events from the start share it: batches are
/// handled one run of the same key at a time (one lock per run).
pub(crate) fn leading_run(
    events: &[super::event::PerformanceContract],
) -> Option<(StorageKey, usize)> {
    let first = events.first()?;
    let key = StorageKey::of(first);
    // The same names as the first event's are the same key: compared as they are, with
    // no normalizing (which reads each name's length).
    let raw = (first.symbol, first.strategy_name);
    let run = events
        .iter()
        .position(|e| (e.symbol, e.strategy_name) != raw && StorageKey::of(e) != key)
        .unwrap_or(events.len());
    Some((key, run))
}
