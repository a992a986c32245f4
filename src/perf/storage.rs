//! Storage: the newest events of each `symbol:strategy`, memoized per key.
//!
//! [`StorageService`] is a [`Sink`] on the bus. Each key gets a ring buffer holding at
//! most [`StorageConfig::max_events`] events (O(1) insert and drop; the oldest go first,
//! and are counted). The number of keys is bounded by an LRU cache ([`lru`]) of
//! [`StorageConfig::max_keys`]; evicted keys are counted.
//!
//! Keys are spread over shards, each with its own lock, so threads emitting into
//! different keys rarely contend. With `max_keys` below [`SHARDED_FROM_KEYS`] there is a
//! single shard and eviction is exactly least-recently-used; above it, each of the
//! [`SHARDS`] shards evicts its own least recently used key once it holds
//! `max_keys / SHARDS` keys.
//!
//! ```
//! use std::sync::{Arc, Weak};
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, StorageConfig, StorageKey, StorageService};
//!
//! let bus = PerformanceEmitter::new();
//! let storage = StorageService::new(StorageConfig { max_events: 2, ..StorageConfig::default() });
//! storage.attach(&bus);
//! for t in 1..=3 {
//!     bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, t as f64).with_symbol("BTCUSDT")).unwrap();
//! }
//! let key = StorageKey::new("BTCUSDT", "");
//! let (events, rejected, dropped) = storage.snapshot(key).unwrap();
//! assert_eq!(events.iter().map(|e| e.timestamp).collect::<Vec<_>>(), [3.0, 2.0]);
//! assert_eq!((rejected, dropped), (0, 1));
//! ```

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use lru::LruCache;
use parking_lot::Mutex;

use super::emitter::{EmitterInner, PerformanceEmitter, Sink, SubscriberId};
use super::event::{InvalidEvent, PerformanceContract};
use super::key::{Prehashed, StorageKey};

/// Number of shards once `max_keys` reaches [`SHARDED_FROM_KEYS`].
///
/// ```
/// assert_eq!(backtest_perf::storage::SHARDS, 16);
/// ```
pub const SHARDS: usize = 16;
/// From this many keys on, the key cache is sharded.
///
/// ```
/// use backtest_perf::storage::SHARDED_FROM_KEYS;
/// use backtest_perf::{StorageConfig, StorageService};
/// // Below it, eviction is exactly least-recently-used.
/// let exact = StorageService::new(StorageConfig { max_keys: SHARDED_FROM_KEYS - 1, ..Default::default() });
/// assert_eq!(exact.config().max_keys, 1023);
/// ```
pub const SHARDED_FROM_KEYS: usize = 1024;

/// Limits of a [`StorageService`].
///
/// ```
/// use backtest_perf::StorageConfig;
/// let config = StorageConfig::default();
/// assert_eq!((config.max_events, config.max_keys), (10_000, 4_096));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// Events kept per key; the oldest are dropped past it. At least 1.
    pub max_events: usize,
    /// Keys kept; the least recently used is evicted past it. At least 1.
    pub max_keys: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_events: 10_000,
            max_keys: 4_096,
        }
    }
}

#[derive(Default)]
struct KeyStorage {
    /// Oldest at the front, newest at the back.
    events: VecDeque<PerformanceContract>,
    rejected: u64,
    dropped: u64,
}

impl KeyStorage {
    /// Keeps the newest `max` events, counting what falls off.
    #[inline]
    fn push(&mut self, event: &PerformanceContract, max: usize) {
        if self.events.len() >= max {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(*event);
    }
}

/// Per-key event storage; see the [module documentation](self).
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
/// let storage = StorageService::new(StorageConfig::default());
/// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
/// assert_eq!(storage.keys(), [StorageKey::new("A", "s")]);
/// ```
pub struct StorageService {
    config: StorageConfig,
    shards: Box<[Mutex<Shard>]>,
    evicted: AtomicU64,

    /// Weak: the bus holds the storage, so a strong handle back would keep both alive forever.
    subscription: Mutex<Option<(Weak<EmitterInner>, SubscriberId)>>,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("config", &self.config)
            .field("keys", &self.keys().len())
            .field("evicted", &self.evicted())
            .finish()
    }
}

type Shard = LruCache<StorageKey, KeyStorage, Prehashed>;

/// A stored bucket, copied out: `(events newest first, rejected, dropped)`.
///
/// ```
/// use backtest_perf::storage::Snapshot;
/// use backtest_perf::{StorageConfig, StorageKey, StorageService};
/// let none: Option<Snapshot> = StorageService::new(StorageConfig::default()).snapshot(StorageKey::new("A", "s"));
/// assert!(none.is_none());
/// ```
pub type Snapshot = (Vec<PerformanceContract>, u64, u64);

impl StorageService {
    /// An empty storage with the given limits (each raised to at least 1).
    ///
    /// ```
    /// use backtest_perf::{StorageConfig, StorageService};
    /// let storage = StorageService::new(StorageConfig { max_events: 0, max_keys: 0 });
    /// assert_eq!(storage.config(), StorageConfig { max_events: 1, max_keys: 1 }, "raised to at least 1");
    /// ```
    pub fn new(config: StorageConfig) -> Arc<Self> {
        let config = StorageConfig {
            max_events: config.max_events.max(1),
            max_keys: config.max_keys.max(1),
        };
        let shard_count = if config.max_keys >= SHARDED_FROM_KEYS {
            SHARDS
        } else {
            1
        };
        let per_shard =
            NonZeroUsize::new(config.max_keys.div_ceil(shard_count)).unwrap_or(NonZeroUsize::MIN);
        Arc::new(StorageService {
            config,
            shards: (0..shard_count)
                .map(|_| Mutex::new(LruCache::with_hasher(per_shard, Prehashed::default())))
                .collect(),
            evicted: AtomicU64::new(0),

            subscription: Mutex::new(None),
        })
    }

    /// The limits in force.
    ///
    /// ```
    /// use backtest_perf::{StorageConfig, StorageService};
    /// assert_eq!(StorageService::new(StorageConfig::default()).config().max_events, 10_000);
    /// ```
    pub fn config(&self) -> StorageConfig {
        self.config
    }

    /// Subscribes to `bus`, once: later calls do nothing and return `false`.
    ///
    /// ```
    /// # use backtest_perf::{PerformanceEmitter, StorageConfig, StorageService};
    /// let bus = PerformanceEmitter::new();
    /// let storage = StorageService::new(StorageConfig::default());
    /// assert!(storage.attach(&bus));
    /// assert!(!storage.attach(&bus));
    /// assert_eq!(bus.subscriber_count(), 1);
    /// ```
    pub fn attach(self: &Arc<Self>, bus: &PerformanceEmitter) -> bool {
        let mut subscription = self.subscription.lock();
        if subscription.is_some() {
            return false;
        }
        *subscription = Some((bus.downgrade(), bus.add_sink(self.clone())));
        true
    }

    /// Unsubscribes from the bus it was attached to; stored events stay.
    ///
    /// ```
    /// use backtest_perf::{PerformanceEmitter, StorageConfig, StorageService};
    /// let bus = PerformanceEmitter::new();
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.attach(&bus);
    /// storage.detach();
    /// assert_eq!(bus.subscriber_count(), 0);
    /// ```
    pub fn detach(&self) {
        if let Some((bus, id)) = self.subscription.lock().take()
            && let Some(bus) = bus.upgrade()
        {
            PerformanceEmitter::from_inner(bus).remove(id);
        }
    }

    fn shard(&self, key: &StorageKey) -> &Mutex<Shard> {
        let index = if self.shards.len() == 1 {
            0
        } else {
            (key.prehash() >> 32) as usize % self.shards.len()
        };
        &self.shards[index]
    }

    fn with_key(&self, key: StorageKey, f: impl FnOnce(&mut KeyStorage)) {
        let mut shard = self.shard(&key).lock();
        if let Some(storage) = shard.get_mut(&key) {
            f(storage);
            return;
        }
        let mut storage = KeyStorage::default();
        f(&mut storage);
        if let Some((old, _)) = shard.push(key, storage)
            && old != key
        {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores a valid event under its key (the bus calls this; tests and tools may too).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// assert_eq!(storage.snapshot(StorageKey::new("A", "s")).unwrap().0.len(), 1);
    /// ```
    pub fn record(&self, event: &PerformanceContract) {
        let max = self.config.max_events;
        self.with_key(StorageKey::of(event), |storage| storage.push(event, max));
    }

    /// Counts a rejected event under its key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// storage.record_rejected(&PerformanceContract::new(MetricType::Tick, -1.0, 2.0).with_symbol("A").with_strategy("s"));
    /// assert_eq!(storage.snapshot(StorageKey::new("A", "s")).unwrap().1, 1);
    /// ```
    pub fn record_rejected(&self, event: &PerformanceContract) {
        self.with_key(StorageKey::of(event), |storage| storage.rejected += 1);
    }

    /// A copy of one bucket (events newest first, rejected, dropped), or `None` if the key
    /// was never seen, was cleared or was evicted.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// let (events, rejected, dropped) = storage.snapshot(StorageKey::new("A", "s")).unwrap();
    /// assert_eq!((events.len(), rejected, dropped), (1, 0, 0));
    /// assert!(storage.snapshot(StorageKey::new("B", "s")).is_none());
    /// ```
    pub fn snapshot(&self, key: StorageKey) -> Option<Snapshot> {
        let mut shard = self.shard(&key).lock();
        let storage = shard.get(&key)?;
        let events = storage.events.iter().rev().copied().collect();
        Some((events, storage.rejected, storage.dropped))
    }

    /// Every key stored now, sorted.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// assert_eq!(storage.keys().len(), 1);
    /// ```
    pub fn keys(&self) -> Vec<StorageKey> {
        let mut keys: Vec<StorageKey> = self
            .shards
            .iter()
            .flat_map(|shard| shard.lock().iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .collect();
        keys.sort();
        keys
    }

    /// Forgets one key; returns whether it was stored. Other keys stay.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// assert!(storage.clear(StorageKey::new("A", "s")));
    /// assert!(storage.keys().is_empty());
    /// ```
    pub fn clear(&self, key: StorageKey) -> bool {
        self.shard(&key).lock().pop(&key).is_some()
    }

    /// Forgets every key. The storage stays subscribed.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// storage.clear_all();
    /// assert!(storage.keys().is_empty());
    /// ```
    pub fn clear_all(&self) {
        for shard in self.shards.iter() {
            shard.lock().clear();
        }
    }

    /// Keys evicted by the LRU cap since the storage was made.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageService};
    /// let storage = StorageService::new(StorageConfig { max_events: 10, max_keys: 1 });
    /// for symbol in ["A", "B"] {
    ///     storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol(symbol));
    /// }
    /// assert_eq!(storage.evicted(), 1);
    /// ```
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl Sink for StorageService {
    #[inline]
    fn on_event(&self, event: &PerformanceContract) {
        self.record(event);
    }

    fn on_rejected(&self, event: &PerformanceContract, _reason: &InvalidEvent) {
        self.record_rejected(event);
    }

    /// One lock per run of events with the same key.
    fn on_batch(&self, events: &[PerformanceContract]) {
        let max = self.config.max_events;
        let mut rest = events;
        while let Some(first) = rest.first() {
            let key = StorageKey::of(first);
            let run = rest
                .iter()
                .position(|e| StorageKey::of(e) != key)
                .unwrap_or(rest.len());
            let (same, tail) = rest.split_at(run);
            self.with_key(key, |storage| {
                same.iter().for_each(|e| storage.push(e, max))
            });
            rest = tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::event::MetricType;

    fn event(symbol: &str, strategy: &str, timestamp: f64) -> PerformanceContract {
        PerformanceContract::new(MetricType::Tick, 1.0, timestamp)
            .with_symbol(symbol)
            .with_strategy(strategy)
    }

    #[test]
    fn cap_keeps_the_newest_and_counts_the_dropped() {
        let storage = StorageService::new(StorageConfig {
            max_events: 3,
            max_keys: 8,
        });
        for t in 0..10 {
            storage.record(&event("A", "s", t as f64));
        }
        let (events, rejected, dropped) = storage.snapshot(StorageKey::new("A", "s")).unwrap();
        let stamps: Vec<f64> = events.iter().map(|e| e.timestamp).collect();
        assert_eq!(stamps, [9.0, 8.0, 7.0]);
        assert_eq!((rejected, dropped), (0, 7));
    }

    #[test]
    fn default_cap_is_ten_thousand() {
        let storage = StorageService::new(StorageConfig::default());
        for t in 0..10_005 {
            storage.record(&event("A", "s", t as f64));
        }
        let (events, _, dropped) = storage.snapshot(StorageKey::new("A", "s")).unwrap();
        assert_eq!((events.len(), dropped), (10_000, 5));
        assert_eq!(events[0].timestamp, 10_004.0);
        assert_eq!(events[9_999].timestamp, 5.0);
    }

    #[test]
    fn lru_evicts_the_least_recently_used_key_and_counts_it() {
        let storage = StorageService::new(StorageConfig {
            max_events: 10,
            max_keys: 2,
        });
        storage.record(&event("A", "s", 1.0));
        storage.record(&event("B", "s", 2.0));
        storage.record(&event("A", "s", 3.0)); // A is now the most recently used
        storage.record(&event("C", "s", 4.0)); // evicts B
        let keys: Vec<String> = storage.keys().iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["A:s", "C:s"]);
        assert_eq!(storage.evicted(), 1);
        assert!(storage.snapshot(StorageKey::new("B", "s")).is_none());
    }

    #[test]
    fn keyed_clear_leaves_other_keys() {
        let storage = StorageService::new(StorageConfig::default());
        storage.record(&event("A", "s", 1.0));
        storage.record(&event("B", "s", 1.0));
        assert!(storage.clear(StorageKey::new("A", "s")));
        assert!(!storage.clear(StorageKey::new("A", "s")));
        assert_eq!(storage.keys(), [StorageKey::new("B", "s")]);
        storage.clear_all();
        assert!(storage.keys().is_empty());
    }

    #[test]
    fn missing_parts_land_under_global() {
        let storage = StorageService::new(StorageConfig::default());
        storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0));
        storage.record(&event("", "s", 1.0));
        storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A"));
        let keys: Vec<String> = storage.keys().iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["A:global", "global:global", "global:s"]);
    }

    #[test]
    fn dropping_the_bus_frees_the_storage() {
        let bus = PerformanceEmitter::new();
        let storage = StorageService::new(StorageConfig::default());
        storage.attach(&bus);
        assert_eq!(Arc::strong_count(&storage), 2);
        drop(bus);
        assert_eq!(Arc::strong_count(&storage), 1);
        storage.detach();
    }

    #[test]
    fn detach_unsubscribes() {
        let bus = PerformanceEmitter::new();
        let storage = StorageService::new(StorageConfig::default());
        storage.attach(&bus);
        storage.detach();
        assert_eq!(bus.subscriber_count(), 0);
        bus.emit(event("A", "s", 1.0)).unwrap();
        assert!(storage.keys().is_empty());
    }

    #[test]
    fn sharded_storage_keeps_every_key_below_its_cap() {
        let storage = StorageService::new(StorageConfig {
            max_events: 1,
            max_keys: 4096,
        });
        for i in 0..200 {
            storage.record(&event(&format!("S{i}"), "s", 1.0));
        }
        assert_eq!(storage.keys().len(), 200);
        assert_eq!(storage.evicted(), 0);
    }
}
