//! Per-source rate limits as token buckets (what nginx limit_req and Kamailio pike did).
//! Drivers ask before accepting a connection or handling a SIP request; time is an argument.
//! Sources in an office range (`bans.rate_limits.offices`) get the office's limits; the
//! allowlist is never limited (as it is never banned). Loopback is limited like any source
//! here (one host's own clients are few); the guard's `admit` exempts it as it does from bans.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::profile::{Bans, Cidr, RateLimits};

use super::engine::canonical;

/// Buckets kept at most; full (idle) buckets are dropped first when the limit is reached.
pub const MAX_BUCKETS: usize = 65_536;

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A new TCP/TLS connection (HTTPS, WSS, TURN over TCP/TLS).
    NewConnection,
    /// One SIP request.
    SipRequest,
}

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit. `first` is true once per second of excess per source, so the driver (or
    /// the guard) counts one `rate-limited` failure per second rather than one per packet.
    /// `retry_after` is when the next token is due, for a 503's Retry-After.
    Deny { first: bool, retry_after: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: SystemTime,
    last_denial_reported: Option<SystemTime>,
}

/// Token buckets per (source, limit). A bucket holds `rate + burst` tokens and refills at `rate`
/// per second, so a source may exceed its rate by `burst` for a moment.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    allowlist: Vec<Cidr>,
    buckets: HashMap<(IpAddr, Limit), Bucket>,
}

/// (rate per second, bucket capacity) for `ip` and `limit` under `limits`.
fn rate_and_capacity(limits: &RateLimits, ip: IpAddr, limit: Limit) -> (f64, f64) {
    let (conn, sip, burst) = match limits.office_of(ip) {
        Some(o) => (o.new_connections_per_second, o.sip_requests_per_second, o.burst),
        None => (limits.new_connections_per_second, limits.sip_requests_per_second, limits.burst),
    };
    let rate = f64::from(match limit {
        Limit::NewConnection => conn,
        Limit::SipRequest => sip,
    });
    (rate, rate + f64::from(burst))
}

impl RateLimiter {
    /// The limits of `[bans]`: its rate limits and offices, and its allowlist exempt.
    pub fn new(bans: &Bans) -> Self {
        Self { limits: bans.rate_limits.clone(), allowlist: bans.allowlist.clone(), buckets: HashMap::new() }
    }

    pub fn reconfigure(&mut self, bans: &Bans) {
        self.limits = bans.rate_limits.clone();
        self.allowlist = bans.allowlist.clone();
    }

    /// Takes one token for `ip`; a rate of 0 means unlimited.
    pub fn check(&mut self, ip: IpAddr, limit: Limit, now: SystemTime) -> Verdict {
        let ip = canonical(ip);
        let (rate, capacity) = rate_and_capacity(&self.limits, ip, limit);
        if rate == 0.0 || self.allowlist.iter().any(|c| c.contains(&ip)) {
            return Verdict::Allow;
        }
        if self.buckets.len() >= MAX_BUCKETS {
            self.prune(now);
        }
        let bucket = self.buckets.entry((ip, limit)).or_insert(Bucket { tokens: capacity, updated: now, last_denial_reported: None });
        let elapsed = now.duration_since(bucket.updated).unwrap_or_default().as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Allow;
        }
        let first = bucket.last_denial_reported.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= Duration::from_secs(1));
        if first {
            bucket.last_denial_reported = Some(now);
        }
        let retry_after = Duration::from_secs_f64(((1.0 - bucket.tokens) / rate).clamp(0.0, 3600.0));
        Verdict::Deny { first, retry_after }
    }

    /// Drops buckets that have refilled completely (they hold no information). When every
    /// bucket is busy, the oldest half goes: a fresh bucket is generous, never stricter.
    pub fn prune(&mut self, now: SystemTime) {
        let limits = &self.limits;
        let full = |ip: IpAddr, limit: Limit, b: &Bucket| {
            let (rate, cap) = rate_and_capacity(limits, ip, limit);
            b.tokens + now.duration_since(b.updated).unwrap_or_default().as_secs_f64() * rate >= cap
        };
        self.buckets.retain(|(ip, limit), b| !full(*ip, *limit, b));
        if self.buckets.len() >= MAX_BUCKETS {
            let mut ages: Vec<SystemTime> = self.buckets.values().map(|b| b.updated).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.updated > cut);
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
