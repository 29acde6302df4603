//! One deadline structure per media worker: a min-heap of (deadline, call) with at most one
//! live entry per call. A call's deadline moves on nearly every packet (str0m re-plans its
//! next timeout after each input); a later deadline only updates the call's slot and an
//! earlier one pushes a new entry, so the heap stays near one entry per call instead of
//! growing by one per packet, and the worker wakes for the earliest deadline only. When an
//! entry comes due before the call's current deadline it is re-queued at that deadline
//! without waking the call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The earliest entry of this call in the heap.
    queued: Instant,
    /// When the call wants its timeout now.
    wanted: Instant,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    slots: HashMap<u64, Slot>,
}

impl Timers {
    /// Sets when `id` wants its next timeout (replacing the previous one).
    pub fn schedule(&mut self, id: u64, at: Instant) {
        match self.slots.get_mut(&id) {
            Some(s) => {
                s.wanted = at;
                if at < s.queued {
                    s.queued = at;
                    self.heap.push(Reverse((at, id)));
                }
            }
            None => {
                self.slots.insert(id, Slot { queued: at, wanted: at });
                self.heap.push(Reverse((at, id)));
            }
        }
    }

    /// Forgets `id` (its heap entries are skipped when they come up).
    pub fn cancel(&mut self, id: u64) {
        self.slots.remove(&id);
    }

    /// The earliest heap entry: when the worker has to wake next at the latest.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Heap entries, live or stale: a bound for one pass over what is due.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// A call whose deadline has passed at `now`, taken off the structure (the caller
    /// schedules it again after handling its timeout); None when nothing is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if t > now {
                return None;
            }
            self.heap.pop();
            let Some(slot) = self.slots.get_mut(&id) else { continue }; // cancelled
            if slot.queued != t {
                continue; // superseded by an earlier entry
            }
            if slot.wanted <= now {
                self.slots.remove(&id);
                return Some(id);
            }
            // The deadline moved later since this entry was queued.
            slot.queued = slot.wanted;
            self.heap.push(Reverse((slot.wanted, id)));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn due_calls_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(1, ms(t0, 30));
        t.schedule(2, ms(t0, 10));
        t.schedule(3, ms(t0, 20));
        assert_eq!(t.next(), Some(ms(t0, 10)));
        assert_eq!(t.pop_due(ms(t0, 5)), None);
        assert_eq!(t.pop_due(ms(t0, 25)), Some(2));
        assert_eq!(t.pop_due(ms(t0, 25)), Some(3));
        assert_eq!(t.pop_due(ms(t0, 25)), None);
        assert_eq!(t.pop_due(ms(t0, 30)), Some(1));
        assert_eq!(t.next(), None);
    }

    #[test]
    fn later_deadlines_do_not_grow_the_heap_and_do_not_fire_early() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for n in 1..=1000 {
            t.schedule(7, ms(t0, n));
        }
        assert_eq!(t.len(), 1, "one entry for the call however often its deadline moves");
        assert_eq!(t.pop_due(ms(t0, 500)), None, "re-queued at its current deadline, not fired");
        assert_eq!(t.next(), Some(ms(t0, 1000)));
        assert_eq!(t.pop_due(ms(t0, 1000)), Some(7));
    }

    #[test]
    fn an_earlier_deadline_wins_and_the_old_entry_is_skipped() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(1, ms(t0, 100));
        t.schedule(1, ms(t0, 10));
        assert_eq!(t.next(), Some(ms(t0, 10)));
        assert_eq!(t.pop_due(ms(t0, 10)), Some(1));
        assert_eq!(t.pop_due(ms(t0, 200)), None, "the superseded entry does not fire the call again");
    }

    #[test]
    fn cancelled_calls_never_fire() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(1, ms(t0, 10));
        t.schedule(2, ms(t0, 20));
        t.cancel(1);
        assert_eq!(t.pop_due(ms(t0, 50)), Some(2));
        assert_eq!(t.pop_due(ms(t0, 50)), None);
    }
}
