//! The bus: [`PerformanceEmitter`] hands every [`PerformanceContract`] to its subscribers.
//!
//! # Delivery
//!
//! [`emit`](PerformanceEmitter::emit) validates the event, fills an empty
//! `previousTimestamp` from the previous event of the same (symbol, strategy, metricType),
//! and then hands the event to every current subscriber exactly once, in subscription
//! order, before it returns. A subscriber added or removed while an emit runs takes effect
//! from the next event. Every subscriber sees every event emitted after it subscribed, in
//! emit order for each producing thread: no event is silently lost.
//!
//! There are two kinds of subscriber:
//!
//! * a [`Sink`] runs on the emitting thread and must be quick (the storage service is one);
//! * a listener from [`listen`](PerformanceEmitter::listen) gets its own queue and worker
//!   thread, so a slow callback never slows `emit`. See [`crate::listener`].
//!
//! # Cost
//!
//! The chain of previous timestamps is kept by the bus, or, while a storage service is
//! the first subscriber (as [`PerformanceService::attached`](crate::PerformanceService::attached)
//! makes it), by the storage itself, for the keys it stores: the event is then chained
//! and stored under one lock. Either way the event every subscriber sees is the same.
//! When the chain changes hands, each key's next event has no previous timestamp.
//!
//! With no subscribers, `emit` validates the event and returns: it allocates nothing and
//! takes no lock. Such an event is seen by no one, so it does not count as the previous
//! event of its series either. With tracking switched off ([`set_enabled(false)`](PerformanceEmitter::set_enabled)),
//! it costs one relaxed atomic load and the event is dropped unseen.
//!
//! # Rejection
//!
//! An invalid event is never delivered. It is counted, every sink hears of it through
//! [`Sink::on_rejected`] (so the storage can report it per key), and `emit` hands it back
//! inside [`Rejected`].
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, Sink};
//!
//! struct Count(AtomicUsize);
//! impl Sink for Count {
//!     fn on_event(&self, _: &PerformanceContract) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let bus = PerformanceEmitter::new();
//! let count = Arc::new(Count(AtomicUsize::new(0)));
//! let _id = bus.add_sink(count.clone());
//! bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 10.0)).unwrap();
//! assert!(bus.emit(PerformanceContract::new(MetricType::Tick, -1.0, 11.0)).is_err());
//! assert_eq!(count.0.load(Ordering::Relaxed), 1);
//! assert_eq!(bus.rejected(), 1);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::event::{InvalidEvent, MetricType, PerformanceContract};
use super::key::{KeyedBatch, Prehashed, StorageKey};
use super::span;
use futures::future::BoxFuture;

/// A subscriber that runs on the emitting thread. Keep it quick: every `emit` waits for it.
///
/// Both hooks default to doing nothing.
///
/// ```
/// use backtest_perf::{PerformanceContract, Sink};
///
/// struct Print;
/// impl Sink for Print {
///     fn on_event(&self, e: &PerformanceContract) {
///         println!("{} took {} ms", e.metric_type, e.duration);
///     }
/// }
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Called with every valid event.
    fn on_event(&self, _event: &PerformanceContract) {}
    /// Called with every event the bus rejected, and why.
    fn on_rejected(&self, _event: &PerformanceContract, _reason: &InvalidEvent) {}
    /// Called with operations that ran but were not timed (a sampled run leaves most
    /// ticks untimed): `count` more of `metric` for `key`, with no duration.
    fn on_untimed(&self, _key: StorageKey, _metric: MetricType, _count: u64) {}
    /// A future that completes once everything handed to this sink so far was handled,
    /// for sinks that hand events on to work of their own (a listener's queue);
    /// [`PerformanceEmitter::flush_async`] waits for it. `None`: handled on arrival.
    fn drained(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        None
    }
    /// The bus is gone: no event will come again (a listener ends its worker).
    fn on_bus_dropped(&self) {}
    /// Events this sink accepted and has not handled yet, for sinks with a queue (a
    /// listener); `None` for those that handle on arrival.
    fn queue_depth(&self) -> Option<usize> {
        None
    }
    /// Called with a run of valid events from [`PerformanceEmitter::emit_batch`], in order.
    /// The default hands them to [`on_event`](Sink::on_event) one by one; override it to
    /// take a lock once per batch.
    fn on_batch(&self, events: &[PerformanceContract]) {
        for event in events {
            self.on_event(event);
        }
    }
    /// Called with the batch instead of [`on_batch`](Sink::on_batch), its events grouped by
    /// key: a sink with state per key overrides it to take each key's lock once however
    /// the keys interleave. The default hands the events to `on_batch`, in order.
    fn on_keyed_batch(&self, batch: &KeyedBatch<'_>) {
        self.on_batch(batch.events());
    }
}

/// An event the bus rejected, handed back with the reason.
///
/// ```
/// # use backtest_perf::{InvalidEvent, MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// let err = bus.emit(PerformanceContract::new(MetricType::Tick, f64::NAN, 1.0)).unwrap_err();
/// assert!(matches!(err.reason, InvalidEvent::NonFiniteDuration(_)));
/// assert_eq!(
///     err.to_string(),
///     "rejected tick event for global:global: duration is NaN; it must be a finite number of milliseconds"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("rejected {} event for {}: {reason}", event.metric_type, StorageKey::of(event))]
pub struct Rejected {
    /// The event, unchanged.
    pub event: PerformanceContract,
    /// Why it was rejected.
    pub reason: InvalidEvent,
}

/// Identifies one subscriber of one emitter, for [`PerformanceEmitter::remove`].
///
/// ```
/// use std::sync::Arc;
/// struct Nothing;
/// impl backtest_perf::Sink for Nothing {}
/// let bus = backtest_perf::PerformanceEmitter::new();
/// let (a, b) = (bus.add_sink(Arc::new(Nothing)), bus.add_sink(Arc::new(Nothing)));
/// assert_ne!(a, b);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

/// Every subscriber is a sink: listeners are sinks that queue events for a worker.
type Subscriber = Arc<dyn Sink>;

/// A sink that keeps the `previousTimestamp` chain of the keys it stores (the storage):
/// while it is the bus's first subscriber, it fills each event's previous timestamp and
/// takes the event in under one lock, and the bus keeps no chain of its own. That saves
/// `emit` a lock and its release (about 14 of 56 ns with storage alone).
pub(crate) trait Chaining: Send + Sync {
    /// Fills `event`'s empty previous timestamp from the last of its key and type (as
    /// [`fill_previous`] does), records it as the last, and takes the event in.
    fn chain_event(&self, event: &mut PerformanceContract);
    /// [`chain_event`](Self::chain_event) for a batch, one lock per key.
    fn chain_batch(&self, events: &mut [PerformanceContract], grouping: &KeyedBatch<'_>);
    /// [`chain_batch`](Self::chain_batch) for a batch of one key that no other subscriber
    /// reads: the sink may keep the buffer itself, and leaves `events` empty, with a
    /// buffer of at least its capacity.
    fn keep_batch(&self, events: &mut Vec<PerformanceContract>, key: StorageKey);
    /// An empty buffer of at least `capacity` events whose pages are in memory, if the
    /// sink kept one (for the engine's next run).
    fn take_buffer(&self, _capacity: usize) -> Option<Vec<PerformanceContract>> {
        None
    }
    /// Takes back a buffer the engine is done with, to hand out again.
    fn give_buffer(&self, _buffer: Vec<PerformanceContract>) {}
}

/// A sink that can keep the engine's buffer itself, as the last subscriber: the events
/// it takes, without a copy.
pub(crate) trait Keeping: Send + Sync {
    /// Takes `events` as [`Sink::on_batch`] would, keeping their buffer: leaves `events`
    /// empty, with a buffer of at least its capacity.
    fn keep_buffer(&self, events: &mut Vec<PerformanceContract>);
}

/// The current subscribers, in order, the first one if it keeps the chain, and the last
/// one if it keeps buffers.
pub(crate) struct Subscribers {
    list: Vec<(SubscriberId, Subscriber)>,
    chainer: Option<Arc<dyn Chaining>>,
    keeper: Option<Arc<dyn Keeping>>,
}

impl std::ops::Deref for Subscribers {
    type Target = [(SubscriberId, Subscriber)];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl Subscribers {
    /// Those that get each event after the chain is filled: all but a chaining first one.
    #[inline]
    fn after_chain(&self) -> &[(SubscriberId, Subscriber)] {
        match self.chainer {
            Some(_) => self.list.get(1..).unwrap_or_default(),
            None => &self.list,
        }
    }
}

/// The subscribers that can keep the chain, and those that can keep buffers.
#[derive(Default)]
struct Roles {
    chainers: Vec<(SubscriberId, Arc<dyn Chaining>)>,
    keepers: Vec<(SubscriberId, Arc<dyn Keeping>)>,
}

/// What a new subscriber can do besides taking events.
enum Role {
    Plain,
    Chaining(Arc<dyn Chaining>),
    // Only the span export keeps buffers.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    Keeping(Arc<dyn Keeping>),
}

const SERIES_SHARDS: usize = 16;

/// Keys whose `previousTimestamp` chain the bus keeps, per shard of 16. Past it a shard
/// starts over (the next event of each of its keys gets no previous timestamp): the
/// chain stays bounded even with no storage attached. An attached storage also makes
/// the bus forget a key's chain when it clears or evicts the key.
pub const CHAIN_KEYS_PER_SHARD: usize = 1024;

/// The last timestamp of each metric type of one key.
type Chain = Vec<(MetricType, f64)>;
type SeriesMap = HashMap<StorageKey, Chain, Prehashed>;

fn series_shard(key: &StorageKey) -> usize {
    (key.prehash() >> 60) as usize % SERIES_SHARDS
}

/// Events of a batch grouped by key at once (and handed to each sink at once).
const GROUPED_AT_ONCE: usize = 4096;

/// The last timestamp of each metric type in a batch: the built-in types (the engine's
/// events, nearly all) in an array, custom ones in a short list.
#[derive(Default)]
struct Latest {
    built_in: [Option<f64>; 5],
    custom: Vec<(MetricType, f64)>,
}

impl Latest {
    /// Records `timestamp` as the last of `metric` and returns the one before it: from
    /// this batch, or else what `before` finds.
    #[inline]
    fn replace(
        &mut self,
        metric: MetricType,
        timestamp: f64,
        before: impl FnOnce() -> Option<f64>,
    ) -> Option<f64> {
        match metric.built_in_index() {
            Some(i) => match self.built_in[i].replace(timestamp) {
                Some(previous) => Some(previous),
                None => before(),
            },
            None => match self.custom.iter_mut().find(|(m, _)| *m == metric) {
                Some((_, last)) => Some(std::mem::replace(last, timestamp)),
                None => {
                    self.custom.push((metric, timestamp));
                    before()
                }
            },
        }
    }

    fn into_iter(self) -> impl Iterator<Item = (MetricType, f64)> {
        MetricType::BUILT_IN
            .into_iter()
            .zip(self.built_in)
            .filter_map(|(metric, last)| Some((metric, last?)))
            .chain(self.custom)
    }
}

/// Records `timestamp` as the last of (`key`, `metric`) and returns the one before.
#[inline]
fn chain_step(
    map: &mut SeriesMap,
    key: StorageKey,
    metric: MetricType,
    timestamp: f64,
) -> Option<f64> {
    if !map.contains_key(&key) && map.len() >= CHAIN_KEYS_PER_SHARD {
        map.clear();
    }
    let chain = map.entry(key).or_default();
    match chain.iter_mut().find(|(m, _)| *m == metric) {
        Some((_, last)) => Some(std::mem::replace(last, timestamp)),
        None => {
            chain.push((metric, timestamp));
            None
        }
    }
}

pub(crate) struct EmitterInner {
    enabled: AtomicBool,
    subscriber_count: AtomicUsize,
    subscribers: ArcSwap<Subscribers>,
    /// Unique among the process's buses: names the bus a thread's cached list is of.
    bus_id: u64,
    /// Raised after each change of `subscribers`: a thread's cached list is current while
    /// its generation is.
    generation: AtomicU64,
    /// Serializes subscribe and unsubscribe, and holds the subscribers that can keep the
    /// chain or buffers; emit never takes it.
    edit: Mutex<Roles>,
    next_id: AtomicU64,
    rejected: AtomicU64,
    listener_failures: AtomicU64,
    series: [Mutex<SeriesMap>; SERIES_SHARDS],
}

/// Fills an empty `previousTimestamp` from the series' last timestamp. A last timestamp
/// later than this one (clock stepped back, or producers on several threads racing) would
/// give a negative wait: it is left empty instead.
#[inline]
pub(crate) fn fill_previous(event: &mut PerformanceContract, last: Option<f64>) {
    if event.previous_timestamp.is_none() {
        event.previous_timestamp = last.filter(|&previous| previous <= event.timestamp);
    }
}

/// Bus ids: a thread's cached subscriber list names its bus by one, never reused.
static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's copy of the subscriber list of the bus it emitted on last: (bus id,
    /// generation, list). Checking it takes two plain loads; `ArcSwap::load` takes two
    /// locked instructions an event, each of which waits until the thread's earlier
    /// stores (the event just copied into a window or a queue) reached the cache.
    static SUBSCRIBERS: std::cell::RefCell<Option<(u64, u64, Arc<Subscribers>)>> =
        const { std::cell::RefCell::new(None) };
}

impl EmitterInner {
    /// Calls `f` with the current subscribers, from this thread's cached copy while it
    /// is current. The copy is only borrowed, never moved out and back: moving it wrote
    /// the cell on every event, and `perf annotate` put two fifths of `deliver`'s own
    /// samples on the next event's read of it (the share of the whole `emit` this saved
    /// was not measured apart from the `memcpy` fix below). A sink that emits on another
    /// bus from inside `f` finds the copy borrowed and loads that bus's list itself.
    #[inline]
    fn with_subscribers<R>(&self, f: impl FnOnce(&Subscribers) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let hit = SUBSCRIBERS.try_with(|cache| {
            let cached = cache.try_borrow().ok()?;
            let (bus, g, list) = cached.as_ref()?;
            if *bus != self.bus_id || *g != generation {
                return None;
            }
            let f = f.take()?;
            Some(f(list))
        });
        if let Ok(Some(result)) = hit {
            return result;
        }
        match f {
            Some(f) => self.with_loaded_subscribers(generation, f),
            None => unreachable!("`f` is taken only on a hit, which returned"),
        }
    }

    /// [`with_subscribers`](Self::with_subscribers) when this thread's copy is not
    /// current: loads the list, and caches it when the cell is free.
    #[cold]
    #[inline(never)]
    fn with_loaded_subscribers<R>(&self, generation: u64, f: impl FnOnce(&Subscribers) -> R) -> R {
        let list = self.subscribers.load_full();
        let result = f(&list);
        let _ = SUBSCRIBERS.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                *cache = Some((self.bus_id, generation, list));
            }
        });
        result
    }
}

impl Drop for EmitterInner {
    /// Listeners of a bus that is gone can never receive anything: end their workers.
    fn drop(&mut self) {
        // This thread's copy of the list goes with the bus (other threads' go when they
        // next emit, or end).
        let _ = SUBSCRIBERS.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut()
                && cache
                    .as_ref()
                    .is_some_and(|(bus, _, _)| *bus == self.bus_id)
            {
                *cache = None;
            }
        });
        for (_, subscriber) in self.subscribers.load().iter() {
            subscriber.on_bus_dropped();
        }
    }
}

/// The performance bus. Cheap to clone: clones share one bus.
///
/// See the [module documentation](self) for the delivery contract.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// let same_bus = bus.clone();
/// assert!(same_bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).is_ok());
/// ```
#[derive(Clone)]
pub struct PerformanceEmitter {
    pub(crate) inner: Arc<EmitterInner>,
}

impl Default for PerformanceEmitter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PerformanceEmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceEmitter")
            .field("enabled", &self.is_enabled())
            .field("subscribers", &self.subscriber_count())
            .field("rejected", &self.rejected())
            .finish()
    }
}

impl PerformanceEmitter {
    /// A new, independent bus with no subscribers, tracking on.
    ///
    /// ```
    /// # use backtest_perf::PerformanceEmitter;
    /// let bus = PerformanceEmitter::new();
    /// assert_eq!(bus.subscriber_count(), 0);
    /// assert!(bus.is_enabled());
    /// ```
    pub fn new() -> Self {
        PerformanceEmitter {
            inner: Arc::new(EmitterInner {
                enabled: AtomicBool::new(true),
                subscriber_count: AtomicUsize::new(0),
                subscribers: ArcSwap::from_pointee(Subscribers {
                    list: Vec::new(),
                    chainer: None,
                    keeper: None,
                }),
                bus_id: NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed),
                generation: AtomicU64::new(0),
                edit: Mutex::new(Roles::default()),
                next_id: AtomicU64::new(1),
                rejected: AtomicU64::new(0),
                listener_failures: AtomicU64::new(0),
                series: std::array::from_fn(|_| Mutex::new(SeriesMap::default())),
            }),
        }
    }

    /// Whether tracking is on. Hooks check this before they time anything.
    ///
    /// ```
    /// # use backtest_perf::PerformanceEmitter;
    /// let bus = PerformanceEmitter::new();
    /// bus.set_enabled(false);
    /// assert!(!bus.is_enabled());
    /// ```
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// Switches tracking on or off. While off, `emit` drops events unseen.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// bus.set_enabled(false);
    /// // Dropped unseen, even an invalid event: tracking is off.
    /// assert!(bus.emit(PerformanceContract::new(MetricType::Tick, -1.0, 1.0)).is_ok());
    /// assert_eq!(bus.rejected(), 0);
    /// ```
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Hands `event` to every subscriber; see the [module documentation](self).
    ///
    /// Returns the event inside [`Rejected`] when it breaks the contract.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// assert!(bus.emit(PerformanceContract::new(MetricType::Tick, 2.0, 5.0)).is_ok());
    /// ```
    // `Rejected` hands the event back by value, as tokio's `SendError<T>` does; the error
    // path is cold, and boxing it would allocate on every rejection.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn emit(&self, event: PerformanceContract) -> Result<(), Rejected> {
        let inner = &*self.inner;
        if !inner.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        if inner.subscriber_count.load(Ordering::Acquire) == 0 {
            return event
                .validate()
                .map_err(|reason| self.reject(event, reason, &[]));
        }
        self.deliver(event)
    }

    /// [`emit`](Self::emit) for an event this crate measured itself with the process
    /// clock (a span's close): valid by construction, so not validated again.
    #[cfg(feature = "tracing-layer")]
    #[inline]
    pub(crate) fn emit_measured(&self, mut event: PerformanceContract) {
        let inner = &*self.inner;
        if !inner.enabled.load(Ordering::Relaxed)
            || inner.subscriber_count.load(Ordering::Acquire) == 0
        {
            return;
        }
        debug_assert!(event.validate().is_ok());
        inner.with_subscribers(|subscribers| self.chain_and_deliver(&mut event, subscribers));
    }

    #[allow(clippy::result_large_err)]
    #[inline(never)]
    fn deliver(&self, mut event: PerformanceContract) -> Result<(), Rejected> {
        // The closure hands a rejection out through `rejected`, not as its result: a
        // `Result<(), Rejected>` (144 bytes) returned through `with_subscribers` was
        // copied twice with `memcpy` on every event, valid or not, about a sixth of
        // `emit`.
        let mut rejected = None;
        self.inner.with_subscribers(|subscribers| {
            if !event.is_valid()
                && let Err(reason) = event.validate()
            {
                rejected = Some(self.reject(event, reason, subscribers));
                return;
            }
            self.chain_and_deliver(&mut event, subscribers);
        });
        match rejected {
            None => Ok(()),
            Some(rejected) => Err(rejected),
        }
    }

    /// Fills the event's previous timestamp (the first subscriber does, if it keeps the
    /// chain) and hands it to every subscriber.
    #[inline]
    fn chain_and_deliver(&self, event: &mut PerformanceContract, subscribers: &Subscribers) {
        match &subscribers.chainer {
            Some(chainer) => chainer.chain_event(event),
            None => self.chain(event),
        }
        for (_, subscriber) in subscribers.after_chain() {
            subscriber.on_event(event);
        }
    }

    /// Emits many events at once: the same contract as calling [`emit`](Self::emit) for
    /// each in order, but locks are taken once per series, per storage key and per
    /// listener instead of once per event. Invalid events are rejected (and counted) one
    /// by one; the valid ones are delivered. Events are chained (`previousTimestamp`) in
    /// order within the batch. Returns how many events were delivered.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// let mut events: Vec<_> = (0..3)
    ///     .map(|i| PerformanceContract::new(MetricType::Tick, 1.0, i as f64 * 10.0).with_symbol("A"))
    ///     .collect();
    /// events.push(PerformanceContract::new(MetricType::Tick, -1.0, 40.0));
    /// assert_eq!(bus.emit_batch(&mut events), 3);
    /// assert_eq!(bus.rejected(), 1);
    /// let data = service.get_data("A", "");
    /// assert_eq!(data.metric_stats[&MetricType::Tick].avg_wait_time, 10.0);
    /// ```
    pub fn emit_batch(&self, events: &mut Vec<PerformanceContract>) -> usize {
        let inner = &*self.inner;
        if !inner.enabled.load(Ordering::Relaxed) || events.is_empty() {
            events.clear();
            return 0;
        }
        self.inner.with_subscribers(|subscribers| {
            if !events.iter().all(PerformanceContract::is_valid) {
                events.retain(|event| match event.validate() {
                    Ok(()) => true,
                    Err(reason) => {
                        self.reject(*event, reason, subscribers);
                        false
                    }
                });
            }
            self.deliver_batch(events, subscribers, KeyedBatch::grouping)
        })
    }

    /// [`emit_batch`](Self::emit_batch) for events measured by this crate's own timers,
    /// valid by construction (durations and timestamps from the process clock, self times
    /// at most their durations, ids from [`span::next_id`]): validation is skipped, and
    /// checked in debug builds. `events` is left empty; its buffer may be exchanged for
    /// another of at least its capacity, already in memory: with the storage as the only
    /// subscriber, the storage keeps the events in the buffer they came in; with a span
    /// export as the last one, the export does, after the others saw them.
    pub(crate) fn emit_measured_batch(&self, events: &mut Vec<PerformanceContract>) -> usize {
        if !self.inner.enabled.load(Ordering::Relaxed) || events.is_empty() {
            events.clear();
            return 0;
        }
        debug_assert!(events.iter().all(|e| e.validate().is_ok()));
        self.inner.with_subscribers(|subscribers| {
            // The storage alone: it keeps the engine's buffer instead of copying it.
            if let (Some(chainer), [_], Some(first)) =
                (&subscribers.chainer, &**subscribers, events.first())
                && events.len() <= GROUPED_AT_ONCE
            {
                let delivered = events.len();
                chainer.keep_batch(events, StorageKey::of(first));
                events.clear();
                return delivered;
            }
            // A last subscriber that keeps buffers (the span export) takes the buffer
            // itself once the others (the storage first) have theirs: one copy an event
            // fewer. The year with Prometheus and an OTLP-JSON file: 1.20-1.21x tracking
            // alone instead of 1.28-1.30x.
            if let Some(keeper) = &subscribers.keeper
                && let Some((_, others)) = subscribers.after_chain().split_last()
                && events.len() <= GROUPED_AT_ONCE
            {
                let delivered = events.len();
                let grouping = KeyedBatch::one_key(events);
                self.chain_and_hand(events, grouping, subscribers, others);
                keeper.keep_buffer(events);
                events.clear();
                return delivered;
            }
            self.deliver_batch(events, subscribers, KeyedBatch::one_key)
        })
    }

    fn deliver_batch(
        &self,
        events: &mut Vec<PerformanceContract>,
        subscribers: &Subscribers,
        group: fn(&[PerformanceContract]) -> KeyedBatch<'static>,
    ) -> usize {
        if subscribers.is_empty() || events.is_empty() {
            events.clear();
            return 0;
        }
        // Grouped a slice at a time: the grouping's indexes take 16 bytes per event, so a
        // huge batch does not double its memory.
        for slice in events.chunks_mut(GROUPED_AT_ONCE) {
            let grouping = group(slice);
            self.chain_and_hand(slice, grouping, subscribers, subscribers.after_chain());
        }
        let delivered = events.len();
        events.clear();
        delivered
    }

    /// Chains a grouped batch (the chaining first subscriber, or else the bus) and hands
    /// it to `to`, in order.
    fn chain_and_hand(
        &self,
        events: &mut [PerformanceContract],
        grouping: KeyedBatch<'static>,
        subscribers: &Subscribers,
        to: &[(SubscriberId, Subscriber)],
    ) {
        match &subscribers.chainer {
            Some(chainer) => chainer.chain_batch(events, &grouping),
            None => self.chain_batch(events, &grouping),
        }
        let batch = grouping.with_events(events);
        for (_, subscriber) in to {
            subscriber.on_keyed_batch(&batch);
        }
    }

    /// [`chain`](Self::chain) for a batch: one lock per key.
    fn chain_batch(&self, events: &mut [PerformanceContract], grouping: &KeyedBatch<'_>) {
        for (key, members) in grouping.indexes() {
            let mut map = self.inner.series[series_shard(&key)].lock();
            let mut latest = Latest::default();
            for i in members {
                let event = &mut events[i];
                let metric = event.metric_type;
                let previous = latest.replace(metric, event.timestamp, || {
                    // The type's first event in this batch: its last one before.
                    map.get(&key)
                        .and_then(|c| c.iter().find(|(m, _)| *m == metric))
                        .map(|(_, t)| *t)
                });
                fill_previous(event, previous);
            }
            for (metric, timestamp) in latest.into_iter() {
                chain_step(&mut map, key, metric, timestamp);
            }
        }
    }

    /// Records the event as the last of its series and fills its previous timestamp.
    fn chain(&self, event: &mut PerformanceContract) {
        let key = StorageKey::of(event);
        let last = chain_step(
            &mut self.inner.series[series_shard(&key)].lock(),
            key,
            event.metric_type,
            event.timestamp,
        );
        fill_previous(event, last);
    }

    /// Forgets the `previousTimestamp` chain of `key`, or of every key: the next event of
    /// such a key gets no previous timestamp. The storage calls this when it clears or
    /// evicts a key.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let _sub = bus.listen(|_: &PerformanceContract| {});
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A")).unwrap();
    /// assert_eq!(bus.chain_len(), 1);
    /// bus.forget_chain(None);
    /// assert_eq!(bus.chain_len(), 0);
    /// ```
    pub fn forget_chain(&self, key: Option<StorageKey>) {
        match key {
            Some(key) => {
                self.inner.series[series_shard(&key)].lock().remove(&key);
            }
            None => self.inner.series.iter().for_each(|s| s.lock().clear()),
        }
    }

    /// Keys whose `previousTimestamp` chain the bus keeps now (none while a storage is
    /// its first subscriber: the storage keeps its keys' chain then).
    ///
    /// ```
    /// assert_eq!(backtest_perf::PerformanceEmitter::new().chain_len(), 0);
    /// ```
    pub fn chain_len(&self) -> usize {
        self.inner.series.iter().map(|s| s.lock().len()).sum()
    }

    fn reject(
        &self,
        event: PerformanceContract,
        reason: InvalidEvent,
        subscribers: &[(SubscriberId, Subscriber)],
    ) -> Rejected {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        for (_, subscriber) in subscribers {
            subscriber.on_rejected(&event, &reason);
        }
        Rejected { event, reason }
    }

    /// Times `f` and puts one event of type `metric` for `symbol`:`strategy` on this bus:
    /// measured once with the process clock ([`crate::span`]), with its id, the id of the
    /// operation it ran inside (a hook, or another `time`) as its parent, and its self
    /// time. With tracking off it only runs `f`. See also [`crate::facade::time`].
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// let sum = bus.time("load-prices", "BTCUSDT", "my-strategy", || {
    ///     bus.time("parse", "BTCUSDT", "my-strategy", || (1..=3).sum::<u32>())
    /// });
    /// assert_eq!(sum, 6);
    /// let data = service.get_data("BTCUSDT", "my-strategy");
    /// let (load, parse) = (&data.metric_stats[&MetricType::custom("load-prices")], &data.metric_stats[&MetricType::custom("parse")]);
    /// assert_eq!((load.count, parse.count), (1, 1));
    /// // parse is nested in load-prices: its time is left out of load-prices' self time.
    /// assert!((load.self_duration - (load.total_duration - parse.total_duration)).abs() < 1e-9);
    /// assert_eq!(data.events[0].id, data.events[1].parent_id, "newest first: load-prices, then parse");
    /// ```
    pub fn time<R>(
        &self,
        metric: impl Into<MetricType>,
        symbol: &str,
        strategy: &str,
        f: impl FnOnce() -> R,
    ) -> R {
        self.time_with(metric, symbol, strategy, |_| true, f)
    }

    /// [`time`](Self::time) for code that can fail: an `Err` makes the event `ok: false`.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// let parsed: Result<u32, _> = bus.time_result("parse", "A", "s", || "x".parse::<u32>());
    /// assert!(parsed.is_err());
    /// assert_eq!(service.get_data("A", "s").events[0].ok, Some(false));
    /// ```
    pub fn time_result<T, E>(
        &self,
        metric: impl Into<MetricType>,
        symbol: &str,
        strategy: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.time_with(metric, symbol, strategy, Result::is_ok, f)
    }

    fn time_with<R>(
        &self,
        metric: impl Into<MetricType>,
        symbol: &str,
        strategy: &str,
        ok: impl FnOnce(&R) -> bool,
        f: impl FnOnce() -> R,
    ) -> R {
        if !self.is_enabled() {
            return f();
        }
        if span::is_untimed() {
            self.count_untimed(symbol, strategy, metric.into(), 1);
            return f();
        }
        let open = span::enter_at(span::now_ns());
        let result = f();
        let end = span::now_ns();
        let closed = span::exit_at(open, end);
        let mut event = closed
            .event(metric.into(), end)
            .with_symbol(symbol)
            .with_strategy(strategy);
        if !ok(&result) {
            event.ok = Some(false);
        }
        // A valid measurement cannot be rejected; an invalid name is counted as rejected.
        let _ = self.emit(event);
        result
    }

    /// Times a future until it completes (not until it is created) and puts one event on
    /// this bus, like [`time`](Self::time). Its parent is the operation open on the
    /// calling thread when the future was made; its time is left out of that parent's
    /// self time if it completes on the parent's thread while the parent is open.
    /// Operations nested inside the future are not subtracted from its own self time.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// let answer = futures::executor::block_on(bus.time_async("fetch", "A", "s", async { 42 }));
    /// assert_eq!(answer, 42);
    /// assert_eq!(service.get_data("A", "s").metric_stats[&MetricType::custom("fetch")].count, 1);
    /// ```
    pub async fn time_async<F: std::future::Future>(
        &self,
        metric: impl Into<MetricType>,
        symbol: &str,
        strategy: &str,
        future: F,
    ) -> F::Output {
        if !self.is_enabled() {
            return future.await;
        }
        let (metric, parent, id, start) = (
            metric.into(),
            span::current(),
            span::next_id(),
            span::now_ns(),
        );
        let output = future.await;
        let end = span::now_ns();
        let closed = span::close_detached(id, parent, start, end);
        let event = closed
            .event(metric, end)
            .with_symbol(symbol)
            .with_strategy(strategy);
        let _ = self.emit(event);
        output
    }

    /// An empty buffer of at least `capacity` events, its pages in memory, kept by the
    /// storage (the chain's keeper) from a window or run gone: for the engine's run.
    pub(crate) fn take_buffer(&self, capacity: usize) -> Option<Vec<PerformanceContract>> {
        let chainer = self.inner.subscribers.load().chainer.clone()?;
        chainer.take_buffer(capacity)
    }

    /// Hands a buffer the engine is done with to the storage, to keep for the next run.
    pub(crate) fn give_buffer(&self, buffer: Vec<PerformanceContract>) {
        if let Some(chainer) = self.inner.subscribers.load().chainer.clone() {
            chainer.give_buffer(buffer);
        }
    }

    /// Counts `count` operations of `metric` for `symbol`:`strategy` that ran but were
    /// not timed (sampling), so counts stay exact. Sinks hear of it through
    /// [`Sink::on_untimed`]; listeners get events only.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A")).unwrap();
    /// bus.count_untimed("A", "", MetricType::Tick, 31);
    /// let tick = &service.get_data("A", "").metric_stats[&MetricType::Tick];
    /// assert_eq!((tick.count, tick.untimed, tick.avg_duration), (32, 31, 1.0));
    /// ```
    pub fn count_untimed(&self, symbol: &str, strategy: &str, metric: MetricType, count: u64) {
        if count == 0 || !self.is_enabled() {
            return;
        }
        let key = StorageKey::new(symbol, strategy);
        for (_, subscriber) in self.inner.subscribers.load().iter() {
            subscriber.on_untimed(key, metric, count);
        }
    }

    /// Adds a sink that runs on the emitting thread; returns its id for [`remove`](Self::remove).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use backtest_perf::{PerformanceContract, PerformanceEmitter, Sink};
    /// struct Nothing;
    /// impl Sink for Nothing {}
    /// let bus = PerformanceEmitter::new();
    /// let id = bus.add_sink(Arc::new(Nothing));
    /// assert_eq!(bus.subscriber_count(), 1);
    /// assert!(bus.remove(id));
    /// assert_eq!(bus.subscriber_count(), 0);
    /// ```
    pub fn add_sink(&self, sink: Arc<dyn Sink>) -> SubscriberId {
        self.add(sink)
    }

    pub(crate) fn add(&self, subscriber: Subscriber) -> SubscriberId {
        self.add_subscriber(subscriber, Role::Plain)
    }

    /// Adds a sink that can keep the engine's buffers: while it is the last subscriber,
    /// it takes them instead of copying their events (see [`Keeping`]).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn add_keeping(
        &self,
        subscriber: Subscriber,
        keeping: Arc<dyn Keeping>,
    ) -> SubscriberId {
        self.add_subscriber(subscriber, Role::Keeping(keeping))
    }

    /// Adds a sink that keeps the chain of the keys it stores: while it is the first
    /// subscriber, it fills the previous timestamps (see [`Chaining`]).
    pub(crate) fn add_chaining(
        &self,
        subscriber: Subscriber,
        chaining: Arc<dyn Chaining>,
    ) -> SubscriberId {
        self.add_subscriber(subscriber, Role::Chaining(chaining))
    }

    fn add_subscriber(&self, subscriber: Subscriber, role: Role) -> SubscriberId {
        let mut edit = self.inner.edit.lock();
        let id = SubscriberId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        match role {
            Role::Plain => {}
            Role::Chaining(chaining) => edit.chainers.push((id, chaining)),
            Role::Keeping(keeping) => edit.keepers.push((id, keeping)),
        }
        let mut next = self.inner.subscribers.load().list.clone();
        next.push((id, subscriber));
        self.publish(next, &edit);
        id
    }

    /// Makes `list` the subscribers (the caller holds the edit lock). When the chain
    /// moves between the bus and a first subscriber that keeps it, the bus's own chain
    /// is forgotten: it is either unused from now on, or missed the events since it last
    /// was (a wait measured from it would be too long); the next event of each key then
    /// has no previous timestamp.
    fn publish(&self, list: Vec<(SubscriberId, Subscriber)>, roles: &Roles) {
        let chainer = list.first().and_then(|(first, _)| {
            roles
                .chainers
                .iter()
                .find(|(id, _)| id == first)
                .map(|(_, c)| c.clone())
        });
        let keeper = list.last().and_then(|(last, _)| {
            roles
                .keepers
                .iter()
                .find(|(id, _)| id == last)
                .map(|(_, k)| k.clone())
        });
        // The bus's own chain is unused from now on (a first subscriber keeps it), or was
        // until now (one did): either way it is forgotten.
        let forget = self.inner.subscribers.load().chainer.is_some() || chainer.is_some();
        self.inner
            .subscriber_count
            .store(list.len(), Ordering::Release);
        self.inner.subscribers.store(Arc::new(Subscribers {
            list,
            chainer,
            keeper,
        }));
        self.inner.generation.fetch_add(1, Ordering::Release);
        if forget {
            self.forget_chain(None);
        }
    }

    /// Removes a subscriber; returns whether it was there.
    ///
    /// ```
    /// let bus = backtest_perf::PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &backtest_perf::PerformanceContract| {});
    /// sub.detach();
    /// assert_eq!(bus.subscriber_count(), 1);
    /// ```
    pub fn remove(&self, id: SubscriberId) -> bool {
        let mut edit = self.inner.edit.lock();
        let current = self.inner.subscribers.load();
        if !current.iter().any(|(i, _)| *i == id) {
            return false;
        }
        let next: Vec<_> = current.iter().filter(|(i, _)| *i != id).cloned().collect();
        edit.chainers.retain(|(i, _)| *i != id);
        edit.keepers.retain(|(i, _)| *i != id);
        self.publish(next, &edit);
        true
    }

    /// Number of current subscribers, sinks and listeners.
    ///
    /// ```
    /// let bus = backtest_perf::PerformanceEmitter::new();
    /// assert_eq!(bus.subscriber_count(), 0);
    /// ```
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscriber_count.load(Ordering::Acquire)
    }

    /// Number of events rejected as invalid since the bus was made.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let _ = bus.emit(PerformanceContract::new(MetricType::Tick, f64::NAN, 1.0));
    /// assert_eq!(bus.rejected(), 1);
    /// ```
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// The queue depth of every listener of this bus: events accepted and not yet
    /// handled (what the resource monitor samples).
    ///
    /// ```
    /// let bus = backtest_perf::PerformanceEmitter::new();
    /// let _sub = bus.listen(|_: &backtest_perf::PerformanceContract| {});
    /// assert_eq!(bus.queue_depths(), [0]);
    /// ```
    pub fn queue_depths(&self) -> Vec<usize> {
        self.inner
            .subscribers
            .load()
            .iter()
            .filter_map(|(_, s)| s.queue_depth())
            .collect()
    }

    /// Number of listener calls that panicked or returned an error, over all listeners.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| Err::<(), _>("disk full"));
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// bus.flush();
    /// assert_eq!(bus.listener_failures(), 1);
    /// # drop(sub);
    /// ```
    pub fn listener_failures(&self) -> u64 {
        self.inner.listener_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn count_listener_failure(&self) {
        self.inner.listener_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Blocks until every listener has handled every event queued before this call.
    ///
    /// Do not call it from inside a listener of the same bus: that listener would wait
    /// for itself.
    ///
    /// ```
    /// # use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// let _sub = bus.listen(move |_: &PerformanceContract| { s.fetch_add(1, Ordering::SeqCst); });
    /// for i in 0..100 {
    ///     bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, i as f64)).unwrap();
    /// }
    /// bus.flush();
    /// assert_eq!(seen.load(Ordering::SeqCst), 100);
    /// ```
    pub fn flush(&self) {
        futures::executor::block_on(self.flush_async());
    }

    /// Waits, without blocking a thread, until every listener has handled every event
    /// queued before this call.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| {});
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// bus.flush_async().await;
    /// assert_eq!(sub.handled(), 1);
    /// # });
    /// ```
    pub async fn flush_async(&self) {
        let drains: Vec<BoxFuture<'static, ()>> = self
            .inner
            .subscribers
            .load()
            .iter()
            .filter_map(|(_, s)| Arc::clone(s).drained())
            .collect();
        for drained in drains {
            drained.await;
        }
    }

    pub(crate) fn downgrade(&self) -> Weak<EmitterInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn from_inner(inner: Arc<EmitterInner>) -> Self {
        PerformanceEmitter { inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Collect(Mutex<Vec<PerformanceContract>>, AtomicUsize);
    impl Sink for Collect {
        fn on_event(&self, event: &PerformanceContract) {
            self.0.lock().push(*event);
        }
        fn on_rejected(&self, _: &PerformanceContract, _: &InvalidEvent) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tick(timestamp: f64) -> PerformanceContract {
        PerformanceContract::new(MetricType::Tick, 1.0, timestamp)
            .with_symbol("BTCUSDT")
            .with_strategy("s")
    }

    #[test]
    fn a_subscriber_added_on_another_thread_gets_this_threads_next_event() {
        let bus = PerformanceEmitter::new();
        let first = Arc::new(Collect::default());
        bus.add_sink(first.clone());
        bus.emit(tick(1.0)).unwrap(); // this thread now holds a copy of the list
        let second = Arc::new(Collect::default());
        std::thread::scope(|s| {
            s.spawn(|| bus.add_sink(second.clone()));
        });
        bus.emit(tick(2.0)).unwrap();
        let mut batch = vec![tick(3.0)];
        bus.emit_batch(&mut batch);
        let seen = |c: &Collect| c.0.lock().iter().map(|e| e.timestamp).collect::<Vec<_>>();
        assert_eq!(seen(&first), [1.0, 2.0, 3.0]);
        assert_eq!(seen(&second), [2.0, 3.0]);
        std::thread::scope(|s| {
            s.spawn(|| bus.remove(SubscriberId(1)));
        });
        bus.emit(tick(4.0)).unwrap();
        assert_eq!(seen(&first), [1.0, 2.0, 3.0], "removed on another thread");
        assert_eq!(seen(&second), [2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_last_subscriber_that_keeps_buffers_takes_the_measured_batch_after_the_others() {
        /// Keeps the buffers it is given; copies what it is handed otherwise.
        #[derive(Default)]
        struct Keep(Mutex<Vec<Vec<PerformanceContract>>>);
        impl Sink for Keep {
            fn on_batch(&self, events: &[PerformanceContract]) {
                self.0.lock().push(events.to_vec());
            }
        }
        impl Keeping for Keep {
            fn keep_buffer(&self, events: &mut Vec<PerformanceContract>) {
                let capacity = events.capacity();
                self.0
                    .lock()
                    .push(std::mem::replace(events, Vec::with_capacity(capacity)));
            }
        }
        let bus = PerformanceEmitter::new();
        let service = crate::PerformanceService::attached(&bus);
        let before = Arc::new(Collect::default());
        bus.add_sink(before.clone());
        let keep = Arc::new(Keep::default());
        bus.add_keeping(keep.clone(), keep.clone());
        let batch = |from: u32| -> Vec<PerformanceContract> {
            let mut buffer = Vec::with_capacity(1_088);
            buffer.extend((from..from + 1_024).map(|t| tick(f64::from(t))));
            buffer
        };
        let mut first = batch(0);
        let own = first.as_ptr();
        assert_eq!(bus.emit_measured_batch(&mut first), 1_024);
        assert!(first.is_empty() && first.capacity() >= 1_088);
        // Kept: the buffer itself, chained as everyone saw it.
        assert_eq!(keep.0.lock()[0].as_ptr(), own);
        assert_eq!(keep.0.lock()[0][1].previous_timestamp, Some(0.0));
        assert_eq!(before.0.lock().len(), 1_024);
        let key = StorageKey::new("BTCUSDT", "s");
        let stored = service.storage().snapshot(key).expect("stored");
        assert_eq!(stored.metrics[0].aggregate.count(), 1_024);
        // Not the last any more: it gets a copy, and the caller keeps its buffer.
        let after = Arc::new(Collect::default());
        let after_id = bus.add_sink(after.clone());
        let mut second = batch(1_024);
        let own = second.as_ptr();
        bus.emit_measured_batch(&mut second);
        assert_eq!(second.as_ptr(), own);
        assert_ne!(keep.0.lock()[1].as_ptr(), own);
        assert_eq!(after.0.lock().len(), 1_024);
        // The last again.
        assert!(bus.remove(after_id));
        let mut third = batch(2_048);
        let own = third.as_ptr();
        bus.emit_measured_batch(&mut third);
        assert_eq!(keep.0.lock()[2].as_ptr(), own);
        let timestamps: Vec<_> = keep
            .0
            .lock()
            .iter()
            .flatten()
            .map(|e| e.timestamp)
            .collect();
        assert_eq!(timestamps, (0..3_072u32).map(f64::from).collect::<Vec<_>>());
        assert_eq!(before.0.lock().len(), 3_072);
    }

    #[test]
    fn a_new_bus_never_delivers_to_a_dropped_bus_subscribers() {
        let old = Arc::new(Collect::default());
        for _ in 0..100 {
            let bus = PerformanceEmitter::new();
            bus.add_sink(old.clone());
            bus.emit(tick(1.0)).unwrap();
            drop(bus);
            // Perhaps at the same address, with the same generation.
            let bus = PerformanceEmitter::new();
            bus.emit(tick(2.0)).unwrap();
            let mut batch = vec![tick(3.0)];
            bus.emit_batch(&mut batch);
        }
        assert!(old.0.lock().iter().all(|e| e.timestamp == 1.0));
        assert_eq!(old.0.lock().len(), 100);
    }

    #[test]
    fn a_sink_that_emits_while_it_is_handed_an_event_is_delivered_in_turn() {
        /// Emits a `getSignal` on a second bus for every tick it gets.
        struct Relay(PerformanceEmitter);
        impl Sink for Relay {
            fn on_event(&self, event: &PerformanceContract) {
                if event.metric_type == MetricType::Tick {
                    let _ = self.0.emit(PerformanceContract {
                        metric_type: MetricType::GetSignal,
                        ..*event
                    });
                }
            }
        }
        let (outer, inner) = (PerformanceEmitter::new(), PerformanceEmitter::new());
        let relayed = Arc::new(Collect::default());
        inner.add_sink(relayed.clone());
        outer.add_sink(Arc::new(Relay(inner.clone())));
        let direct = Arc::new(Collect::default());
        outer.add_sink(direct.clone());
        for t in 1..=3 {
            outer.emit(tick(f64::from(t))).unwrap();
        }
        inner.emit(tick(9.0)).unwrap();
        assert_eq!(direct.0.lock().len(), 3);
        let relayed: Vec<_> = relayed
            .0
            .lock()
            .iter()
            .map(|e| (e.metric_type, e.timestamp))
            .collect();
        assert_eq!(
            relayed,
            [
                (MetricType::GetSignal, 1.0),
                (MetricType::GetSignal, 2.0),
                (MetricType::GetSignal, 3.0),
                (MetricType::Tick, 9.0)
            ]
        );
    }

    #[test]
    fn fills_previous_timestamp_per_series() {
        let bus = PerformanceEmitter::new();
        let sink = Arc::new(Collect::default());
        bus.add_sink(sink.clone());
        bus.emit(tick(10.0)).unwrap();
        bus.emit(tick(15.0)).unwrap();
        bus.emit(
            PerformanceContract::new(MetricType::GetCandles, 1.0, 16.0)
                .with_symbol("BTCUSDT")
                .with_strategy("s"),
        )
        .unwrap();
        bus.emit(tick(20.0).with_symbol("ETHUSDT")).unwrap();
        bus.emit(tick(21.0).with_previous_timestamp(1.0)).unwrap();
        bus.emit(tick(25.0)).unwrap();
        let got: Vec<_> = sink.0.lock().iter().map(|e| e.previous_timestamp).collect();
        assert_eq!(got, [None, Some(10.0), None, None, Some(1.0), Some(21.0)]);
    }

    #[test]
    fn the_wait_chain_stays_bounded_without_a_storage() {
        let bus = PerformanceEmitter::new();
        let sink = Arc::new(Collect::default());
        bus.add_sink(sink.clone());
        let keys = SERIES_SHARDS * CHAIN_KEYS_PER_SHARD * 2;
        for i in 0..keys {
            bus.emit(tick(1.0).with_symbol(format!("S{i}").as_str()))
                .unwrap();
        }
        assert!(
            bus.chain_len() <= SERIES_SHARDS * CHAIN_KEYS_PER_SHARD,
            "{}",
            bus.chain_len()
        );
        // A key whose chain was kept still chains.
        bus.emit(tick(2.0).with_symbol(format!("S{}", keys - 1).as_str()))
            .unwrap();
        assert_eq!(sink.0.lock().last().unwrap().previous_timestamp, Some(1.0));
    }

    #[test]
    fn an_earlier_timestamp_gets_no_previous() {
        let bus = PerformanceEmitter::new();
        let sink = Arc::new(Collect::default());
        bus.add_sink(sink.clone());
        bus.emit(tick(10.0)).unwrap();
        bus.emit(tick(5.0)).unwrap();
        bus.emit(tick(7.0)).unwrap();
        let got: Vec<_> = sink.0.lock().iter().map(|e| e.previous_timestamp).collect();
        assert_eq!(got, [None, None, Some(5.0)]);
    }

    #[test]
    fn rejected_events_reach_sinks_as_rejections_only() {
        let bus = PerformanceEmitter::new();
        let sink = Arc::new(Collect::default());
        bus.add_sink(sink.clone());
        let err = bus
            .emit(PerformanceContract::new(MetricType::Tick, -1.0, 1.0))
            .unwrap_err();
        assert_eq!(err.reason, InvalidEvent::NegativeDuration(-1.0));
        assert_eq!(sink.0.lock().len(), 0);
        assert_eq!(sink.1.load(Ordering::Relaxed), 1);
        assert_eq!(bus.rejected(), 1);
    }

    #[test]
    fn disabled_bus_drops_events_unseen() {
        let bus = PerformanceEmitter::new();
        let sink = Arc::new(Collect::default());
        bus.add_sink(sink.clone());
        bus.set_enabled(false);
        bus.emit(tick(1.0)).unwrap();
        bus.set_enabled(true);
        bus.emit(tick(2.0)).unwrap();
        assert_eq!(sink.0.lock().len(), 1);
    }

    #[test]
    fn sinks_run_in_subscription_order_and_removal_stops_delivery() {
        struct Tag(&'static str, Arc<Mutex<Vec<&'static str>>>);
        impl Sink for Tag {
            fn on_event(&self, _: &PerformanceContract) {
                self.1.lock().push(self.0);
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let bus = PerformanceEmitter::new();
        let a = bus.add_sink(Arc::new(Tag("a", log.clone())));
        bus.add_sink(Arc::new(Tag("b", log.clone())));
        bus.emit(tick(1.0)).unwrap();
        assert!(bus.remove(a));
        assert!(!bus.remove(a));
        bus.emit(tick(2.0)).unwrap();
        assert_eq!(*log.lock(), ["a", "b", "b"]);
    }
}
