//! `tracing` integration (feature `tracing-layer`): a [`Layer`] that turns every closed
//! span into a [`PerformanceContract`] on the bus, so code marked `#[instrument]` is
//! tracked with no other change.
//!
//! The span's name becomes the `metricType`; its `symbol` and `strategy` (or
//! `strategy_name`) fields become the key, inherited from the nearest ancestor span that
//! has them. The duration runs from the span's creation to its close, awaits included,
//! measured with the process clock of [`crate::span`] like every other event; the event
//! carries its own id, its parent span's id, and its self time (less its child spans).
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

use std::cell::RefCell;
use std::fmt::Debug;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::emitter::PerformanceEmitter;
use super::event::{MetricType, PerformanceContract};
use super::name::Name;
use super::span;

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
    id: u64,
    start_ns: u64,
    /// Time spent in child spans that closed, ns.
    children_ns: u64,
    symbol: Option<Name>,
    strategy: Option<Name>,
}

/// Names recently seen on this thread: span fields repeat the same few symbols and
/// strategies, and comparing a short string is cheaper than the global interner.
const RECENT: usize = 8;

thread_local! {
    static RECENT_NAMES: RefCell<Vec<Name>> = const { RefCell::new(Vec::new()) };
    /// Span names (`&'static str`) by address, and their metric types.
    static METRICS: RefCell<Vec<(usize, usize, MetricType)>> = const { RefCell::new(Vec::new()) };
}

/// Whether two short texts are equal, by two overlapping word loads for lengths 4 to 16
/// (symbols and strategy names) rather than a call to `memcmp` per candidate.
#[inline]
fn same_text(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn word<const W: usize>(s: &[u8], at: usize) -> [u8; W] {
        s.get(at..at + W)
            .and_then(|w| w.try_into().ok())
            .unwrap_or([0; W])
    }
    match n {
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        _ => a == b,
    }
}

fn recent_name(text: &str) -> Name {
    RECENT_NAMES.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(i) = recent
            .iter()
            .position(|n| same_text(n.as_str().as_bytes(), text.as_bytes()))
        {
            return recent[i];
        }
        let name = Name::new(text);
        if recent.len() == RECENT {
            recent.pop();
        }
        recent.insert(0, name);
        name
    })
}

fn metric_of(span_name: &'static str) -> MetricType {
    let key = (span_name.as_ptr() as usize, span_name.len());
    METRICS.with(|metrics| {
        let mut metrics = metrics.borrow_mut();
        if let Some((_, _, metric)) = metrics.iter().find(|(p, l, _)| (*p, *l) == key) {
            return *metric;
        }
        let metric = MetricType::parse(span_name);
        if metrics.len() == 4 * RECENT {
            metrics.pop();
        }
        metrics.insert(0, (key.0, key.1, metric));
        metric
    })
}

impl Visit for Timing {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "symbol" => self.symbol = Some(recent_name(value)),
            "strategy" | "strategy_name" | "strategyName" => {
                self.strategy = Some(recent_name(value))
            }
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
        let (symbol, strategy) = span
            .parent()
            .and_then(|parent| {
                parent
                    .extensions()
                    .get::<Timing>()
                    .map(|t| (t.symbol, t.strategy))
            })
            .unwrap_or((None, None));
        let mut timing = Timing {
            id: span::next_id(),
            start_ns: span::now_ns(),
            children_ns: 0,
            symbol,
            strategy,
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
        let end_ns = span::now_ns();
        let extensions = span.extensions();
        let Some(timing) = extensions.get::<Timing>() else {
            return;
        };
        let duration_ns = end_ns.saturating_sub(timing.start_ns);
        let parent = span.parent();
        let parent_id = parent.as_ref().and_then(|p| {
            let mut parent_extensions = p.extensions_mut();
            let parent_timing = parent_extensions.get_mut::<Timing>()?;
            parent_timing.children_ns = parent_timing.children_ns.saturating_add(duration_ns);
            Some(parent_timing.id)
        });
        let closed = span::Closed {
            id: timing.id,
            parent: parent_id,
            duration_ns,
            self_ns: duration_ns.saturating_sub(timing.children_ns),
        };
        let event = PerformanceContract {
            symbol: timing.symbol,
            strategy_name: timing.strategy,
            ..closed.event(metric_of(span.name()), end_ns)
        };
        // A span's own measurement with the process clock: valid by construction.
        self.bus.emit_measured(event);
    }
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn short_texts_compare_byte_for_byte() {
        for n in 0..=20usize {
            let a: Vec<u8> = (0..n).map(|i| b'A' + i as u8).collect();
            assert!(same_text(&a, &a.clone()), "length {n}");
            // A difference at any position is seen.
            for at in 0..n {
                let mut b = a.clone();
                b[at] = b'z';
                assert!(!same_text(&a, &b), "length {n}, byte {at}");
            }
            let longer = [a.as_slice(), b"x"].concat();
            assert!(!same_text(&a, &longer), "length {n} against {}", n + 1);
        }
    }
}
