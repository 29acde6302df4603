//! The deadline structure's behaviour as call control and the media workers use it.

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


fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

#[test]
fn due_calls_come_out_in_deadline_order() {
    let t0 = Instant::now();
    let mut t = Deadlines::default();
    t.set(1, Some(ms(t0, 30)));
    t.set(2, Some(ms(t0, 10)));
    t.set(3, Some(ms(t0, 20)));
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
    let mut t = Deadlines::default();
    for n in 1..=1000 {
        t.set(7, Some(ms(t0, n)));
    }
    assert_eq!(t.entries(), 1, "one entry for the call however often its deadline moves");
    assert_eq!(t.pop_due(ms(t0, 500)), None, "re-queued at its current deadline, not fired");
    assert_eq!(t.next(), Some(ms(t0, 1000)));
    assert_eq!(t.pop_due(ms(t0, 1000)), Some(7));
}

#[test]
fn an_earlier_deadline_wins_and_the_old_entry_is_skipped() {
    let t0 = Instant::now();
    let mut t = Deadlines::default();
    t.set(1, Some(ms(t0, 100)));
    t.set(1, Some(ms(t0, 10)));
    assert_eq!(t.next(), Some(ms(t0, 10)));
    assert_eq!(t.pop_due(ms(t0, 10)), Some(1));
    assert_eq!(t.pop_due(ms(t0, 200)), None, "the superseded entry does not fire the call again");
}

#[test]
fn cancelled_calls_never_fire() {
    let t0 = Instant::now();
    let mut t = Deadlines::default();
    t.set(1, Some(ms(t0, 10)));
    t.set(2, Some(ms(t0, 20)));
    t.set(1, None);
    assert_eq!(t.pop_due(ms(t0, 50)), Some(2));
    assert_eq!(t.pop_due(ms(t0, 50)), None);
}

#[test]
fn cleared_and_moved_keys_do_not_pile_up() {
    let t0 = Instant::now();
    let mut d = Deadlines::default();
    d.set(0u64, Some(ms(t0, 1)));
    for n in 1..10_000u64 {
        // An earlier deadline, then cleared: each leaves an entry behind in the heap.
        d.set(n, Some(ms(t0, 5_000)));
        d.set(n, Some(ms(t0, 2_000)));
        d.set(n, None);
    }
    assert_eq!(d.len(), 1);
    assert!(d.entries() <= 2 * d.len() + 17, "{} entries for one key", d.entries());
    assert_eq!(d.take_due(ms(t0, 10_000)), vec![0]);
}
