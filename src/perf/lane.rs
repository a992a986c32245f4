//! Lanes: one producing thread's queue to one listener, a single-producer,
//! single-consumer ring ([`rtrb`]).
//!
//! An event goes into its thread's lane with plain stores and one release store. No
//! locked instruction is on that path, and that is the point: on x86 a locked instruction
//! (taking or releasing a lock) waits until every earlier store reached the cache, and an
//! event copied into a queue slot that the worker last read on the other core takes a
//! while to get there. In a throwaway simulation (a locked store per event, then the
//! queue), a locked queue added 11 ns an event and a ring 2-3; `emit` with storage and a
//! listener went from a median of 66-69 to 49 ns. Producers on several threads never
//! share a lock or a cache line either.
//!
//! Order: the worker takes each lane's events in order, so one thread's events reach the
//! callback in emit order, which is what the listener contract promises; nothing orders
//! two threads' events, as before.
//!
//! A lane never refuses an event (listeners are unbounded): past the ring's
//! [`RING_EVENTS`], events wait in the lane's overflow list, and every later event of
//! that lane joins them there until the worker took the list, so the order holds.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::event::PerformanceContract;

/// Events a lane's ring holds: 2 MB of address space (128-byte events), of which a page
/// takes memory only once an event was written there; about what the locked queue's two
/// buffers grew to while its worker napped. Past it, events wait in the overflow list.
pub(crate) const RING_EVENTS: usize = 16_384;

/// Listener ids for lanes: unique in the process, never reused.
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(1);

/// A new listener's lane id.
pub(crate) fn next_listener_id() -> u64 {
    NEXT_LISTENER.fetch_add(1, Ordering::Relaxed)
}

/// What a lane's producer and the worker share, besides the ring.
struct LaneState {
    /// Events pushed into the lane, ring and overflow, ever. Written by the producer.
    pushed: CachePadded<AtomicU64>,
    /// Events the worker took from the lane and handled (or discarded on close), ever.
    taken: CachePadded<AtomicU64>,
    /// Set (under `overflow`'s lock) by the producer when the ring was full, cleared by
    /// the worker when it takes the list: while set, every event of the lane goes to the
    /// list, after everything in the ring.
    overflowing: AtomicBool,
    overflow: Mutex<Vec<PerformanceContract>>,
    /// The listener closed: the producer's end is dropped the next time its thread
    /// opens a lane.
    closed: AtomicBool,
    /// The producer's end was dropped, not pooled (the listener closed or is gone): once
    /// empty, the lane is retired.
    producer_gone: AtomicBool,
}

impl LaneState {
    fn waiting(&self) -> u64 {
        self.pushed
            .load(Ordering::SeqCst)
            .saturating_sub(self.taken.load(Ordering::SeqCst))
    }
}

/// A listener's lanes, as the producers open them.
#[derive(Default)]
pub(crate) struct Lanes {
    /// Lanes opened that the worker has not picked up yet.
    new: Mutex<Vec<Consumer>>,
    /// How many lanes were ever opened: the worker looks at `new` only when it changed.
    opened: AtomicUsize,
    /// Every lane not yet retired: for a flush's targets and the queue depth.
    all: Mutex<Vec<Arc<LaneState>>>,
    /// Ends of lanes whose thread ended, for the next thread that opens one: its events
    /// follow theirs in the same ring, whose memory is already in place (a new ring's
    /// pages fault in as they are first written: about 0.5 ms a thread).
    pool: Mutex<Vec<Producer>>,
}

/// What a flush waits for: each lane's count of pushed events when it was called.
pub(crate) struct Targets(Vec<(Arc<LaneState>, u64)>);

impl Targets {
    /// Whether the worker took every event counted in the targets.
    pub(crate) fn reached(&self) -> bool {
        self.0
            .iter()
            .all(|(lane, target)| lane.taken.load(Ordering::SeqCst) >= *target)
    }
}

impl Lanes {
    /// Each lane's pushed count now.
    pub(crate) fn targets(&self) -> Targets {
        Targets(
            self.all
                .lock()
                .iter()
                .map(|lane| (lane.clone(), lane.pushed.load(Ordering::SeqCst)))
                .collect(),
        )
    }

    /// Events pushed and not yet taken, over all lanes.
    pub(crate) fn depth(&self) -> u64 {
        self.all.lock().iter().map(|lane| lane.waiting()).sum()
    }

    /// The listener closed: producers drop their ends; queued events are discarded.
    pub(crate) fn close(&self) {
        for lane in self.all.lock().drain(..) {
            lane.closed.store(true, Ordering::SeqCst);
        }
        self.new.lock().clear();
        self.pool.lock().clear();
    }

    fn open(self: &Arc<Self>, listener: u64) -> Producer {
        if let Some(producer) = self.pool.lock().pop() {
            return producer;
        }
        let (ring, consumer) = rtrb::RingBuffer::new(RING_EVENTS);
        let state = Arc::new(LaneState {
            pushed: CachePadded::new(AtomicU64::new(0)),
            taken: CachePadded::new(AtomicU64::new(0)),
            overflowing: AtomicBool::new(false),
            overflow: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            producer_gone: AtomicBool::new(false),
        });
        // In `all` before its first event: a flush that should wait for that event
        // finds the lane.
        self.all.lock().push(state.clone());
        self.new.lock().push(Consumer {
            ring: consumer,
            state: state.clone(),
            taken: 0,
            spare: Vec::new(),
        });
        self.opened.fetch_add(1, Ordering::SeqCst);
        Producer {
            listener,
            ring,
            state,
            home: Arc::downgrade(self),
            pushed: 0,
            next_check: WAKE_CHECK_EVERY,
        }
    }
}

/// How often (in events pushed) a producer reads how far the worker is behind.
const WAKE_CHECK_EVERY: u64 = 2048;

/// A thread's end of its lane to one listener.
struct Producer {
    listener: u64,
    ring: rtrb::Producer<PerformanceContract>,
    state: Arc<LaneState>,
    /// Where the end goes back to when its thread ends.
    home: Weak<Lanes>,
    /// Mirror of `state.pushed`, which only this end writes.
    pushed: u64,
    /// The pushed count at which to next report the backlog.
    next_check: u64,
}

impl Producer {
    /// Pushes `events` in order; returns the lane's backlog every
    /// [`WAKE_CHECK_EVERY`] events, else 0.
    #[inline]
    fn push(&mut self, events: &[PerformanceContract]) -> u64 {
        let rest = if self.state.overflowing.load(Ordering::Relaxed) {
            events
        } else if let [event] = events {
            match self.ring.push(*event) {
                Ok(()) => &[],
                Err(_) => events,
            }
        } else {
            self.ring.push_partial_slice(events).1
        };
        if !rest.is_empty() {
            self.spill(rest);
        }
        self.pushed += events.len() as u64;
        self.state.pushed.store(self.pushed, Ordering::Release);
        if self.pushed < self.next_check {
            return 0;
        }
        self.next_check = self.pushed + WAKE_CHECK_EVERY;
        self.pushed
            .saturating_sub(self.state.taken.load(Ordering::Relaxed))
    }

    /// The ring is full, or was: into the overflow list, in order.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, mut events: &[PerformanceContract]) {
        let mut list = self.state.overflow.lock();
        if !self.state.overflowing.load(Ordering::Relaxed) {
            // The worker took the list since this end looked: the ring may have room
            // again. (Only this end sets the flag, so it stays clear meanwhile.)
            drop(list);
            events = self.ring.push_partial_slice(events).1;
            if events.is_empty() {
                return;
            }
            list = self.state.overflow.lock();
        }
        list.extend_from_slice(events);
        self.state.overflowing.store(true, Ordering::SeqCst);
    }

    /// Its thread ended: back to the listener's pool, unless the listener is gone.
    fn release(self) {
        if self.state.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(home) = self.home.upgrade() {
            home.pool.lock().push(self);
        }
    }
}

/// A thread's ends, handed back to their listeners when the thread ends.
struct Ends(Vec<Producer>);

impl Drop for Ends {
    fn drop(&mut self) {
        for producer in self.0.drain(..) {
            producer.release();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.state.producer_gone.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    /// This thread's ends of its lanes, one per listener it emitted to.
    static PRODUCERS: RefCell<Ends> = const { RefCell::new(Ends(Vec::new())) };
}

/// Pushes `events` into this thread's lane to `listener`, opening it in `lanes` on first
/// use. Returns `None` when this thread's lanes cannot be reached (its thread-locals are
/// being destroyed, or a push is under way further up this thread's stack): the caller
/// queues the events another way. Otherwise returns the backlog as [`Producer::push`].
#[inline]
pub(crate) fn push(
    listener: u64,
    lanes: &Arc<Lanes>,
    events: &[PerformanceContract],
) -> Option<u64> {
    PRODUCERS
        .try_with(|producers| {
            let mut producers = producers.try_borrow_mut().ok()?;
            if let Some(producer) = producers.0.iter_mut().find(|p| p.listener == listener) {
                return Some(producer.push(events));
            }
            Some(open_and_push(&mut producers.0, listener, lanes, events))
        })
        .ok()
        .flatten()
}

#[cold]
#[inline(never)]
fn open_and_push(
    producers: &mut Vec<Producer>,
    listener: u64,
    lanes: &Arc<Lanes>,
    events: &[PerformanceContract],
) -> u64 {
    // Ends of closed listeners go here: at most those closed since this thread last
    // opened a lane stay (a thread that ends drops them all).
    producers.retain(|p| !p.state.closed.load(Ordering::Relaxed));
    let mut producer = lanes.open(listener);
    let backlog = producer.push(events);
    producers.push(producer);
    backlog
}

/// The worker's end of a lane.
pub(crate) struct Consumer {
    ring: rtrb::Consumer<PerformanceContract>,
    state: Arc<LaneState>,
    /// Mirror of `state.taken`, which only this end writes.
    taken: u64,
    /// The overflow list's buffer, swapped in when the list is taken.
    spare: Vec<PerformanceContract>,
}

/// Events handed to the callback between two updates of a lane's taken count.
const CHUNK: usize = 256;

impl Consumer {
    /// Hands every event waiting in the lane to `handle`, in order, while it returns
    /// `true`; returns how many it was handed.
    pub(crate) fn drain(&mut self, mut handle: impl FnMut(&PerformanceContract) -> bool) -> usize {
        let mut count = 0;
        loop {
            // Read before the ring: while set, the producer writes only to the list, so
            // what the ring holds now came before everything in the list.
            let overflowing = self.state.overflowing.load(Ordering::SeqCst);
            let (handed, stopped) = self.drain_ring(&mut handle);
            count += handed;
            if stopped {
                return count;
            }
            if !overflowing {
                return count;
            }
            let mut list = self.state.overflow.lock();
            std::mem::swap(&mut *list, &mut self.spare);
            self.state.overflowing.store(false, Ordering::SeqCst);
            drop(list);
            let mut spare = std::mem::take(&mut self.spare);
            let mut handed = 0;
            let mut stopped = false;
            for event in &spare {
                handed += 1;
                if !handle(event) {
                    stopped = true;
                    break;
                }
            }
            // Discarded on a stop too: the listener closed.
            self.advance(spare.len());
            count += handed;
            spare.clear();
            self.spare = spare;
            if stopped {
                return count;
            }
        }
    }

    /// Hands the ring's events over; returns how many, and whether `handle` stopped.
    fn drain_ring(
        &mut self,
        handle: &mut impl FnMut(&PerformanceContract) -> bool,
    ) -> (usize, bool) {
        let mut count = 0;
        loop {
            let n = self.ring.slots().min(CHUNK);
            if n == 0 {
                return (count, false);
            }
            let Ok(chunk) = self.ring.read_chunk(n) else {
                return (count, false);
            };
            let (first, second) = chunk.as_slices();
            let mut stopped = false;
            for event in first.iter().chain(second) {
                count += 1;
                if !handle(event) {
                    stopped = true;
                    break;
                }
            }
            chunk.commit_all();
            self.advance(n);
            if stopped {
                return (count, true);
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.taken += n as u64;
        self.state.taken.store(self.taken, Ordering::SeqCst);
    }

    /// Events waiting in the lane.
    pub(crate) fn waiting(&self) -> u64 {
        self.state.waiting()
    }

    /// Whether the lane's thread ended and the lane is empty: it can go.
    pub(crate) fn retired(&self) -> bool {
        self.state.producer_gone.load(Ordering::SeqCst) && self.waiting() == 0
    }
}

impl Lanes {
    /// Moves lanes opened since into `lanes` (`seen`: how many the worker has), and
    /// drops those that retired.
    pub(crate) fn pick_up(&self, lanes: &mut Vec<Consumer>, seen: &mut usize) {
        let opened = self.opened.load(Ordering::SeqCst);
        if opened != *seen {
            *seen = opened;
            lanes.append(&mut self.new.lock());
        }
        if lanes.iter().any(Consumer::retired) {
            lanes.retain(|lane| !lane.retired());
            self.all
                .lock()
                .retain(|lane| !(lane.producer_gone.load(Ordering::SeqCst) && lane.waiting() == 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::event::MetricType;

    fn events(from: usize, n: usize) -> Vec<PerformanceContract> {
        (from..from + n)
            .map(|i| PerformanceContract::new(MetricType::Tick, 1.0, i as f64))
            .collect()
    }

    fn drain_all(lanes: &Lanes, consumers: &mut Vec<Consumer>, seen: &mut usize) -> Vec<f64> {
        lanes.pick_up(consumers, seen);
        let mut out = Vec::new();
        for consumer in consumers.iter_mut() {
            consumer.drain(|e| {
                out.push(e.timestamp);
                true
            });
        }
        out
    }

    #[test]
    fn a_lane_keeps_the_order_past_its_ring_and_back() {
        let lanes = Arc::new(Lanes::default());
        let id = next_listener_id();
        let (mut consumers, mut seen) = (Vec::new(), 0);
        // One event, then more than the ring holds in one batch, then single events
        // while the list is still waiting.
        assert_eq!(push(id, &lanes, &events(0, 1)), Some(0));
        push(id, &lanes, &events(1, RING_EVENTS + 10));
        for i in 0..5 {
            push(id, &lanes, &events(RING_EVENTS + 11 + i, 1));
        }
        let total = RING_EVENTS + 16;
        assert_eq!(lanes.depth(), total as u64);
        let targets = lanes.targets();
        assert!(!targets.reached());
        let got = drain_all(&lanes, &mut consumers, &mut seen);
        assert_eq!(got, (0..total).map(|i| i as f64).collect::<Vec<_>>());
        assert!(targets.reached());
        assert_eq!(lanes.depth(), 0);
        // Back on the ring once the list was taken.
        push(id, &lanes, &events(total, 3));
        assert!(!lanes.all.lock()[0].overflowing.load(Ordering::SeqCst));
        let got = drain_all(&lanes, &mut consumers, &mut seen);
        assert_eq!(got, [total as f64, total as f64 + 1.0, total as f64 + 2.0]);
    }

    #[test]
    fn a_stop_discards_the_rest_of_what_was_taken() {
        let lanes = Arc::new(Lanes::default());
        let id = next_listener_id();
        let (mut consumers, mut seen) = (Vec::new(), 0);
        push(id, &lanes, &events(0, 10));
        lanes.pick_up(&mut consumers, &mut seen);
        let mut handed = Vec::new();
        let count = consumers[0].drain(|e| {
            handed.push(e.timestamp);
            handed.len() < 4
        });
        assert_eq!((count, handed), (4, vec![0.0, 1.0, 2.0, 3.0]));
    }

    #[test]
    fn threads_get_lanes_of_their_own_and_an_ended_thread_s_lane_goes_to_the_next() {
        let lanes = Arc::new(Lanes::default());
        let id = next_listener_id();
        push(id, &lanes, &events(0, 2));
        // Joined by its handle: the thread's locals were destroyed before `join` returns
        // (a scope's automatic join does not wait for that).
        let other = lanes.clone();
        std::thread::spawn(move || push(id, &other, &events(100, 3)))
            .join()
            .unwrap();
        let (mut consumers, mut seen) = (Vec::new(), 0);
        lanes.pick_up(&mut consumers, &mut seen);
        assert_eq!((consumers.len(), lanes.pool.lock().len()), (2, 1));
        assert_eq!(lanes.depth(), 5);
        // The next thread takes the ended thread's lane: its events follow, in order.
        let other = lanes.clone();
        std::thread::spawn(move || push(id, &other, &events(200, 2)))
            .join()
            .unwrap();
        lanes.pick_up(&mut consumers, &mut seen);
        assert_eq!(
            (consumers.len(), lanes.opened.load(Ordering::SeqCst)),
            (2, 2)
        );
        let mut got = drain_all(&lanes, &mut consumers, &mut seen);
        got.sort_by(f64::total_cmp);
        assert_eq!(got, [0.0, 1.0, 100.0, 101.0, 102.0, 200.0, 201.0]);
        // A lane whose end was dropped (not pooled: the listener closed) retires once
        // empty.
        lanes.pool.lock().clear();
        lanes.pick_up(&mut consumers, &mut seen);
        assert_eq!((consumers.len(), lanes.all.lock().len()), (1, 1));
    }

    #[test]
    fn a_closed_listener_s_end_is_dropped_when_the_thread_next_opens_a_lane() {
        let lanes = Arc::new(Lanes::default());
        let (first, second) = (next_listener_id(), next_listener_id());
        push(first, &lanes, &events(0, 1));
        lanes.close();
        push(second, &lanes, &events(0, 1));
        PRODUCERS.with(|p| {
            let listeners: Vec<u64> = p.borrow().0.iter().map(|p| p.listener).collect();
            assert!(listeners.contains(&second) && !listeners.contains(&first));
        });
    }
}
