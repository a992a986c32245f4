//! One clock, one id space and one nesting stack for every producer of events.
//!
//! Every timed operation (the engine's hooks, [`crate::facade::time`] around user code,
//! the tracker's steps) is measured here once: [`now_ns`] reads the process clock (the
//! TSC through [`quanta`], about 10 ns a read here against 24 ns for `std::time::Instant`),
//! [`enter_at`] opens an operation on the calling thread's stack and [`exit_at`] closes
//! it, giving its id, its parent's id and its self time (its duration less the durations
//! of the operations closed inside it). Timestamps come from the same clock
//! ([`epoch_ms`]), so durations and wait times never mix two clocks.
//!
//! Nesting is per thread: an operation opened while another is open on the same thread is
//! its child. Closing out of order is tolerated: closing an operation also closes anything
//! still open above it.
//!
//! ```
//! use backtest_perf::span::{enter_at, exit_at};
//!
//! let outer = enter_at(1_000);
//! let inner = enter_at(1_200);
//! let closed_inner = exit_at(inner, 1_700);
//! let closed_outer = exit_at(outer, 2_000);
//! assert_eq!(closed_inner.parent, Some(closed_outer.id));
//! assert_eq!((closed_inner.duration_ns, closed_inner.self_ns), (500, 500));
//! assert_eq!((closed_outer.duration_ns, closed_outer.self_ns), (1_000, 500));
//! ```

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::event::{MAX_ID, MetricType, PerformanceContract};

struct ProcessClock {
    clock: quanta::Clock,
    /// Whether quanta counts the CPU's time-stamp counter: its calibration is not the
    /// identity (it is for a clock that counts nanoseconds), and a reading is then
    /// `rdtsc` itself, done here inline instead of through `quanta::Clock::raw`, a call
    /// that matches on the clock's kind.
    tsc: bool,
    origin: u64,
    /// Nanoseconds per raw tick, times 2^32: quanta's calibration, taken once, so that a
    /// reading converts with one multiplication and a fixed shift.
    ns_per_tick_q32: u64,
    origin_epoch_ms: f64,
}

fn process_clock() -> &'static ProcessClock {
    static CLOCK: OnceLock<ProcessClock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        // What 2^32 ticks last in ns (2^32 itself when the clock counts ns already).
        let ns_per_tick_q32 = clock.delta_as_nanos(0, 1 << 32);
        // A counter at exactly 1 GHz reads the same either way.
        let tsc = cfg!(target_arch = "x86_64") && ns_per_tick_q32 != 1 << 32;
        let origin_epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        ProcessClock {
            clock,
            tsc,
            origin,
            ns_per_tick_q32,
            origin_epoch_ms,
        }
    })
}

impl ProcessClock {
    /// A raw reading: what `quanta::Clock::raw` returns.
    #[inline(always)]
    #[allow(unsafe_code)]
    fn raw(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // SAFETY: `rdtsc` reads the time-stamp counter and touches no memory; quanta
            // reads its counter clock with this same instruction on x86-64, and `tsc`
            // says quanta chose that clock.
            return unsafe { std::arch::x86_64::_rdtsc() };
        }
        self.clock.raw()
    }

    /// `ticks` of the raw clock in ns.
    #[inline(always)]
    fn to_ns(&self, ticks: u64) -> u64 {
        // The product fits u128; the result fits u64 until 2^64 ns (584 years) have passed.
        ((u128::from(ticks) * u128::from(self.ns_per_tick_q32)) >> 32) as u64
    }
}

/// Nanoseconds since the process clock started: monotonic, shared by every producer.
///
/// ```
/// let a = backtest_perf::span::now_ns();
/// let b = backtest_perf::span::now_ns();
/// assert!(b >= a);
/// ```
#[inline]
pub fn now_ns() -> u64 {
    let clock = process_clock();
    clock.to_ns(clock.raw().saturating_sub(clock.origin))
}

/// `n` as a float, for counts and nanoseconds on the hot path: `n as f64` up to 2^63 - 1
/// (292 years of nanoseconds), which it saturates at, in one instruction where x86-64
/// converts only signed integers (`u64 as f64` takes several).
#[inline]
pub(crate) fn to_f64(n: u64) -> f64 {
    i64::try_from(n).unwrap_or(i64::MAX) as f64
}

/// Unix epoch milliseconds at `ns` of the process clock (the wall clock read once, when
/// the process clock started, plus the monotonic time since).
///
/// ```
/// use backtest_perf::span::epoch_ms;
/// assert_eq!(epoch_ms(2_000_000) - epoch_ms(0), 2.0);
/// assert!(epoch_ms(0) > 1.7e12, "a wall-clock epoch in ms");
/// ```
#[inline]
pub fn epoch_ms(ns: u64) -> f64 {
    process_clock().origin_epoch_ms + to_f64(ns) / 1e6
}

/// CPU time the calling thread has used, ns; `None` where the platform does not say
/// (Linux only here). A system call (a few hundred ns): read it only where that is
/// affordable, such as around the ticks of a `--timeline` run, to tell whether a slow
/// operation's thread ran or waited (was pre-empted).
///
/// ```
/// if let Some(a) = backtest_perf::span::thread_cpu_ns() {
///     let mut x = 0u64;
///     for i in 0..1_000_000u64 { x = x.wrapping_add(i * i); }
///     std::hint::black_box(x);
///     assert!(backtest_perf::span::thread_cpu_ns().unwrap() > a);
/// }
/// ```
pub fn thread_cpu_ns() -> Option<u64> {
    #[cfg(test)]
    CPU_READS.with(|reads| reads.set(reads.get() + 1));
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u64::try_from(t.tv_nsec).ok()?;
        Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
thread_local! {
    /// Reads of the thread's CPU time on this thread (a system call each).
    pub(crate) static CPU_READS: Cell<u64> = const { Cell::new(0) };
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_INDEX: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// A small number naming the calling thread, from 1 in the order threads first ask:
/// trace viewers draw each thread's operations on a track of its own.
///
/// ```
/// let here = backtest_perf::span::thread_index();
/// assert_eq!(here, backtest_perf::span::thread_index());
/// assert_ne!(here, std::thread::spawn(backtest_perf::span::thread_index).join().unwrap());
/// ```
pub fn thread_index() -> u64 {
    THREAD_INDEX.with(|index| *index)
}

/// Ids are handed to threads in blocks of this many, so taking one is a thread-local step.
const ID_BLOCK: u64 = 1 << 16;
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

/// A thread's ids and open operations, in one thread-local so that opening an operation
/// touches thread-local storage once.
struct ThreadState {
    /// The next id and the end of this thread's block: both 0 before the first id.
    next: u64,
    end: u64,
    stack: Vec<Frame>,
}

impl ThreadState {
    #[inline]
    fn next_id(&mut self) -> u64 {
        if self.next == self.end {
            let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) % (MAX_ID / ID_BLOCK);
            self.next = block * ID_BLOCK + 1;
            self.end = self.next + ID_BLOCK - 1;
        }
        let id = self.next;
        self.next += 1;
        id
    }
}

thread_local! {
    static STACK: RefCell<ThreadState> = const {
        RefCell::new(ThreadState { next: 0, end: 0, stack: Vec::new() })
    };
    static UNTIMED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on this thread's state, as `STACK.with` does (and, as it does, panics if the
/// thread's state is gone: a hook timed in a thread-local's destructor). Always inlined,
/// down to the thread-local's address: `with` itself was called out of line on the hot
/// path, reaching the thread-local through a function pointer.
#[inline(always)]
fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> R {
    match STACK.try_with(|state| f(&mut state.borrow_mut())) {
        Ok(r) => r,
        Err(gone) => panic!("the thread's span stack is used after it was destroyed: {gone}"),
    }
}

/// Marks this thread as inside an operation that a sampled run leaves untimed (the engine
/// does this for the ticks it does not time): [`crate::facade::time`] and the tracker
/// then count their operations without timing them, so the whole tick with everything
/// nested inside it is either timed or not.
///
/// ```
/// use backtest_perf::span::{is_untimed, set_untimed};
/// set_untimed(true);
/// assert!(is_untimed());
/// set_untimed(false);
/// assert!(!is_untimed());
/// ```
pub fn set_untimed(untimed: bool) {
    UNTIMED.with(|u| u.set(untimed));
}

/// Whether this thread is inside an untimed (not sampled) operation.
///
/// ```
/// assert!(!backtest_perf::span::is_untimed());
/// ```
#[inline]
pub fn is_untimed() -> bool {
    UNTIMED.with(Cell::get)
}

/// A new operation id, unique within the process run, from 1 up to [`MAX_ID`].
///
/// Past 2^53 ids (about 285 years at a billion a second) the space wraps to 1.
///
/// ```
/// let (a, b) = (backtest_perf::span::next_id(), backtest_perf::span::next_id());
/// assert_ne!(a, b);
/// assert!(a >= 1 && b <= backtest_perf::event::MAX_ID);
/// ```
#[inline]
pub fn next_id() -> u64 {
    with_state(ThreadState::next_id)
}

struct Frame {
    id: u64,
    children_ns: u64,
}

/// An operation opened by [`enter_at`] and not yet closed.
#[derive(Debug)]
#[must_use = "close the operation with exit_at"]
pub struct Open {
    /// Its id.
    pub id: u64,
    /// The id of the operation open around it on this thread when it started.
    pub parent: Option<u64>,
    /// When it started, ns of the clock it was measured with.
    pub start_ns: u64,
    /// How many operations were open around it on this thread.
    pub depth: u32,
}

/// A closed operation: what an event needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Its id.
    pub id: u64,
    /// Its parent's id.
    pub parent: Option<u64>,
    /// How long it took, ns.
    pub duration_ns: u64,
    /// Its duration less that of the operations closed inside it, ns.
    pub self_ns: u64,
}

impl Closed {
    /// The event of this operation, of type `metric`, ended at `end_ns` of the process
    /// clock: its duration, self time, id and parent, and the timestamp of its end. The
    /// one place a measurement becomes a [`PerformanceContract`].
    ///
    /// ```
    /// use backtest_perf::span::{enter_at, exit_at};
    /// use backtest_perf::MetricType;
    /// let outer = enter_at(0);
    /// let closed = exit_at(outer, 2_500_000);
    /// let event = closed.event(MetricType::Tick, 2_500_000);
    /// assert_eq!((event.duration, event.self_duration, event.id), (2.5, Some(2.5), Some(closed.id)));
    /// ```
    pub fn event(&self, metric: MetricType, end_ns: u64) -> PerformanceContract {
        PerformanceContract {
            self_duration: Some(to_f64(self.self_ns) / 1e6),
            id: Some(self.id),
            parent_id: self.parent,
            ..PerformanceContract::new(metric, to_f64(self.duration_ns) / 1e6, epoch_ms(end_ns))
        }
    }
}

/// Opens an operation that started at `start_ns` on this thread's stack.
///
/// ```
/// let open = backtest_perf::span::enter_at(5);
/// assert_eq!(open.start_ns, 5);
/// let closed = backtest_perf::span::exit_at(open, 9);
/// assert_eq!((closed.duration_ns, closed.parent), (4, None));
/// ```
#[inline]
pub fn enter_at(start_ns: u64) -> Open {
    let (id, parent, depth) = with_state(|state| {
        let id = state.next_id();
        let stack = &mut state.stack;
        let parent = stack.last().map(|f| f.id);
        let depth = u32::try_from(stack.len()).unwrap_or(u32::MAX);
        stack.push(Frame { id, children_ns: 0 });
        (id, parent, depth)
    });
    Open {
        id,
        parent,
        start_ns,
        depth,
    }
}

/// Opens two operations that started together at `start_ns`, the second inside the first
/// (a tick and the signal function it calls first): what two [`enter_at`] calls do, with
/// one visit to the thread's stack.
///
/// ```
/// use backtest_perf::span::{enter_pair_at, exit_at};
/// let (outer, inner) = enter_pair_at(10);
/// assert_eq!((inner.parent, inner.depth, inner.start_ns), (Some(outer.id), outer.depth + 1, 10));
/// let _ = exit_at(inner, 40);
/// assert_eq!(exit_at(outer, 50).self_ns, 10);
/// ```
#[inline]
pub fn enter_pair_at(start_ns: u64) -> (Open, Open) {
    let (outer, inner, parent, depth) = with_state(|state| {
        let (outer, inner) = (state.next_id(), state.next_id());
        let stack = &mut state.stack;
        let parent = stack.last().map(|f| f.id);
        let depth = u32::try_from(stack.len()).unwrap_or(u32::MAX);
        stack.push(Frame {
            id: outer,
            children_ns: 0,
        });
        stack.push(Frame {
            id: inner,
            children_ns: 0,
        });
        (outer, inner, parent, depth)
    });
    (
        Open {
            id: outer,
            parent,
            start_ns,
            depth,
        },
        Open {
            id: inner,
            parent: Some(outer),
            start_ns,
            depth: depth.saturating_add(1),
        },
    )
}

/// Closes `open` at `end_ns`: its duration counts as child time of its parent.
///
/// ```
/// use backtest_perf::span::{enter_at, exit_at};
/// let outer = enter_at(0);
/// let a = enter_at(10);
/// let _ = exit_at(a, 30);
/// let b = enter_at(40);
/// let _ = exit_at(b, 45);
/// assert_eq!(exit_at(outer, 100).self_ns, 75);
/// ```
#[inline]
pub fn exit_at(open: Open, end_ns: u64) -> Closed {
    with_state(|state| close_on(&mut state.stack, open, end_ns))
}

/// Closes `inner` and then `outer` at the same moment: what two [`exit_at`] calls do,
/// with one visit to the thread's stack.
///
/// ```
/// use backtest_perf::span::{enter_pair_at, exit_pair_at};
/// let (outer, inner) = enter_pair_at(10);
/// let (inner, outer) = exit_pair_at(inner, outer, 40);
/// assert_eq!((inner.duration_ns, inner.self_ns), (30, 30));
/// assert_eq!((outer.duration_ns, outer.self_ns), (30, 0));
/// ```
#[inline]
pub fn exit_pair_at(inner: Open, outer: Open, end_ns: u64) -> (Closed, Closed) {
    with_state(|state| {
        let stack = &mut state.stack;
        (
            close_on(stack, inner, end_ns),
            close_on(stack, outer, end_ns),
        )
    })
}

/// [`exit_at`] on the thread's `stack`.
#[inline(always)]
fn close_on(stack: &mut Vec<Frame>, open: Open, end_ns: u64) -> Closed {
    let duration_ns = end_ns.saturating_sub(open.start_ns);
    let mut children_ns = 0;
    if let Some(at) = stack.iter().rposition(|f| f.id == open.id) {
        children_ns = stack[at].children_ns;
        stack.truncate(at);
        if let Some(parent) = stack.last_mut() {
            parent.children_ns = parent.children_ns.saturating_add(duration_ns);
        }
    }
    Closed {
        id: open.id,
        parent: open.parent,
        duration_ns,
        self_ns: duration_ns.saturating_sub(children_ns),
    }
}

/// Closes an operation that ran from `start_ns` to `end_ns` on this thread and opened no
/// other inside it, without ever pushing it: its id, parent and depth are taken now, and
/// its duration counts as child time of the innermost open operation. One visit to the
/// thread's stack instead of the two of [`enter_at`] and [`exit_at`]; the engine's leaf
/// hooks (a candle fetch, the VWAP) close so. Returns it and its depth.
#[inline]
pub(crate) fn close_leaf(start_ns: u64, end_ns: u64) -> (Closed, u32) {
    let duration_ns = end_ns.saturating_sub(start_ns);
    let (id, parent, depth) = with_state(|state| {
        let id = state.next_id();
        let depth = u32::try_from(state.stack.len()).unwrap_or(u32::MAX);
        let parent = state.stack.last_mut().map(|frame| {
            frame.children_ns = frame.children_ns.saturating_add(duration_ns);
            frame.id
        });
        (id, parent, depth)
    });
    let closed = Closed {
        id,
        parent,
        duration_ns,
        self_ns: duration_ns,
    };
    (closed, depth)
}

/// Counts `ns` as time spent inside `parent`, if `parent` is open on this thread: for an
/// operation measured without [`enter_at`] (an async one, which may move threads), so its
/// parent's self time still leaves it out.
///
/// ```
/// use backtest_perf::span::{add_child_time, enter_at, exit_at};
/// let outer = enter_at(0);
/// add_child_time(outer.id, 30);
/// assert_eq!(exit_at(outer, 100).self_ns, 70);
/// ```
pub fn add_child_time(parent: u64, ns: u64) {
    STACK.with(|state| {
        if let Some(frame) = state
            .borrow_mut()
            .stack
            .iter_mut()
            .rev()
            .find(|f| f.id == parent)
        {
            frame.children_ns = frame.children_ns.saturating_add(ns);
        }
    });
}

/// Closes an operation measured without the thread's stack (an async one, which may move
/// threads): it ran from `start_ns` to `end_ns` under `parent`, whose self time leaves it
/// out if `parent` is open on this thread; its own self time is its whole duration.
///
/// ```
/// use backtest_perf::span::{close_detached, enter_at, exit_at};
/// let outer = enter_at(0);
/// let inner = close_detached(42, Some(outer.id), 10, 40);
/// assert_eq!((inner.duration_ns, inner.self_ns, inner.parent), (30, 30, Some(outer.id)));
/// assert_eq!(exit_at(outer, 100).self_ns, 70);
/// ```
pub fn close_detached(id: u64, parent: Option<u64>, start_ns: u64, end_ns: u64) -> Closed {
    let duration_ns = end_ns.saturating_sub(start_ns);
    if let Some(parent) = parent {
        add_child_time(parent, duration_ns);
    }
    Closed {
        id,
        parent,
        duration_ns,
        self_ns: duration_ns,
    }
}

/// The id of the innermost operation open on this thread, if any.
///
/// ```
/// use backtest_perf::span::{current, enter_at, exit_at};
/// assert_eq!(current(), None);
/// let open = enter_at(0);
/// assert_eq!(current(), Some(open.id));
/// let _ = exit_at(open, 1);
/// assert_eq!(current(), None);
/// ```
pub fn current() -> Option<u64> {
    STACK.with(|state| state.borrow().stack.last().map(|f| f.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_f64_converts_exactly_and_saturates_past_i64() {
        assert_eq!(to_f64(0), 0.0);
        assert_eq!(to_f64(1_500_000), 1.5e6);
        assert_eq!(to_f64((1 << 53) + 1), ((1u64 << 53) + 1) as f64);
        assert_eq!(to_f64(i64::MAX as u64), i64::MAX as f64);
        assert_eq!(to_f64(u64::MAX), i64::MAX as f64);
    }

    #[test]
    fn clock_readings_convert_as_quanta_converts_them() {
        let clock = process_clock();
        for ticks in [0, 1, 999, 1 << 20, 1 << 32, 3_000_000_000_000, 1 << 50] {
            let quanta = clock.clock.delta_as_nanos(0, ticks);
            let ours = clock.to_ns(ticks);
            // Both scale by the same calibration, rounded differently: within a part in
            // a billion, and a nanosecond.
            assert!(
                ours.abs_diff(quanta) <= 1 + quanta / 1_000_000_000,
                "{ticks} ticks: {ours} ns, quanta {quanta} ns"
            );
        }
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| next_id()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(all.iter().all(|&id| (1..=MAX_ID).contains(&id)));
    }

    #[test]
    fn a_leaf_closes_as_an_entered_and_exited_operation_would() {
        let outer = enter_at(100);
        let (leaf, depth) = close_leaf(120, 150);
        assert_eq!(depth, 1);
        assert_eq!(
            (leaf.parent, leaf.duration_ns, leaf.self_ns),
            (Some(outer.id), 30, 30)
        );
        assert!(leaf.id > outer.id);
        assert_eq!(current(), Some(outer.id));
        let entered = enter_at(160);
        let exited = exit_at(entered, 170);
        assert_eq!((exited.parent, exited.self_ns), (Some(outer.id), 10));
        let o = exit_at(outer, 200);
        assert_eq!((o.duration_ns, o.self_ns), (100, 60));
        // With nothing open: no parent, depth 0, and the stack stays empty.
        let (alone, depth) = close_leaf(5, 3);
        assert_eq!((alone.parent, depth, alone.duration_ns), (None, 0, 0));
        assert_eq!(current(), None);
    }

    #[test]
    fn closing_out_of_order_closes_what_was_open_above() {
        let outer = enter_at(0);
        let middle = enter_at(10);
        let inner = enter_at(20);
        // The middle one closes first: the inner one is abandoned with it.
        let m = exit_at(middle, 50);
        assert_eq!(
            (m.duration_ns, m.self_ns, m.parent),
            (40, 40, Some(outer.id))
        );
        assert_eq!(current(), Some(outer.id));
        let i = exit_at(inner, 60);
        assert_eq!((i.duration_ns, i.self_ns), (40, 40));
        let o = exit_at(outer, 100);
        assert_eq!((o.duration_ns, o.self_ns), (100, 60));
        assert_eq!(current(), None);
    }
}
