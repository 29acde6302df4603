//! The ban engine: counts failures per source against the profile's rules and decides bans,
//! escalation and expiry. Plain synchronous state: failures and the current time in, actions out.
//! Wall-clock time (`SystemTime`) is used because bans must outlive a restart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::profile::{BanRule, Bans, Cidr, FailureKind};

/// Sources whose failure history is kept at most; beyond it the stalest are forgotten, so a
/// flood from spoofed addresses cannot grow memory without bound.
pub const MAX_TRACKED_SOURCES: usize = 65_536;

/// One failure a listener saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub ip: IpAddr,
    pub kind: FailureKind,
}

/// Why a source is banned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum BanReason {
    /// A rule's threshold was reached.
    Rule { rule: String, failures: u32 },
    /// An operator banned it.
    Manual,
    /// The other node of an HA pair banned it and pushed the ban here.
    Peer,
}

/// An active ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub ip: IpAddr,
    pub since: SystemTime,
    pub until: SystemTime,
    pub reason: BanReason,
    /// 1 for a first offence; each repeat multiplies the ban time by the escalation factor.
    pub offence: u32,
}

impl Ban {
    /// What is left of the ban at `now` (zero when it is over).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.until.duration_since(now).unwrap_or_default()
    }
}

/// What the engine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardAction {
    /// Drop everything from the source for `duration` (nftables ban set with timeout).
    Ban(Ban),
    /// Close every open connection from the source (the drivers own them).
    CloseConnections(IpAddr),
    /// The ban is over or was lifted; remove the source from the ban set.
    Unban(IpAddr),
}

/// Past offences of a source, for escalation; forgotten `max_ban_time` after the last ban ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offences {
    pub count: u32,
    pub last_until: SystemTime,
}

/// Failure times of one source for one rule (at most `max_retry` are kept).
#[derive(Debug, Default)]
struct Window {
    times: VecDeque<SystemTime>,
}

/// The ban engine.
#[derive(Debug)]
pub struct BanEngine {
    config: Bans,
    /// (source, rule index) -> recent failure times.
    windows: HashMap<(IpAddr, usize), Window>,
    /// Last failure per source, to evict the stalest when too many are tracked.
    last_seen: HashMap<IpAddr, SystemTime>,
    bans: BTreeMap<IpAddr, Ban>,
    offences: HashMap<IpAddr, Offences>,
}

impl BanEngine {
    pub fn new(config: Bans) -> Self {
        Self { config, windows: HashMap::new(), last_seen: HashMap::new(), bans: BTreeMap::new(), offences: HashMap::new() }
    }

    /// Takes a new profile's rules; active bans and offence history stay. Failure windows are
    /// reset because rule indexes may have changed.
    pub fn reconfigure(&mut self, config: Bans) {
        if config.rules != self.config.rules {
            self.windows.clear();
            self.last_seen.clear();
        }
        self.config = config;
    }

    pub fn config(&self) -> &Bans {
        &self.config
    }

    /// Whether `ip` may never be banned: loopback and the allowlist.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        exempt(&self.config.allowlist, ip)
    }

    /// Counts one failure; returns the ban (and the connections to close) when a rule trips.
    pub fn report(&mut self, failure: Failure, now: SystemTime) -> Vec<GuardAction> {
        let ip = canonical(failure.ip);
        if !self.config.enabled || self.is_exempt(ip) || self.is_banned(ip, now) {
            return Vec::new();
        }
        self.last_seen.insert(ip, now);
        let mut tripped: Option<(usize, u32)> = None;
        for (index, rule) in self.config.rules.iter().enumerate() {
            if !rule.events.contains(&failure.kind) {
                continue;
            }
            let window = self.windows.entry((ip, index)).or_default();
            window.record(now, rule);
            let count = window.times.len() as u32;
            if count >= rule.max_retry && tripped.is_none() {
                tripped = Some((index, count));
            }
        }
        self.bound_memory();
        match tripped {
            Some((index, failures)) => {
                let rule = self.config.rules[index].clone();
                self.forget_failures(ip);
                self.ban(ip, rule.ban_time.0, BanReason::Rule { rule: rule.name, failures }, now)
            }
            None => Vec::new(),
        }
    }

    /// Bans `ip` for the escalated `base` duration. Exempt sources are refused (empty result).
    pub fn ban(&mut self, ip: IpAddr, base: Duration, reason: BanReason, now: SystemTime) -> Vec<GuardAction> {
        let ip = canonical(ip);
        if self.is_exempt(ip) {
            return Vec::new();
        }
        let previous = self
            .offences
            .get(&ip)
            .filter(|o| o.last_until + Duration::from(self.config.max_ban_time) > now)
            .map_or(0, |o| o.count);
        let offence = previous.saturating_add(1);
        let duration = escalate(base, self.config.escalation_factor, offence, self.config.max_ban_time.0);
        self.impose(ip, offence, duration, reason, now)
    }

    /// Bans `ip` for exactly `duration` (no escalation: the node that made the ban escalated it
    /// already). Exempt sources are refused (empty result).
    pub fn ban_exactly(&mut self, ip: IpAddr, duration: Duration, reason: BanReason, now: SystemTime) -> Vec<GuardAction> {
        let ip = canonical(ip);
        if self.is_exempt(ip) {
            return Vec::new();
        }
        let offence = self.offences.get(&ip).map_or(0, |o| o.count).saturating_add(1);
        self.impose(ip, offence, duration, reason, now)
    }

    /// Records the ban of a (canonical, not exempt) source and says what carrying it out takes.
    fn impose(&mut self, ip: IpAddr, offence: u32, duration: Duration, reason: BanReason, now: SystemTime) -> Vec<GuardAction> {
        let ban = Ban { ip, since: now, until: now + duration, reason, offence };
        self.offences.insert(ip, Offences { count: offence, last_until: ban.until });
        self.bans.insert(ip, ban.clone());
        vec![GuardAction::Ban(ban), GuardAction::CloseConnections(ip)]
    }

    /// Lifts a ban early; `None` when `ip` was not banned. Lifting also forgives its offences.
    pub fn unban(&mut self, ip: IpAddr) -> Option<GuardAction> {
        let ip = canonical(ip);
        self.offences.remove(&ip);
        self.forget_failures(ip);
        self.bans.remove(&ip).map(|_| GuardAction::Unban(ip))
    }

    /// Ends bans whose time is up and forgets stale history; call it every second or so.
    pub fn expire(&mut self, now: SystemTime) -> Vec<GuardAction> {
        let over: Vec<IpAddr> = self.bans.values().filter(|b| b.until <= now).map(|b| b.ip).collect();
        for ip in &over {
            self.bans.remove(ip);
        }
        let keep = Duration::from(self.config.max_ban_time);
        self.offences.retain(|_, o| o.last_until + keep > now);
        let rules = &self.config.rules;
        self.windows.retain(|(_, index), w| {
            rules.get(*index).is_some_and(|r| {
                w.prune(now, r.find_time.0);
                !w.times.is_empty()
            })
        });
        let live: std::collections::HashSet<IpAddr> = self.windows.keys().map(|(ip, _)| *ip).collect();
        self.last_seen.retain(|ip, _| live.contains(ip));
        over.into_iter().map(GuardAction::Unban).collect()
    }

    pub fn is_banned(&self, ip: IpAddr, now: SystemTime) -> bool {
        self.bans.get(&canonical(ip)).is_some_and(|b| b.until > now)
    }

    /// Active bans, soonest-ending last.
    pub fn bans(&self, now: SystemTime) -> Vec<Ban> {
        let mut v: Vec<Ban> = self.bans.values().filter(|b| b.until > now).cloned().collect();
        v.sort_by(|a, b| b.until.cmp(&a.until).then(a.ip.cmp(&b.ip)));
        v
    }

    pub fn offences(&self) -> &HashMap<IpAddr, Offences> {
        &self.offences
    }

    /// Restores persisted state (after a restart); bans already over are skipped.
    pub fn restore(&mut self, bans: Vec<Ban>, offences: HashMap<IpAddr, Offences>, now: SystemTime) {
        let allowlist = self.config.allowlist.clone();
        for b in bans.into_iter().filter(|b| b.until > now && !exempt(&allowlist, b.ip)) {
            self.bans.insert(b.ip, b);
        }
        self.offences.extend(offences);
    }

    /// Number of sources with failure history.
    pub fn tracked_sources(&self) -> usize {
        self.last_seen.len()
    }

    fn forget_failures(&mut self, ip: IpAddr) {
        self.windows.retain(|(w, _), _| *w != ip);
        self.last_seen.remove(&ip);
    }

    fn bound_memory(&mut self) {
        if self.last_seen.len() <= MAX_TRACKED_SOURCES {
            return;
        }
        // Evict the stalest tenth at once so the cost is paid rarely.
        let mut by_age: Vec<(SystemTime, IpAddr)> = self.last_seen.iter().map(|(ip, t)| (*t, *ip)).collect();
        by_age.sort_unstable();
        let stale: std::collections::HashSet<IpAddr> = by_age.into_iter().take(MAX_TRACKED_SOURCES / 10).map(|(_, ip)| ip).collect();
        self.windows.retain(|(ip, _), _| !stale.contains(ip));
        self.last_seen.retain(|ip, _| !stale.contains(ip));
    }
}

impl Window {
    fn record(&mut self, now: SystemTime, rule: &BanRule) {
        self.prune(now, rule.find_time.0);
        self.times.push_back(now);
        while self.times.len() > rule.max_retry as usize {
            self.times.pop_front();
        }
    }

    fn prune(&mut self, now: SystemTime, find_time: Duration) {
        while self.times.front().is_some_and(|t| *t + find_time <= now) {
            self.times.pop_front();
        }
    }
}

/// `base * factor^(offence-1)`, capped.
pub fn escalate(base: Duration, factor: u32, offence: u32, cap: Duration) -> Duration {
    let mut d = base;
    for _ in 1..offence {
        d = d.saturating_mul(factor.max(1));
        if d >= cap {
            return cap;
        }
    }
    d.min(cap)
}

/// Loopback and allowlisted sources are never banned.
pub fn exempt(allowlist: &[Cidr], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || ip.is_unspecified() || allowlist.iter().any(|c| c.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) are treated as the IPv4 source they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
