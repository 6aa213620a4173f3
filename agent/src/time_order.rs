//! Items that arrive roughly in time order, handed back exactly in time
//! order once they are old enough that nothing earlier can still come (the
//! conn stage's stream reordering and the stitcher's record window).
//!
//! Most items come in time order already: they go to the back of a deque,
//! which keeps them sorted at no cost. Only an item older than the deque's
//! newest goes through a heap, and of those only the keys: records are
//! hundreds of bytes and a binary heap moves its elements on every sift
//! (heap operations were a twentieth of the agent's time at full load when
//! every item went through the heap).
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

/// (time, arrival number): the order items leave in. The arrival number
/// keeps items of equal time in arrival order.
type Order = (u64, u64);

pub struct TimeOrder<T> {
    /// Items that arrived no older than the one before them, in order.
    sorted: VecDeque<(Order, T)>,
    /// The others' keys, smallest first, with the slot holding the item.
    keys: BinaryHeap<Reverse<(Order, usize)>>,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    arrivals: u64,
    newest_ts: u64,
}

impl<T> Default for TimeOrder<T> {
    fn default() -> Self {
        Self {
            sorted: VecDeque::new(),
            keys: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            arrivals: 0,
            newest_ts: 0,
        }
    }
}

impl<T> TimeOrder<T> {
    /// The latest time pushed so far.
    pub fn newest_ts(&self) -> u64 {
        self.newest_ts
    }

    pub fn push(&mut self, ts: u64, item: T) {
        self.newest_ts = self.newest_ts.max(ts);
        self.arrivals += 1;
        let order = (ts, self.arrivals);
        if self.sorted.back().is_none_or(|(last, _)| ts >= last.0) {
            self.sorted.push_back((order, item));
            return;
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(item);
                i
            }
            None => {
                self.slots.push(Some(item));
                self.slots.len() - 1
            }
        };
        self.keys.push(Reverse((order, slot)));
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty() && self.keys.is_empty()
    }

    /// The order of the oldest item, and whether it is in the deque.
    fn oldest(&self) -> Option<(Order, bool)> {
        let in_deque = self.sorted.front().map(|(o, _)| *o);
        let in_heap = self.keys.peek().map(|Reverse((o, _))| *o);
        match (in_deque, in_heap) {
            (Some(d), Some(h)) => Some(if d < h { (d, true) } else { (h, false) }),
            (Some(d), None) => Some((d, true)),
            (None, Some(h)) => Some((h, false)),
            (None, None) => None,
        }
    }

    /// The oldest item if its time is at most `horizon`.
    pub fn pop_due(&mut self, horizon: u64) -> Option<T> {
        let ((ts, _), in_deque) = self.oldest()?;
        if ts > horizon {
            return None;
        }
        self.take(in_deque)
    }

    /// The oldest item.
    pub fn pop(&mut self) -> Option<T> {
        let (_, in_deque) = self.oldest()?;
        self.take(in_deque)
    }

    fn take(&mut self, from_deque: bool) -> Option<T> {
        if from_deque {
            let item = self.sorted.pop_front().map(|(_, item)| item);
            if self.sorted.is_empty() && self.sorted.capacity() > 1024 {
                // Give a burst's memory back instead of keeping its high-water mark.
                self.sorted.shrink_to(1024);
            }
            return item;
        }
        let Reverse((_, slot)) = self.keys.pop()?;
        let item = self.slots[slot].take();
        self.free.push(slot);
        if self.keys.is_empty() {
            self.slots.clear();
            self.free.clear();
            if self.slots.capacity() > 1024 {
                self.slots.shrink_to(1024);
                self.free.shrink_to(1024);
            }
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_order_then_arrival_order() {
        let mut q = TimeOrder::default();
        for (ts, name) in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2"), (50, "e")] {
            q.push(ts, name);
        }
        assert_eq!(q.newest_ts(), 50);
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(20), Some("a"));
        assert_eq!(q.pop_due(20), Some("b1"));
        q.push(15, "late");
        assert_eq!(q.pop_due(20), Some("late"));
        assert_eq!(q.pop_due(20), Some("b2"));
        assert_eq!(q.pop_due(20), None);
        assert_eq!(q.len(), 2);
        q.push(40, "d");
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, ["c", "d", "e"]);
        assert!(q.is_empty() && q.slots.is_empty() && q.sorted.is_empty());
    }

    #[test]
    fn mixed_arrivals_leave_exactly_in_sorted_order() {
        // Mostly rising times with late ones and ties, against a stable sort.
        let mut q = TimeOrder::default();
        let mut all = Vec::new();
        let mut out = Vec::new();
        let mut x: u64 = 12345;
        let mut went_to_heap = false;
        for i in 0..5000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = (x >> 33) % 100;
            let ts = if jitter < 20 {
                i * 10 - jitter.min(i * 10) * 3
            } else {
                i * 10 - (jitter % 2) * 10
            };
            q.push(ts, (ts, i));
            all.push((ts, i));
            went_to_heap |= !q.keys.is_empty();
            if i % 7 == 0 {
                while let Some(item) = q.pop_due(ts.saturating_sub(300)) {
                    out.push(item);
                }
            }
        }
        out.extend(std::iter::from_fn(|| q.pop()));
        all.sort_by_key(|&(ts, i)| (ts, i));
        assert!(went_to_heap, "the late items took the heap path");
        assert_eq!(out, all);
    }
}
