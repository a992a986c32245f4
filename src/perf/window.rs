//! A key's window: its newest events, in a ring that overwrites the oldest once full.

use super::event::{PerformanceContract, prefetch_slot};

/// A window grows by doubling up to this many slots (128 KB), then to its whole `max`
/// at once. The memory of a slot is touched only when an event is written there, so a
/// window that will not fill costs no more memory that way. Doubling on to 10,000 slots
/// copied about 14,000 slots into new memory on the run's thread: a year's run with
/// tracking on took about 100 more page faults (456 against 350).
pub(crate) const DOUBLING_UP_TO: usize = 1024;

/// The newest events of one key, at most `max` of them (the caller passes the same
/// `max` every time).
///
/// Until it holds `max` events it is a growing vector; from then on each new event
/// overwrites the oldest in place, and `head` is where the oldest is. A `VecDeque` did
/// the same with a pop at the front and a push at the back, and finding where the next
/// event goes (for the prefetch) took both of its slices: `emit` took 614 instructions
/// an event with it, 570 with this (cachegrind, one key's window full).
///
/// ```text
/// slots: [e5 e6 e7 e3 e4]   max 5, head 3: oldest first e3 e4 e5 e6 e7
/// ```
#[derive(Default)]
pub(crate) struct Window {
    slots: Vec<PerformanceContract>,
    /// The oldest event's slot once the window is full; 0 until then.
    head: usize,
}

impl Window {
    /// Events held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots allocated.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Keeps `event` as the newest; returns whether the oldest fell off to make room.
    #[inline]
    pub(crate) fn push(&mut self, event: &PerformanceContract, max: usize) -> bool {
        let dropped = if self.slots.len() >= max && !self.slots.is_empty() {
            // Full: the oldest's slot takes the newest, and the next oldest is next.
            let head = self.head.min(self.slots.len() - 1);
            self.slots[head] = *event;
            self.head = if head + 1 >= self.slots.len() {
                0
            } else {
                head + 1
            };
            true
        } else {
            self.make_room(1, max);
            self.slots.push(*event);
            false
        };
        // The slot the next event goes to: last written a whole window ago, far out in
        // memory. Copying into it cold made the storage's lock release wait for it on
        // every event (see [`prefetch_slot`]).
        let next = if self.slots.len() >= max {
            self.head
        } else {
            self.slots.len()
        };
        prefetch_slot(self.slots.as_ptr().wrapping_add(next));
        dropped
    }

    /// Keeps the newest `max` of `events` (and of what the window held), in one or two
    /// copies; returns how many events fell off or were never kept.
    #[inline]
    pub(crate) fn extend(&mut self, events: &[PerformanceContract], max: usize) -> u64 {
        let max = max.max(1);
        let kept = &events[events.len().saturating_sub(max)..];
        let mut dropped = events.len() - kept.len();
        // First the free slots, then over the oldest.
        let room = max.saturating_sub(self.slots.len());
        let (fill, mut rest) = kept.split_at(kept.len().min(room));
        if !fill.is_empty() {
            self.make_room(fill.len(), max);
            self.slots.extend_from_slice(fill);
        }
        // Full now (`rest` is empty otherwise): at most two copies, up to the end of the
        // slots and on from the start.
        while !rest.is_empty() {
            let len = self.slots.len();
            let head = self.head.min(len - 1);
            let n = rest.len().min(len - head);
            self.slots[head..head + n].copy_from_slice(&rest[..n]);
            self.head = if head + n >= len { 0 } else { head + n };
            dropped += n;
            rest = &rest[n..];
        }
        dropped as u64
    }

    /// The events, oldest first (`.rev()`: newest first); its size hint is exact.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &PerformanceContract> {
        let (newer, older) = self.slots.split_at(self.head.min(self.slots.len()));
        older.iter().chain(newer)
    }

    /// Room for `more` events: grown by doubling up to [`DOUBLING_UP_TO`] slots, then to
    /// `max` at once, and never past `max` slots, so a full window of the default 10,000
    /// events takes 10,000 slots (doubling from 8,192 took 16,384: 0.8 MB more a key for
    /// nothing).
    #[inline]
    fn make_room(&mut self, more: usize, max: usize) {
        let needed = self.slots.len() + more;
        if needed > self.slots.capacity() {
            self.grow(needed, max);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, needed: usize, max: usize) {
        let doubled = if self.slots.capacity() >= DOUBLING_UP_TO {
            max
        } else {
            (self.slots.capacity() * 2).max(16)
        };
        let target = doubled.clamp(needed, max.max(needed));
        self.slots.reserve_exact(target - self.slots.len());
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
                for (i, c) in events.chunks(run).enumerate() {
                    if i % 2 == 0 {
                        mixed.extend(c, max);
                    } else {
                        c.iter().for_each(|e| {
                            mixed.push(e, max);
                        });
                    }
                }
                assert_eq!(times(&one), times(&mixed), "max {max}, runs of {run}");
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
        assert_eq!(window.capacity(), 4);
    }

    #[test]
    fn grows_by_doubling_then_to_the_whole_window() {
        let mut window = Window::default();
        window.push(&at(0), 10_000);
        assert_eq!(window.capacity(), 16);
        for t in 1..=DOUBLING_UP_TO as u32 {
            window.push(&at(t), 10_000);
        }
        assert_eq!(window.capacity(), 10_000);
        let mut small = Window::default();
        small.extend(&(0..1_500).map(at).collect::<Vec<_>>(), 1_200);
        assert_eq!((small.len(), small.capacity()), (1_200, 1_200));
    }
}
