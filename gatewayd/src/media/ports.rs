//! Port pools: ports are handed out per call and come back at teardown.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

/// A pool of single ports (browser legs) or of even/odd pairs (internal RTP + RTCP).
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    step: u16,
    total: usize,
}

impl PortPool {
    /// No ports at all (every browser leg shares one configured port).
    pub fn empty() -> PortPool {
        PortPool { free: VecDeque::new(), step: 1, total: 0 }
    }

    /// Every port of the range.
    pub fn singles(range: RangeInclusive<u16>) -> PortPool {
        let free: VecDeque<u16> = range.collect();
        PortPool { total: free.len(), free, step: 1 }
    }

    /// Even ports whose odd neighbour is also in the range (RTP port, RTCP = port + 1).
    pub fn pairs(range: RangeInclusive<u16>) -> PortPool {
        let (lo, hi) = (*range.start(), *range.end());
        let first = lo + (lo % 2);
        let free: VecDeque<u16> =
            (first..hi).step_by(2).filter(|p| p.checked_add(1).is_some_and(|q| q <= hi)).collect();
        PortPool { total: free.len(), free, step: 2 }
    }

    /// Takes the first port accepted by `usable` (e.g. one that binds), trying each at most once.
    /// The least recently released comes first so a port is not reused at once (late packets
    /// of the old call must not reach a new one).
    pub fn take_where(&mut self, mut usable: impl FnMut(u16) -> bool) -> Option<u16> {
        for _ in 0..self.free.len() {
            let p = self.free.pop_front()?;
            if usable(p) {
                return Some(p);
            }
            self.free.push_back(p);
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        debug_assert!(self.step == 1 || port % 2 == 0);
        if !self.free.contains(&port) {
            self.free.push_back(port);
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let mut p = PortPool::pairs(30001..=30006);
        assert_eq!(p.total(), 2);
        assert_eq!(p.take_where(|_| true), Some(30002));
        assert_eq!(p.take_where(|_| true), Some(30004));
        assert_eq!(p.take_where(|_| true), None);
    }

    #[test]
    fn released_ports_return_last() {
        let mut p = PortPool::singles(1000..=1002);
        let a = p.take_where(|_| true).unwrap();
        p.release(a);
        assert_eq!(p.take_where(|_| true), Some(1001));
        assert_eq!(p.available(), 2);
        p.release(1001);
        assert_eq!(p.available(), 3);
    }

    #[test]
    fn take_where_skips_unusable_ports() {
        let mut p = PortPool::singles(1000..=1003);
        assert_eq!(p.take_where(|x| x == 1002), Some(1002));
        assert_eq!(p.available(), 3);
        assert_eq!(p.take_where(|_| false), None);
        assert_eq!(p.available(), 3);
    }
}
