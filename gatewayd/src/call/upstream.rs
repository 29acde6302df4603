//! The upstream SIP servers, sans-IO: which one to try next (priority, then weight), which are
//! healthy (OPTIONS checks with a failure threshold), and failover order for one request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::profile::{Transport, Upstream};

/// One server and what the health checks know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub address: SocketAddr,
    pub transport: Transport,
    pub priority: u16,
    pub weight: u16,
    /// Consecutive failed checks or requests.
    pub failures: u32,
    /// Used by weighted round robin within a priority.
    served: u64,
}

impl Server {
    pub fn is_up(&self, threshold: u32) -> bool {
        self.failures < threshold
    }
}

/// Health and selection state of all upstream servers.
#[derive(Debug, Clone)]
pub struct Upstreams {
    servers: Vec<Server>,
    threshold: u32,
    interval: Duration,
    next_check: Option<Instant>,
}

impl Upstreams {
    pub fn from_profile(u: &Upstream) -> Self {
        let servers = u
            .servers
            .iter()
            .map(|s| Server { address: s.address, transport: s.transport, priority: s.priority, weight: s.weight.max(1), failures: 0, served: 0 })
            .collect();
        Upstreams { servers, threshold: u.health.failures.max(1), interval: u.health.interval.0, next_check: None }
    }

    /// A new profile: servers that remain keep their health.
    pub fn reconfigure(&mut self, u: &Upstream) {
        let mut next = Self::from_profile(u);
        for s in &mut next.servers {
            if let Some(old) = self.servers.iter().find(|o| o.address == s.address && o.transport == s.transport) {
                s.failures = old.failures;
                s.served = old.served;
            }
        }
        next.next_check = self.next_check;
        *self = next;
    }

    /// Consecutive failures at which a server counts as down.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The order to try servers for a new request: healthy ones by priority, within a priority
    /// the least served relative to its weight first; servers that are down come last so a
    /// request still has somewhere to go when every check fails.
    pub fn failover_order(&mut self) -> Vec<SocketAddr> {
        let threshold = self.threshold;
        let mut order: Vec<&Server> = self.servers.iter().collect();
        order.sort_by(|a, b| {
            (!a.is_up(threshold))
                .cmp(&!b.is_up(threshold))
                .then(a.priority.cmp(&b.priority))
                .then((a.served * u64::from(b.weight)).cmp(&(b.served * u64::from(a.weight))))
        });
        let order: Vec<SocketAddr> = order.iter().map(|s| s.address).collect();
        if let Some(first) = order.first() {
            if let Some(s) = self.servers.iter_mut().find(|s| s.address == *first) {
                s.served += 1;
            }
        }
        order
    }

    pub fn transport_of(&self, addr: SocketAddr) -> Option<Transport> {
        self.servers.iter().find(|s| s.address == addr).map(|s| s.transport)
    }

    /// Whether `addr` is one of the upstream servers (requests from elsewhere are refused).
    pub fn is_upstream(&self, addr: std::net::IpAddr) -> bool {
        self.servers.iter().any(|s| s.address.ip() == addr)
    }

    /// A server answered (a check or a request): it is up.
    pub fn record_success(&mut self, addr: SocketAddr) {
        if let Some(s) = self.servers.iter_mut().find(|s| s.address == addr) {
            if !s.is_up(self.threshold) {
                tracing::info!(server = %addr, "upstream server is answering again");
            }
            s.failures = 0;
        }
    }

    /// A check or request timed out, or the server answered 503.
    pub fn record_failure(&mut self, addr: SocketAddr) {
        let threshold = self.threshold;
        if let Some(s) = self.servers.iter_mut().find(|s| s.address == addr) {
            s.failures = s.failures.saturating_add(1);
            if s.failures == threshold {
                tracing::warn!(server = %addr, failures = s.failures, "upstream server is down; skipped until it answers");
            }
        }
    }

    /// Servers due for an OPTIONS check at `now` (all of them, every interval).
    pub fn due_checks(&mut self, now: Instant) -> Vec<SocketAddr> {
        match self.next_check {
            Some(at) if at > now => Vec::new(),
            _ => {
                self.next_check = Some(now + self.interval);
                self.servers.iter().map(|s| s.address).collect()
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Health, Outbound, RegistrationMode, UpstreamServer};

    fn upstream(servers: &[(&str, u16, u16)]) -> Upstream {
        Upstream {
            servers: servers
                .iter()
                .map(|(a, p, w)| UpstreamServer { address: a.parse().unwrap(), transport: Transport::Udp, priority: *p, weight: *w })
                .collect(),
            registration: RegistrationMode::None,
            register_expires: crate::profile::Duration::secs(3600),
            session_expires: crate::profile::Duration::secs(1800),
            reply_timeout: crate::profile::Duration::secs(2),
            auth_realm: None,
            health: Health { interval: crate::profile::Duration::secs(10), failures: 2 },
            outbound: Outbound::default(),
        }
    }

    #[test]
    fn priority_first_then_failover_past_down_servers() {
        let mut u = Upstreams::from_profile(&upstream(&[("10.0.0.2:5060", 2, 1), ("10.0.0.1:5060", 1, 1)]));
        let a: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        assert_eq!(u.failover_order(), [a, b]);
        u.record_failure(a);
        assert_eq!(u.failover_order(), [a, b], "one failure is below the threshold");
        u.record_failure(a);
        assert_eq!(u.failover_order(), [b, a], "down servers go last");
        u.record_success(a);
        assert_eq!(u.failover_order(), [a, b]);
    }

    #[test]
    fn weights_share_load_within_a_priority() {
        let mut u = Upstreams::from_profile(&upstream(&[("10.0.0.1:5060", 1, 3), ("10.0.0.2:5060", 1, 1)]));
        let firsts: Vec<SocketAddr> = (0..8).map(|_| u.failover_order()[0]).collect();
        let to_a = firsts.iter().filter(|a| a.port() == 5060 && a.ip().to_string() == "10.0.0.1").count();
        assert_eq!(to_a, 6, "weight 3:1 over 8 requests: {firsts:?}");
    }

    #[test]
    fn checks_come_due_every_interval() {
        let mut u = Upstreams::from_profile(&upstream(&[("10.0.0.1:5060", 1, 1)]));
        let t0 = Instant::now();
        assert_eq!(u.due_checks(t0).len(), 1);
        assert!(u.due_checks(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(u.due_checks(t0 + Duration::from_secs(10)).len(), 1);
    }
}
