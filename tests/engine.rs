//! The engine's semantics, on small in-memory candle sets computed by hand.

use std::sync::{Arc, Mutex};

use backtest_perf::PerformanceEmitter;
use backtest_perf::engine::{
    Backtest, BacktestResult, Candle, CloseReason, Context, Costs, Interval, MemoryExchange,
    Position, Rejection, Signal, Strategy, StrategyError, pnl_percent,
};

const MIN: i64 = 60_000;

/// A 1-minute candle opening at minute `m`.
fn c(m: i64, o: f64, h: f64, l: f64, cl: f64, v: f64) -> Candle {
    Candle {
        open_time: m * MIN,
        open: o,
        high: h,
        low: l,
        close: cl,
        volume: v,
    }
}

fn flat(m: i64) -> Candle {
    c(m, 100.0, 100.0, 100.0, 100.0, 1.0)
}

/// Flat candles for minutes `0..n`, with some replaced.
fn candles(n: i64, replace: &[Candle]) -> Vec<Candle> {
    (0..n)
        .map(|m| {
            replace
                .iter()
                .find(|r| r.open_time == m * MIN)
                .copied()
                .unwrap_or(flat(m))
        })
        .collect()
}

/// Gives the scripted signals on its first calls (one per call), then nothing; records
/// what it saw.
struct Script {
    signals: Vec<Option<Signal>>,
    every: Interval,
    calls: Calls,
}

/// Each call: the frame time, and the open times of the candles it saw.
type Calls = Arc<Mutex<Vec<(i64, Vec<i64>)>>>;

impl Script {
    fn new(signals: Vec<Option<Signal>>) -> Self {
        Script {
            signals,
            every: Interval::MINUTE,
            calls: Arc::default(),
        }
    }
}

impl Strategy for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn interval(&self) -> Interval {
        self.every
    }
    fn get_signal(&mut self, ctx: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
        let seen = ctx.candles(1_000)?.iter().map(|c| c.open_time).collect();
        self.calls.lock().unwrap().push((ctx.when_millis(), seen));
        Ok(if self.signals.is_empty() {
            None
        } else {
            self.signals.remove(0)
        })
    }
}

fn run(data: Vec<Candle>, strategy: &mut Script) -> BacktestResult {
    let exchange = MemoryExchange::new().with("TEST", data, None).unwrap();
    Backtest::new(&exchange, "TEST")
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .run(strategy)
        .unwrap()
}

fn costs() -> Costs {
    Costs::default()
}

/// Long PnL written out: entry open*(1+0.001), exit close*(1-0.001), minus 2 fees of 0.1%.
fn long_pnl(open: f64, close: f64) -> f64 {
    (close * 0.999 - open * 1.001) / (open * 1.001) * 100.0 - 0.2
}

/// Short PnL written out: entry open*(1-0.001), exit close*(1+0.001).
fn short_pnl(open: f64, close: f64) -> f64 {
    (open * 0.999 - close * 1.001) / (open * 0.999) * 100.0 - 0.2
}

#[test]
fn take_profit() {
    // Signal at minute 1 (candle 0 closed): entry = VWAP of candle 0 = 100.
    let data = candles(10, &[c(2, 100.0, 102.5, 99.5, 102.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0))]),
    );
    let closed = &r.closed[0];
    assert_eq!(
        (closed.reason, closed.price_open, closed.price_close),
        (CloseReason::TakeProfit, 100.0, 102.0)
    );
    assert_eq!(closed.opened_at.timestamp_millis(), MIN);
    assert_eq!(
        closed.closed_at.timestamp_millis(),
        3 * MIN,
        "closes when candle 2 closes"
    );
    assert!((closed.pnl_percent - long_pnl(100.0, 102.0)).abs() < 1e-12);
    assert_eq!(format!("{:.6}", closed.pnl_percent), "1.596204");
}

#[test]
fn stop_loss() {
    let data = candles(10, &[c(3, 100.0, 100.5, 97.5, 98.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0))]),
    );
    let closed = &r.closed[0];
    assert_eq!(
        (closed.reason, closed.price_close),
        (CloseReason::StopLoss, 98.0)
    );
    assert_eq!(closed.closed_at.timestamp_millis(), 4 * MIN);
    assert!((closed.pnl_percent - long_pnl(100.0, 98.0)).abs() < 1e-12);
}

#[test]
fn a_candle_touching_both_closes_at_the_stop_loss() {
    let data = candles(10, &[c(2, 100.0, 103.0, 97.0, 100.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0))]),
    );
    assert_eq!(
        (r.closed[0].reason, r.closed[0].price_close),
        (CloseReason::StopLoss, 98.0)
    );
    let data = candles(10, &[c(2, 100.0, 103.0, 97.0, 100.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::short(98.0, 102.0))]),
    );
    assert_eq!(
        (r.closed[0].reason, r.closed[0].price_close),
        (CloseReason::StopLoss, 102.0)
    );
}

#[test]
fn short_take_profit_pnl() {
    let data = candles(10, &[c(2, 100.0, 100.0, 96.0, 97.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::short(97.0, 103.0))]),
    );
    let closed = &r.closed[0];
    assert_eq!(
        (closed.signal.position, closed.reason, closed.price_close),
        (Position::Short, CloseReason::TakeProfit, 97.0)
    );
    assert!((closed.pnl_percent - short_pnl(100.0, 97.0)).abs() < 1e-12);
    assert_eq!(
        closed.pnl_percent,
        pnl_percent(Position::Short, 100.0, 97.0, costs())
    );
    assert_eq!(format!("{:.6}", closed.pnl_percent), "2.605806");
}

#[test]
fn time_expired_closes_at_the_last_close_in_the_lifetime() {
    // Opened at minute 1 with a 3-minute lifetime: candles opening at 1, 2, 3 are replayed.
    let data = candles(10, &[c(3, 100.0, 101.0, 99.0, 100.7, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0).lifetime(3))]),
    );
    let closed = &r.closed[0];
    assert_eq!(
        (closed.reason, closed.price_close),
        (CloseReason::TimeExpired, 100.7)
    );
    assert_eq!(closed.closed_at.timestamp_millis(), 4 * MIN);
}

#[test]
fn end_of_data_closes_at_the_last_close() {
    let data = candles(6, &[c(5, 100.0, 101.0, 99.0, 100.4, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0))]),
    );
    let closed = &r.closed[0];
    assert_eq!(
        (closed.reason, closed.price_close),
        (CloseReason::EndOfData, 100.4)
    );
    assert_eq!(closed.closed_at.timestamp_millis(), 6 * MIN);
}

#[test]
fn a_scheduled_entry_activates_when_touched() {
    // Waits for 99 from minute 1: candle 2 dips to 98.9, candle 4 reaches the take profit.
    let data = candles(
        10,
        &[
            c(2, 100.0, 100.0, 98.9, 99.5, 1.0),
            c(4, 99.5, 105.5, 99.5, 105.0, 1.0),
        ],
    );
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(105.0, 95.0).at(99.0))]),
    );
    let closed = &r.closed[0];
    assert_eq!(closed.signalled_at.timestamp_millis(), MIN);
    assert_eq!(closed.opened_at.timestamp_millis(), 2 * MIN);
    assert_eq!(
        (closed.reason, closed.price_open, closed.price_close),
        (CloseReason::TakeProfit, 99.0, 105.0)
    );
    assert!((closed.pnl_percent - long_pnl(99.0, 105.0)).abs() < 1e-12);
    assert!(r.cancelled.is_empty());
}

#[test]
fn a_scheduled_entry_is_cancelled_after_120_minutes() {
    let mut script = Script::new(vec![Some(Signal::long(105.0, 95.0).at(99.0)), None]);
    let calls = script.calls.clone();
    let data = candles(200, &[c(121, 100.0, 100.0, 98.0, 99.0, 1.0)]);
    let r = run(data, &mut script);
    assert!(r.closed.is_empty());
    assert_eq!(r.cancelled.len(), 1);
    assert_eq!(r.cancelled[0].cancelled_at.timestamp_millis(), 121 * MIN);
    // The dip at minute 121 came too late; the frame loop went on from minute 121.
    let times: Vec<i64> = calls
        .lock()
        .unwrap()
        .iter()
        .take(3)
        .map(|(t, _)| t / MIN)
        .collect();
    assert_eq!(times, [1, 121, 122]);
}

#[test]
fn an_invalid_signal_is_rejected_and_the_run_goes_on() {
    let data = candles(10, &[c(4, 100.0, 102.5, 100.0, 102.0, 1.0)]);
    let r = run(
        data,
        &mut Script::new(vec![
            Some(Signal::long(99.0, 98.0)),
            Some(Signal::long(102.0, 98.0)),
        ]),
    );
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        r.rejected[0].reason,
        Rejection::LongOrder {
            take_profit: 99.0,
            entry: 100.0,
            stop_loss: 98.0
        }
    );
    assert_eq!(
        r.rejected[0].reason.to_string(),
        "long needs take profit > entry > stop loss; got take profit 99, entry 100, stop loss 98"
    );
    assert_eq!(r.rejected[0].at.timestamp_millis(), MIN);
    assert_eq!(r.closed.len(), 1);
    assert_eq!(r.closed[0].signalled_at.timestamp_millis(), 2 * MIN);
    assert_eq!(r.summary.signals, 1);
}

#[test]
fn the_entry_is_the_vwap_of_the_last_five_closed_candles() {
    // At minute 6, candles 1..=5 are the last five closed; candle 0 is left out.
    let data = vec![
        c(0, 50.0, 50.0, 50.0, 50.0, 100.0),
        c(1, 100.0, 103.0, 100.0, 100.0, 1.0), // typical 101
        c(2, 100.0, 102.0, 99.0, 102.0, 2.0),  // typical 101
        c(3, 102.0, 106.0, 102.0, 104.0, 1.0), // typical 104
        c(4, 104.0, 104.0, 98.0, 101.0, 0.0),  // no volume
        c(5, 101.0, 102.0, 99.0, 102.0, 4.0),  // typical 101
        flat(6),
        flat(7),
    ];
    let mut script = Script::new(vec![
        None,
        None,
        None,
        None,
        None,
        Some(Signal::long(200.0, 1.0).lifetime(1)),
    ]);
    let r = run(data, &mut script);
    let expected = (101.0 * 1.0 + 101.0 * 2.0 + 104.0 * 1.0 + 101.0 * 4.0) / 8.0;
    assert_eq!(r.closed[0].price_open, expected);
}

#[test]
fn with_no_volume_the_entry_is_the_mean_close() {
    let data: Vec<Candle> = (0..8)
        .map(|m| c(m, 10.0, 20.0, 8.0, 10.0 + m as f64, 0.0))
        .collect();
    let mut script = Script::new(vec![
        None,
        None,
        None,
        None,
        None,
        Some(Signal::long(200.0, 1.0).lifetime(1)),
    ]);
    let r = run(data, &mut script);
    // Closed by minute 6: candles 1..=5, closes 11..=15.
    assert_eq!(r.closed[0].price_open, 13.0);
}

#[test]
fn frames_are_counted_inclusively() {
    // Candles open at minutes 0..10; frames run from the first close (1) to the last (10).
    let r = run(candles(10, &[]), &mut Script::new(vec![]));
    assert_eq!(r.frames, 10);
    let exchange = MemoryExchange::new()
        .with("TEST", candles(10, &[]), None)
        .unwrap();
    let frame = Backtest::new(&exchange, "TEST").unwrap().frame();
    assert_eq!((frame.start, frame.end, frame.count()), (MIN, 10 * MIN, 10));
}

#[test]
fn get_signal_is_throttled_to_its_interval() {
    let mut script = Script::new(vec![]);
    script.every = Interval::minutes(3);
    let calls = script.calls.clone();
    let r = run(candles(10, &[]), &mut script);
    let times: Vec<i64> = calls.lock().unwrap().iter().map(|(t, _)| t / MIN).collect();
    assert_eq!(times, [1, 4, 7, 10]);
    assert_eq!(
        r.frames, 10,
        "every frame ticks; only get_signal is throttled"
    );
}

#[test]
fn a_strategy_never_sees_a_candle_that_has_not_closed() {
    let mut script = Script::new(vec![]);
    let calls = script.calls.clone();
    run(candles(30, &[]), &mut script);
    for (when, seen) in calls.lock().unwrap().iter() {
        // A 1-minute candle opening at t closes at t + 1 minute.
        assert!(
            seen.iter().all(|open| open + MIN <= *when),
            "at {when}: {seen:?}"
        );
        assert_eq!(
            seen.last(),
            Some(&(when - MIN)),
            "the newest closed candle is visible"
        );
        assert_eq!(seen.len() as i64, when / MIN);
    }
}

#[test]
fn summary_totals() {
    let data = candles(
        20,
        &[
            c(2, 100.0, 102.5, 99.5, 102.0, 1.0),
            c(5, 102.0, 102.0, 97.0, 97.0, 1.0),
        ],
    );
    // Win at 102 (closed at minute 3), then at minute 3 a second signal priced at the VWAP
    // of candles 0, 1 and 2 (the ones closed by then), lost at the stop loss 98.
    let r = run(
        data,
        &mut Script::new(vec![
            Some(Signal::long(102.0, 98.0)),
            Some(Signal::long(110.0, 98.0)),
        ]),
    );
    assert_eq!(r.closed.len(), 2);
    assert_eq!(
        r.closed[1].price_open,
        (100.0 * 2.0 + (102.5 + 99.5 + 102.0) / 3.0) / 3.0
    );
    assert_eq!(r.closed[1].reason, CloseReason::StopLoss);
    let s = r.summary;
    assert_eq!((s.signals, s.wins, s.losses, s.win_rate), (2, 1, 1, 50.0));
    assert_eq!(
        s.total_pnl,
        r.closed[0].pnl_percent + r.closed[1].pnl_percent
    );
    assert_eq!(s.avg_pnl, s.total_pnl / 2.0);
}

#[test]
fn progress_sums_to_the_frame_count_even_when_positions_skip_frames() {
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sum = total.clone();
    let exchange = MemoryExchange::new()
        .with("TEST", candles(30_000, &[]), None)
        .unwrap();
    let backtest = Backtest::new(&exchange, "TEST")
        .unwrap()
        .with_bus(PerformanceEmitter::new())
        .with_progress(Arc::new(move |n| {
            sum.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }));
    // A 600-minute position from minute 1 skips most of the first 600 frames.
    let r = backtest
        .run(&mut Script::new(vec![Some(
            Signal::long(200.0, 50.0).lifetime(600),
        )]))
        .unwrap();
    assert!(r.frames < 30_000);
    assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 30_000);
}

/// Minutes `0..=9` and `30..=39`: a gap (a weekend, scaled down) from minute 10 to 30.
/// Candle 9 closes at minute 10 (the interval, 1 minute, ends before the next open).
fn with_gap() -> Vec<Candle> {
    (0..=9)
        .chain(30..=39)
        .map(|m| {
            if m == 9 {
                c(9, 100.0, 100.3, 100.0, 100.3, 1.0)
            } else {
                flat(m)
            }
        })
        .collect()
}

/// SPEC 8: a position whose lifetime ends in a gap lasts its lifetime: it closes at the
/// last close replayed, stamped when the lifetime ended, and the next signal waits.
#[test]
fn a_lifetime_ending_in_a_gap_is_stamped_at_its_end() {
    // Signalled at minute 1 (candle 0 closed), lifetime 15: it ends at minute 16, in the
    // gap. Candles 1..=9 are replayed; the last closes at minute 10 at 100.3.
    let mut script = Script::new(vec![
        Some(Signal::long(102.0, 98.0).lifetime(15)),
        Some(Signal::long(102.0, 98.0).lifetime(15)),
    ]);
    let r = run(with_gap(), &mut script);
    let first = &r.closed[0];
    assert_eq!(
        (first.reason, first.price_close),
        (CloseReason::TimeExpired, 100.3)
    );
    assert_eq!(first.opened_at.timestamp_millis(), MIN);
    assert_eq!(
        first.closed_at.timestamp_millis(),
        16 * MIN,
        "not at minute 10"
    );
    // The frame loop goes on at minute 16: the second signal cannot open inside the first.
    let second = &r.closed[1];
    assert_eq!(second.signalled_at.timestamp_millis(), 16 * MIN);
    // It is replayed over candle 30 alone (lifetime to minute 31), stamped at its close.
    assert_eq!(second.closed_at.timestamp_millis(), 31 * MIN);
    assert_eq!(second.reason, CloseReason::TimeExpired);
}

/// SPEC 8: no candle inside the lifetime: the last close known when it ended, stamped at
/// its end (before the fix it lasted 0 minutes).
#[test]
fn no_candle_inside_the_lifetime_closes_at_the_last_known_close_when_it_ends() {
    let mut signals: Vec<Option<Signal>> = vec![None; 9]; // frames at minutes 1..=9
    signals.push(Some(Signal::short(98.0, 102.0).lifetime(5))); // minute 10, lifetime to 15
    let r = run(with_gap(), &mut Script::new(signals));
    let closed = &r.closed[0];
    assert_eq!(closed.signalled_at.timestamp_millis(), 10 * MIN);
    assert_eq!(
        (closed.reason, closed.price_close),
        (CloseReason::TimeExpired, 100.3)
    );
    assert_eq!(closed.closed_at.timestamp_millis(), 15 * MIN);
    // Entry at the VWAP of candles 5..=9: typical prices 100 four times and
    // (100.3 + 100 + 100.3) / 3 once, equal volumes.
    let vwap = (4.0 * 100.0 + 300.6 / 3.0) / 5.0;
    assert_eq!(closed.price_open, vwap);
    assert_eq!(
        closed.pnl_percent,
        pnl_percent(Position::Short, vwap, 100.3, costs())
    );
}

/// SPEC 8: a lifetime ending inside a daily candle closes at that candle's close, stamped
/// when the candle closed (its price is not known before).
#[test]
fn a_lifetime_ending_inside_a_daily_candle_is_stamped_when_the_candle_closed() {
    const DAY: i64 = 1_440;
    let data: Vec<Candle> = (0..5)
        .map(|d| {
            if d == 2 {
                c(d * DAY, 100.0, 101.0, 99.5, 100.8, 1.0)
            } else {
                flat(d * DAY)
            }
        })
        .collect();
    // Signalled at the close of day 0 (day 1 00:00), lifetime 36 hours: ends on day 2 at
    // 12:00, inside day 2's candle, which closes on day 3 at 00:00.
    let r = run(
        data,
        &mut Script::new(vec![Some(Signal::long(102.0, 98.0).lifetime(36 * 60))]),
    );
    let closed = &r.closed[0];
    assert_eq!(closed.opened_at.timestamp_millis(), DAY * MIN);
    assert_eq!(
        (closed.reason, closed.price_close),
        (CloseReason::TimeExpired, 100.8)
    );
    assert_eq!(closed.closed_at.timestamp_millis(), 3 * DAY * MIN);
}

/// SPEC 8: a signal at the last frame has no later candle to replay it over: rejected,
/// never opened at a price and closed at an older one.
#[test]
fn a_signal_at_the_last_frame_is_rejected() {
    let mut signals: Vec<Option<Signal>> = vec![None; 4]; // frames at minutes 1..=4
    signals.push(Some(Signal::long(102.0, 98.0))); // minute 5: the last frame
    let r = run(candles(5, &[]), &mut Script::new(signals));
    assert!(r.closed.is_empty());
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].reason, Rejection::NoLaterCandle);
    assert_eq!(r.rejected[0].at.timestamp_millis(), 5 * MIN);
}
