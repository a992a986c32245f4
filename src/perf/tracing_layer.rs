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
    static RECENT_NAMES: RefCell<Recent> = const { RefCell::new(Recent::EMPTY) };
    static LONG_NAMES: RefCell<Vec<Name>> = const { RefCell::new(Vec::new()) };
    /// Span names (`&'static str`) by address, and their metric types.
    static METRICS: RefCell<Vec<(usize, usize, MetricType)>> = const { RefCell::new(Vec::new()) };
}

/// A text of at most 24 bytes by value: its length and three words that together hold
/// every byte (overlapping where the text is shorter), so two such texts are equal
/// exactly when their `Short`s are. Symbols and strategy names nearly always fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Short {
    len: u64,
    words: [u64; 3],
}

impl Short {
    /// Matches no text: no text is that long.
    const NONE: Short = Short {
        len: u64::MAX,
        words: [0; 3],
    };

    #[inline]
    fn of(text: &[u8]) -> Option<Short> {
        // The 8 (or 4) bytes at `at`, little-endian; in range for the lengths below.
        let word = |at: usize| {
            text.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes)
        };
        let half = |at: usize| {
            text.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
        };
        let len = text.len();
        let words = match len {
            17..=24 => [word(0), word(8), word(len - 8)],
            8..=16 => [word(0), word(len - 8), 0],
            4..=7 => [half(0), half(len - 4), 0],
            0..=3 => [
                text.iter()
                    .rev()
                    .fold(0, |w, &byte| (w << 8) | u64::from(byte)),
                0,
                0,
            ],
            _ => return None,
        };
        Some(Short {
            len: len as u64,
            words,
        })
    }
}

/// The names a thread saw last, by their text's value, replaced in turn. Nothing in it
/// needs dropping, so the thread-local holding it is reached without a destructor's
/// bookkeeping (a `Vec` in it made the layer 4% slower).
struct Recent {
    keys: [Short; RECENT],
    names: [Option<Name>; RECENT],
    next: usize,
}

impl Recent {
    const EMPTY: Recent = Recent {
        keys: [Short::NONE; RECENT],
        names: [None; RECENT],
        next: 0,
    };

    /// The name of `key`: every slot compared, without a branch per slot (the symbols
    /// of successive spans take turns, and a search that stopped at the first match
    /// mispredicted where it stopped).
    #[inline]
    fn find(&self, key: &Short) -> Option<Name> {
        let mut hit = RECENT;
        for (i, k) in self.keys.iter().enumerate() {
            if k == key {
                hit = i;
            }
        }
        self.names.get(hit).copied().flatten()
    }

    fn insert(&mut self, key: Short, name: Name) {
        let at = self.next % RECENT;
        if let (Some(k), Some(n)) = (self.keys.get_mut(at), self.names.get_mut(at)) {
            *k = key;
            *n = Some(name);
        }
        self.next = (at + 1) % RECENT;
    }
}

/// The name of a text longer than a [`Short`] holds: the thread's recent long names,
/// newest first, compared as text.
#[cold]
fn long_name(text: &str) -> Name {
    LONG_NAMES.with(|long| {
        let mut long = long.borrow_mut();
        if let Some(name) = long.iter().find(|n| n.as_str() == text) {
            return *name;
        }
        let name = Name::new(text);
        long.truncate(RECENT - 1);
        long.insert(0, name);
        name
    })
}

fn recent_name(text: &str) -> Name {
    let Some(key) = Short::of(text.as_bytes()) else {
        return long_name(text);
    };
    RECENT_NAMES.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(name) = recent.find(&key) {
            return name;
        }
        let name = Name::new(text);
        recent.insert(key, name);
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
        // The registry's guards go first: releasing them (locked instructions) after the
        // event's stores into storage made them wait for those stores.
        drop(extensions);
        drop(parent);
        drop(span);
        // A span's own measurement with the process clock: valid by construction.
        self.bus.emit_measured(event);
    }
}

#[cfg(test)]
mod tests {
    use super::{LONG_NAMES, Short, recent_name};

    #[test]
    fn short_texts_are_equal_exactly_when_their_values_are() {
        for n in 0..=24usize {
            let a: Vec<u8> = (0..n).map(|i| b'A' + i as u8).collect();
            assert_eq!(Short::of(&a), Short::of(&a.clone()), "length {n}");
            // A difference at any position is seen.
            for at in 0..n {
                let mut b = a.clone();
                b[at] = b'z';
                assert_ne!(Short::of(&a), Short::of(&b), "length {n}, byte {at}");
            }
            let longer = [a.as_slice(), b"A"].concat();
            assert_ne!(
                Short::of(&a),
                Short::of(&longer),
                "length {n} against {}",
                n + 1
            );
        }
        // Zero bytes are text too, not padding.
        assert_ne!(Short::of(b"ab"), Short::of(b"ab\0"));
        assert_ne!(Short::of(b""), Short::of(b"\0"));
        assert_eq!(Short::of(&[b'x'; 25]), None);
    }

    #[test]
    fn recent_names_are_the_interned_names_of_their_texts() {
        let long = "a-strategy-name-longer-than-twenty-four-bytes";
        let longer = "another-strategy-name-longer-than-twenty-four-bytes";
        for text in [
            longer,
            "BTCUSDT",
            "ETHUSDT",
            "",
            "sma",
            long,
            "donchian-breakout",
            "BTCUSDT",
            long,
        ] {
            assert_eq!(recent_name(text).as_str(), text);
        }
        // Past the eight kept, the oldest are found again through the interner.
        for i in 0..20 {
            let text = format!("SYM{i}");
            assert_eq!(recent_name(&text).as_str(), text);
        }
        for text in [
            "BTCUSDT",
            "SYM0",
            "SYM19",
            "donchian-breakout",
            longer,
            long,
        ] {
            assert_eq!(recent_name(text).as_str(), text);
        }
        // Long names too are kept up to eight.
        for i in 0..20 {
            let text = format!("a-long-strategy-name-number-{i}");
            assert_eq!(recent_name(&text).as_str(), text);
        }
        LONG_NAMES.with(|long| assert_eq!(long.borrow().len(), 8));
    }
}
