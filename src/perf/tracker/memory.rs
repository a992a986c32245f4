//! Memory and CPU readings: a counting allocator the binary opts into, the process RSS,
//! and CPU times.
//!
//! The library never installs a global allocator. A binary that wants per-operation
//! allocation figures installs [`CountingAllocator`]:
//!
//! ```
//! use backtest_perf::tracker::CountingAllocator;
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator::new();
//! # fn main() {}
//! ```
//!
//! It counts the bytes each thread allocates and frees (two thread-local additions per
//! call) and otherwise defers to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Faults in the pages of `v`'s spare capacity with one write each, so that the first
/// pushes into them do not (a page fault costs several microseconds on a virtual
/// machine), and costs next to nothing when the allocator hands back touched memory.
pub(crate) fn touch_spare<T>(v: &mut Vec<T>) {
    let per_page = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for slot in v.spare_capacity_mut().iter_mut().step_by(per_page) {
        *slot = std::mem::MaybeUninit::zeroed();
    }
}

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static FREED: Cell<u64> = const { Cell::new(0) };
    /// Set while the tracker does its own bookkeeping on this thread.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A global allocator that counts bytes allocated and freed per thread.
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: backtest_perf::tracker::CountingAllocator = backtest_perf::tracker::CountingAllocator::new();
/// # fn main() {
/// let before = backtest_perf::tracker::memory::thread_counters().unwrap_or_default();
/// let v = vec![0u8; 4096];
/// let after = backtest_perf::tracker::memory::thread_counters().unwrap();
/// assert!(after.0 - before.0 >= 4096);
/// # drop(v);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    /// The allocator, for a `#[global_allocator]` static.
    ///
    /// ```
    /// static ALLOCATOR: backtest_perf::tracker::CountingAllocator = backtest_perf::tracker::CountingAllocator::new();
    /// ```
    pub const fn new() -> Self {
        CountingAllocator
    }
}

#[inline]
fn count(cell: &'static std::thread::LocalKey<Cell<u64>>, bytes: usize) {
    // `try_with`: a thread being torn down may still free memory.
    if UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    let _ = cell.try_with(|c| c.set(c.get().wrapping_add(bytes as u64)));
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is
// arithmetic on thread-local cells that are const-initialised and never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATED, layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATED, layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREED, layout.size());
        // SAFETY: `ptr` came from this allocator, which got it from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&FREED, layout.size());
        count(&ALLOCATED, new_size);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// While one is alive, this thread's allocations are not counted: the tracker's own
/// bookkeeping (recording an operation, its metadata, the bus) inside an operation still
/// running would otherwise show as memory that operation allocated.
pub(crate) struct Uncounted(bool);

impl Uncounted {
    #[inline]
    pub(crate) fn begin() -> Self {
        Uncounted(UNCOUNTED.try_with(|u| u.replace(true)).unwrap_or(false))
    }
}

impl Drop for Uncounted {
    #[inline]
    fn drop(&mut self) {
        let _ = UNCOUNTED.try_with(|u| u.set(self.0));
    }
}

/// Whether [`CountingAllocator`] is the global allocator (it has counted something).
///
/// ```
/// // True once a binary installed the counting allocator and it counted something.
/// let _installed: bool = backtest_perf::tracker::memory::counting();
/// ```
pub fn counting() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes allocated and freed by this thread so far, if the counting allocator is in use.
///
/// ```
/// if let Some((allocated, freed)) = backtest_perf::tracker::memory::thread_counters() {
///     println!("this thread: {allocated} bytes allocated, {freed} freed");
/// }
/// ```
#[inline]
pub fn thread_counters() -> Option<(u64, u64)> {
    counting().then(|| (ALLOCATED.with(Cell::get), FREED.with(Cell::get)))
}

/// Resident set size of this process in bytes, read at most once per millisecond (a
/// read costs a few microseconds): what operations ending within the same millisecond
/// report. Linux; `None` elsewhere.
///
/// ```
/// if let Some(rss) = backtest_perf::tracker::memory::rss_bytes_sampled() {
///     assert!(rss > 0);
/// }
/// ```
pub fn rss_bytes_sampled() -> Option<u64> {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static LAST_READ_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
    let now_ms = BASE
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64;
    if LAST_READ_MS.swap(now_ms, Ordering::Relaxed) != now_ms {
        LAST_RSS.store(rss_bytes()?, Ordering::Relaxed);
    }
    rss_bytes_last()
}

/// The resident set size [`rss_bytes_sampled`] read last, without reading it again: for
/// readings taken inside an operation that is still running, where a read (several
/// microseconds) would count in its time.
pub(crate) fn rss_bytes_last() -> Option<u64> {
    match LAST_RSS.load(Ordering::Relaxed) {
        0 => None,
        bytes => Some(bytes),
    }
}

static LAST_RSS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
thread_local! {
    /// Reads of the resident set size on this thread.
    static RSS_READS: Cell<u64> = const { Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::{INSTALLED, Ordering, RSS_READS};
    use crate::tracker::{RunInfo, Tracker, TrackerOptions};

    #[test]
    fn operations_inside_others_never_read_the_resident_set_size() {
        // As if the counting allocator were installed (this test binary has none): memory
        // readings are taken. Its counts stay 0; nothing here reads them.
        INSTALLED.store(true, Ordering::Relaxed);
        let options = TrackerOptions {
            track_memory: true,
            ..TrackerOptions::default()
        };
        let tracker = Tracker::new(RunInfo::named("rss"), options);
        let reads = || RSS_READS.with(|n| n.get());
        let root = tracker.start("root", None);
        let before = reads();
        for _ in 0..100 {
            tracker.measure("inner", || {
                std::thread::sleep(std::time::Duration::from_micros(20))
            });
        }
        // 2 ms of nested operations: a read each millisecond would have happened here.
        assert_eq!(reads(), before, "no read while `root` runs");
        root.end();
        let report = tracker.finish().unwrap();
        assert_eq!(report.events.len(), 101);
    }
}

/// Resident set size of this process in bytes (Linux; `None` elsewhere).
///
/// ```
/// #[cfg(target_os = "linux")]
/// assert!(backtest_perf::tracker::memory::rss_bytes().unwrap() > 0);
/// ```
pub fn rss_bytes() -> Option<u64> {
    #[cfg(test)]
    RSS_READS.with(|n| n.set(n.get() + 1));
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU time and memory of the process at one moment.
///
/// ```
/// let now = backtest_perf::tracker::ResourceSnapshot::now();
/// #[cfg(target_os = "linux")]
/// assert!(now.rss_bytes.is_some() && now.cpu_user_ms.is_some());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSnapshot {
    /// CPU time in user mode, ms.
    pub cpu_user_ms: Option<f64>,
    /// CPU time in the kernel, ms.
    pub cpu_system_ms: Option<f64>,
    /// Resident set size, bytes.
    pub rss_bytes: Option<u64>,
}

impl ResourceSnapshot {
    /// Reads the process's CPU times and RSS now (Linux; fields are `None` elsewhere).
    ///
    /// ```
    /// let snapshot = backtest_perf::tracker::ResourceSnapshot::now();
    /// println!("{:?} ms user CPU", snapshot.cpu_user_ms);
    /// ```
    pub fn now() -> Self {
        let (user, system) = cpu_times_ms().map_or((None, None), |(u, s)| (Some(u), Some(s)));
        ResourceSnapshot {
            cpu_user_ms: user,
            cpu_system_ms: system,
            rss_bytes: rss_bytes(),
        }
    }
}

/// User and system CPU time of the process in ms, from `/proc/self/stat`.
fn cpu_times_ms() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from the state.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // Clock ticks are 100 per second on every Linux the standard library targets.
    Some((ticks(11)? * 10.0, ticks(12)? * 10.0))
}
