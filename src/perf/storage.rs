//! Storage: whole-run statistics and the newest events of each `symbol:strategy`.
//!
//! [`StorageService`] is a [`Sink`] on the bus. Each key keeps, per metric type, an
//! [`Aggregate`] of *every* event since the key was created or cleared (count, totals,
//! min, max, variance, wait times, a latency histogram: memory that does not grow with the
//! number of events), and a window of the newest [`StorageConfig::max_events`] events
//! (O(1) insert and drop; the oldest go first, and are counted as `dropped`). Dropping from
//! the window never changes the whole-run statistics.
//!
//! The number of keys is bounded by an LRU ([`lru`]) of [`StorageConfig::max_keys`], kept
//! over all shards together: a key is evicted only when `max_keys` keys are stored, and
//! evictions are counted. Evicting or clearing a key also forgets the bus's
//! `previousTimestamp` chain for it, so no per-key state outlives its key.
//!
//! Keys are spread over shards, each with its own lock, so threads emitting into different
//! keys rarely contend. With `max_keys` below [`SHARDED_FROM_KEYS`] there is a single
//! shard and eviction is exactly least-recently-used; above it, the evicted key is the
//! least recently used of the shard that needs room (or of the next non-empty one).
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
//! let snapshot = storage.snapshot(key).unwrap();
//! assert_eq!(snapshot.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(), [3.0, 2.0]);
//! assert_eq!((snapshot.rejected, snapshot.dropped), (0, 1));
//! assert_eq!(snapshot.metrics[0].aggregate.count(), 3, "the whole run");
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use lru::LruCache;
use parking_lot::Mutex;

use super::emitter::{
    Chaining, EmitterInner, PerformanceEmitter, Sink, SubscriberId, fill_previous,
};
use super::event::{InvalidEvent, MetricType, PerformanceContract};
use super::key::{KeyedBatch, Prehashed, StorageKey};
use super::stats::Aggregate;
use super::window::{CHUNK, Window};

/// Number of shards once `max_keys` reaches [`SHARDED_FROM_KEYS`].
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

/// One metric type's whole-run state inside a key.
#[derive(Clone, Debug)]
struct MetricState {
    metric: MetricType,
    aggregate: Aggregate,
    /// The key's count of pushed events when this type's first event came: while the
    /// window's oldest event is no newer, every event of the type is still in it (and its
    /// percentiles are exact). Known without reading the events that fall off the window.
    first_seq: u64,
    /// Merged from elsewhere (no raw events here): percentiles come from the histogram.
    merged: bool,
    /// Operations of this type that ran untimed (sampling).
    untimed: u64,
    /// The timestamp of the type's last event: the `previousTimestamp` of its next (see
    /// [`Chaining`]).
    last_timestamp: Option<f64>,
}

#[derive(Default)]
struct KeyStorage {
    /// The newest events.
    events: Window,
    /// A handful of types per key: a linear scan beats hashing.
    metrics: Vec<MetricState>,
    /// Where each built-in type is in `metrics` (plus one; 0: not yet), so the engine's
    /// events, nearly all of them, find theirs without a scan.
    built_in: [u32; 5],
    /// Events pushed since the key was made.
    pushed: u64,
    rejected: u64,
    dropped: u64,
}

impl KeyStorage {
    #[inline]
    fn metric(&mut self, metric: MetricType) -> &mut MetricState {
        let found = match metric.built_in_index() {
            Some(slot) => (self.built_in[slot] as usize).checked_sub(1),
            None => self.metrics.iter().position(|m| m.metric == metric),
        };
        let i = match found {
            Some(i) => i,
            None => self.add_metric(metric),
        };
        &mut self.metrics[i]
    }

    /// A type's first event: its state, kept apart so that finding a known type, on
    /// every event, stays a few inlined instructions.
    #[cold]
    #[inline(never)]
    fn add_metric(&mut self, metric: MetricType) -> usize {
        if let Some(slot) = metric.built_in_index() {
            self.built_in[slot] = u32::try_from(self.metrics.len() + 1).unwrap_or(0);
        }
        self.metrics.push(MetricState {
            metric,
            aggregate: Aggregate::default(),
            first_seq: self.pushed,
            merged: false,
            untimed: 0,
            last_timestamp: None,
        });
        self.metrics.len() - 1
    }

    /// Adds the event to the whole-run aggregates and keeps the newest `max` events,
    /// counting what falls off the window.
    #[inline]
    fn push(&mut self, event: &PerformanceContract, max: usize) {
        let state = self.metric(event.metric_type);
        state.aggregate.record(event);
        state.last_timestamp = Some(event.timestamp);
        self.push_window(event, max);
    }

    /// [`push`](Self::push), the event's empty previous timestamp filled first from the
    /// type's last one.
    #[inline]
    fn chain_and_push(&mut self, event: &mut PerformanceContract, max: usize) {
        let state = self.metric(event.metric_type);
        fill_previous(event, state.last_timestamp.replace(event.timestamp));
        state.aggregate.record(event);
        self.push_window(event, max);
    }

    /// [`push`](Self::push) for a run of events: the aggregates event by event, then the
    /// newest `max` of them copied into the window.
    #[inline]
    fn push_run(&mut self, events: &[PerformanceContract], max: usize) {
        for event in events {
            let state = self.metric(event.metric_type);
            state.aggregate.record(event);
            state.last_timestamp = Some(event.timestamp);
            // The sequence number of the next event: a type first seen here starts at it.
            self.pushed += 1;
        }
        self.push_run_window(events, max);
    }

    /// [`chain_and_push_run`](Self::chain_and_push_run) for the engine's buffer, kept in
    /// the window without a copy ([`Window::adopt`]): `events` is left empty, with a
    /// buffer of at least its capacity.
    #[inline]
    fn chain_and_keep_run(
        &mut self,
        events: &mut Vec<PerformanceContract>,
        max: usize,
        kept: &KeptBuffers,
    ) {
        self.chain_run(events);
        self.dropped += self
            .events
            .adopt(events, max, |capacity| kept.take(capacity));
    }

    /// [`push_run`](Self::push_run), each event's empty previous timestamp filled first
    /// as [`chain_and_push`](Self::chain_and_push) does.
    #[inline]
    fn chain_and_push_run(&mut self, events: &mut [PerformanceContract], max: usize) {
        self.chain_run(events);
        self.push_run_window(events, max);
    }

    /// The aggregates' part of a chained run: each event's previous timestamp filled,
    /// then recorded.
    #[inline]
    fn chain_run(&mut self, events: &mut [PerformanceContract]) {
        for event in events.iter_mut() {
            let state = self.metric(event.metric_type);
            fill_previous(event, state.last_timestamp.replace(event.timestamp));
            state.aggregate.record(event);
            self.pushed += 1;
        }
    }

    /// The window's part of a run: the newest `max` events, copied.
    #[inline]
    fn push_run_window(&mut self, events: &[PerformanceContract], max: usize) {
        self.dropped += self.events.extend(events, max);
    }

    /// Keeps the event in the window only (its aggregate is counted elsewhere).
    #[inline]
    fn push_window(&mut self, event: &PerformanceContract, max: usize) {
        // The oldest event that falls off is not read: it is cold in memory, and
        // `first_seq` tells which types it could have belonged to.
        self.dropped += u64::from(self.events.push(event, max));
        self.pushed += 1;
    }

    /// Takes in everything `other` holds (another thread's state for the same new key).
    fn absorb(&mut self, other: KeyStorage, max: usize) {
        self.rejected = self.rejected.saturating_add(other.rejected);
        self.dropped = self.dropped.saturating_add(other.dropped);
        for m in &other.metrics {
            let state = self.metric(m.metric);
            state.aggregate.merge(&m.aggregate);
            state.merged = true;
            state.untimed = state.untimed.saturating_add(m.untimed);
            // The two threads' events interleaved in time: the later one is the last.
            state.last_timestamp = match (state.last_timestamp, m.last_timestamp) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        for event in other.events.iter() {
            self.push_window(event, max);
        }
    }

    /// Copies of the per-type whole-run state.
    fn metric_snapshots(&self) -> Vec<MetricSnapshot> {
        let oldest = self.pushed.saturating_sub(self.events.len() as u64);
        self.metrics
            .iter()
            .map(|m| MetricSnapshot {
                metric: m.metric,
                aggregate: m.aggregate.clone(),
                all_in_window: !m.merged && m.first_seq >= oldest,
                untimed: m.untimed,
            })
            .collect()
    }

    fn total_events(&self) -> u64 {
        self.metrics.iter().map(|m| m.aggregate.count()).sum()
    }
}

/// One key's state, copied out by [`StorageService::snapshot`].
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
/// let storage = StorageService::new(StorageConfig { max_events: 1, ..StorageConfig::default() });
/// for t in [1.0, 2.0] {
///     storage.record(&PerformanceContract::new(MetricType::Tick, t, t).with_symbol("A"));
/// }
/// let snapshot = storage.snapshot(StorageKey::new("A", "")).unwrap();
/// assert_eq!((snapshot.events.len(), snapshot.dropped), (1, 1));
/// let tick = &snapshot.metrics[0];
/// assert_eq!((tick.metric, tick.aggregate.count(), tick.all_in_window), (MetricType::Tick, 2, false));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The window, newest first.
    pub events: Vec<PerformanceContract>,
    /// Whole-run state per metric type, in order of first appearance.
    pub metrics: Vec<MetricSnapshot>,
    /// Events for this key the bus rejected.
    pub rejected: u64,
    /// Events that left the window.
    pub dropped: u64,
}

/// One metric type's whole-run aggregate in a [`Snapshot`].
///
/// ```
/// use backtest_perf::storage::MetricSnapshot;
/// use backtest_perf::MetricType;
/// let m = MetricSnapshot { metric: MetricType::Tick, aggregate: Default::default(), all_in_window: true, untimed: 0 };
/// assert_eq!(m.aggregate.count(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct MetricSnapshot {
    /// The metric type.
    pub metric: MetricType,
    /// Every event of this type since the key was created or cleared.
    pub aggregate: Aggregate,
    /// Whether every event of this type is still in the window (then its percentiles are
    /// computed exactly from the events; otherwise read from the histogram).
    pub all_in_window: bool,
    /// Operations of this type that ran but were not timed (a sampled run).
    pub untimed: u64,
}

/// A key's counters, read without copying anything: [`StorageService::counters`].
///
/// ```
/// use backtest_perf::storage::Counters;
/// assert_eq!(Counters::default().total_events, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events recorded since the key was created or cleared.
    pub total_events: u64,
    /// Events in the window now.
    pub window_events: u64,
    /// Rejected events.
    pub rejected: u64,
    /// Events that left the window.
    pub dropped: u64,
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
    /// Keys stored, over all shards.
    len: AtomicUsize,
    evicted: AtomicU64,

    /// Weak: the bus holds the storage, so a strong handle back would keep both alive forever.
    subscription: Mutex<Option<(Weak<EmitterInner>, SubscriberId)>>,
    /// Buffers of the windows of keys cleared or evicted and of runs that ended, for new
    /// windows and runs.
    kept: KeptBuffers,
}

/// The most buffers kept from cleared or evicted keys' windows and ended runs: with the
/// engine's buffers of 1,088 events, 2.2 MB, a little more than one window of the default
/// 10,000 events takes.
pub(crate) const KEPT_BUFFERS: usize = 16;

/// Buffers of the windows of keys cleared or evicted, and of the engine's runs that
/// ended (at most [`KEPT_BUFFERS`]), their pages still in memory, for the engine's next
/// buffers. A process that clears the storage between backtests (a parameter sweep,
/// `backtest-perf bench`) otherwise faulted in a new buffer for each of the first 10
/// batches of every run, until the window was full: in a throwaway program running the year 31 times a process, clearing between
/// runs (3 interleaved pairs of processes), tracking on took a median of 25.7-26.9 ms
/// against 27.6-29.2 ms, and timing 1 tick in 32 (14 batches a run) 10.3-10.9 against
/// 10.9-12.0 ms, with tracking off at 9.0-9.6 ms in both.
#[derive(Default)]
struct KeptBuffers(Mutex<Vec<Vec<PerformanceContract>>>);

impl KeptBuffers {
    /// A kept buffer of at least `capacity` slots, if there is one.
    fn take(&self, capacity: usize) -> Option<Vec<PerformanceContract>> {
        let mut kept = self.0.lock();
        let i = kept.iter().rposition(|b| b.capacity() >= capacity)?;
        Some(kept.swap_remove(i))
    }

    /// Keeps the buffers a gone key's window adopted, up to the limit.
    fn keep(&self, storage: KeyStorage) {
        storage.events.into_buffers().for_each(|b| self.keep_one(b));
    }

    /// Keeps one buffer, emptied, if there is room and it could hold an engine's batch
    /// (a window's own chunks, of at most [`CHUNK`] slots, cannot).
    fn keep_one(&self, mut buffer: Vec<PerformanceContract>) {
        let mut kept = self.0.lock();
        if kept.len() < KEPT_BUFFERS && buffer.capacity() > CHUNK {
            buffer.clear();
            kept.push(buffer);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
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
        Arc::new(StorageService {
            config,
            // The cap is kept over all shards together (`len`), so an uneven spread of
            // keys over shards never evicts below it.
            shards: (0..shard_count)
                .map(|_| Mutex::new(LruCache::unbounded_with_hasher(Prehashed::default())))
                .collect(),
            len: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),

            subscription: Mutex::new(None),
            kept: KeptBuffers::default(),
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
        // Its keys' last timestamps are from before (another bus, or events it missed
        // while detached): a wait measured from them would be wrong.
        self.forget_last_timestamps();
        // The storage keeps the wait-time chain of its keys itself: as the bus's first
        // subscriber (as usual), it spares the bus's own chain and its lock.
        let id = bus.add_chaining(self.clone(), self.clone());
        *subscription = Some((bus.downgrade(), id));
        true
    }

    /// Forgets every key's last timestamps: the next event of each has no previous one.
    fn forget_last_timestamps(&self) {
        for shard in &self.shards {
            for (_, storage) in shard.lock().iter_mut() {
                for state in &mut storage.metrics {
                    state.last_timestamp = None;
                }
            }
        }
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
        &self.shards[self.shard_index(key)]
    }

    fn shard_index(&self, key: &StorageKey) -> usize {
        if self.shards.len() == 1 {
            0
        } else {
            // By the constant: a mask, where the length (always `SHARDS` here) took a
            // division on every event.
            (key.prehash() >> 32) as usize % SHARDS
        }
    }

    fn with_key(&self, key: StorageKey, f: impl FnOnce(&mut KeyStorage)) {
        let index = self.shard_index(&key);
        {
            let mut shard = self.shards[index].lock();
            if let Some(storage) = shard.get_mut(&key) {
                f(storage);
                return;
            }
        }
        // A new key: make room first (never holding two shard locks), then insert.
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.config.max_keys {
            self.evict_one(index);
        }
        let mut storage = KeyStorage::default();
        f(&mut storage);
        let mut shard = self.shards[index].lock();
        if let Some(existing) = shard.get_mut(&key) {
            // Another thread made the key meanwhile: fold this state into it.
            self.len.fetch_sub(1, Ordering::AcqRel);
            existing.absorb(storage, self.config.max_events);
        } else {
            shard.push(key, storage);
        }
    }

    /// Evicts the least recently used key of shard `preferred`, or of the next shard that
    /// has one.
    fn evict_one(&self, preferred: usize) {
        let n = self.shards.len();
        for step in 0..n {
            let popped = self.shards[(preferred + step) % n].lock().pop_lru();
            if let Some((old, storage)) = popped {
                self.len.fetch_sub(1, Ordering::AcqRel);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.forget_chain(Some(old));
                self.kept.keep(storage);
                return;
            }
        }
    }

    /// Forgets the bus's `previousTimestamp` chain of `key` (`None`: of every key), so
    /// the chain follows the key cap and `clear`.
    fn forget_chain(&self, key: Option<StorageKey>) {
        let bus = self
            .subscription
            .lock()
            .as_ref()
            .and_then(|(bus, _)| bus.upgrade());
        if let Some(bus) = bus {
            PerformanceEmitter::from_inner(bus).forget_chain(key);
        }
    }

    /// Stores a valid event under its key (the bus calls this; tests and tools may too).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// assert_eq!(storage.snapshot(StorageKey::new("A", "s")).unwrap().events.len(), 1);
    /// ```
    pub fn record(&self, event: &PerformanceContract) {
        let max = self.config.max_events;
        self.with_key(StorageKey::of(event), |storage| storage.push(event, max));
    }

    /// Merges whole-run aggregates read elsewhere (another storage, a JSON report) into
    /// `key`, with `rejected` events: afterwards the key's statistics are those of both
    /// streams. Their raw events are not here, so those types' percentiles are read from
    /// the histograms.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// use backtest_perf::stats::Aggregate;
    /// let storage = StorageService::new(StorageConfig::default());
    /// let mut elsewhere = Aggregate::default();
    /// elsewhere.record(&PerformanceContract::new(MetricType::Tick, 2.0, 1.0));
    /// let key = StorageKey::new("A", "s");
    /// storage.merge(key, [(MetricType::Tick, &elsewhere)], 1);
    /// storage.merge(key, [(MetricType::Tick, &elsewhere)], 0);
    /// let c = storage.counters(key).unwrap();
    /// assert_eq!((c.total_events, c.window_events, c.rejected), (2, 0, 1));
    /// ```
    pub fn merge<'a>(
        &self,
        key: StorageKey,
        aggregates: impl IntoIterator<Item = (MetricType, &'a Aggregate)>,
        rejected: u64,
    ) {
        self.with_key(key, |storage| {
            storage.rejected = storage.rejected.saturating_add(rejected);
            for (metric, aggregate) in aggregates {
                let state = storage.metric(metric);
                state.aggregate.merge(aggregate);
                state.merged = true;
            }
        });
    }

    /// Counts a rejected event under its key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// storage.record_rejected(&PerformanceContract::new(MetricType::Tick, -1.0, 2.0).with_symbol("A").with_strategy("s"));
    /// assert_eq!(storage.snapshot(StorageKey::new("A", "s")).unwrap().rejected, 1);
    /// ```
    pub fn record_rejected(&self, event: &PerformanceContract) {
        self.with_key(StorageKey::of(event), |storage| storage.rejected += 1);
    }

    /// A copy of one key's state (the window newest first, the whole-run aggregates and
    /// the counters), or `None` if the key was never seen, was cleared or was evicted.
    /// Reading does not count as a use for the LRU.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// let snapshot = storage.snapshot(StorageKey::new("A", "s")).unwrap();
    /// assert_eq!((snapshot.events.len(), snapshot.rejected, snapshot.dropped), (1, 0, 0));
    /// assert!(storage.snapshot(StorageKey::new("B", "s")).is_none());
    /// ```
    pub fn snapshot(&self, key: StorageKey) -> Option<Snapshot> {
        let shard = self.shard(&key).lock();
        let storage = shard.peek(&key)?;
        Some(Snapshot {
            events: storage.events.newest_first(),
            metrics: storage.metric_snapshots(),
            rejected: storage.rejected,
            dropped: storage.dropped,
        })
    }

    /// One key's whole-run aggregates per metric type, without copying the window; `None`
    /// for an unknown key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig { max_events: 1, ..StorageConfig::default() });
    /// for t in 0..3 {
    ///     storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, t as f64).with_symbol("A"));
    /// }
    /// let aggregates = storage.aggregates(StorageKey::new("A", "")).unwrap();
    /// assert_eq!((aggregates[0].metric, aggregates[0].aggregate.count()), (MetricType::Tick, 3));
    /// ```
    pub fn aggregates(&self, key: StorageKey) -> Option<Vec<MetricSnapshot>> {
        let shard = self.shard(&key).lock();
        Some(shard.peek(&key)?.metric_snapshots())
    }

    /// One key's counters, read without copying the window; `None` for an unknown key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig { max_events: 2, ..StorageConfig::default() });
    /// for t in 0..5 {
    ///     storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, t as f64).with_symbol("A"));
    /// }
    /// let c = storage.counters(StorageKey::new("A", "")).unwrap();
    /// assert_eq!((c.total_events, c.window_events, c.dropped), (5, 2, 3));
    /// ```
    pub fn counters(&self, key: StorageKey) -> Option<Counters> {
        let shard = self.shard(&key).lock();
        let storage = shard.peek(&key)?;
        Some(Counters {
            total_events: storage.total_events(),
            window_events: storage.events.len() as u64,
            rejected: storage.rejected,
            dropped: storage.dropped,
        })
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

    /// Forgets one key; returns whether it was stored. Other keys stay. The buffers its
    /// window kept the engine's batches in are kept for later windows (at most 16 in
    /// all, about 2.2 MB), not freed.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, StorageConfig, StorageKey, StorageService};
    /// let storage = StorageService::new(StorageConfig::default());
    /// storage.record(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// assert!(storage.clear(StorageKey::new("A", "s")));
    /// assert!(storage.keys().is_empty());
    /// ```
    pub fn clear(&self, key: StorageKey) -> bool {
        let removed = self.shard(&key).lock().pop(&key);
        self.forget_chain(Some(key));
        let Some(storage) = removed else {
            return false;
        };
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.kept.keep(storage);
        true
    }

    /// Forgets every key. The storage stays subscribed. As with [`clear`](Self::clear),
    /// up to 16 buffers of the engine's batches are kept for later windows.
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
            let mut gone = Vec::new();
            {
                let mut shard = shard.lock();
                self.len.fetch_sub(shard.len(), Ordering::AcqRel);
                while let Some((_, storage)) = shard.pop_lru() {
                    gone.push(storage);
                }
            }
            // Kept (or dropped) outside the shard's lock.
            for storage in gone {
                self.kept.keep(storage);
            }
        }
        self.forget_chain(None);
    }

    /// Where the buffers kept for later windows and runs are.
    #[cfg(test)]
    pub(crate) fn kept_buffers(&self) -> Vec<*const PerformanceContract> {
        self.kept.0.lock().iter().map(|b| b.as_ptr()).collect()
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

    fn on_untimed(&self, key: StorageKey, metric: MetricType, count: u64) {
        self.with_key(key, |storage| {
            let state = storage.metric(metric);
            state.untimed = state.untimed.saturating_add(count);
        });
    }

    fn on_batch(&self, events: &[PerformanceContract]) {
        // Grouped a slice at a time, as the bus does: the grouping's memory stays small.
        for slice in events.chunks(4096) {
            self.on_keyed_batch(&KeyedBatch::new(slice));
        }
    }

    /// One lock per key.
    fn on_keyed_batch(&self, batch: &KeyedBatch<'_>) {
        let max = self.config.max_events;
        if let Some(key) = batch.single_key() {
            self.with_key(key, |storage| storage.push_run(batch.events(), max));
            return;
        }
        for (key, events) in batch.groups() {
            self.with_key(key, |storage| events.for_each(|e| storage.push(e, max)));
        }
    }
}

impl Chaining for StorageService {
    fn chain_event(&self, event: &mut PerformanceContract) {
        let max = self.config.max_events;
        self.with_key(StorageKey::of(event), |storage| {
            storage.chain_and_push(event, max);
        });
    }

    fn keep_batch(&self, events: &mut Vec<PerformanceContract>, key: StorageKey) {
        let max = self.config.max_events;
        self.with_key(key, |storage| {
            storage.chain_and_keep_run(events, max, &self.kept);
        });
    }

    fn take_buffer(&self, capacity: usize) -> Option<Vec<PerformanceContract>> {
        self.kept.take(capacity)
    }

    fn give_buffer(&self, buffer: Vec<PerformanceContract>) {
        self.kept.keep_one(buffer);
    }

    fn chain_batch(&self, events: &mut [PerformanceContract], grouping: &KeyedBatch<'_>) {
        let max = self.config.max_events;
        if let Some(key) = grouping.single_key() {
            self.with_key(key, |storage| storage.chain_and_push_run(events, max));
            return;
        }
        for (key, members) in grouping.indexes() {
            self.with_key(key, |storage| {
                for i in members {
                    storage.chain_and_push(&mut events[i], max);
                }
            });
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
        let snapshot = storage.snapshot(StorageKey::new("A", "s")).unwrap();
        let stamps: Vec<f64> = snapshot.events.iter().map(|e| e.timestamp).collect();
        assert_eq!(stamps, [9.0, 8.0, 7.0]);
        assert_eq!((snapshot.rejected, snapshot.dropped), (0, 7));
        let tick = &snapshot.metrics[0];
        assert_eq!((tick.aggregate.count(), tick.all_in_window), (10, false));
    }

    #[test]
    fn default_cap_is_ten_thousand() {
        let storage = StorageService::new(StorageConfig::default());
        for t in 0..10_005 {
            storage.record(&event("A", "s", t as f64));
        }
        let snapshot = storage.snapshot(StorageKey::new("A", "s")).unwrap();
        let events = &snapshot.events;
        assert_eq!((events.len(), snapshot.dropped), (10_000, 5));
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
        // The bus holds it as a sink, among the sinks that can keep the wait-time chain,
        // and as the one that keeps it now.
        assert_eq!(Arc::strong_count(&storage), 4);
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

    #[test]
    fn sharded_storage_evicts_only_at_its_cap() {
        for (cap, keys) in [(4096, 4000), (4096, 5000), (1024, 3000)] {
            let storage = StorageService::new(StorageConfig {
                max_events: 1,
                max_keys: cap,
            });
            for i in 0..keys {
                storage.record(&event(&format!("S{i}"), "s", 1.0));
            }
            assert_eq!(
                storage.keys().len(),
                keys.min(cap),
                "cap {cap}, {keys} keys"
            );
            assert_eq!(storage.evicted(), keys.saturating_sub(cap) as u64);
        }
    }

    #[test]
    fn a_type_stays_exact_while_all_its_events_are_in_the_window() {
        let storage = StorageService::new(StorageConfig {
            max_events: 3,
            max_keys: 8,
        });
        let e = |metric: MetricType, t: f64| {
            PerformanceContract::new(metric, 1.0, t)
                .with_symbol("A")
                .with_strategy("s")
        };
        storage.record(&e(MetricType::Tick, 1.0));
        for t in 2..=4 {
            storage.record(&e(MetricType::GetSignal, f64::from(t)));
        }
        let snapshot = storage.snapshot(StorageKey::new("A", "s")).unwrap();
        let exact: Vec<(MetricType, bool)> = snapshot
            .metrics
            .iter()
            .map(|m| (m.metric, m.all_in_window))
            .collect();
        // The tick fell off the window; the three signals are all still in it.
        assert_eq!(
            exact,
            [(MetricType::Tick, false), (MetricType::GetSignal, true)]
        );
    }

    #[test]
    fn reading_does_not_refresh_a_key() {
        let storage = StorageService::new(StorageConfig {
            max_events: 10,
            max_keys: 2,
        });
        storage.record(&event("A", "s", 1.0));
        storage.record(&event("B", "s", 2.0));
        let _ = storage.snapshot(StorageKey::new("A", "s"));
        let _ = storage.counters(StorageKey::new("A", "s"));
        storage.record(&event("C", "s", 3.0)); // A is still the least recently used
        let keys: Vec<String> = storage.keys().iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["B:s", "C:s"]);
    }

    #[test]
    fn clearing_or_evicting_a_key_forgets_its_wait_chain() {
        let bus = PerformanceEmitter::new();
        let storage = StorageService::new(StorageConfig {
            max_events: 10,
            max_keys: 1,
        });
        storage.attach(&bus);
        let newest_previous = |storage: &StorageService| {
            storage.snapshot(StorageKey::new("A", "s")).unwrap().events[0].previous_timestamp
        };
        bus.emit(event("A", "s", 1.0)).unwrap();
        storage.clear(StorageKey::new("A", "s"));
        bus.emit(event("A", "s", 5.0)).unwrap();
        assert_eq!(newest_previous(&storage), None, "cleared");
        bus.emit(event("A", "s", 7.0)).unwrap();
        assert_eq!(newest_previous(&storage), Some(5.0));
        bus.emit(event("B", "s", 8.0)).unwrap(); // evicts A
        bus.emit(event("A", "s", 9.0)).unwrap(); // evicts B
        assert_eq!(newest_previous(&storage), None, "evicted");
        bus.emit(event("A", "s", 12.0)).unwrap();
        assert_eq!(newest_previous(&storage), Some(9.0));
        // The storage, first on the bus, keeps the chain: the bus keeps none.
        assert_eq!(bus.chain_len(), 0);
    }

    #[test]
    fn buffers_of_cleared_windows_are_kept_for_the_next_and_bounded() {
        use crate::perf::emitter::Chaining;
        let storage = StorageService::new(StorageConfig {
            max_events: 4_000,
            max_keys: 8,
        });
        let key = StorageKey::new("A", "s");
        let batch = |from: u32| -> Vec<PerformanceContract> {
            let mut buffer = Vec::with_capacity(1_088);
            buffer.extend((from..from + 1_024).map(|t| event("A", "s", f64::from(t))));
            buffer
        };
        // Six batches: the window adopts each buffer, and hands back a new one until its
        // oldest fall off (4,000 events: four buffers held, one spare).
        let mut adopted = Vec::new();
        let mut buffer = batch(0);
        for i in 0..6 {
            adopted.push(buffer.as_ptr());
            storage.keep_batch(&mut buffer, key);
            assert!(buffer.is_empty() && buffer.capacity() >= 1_088, "batch {i}");
            buffer = batch(1_024 * (i + 1));
        }
        let in_window = |buffer: &Vec<PerformanceContract>| adopted.contains(&buffer.as_ptr());
        assert_eq!(storage.kept.len(), 0);
        storage.clear_all();
        // The cleared window's adopted buffers (the four it held and its spare), kept.
        assert_eq!(storage.kept.len(), 5);
        // The next key's first batch gets one of them back, not new memory.
        let mut next = batch(0);
        storage.keep_batch(&mut next, key);
        assert!(in_window(&next), "a kept buffer comes back");
        assert_eq!(storage.kept.len(), 4);
        // Kept buffers are bounded: four windows of five buffers each, cleared, keep
        // no more than the limit, round after round.
        for round in 0..3 {
            for strategy in ["s1", "s2", "s3", "s4"] {
                for i in 0..6 {
                    let mut buffer = batch(1_024 * i);
                    storage.keep_batch(&mut buffer, StorageKey::new("B", strategy));
                }
            }
            storage.clear_all();
            assert_eq!(storage.kept.len(), KEPT_BUFFERS, "round {round}");
        }
        // A buffer too small for a batch's capacity is never handed out for it.
        assert!(storage.kept.take(1 << 20).is_none());
    }

    #[test]
    fn a_full_window_takes_little_more_than_the_slots_of_its_events() {
        use crate::perf::window::CHUNK;
        let max = 10_000;
        let mut one_by_one = KeyStorage::default();
        let mut in_runs = KeyStorage::default();
        let mut adopted = KeyStorage::default();
        let events: Vec<_> = (0..25_000).map(|t| event("A", "s", f64::from(t))).collect();
        for e in &events {
            one_by_one.push(e, max);
        }
        for run in events.chunks(1024) {
            in_runs.push_run(run, max);
            let mut buffer = Vec::with_capacity(1024);
            buffer.extend_from_slice(run);
            adopted.chain_and_keep_run(&mut buffer, max, &KeptBuffers::default());
        }
        for (storage, slots) in [
            // The newest 10,000 events span 40 chunks of 256 slots (the first four chunks
            // took 16 to 128), and the spare.
            (&one_by_one, 41 * CHUNK),
            (&in_runs, 41 * CHUNK),
            // Eleven runs of 1,024 slots hold the newest 10,000 events; the spare was
            // given for the last run's buffer.
            (&adopted, 11 * 1024),
        ] {
            assert_eq!(
                (storage.events.len(), storage.events.capacity()),
                (max, slots)
            );
            assert_eq!(
                storage.events.iter().next().map(|e| e.timestamp),
                Some(15_000.0)
            );
            assert_eq!(storage.dropped, 15_000);
        }
        let mut small = KeyStorage::default();
        for e in &events[..3] {
            small.push(e, max);
        }
        assert_eq!(small.events.capacity(), 16, "a first chunk of 16 slots");
    }

    #[test]
    fn a_run_keeps_the_same_statistics_as_its_events_one_at_a_time() {
        // Five built-in types and a custom one; durations below 2,048 ns (the plain
        // array), one value repeated past a 16-bit counter's limit (100 in tests) and
        // the total past 32-bit counters' (1,000 in tests), and spread values, so runs
        // widen the counters on the way as single events do.
        let custom = MetricType::custom("step");
        let types: Vec<MetricType> = MetricType::BUILT_IN.into_iter().chain([custom]).collect();
        let mut events: Vec<PerformanceContract> = (0..9_000u32)
            .map(|i| {
                let ms = match i % 4 {
                    0 => 0.005,
                    1 => f64::from(i % 1_500) / 1e6,
                    _ => f64::from(i % 997) * 0.013 + 0.002,
                };
                let metric = types[(i as usize / 3) % types.len()];
                let mut e = PerformanceContract::new(metric, ms, f64::from(i) * 1.5)
                    .with_symbol("A")
                    .with_strategy("s");
                if i % 7 == 0 {
                    e.ok = Some(false);
                }
                e
            })
            .collect();
        let (mut one_by_one, mut in_runs) = (KeyStorage::default(), KeyStorage::default());
        let mut chained_one_by_one = events.clone();
        for e in &mut chained_one_by_one {
            one_by_one.chain_and_push(e, 500);
        }
        for run in events.chunks_mut(256) {
            in_runs.chain_and_push_run(run, 500);
        }
        assert_eq!(events, chained_one_by_one, "the same waits filled in");
        let (a, b) = (one_by_one.metric_snapshots(), in_runs.metric_snapshots());
        assert_eq!(a.len(), 6);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.metric, b.metric);
            assert_eq!(a.aggregate, b.aggregate, "{}", a.metric);
            assert_eq!(a.aggregate.buckets(), b.aggregate.buckets(), "{}", a.metric);
            assert_eq!(a.aggregate.count(), 1_500);
        }
        // Recorded once more without the chain, by `push_run`: the same again.
        let mut unchained = KeyStorage::default();
        for run in events.chunks(1_000) {
            unchained.push_run(run, 500);
        }
        for (a, b) in one_by_one
            .metric_snapshots()
            .iter()
            .zip(unchained.metric_snapshots())
        {
            assert_eq!(a.aggregate, b.aggregate, "{}", a.metric);
        }
        assert_eq!((in_runs.pushed, in_runs.dropped), (9_000, 8_500));
    }

    #[test]
    fn a_key_made_by_two_threads_at_once_chains_from_the_later_event() {
        let (mut first, mut second) = (KeyStorage::default(), KeyStorage::default());
        first.push(&event("A", "s", 5.0), 10);
        second.push(&event("A", "s", 7.0), 10);
        first.absorb(second, 10);
        let mut next = event("A", "s", 9.0);
        first.chain_and_push(&mut next, 10);
        assert_eq!(next.previous_timestamp, Some(7.0));
    }

    #[test]
    fn the_chain_moves_between_the_bus_and_a_first_storage_with_no_wrong_wait() {
        use std::sync::Mutex as StdMutex;
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let listen = |bus: &PerformanceEmitter| {
            let seen = seen.clone();
            bus.listen(move |e: &PerformanceContract| {
                seen.lock().unwrap().push(e.previous_timestamp)
            })
        };
        let take = |bus: &PerformanceEmitter| {
            bus.flush();
            std::mem::take(&mut *seen.lock().unwrap())
        };
        // A listener first: the bus keeps the chain.
        let bus = PerformanceEmitter::new();
        let _first = listen(&bus);
        let storage = StorageService::new(StorageConfig::default());
        storage.attach(&bus);
        bus.emit(event("A", "s", 1.0)).unwrap();
        bus.emit(event("A", "s", 2.0)).unwrap();
        assert_eq!(take(&bus), [None, Some(1.0)]);
        assert_eq!(bus.chain_len(), 1);
        // The storage first: it fills the chain, the bus keeps none; its batches too.
        let bus = PerformanceEmitter::new();
        let storage = StorageService::new(StorageConfig::default());
        storage.attach(&bus);
        let _second = listen(&bus);
        bus.emit(event("A", "s", 1.0)).unwrap();
        let mut batch = vec![
            event("A", "s", 2.0),
            event("B", "s", 2.5),
            event("A", "s", 3.0),
        ];
        bus.emit_batch(&mut batch);
        assert_eq!(take(&bus), [None, Some(1.0), None, Some(2.0)]);
        assert_eq!(bus.chain_len(), 0);
        // Detached, the bus takes the chain over from nothing: no wait measured from an
        // event it never chained.
        storage.detach();
        bus.emit(event("A", "s", 4.0)).unwrap();
        bus.emit(event("A", "s", 5.0)).unwrap();
        assert_eq!(take(&bus), [None, Some(4.0)]);
        // Attached again behind the listener: the bus goes on chaining.
        storage.attach(&bus);
        bus.emit(event("A", "s", 6.0)).unwrap();
        assert_eq!(take(&bus), [Some(5.0)]);
        assert_eq!(
            storage.snapshot(StorageKey::new("A", "s")).unwrap().events[0].previous_timestamp,
            Some(5.0)
        );
        // Attached first to a new bus, it chains from what it sees there, not from the
        // events it stored from the old one.
        storage.detach();
        let bus = PerformanceEmitter::new();
        storage.attach(&bus);
        let _third = listen(&bus);
        bus.emit(event("A", "s", 7.0)).unwrap();
        bus.emit(event("A", "s", 8.0)).unwrap();
        assert_eq!(take(&bus), [None, Some(7.0)]);
    }
}
