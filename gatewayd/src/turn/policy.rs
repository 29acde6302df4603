//! Which peers a relay may reach. Browsers only ever talk to this gateway, so by default a relay
//! reaches the gateway's own public media addresses on `media.public_ports` and nothing else;
//! `turn.allowed_peers` widens that. Loopback and the internal side stay out of reach unless the
//! site is in lab mode, so a relay can never be turned into a way into the DMZ or the internal
//! network (the CVE-2020-26262 family).

use std::net::{IpAddr, SocketAddr};

use crate::profile::{Cidr, PortRange, Profile};

/// Why a peer was refused (reported in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unspecified, multicast or broadcast: never a unicast peer.
    NotUnicast,
    /// Listed in `turn.denied_peers`.
    Denied,
    /// Loopback, or the internal side of the gateway.
    Internal,
    /// The gateway's own address on a port that is not a media port.
    NotMediaPort,
    /// Anywhere else not allowed by `turn.allowed_peers`.
    NotAllowed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotUnicast => "not-unicast",
            Refusal::Denied => "denied",
            Refusal::Internal => "internal",
            Refusal::NotMediaPort => "not-media-port",
            Refusal::NotAllowed => "not-allowed",
        }
    }
}

/// The peer rules of one profile.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// The gateway's own public addresses, bound and advertised.
    own: Vec<IpAddr>,
    media_ports: Option<PortRange>,
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    internal: Vec<Cidr>,
    lab_mode: bool,
}

impl PeerPolicy {
    pub fn from_profile(p: &Profile) -> Self {
        let mut own = p.public.addresses.clone();
        own.extend(p.public.advertised_addresses());
        own.sort();
        own.dedup();
        let turn = p.turn.as_ref();
        let mut internal: Vec<Cidr> = p.internal.networks.clone();
        internal.push(Cidr::from(p.internal.address));
        Self {
            own,
            media_ports: Some(p.media.public_ports),
            allowed: turn.map(|t| t.allowed_peers.clone()).unwrap_or_default(),
            denied: turn.map(|t| t.denied_peers.clone()).unwrap_or_default(),
            internal,
            lab_mode: p.site.lab_mode,
        }
    }

    /// Whether a permission for `ip` may be installed (CreatePermission: no port involved).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.check(ip, None)
    }

    /// Whether data may be relayed to `peer` (ChannelBind and Send carry a port).
    pub fn check_peer(&self, peer: SocketAddr) -> Result<(), Refusal> {
        self.check(peer.ip(), Some(peer.port()))
    }

    fn check(&self, ip: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
            return Err(Refusal::NotUnicast);
        }
        if self.denied.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Denied);
        }
        if self.own.contains(&ip) {
            return match (port, self.media_ports) {
                (Some(port), Some(range)) if !range.contains(port) => {
                    if self.explicitly_allowed(ip) {
                        Ok(())
                    } else {
                        Err(Refusal::NotMediaPort)
                    }
                }
                _ => Ok(()),
            };
        }
        let internal = ip.is_loopback() || self.internal.iter().any(|n| n.contains(&ip));
        if internal && !self.lab_mode {
            return Err(Refusal::Internal);
        }
        if self.explicitly_allowed(ip) {
            Ok(())
        } else if internal {
            Err(Refusal::Internal)
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    fn explicitly_allowed(&self, ip: IpAddr) -> bool {
        let internal = ip.is_loopback() || self.internal.iter().any(|n| n.contains(&ip));
        (self.lab_mode || !internal) && self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// Whether `peer` is one of the gateway's own media sockets (a candidate for relaying
    /// inside the process).
    pub fn is_own_media(&self, peer: SocketAddr) -> bool {
        self.own.contains(&canonical(peer.ip())) && self.media_ports.is_some_and(|r| r.contains(peer.port()))
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(lab: bool, allowed: &[&str]) -> PeerPolicy {
        PeerPolicy {
            own: vec!["203.0.113.10".parse().unwrap()],
            media_ports: Some(PortRange::new(40000, 40999)),
            allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            denied: vec!["198.51.100.0/24".parse().unwrap()],
            internal: vec!["192.168.210.0/24".parse().unwrap(), "192.168.210.81/32".parse().unwrap()],
            lab_mode: lab,
        }
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn by_default_only_the_gateways_own_media_ports_are_reachable() {
        let p = policy(false, &[]);
        assert_eq!(p.check_peer(peer("203.0.113.10:40002")), Ok(()));
        assert_eq!(p.check_ip("203.0.113.10".parse().unwrap()), Ok(()));
        assert_eq!(p.check_peer(peer("203.0.113.10:5060")), Err(Refusal::NotMediaPort));
        assert_eq!(p.check_peer(peer("203.0.113.10:443")), Err(Refusal::NotMediaPort));
        assert_eq!(p.check_peer(peer("8.8.8.8:40002")), Err(Refusal::NotAllowed));
        assert_eq!(p.check_peer(peer("10.1.2.3:40002")), Err(Refusal::NotAllowed));
    }

    #[test]
    fn loopback_and_the_internal_side_are_refused_even_when_allowed_outside_lab_mode() {
        let p = policy(false, &["127.0.0.1/32", "192.168.210.0/24", "10.0.0.0/8"]);
        assert_eq!(p.check_peer(peer("127.0.0.1:3480")), Err(Refusal::Internal));
        assert_eq!(p.check_peer(peer("192.168.210.81:5060")), Err(Refusal::Internal));
        assert_eq!(p.check_peer(peer("[::ffff:192.168.210.81]:5060")), Err(Refusal::Internal));
        assert_eq!(p.check_peer(peer("[::1]:5060")), Err(Refusal::Internal));
        assert_eq!(p.check_peer(peer("10.9.9.9:1234")), Ok(()));
    }

    #[test]
    fn lab_mode_lets_allowed_peers_include_loopback() {
        let p = policy(true, &["127.0.0.1/32"]);
        assert_eq!(p.check_peer(peer("127.0.0.1:3480")), Ok(()));
        assert_eq!(p.check_peer(peer("127.0.0.2:3480")), Err(Refusal::Internal));
    }

    #[test]
    fn denied_and_non_unicast_peers_are_always_refused() {
        let p = policy(true, &["0.0.0.0/0"]);
        assert_eq!(p.check_peer(peer("198.51.100.7:1")), Err(Refusal::Denied));
        assert_eq!(p.check_peer(peer("0.0.0.0:1")), Err(Refusal::NotUnicast));
        assert_eq!(p.check_peer(peer("224.0.0.1:1")), Err(Refusal::NotUnicast));
        assert_eq!(p.check_peer(peer("255.255.255.255:1")), Err(Refusal::NotUnicast));
    }
}
