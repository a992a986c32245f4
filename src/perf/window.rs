//! A key's window: its newest events, in chunks that leave whole once every event in
//! them fell off.

use std::collections::VecDeque;

use super::event::{PerformanceContract, prefetch_slot};

/// The most slots a chunk the window makes for itself takes (32 KB): its first takes
/// 16, each next one twice the last, up to this, so a window that will not fill costs
/// little memory. Past `max` events, the oldest chunk leaves once all its events fell
/// off, so a full window takes the slots of `max` events, two chunks more (the oldest
/// partly fallen off, the newest partly filled) and the one spare it keeps.
pub(crate) const CHUNK: usize = 256;

/// A run of at least this many events is kept whole, in the buffer it came in (see
/// [`Window::adopt`]); a shorter one is copied. Lower in tests, to mix both.
pub(crate) const ADOPTED_FROM: usize = if cfg!(test) { 4 } else { CHUNK };

/// The newest events of one key, at most `max` of them (the caller passes the same
/// `max` every time), oldest first.
///
/// Events are kept in chunks: single events go into `filling`, the newest chunk, until
/// it is full; the older chunks wait in `older`. Of the oldest chunk, the first `skip`
/// events fell off already; the chunk leaves (and becomes the spare) once all of them
/// did. So dropping the oldest event is a counter's step, as in a ring, and a batch of
/// the engine's events can be kept in its own buffer instead of copied
/// ([`adopt`](Self::adopt)), as a tracked year copied 60 MB before.
///
/// ```text
/// older: [e1 e2 e3 e4] [e5 e6 e7 e8]   filling: [e9 e10 _ _]   skip 2, max 8:
/// oldest first e3 .. e10
/// ```
#[derive(Default)]
pub(crate) struct Window {
    /// Full chunks (and adopted ones), oldest first.
    older: VecDeque<Vec<PerformanceContract>>,
    /// The newest chunk: single events go here while it has room.
    filling: Vec<PerformanceContract>,
    /// Events of the oldest chunk that fell off.
    skip: usize,
    /// Events held, not counting those that fell off.
    len: usize,
    /// An emptied chunk kept for the next one needed (no capacity: none).
    spare: Vec<PerformanceContract>,
}

impl Window {
    /// Events held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated, the spare's included.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.older.iter().map(Vec::capacity).sum::<usize>()
            + self.filling.capacity()
            + self.spare.capacity()
    }

    /// Keeps `event` as the newest; returns whether the oldest fell off to make room.
    #[inline]
    pub(crate) fn push(&mut self, event: &PerformanceContract, max: usize) -> bool {
        if self.filling.len() == self.filling.capacity() {
            self.roll(max);
        }
        self.filling.push(*event);
        self.len += 1;
        let dropped = self.len > max;
        if dropped {
            // The oldest event falls off: a step of `skip`, unless it is its chunk's last.
            let oldest = self.older.front().map_or(self.filling.len(), Vec::len);
            if self.skip + 1 < oldest {
                self.skip += 1;
                self.len -= 1;
            } else {
                self.trim(max);
            }
        }
        // The slot the next event goes to: in a chunk last written a window ago, far out
        // in memory. Copying into it cold made the storage's lock release wait for it on
        // every event (see [`prefetch_slot`]).
        prefetch_slot(self.filling.as_ptr().wrapping_add(self.filling.len()));
        dropped
    }

    /// Keeps the newest `max` of `events` (and of what the window held), copied; returns
    /// how many events fell off or were never kept.
    #[inline]
    pub(crate) fn extend(&mut self, events: &[PerformanceContract], max: usize) -> u64 {
        let max = max.max(1);
        let kept = &events[events.len().saturating_sub(max)..];
        let mut dropped = (events.len() - kept.len()) as u64;
        let mut rest = kept;
        while !rest.is_empty() {
            if self.filling.len() == self.filling.capacity() {
                self.roll(max);
            }
            let n = (self.filling.capacity() - self.filling.len()).min(rest.len());
            self.filling.extend_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
            dropped += self.trim(max) as u64;
        }
        dropped
    }

    /// Keeps the newest `max` of `events` (and of what the window held) as
    /// [`extend`](Self::extend) does, but a run of [`ADOPTED_FROM`] events or more is kept
    /// in its own buffer, not copied: `events` is left empty, with a buffer of at least
    /// its capacity, whose pages are in memory already: the chunk that last fell off, or
    /// else what `elsewhere` gives for that capacity (a buffer of a cleared key's window),
    /// or else a new one, touched. Returns how many events fell off or were never kept.
    pub(crate) fn adopt(
        &mut self,
        events: &mut Vec<PerformanceContract>,
        max: usize,
        elsewhere: impl FnOnce(usize) -> Option<Vec<PerformanceContract>>,
    ) -> u64 {
        if events.len() < ADOPTED_FROM {
            let dropped = self.extend(events, max);
            events.clear();
            return dropped;
        }
        let replacement = if self.spare.capacity() >= events.capacity() {
            std::mem::take(&mut self.spare)
        } else if let Some(kept) = elsewhere(events.capacity()) {
            kept
        } else {
            let mut fresh = Vec::with_capacity(events.capacity());
            crate::tracker::memory::touch_spare(&mut fresh);
            fresh
        };
        let chunk = std::mem::replace(events, replacement);
        self.len += chunk.len();
        let previous = std::mem::replace(&mut self.filling, chunk);
        if previous.is_empty() {
            self.keep_spare(previous);
        } else {
            self.older.push_back(previous);
        }
        self.trim(max.max(1)) as u64
    }

    /// Every buffer the window holds, its spare's included, emptied: for another window
    /// to adopt once this one is gone.
    pub(crate) fn into_buffers(self) -> impl Iterator<Item = Vec<PerformanceContract>> {
        self.older
            .into_iter()
            .chain([self.filling, self.spare])
            .map(|mut buffer| {
                buffer.clear();
                buffer
            })
    }

    /// The events, oldest first (`.rev()`: newest first).
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &PerformanceContract> {
        let mut chunks = self
            .older
            .iter()
            .map(Vec::as_slice)
            .chain(std::iter::once(self.filling.as_slice()));
        let oldest = chunks.next().unwrap_or_default();
        oldest[self.skip.min(oldest.len())..]
            .iter()
            .chain(chunks.flatten())
    }

    /// A copy of the events, newest first.
    pub(crate) fn newest_first(&self) -> Vec<PerformanceContract> {
        let mut events = Vec::with_capacity(self.len);
        events.extend(self.iter().rev().copied());
        events
    }

    /// Lets the oldest events fall off until at most `max` are held; returns how many did.
    #[inline(never)]
    fn trim(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.len > max {
            let excess = self.len - max;
            let oldest = self.older.front().unwrap_or(&self.filling).len();
            let shown = oldest - self.skip;
            if excess < shown || self.older.is_empty() {
                // `max` >= 1 keeps the newest event: the last chunk never leaves.
                let n = excess.min(shown);
                self.skip += n;
                self.len -= n;
                return dropped + n;
            }
            self.len -= shown;
            dropped += shown;
            self.skip = 0;
            if let Some(chunk) = self.older.pop_front() {
                self.keep_spare(chunk);
            }
        }
        dropped
    }

    /// A new chunk to fill, once `filling` is full: the spare if it is big enough, else
    /// a new one ([`CHUNK`]).
    #[cold]
    #[inline(never)]
    fn roll(&mut self, max: usize) {
        let wanted = (self.filling.capacity() * 2)
            .clamp(16, CHUNK)
            .min(max.max(1));
        let next = if self.spare.capacity() >= wanted {
            std::mem::take(&mut self.spare)
        } else {
            Vec::with_capacity(wanted)
        };
        let full = std::mem::replace(&mut self.filling, next);
        if full.capacity() > 0 {
            self.older.push_back(full);
        }
    }

    /// Keeps an emptied chunk as the spare if it is bigger than the one kept.
    fn keep_spare(&mut self, mut chunk: Vec<PerformanceContract>) {
        if chunk.capacity() > self.spare.capacity() {
            chunk.clear();
            self.spare = chunk;
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::event::MetricType;

    fn at(t: u32) -> PerformanceContract {
        PerformanceContract::new(MetricType::Tick, 1.0, f64::from(t))
    }

    fn times(window: &Window) -> Vec<f64> {
        window.iter().map(|e| e.timestamp).collect()
    }

    #[test]
    fn keeps_the_newest_in_order_one_at_a_time() {
        let mut window = Window::default();
        let dropped: Vec<bool> = (1..=7).map(|t| window.push(&at(t), 3)).collect();
        assert_eq!(dropped, [false, false, false, true, true, true, true]);
        assert_eq!(times(&window), [5.0, 6.0, 7.0]);
        assert_eq!(
            window.iter().rev().map(|e| e.timestamp).collect::<Vec<_>>(),
            [7.0, 6.0, 5.0]
        );
        assert_eq!((window.len(), window.iter().count()), (3, 3));
    }

    #[test]
    fn a_run_keeps_what_one_at_a_time_keeps() {
        let events: Vec<_> = (0..50).map(at).collect();
        for max in [1, 2, 5, 7, 16, 49, 50, 64] {
            for run in [1, 3, 5, 8, 13, 50] {
                let (mut one, mut runs) = (Window::default(), Window::default());
                let mut one_dropped = 0;
                for e in &events {
                    one_dropped += u64::from(one.push(e, max));
                }
                let runs_dropped: u64 = events.chunks(run).map(|c| runs.extend(c, max)).sum();
                assert_eq!(times(&one), times(&runs), "max {max}, runs of {run}");
                assert_eq!(one_dropped, runs_dropped, "max {max}, runs of {run}");
                assert_eq!(one_dropped, 50u64.saturating_sub(max as u64));
                // Runs and single events mixed keep the same too.
                let mut mixed = Window::default();
                let mut mixed_dropped = 0;
                for (i, c) in events.chunks(run).enumerate() {
                    if i % 3 == 0 {
                        mixed_dropped += mixed.extend(c, max);
                    } else if i % 3 == 1 {
                        mixed_dropped += mixed.adopt(&mut c.to_vec(), max, |_| None);
                    } else {
                        c.iter().for_each(|e| {
                            mixed_dropped += u64::from(mixed.push(e, max));
                        });
                    }
                }
                assert_eq!(times(&one), times(&mixed), "max {max}, runs of {run}");
                assert_eq!(one_dropped, mixed_dropped, "max {max}, runs of {run}");
                assert_eq!(mixed.len(), one.len());
            }
        }
    }

    #[test]
    fn a_run_longer_than_the_window_keeps_its_newest() {
        let mut window = Window::default();
        window.extend(&[at(1), at(2)], 4);
        let events: Vec<_> = (10..20).map(at).collect();
        assert_eq!(window.extend(&events, 4), 8, "2 held and 6 never kept");
        assert_eq!(times(&window), [16.0, 17.0, 18.0, 19.0]);
        // A chunk of `max` slots partly fallen off, and the one after it.
        assert_eq!(window.capacity(), 8);
    }

    #[test]
    fn chunks_grow_by_doubling_and_a_full_window_takes_a_few_more_slots_than_events() {
        let mut window = Window::default();
        window.push(&at(0), 10_000);
        assert_eq!(window.capacity(), 16);
        // 16 + 32 + 64 + 128 slots, then chunks of CHUNK.
        for t in 1..240 {
            window.push(&at(t), 10_000);
        }
        assert_eq!(window.capacity(), 240);
        window.push(&at(240), 10_000);
        assert_eq!(window.capacity(), 240 + CHUNK);
        for t in 241..30_000 {
            window.push(&at(t), 10_000);
        }
        assert_eq!(window.len(), 10_000);
        assert_eq!(times(&window)[0], 20_000.0);
        // The oldest chunk partly fallen off, the newest partly filled, and the spare.
        // The newest 10,000 events span 40 chunks of CHUNK (the oldest partly fallen
        // off, the newest partly filled), and the spare: 2.5% more slots than events.
        assert_eq!(window.capacity(), 41 * CHUNK);
        let mut small = Window::default();
        small.extend(&(0..1_500).map(at).collect::<Vec<_>>(), 1_200);
        // 16 + 32 + 64 + 128 + 4 * 256 slots.
        assert_eq!((small.len(), small.capacity()), (1_200, 1_264));
    }

    #[test]
    fn adopted_runs_are_kept_in_their_buffers_and_fallen_ones_come_back() {
        let max = 1_000;
        let run = |from: u32| (from..from + 400).map(at).collect::<Vec<_>>();
        let mut window = Window::default();
        let mut copied = Window::default();
        let mut buffer = Vec::with_capacity(500);
        let mut seen = Vec::new();
        for i in 0..10 {
            buffer.extend(run(i * 400));
            seen.push(buffer.as_ptr());
            let dropped = window.adopt(&mut buffer, max, |_| None);
            assert_eq!(dropped, copied.extend(&run(i * 400), max), "run {i}");
            assert!(buffer.is_empty() && buffer.capacity() >= 500);
            assert_eq!(times(&window), times(&copied), "run {i}");
            if i >= 4 {
                // Runs i-2 to i hold the newest 1,000 events: run i-3 fell off whole when
                // run i came and is kept as the spare; the spare handed back now is run
                // i-4's buffer. No new memory once the window is full.
                assert_eq!(buffer.as_ptr(), seen[i as usize - 4], "run {i}");
            }
        }
        assert_eq!(window.len(), max);
        // A short run is copied, and the buffer stays the caller's.
        buffer.extend(run(4_000).into_iter().take(ADOPTED_FROM - 1));
        let own = buffer.as_ptr();
        copied.extend(&buffer, max);
        window.adopt(&mut buffer, max, |_| None);
        assert_eq!((buffer.as_ptr(), buffer.len()), (own, 0));
        assert_eq!(times(&window), times(&copied));
        // Single events go on after an adopted run, into its buffer's room.
        for t in 9_000..9_050 {
            assert_eq!(window.push(&at(t), max), copied.push(&at(t), max));
        }
        assert_eq!(times(&window), times(&copied));
        assert_eq!(
            window
                .newest_first()
                .iter()
                .map(|e| e.timestamp)
                .collect::<Vec<_>>(),
            times(&copied).into_iter().rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_buffer_from_elsewhere_replaces_an_adopted_one_and_a_gone_window_gives_all_back() {
        let mut window = Window::default();
        let mut buffer: Vec<PerformanceContract> = Vec::with_capacity(64);
        buffer.extend((0..40).map(at));
        let first = buffer.as_ptr();
        let mut kept: Vec<PerformanceContract> = Vec::with_capacity(100);
        let kept_at = kept.as_ptr();
        kept.push(at(99));
        kept.clear();
        let mut asked = Vec::new();
        window.adopt(&mut buffer, 1_000, |capacity| {
            asked.push(capacity);
            Some(std::mem::take(&mut kept))
        });
        // No spare of the window's own: the buffer given elsewhere, asked for by capacity.
        assert_eq!(asked, [64]);
        assert_eq!(
            (buffer.as_ptr(), buffer.len(), buffer.capacity()),
            (kept_at, 0, 100)
        );
        buffer.extend((40..80).map(at));
        let second = buffer.as_ptr();
        window.adopt(&mut buffer, 1_000, |_| None);
        assert_eq!(times(&window), (0..80).map(f64::from).collect::<Vec<_>>());
        // Gone, the window gives back both adopted buffers, emptied, with its own (empty)
        // chunks: none is lost.
        let buffers: Vec<_> = window.into_buffers().collect();
        assert!(buffers.iter().all(Vec::is_empty));
        let mut adopted: Vec<_> = buffers
            .iter()
            .filter(|b| b.capacity() > 0)
            .map(|b| b.as_ptr())
            .collect();
        adopted.sort();
        let mut expected = vec![first, second];
        expected.sort();
        assert_eq!(adopted, expected);
    }
}
