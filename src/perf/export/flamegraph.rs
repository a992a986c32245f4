//! Flamegraphs (feature `flamegraph`): the whole run's self time by stack of hooks and
//! user steps, as folded stacks (`tick;getSignal;getCandles 12345`, ns) and as an SVG
//! drawn by [`inferno`].
//!
//! [`FoldedStacks`] is a [`Sink`]: it times nothing, and builds each event's stack from
//! the `id` and `parentId` the producers put on it. Events arrive children first, their
//! root (a tick) last, so an operation's stack is resolved when its root arrives; what
//! waits meanwhile is the subtrees in progress (bounded: past [`MAX_PENDING`] events the
//! oldest are folded with the ancestors known so far, and counted as incomplete). Every
//! operation's self time is counted once, so the folded values add up to the report's
//! time in hooks.
//!
//! ```
//! use std::sync::Arc;
//! use backtest_perf::export::flamegraph::FoldedStacks;
//! use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter};
//!
//! let bus = PerformanceEmitter::new();
//! let stacks = Arc::new(FoldedStacks::default());
//! bus.add_sink(stacks.clone());
//! let event = |m, id, parent: Option<u64>, ms: f64, self_ms: f64| {
//!     let e = PerformanceContract::new(m, ms, 1.7e12).with_symbol("A").with_strategy("s")
//!         .with_id(id).with_self_duration(self_ms);
//!     match parent { Some(p) => e.with_parent(p), None => e }
//! };
//! // Children first: getCandles inside getSignal inside tick.
//! bus.emit(event(MetricType::GetCandles, 3, Some(2), 0.005, 0.005)).unwrap();
//! bus.emit(event(MetricType::GetSignal, 2, Some(1), 0.025, 0.020)).unwrap();
//! bus.emit(event(MetricType::Tick, 1, None, 0.035, 0.010)).unwrap();
//! assert_eq!(
//!     stacks.folded(backtest_perf::StorageKey::new("A", "s")),
//!     "tick 10000\ntick;getSignal 20000\ntick;getSignal;getCandles 5000\n"
//! );
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::dump::{DumpError, safe_file_stem, write_atomic};
use crate::emitter::Sink;
use crate::event::{MetricType, PerformanceContract};
use crate::key::StorageKey;

/// Events waiting for their root, at most; past it the oldest are folded with what is
/// known of their ancestors and counted as incomplete.
pub const MAX_PENDING: usize = 1 << 16;

/// Keys (symbol:strategy) with stacks of their own, at most; events of further keys are
/// counted, not folded.
pub const MAX_KEYS: usize = 4_096;

#[derive(Clone, Copy)]
struct Pending {
    key: StorageKey,
    metric: MetricType,
    parent: Option<u64>,
    self_ns: u64,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending, foldhash::fast::RandomState>,
    /// The pending children of each id, to walk a tree down from its root.
    children: HashMap<u64, Vec<u64>, foldhash::fast::RandomState>,
    /// Pending ids in arrival order, to fold the oldest first when full.
    order: VecDeque<u64>,
    folded: HashMap<StorageKey, BTreeMap<String, u64>, foldhash::fast::RandomState>,
    incomplete: u64,
    over_key_cap: u64,
}

impl State {
    /// The stack of pending `id` from its outermost pending ancestor, `;`-separated.
    fn stack(&self, id: u64) -> String {
        let mut names = Vec::new();
        let mut at = Some(id);
        while let Some(current) = at {
            let Some(p) = self.pending.get(&current) else {
                break;
            };
            names.push(p.metric.as_str());
            at = p.parent;
            if names.len() > 256 {
                break; // a cycle in hostile ids: stop rather than loop
            }
        }
        names.reverse();
        names.join(";")
    }

    fn add(&mut self, key: StorageKey, stack: String, self_ns: u64) {
        if !self.folded.contains_key(&key) && self.folded.len() >= MAX_KEYS {
            self.over_key_cap += 1;
            return;
        }
        let slot = self
            .folded
            .entry(key)
            .or_default()
            .entry(stack)
            .or_default();
        *slot = slot.saturating_add(self_ns);
    }

    fn record(&mut self, event: &PerformanceContract) {
        let key = StorageKey::of(event);
        let self_ns = (event.self_time() * 1e6 + 0.5) as u64;
        let Some(id) = event.id else {
            // Not part of a tree: a stack of its own.
            self.add(key, event.metric_type.as_str().to_string(), self_ns);
            return;
        };
        let pending = Pending {
            key,
            metric: event.metric_type,
            parent: event.parent_id,
            self_ns,
        };
        match event.parent_id {
            None => self.fold_tree(id, pending),
            Some(parent) => {
                self.pending.insert(id, pending);
                self.children.entry(parent).or_default().push(id);
                self.order.push_back(id);
            }
        }
        while self.pending.len() > MAX_PENDING {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.pending.contains_key(&oldest) {
                self.incomplete += 1;
                self.fold_one(oldest);
            }
        }
    }

    /// Folds a root and every pending operation below it, walking down from the root.
    fn fold_tree(&mut self, root: u64, pending: Pending) {
        let root_stack = pending.metric.as_str().to_string();
        self.add(pending.key, root_stack.clone(), pending.self_ns);
        let mut todo = vec![(root, root_stack)];
        while let Some((id, stack)) = todo.pop() {
            for child in self.children.remove(&id).unwrap_or_default() {
                if let Some(p) = self.pending.remove(&child) {
                    let child_stack = format!("{stack};{}", p.metric.as_str());
                    self.add(p.key, child_stack.clone(), p.self_ns);
                    todo.push((child, child_stack));
                }
            }
        }
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order.retain(|id| pending.contains_key(id));
        }
    }

    fn fold_one(&mut self, id: u64) {
        let stack = self.stack(id);
        if let Some(p) = self.pending.remove(&id) {
            self.add(p.key, stack, p.self_ns);
        }
    }
}

/// Folded stacks of the whole run per `symbol:strategy`; see the [module
/// documentation](self).
///
/// ```
/// let stacks = backtest_perf::export::flamegraph::FoldedStacks::default();
/// assert_eq!(stacks.folded(backtest_perf::StorageKey::new("A", "s")), "");
/// ```
#[derive(Default)]
pub struct FoldedStacks {
    state: Mutex<State>,
}

impl std::fmt::Debug for FoldedStacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("FoldedStacks")
            .field("keys", &state.folded.len())
            .field("pending", &state.pending.len())
            .finish()
    }
}

impl FoldedStacks {
    /// The folded stacks of `key`, one `stack self_ns` line each, sorted by stack; events
    /// still waiting for their root are folded with the ancestors known so far.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, Sink, StorageKey};
    /// let stacks = backtest_perf::export::flamegraph::FoldedStacks::default();
    /// stacks.on_event(&PerformanceContract::new(MetricType::custom("load"), 2.0, 1.0));
    /// assert_eq!(stacks.folded(StorageKey::new("", "")), "load 2000000\n");
    /// ```
    pub fn folded(&self, key: StorageKey) -> String {
        let mut state = self.state.lock();
        let waiting: Vec<u64> = state.order.iter().copied().collect();
        for id in waiting {
            if state.pending.get(&id).is_some_and(|p| p.key == key) {
                state.fold_one(id);
            }
        }
        let pending = &state.pending;
        let kept: VecDeque<u64> = state
            .order
            .iter()
            .copied()
            .filter(|id| pending.contains_key(id))
            .collect();
        state.order = kept;
        let mut out = String::new();
        if let Some(stacks) = state.folded.get(&key) {
            for (stack, ns) in stacks {
                out.push_str(stack);
                out.push(' ');
                out.push_str(&ns.to_string());
                out.push('\n');
            }
        }
        out
    }

    /// Events folded before their root arrived (the pending bound was reached), and
    /// events of keys past [`MAX_KEYS`].
    ///
    /// ```
    /// assert_eq!(backtest_perf::export::flamegraph::FoldedStacks::default().incomplete(), (0, 0));
    /// ```
    pub fn incomplete(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.incomplete, state.over_key_cap)
    }

    /// Writes `dir/<strategy>.folded` and `dir/<strategy>.flamegraph.svg` for `key`,
    /// atomically; returns both paths.
    ///
    /// ```
    /// use backtest_perf::{MetricType, PerformanceContract, Sink, StorageKey};
    /// let stacks = backtest_perf::export::flamegraph::FoldedStacks::default();
    /// stacks.on_event(&PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("A").with_strategy("s"));
    /// let dir = tempfile::tempdir().unwrap();
    /// let (folded, svg) = stacks.write(StorageKey::new("A", "s"), dir.path()).unwrap();
    /// assert_eq!(std::fs::read_to_string(folded).unwrap(), "tick 1000000\n");
    /// assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));
    /// ```
    pub fn write(&self, key: StorageKey, dir: &Path) -> Result<(PathBuf, PathBuf), DumpError> {
        let folded = self.folded(key);
        let stem = safe_file_stem(&key.strategy);
        let folded_path = write_atomic(dir, &format!("{stem}.folded"), &folded)?;
        let svg_name = format!("{stem}.flamegraph.svg");
        let mut options = inferno::flamegraph::Options::default();
        options.title = format!("Where the time goes: {} on {}", key.strategy, key.symbol);
        options.subtitle = Some("self time of every hook and user step, the whole run".into());
        options.count_name = "ns".into();
        let mut svg = Vec::new();
        let drawn = if folded.is_empty() {
            Ok(())
        } else {
            inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        };
        let svg = match drawn {
            Ok(()) => String::from_utf8_lossy(&svg).into_owned(),
            Err(source) => {
                return Err(DumpError::Write {
                    path: dir.join(&svg_name),
                    source,
                });
            }
        };
        let svg_path = write_atomic(dir, &svg_name, &svg)?;
        Ok((folded_path, svg_path))
    }
}

impl Sink for FoldedStacks {
    fn on_event(&self, event: &PerformanceContract) {
        self.state.lock().record(event);
    }

    fn on_batch(&self, events: &[PerformanceContract]) {
        let mut state = self.state.lock();
        for event in events {
            state.record(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        metric: MetricType,
        id: u64,
        parent: Option<u64>,
        self_ms: f64,
    ) -> PerformanceContract {
        let e = PerformanceContract::new(metric, self_ms * 2.0, 1.0)
            .with_symbol("A")
            .with_strategy("s")
            .with_id(id)
            .with_self_duration(self_ms);
        match parent {
            Some(p) => e.with_parent(p),
            None => e,
        }
    }

    #[test]
    fn stacks_of_many_ticks_add_up_and_interleaved_trees_stay_apart() {
        let stacks = FoldedStacks::default();
        // Two trees whose events interleave (two threads), then a third tick.
        stacks.on_batch(&[
            event(MetricType::GetCandles, 11, Some(10), 0.001),
            event(MetricType::GetCandles, 21, Some(20), 0.002),
            event(MetricType::Tick, 10, None, 0.010),
            event(MetricType::custom("step"), 22, Some(20), 0.003),
            event(MetricType::Tick, 20, None, 0.020),
            event(MetricType::Tick, 30, None, 0.030),
        ]);
        assert_eq!(
            stacks.folded(StorageKey::new("A", "s")),
            "tick 60000\ntick;getCandles 3000\ntick;step 3000\n"
        );
        assert_eq!(stacks.incomplete(), (0, 0));
    }

    #[test]
    fn keys_past_the_cap_are_counted_not_folded() {
        let stacks = FoldedStacks::default();
        for k in 0..MAX_KEYS + 3 {
            let e = PerformanceContract::new(MetricType::Tick, 0.002, 1.0)
                .with_symbol(format!("S{k}"))
                .with_strategy("s");
            stacks.on_event(&e);
        }
        assert_eq!(stacks.incomplete(), (0, 3));
        assert_eq!(stacks.folded(StorageKey::new("S0", "s")), "tick 2000\n");
        let last_kept = format!("S{}", MAX_KEYS - 1);
        assert_eq!(
            stacks.folded(StorageKey::new(&last_kept, "s")),
            "tick 2000\n"
        );
        let first_refused = format!("S{MAX_KEYS}");
        assert_eq!(stacks.folded(StorageKey::new(&first_refused, "s")), "");
    }

    #[test]
    fn past_the_pending_bound_the_oldest_fold_with_what_is_known() {
        let stacks = FoldedStacks::default();
        // Children whose root never comes (it was on another bus).
        for id in 1..=(MAX_PENDING as u64 + 10) {
            stacks.on_event(&event(
                MetricType::GetCandles,
                id + 1_000_000,
                Some(7),
                0.001,
            ));
        }
        assert_eq!(stacks.incomplete().0, 10);
        let folded = stacks.folded(StorageKey::new("A", "s"));
        assert_eq!(
            folded,
            format!("getCandles {}\n", (MAX_PENDING as u64 + 10) * 1000)
        );
    }
}
