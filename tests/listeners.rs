//! Listeners: every event in order, sequential async calls, isolation from slow and
//! failing callbacks, unsubscribe, and draining.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};

fn tick(i: u64) -> PerformanceContract {
    PerformanceContract::new(MetricType::Tick, 1.0, i as f64)
        .with_symbol("BTCUSDT")
        .with_strategy("s")
}

#[test]
fn a_listener_sees_every_one_of_a_million_events_in_order() {
    const N: u64 = 1_000_000;
    let bus = PerformanceEmitter::new();
    let seen = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    let (s, o) = (seen.clone(), out_of_order.clone());
    let sub = bus.listen(move |e: &PerformanceContract| {
        let expected = s.fetch_add(1, Ordering::Relaxed);
        if e.timestamp != expected as f64 {
            o.fetch_add(1, Ordering::Relaxed);
        }
    });
    for i in 0..N {
        bus.emit(tick(i)).unwrap();
    }
    sub.flush();
    assert_eq!(seen.load(Ordering::Relaxed), N);
    assert_eq!(out_of_order.load(Ordering::Relaxed), 0);
    assert_eq!(sub.handled(), N);
    assert_eq!(sub.queue_depth(), 0);
}

#[test]
fn async_callbacks_run_strictly_one_after_another() {
    let bus = PerformanceEmitter::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (f, m, o) = (in_flight.clone(), most.clone(), order.clone());
    let sub = bus.listen_async(move |e: PerformanceContract| {
        let (f, m, o) = (f.clone(), m.clone(), o.clone());
        async move {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            o.lock().unwrap().push(e.timestamp as u64);
            f.fetch_sub(1, Ordering::SeqCst);
        }
    });
    for i in 0..25 {
        bus.emit(tick(i)).unwrap();
    }
    sub.flush();
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert_eq!(*order.lock().unwrap(), (0..25).collect::<Vec<u64>>());
}

#[test]
fn a_slow_listener_does_not_slow_emit() {
    const N: u64 = 400;
    let bus = PerformanceEmitter::new();
    let sub = bus.listen(|_: &PerformanceContract| std::thread::sleep(Duration::from_millis(2)));
    for i in 0..N {
        bus.emit(tick(i)).unwrap();
    }
    // The listener needs at least 800 ms for these; the loop above took microseconds.
    let handled_when_emit_returned = sub.handled();
    assert!(
        handled_when_emit_returned < N / 2,
        "{handled_when_emit_returned}"
    );
    assert!(sub.queue_depth() > 0);
    sub.flush();
    assert_eq!(sub.handled(), N);
}

#[test]
fn failing_listeners_are_counted_and_isolated() {
    let bus = PerformanceEmitter::new();
    let service = PerformanceService::attached(&bus);
    let panicky = bus.listen(|e: &PerformanceContract| {
        if (e.timestamp as u64).is_multiple_of(2) {
            panic!("listener bug at {}", e.timestamp);
        }
    });
    let erring = bus.listen(|e: &PerformanceContract| {
        if (e.timestamp as u64).is_multiple_of(3) {
            Err(format!("cannot handle {}", e.timestamp))
        } else {
            Ok(())
        }
    });
    let async_panicky = bus.listen_async(|e: PerformanceContract| async move {
        if e.timestamp as u64 == 7 {
            panic!("async listener bug");
        }
    });
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let healthy = bus.listen(move |_: &PerformanceContract| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    for i in 0..30 {
        bus.emit(tick(i)).unwrap();
    }
    bus.flush();
    assert_eq!((panicky.handled(), panicky.failed()), (30, 15));
    assert_eq!((erring.handled(), erring.failed()), (30, 10));
    assert_eq!((async_panicky.handled(), async_panicky.failed()), (30, 1));
    assert_eq!(count.load(Ordering::Relaxed), 30);
    assert_eq!(healthy.failed(), 0);
    assert_eq!(bus.listener_failures(), 26);
    assert_eq!(service.get_data("BTCUSDT", "s").total_events, 30);
}

/// SPEC 3: a dropped handle keeps listening (`listen_performance(cb);` as a statement);
/// `unsubscribe` stops delivery, and so does a guard when its scope ends.
#[test]
fn a_dropped_handle_listens_on_unsubscribe_and_guards_stop() {
    let bus = PerformanceEmitter::new();
    let count = Arc::new(AtomicU64::new(0));
    let (c1, c2, c3) = (count.clone(), count.clone(), count.clone());
    let explicit = bus.listen(move |_: &PerformanceContract| {
        c1.fetch_add(1, Ordering::Relaxed);
    });
    let _ = bus.listen(move |_: &PerformanceContract| {
        c2.fetch_add(100, Ordering::Relaxed);
    });
    {
        let _scoped = bus
            .listen(move |_: &PerformanceContract| {
                c3.fetch_add(10_000, Ordering::Relaxed);
            })
            .guard();
        assert_eq!(bus.subscriber_count(), 3);
        for i in 0..10 {
            bus.emit(tick(i)).unwrap();
        }
        bus.flush();
        assert_eq!(count.load(Ordering::Relaxed), 101_010);
    }
    assert_eq!(bus.subscriber_count(), 2, "the guard unsubscribed");
    explicit.unsubscribe();
    assert_eq!(bus.subscriber_count(), 1, "the dropped handle listens on");
    for i in 10..20 {
        bus.emit(tick(i)).unwrap();
    }
    bus.flush();
    assert_eq!(count.load(Ordering::Relaxed), 101_010 + 1_000);
}

#[test]
fn filtered_and_once_listeners() {
    let bus = PerformanceEmitter::new();
    let slow = Arc::new(Mutex::new(Vec::new()));
    let first = Arc::new(Mutex::new(Vec::new()));
    let (s, f) = (slow.clone(), first.clone());
    let filtered = bus.listen_filtered(
        |e| e.duration >= 10.0,
        move |e: &PerformanceContract| s.lock().unwrap().push(e.duration),
    );
    let once = bus.listen_once(
        |e| e.metric_type == MetricType::GetCandles,
        move |e: &PerformanceContract| f.lock().unwrap().push(e.timestamp),
    );
    for (i, d) in [1.0, 15.0, 3.0, 40.0].into_iter().enumerate() {
        bus.emit(PerformanceContract::new(MetricType::Tick, d, i as f64))
            .unwrap();
        bus.emit(PerformanceContract::new(
            MetricType::GetCandles,
            0.5,
            100.0 + i as f64,
        ))
        .unwrap();
    }
    bus.flush();
    assert_eq!(*slow.lock().unwrap(), [15.0, 40.0]);
    assert_eq!(*first.lock().unwrap(), [100.0]);
    assert!(!once.is_active());
    assert!(filtered.is_active());
    assert_eq!(
        bus.subscriber_count(),
        1,
        "the once-listener removed itself"
    );
}

#[tokio::test]
async fn flush_async_waits_in_async_code() {
    let bus = PerformanceEmitter::new();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let sub = bus.listen_async(move |_| {
        let c = c.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    for i in 0..20 {
        bus.emit(tick(i)).unwrap();
    }
    bus.flush_async().await;
    assert_eq!(count.load(Ordering::SeqCst), 20);
    assert_eq!(sub.handled(), 20);
}

#[test]
fn a_subscriber_added_later_sees_only_later_events() {
    let bus = PerformanceEmitter::new();
    bus.emit(tick(0)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sub = bus.listen(move |e: &PerformanceContract| s.lock().unwrap().push(e.timestamp));
    bus.emit(tick(1)).unwrap();
    sub.flush();
    assert_eq!(*seen.lock().unwrap(), [1.0]);
}

#[test]
fn dropping_the_bus_ends_detached_listeners() {
    let bus = PerformanceEmitter::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let sub = bus.listen(move |_: &PerformanceContract| {
        let _keep = &tx;
    });
    let probe = bus.listen(|_: &PerformanceContract| {});
    sub.detach();
    drop(probe); // a handle keeps a clone of the bus; let go of it too
    drop(bus);
    // The worker ends and drops its callback (and with it `tx`): the channel closes.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
}
