//! Running a backtest: the frame loop, signal checks, scheduled entries and the replay.

use std::sync::Arc;

use serde::Serialize;

use super::candle::{Candle, CandleSeries, Millis, to_utc};
use super::exchange::{Exchange, ExchangeError};
use super::frame::Frame;
use super::signal::{
    CancelledSignal, CloseReason, ClosedSignal, Costs, Position, RejectedSignal, Rejection, Signal,
    pnl_percent,
};
use super::strategy::{Context, Strategy, average_price};
use super::stream::{Source, Window};
use super::synthetic::SyntheticConfig;
use super::timing::{Hook, HookTimer, SlowHook};
use crate::tracker::{BusTarget, RunInfo, Tracker, TrackerOptions, TrackerReport};
use crate::{Name, PerformanceEmitter, performance_emitter};

/// How a run trades, what it waits for, and how it is tracked.
///
/// ```
/// use backtest_perf::engine::{BacktestConfig, Costs};
/// use backtest_perf::tracker::TrackerOptions;
/// let config = BacktestConfig {
///     costs: Costs { fee: 0.0005, slippage: 0.0 },
///     tracker: TrackerOptions::default(), // track every hook of the run
///     ..BacktestConfig::default()
/// };
/// assert_eq!((config.entry_wait_minutes, config.vwap_candles), (120, 5));
/// ```
#[derive(Clone, Debug)]
pub struct BacktestConfig {
    /// Fee and slippage per side.
    pub costs: Costs,
    /// How long a signal with an entry price waits for it, minutes.
    pub entry_wait_minutes: i64,
    /// Candles in the VWAP.
    pub vwap_candles: usize,
    /// The run's tracker (disabled by default), and the thresholds slow hooks are
    /// judged by (those apply whenever hooks are timed).
    pub tracker: TrackerOptions,
    /// Time 1 tick in this many (the first, then every N-th), with everything nested
    /// inside it; the others are counted, not timed. 1 (the default) times every tick.
    pub sample_every: u32,
    /// Past candles a run over candles made as it goes ([`Backtest::synthetic`]) keeps:
    /// the most a strategy may ask for at once (100,000 by default, 4.8 MB). A run over
    /// a series held whole serves any number.
    pub stream_lookback: usize,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            costs: Costs::default(),
            entry_wait_minutes: 120,
            vwap_candles: 5,
            tracker: TrackerOptions::disabled(),
            sample_every: 1,
            stream_lookback: 100_000,
        }
    }
}

/// Totals of a run.
///
/// ```
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let backtest = Backtest::new(&exchange, "SYN").unwrap();
/// let summary = backtest.run(&mut backtest_perf::strategies::SmaCrossover::default()).unwrap().summary;
/// assert_eq!(summary.wins + summary.losses, summary.signals);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Closed signals.
    pub signals: usize,
    /// Closed with PnL > 0.
    pub wins: usize,
    /// Closed with PnL <= 0.
    pub losses: usize,
    /// `wins / signals * 100`; 0 with no signals.
    pub win_rate: f64,
    /// Sum of PnL, percent.
    pub total_pnl: f64,
    /// Mean PnL, percent; 0 with no signals.
    pub avg_pnl: f64,
}

impl Summary {
    /// The totals of `closed`.
    ///
    /// ```
    /// use backtest_perf::engine::Summary;
    /// let none = Summary::of(&[]);
    /// assert_eq!((none.signals, none.win_rate, none.avg_pnl), (0, 0.0, 0.0));
    /// ```
    pub fn of(closed: &[ClosedSignal]) -> Self {
        let signals = closed.len();
        let wins = closed.iter().filter(|c| c.pnl_percent > 0.0).count();
        let total_pnl: f64 = closed.iter().map(|c| c.pnl_percent).sum();
        let per = |x: f64| {
            if signals == 0 {
                0.0
            } else {
                x / signals as f64
            }
        };
        Summary {
            signals,
            wins,
            losses: signals - wins,
            win_rate: per(wins as f64 * 100.0),
            total_pnl,
            avg_pnl: per(total_pnl),
        }
    }
}

/// What a run did. Serializes to JSON.
///
/// ```
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::SmaCrossover;
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let result = Backtest::new(&exchange, "SYN").unwrap().run(&mut SmaCrossover::default()).unwrap();
/// assert_eq!(result.summary.signals, result.closed.len());
/// let json = serde_json::to_value(&result).unwrap();
/// assert_eq!(json["strategy"], "sma-crossover");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BacktestResult {
    /// The symbol.
    pub symbol: Name,
    /// The strategy's name.
    pub strategy: Name,
    /// Frame times ticked.
    pub frames: u64,
    /// Positions opened and closed, in order.
    pub closed: Vec<ClosedSignal>,
    /// Signals that failed their check.
    pub rejected: Vec<RejectedSignal>,
    /// Signals whose entry price was not touched in time.
    pub cancelled: Vec<CancelledSignal>,
    /// Totals.
    pub summary: Summary,
    /// Hooks slower than their thresholds (at most [`SLOW_HOOKS_KEPT`](super::timing::SLOW_HOOKS_KEPT)).
    pub slow_hooks: Vec<SlowHook>,
    /// How many hooks were slow, listed or not.
    pub slow_hooks_total: u64,
    /// The run tracker's report, when it was enabled.
    pub tracker: Option<TrackerReport>,
}

/// A run failed: the strategy returned an error, or the exchange could not serve it.
///
/// ```
/// use backtest_perf::engine::{Backtest, Context, Signal, Strategy, StrategyError, SyntheticConfig, SyntheticExchange};
/// struct Broken;
/// impl Strategy for Broken {
///     fn name(&self) -> &str { "broken" }
///     fn get_signal(&mut self, _: &mut Context<'_>) -> Result<Option<Signal>, StrategyError> {
///         Err("no model loaded".into())
///     }
/// }
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
/// let err = Backtest::new(&exchange, "SYN").unwrap().run(&mut Broken).unwrap_err();
/// assert_eq!(err.to_string(), "strategy broken failed at 2024-01-01T00:01:00+00:00: no model loaded");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The exchange could not serve the run. Fix: check the symbol and data.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The strategy's signal function failed at a frame time.
    #[error("strategy {strategy} failed at {when}: {source}")]
    Strategy {
        /// The strategy.
        strategy: String,
        /// The frame time, RFC 3339.
        when: String,
        /// Its error.
        source: super::strategy::StrategyError,
    },
}

/// Called with the number of frames ticked since the last call.
///
/// ```
/// use std::sync::Arc;
/// let progress: backtest_perf::engine::Progress = Arc::new(|frames| eprintln!("{frames} more frames"));
/// # drop(progress);
/// ```
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Where a backtest's candles come from.
enum Data<'a> {
    Series {
        exchange: &'a dyn Exchange,
        series: &'a CandleSeries,
    },
    Synthetic {
        symbol: Name,
        config: SyntheticConfig,
    },
}

/// One backtest: a symbol on an exchange over a frame.
///
/// ```
/// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
/// use backtest_perf::strategies::SmaCrossover;
/// use backtest_perf::PerformanceEmitter;
///
/// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(2)).unwrap();
/// let bus = PerformanceEmitter::new(); // or leave it out for the global bus
/// let backtest = Backtest::new(&exchange, "SYN").unwrap().with_bus(bus);
/// assert_eq!(backtest.frame().count(), 2 * 1_440);
/// let result = backtest.run(&mut SmaCrossover::default()).unwrap();
/// // Frames during which a position was open are skipped.
/// assert!(result.frames < 2 * 1_440 && result.summary.signals > 0);
/// ```
pub struct Backtest<'a> {
    data: Data<'a>,
    frame: Frame,
    config: BacktestConfig,
    bus: PerformanceEmitter,
    progress: Option<Progress>,
}

impl<'a> Backtest<'a> {
    /// A backtest of `symbol` over all its candles, default config, on the global bus.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// assert!(Backtest::new(&exchange, "SYN").is_ok());
    /// assert_eq!(
    ///     Backtest::new(&exchange, "XYZ").err().unwrap().to_string(),
    ///     "no candles for symbol XYZ; this exchange has: SYN"
    /// );
    /// ```
    pub fn new(exchange: &'a dyn Exchange, symbol: &str) -> Result<Self, ExchangeError> {
        let series = exchange.series(Name::new(symbol))?;
        Ok(Backtest {
            data: Data::Series { exchange, series },
            frame: Frame::of_series(series),
            config: BacktestConfig::default(),
            bus: performance_emitter().clone(),
            progress: None,
        })
    }

    /// A backtest of seeded synthetic candles made as the run goes: the same candles and
    /// the same results as over a [`SyntheticExchange`](super::SyntheticExchange) of
    /// `config`, but only a window of them is held at once (a few megabytes, where ten
    /// years of minutes held whole take 252 MB). A strategy may look back on the last
    /// [`BacktestConfig::stream_lookback`] candles. Fails, naming the parameter, as
    /// [`generate`](super::synthetic::generate) does.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// use backtest_perf::strategies::SmaCrossover;
    /// use backtest_perf::PerformanceEmitter;
    ///
    /// let config = SyntheticConfig::days(3);
    /// let streamed = Backtest::synthetic("SYN", config).unwrap().with_bus(PerformanceEmitter::new());
    /// let exchange = SyntheticExchange::new("SYN".into(), config).unwrap();
    /// let held = Backtest::new(&exchange, "SYN").unwrap().with_bus(PerformanceEmitter::new());
    /// assert_eq!(streamed.frame(), held.frame());
    /// let (a, b) = (
    ///     streamed.run(&mut SmaCrossover::default()).unwrap(),
    ///     held.run(&mut SmaCrossover::default()).unwrap(),
    /// );
    /// assert_eq!((a.frames, &a.closed), (b.frames, &b.closed));
    /// assert!(Backtest::synthetic("SYN", SyntheticConfig { minutes: 0, ..config }).is_err());
    /// ```
    pub fn synthetic(
        symbol: &str,
        config: SyntheticConfig,
    ) -> Result<Backtest<'static>, super::CandleError> {
        let window = Window::synthetic(Name::new(symbol), &config, 1)?;
        let frame = Frame {
            start: window.close_time(0),
            end: window.close_time(window.len() - 1),
            interval: window.interval(),
        };
        Ok(Backtest {
            data: Data::Synthetic {
                symbol: Name::new(symbol),
                config,
            },
            frame,
            config: BacktestConfig::default(),
            bus: performance_emitter().clone(),
            progress: None,
        })
    }

    /// The run's candles, from the start.
    fn source(&self) -> Result<Source<'a>, ExchangeError> {
        Ok(match &self.data {
            Data::Series { exchange, series } => Source::Series {
                exchange: *exchange,
                series,
                untimed: exchange.serves_untimed(),
            },
            Data::Synthetic { symbol, config } => Source::Window(Box::new(
                Window::synthetic(*symbol, config, self.config.stream_lookback).map_err(|e| {
                    ExchangeError::Candle {
                        symbol: symbol.to_string(),
                        index: e.index,
                        problem: e.problem,
                    }
                })?,
            )),
        })
    }

    /// The symbol traded.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig};
    /// assert_eq!(Backtest::synthetic("SYN", SyntheticConfig::days(1)).unwrap().symbol(), "SYN");
    /// ```
    pub fn symbol(&self) -> Name {
        match &self.data {
            Data::Series { series, .. } => series.symbol(),
            Data::Synthetic { symbol, .. } => *symbol,
        }
    }

    /// Runs over `frame` instead.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, Frame, Interval, SyntheticConfig, SyntheticExchange};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let full = Backtest::new(&exchange, "SYN").unwrap().frame();
    /// let hour = Frame { end: full.start + 59 * 60_000, ..full };
    /// assert_eq!(Backtest::new(&exchange, "SYN").unwrap().with_frame(hour).frame().count(), 60);
    /// ```
    pub fn with_frame(mut self, frame: Frame) -> Self {
        self.frame = frame;
        self
    }

    /// Uses `config` (see [`BacktestConfig`]).
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let backtest = Backtest::new(&exchange, "SYN").unwrap();
    /// let config = backtest_perf::engine::BacktestConfig { vwap_candles: 10, ..Default::default() };
    /// let result = backtest.with_config(config).run(&mut backtest_perf::strategies::SmaCrossover::default());
    /// assert!(result.is_ok());
    /// ```
    pub fn with_config(mut self, config: BacktestConfig) -> Self {
        self.config = config;
        self
    }

    /// Times the hooks onto `bus` instead of the global one.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// use backtest_perf::strategies::DonchianBreakout;
    /// use backtest_perf::{PerformanceEmitter, PerformanceService};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let bus = PerformanceEmitter::new();
    /// let service = PerformanceService::attached(&bus);
    /// Backtest::new(&exchange, "SYN").unwrap().with_bus(bus).run(&mut DonchianBreakout::default()).unwrap();
    /// assert!(service.get_data("SYN", "donchian-breakout").total_events > 0);
    /// ```
    pub fn with_bus(mut self, bus: PerformanceEmitter) -> Self {
        self.bus = bus;
        self
    }

    /// Reports progress now and then: frame positions passed since the last report
    /// (frames skipped while a position was open included), summing to the frame count.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// use backtest_perf::strategies::SmaCrossover;
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let done = Arc::new(AtomicU64::new(0));
    /// let seen = done.clone();
    /// let backtest = Backtest::new(&exchange, "SYN").unwrap().with_progress(Arc::new(move |n| {
    ///     seen.fetch_add(n, Ordering::Relaxed);
    /// }));
    /// backtest.run(&mut SmaCrossover::default()).unwrap();
    /// assert_eq!(done.load(Ordering::Relaxed), 1_440);
    /// ```
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The frame the run ticks over.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let backtest = Backtest::new(&exchange, "SYN").unwrap();
    /// assert_eq!(backtest.frame().count(), 1_440);
    /// ```
    pub fn frame(&self) -> Frame {
        self.frame
    }

    /// Runs `strategy`: ticks every frame, asks for signals at most once per the
    /// strategy's interval, checks, waits for and replays them, and times the hooks.
    ///
    /// ```
    /// use backtest_perf::engine::{Backtest, SyntheticConfig, SyntheticExchange};
    /// let exchange = SyntheticExchange::new("SYN".into(), SyntheticConfig::days(1)).unwrap();
    /// let backtest = Backtest::new(&exchange, "SYN").unwrap();
    /// let result = backtest.run(&mut backtest_perf::strategies::DonchianBreakout::default()).unwrap();
    /// assert!(result.frames <= 1_440);
    /// ```
    pub fn run(&self, strategy: &mut dyn Strategy) -> Result<BacktestResult, BacktestError> {
        let strategy_name = Name::new(strategy.name());
        let mut source = self.source()?;
        let symbol = source.symbol();
        let run = RunInfo {
            id: format!("{symbol}:{strategy_name}:{}", self.frame.start),
            symbol: Some(symbol.to_string()),
            strategy: Some(strategy_name.to_string()),
            from: Some(to_utc(self.frame.start)),
            to: Some(to_utc(self.frame.end)),
        };
        // The run's tracker keeps the timeline when the config asks for one, and always puts
        // the strategy's own steps (`ctx.tracker()`) on the bus.
        let tracker = Tracker::on_bus(
            run,
            self.config.tracker.clone(),
            BusTarget {
                bus: self.bus.clone(),
                symbol,
                strategy: strategy_name,
            },
        );
        let mut timer = HookTimer::new(
            self.bus.clone(),
            symbol,
            strategy_name,
            &self.config.tracker,
            tracker.clone(),
        );
        let mut result = BacktestResult {
            symbol,
            strategy: strategy_name,
            frames: 0,
            closed: Vec::new(),
            rejected: Vec::new(),
            cancelled: Vec::new(),
            summary: Summary::default(),
            slow_hooks: Vec::new(),
            slow_hooks_total: 0,
            tracker: None,
        };
        let throttle = strategy.interval().millis();
        let mut last_call: Option<Millis> = None;
        let (mut unreported, mut passed) = (0, 0);
        let mut when = self.frame.start;
        let sample_every = u64::from(self.config.sample_every.max(1));
        // Ticks until the next timed one (sampling): a count down, not a division a tick.
        let mut until_timed: u64 = 0;
        while when <= self.frame.end {
            if sample_every > 1 {
                // Timed when the frame's index is a multiple of `sample_every`.
                timer.set_timed(until_timed == 0);
                until_timed = until_timed.checked_sub(1).unwrap_or(sample_every - 1);
            }
            // Between ticks: a window makes the candles the tick may need.
            source.advance(when)?;
            let mut next = when + self.frame.interval.millis();
            if last_call.is_none_or(|t| when - t >= throttle) {
                last_call = Some(when);
                // The tick and the signal function start together.
                let (tick, signal_started) = timer.start_tick_and_signal();
                let mut ctx = Context {
                    source: &source,
                    when,
                    timer: &mut timer,
                    tracker: &tracker,
                    vwap_candles: self.config.vwap_candles,
                };
                ctx.timer.mark_signal_memory();
                // The tick ends with the signal function unless a signal is then handled.
                match strategy.get_signal(&mut ctx) {
                    Ok(None) => timer.finish_signal_and_tick(signal_started, tick, when),
                    Ok(Some(signal)) => {
                        let _ = timer.finish(Hook::GetSignal, signal_started, when);
                        if let Some(resume) =
                            self.handle(signal, when, &mut source, &mut timer, &mut result)?
                        {
                            next = next.max(self.frame.first_at_or_after(resume));
                        }
                        let _ = timer.finish(Hook::Tick, tick, when);
                    }
                    Err(source) => {
                        // The run stops; its last tick and signal call are recorded as failed.
                        let asked = timer.finish(Hook::GetSignal, signal_started, when);
                        timer.fail_last(Hook::GetSignal);
                        timer.finish_at(Hook::Tick, tick, asked, when);
                        timer.fail_last(Hook::Tick);
                        return Err(BacktestError::Strategy {
                            strategy: strategy_name.to_string(),
                            when: to_utc(when).to_rfc3339(),
                            source,
                        });
                    }
                }
            } else {
                let tick = timer.start_tick();
                let _ = timer.finish(Hook::Tick, tick, when);
            }
            result.frames += 1;
            // Between ticks, where no hook is being timed.
            room_ahead(&mut result.closed);
            room_ahead(&mut result.cancelled);
            room_ahead(&mut result.rejected);
            // Progress counts frame positions passed, the skipped ones included.
            let step = next - when;
            let interval = self.frame.interval.millis();
            // One frame on (nearly every tick) without a division.
            unreported += if step == interval {
                1
            } else {
                (step / interval).max(1) as u64
            };
            if unreported >= 8192 {
                if let Some(progress) = &self.progress {
                    progress(unreported);
                }
                passed += unreported;
                unreported = 0;
            }
            when = next;
        }
        if let Some(progress) = &self.progress {
            // The last step may reach past the end of the frame.
            progress(unreported.min(self.frame.count().saturating_sub(passed)));
        }
        timer.flush();
        result.summary = Summary::of(&result.closed);
        (result.slow_hooks, result.slow_hooks_total) = timer.take_slow();
        result.tracker = tracker.finish();
        Ok(result)
    }

    /// Checks, waits for and replays one signal given at `when`. Returns when the frame
    /// loop may go on, if the signal took time.
    fn handle(
        &self,
        signal: Signal,
        when: Millis,
        source: &mut Source<'_>,
        timer: &mut HookTimer,
        result: &mut BacktestResult,
    ) -> Result<Option<Millis>, ExchangeError> {
        let entry = match signal.price_open {
            Some(price) => Some(price),
            None => average_price(source, when, self.config.vwap_candles, timer)?,
        };
        let checked = entry
            .ok_or(Rejection::NoPrice)
            .and_then(|entry| signal.check(entry).map(|()| entry));
        // A signal opening at once with no later candle is not opened (SPEC 8): it could
        // only close at a price from before it opened. (One with an entry price waits for
        // a candle to touch it; with none to come, it is cancelled as any untouched one.)
        let checked = checked.and_then(|entry| {
            if signal.price_open.is_some() || source.first_open_at_or_after(when) < source.len() {
                Ok(entry)
            } else {
                Err(Rejection::NoLaterCandle)
            }
        });
        let entry = match checked {
            Ok(entry) => entry,
            Err(reason) => {
                // The signal function's outcome was a signal that cannot be opened.
                timer.fail_last(Hook::GetSignal);
                result.rejected.push(RejectedSignal {
                    signal,
                    at: to_utc(when),
                    reason,
                });
                return Ok(None);
            }
        };
        // The candles it replays over: a window makes any it has not made yet (only a
        // position longer than the window's reach ahead has any left to make).
        let (first, last) = self.reach(&signal, when, source);
        source.load_to(last.saturating_add(1))?;
        let started = timer.start();
        let outcome = self.replay(&signal, entry, when, (first, last), source, timer);
        let _ = timer.finish(Hook::Backtest, started, when);
        Ok(Some(match outcome? {
            Outcome::Closed(closed) => {
                let resume = closed.closed_at.timestamp_millis();
                result.closed.push(closed);
                resume
            }
            Outcome::Cancelled(cancelled) => {
                let resume = cancelled.cancelled_at.timestamp_millis();
                result.cancelled.push(cancelled);
                resume
            }
        }))
    }

    /// How long a signal given at `when` may wait for its entry, and may last.
    fn wait_and_lifetime(&self, signal: &Signal) -> (Millis, Millis) {
        let wait = if signal.price_open.is_some() {
            self.config.entry_wait_minutes * 60_000
        } else {
            0
        };
        (wait, i64::from(signal.lifetime_minutes) * 60_000)
    }

    /// The positions of the candles a signal given at `when` replays over: every candle
    /// that opens before the wait and the lifetime are over, and one more to tell whether
    /// the data goes on past them.
    fn reach(&self, signal: &Signal, when: Millis, source: &Source<'_>) -> (usize, usize) {
        let (wait, lifetime) = self.wait_and_lifetime(signal);
        (
            source.first_open_at_or_after(when),
            source.first_open_at_or_after(when + wait + lifetime),
        )
    }

    /// Waits for the entry (if the signal has a price) and follows the position candle by
    /// candle until it closes.
    fn replay(
        &self,
        signal: &Signal,
        entry: f64,
        when: Millis,
        (first, last): (usize, usize),
        series: &Source<'_>,
        timer: &mut HookTimer,
    ) -> Result<Outcome, ExchangeError> {
        let (wait, lifetime) = self.wait_and_lifetime(signal);
        let fetched = timer.start_fetch(series);
        let candles = series.from(when, last - first + 1);
        let _ = timer.finish(Hook::GetCandles, fetched, when);
        let candles = candles?;

        let (opened_at, from) = if signal.price_open.is_some() {
            let touched = candles
                .iter()
                .take_while(|c| c.open_time < when + wait)
                .position(|c| match signal.position {
                    Position::Long => c.low <= entry,
                    Position::Short => c.high >= entry,
                });
            match touched {
                Some(i) => (candles[i].open_time, i),
                None => {
                    return Ok(Outcome::Cancelled(CancelledSignal {
                        signal: *signal,
                        at: to_utc(when),
                        cancelled_at: to_utc(when + wait),
                    }));
                }
            }
        } else {
            (when, 0)
        };
        let expires = opened_at + lifetime;
        let closed = |price: f64, closed_at: Millis, reason: CloseReason| {
            Outcome::Closed(ClosedSignal {
                signal: *signal,
                signalled_at: to_utc(when),
                opened_at: to_utc(opened_at),
                closed_at: to_utc(closed_at),
                price_open: entry,
                price_close: price,
                reason,
                pnl_percent: pnl_percent(signal.position, entry, price, self.config.costs),
            })
        };
        let mut last_seen = None;
        for (i, c) in candles.iter().enumerate().skip(from) {
            if c.open_time >= expires {
                break;
            }
            if let Some((price, reason)) = touches(signal, c) {
                // Stamped when the candle that touched closed.
                return Ok(closed(price, series.close_time(first + i), reason));
            }
            last_seen = Some(i);
        }
        let data_goes_on = candles.last().is_some_and(|c| c.open_time >= expires);
        if !data_goes_on {
            // The data ended first: at the last close, when the last candle closed.
            let last = series.len() - 1;
            let price = match last_seen {
                Some(i) => candles[i].close,
                None => series.candle(last)?.close,
            };
            return Ok(closed(
                price,
                series.close_time(last),
                CloseReason::EndOfData,
            ));
        }
        // The lifetime ended first: at the close of the last candle replayed, or, with none
        // inside the lifetime (a gap), at the last close known when it ended; stamped at
        // the later of the lifetime's end and that close, so that a position lasts its
        // lifetime across a gap and never closes before its price is known.
        let (price, known_at) = match last_seen {
            Some(i) => (candles[i].close, series.close_time(first + i)),
            None => match series.closed_by(expires).checked_sub(1) {
                Some(i) => (series.candle(i)?.close, series.close_time(i)),
                None => (entry, expires),
            },
        };
        Ok(closed(
            price,
            expires.max(known_at),
            CloseReason::TimeExpired,
        ))
    }
}

enum Outcome {
    Closed(ClosedSignal),
    Cancelled(CancelledSignal),
}

/// Whether `candle` reaches the stop loss or take profit; the stop loss wins a tie.
fn touches(signal: &Signal, candle: &Candle) -> Option<(f64, CloseReason)> {
    let (stop, profit) = match signal.position {
        Position::Long => (
            candle.low <= signal.stop_loss,
            candle.high >= signal.take_profit,
        ),
        Position::Short => (
            candle.high >= signal.stop_loss,
            candle.low <= signal.take_profit,
        ),
    };
    if stop {
        Some((signal.stop_loss, CloseReason::StopLoss))
    } else if profit {
        Some((signal.take_profit, CloseReason::TakeProfit))
    } else {
        None
    }
}

/// Makes room in `results` for the next signals ahead of need, between ticks, and touches
/// the new memory there: growing a `Vec` (a copy) and the first write to each new page
/// (several microseconds each on a virtual machine) would otherwise fall inside the tick
/// whose signal closed, and make it the run's slowest for no work of its own.
fn room_ahead<T>(results: &mut Vec<T>) {
    /// Signals a tick never outnumbers in practice; below this much room, grow.
    const AHEAD: usize = 16;
    if results.capacity() - results.len() >= AHEAD {
        return;
    }
    results.reserve(results.len().max(4 * AHEAD));
    crate::tracker::memory::touch_spare(results);
}
