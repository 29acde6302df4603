//! Per-source rate limits as token buckets (what nginx limit_req and Kamailio pike did).
//! Drivers ask before accepting a connection or handling a SIP request; time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::profile::RateLimits;

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
    Deny { first: bool },
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
    buckets: HashMap<(IpAddr, Limit), Bucket>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self { limits, buckets: HashMap::new() }
    }

    pub fn reconfigure(&mut self, limits: RateLimits) {
        self.limits = limits;
    }

    fn rate(&self, limit: Limit) -> f64 {
        f64::from(match limit {
            Limit::NewConnection => self.limits.new_connections_per_second,
            Limit::SipRequest => self.limits.sip_requests_per_second,
        })
    }

    fn capacity(&self, limit: Limit) -> f64 {
        self.rate(limit) + f64::from(self.limits.burst)
    }

    /// Takes one token for `ip`; a rate of 0 means unlimited.
    pub fn check(&mut self, ip: IpAddr, limit: Limit, now: SystemTime) -> Verdict {
        let rate = self.rate(limit);
        if rate == 0.0 {
            return Verdict::Allow;
        }
        let capacity = self.capacity(limit);
        if self.buckets.len() >= MAX_BUCKETS {
            self.prune(now);
        }
        let bucket = self.buckets.entry((canonical(ip), limit)).or_insert(Bucket { tokens: capacity, updated: now, last_denial_reported: None });
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
        Verdict::Deny { first }
    }

    /// Drops buckets that have refilled completely (they hold no information). When every
    /// bucket is busy, the oldest half goes: a fresh bucket is generous, never stricter.
    pub fn prune(&mut self, now: SystemTime) {
        let limits = self.limits.clone();
        let full = |limit: Limit, b: &Bucket| {
            let rate = f64::from(match limit {
                Limit::NewConnection => limits.new_connections_per_second,
                Limit::SipRequest => limits.sip_requests_per_second,
            });
            let cap = rate + f64::from(limits.burst);
            b.tokens + now.duration_since(b.updated).unwrap_or_default().as_secs_f64() * rate >= cap
        };
        self.buckets.retain(|(_, limit), b| !full(*limit, b));
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
