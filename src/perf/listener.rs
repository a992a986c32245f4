//! Listeners: user callbacks that receive bus events on a queue of their own.
//!
//! # Contract
//!
//! * **Off the emitting thread.** Each listener has an unbounded queue and one worker
//!   thread. `emit` only copies the event into the queue, so a slow listener never slows
//!   the engine. The queue depth is observable ([`Subscription::queue_depth`]). The queue
//!   of an unbounded listener is a lane per producing thread, which takes an event
//!   without a lock; a bounded one is a single queue under a lock.
//! * **Strictly sequential, in order.** The worker calls the callback for one event at a
//!   time, in emit order (per producing thread); for an async callback the next call
//!   starts only after the previous future completed. Async callbacks run on a
//!   single-threaded tokio runtime owned by the worker, so tokio timers and I/O work there.
//! * **Failures are contained.** A callback that panics or returns `Err` is counted
//!   ([`Subscription::failed`], [`PerformanceEmitter::listener_failures`]) and logged with
//!   `tracing`; delivery goes on with the next event and other listeners never notice.
//! * **Draining.** [`Subscription::flush`] (or [`PerformanceEmitter::flush`]) waits until
//!   every event queued before the call was handled; `flush_async` does the same in async code.
//! * **Unsubscribing.** Dropping the [`Subscription`] (or calling
//!   [`unsubscribe`](Subscription::unsubscribe)) stops delivery at once: the call in
//!   progress finishes, events still queued are discarded, the worker thread ends. Call
//!   [`detach`](Subscription::detach) to keep listening for the life of the process, and
//!   flush before the process exits.
//!
//! A waiting worker wakes at least every millisecond while events flow and is woken at
//! once by a large backlog or a flush, so producers never pay for a wake-up on the hot path.
//! After 100 ms without events it sleeps until a producer wakes it; a producer that
//! reads the worker's state without a lock can, rarely, miss that it just fell asleep,
//! so a sleeping worker with lanes also looks again by itself every 50 ms.
//!
//! ```
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
//!
//! let bus = PerformanceEmitter::new();
//! let sub = bus.listen_async(|event: PerformanceContract| async move {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!     println!("{} {}", event.metric_type, event.duration);
//! });
//! bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
//! sub.flush();
//! assert_eq!(sub.handled(), 1);
//! ```

use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::{Condvar, Mutex};

use super::emitter::{EmitterInner, PerformanceEmitter, Sink, SubscriberId};
use super::event::{PerformanceContract, prefetch_slot};
use super::lane::{self, Consumer, Lanes, Targets};

/// What a listener callback may return: `()` or `Result<(), E>` with a displayable error.
///
/// ```
/// use backtest_perf::ListenerOutcome;
/// assert_eq!(().into_outcome(), Ok(()));
/// assert_eq!(Err::<(), _>("boom").into_outcome(), Err("boom".to_string()));
/// ```
pub trait ListenerOutcome {
    /// `Ok` for success, or the error text.
    fn into_outcome(self) -> Result<(), String>;
}

impl ListenerOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> ListenerOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

type Filter = Box<dyn Fn(&PerformanceContract) -> bool + Send + Sync>;

/// What a bounded listener does when its queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// The emitting thread waits until the worker took the queue: nothing is lost, and a
    /// slow callback slows the run. (A callback that emits on the same bus would wait on
    /// itself; its own events are dropped and counted instead.)
    Block,
    /// The oldest queued events are dropped and counted ([`Subscription::dropped`]): the
    /// run never waits.
    DropOldest,
}

/// A bound on a listener's queue: at most `capacity` events wait for its worker, which
/// works on at most `capacity` more that it took at once (so a listener holds at most
/// twice `capacity` events).
///
/// ```
/// use backtest_perf::{QueueBound, WhenFull};
/// let bound = QueueBound { capacity: 10_000, when_full: WhenFull::DropOldest };
/// assert_eq!(bound.capacity, 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBound {
    /// Events that may wait (at least 1).
    pub capacity: usize,
    /// What happens to the next event when they are waiting.
    pub when_full: WhenFull,
}

thread_local! {
    /// The listener whose worker this thread is, if any: a bounded listener never blocks
    /// its own worker.
    static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

type Outcome = Result<(), String>;

pub(crate) enum Callback {
    Sync(Box<dyn FnMut(&PerformanceContract) -> Outcome + Send>),
    Async(Box<dyn FnMut(PerformanceContract) -> BoxFuture<'static, Outcome> + Send>),
}

impl Callback {
    pub(crate) fn sync<F, R>(mut f: F) -> Self
    where
        F: FnMut(&PerformanceContract) -> R + Send + 'static,
        R: ListenerOutcome,
    {
        Callback::Sync(Box::new(move |e| f(e).into_outcome()))
    }

    pub(crate) fn future<F, Fut>(mut f: F) -> Self
    where
        F: FnMut(PerformanceContract) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: ListenerOutcome,
    {
        Callback::Async(Box::new(move |e| {
            f(e).map(ListenerOutcome::into_outcome).boxed()
        }))
    }
}

/// After this many events wait in the queue, a napping worker is woken at once.
const WAKE_BACKLOG: usize = 4096;
/// After this many events wait in one lane, a napping worker is woken at once.
const LANE_WAKE_BACKLOG: u64 = lane::RING_EVENTS as u64 / 2;
/// How long a worker naps between looks at its queue while events flow.
const NAP: Duration = Duration::from_millis(1);
/// Naps with nothing to do before the worker sleeps until a producer wakes it.
const NAPS_BEFORE_SLEEP: u32 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Worker {
    Busy,
    Napping,
    Asleep,
}

/// How long a sleeping worker of a listener with lanes sleeps before it looks again by
/// itself. A producer reads the worker's state without a lock, so in a rare race it
/// misses that the worker just fell asleep; this bounds how late such events can be.
const LANE_SLEEP: Duration = Duration::from_millis(50);

struct Queue {
    events: Vec<PerformanceContract>,
    enqueued: u64,
    worker: Worker,
    /// A flush waits: hand over whatever is queued at once.
    flush_requested: bool,
}

/// Fields are grouped by who writes them, each group on its own cache line: the emitting
/// thread must not miss the cache on every event because the worker wrote a counter.
pub(crate) struct ListenerShared {
    queue: CachePadded<Mutex<Queue>>,
    wake: Condvar,
    closed: AtomicBool,
    filter: Option<Filter>,
    once: bool,
    fired: AtomicBool,
    bound: Option<QueueBound>,
    /// Events dropped by a full [`WhenFull::DropOldest`] queue.
    dropped: AtomicU64,
    /// Signalled when the worker took the queue: a blocked emitter may go on.
    space: Condvar,
    /// Written by the worker after every event.
    handled: CachePadded<AtomicU64>,
    failed: AtomicU64,
    flush_waiters: CachePadded<AtomicUsize>,
    drained: tokio::sync::Notify,
    emitter: Weak<EmitterInner>,
    id: Mutex<Option<SubscriberId>>,
    /// An unbounded listener's lanes, one per producing thread (see [`super::lane`]);
    /// a bounded one queues under the lock.
    lanes: Option<Arc<Lanes>>,
    /// Names this listener's lanes in the producing threads.
    lane_id: u64,
    /// `queue.worker`, readable without the lock (written under it).
    worker_state: CachePadded<AtomicU8>,
    /// Events taken from `queue` and handled (those from lanes are counted per lane).
    queue_handled: AtomicU64,
}

/// A listener is a sink that queues what it is handed for its worker thread.
impl Sink for ListenerShared {
    #[inline]
    fn on_event(&self, event: &PerformanceContract) {
        self.offer(event);
    }

    fn on_batch(&self, events: &[PerformanceContract]) {
        self.offer_batch(events);
    }

    fn drained(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(async move { self.flush_async().await }))
    }

    fn on_bus_dropped(&self) {
        self.close();
    }

    fn queue_depth(&self) -> Option<usize> {
        Some(self.depth())
    }
}

impl ListenerShared {
    /// Called on the emitting thread: queue the event, waking the worker only if needed.
    #[inline]
    pub(crate) fn offer(&self, event: &PerformanceContract) {
        if let Some(filter) = &self.filter {
            // A filter runs on the emitting thread: a panic in it is contained like a
            // callback's (counted, logged) and the event does not pass, so the
            // subscribers after this one still get it.
            match catch_unwind(AssertUnwindSafe(|| filter(event))) {
                Ok(true) => {}
                Ok(false) => return,
                Err(payload) => {
                    self.count_failure(&format!("filter {}", panic_text(payload)));
                    return;
                }
            }
        }
        if self.once && self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        self.enqueue(std::slice::from_ref(event));
    }

    /// Adds to the queue under its lock, then wakes the worker only if it sleeps, or naps
    /// with a large backlog. A bounded queue first makes room as its bound says.
    #[inline]
    fn enqueue(&self, events: &[PerformanceContract]) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(lanes) = &self.lanes
            && let Some(backlog) = lane::push(self.lane_id, lanes, events)
        {
            let wake = match self.worker_state.load(Ordering::Relaxed) {
                state if state == Worker::Busy as u8 => false,
                // A lane holds more than a queue's backlog: a napping worker is woken
                // once its ring is half full, not every 4,096 events (a wake is a
                // system call on this thread).
                state if state == Worker::Napping as u8 => backlog >= LANE_WAKE_BACKLOG,
                _ => true,
            };
            if wake {
                self.wake_worker();
            }
            return;
        }
        self.enqueue_locked(events);
    }

    /// Wakes a napping or sleeping worker.
    #[cold]
    #[inline(never)]
    fn wake_worker(&self) {
        self.wake_if_idle(&mut self.queue.lock());
    }

    /// Under the queue's lock: wakes the worker unless it is busy.
    fn wake_if_idle(&self, queue: &mut Queue) {
        if queue.worker != Worker::Busy {
            self.set_worker(queue, Worker::Busy);
            self.wake.notify_one();
        }
    }

    /// Records the worker's state (under the queue's lock), also where producers with
    /// lanes read it without the lock.
    fn set_worker(&self, queue: &mut Queue, worker: Worker) {
        queue.worker = worker;
        self.worker_state.store(worker as u8, Ordering::SeqCst);
    }

    /// [`enqueue`](Self::enqueue) under the queue's lock: a bounded listener's events,
    /// and those of a thread whose lanes cannot be reached.
    fn enqueue_locked(&self, events: &[PerformanceContract]) {
        let mut queue = self.queue.lock();
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut events = events;
        if let Some(bound) = self.bound {
            let capacity = bound.capacity.max(1);
            let own_worker = WORKER_OF.with(|w| w.get()) == self as *const Self as usize;
            if bound.when_full == WhenFull::Block && !own_worker {
                while queue.events.len() + events.len() > capacity
                    && !queue.events.is_empty()
                    && !self.closed.load(Ordering::Relaxed)
                {
                    queue.flush_requested = true;
                    self.wake_if_idle(&mut queue);
                    self.space.wait(&mut queue);
                }
                if self.closed.load(Ordering::Relaxed) {
                    return;
                }
            } else {
                let excess = (queue.events.len() + events.len()).saturating_sub(capacity);
                if excess > 0 {
                    let from_queue = excess.min(queue.events.len());
                    queue.events.drain(..from_queue);
                    // A batch larger than the bound keeps its newest events.
                    let from_batch = (excess - from_queue).min(events.len());
                    events = &events[from_batch..];
                    // What left the queue had been counted as enqueued: count it dropped
                    // so that a flush's target is still reached.
                    queue.enqueued += from_batch as u64;
                    self.dropped.fetch_add(excess as u64, Ordering::SeqCst);
                }
            }
        }
        queue.events.extend_from_slice(events);
        // The next slot was last read by the worker, on another core.
        prefetch_slot(queue.events.as_ptr_range().end);
        queue.enqueued += events.len() as u64;
        let wake = match queue.worker {
            Worker::Busy => false,
            Worker::Napping => queue.events.len() >= WAKE_BACKLOG,
            Worker::Asleep => true,
        };
        if wake {
            self.set_worker(&mut queue, Worker::Busy);
            drop(queue);
            self.wake.notify_one();
        }
    }

    /// [`offer`](Self::offer) for a batch: one lock for all of it.
    pub(crate) fn offer_batch(&self, events: &[PerformanceContract]) {
        if self.filter.is_some() || self.once {
            for event in events {
                self.offer(event);
            }
            return;
        }
        self.enqueue(events);
    }

    pub(crate) fn close(&self) {
        let mut queue = self.queue.lock();
        self.closed.store(true, Ordering::SeqCst);
        queue.events = Vec::new();
        drop(queue);
        if let Some(lanes) = &self.lanes {
            lanes.close();
        }
        self.wake.notify_one();
        self.space.notify_all();
        self.drained.notify_waiters();
    }

    /// Whether a flush that found `target` events enqueued may return. A closed listener
    /// has nothing more to do. A once-listener that fired is done only when closed: its
    /// worker counts the event, then closes, so a flush that returns sees both (checking
    /// the count alone let a flush return before the close, and the close alone before
    /// the count, which once failed a doc test under load).
    fn is_drained(&self, queued: u64, lanes: Option<&Targets>) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return true;
        }
        if self.once && self.fired.load(Ordering::SeqCst) {
            return false;
        }
        self.queue_handled.load(Ordering::SeqCst) + self.dropped.load(Ordering::SeqCst) >= queued
            && lanes.is_none_or(Targets::reached)
    }

    pub(crate) async fn flush_async(&self) {
        let lanes = self.lanes.as_ref().map(|lanes| lanes.targets());
        let target = {
            let mut queue = self.queue.lock();
            queue.flush_requested = true;
            self.wake_if_idle(&mut queue);
            queue.enqueued
        };
        self.flush_waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            let mut notified = pin!(self.drained.notified());
            notified.as_mut().enable();
            if self.is_drained(target, lanes.as_ref()) {
                break;
            }
            notified.await;
        }
        self.flush_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Events accepted and not yet handled: waiting in the queue or in the worker's batch.
    fn depth(&self) -> usize {
        if self.closed.load(Ordering::SeqCst) {
            return 0; // what was still queued was discarded
        }
        let enqueued = self.queue.lock().enqueued;
        let done = self.queue_handled.load(Ordering::SeqCst) + self.dropped.load(Ordering::SeqCst);
        let in_lanes = self.lanes.as_ref().map_or(0, |lanes| lanes.depth());
        usize::try_from(enqueued.saturating_sub(done).saturating_add(in_lanes))
            .unwrap_or(usize::MAX)
    }

    /// Events waiting in the worker's lanes, after picking up lanes opened since.
    fn lane_backlog(&self, lanes: &mut Vec<Consumer>, seen: &mut usize) -> u64 {
        match &self.lanes {
            Some(all) => {
                all.pick_up(lanes, seen);
                lanes.iter().map(Consumer::waiting).sum()
            }
            None => 0,
        }
    }

    /// Takes the next batch into `batch`; `false` once the listener is closed.
    ///
    /// A small batch is taken only after one nap, so that the worker does not take the
    /// queue's lock (and steal its cache line from the producer) for every few events.
    fn next_batch(
        &self,
        batch: &mut Vec<PerformanceContract>,
        lanes: &mut Vec<Consumer>,
        seen: &mut usize,
    ) -> bool {
        let mut queue = self.queue.lock();
        let mut naps = 0;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            let in_lanes = self.lane_backlog(lanes, seen);
            let waiting = (queue.events.len() as u64).saturating_add(in_lanes);
            let ready = waiting >= WAKE_BACKLOG as u64 || queue.flush_requested || naps > 0;
            if ready && in_lanes > 0 && queue.events.is_empty() {
                self.set_worker(&mut queue, Worker::Busy);
                queue.flush_requested = false;
                return true;
            }
            if ready && !queue.events.is_empty() {
                // The emptied batch goes back to the producers: give it the capacity of the
                // queue it replaces, so that a lagging listener's two buffers settle at one
                // size instead of the emitting thread growing (and page-faulting) a small
                // one on every swap. Done here, on the worker.
                let capacity = queue.events.capacity();
                if batch.capacity() < capacity {
                    batch.reserve_exact(capacity - batch.len());
                }
                std::mem::swap(&mut queue.events, batch);
                self.set_worker(&mut queue, Worker::Busy);
                queue.flush_requested = false;
                if self.bound.is_some() {
                    self.space.notify_all();
                }
                return true;
            }
            if naps < NAPS_BEFORE_SLEEP {
                self.set_worker(&mut queue, Worker::Napping);
                self.wake.wait_for(&mut queue, NAP);
            } else {
                self.set_worker(&mut queue, Worker::Asleep);
                if self.lanes.is_none() {
                    self.wake.wait(&mut queue);
                } else if self.lane_backlog(lanes, seen) == 0 {
                    // Looked again after saying so: a producer that pushed before it
                    // could see the worker asleep is found here, or within LANE_SLEEP.
                    self.wake.wait_for(&mut queue, LANE_SLEEP);
                }
            }
            naps += 1;
        }
    }

    fn count_failure(&self, why: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(emitter) = self.emitter.upgrade() {
            PerformanceEmitter::from_inner(emitter).count_listener_failure();
        }
        tracing::warn!(target: "backtest_perf::listener", "performance listener failed: {why}");
    }

    fn remove_from_bus(&self) {
        let id = *self.id.lock();
        if let (Some(id), Some(emitter)) = (id, self.emitter.upgrade()) {
            PerformanceEmitter::from_inner(emitter).remove(id);
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => format!("panicked: {s}"),
        Err(payload) => match payload.downcast::<&str>() {
            Ok(s) => format!("panicked: {s}"),
            Err(_) => "panicked".to_string(),
        },
    }
}

fn run_worker(shared: Arc<ListenerShared>, mut callback: Callback) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared) as usize));
    let mut runtime = None;
    let mut batch = Vec::new();
    let mut lanes = Vec::new();
    let mut seen = 0;
    while shared.next_batch(&mut batch, &mut lanes, &mut seen) {
        for lane in &mut lanes {
            lane.drain(|event| shared.handle(&mut callback, &mut runtime, event));
        }
        for event in batch.drain(..) {
            if !shared.handle(&mut callback, &mut runtime, &event) {
                break;
            }
            shared.queue_handled.fetch_add(1, Ordering::SeqCst);
        }
        // Once a batch, not once an event: a flush waits for whole batches anyway, and
        // waking it takes a lock.
        if shared.flush_waiters.load(Ordering::SeqCst) > 0 {
            shared.drained.notify_waiters();
        }
        batch.clear();
    }
    shared.drained.notify_waiters();
}

type Runtime = Option<std::io::Result<tokio::runtime::Runtime>>;

impl ListenerShared {
    /// Calls the callback with one event and counts it; `false` (and no call) once the
    /// listener is closed.
    fn handle(
        &self,
        callback: &mut Callback,
        runtime: &mut Runtime,
        event: &PerformanceContract,
    ) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let outcome = match callback {
            Callback::Sync(f) => {
                catch_unwind(AssertUnwindSafe(|| f(event))).unwrap_or_else(|p| Err(panic_text(p)))
            }
            Callback::Async(f) => match catch_unwind(AssertUnwindSafe(|| f(*event))) {
                Err(p) => Err(panic_text(p)),
                Ok(future) => {
                    let rt = runtime.get_or_insert_with(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                    });
                    match rt {
                        Ok(rt) => rt
                            .block_on(AssertUnwindSafe(future).catch_unwind())
                            .unwrap_or_else(|p| Err(panic_text(p))),
                        Err(e) => Err(format!("could not start a tokio runtime: {e}")),
                    }
                }
            },
        };
        if let Err(why) = outcome {
            self.count_failure(&why);
        }
        if self.once {
            // Off the bus, then counted, then closed: a flush of a once-listener that
            // fired returns only when it is closed (see `is_drained`), and by then the
            // count and the callback's effects are visible.
            self.remove_from_bus();
            self.handled.fetch_add(1, Ordering::SeqCst);
            self.close();
            return true;
        }
        // Only the worker writes the count: a load and a store do, where an atomic add was
        // a locked instruction an event on the worker's core.
        let handled = self.handled.load(Ordering::Relaxed);
        self.handled
            .store(handled.saturating_add(1), Ordering::Release);
        true
    }
}

pub(crate) fn subscribe(
    emitter: &PerformanceEmitter,
    filter: Option<Filter>,
    once: bool,
    callback: Callback,
) -> Subscription {
    subscribe_bounded(emitter, filter, once, None, callback)
}

pub(crate) fn subscribe_bounded(
    emitter: &PerformanceEmitter,
    filter: Option<Filter>,
    once: bool,
    bound: Option<QueueBound>,
    callback: Callback,
) -> Subscription {
    let shared = Arc::new(ListenerShared {
        queue: CachePadded::new(Mutex::new(Queue {
            events: Vec::new(),
            enqueued: 0,
            worker: Worker::Busy,
            flush_requested: false,
        })),
        wake: Condvar::new(),
        closed: AtomicBool::new(false),
        filter,
        once,
        fired: AtomicBool::new(false),
        bound,
        dropped: AtomicU64::new(0),
        space: Condvar::new(),
        handled: CachePadded::new(AtomicU64::new(0)),
        failed: AtomicU64::new(0),
        flush_waiters: CachePadded::new(AtomicUsize::new(0)),
        drained: tokio::sync::Notify::new(),
        emitter: emitter.downgrade(),
        id: Mutex::new(None),
        lanes: bound.is_none().then(Arc::default),
        lane_id: lane::next_listener_id(),
        worker_state: CachePadded::new(AtomicU8::new(Worker::Busy as u8)),
        queue_handled: AtomicU64::new(0),
    });
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("perf-listener".into())
        .spawn(move || run_worker(worker, callback));
    if let Err(e) = spawned {
        // Without a worker nothing could ever be delivered: say so, and stay closed.
        tracing::error!(target: "backtest_perf::listener", "could not start a listener thread: {e}");
        shared.closed.store(true, Ordering::SeqCst);
    }
    let id = emitter.add_sink(shared.clone());
    *shared.id.lock() = Some(id);
    Subscription {
        shared,
        emitter: emitter.clone(),
        id,
    }
}

/// A listener's handle. As in backtest-kit, a listener keeps listening when its handle
/// is dropped (`listen_performance(cb);` as a statement listens for the life of the
/// process, or until its bus is dropped); [`unsubscribe`](Self::unsubscribe) stops it, and
/// [`guard`](Self::guard) gives a handle that unsubscribes when dropped, for scoped use.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// let sub = bus.listen(|_: &PerformanceContract| {});
/// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
/// sub.flush();
/// assert_eq!((sub.handled(), sub.failed(), sub.queue_depth(), sub.is_active()), (1, 0, 0, true));
/// ```
pub struct Subscription {
    shared: Arc<ListenerShared>,
    emitter: PerformanceEmitter,
    id: SubscriberId,
}

/// A [`Subscription`] that unsubscribes when dropped: for a listener that must not
/// outlive a scope (a test, a request). Dereferences to the subscription.
///
/// ```
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
/// let bus = PerformanceEmitter::new();
/// {
///     let sub = bus.listen(|_: &PerformanceContract| {}).guard();
///     bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
///     sub.flush();
///     assert_eq!(sub.handled(), 1);
///     assert_eq!(bus.subscriber_count(), 1);
/// }
/// assert_eq!(bus.subscriber_count(), 0, "gone with its scope");
/// ```
#[must_use = "a ListenerGuard unsubscribes when dropped: bind it to a variable for the scope"]
#[derive(Debug)]
pub struct ListenerGuard(Option<Subscription>);

impl std::ops::Deref for ListenerGuard {
    type Target = Subscription;
    fn deref(&self) -> &Subscription {
        // Always Some until drop takes it.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(subscription) = self.0.take() {
            subscription.unsubscribe();
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("handled", &self.handled())
            .field("failed", &self.failed())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl Subscription {
    /// Stops delivery now; queued events are discarded.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| {});
    /// assert_eq!(bus.subscriber_count(), 1);
    /// sub.unsubscribe();
    /// assert_eq!(bus.subscriber_count(), 0);
    /// ```
    pub fn unsubscribe(self) {
        self.emitter.remove(self.id);
        self.shared.close();
    }

    /// A handle that unsubscribes when dropped; see [`ListenerGuard`].
    pub fn guard(self) -> ListenerGuard {
        ListenerGuard(Some(self))
    }

    /// Lets the handle go and the listener listen on, for the life of the process (or
    /// until the bus is dropped): what dropping the handle does too, said explicitly.
    ///
    /// ```
    /// # use backtest_perf::{PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// bus.listen(|_: &PerformanceContract| {}).detach();
    /// let _ = bus.listen(|_: &PerformanceContract| {});
    /// assert_eq!(bus.subscriber_count(), 2);
    /// ```
    pub fn detach(self) {}

    /// Blocks until this listener handled every event queued before the call.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| std::thread::sleep(std::time::Duration::from_millis(1)));
    /// for i in 0..5 {
    ///     bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, i as f64)).unwrap();
    /// }
    /// sub.flush();
    /// assert_eq!(sub.handled(), 5);
    /// ```
    pub fn flush(&self) {
        futures::executor::block_on(self.shared.flush_async());
    }

    /// Waits until this listener handled every event queued before the call.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| {});
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// sub.flush_async().await;
    /// assert_eq!(sub.handled(), 1);
    /// # });
    /// ```
    pub async fn flush_async(&self) {
        self.shared.flush_async().await
    }

    /// Events handled so far, failed calls included.
    ///
    /// ```
    /// let sub = backtest_perf::PerformanceEmitter::new().listen(|_: &backtest_perf::PerformanceContract| {});
    /// assert_eq!(sub.handled(), 0);
    /// ```
    pub fn handled(&self) -> u64 {
        self.shared.handled.load(Ordering::SeqCst)
    }

    /// Calls that panicked or returned an error.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|_: &PerformanceContract| Err::<(), _>("no disk"));
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// sub.flush();
    /// assert_eq!(sub.failed(), 1);
    /// ```
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Events accepted and not yet handled; 0 once the listener closed.
    ///
    /// ```
    /// let sub = backtest_perf::PerformanceEmitter::new().listen(|_: &backtest_perf::PerformanceContract| {});
    /// assert_eq!(sub.queue_depth(), 0);
    /// ```
    pub fn queue_depth(&self) -> usize {
        self.shared.depth()
    }

    /// Events a full [`WhenFull::DropOldest`] queue dropped (always 0 for an unbounded
    /// listener).
    ///
    /// ```
    /// let sub = backtest_perf::PerformanceEmitter::new().listen(|_: &backtest_perf::PerformanceContract| {});
    /// assert_eq!(sub.dropped(), 0);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Whether the listener still receives events (a once-listener closes after its event).
    ///
    /// ```
    /// let sub = backtest_perf::PerformanceEmitter::new().listen(|_: &backtest_perf::PerformanceContract| {});
    /// assert!(sub.is_active());
    /// ```
    pub fn is_active(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst)
    }
}

impl PerformanceEmitter {
    /// Subscribes a plain callback; it returns `()` or `Result<(), E>`.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen(|e: &PerformanceContract| println!("{}", e.duration));
    /// # drop(sub);
    /// ```
    pub fn listen<F, R>(&self, callback: F) -> Subscription
    where
        F: FnMut(&PerformanceContract) -> R + Send + 'static,
        R: ListenerOutcome,
    {
        subscribe(self, None, false, Callback::sync(callback))
    }

    /// [`listen`](Self::listen) with a bounded queue: at most `bound.capacity` events
    /// wait for the callback, and `bound.when_full` says what happens past that: the
    /// emitting thread waits ([`WhenFull::Block`]), or the oldest waiting events are
    /// dropped and counted ([`WhenFull::DropOldest`], see [`Subscription::dropped`]).
    /// [`listen`](Self::listen)'s queue is unbounded: a blocked callback holds every
    /// event emitted meanwhile ([`Subscription::queue_depth`] shows how many).
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, QueueBound, WhenFull};
    /// let bus = PerformanceEmitter::new();
    /// let (gate, wait) = std::sync::mpsc::channel::<()>();
    /// let bound = QueueBound { capacity: 2, when_full: WhenFull::DropOldest };
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let sub = bus.listen_bounded(bound, move |e: &PerformanceContract| {
    ///     let _ = wait.recv(); // held until the test lets it go
    ///     log.lock().unwrap().push(e.duration);
    /// });
    /// for ms in 1..=5 {
    ///     bus.emit(PerformanceContract::new(MetricType::Tick, f64::from(ms), 1.0)).unwrap();
    /// }
    /// for _ in 0..5 { gate.send(()).unwrap(); }
    /// sub.flush();
    /// // Which events the worker took before the queue filled depends on timing; the
    /// // accounting does not: every event was handled or dropped, and the last two arrived.
    /// assert_eq!(sub.handled() + sub.dropped(), 5);
    /// assert_eq!(seen.lock().unwrap().iter().rev().take(2).copied().collect::<Vec<_>>(), [5.0, 4.0]);
    /// ```
    pub fn listen_bounded<F, R>(&self, bound: QueueBound, callback: F) -> Subscription
    where
        F: FnMut(&PerformanceContract) -> R + Send + 'static,
        R: ListenerOutcome,
    {
        subscribe_bounded(self, None, false, Some(bound), Callback::sync(callback))
    }

    /// Subscribes an async callback; each future completes before the next call starts.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let sub = bus.listen_async(|e: PerformanceContract| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///     assert_eq!(e.duration, 1.0);
    /// });
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// sub.flush();
    /// assert_eq!((sub.handled(), sub.failed()), (1, 0));
    /// ```
    pub fn listen_async<F, Fut>(&self, callback: F) -> Subscription
    where
        F: FnMut(PerformanceContract) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: ListenerOutcome,
    {
        subscribe(self, None, false, Callback::future(callback))
    }

    /// Subscribes a callback that only sees events passing `filter`. The filter runs on
    /// the emitting thread, so keep it cheap.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let slow = bus.listen_filtered(|e| e.duration > 50.0, |e: &PerformanceContract| {
    ///     eprintln!("slow {}: {} ms", e.metric_type, e.duration);
    /// });
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 1.0, 1.0)).unwrap();
    /// bus.emit(PerformanceContract::new(MetricType::Tick, 80.0, 2.0)).unwrap();
    /// slow.flush();
    /// assert_eq!(slow.handled(), 1);
    /// ```
    pub fn listen_filtered<P, F, R>(&self, filter: P, callback: F) -> Subscription
    where
        P: Fn(&PerformanceContract) -> bool + Send + Sync + 'static,
        F: FnMut(&PerformanceContract) -> R + Send + 'static,
        R: ListenerOutcome,
    {
        subscribe(
            self,
            Some(Box::new(filter)),
            false,
            Callback::sync(callback),
        )
    }

    /// Delivers the first event that passes `filter`, then unsubscribes.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
    /// let bus = PerformanceEmitter::new();
    /// let first = bus.listen_once(|e| e.metric_type == MetricType::Backtest, |e: &PerformanceContract| {
    ///     println!("first replay took {} ms", e.duration);
    /// });
    /// for _ in 0..3 {
    ///     bus.emit(PerformanceContract::new(MetricType::Backtest, 1.0, 1.0)).unwrap();
    /// }
    /// first.flush();
    /// assert_eq!(first.handled(), 1);
    /// assert!(!first.is_active());
    /// ```
    pub fn listen_once<P, F, R>(&self, filter: P, callback: F) -> Subscription
    where
        P: Fn(&PerformanceContract) -> bool + Send + Sync + 'static,
        F: FnOnce(&PerformanceContract) -> R + Send + 'static,
        R: ListenerOutcome,
    {
        let mut callback = Some(callback);
        let call = move |e: &PerformanceContract| match callback.take() {
            Some(f) => f(e).into_outcome(),
            None => Ok(()),
        };
        subscribe(self, Some(Box::new(filter)), true, Callback::sync(call))
    }
}
