//! One deadline per key, ordered by time, for every sans-IO core that wakes on deadlines: call
//! control (session timers, media replies, registration refreshes) and each media worker (one
//! entry per call). The owner passes the time in; nothing here reads a clock.
//!
//! A min-heap of (deadline, key) with each key's live deadline beside it. A media call's
//! deadline moves later on nearly every packet (str0m re-plans after each input), so a later
//! deadline only updates the key's slot, with no heap operation, unless that key is at the
//! head; an earlier one pushes a new entry. Entries left behind (moved, cleared) are skipped
//! when they come up, the head is kept live so `next` is exact, and the heap is rebuilt when
//! stale entries outnumber the keys, so memory stays proportional to the keys.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The earliest entry of this key in the heap.
    queued: Instant,
    /// The key's deadline now.
    wanted: Instant,
}

/// Keys with one deadline each. Setting a key again moves it.
#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    slots: HashMap<K, Slot>,
}

impl<K: Ord + Hash> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { heap: BinaryHeap::new(), slots: HashMap::new() }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Gives `key` the deadline `at`, or none.
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => match self.slots.get_mut(&key) {
                Some(s) => {
                    s.wanted = at;
                    if at < s.queued {
                        s.queued = at;
                        self.heap.push(Reverse((at, key)));
                    }
                }
                None => {
                    self.slots.insert(key.clone(), Slot { queued: at, wanted: at });
                    self.heap.push(Reverse((at, key)));
                }
            },
            None => {
                self.slots.remove(&key);
            }
        }
        self.settle();
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Keys with a deadline.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A key whose deadline is `now` or earlier, the earliest first, taken off; None when
    /// nothing is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let Reverse((t, _)) = self.heap.peek()?;
        if *t > now {
            return None;
        }
        // `settle` keeps the head live: its slot is queued at `t` and wants `t`.
        let Reverse((_, key)) = self.heap.pop().expect("looked at");
        self.slots.remove(&key);
        self.settle();
        Some(key)
    }

    /// Takes out every key whose deadline is `now` or earlier, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        std::iter::from_fn(|| self.pop_due(now)).collect()
    }

    /// Heap entries, live or stale.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn get(&self, key: &K) -> Option<Instant> {
        self.slots.get(key).map(|s| s.wanted)
    }

    /// Drops stale entries off the head and re-queues a head whose key moved later, so the
    /// head is live; rebuilds the heap when most of it is stale.
    fn settle(&mut self) {
        if self.heap.len() > 2 * self.slots.len() + 16 {
            for s in self.slots.values_mut() {
                s.queued = s.wanted;
            }
            self.heap = self.slots.iter().map(|(k, s)| Reverse((s.wanted, k.clone()))).collect();
        }
        while let Some(Reverse((t, key))) = self.heap.peek() {
            match self.slots.get_mut(key) {
                Some(s) if s.queued == *t && s.wanted == *t => return,
                Some(s) if s.queued == *t => {
                    // Moved later since it was queued: queued again at its deadline.
                    s.queued = s.wanted;
                    let at = s.wanted;
                    let Reverse((_, key)) = self.heap.pop().expect("looked at");
                    self.heap.push(Reverse((at, key)));
                }
                // Cleared, or superseded by an earlier entry of the key.
                _ => {
                    self.heap.pop();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "deadlines_tests.rs"]
mod tests;
