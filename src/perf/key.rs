//! [`StorageKey`]: which `symbol:strategy` bucket an event belongs to.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use super::event::PerformanceContract;
use super::name::Name;

/// The name a missing (absent, null or empty) symbol or strategy is stored and reported as.
///
/// ```
/// assert_eq!(backtest_perf::StorageKey::new("", "").to_string(), format!("{0}:{0}", backtest_perf::GLOBAL));
/// ```
pub const GLOBAL: &str = "global";

/// A `symbol:strategy` pair; a missing part is [`GLOBAL`]. Prints as `symbol:strategy`.
///
/// ```
/// use backtest_perf::StorageKey;
///
/// assert_eq!(StorageKey::new("BTCUSDT", "sma").to_string(), "BTCUSDT:sma");
/// assert_eq!(StorageKey::new("", "sma").to_string(), "global:sma");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct StorageKey {
    /// The symbol, or `global`.
    pub symbol: Name,
    /// The strategy name, or `global`.
    pub strategy: Name,
}

impl StorageKey {
    /// The key for a symbol and strategy given as text; empty text means [`GLOBAL`].
    ///
    /// ```
    /// # use backtest_perf::StorageKey;
    /// assert_eq!(StorageKey::new("ETHUSDT", "").strategy, "global");
    /// ```
    pub fn new(symbol: &str, strategy: &str) -> Self {
        StorageKey {
            symbol: normalize(Some(Name::new(symbol))),
            strategy: normalize(Some(Name::new(strategy))),
        }
    }

    /// The key an event is stored under.
    ///
    /// ```
    /// # use backtest_perf::{MetricType, PerformanceContract, StorageKey};
    /// let e = PerformanceContract::new(MetricType::Tick, 1.0, 1.0).with_symbol("BTCUSDT");
    /// assert_eq!(StorageKey::of(&e).to_string(), "BTCUSDT:global");
    /// ```
    pub fn of(event: &PerformanceContract) -> Self {
        StorageKey {
            symbol: normalize(event.symbol),
            strategy: normalize(event.strategy_name),
        }
    }
}

fn normalize(name: Option<Name>) -> Name {
    static GLOBAL_NAME: OnceLock<Name> = OnceLock::new();
    match name {
        Some(name) if !name.is_empty() => name,
        _ => *GLOBAL_NAME.get_or_init(|| Name::new(GLOBAL)),
    }
}

impl StorageKey {
    /// A hash of the key made from its names' precomputed hashes.
    #[inline]
    pub(crate) fn prehash(&self) -> u64 {
        self.symbol.precomputed_hash() ^ self.strategy.precomputed_hash().rotate_left(29)
    }
}

impl Hash for StorageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.prehash());
    }
}

/// A hasher for keys that hash themselves with one `write_u64` of an already good hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    #[inline]
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by our keys; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`PrehashedHasher`]s.
pub(crate) type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.symbol, self.strategy)
    }
}

/// The key of the first event and how many events from the start share it: a batch that
/// is one run of one key (the engine's) is grouped by this scan alone.
pub(crate) fn leading_run(
    events: &[super::event::PerformanceContract],
) -> Option<(StorageKey, usize)> {
    let first = events.first()?;
    let key = StorageKey::of(first);
    // The same names as the first event's are the same key: compared as they are, with
    // no normalizing (which reads each name's length).
    let raw = (first.symbol, first.strategy_name);
    let run = events
        .iter()
        .position(|e| (e.symbol, e.strategy_name) != raw && StorageKey::of(e) != key)
        .unwrap_or(events.len());
    Some((key, run))
}

/// A batch of events and their keys: each key's events in the batch's order, so that a
/// consumer with state per key takes each key's lock once however the keys interleave.
/// [`Sink::on_keyed_batch`](super::emitter::Sink::on_keyed_batch) receives one.
///
/// An engine's batch is one key's; a user's may cycle through several symbols. A batch of
/// one key is grouped by one scan that compares names, with no copy of its indexes.
///
/// ```
/// use backtest_perf::{KeyedBatch, MetricType, PerformanceContract, StorageKey};
/// let events: Vec<PerformanceContract> = ["A", "B", "A"]
///     .into_iter()
///     .enumerate()
///     .map(|(i, s)| PerformanceContract::new(MetricType::Tick, 1.0, i as f64).with_symbol(s))
///     .collect();
/// let batch = KeyedBatch::new(&events);
/// let groups: Vec<(String, Vec<f64>)> = batch
///     .groups()
///     .map(|(key, events)| (key.to_string(), events.map(|e| e.timestamp).collect()))
///     .collect();
/// assert_eq!(groups, [("A:global".to_string(), vec![0.0, 2.0]), ("B:global".to_string(), vec![1.0])]);
/// ```
#[derive(Debug)]
pub struct KeyedBatch<'a> {
    events: &'a [PerformanceContract],
    /// Each key, in the order of its first event, and the end of its indexes in `order`.
    keys: Vec<(StorageKey, usize)>,
    /// The events' indexes, key after key; empty when the batch is one key.
    order: Vec<usize>,
}

/// Keys a batch looks up by scanning before it builds a map.
const SCANNED_KEYS: usize = 16;

impl<'a> KeyedBatch<'a> {
    /// Groups `events` by key.
    pub fn new(events: &'a [PerformanceContract]) -> Self {
        KeyedBatch {
            events,
            ..KeyedBatch::grouping(events)
        }
    }

    /// The grouping of `events`, holding none of them yet (the bus fills in each event's
    /// previous timestamp, key by key, before it lends the batch out).
    pub(crate) fn grouping(events: &[PerformanceContract]) -> KeyedBatch<'static> {
        let empty = KeyedBatch {
            events: &[],
            keys: Vec::new(),
            order: Vec::new(),
        };
        let Some((key, run)) = leading_run(events) else {
            return empty;
        };
        if run == events.len() {
            return KeyedBatch {
                keys: vec![(key, run)],
                ..empty
            };
        }
        let mut keys: Vec<StorageKey> = vec![key];
        let mut map: std::collections::HashMap<StorageKey, usize, Prehashed> =
            std::collections::HashMap::default();
        let mut ids: Vec<usize> = Vec::with_capacity(events.len());
        let mut counts: Vec<usize> = vec![0];
        let mut last = ((events[0].symbol, events[0].strategy_name), 0);
        for event in events {
            let raw = (event.symbol, event.strategy_name);
            if raw != last.0 {
                let key = StorageKey::of(event);
                let found = if keys.len() <= SCANNED_KEYS {
                    keys.iter().position(|k| *k == key)
                } else {
                    map.get(&key).copied()
                };
                let id = found.unwrap_or_else(|| {
                    let id = keys.len();
                    keys.push(key);
                    counts.push(0);
                    if keys.len() == SCANNED_KEYS + 1 {
                        map.extend(keys.iter().enumerate().map(|(i, k)| (*k, i)));
                    } else if keys.len() > SCANNED_KEYS + 1 {
                        map.insert(key, id);
                    }
                    id
                });
                last = (raw, id);
            }
            ids.push(last.1);
            counts[last.1] += 1;
        }
        // A counting sort of the indexes by key, stable: each key's events stay in order.
        let mut next: Vec<usize> = Vec::with_capacity(counts.len());
        let mut end = 0;
        for &count in &counts {
            next.push(end);
            end += count;
        }
        let mut order = vec![0; events.len()];
        for (i, &id) in ids.iter().enumerate() {
            let at = &mut next[id];
            order[*at] = i;
            *at += 1;
        }
        KeyedBatch {
            keys: keys.into_iter().zip(next).collect(),
            order,
            ..empty
        }
    }

    /// The grouping of a batch known to be one key's (the engine's, whose timer measured
    /// every event for one symbol and strategy): no scan.
    pub(crate) fn one_key(events: &[PerformanceContract]) -> KeyedBatch<'static> {
        debug_assert!(leading_run(events).is_none_or(|(_, run)| run == events.len()));
        KeyedBatch {
            events: &[],
            keys: events
                .first()
                .map(|first| vec![(StorageKey::of(first), events.len())])
                .unwrap_or_default(),
            order: Vec::new(),
        }
    }

    /// The grouping, lent with the events it was made from.
    pub(crate) fn with_events(self, events: &[PerformanceContract]) -> KeyedBatch<'_> {
        debug_assert_eq!(
            self.order.len().max(self.keys.last().map_or(0, |k| k.1)),
            events.len()
        );
        KeyedBatch { events, ..self }
    }

    /// The key of every event, when the batch is one key's (the engine's batches are).
    #[inline]
    pub(crate) fn single_key(&self) -> Option<StorageKey> {
        match self.keys.as_slice() {
            [(key, _)] => Some(*key),
            _ => None,
        }
    }

    /// The events, in the order they were emitted.
    pub fn events(&self) -> &'a [PerformanceContract] {
        self.events
    }

    /// Each key, in the order of its first event, with its events in the batch's order.
    pub fn groups(
        &self,
    ) -> impl Iterator<Item = (StorageKey, impl Iterator<Item = &'a PerformanceContract>)> + '_
    {
        let events = self.events;
        self.indexes()
            .map(move |(key, members)| (key, members.map(move |i| &events[i])))
    }

    /// [`groups`](Self::groups) as indexes into the batch.
    pub(crate) fn indexes(&self) -> impl Iterator<Item = (StorageKey, Members<'_>)> + '_ {
        let mut start = 0;
        self.keys.iter().map(move |&(key, end)| {
            let members = if self.order.is_empty() {
                Members::Run(start..end)
            } else {
                Members::Sorted(self.order[start..end].iter())
            };
            start = end;
            (key, members)
        })
    }
}

/// The indexes of one key's events in a [`KeyedBatch`], in order.
#[derive(Debug)]
pub(crate) enum Members<'a> {
    Run(std::ops::Range<usize>),
    Sorted(std::slice::Iter<'a, usize>),
}

impl Iterator for Members<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            Members::Run(range) => range.next(),
            Members::Sorted(indexes) => indexes.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricType;

    fn event(symbol: Option<&str>, timestamp: usize) -> PerformanceContract {
        let e = PerformanceContract::new(MetricType::Tick, 1.0, timestamp as f64);
        match symbol {
            Some(s) => e.with_symbol(s),
            None => e,
        }
    }

    fn grouped(events: &[PerformanceContract]) -> Vec<(String, Vec<usize>)> {
        KeyedBatch::new(events)
            .indexes()
            .map(|(key, members)| (key.to_string(), members.collect()))
            .collect()
    }

    #[test]
    fn one_key_is_one_group_in_order() {
        let events: Vec<_> = (0..5).map(|t| event(Some("A"), t)).collect();
        assert_eq!(
            grouped(&events),
            [("A:global".to_string(), vec![0, 1, 2, 3, 4])]
        );
        assert!(grouped(&[]).is_empty());
    }

    #[test]
    fn names_that_make_the_same_key_share_a_group() {
        // No symbol and an empty one are both `global`.
        let events = [event(None, 0), event(Some("B"), 1), event(Some(""), 2)];
        assert_eq!(
            grouped(&events),
            [
                ("global:global".to_string(), vec![0, 2]),
                ("B:global".to_string(), vec![1]),
            ]
        );
    }

    #[test]
    fn many_interleaved_keys_keep_each_keys_order() {
        // 40 keys, more than are looked up by scanning, cycled through three times.
        let names: Vec<String> = (0..40).map(|k| format!("S{k}")).collect();
        let events: Vec<_> = (0..120).map(|i| event(Some(&names[i % 40]), i)).collect();
        let groups = grouped(&events);
        assert_eq!(groups.len(), 40);
        for (k, (key, members)) in groups.iter().enumerate() {
            assert_eq!(key, &format!("S{k}:global"));
            assert_eq!(members, &[k, k + 40, k + 80]);
        }
    }
}
