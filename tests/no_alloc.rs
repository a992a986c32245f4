//! Emitting with no subscribers, or with tracking off, allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations made by the current thread.
struct Counting;

// SAFETY: defers to the system allocator; only adds a thread-local count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn emit_without_subscribers_or_when_disabled_does_not_allocate() {
    let events: Vec<PerformanceContract> = (0..10_000)
        .map(|i| {
            PerformanceContract::new(MetricType::custom("work"), 1.0, i as f64)
                .with_symbol("BTCUSDT")
                .with_strategy("s")
        })
        .collect();
    let invalid = PerformanceContract::new(MetricType::Tick, -1.0, 0.0);

    let bus = PerformanceEmitter::new();
    let n = allocations_during(|| {
        for e in &events {
            bus.emit(*e).unwrap();
        }
        assert!(bus.emit(invalid).is_err());
    });
    assert_eq!(n, 0);

    let off = PerformanceEmitter::new();
    let service = PerformanceService::attached(&off);
    off.set_enabled(false);
    let n = allocations_during(|| {
        for e in &events {
            off.emit(*e).unwrap();
        }
    });
    assert_eq!(n, 0);
    assert_eq!(service.get_data("BTCUSDT", "s").total_events, 0);

    // The counter does count: a storage's first event allocates its bucket.
    off.set_enabled(true);
    assert!(allocations_during(|| off.emit(events[0]).unwrap()) > 0);
}
