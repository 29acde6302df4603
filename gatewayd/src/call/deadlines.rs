//! One deadline per key, ordered by time: what call control's wake-up asks for (the earliest)
//! and hands back (the keys that are due) in O(log n), instead of walking every call or
//! registration on every wake-up. Sans-IO; the owner says when a key's deadline changes.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Keys with one deadline each. Setting a key again moves it; there are never stale entries.
#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { by_time: BTreeSet::new(), by_key: HashMap::new() }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Gives `key` the deadline `at`, or none.
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => {
                if let Some(old) = self.by_key.insert(key.clone(), at) {
                    if old == at {
                        return;
                    }
                    self.by_time.remove(&(old, key.clone()));
                }
                self.by_time.insert((at, key));
            }
            None => {
                if let Some(old) = self.by_key.remove(&key) {
                    self.by_time.remove(&(old, key));
                }
            }
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes out the keys whose deadline is `now` or earlier, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.by_time.pop_first().expect("looked at");
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    #[cfg(test)]
    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_leads_and_due_keys_come_out_in_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.next(), None);
        d.set("b", Some(t0 + Duration::from_secs(2)));
        d.set("a", Some(t0 + Duration::from_secs(1)));
        d.set("c", Some(t0 + Duration::from_secs(3)));
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.take_due(t0 + Duration::from_secs(2)), vec!["a", "b"]);
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(d.len(), 1);
        assert!(d.take_due(t0).is_empty());
    }

    #[test]
    fn moving_or_clearing_a_key_leaves_nothing_behind() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u64, Some(t0 + Duration::from_secs(1)));
        d.set(1, Some(t0 + Duration::from_secs(5)));
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(5)), "moved, not duplicated");
        assert!(d.take_due(t0 + Duration::from_secs(4)).is_empty());
        d.set(1, None);
        assert_eq!((d.next(), d.len()), (None, 0));
        d.set(2, Some(t0));
        d.set(3, Some(t0));
        assert_eq!(d.take_due(t0), vec![2, 3], "equal deadlines both come out");
        assert_eq!(d.get(&2), None);
    }

    #[test]
    fn a_hundred_thousand_keys_stay_cheap_to_ask() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for i in 0..100_000u64 {
            d.set(i, Some(t0 + Duration::from_millis(100_000 - i)));
        }
        let started = Instant::now();
        for _ in 0..100_000 {
            assert_eq!(d.next(), Some(t0 + Duration::from_millis(1)));
        }
        // A walk of every key per ask would take seconds here.
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert_eq!(d.take_due(t0 + Duration::from_millis(2)), vec![99_999, 99_998]);
    }
}
