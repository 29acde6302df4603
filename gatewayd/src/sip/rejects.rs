//! Rejected input as a rate-limited summary per source, sans-IO. A flood of broken messages
//! must not become a flood of log lines: the first rejection from a source is reported at once,
//! and then at most one line per source per interval, with the counts by reason since the last
//! one. Memory is bounded: at most `max_sources` sources are tracked one by one (the rest are
//! counted together as "other sources"), a source that stays quiet for a whole interval is
//! forgotten, and each source keeps at most `MAX_REASONS` reasons (the rest count as "other").
//!
//! The driver calls `record` for each rejection (printing what it returns), and `handle_timeout`
//! once `poll_timeout` is due (printing every summary it returns). Time is an argument.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Distinct reasons counted per source before the rest are lumped together.
pub const MAX_REASONS: usize = 12;
/// How often a source may have a line.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Sources tracked one by one.
pub const DEFAULT_MAX_SOURCES: usize = 1024;

/// One log line's worth: what `source` (`None`: the sources beyond the cap) sent that was
/// rejected since its previous line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub source: Option<IpAddr>,
    /// Rejections since the previous line.
    pub total: u64,
    /// Counts by reason, in the order the reasons first appeared.
    pub counts: Vec<(&'static str, u64)>,
    /// Time the counts cover: zero for a source's first line, else since its previous line.
    pub period: Duration,
}

impl Summary {
    /// The source as text: an address, or `other sources`.
    pub fn source_text(&self) -> String {
        self.source.map_or_else(|| "other sources".to_owned(), |ip| ip.to_string())
    }
}

/// `400 Missing To header: 3, Bad Extension: 1`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reason, count)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{reason}: {count}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Tally {
    /// When this source's last line was given.
    last_line: Instant,
    counts: Vec<(&'static str, u64)>,
}

impl Tally {
    fn add(&mut self, reason: &'static str) {
        if let Some((_, n)) = self.counts.iter_mut().find(|(r, _)| *r == reason) {
            *n += 1;
        } else if self.counts.len() < MAX_REASONS {
            self.counts.push((reason, 1));
        } else if let Some((_, n)) = self.counts.iter_mut().find(|(r, _)| *r == "other") {
            *n += 1;
        } else {
            // The last slot becomes "other", keeping what it counted.
            let last = self.counts.last_mut().expect("MAX_REASONS > 0");
            *last = ("other", last.1 + 1);
        }
    }

    fn take(&mut self, source: Option<IpAddr>, now: Instant) -> Summary {
        let counts = std::mem::take(&mut self.counts);
        let period = now.saturating_duration_since(self.last_line);
        self.last_line = now;
        Summary { source, total: counts.iter().map(|(_, n)| n).sum(), counts, period }
    }
}

/// The summariser: one per side of the gateway.
#[derive(Debug)]
pub struct RejectLog {
    interval: Duration,
    max_sources: usize,
    tallies: HashMap<Option<IpAddr>, Tally>,
    /// When each tracked source's next line is due. Lines are given in time order, so this is
    /// sorted by due time; each source is in it exactly once.
    due: VecDeque<(Instant, Option<IpAddr>)>,
}

impl Default for RejectLog {
    fn default() -> Self {
        RejectLog::new(DEFAULT_INTERVAL, DEFAULT_MAX_SOURCES)
    }
}

impl RejectLog {
    pub fn new(interval: Duration, max_sources: usize) -> Self {
        RejectLog { interval, max_sources, tallies: HashMap::new(), due: VecDeque::new() }
    }

    /// Counts one rejection. A source's first (after a quiet interval) is returned at once, to be
    /// logged; the rest wait for `handle_timeout`.
    pub fn record(&mut self, source: IpAddr, reason: &'static str, now: Instant) -> Option<Summary> {
        let key = if self.tallies.contains_key(&Some(source)) || self.tracked() < self.max_sources {
            Some(source)
        } else {
            None
        };
        if let Some(tally) = self.tallies.get_mut(&key) {
            tally.add(reason);
            return None;
        }
        let mut tally = Tally { last_line: now, counts: Vec::new() };
        tally.add(reason);
        let first = tally.take(key, now);
        self.tallies.insert(key, tally);
        self.due.push_back((now + self.interval, key));
        Some(first)
    }

    /// Sources tracked one by one (not counting "other sources").
    fn tracked(&self) -> usize {
        self.tallies.len() - usize::from(self.tallies.contains_key(&None))
    }

    /// Sources (and "other sources") currently held.
    pub fn len(&self) -> usize {
        self.tallies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// The summaries due by `now`. A source with nothing new since its last line is forgotten.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            let Some(tally) = self.tallies.get_mut(&key) else { continue };
            if tally.counts.is_empty() {
                self.tallies.remove(&key);
                continue;
            }
            out.push(tally.take(key, now));
            self.due.push_back((now + self.interval, key));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    #[test]
    fn the_first_rejection_is_told_at_once_then_one_line_per_interval() {
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        let first = log.record(ip(1), "Missing To header", t0).expect("first line at once");
        assert_eq!((first.total, first.period), (1, Duration::ZERO));
        assert_eq!(first.to_string(), "Missing To header: 1");
        for i in 0..40_000u32 {
            let reason = if i % 4 == 0 { "Bad CSeq header" } else { "Missing To header" };
            assert_eq!(log.record(ip(1), reason, t0 + Duration::from_micros(i.into())), None);
        }
        assert_eq!(log.poll_timeout(), Some(t0 + DEFAULT_INTERVAL));
        assert!(log.handle_timeout(t0 + Duration::from_secs(9)).is_empty());
        let lines = log.handle_timeout(t0 + DEFAULT_INTERVAL);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].total, 40_000);
        assert_eq!(lines[0].counts, vec![("Bad CSeq header", 10_000), ("Missing To header", 30_000)]);
        assert_eq!(lines[0].period, DEFAULT_INTERVAL);
    }

    #[test]
    fn a_quiet_source_is_forgotten_and_is_told_at_once_when_it_returns() {
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        log.record(ip(1), "Bad Request", t0);
        log.record(ip(1), "Bad Request", t0);
        assert_eq!(log.handle_timeout(t0 + DEFAULT_INTERVAL).len(), 1);
        assert_eq!(log.len(), 1, "kept one more interval to hold the next line back");
        assert!(log.handle_timeout(t0 + 2 * DEFAULT_INTERVAL).is_empty());
        assert!(log.is_empty());
        assert_eq!(log.poll_timeout(), None);
        assert!(log.record(ip(1), "Bad Request", t0 + 3 * DEFAULT_INTERVAL).is_some());
    }

    #[test]
    fn sources_beyond_the_cap_are_counted_together() {
        let mut log = RejectLog::new(DEFAULT_INTERVAL, 2);
        let t0 = Instant::now();
        assert_eq!(log.record(ip(1), "Bad Request", t0).unwrap().source, Some(ip(1)));
        assert_eq!(log.record(ip(2), "Bad Request", t0).unwrap().source, Some(ip(2)));
        let other = log.record(ip(3), "Bad Request", t0).unwrap();
        assert_eq!(other.source, None);
        assert_eq!(other.source_text(), "other sources");
        for n in 4..200 {
            assert_eq!(log.record(ip(n), "Bad Request", t0), None);
        }
        assert_eq!(log.len(), 3, "two sources and the others");
        assert_eq!(log.record(ip(1), "Bad Request", t0), None, "a tracked source stays tracked");
        let lines = log.handle_timeout(t0 + DEFAULT_INTERVAL);
        let other = lines.iter().find(|s| s.source.is_none()).unwrap();
        assert_eq!(other.total, 196);
        assert_eq!(lines.iter().find(|s| s.source == Some(ip(1))).unwrap().total, 1);
    }

    #[test]
    fn reasons_per_source_are_bounded() {
        const REASONS: [&str; 20] = [
            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "r16",
            "r17", "r18", "r19",
        ];
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        log.record(ip(1), "first", t0);
        for reason in REASONS {
            log.record(ip(1), reason, t0);
        }
        let line = &log.handle_timeout(t0 + DEFAULT_INTERVAL)[0];
        assert_eq!(line.counts.len(), MAX_REASONS);
        assert_eq!(line.total, 20);
        assert_eq!(line.counts.last().unwrap().0, "other");
    }

    #[test]
    fn lines_from_many_sources_come_out_in_time_order() {
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        for n in 0..10u8 {
            let at = t0 + Duration::from_secs(n.into());
            log.record(ip(n), "Bad Request", at);
            log.record(ip(n), "Bad Request", at);
        }
        let lines = log.handle_timeout(t0 + Duration::from_secs(14));
        let sources: Vec<_> = lines.iter().map(|s| s.source.unwrap()).collect();
        assert_eq!(sources, (0..5).map(ip).collect::<Vec<_>>());
        assert_eq!(log.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    }
}
