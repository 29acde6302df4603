//! From the profile to the ruleset: what each side may reach, derived from the services the
//! profile enables. Pure: the same profile always gives the same ruleset.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::ruleset::{Chain, Cond, Family, Hook, Policy, Rule, Ruleset, Stmt, TimeoutSet};
use crate::profile::{Cidr, IcmpPolicy, PortRange, Profile, Protocol, Side, Transport};

/// Names of the ban sets (IPv4 and IPv6) in gatewayd's table.
pub const BAN_SET_V4: &str = "banned4";
pub const BAN_SET_V6: &str = "banned6";
pub const INPUT_CHAIN: &str = "input";
pub const FORWARD_CHAIN: &str = "forward";
const SSH_PORT: u16 = 22;
/// Echo requests accepted per second with the `essential` ICMP policy.
const PING_RATE: u32 = 10;
/// Dropped packets logged per second with `log_drops`.
const LOG_RATE: u32 = 5;

/// One thing a side must reach: a protocol and ports on some of the gateway's addresses, from
/// some sources (`None`: anyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    pub side: Side,
    pub protocol: Protocol,
    pub addresses: Vec<IpAddr>,
    pub from: Option<Vec<Cidr>>,
    pub ports: Vec<PortRange>,
    pub what: Vec<String>,
}

/// Every opening the profile's enabled services need, merged where only the ports differ.
pub fn openings(p: &Profile) -> Vec<Opening> {
    let public = p.public.addresses.clone();
    let internal = vec![p.internal.address];
    let management = vec![p.management.address];
    let upstream: Vec<Cidr> = dedup(p.upstream.servers.iter().map(|s| Cidr::from(s.address.ip())).collect());
    let admins = p.management.allow_from.clone();
    let mut list = Vec::new();
    let mut open = |side: Side, protocol: Protocol, addresses: Vec<IpAddr>, from: Option<Vec<Cidr>>, ports: PortRange, what: &str| {
        list.push(Opening { side, protocol, addresses, from, ports: vec![ports], what: vec![what.to_owned()] });
    };
    let at = |l: &SocketAddr, side_addrs: &[IpAddr]| listener_addresses(l, side_addrs);
    let port = |l: &SocketAddr| PortRange::new(l.port(), l.port());

    for l in &p.web.https {
        open(Side::Public, Protocol::Tcp, at(l, &public), None, port(l), "https");
    }
    for l in &p.web.http_redirect {
        open(Side::Public, Protocol::Tcp, at(l, &public), None, port(l), "http redirect");
    }
    if let Some(t) = &p.turn {
        for l in &t.listen_udp {
            open(Side::Public, Protocol::Udp, at(l, &public), None, port(l), "turn");
        }
        for l in &t.listen_tcp {
            open(Side::Public, Protocol::Tcp, at(l, &public), None, port(l), "turn");
        }
        for l in &t.listen_tls {
            open(Side::Public, Protocol::Tcp, at(l, &public), None, port(l), "turn tls");
        }
        open(Side::Public, Protocol::Udp, public.clone(), None, t.relay_ports, "turn relay");
    }
    match p.media.single_port {
        Some(single) => open(Side::Public, Protocol::Udp, public.clone(), None, PortRange::new(single, single), "media"),
        None => open(Side::Public, Protocol::Udp, public.clone(), None, p.media.public_ports, "media"),
    }

    for l in &p.sip.listen {
        let protocol = match l.transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        open(Side::Internal, protocol, at(&l.address, &internal), Some(upstream.clone()), port(&l.address), "sip");
    }
    open(Side::Internal, Protocol::Udp, internal.clone(), Some(upstream.clone()), p.media.internal_ports, "rtp");

    open(Side::Management, Protocol::Tcp, at(&p.observe.admin, &management), Some(admins.clone()), port(&p.observe.admin), "admin");
    if let Some(m) = &p.observe.metrics {
        open(Side::Management, Protocol::Tcp, at(m, &management), Some(admins.clone()), port(m), "metrics");
    }
    if p.management.ssh {
        open(Side::Management, Protocol::Tcp, management.clone(), Some(admins.clone()), PortRange::new(SSH_PORT, SSH_PORT), "ssh");
    }

    if let Some(ha) = &p.ha {
        // Pushed bans from the peer's management address only.
        open(Side::Management, Protocol::Udp, management.clone(), Some(vec![Cidr::from(ha.peer)]), PortRange::new(ha.sync_port, ha.sync_port), "ha ban sync");
    }

    for (i, a) in p.firewall.allow.iter().enumerate() {
        let addrs = match a.side {
            Side::Public => public.clone(),
            Side::Internal => internal.clone(),
            Side::Management => management.clone(),
        };
        let from = (!a.from.is_empty()).then(|| a.from.clone());
        open(a.side, a.protocol, addrs, from, a.ports, &format!("allow[{i}]"));
    }
    merge(list)
}

/// A listener on a specific address opens that address; a wildcard listener opens the side's.
fn listener_addresses(l: &SocketAddr, side: &[IpAddr]) -> Vec<IpAddr> {
    if l.ip().is_unspecified() {
        side.to_vec()
    } else {
        vec![l.ip()]
    }
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Joins openings that differ only in ports, so each side gets a few compact rules.
fn merge(list: Vec<Opening>) -> Vec<Opening> {
    let mut out: Vec<Opening> = Vec::new();
    for o in list {
        match out.iter_mut().find(|x| x.side == o.side && x.protocol == o.protocol && x.addresses == o.addresses && x.from == o.from) {
            Some(x) => {
                for r in o.ports {
                    if !x.ports.contains(&r) {
                        x.ports.push(r);
                    }
                }
                for w in o.what {
                    if !x.what.contains(&w) {
                        x.what.push(w);
                    }
                }
            }
            None => out.push(o),
        }
    }
    for o in &mut out {
        o.ports.sort_by_key(|r| r.first);
    }
    out
}

fn interface(p: &Profile, side: Side) -> Option<&str> {
    match side {
        Side::Public => p.public.interface.as_deref(),
        Side::Internal => p.internal.interface.as_deref(),
        Side::Management => p.management.interface.as_deref(),
    }
    .filter(|i| !i.is_empty())
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Public => "public",
        Side::Internal => "internal",
        Side::Management => "management",
    }
}

fn by_family<T, F: Fn(&T) -> Family>(items: &[T], family: F) -> BTreeMap<Family, Vec<T>>
where
    T: Clone,
{
    let mut m: BTreeMap<Family, Vec<T>> = BTreeMap::new();
    for i in items {
        m.entry(family(i)).or_default().push(i.clone());
    }
    m
}

fn cidr_family(c: &Cidr) -> Family {
    Family::of(&c.0.addr())
}

/// The rules of one opening: one per address family present in both its addresses and (when
/// restricted) its sources.
fn opening_rules(p: &Profile, o: &Opening) -> Vec<Rule> {
    let mut rules = Vec::new();
    let daddrs: Vec<Cidr> = dedup(o.addresses.iter().map(|a| Cidr::from(*a)).collect());
    for (family, dst) in by_family(&daddrs, cidr_family) {
        let mut conds = Vec::new();
        if let Some(i) = interface(p, o.side) {
            conds.push(Cond::IifName(i.to_owned()));
        }
        conds.push(Cond::Daddr(family, dst));
        if let Some(from) = &o.from {
            match by_family(from, cidr_family).remove(&family) {
                Some(src) => conds.push(Cond::Saddr(family, src)),
                None => continue,
            }
        }
        conds.push(Cond::Dport(o.protocol, o.ports.clone()));
        rules.push(Rule { conds, stmts: vec![Stmt::Accept], comment: format!("{}: {}", side_name(o.side), o.what.join(", ")) });
    }
    rules
}

fn icmp_rules(policy: IcmpPolicy) -> Vec<Rule> {
    let mut rules = vec![
        Rule {
            conds: vec![Cond::IcmpType(vec!["destination-unreachable", "time-exceeded", "parameter-problem"])],
            stmts: vec![Stmt::Accept],
            comment: "icmp: errors and path mtu".into(),
        },
        Rule {
            conds: vec![Cond::Icmpv6Type(vec![
                "destination-unreachable",
                "packet-too-big",
                "time-exceeded",
                "parameter-problem",
                "nd-router-advert",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
            ])],
            stmts: vec![Stmt::Accept],
            comment: "icmpv6: errors, path mtu, neighbour discovery".into(),
        },
    ];
    if policy == IcmpPolicy::Essential {
        for (cond, what) in [(Cond::IcmpType(vec!["echo-request"]), "icmp"), (Cond::Icmpv6Type(vec!["echo-request"]), "icmpv6")] {
            rules.push(Rule { conds: vec![cond], stmts: vec![Stmt::Limit { rate: PING_RATE, burst: PING_RATE }, Stmt::Accept], comment: format!("{what}: ping, rate limited") });
        }
    }
    rules
}

fn ban_rules() -> Vec<Rule> {
    [(Family::V4, BAN_SET_V4), (Family::V6, BAN_SET_V6)]
        .into_iter()
        .map(|(f, set)| Rule { conds: vec![Cond::SaddrInSet(f, set.into())], stmts: vec![Stmt::Counter, Stmt::Drop], comment: "banned source".into() })
        .collect()
}

/// IP protocol number of VRRP.
pub const VRRP: u8 = 112;

/// VRRP adverts from the peer's own address on each side that carries a virtual address, and
/// from nowhere else: a forged advert with a higher priority would steal the addresses.
fn vrrp_rules(p: &Profile) -> Vec<Rule> {
    let Some(ha) = &p.ha else { return Vec::new() };
    [(Side::Public, ha.public.peer), (Side::Internal, ha.internal.peer)]
        .into_iter()
        .map(|(side, peer)| {
            let family = Family::of(&peer);
            let mut conds = Vec::new();
            if let Some(i) = interface(p, side) {
                conds.push(Cond::IifName(i.to_owned()));
            }
            conds.push(Cond::Saddr(family, vec![Cidr::from(peer)]));
            conds.push(Cond::IpProtocol(family, VRRP));
            Rule { conds, stmts: vec![Stmt::Accept], comment: format!("{}: vrrp from the peer", side_name(side)) }
        })
        .collect()
}

/// The ruleset for `p`, with `bans` (source, time left) preloaded into the ban sets.
pub fn ruleset(p: &Profile, bans: &[(IpAddr, Duration)]) -> Ruleset {
    let mut input = vec![Rule { conds: vec![Cond::IifName("lo".into())], stmts: vec![Stmt::Accept], comment: "loopback".into() }];
    input.extend(ban_rules());
    input.push(Rule { conds: vec![Cond::CtState(vec!["invalid"])], stmts: vec![Stmt::Drop], comment: "invalid".into() });
    input.push(Rule { conds: vec![Cond::CtState(vec!["established", "related"])], stmts: vec![Stmt::Accept], comment: "replies and related".into() });
    input.extend(icmp_rules(p.firewall.icmp));
    for o in openings(p) {
        input.extend(opening_rules(p, &o));
    }
    input.extend(vrrp_rules(p));
    if p.firewall.log_drops {
        input.push(Rule {
            conds: vec![],
            stmts: vec![Stmt::Limit { rate: LOG_RATE, burst: LOG_RATE * 2 }, Stmt::Log { prefix: format!("{} drop: ", p.firewall.table) }],
            comment: "log what the policy drops".into(),
        });
    }

    let mut forward = ban_rules();
    // The gateway relays media and signalling itself; nothing from the public side is ever
    // routed to the internal networks.
    let mut internal_nets = p.internal.networks.clone();
    if internal_nets.is_empty() {
        internal_nets.push(Cidr::from(p.internal.address));
    }
    let mut trusted = internal_nets.clone();
    trusted.extend(p.management.allow_from.iter().copied());
    for (family, dst) in by_family(&internal_nets, cidr_family) {
        if let Some(i) = interface(p, Side::Public) {
            forward.push(Rule { conds: vec![Cond::IifName(i.into()), Cond::Daddr(family, dst.clone())], stmts: vec![Stmt::Counter, Stmt::Drop], comment: "public side to internal networks".into() });
        }
        let src = by_family(&trusted, cidr_family).remove(&family).unwrap_or_default();
        let mut conds = Vec::new();
        if !src.is_empty() {
            conds.push(Cond::SaddrNot(family, src));
        }
        conds.push(Cond::Daddr(family, dst));
        forward.push(Rule { conds, stmts: vec![Stmt::Counter, Stmt::Drop], comment: "untrusted sources to internal networks".into() });
    }

    let mut sets = Vec::new();
    for (family, name) in [(Family::V4, BAN_SET_V4), (Family::V6, BAN_SET_V6)] {
        let elements = bans.iter().filter(|(ip, _)| Family::of(ip) == family).copied().collect();
        sets.push(TimeoutSet { name: name.into(), family, elements });
    }
    Ruleset {
        table: p.firewall.table.clone(),
        sets,
        chains: vec![
            Chain { name: INPUT_CHAIN.into(), hook: Hook::Input, policy: Policy::Drop, rules: input },
            Chain { name: FORWARD_CHAIN.into(), hook: Hook::Forward, policy: Policy::Accept, rules: forward },
        ],
    }
}
