//! `tracing` integration (feature `tracing-layer`): a [`Layer`] that turns every closed
//! span into a [`PerformanceContract`] on the bus, so code marked `#[instrument]` is
//! tracked with no other change.
//!
//! The span's name becomes the `metricType`; its `symbol` and `strategy` (or
//! `strategy_name`) fields become the key. The duration runs from the span's creation to
//! its close, awaits included.
//!
//! ```
//! use backtest_perf::tracing_layer::PerformanceLayer;
//! use backtest_perf::{PerformanceEmitter, PerformanceService};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let bus = PerformanceEmitter::new();
//! let service = PerformanceService::attached(&bus);
//! let subscriber = tracing_subscriber::registry().with(PerformanceLayer::new(bus.clone()));
//!
//! #[tracing::instrument(fields(symbol = "BTCUSDT", strategy = "sma"))]
//! fn load_indicators() -> usize {
//!     42
//! }
//!
//! tracing::subscriber::with_default(subscriber, || load_indicators());
//! assert_eq!(service.get_data("BTCUSDT", "sma").metric_stats.keys().next().unwrap().as_str(), "load_indicators");
//! ```

use std::fmt::Debug;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::emitter::PerformanceEmitter;
use super::event::{MetricType, PerformanceContract};
use super::name::Name;

/// Puts closed spans on a performance bus; see the [module documentation](self).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(backtest_perf::tracing_layer::PerformanceLayer::global());
/// # drop(subscriber);
/// ```
#[derive(Clone, Debug)]
pub struct PerformanceLayer {
    bus: PerformanceEmitter,
}

impl PerformanceLayer {
    /// A layer emitting onto `bus`.
    ///
    /// ```
    /// let _layer = backtest_perf::tracing_layer::PerformanceLayer::new(backtest_perf::PerformanceEmitter::new());
    /// ```
    pub fn new(bus: PerformanceEmitter) -> Self {
        PerformanceLayer { bus }
    }

    /// A layer emitting onto the process-wide bus ([`crate::performance_emitter`]).
    ///
    /// ```
    /// let _layer = backtest_perf::tracing_layer::PerformanceLayer::global();
    /// ```
    pub fn global() -> Self {
        Self::new(crate::performance_emitter().clone())
    }
}

/// What the layer keeps in each span's extensions.
struct Timing {
    start: Instant,
    symbol: Option<Name>,
    strategy: Option<Name>,
}

impl Visit for Timing {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "symbol" => self.symbol = Some(Name::new(value)),
            "strategy" | "strategy_name" | "strategyName" => self.strategy = Some(Name::new(value)),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if matches!(
            field.name(),
            "symbol" | "strategy" | "strategy_name" | "strategyName"
        ) {
            let text = format!("{value:?}");
            self.record_str(field, text.trim_matches('"'));
        }
    }
}

impl<S> Layer<S> for PerformanceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.bus.is_enabled() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut timing = Timing {
            start: Instant::now(),
            symbol: None,
            strategy: None,
        };
        attrs.record(&mut timing);
        span.extensions_mut().insert(timing);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(timing) = span.extensions_mut().get_mut::<Timing>()
        {
            values.record(timing);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(timing) = extensions.get::<Timing>() else {
            return;
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let event = PerformanceContract {
            symbol: timing.symbol,
            strategy_name: timing.strategy,
            ..PerformanceContract::new(
                MetricType::parse(span.name()),
                timing.start.elapsed().as_secs_f64() * 1000.0,
                timestamp,
            )
        };
        // A span's own measurement is always valid; a rejection would only be counted.
        let _ = self.bus.emit(event);
    }
}
