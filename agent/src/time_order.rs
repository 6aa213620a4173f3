//! Items that arrive roughly in time order, handed back exactly in time
//! order once they are old enough that nothing earlier can still come (the
//! conn stage's stream reordering and the stitcher's record window).
//!
//! Items rest in slots and only their keys go through the heap: records are
//! hundreds of bytes, and a binary heap moves its elements on every sift,
//! which made up a tenth of the agent's time when the items were moved.
use std::{cmp::Reverse, collections::BinaryHeap};

pub struct TimeOrder<T> {
    /// (time, arrival number, slot), smallest first; the arrival number
    /// keeps items of equal time in arrival order.
    keys: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    arrivals: u64,
    newest_ts: u64,
}

impl<T> Default for TimeOrder<T> {
    fn default() -> Self {
        Self {
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
        self.keys.push(Reverse((ts, self.arrivals, slot)));
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The oldest item if its time is at most `horizon`.
    pub fn pop_due(&mut self, horizon: u64) -> Option<T> {
        if self.keys.peek()?.0.0 > horizon {
            return None;
        }
        self.pop()
    }

    /// The oldest item.
    pub fn pop(&mut self) -> Option<T> {
        let Reverse((_, _, slot)) = self.keys.pop()?;
        let item = self.slots[slot].take();
        self.free.push(slot);
        if self.keys.is_empty() {
            // Everything handed back: give the slots' memory back after a
            // burst instead of keeping its high-water mark.
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
    fn time_order_then_arrival_order_and_slots_reused() {
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
        // Freed slots are taken again rather than growing the table.
        assert_eq!(q.slots.len(), 5);
        q.push(40, "d");
        assert_eq!(q.slots.len(), 5);
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, ["c", "d", "e"]);
        assert!(q.is_empty() && q.slots.is_empty());
    }
}
