//! A small model of the one table gatewayd owns, and its two renderings: the nftables JSON
//! commands (applied with `nft -j -f -` in one transaction) and the equivalent nft script
//! (`gatewayd firewall show`, accepted by `nft -c -f`). Both start by creating and deleting the
//! table, so either form replaces the whole table atomically and touches nothing else.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use nftables::expr::{self, Expression, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::profile::{Cidr, PortRange, Protocol};

/// Address family of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The nft payload protocol for addresses of this family.
    fn proto(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// One condition of a rule; all of a rule's conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// Arrived on this interface.
    IifName(String),
    /// Destination address in these networks.
    Daddr(Family, Vec<Cidr>),
    /// Source address in these networks.
    Saddr(Family, Vec<Cidr>),
    /// Source address not in these networks.
    SaddrNot(Family, Vec<Cidr>),
    /// Source address in a named set of the table.
    SaddrInSet(Family, String),
    /// Destination port of this protocol in these ranges.
    Dport(Protocol, Vec<PortRange>),
    /// Connection tracking state is one of these.
    CtState(Vec<&'static str>),
    /// The IP protocol (IPv4) or next header (IPv6) is this number, e.g. 112 for VRRP.
    IpProtocol(Family, u8),
    IcmpType(Vec<&'static str>),
    Icmpv6Type(Vec<&'static str>),
}

/// A statement of a rule, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Counter,
    /// Passes while under `rate` per second (with `burst` packets of slack).
    Limit { rate: u32, burst: u32 },
    Log { prefix: String },
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub stmts: Vec<Stmt>,
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Hook,
    pub policy: Policy,
    pub rules: Vec<Rule>,
}

/// A named set of source addresses whose elements time out (the ban sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutSet {
    pub name: String,
    pub family: Family,
    pub elements: Vec<(IpAddr, Duration)>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: String,
    pub sets: Vec<TimeoutSet>,
    pub chains: Vec<Chain>,
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The transaction that replaces the table: add (so the delete cannot fail), delete, create.
    pub fn to_json(&self) -> Nftables<'static> {
        let mut cmds: Vec<NfObject<'static>> = Vec::new();
        let table = || NfListObject::Table(schema::Table { family: NfFamily::INet, name: self.table.clone().into(), handle: None });
        cmds.push(NfObject::CmdObject(NfCmd::Add(table())));
        cmds.push(NfObject::CmdObject(NfCmd::Delete(table())));
        cmds.push(NfObject::CmdObject(NfCmd::Add(table())));
        for set in &self.sets {
            cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Set(Box::new(set_json(&self.table, set))))));
            if !set.elements.is_empty() {
                let elem = set.elements.iter().map(|(ip, d)| timed_element(*ip, *d)).collect::<Vec<_>>();
                cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Element(schema::Element {
                    family: NfFamily::INet,
                    table: self.table.clone().into(),
                    name: set.name.clone().into(),
                    elem: elem.into(),
                }))));
            }
        }
        for chain in &self.chains {
            cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(schema::Chain {
                family: NfFamily::INet,
                table: self.table.clone().into(),
                name: chain.name.clone().into(),
                _type: Some(NfChainType::Filter),
                hook: Some(match chain.hook {
                    Hook::Input => NfHook::Input,
                    Hook::Forward => NfHook::Forward,
                }),
                prio: Some(0),
                policy: Some(match chain.policy {
                    Policy::Accept => NfChainPolicy::Accept,
                    Policy::Drop => NfChainPolicy::Drop,
                }),
                ..Default::default()
            }))));
            for rule in &chain.rules {
                let mut expr: Vec<Statement<'static>> = rule.conds.iter().map(cond_json).collect();
                expr.extend(rule.stmts.iter().map(stmt_json));
                cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(schema::Rule {
                    family: NfFamily::INet,
                    table: self.table.clone().into(),
                    chain: chain.name.clone().into(),
                    expr: expr.into(),
                    handle: None,
                    index: None,
                    comment: (!rule.comment.is_empty()).then(|| rule.comment.clone().into()),
                }))));
            }
        }
        Nftables { objects: cmds.into() }
    }

    /// The same transaction as an nft script.
    pub fn to_script(&self) -> String {
        let t = &self.table;
        let mut s = String::new();
        let _ = writeln!(s, "# gatewayd owns table inet {t}; this script replaces it and touches nothing else.");
        let _ = writeln!(s, "table inet {t}\ndelete table inet {t}\n\ntable inet {t} {{");
        for set in &self.sets {
            let ty = match set.family {
                Family::V4 => "ipv4_addr",
                Family::V6 => "ipv6_addr",
            };
            let _ = write!(s, "\tset {} {{\n\t\ttype {ty}\n\t\tflags timeout\n", set.name);
            if !set.elements.is_empty() {
                let elems: Vec<String> = set.elements.iter().map(|(ip, d)| format!("{ip} timeout {}s", timeout_secs(*d))).collect();
                let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
            }
            s.push_str("\t}\n\n");
        }
        for chain in &self.chains {
            let hook = match chain.hook {
                Hook::Input => "input",
                Hook::Forward => "forward",
            };
            let policy = match chain.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            };
            let _ = writeln!(s, "\tchain {} {{\n\t\ttype filter hook {hook} priority filter; policy {policy};", chain.name);
            for rule in &chain.rules {
                let mut parts: Vec<String> = rule.conds.iter().map(cond_script).collect();
                parts.extend(rule.stmts.iter().map(stmt_script));
                if !rule.comment.is_empty() {
                    parts.push(format!("comment {}", quote(&rule.comment)));
                }
                let _ = writeln!(s, "\t\t{}", parts.join(" "));
            }
            s.push_str("\t}\n");
            if chain.name != self.chains.last().map_or("", |c| c.name.as_str()) {
                s.push('\n');
            }
        }
        s.push_str("}\n");
        s
    }
}

fn set_json(table: &str, set: &TimeoutSet) -> schema::Set<'static> {
    schema::Set {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        name: set.name.clone().into(),
        handle: None,
        set_type: SetTypeValue::Single(match set.family {
            Family::V4 => SetType::Ipv4Addr,
            Family::V6 => SetType::Ipv6Addr,
        }),
        policy: None,
        flags: Some(HashSet::from([SetFlag::Timeout])),
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

/// Whole seconds for nft, rounded up (a ban never ends early) and at least one.
pub fn timeout_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// A set element that times out after `d`.
pub fn timed_element(ip: IpAddr, d: Duration) -> Expression<'static> {
    let secs = timeout_secs(d);
    Expression::Named(NamedExpression::Elem(expr::Elem { val: Box::new(Expression::String(ip.to_string().into())), timeout: Some(secs), ..Default::default() }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField { protocol: protocol.into(), field: field.into() })))
}

fn cidr_json(c: &Cidr) -> Expression<'static> {
    let net = c.0;
    if net.prefix_len() == net.max_prefix_len() {
        Expression::String(net.addr().to_string().into())
    } else {
        Expression::Named(NamedExpression::Prefix(expr::Prefix { addr: Box::new(Expression::String(net.network().to_string().into())), len: u32::from(net.prefix_len()) }))
    }
}

fn port_json(r: &PortRange) -> Expression<'static> {
    if r.first == r.last {
        Expression::Number(u32::from(r.first))
    } else {
        Expression::Range(Box::new(expr::Range { range: [Expression::Number(u32::from(r.first)), Expression::Number(u32::from(r.last))] }))
    }
}

/// One value stays a value; several become an anonymous set.
fn one_or_set(mut items: Vec<Expression<'static>>) -> Expression<'static> {
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        Expression::Named(NamedExpression::Set(items.into_iter().map(SetItem::Element).collect()))
    }
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match { left, right, op })
}

fn cond_json(c: &Cond) -> Statement<'static> {
    match c {
        Cond::IifName(name) => matches(Expression::Named(NamedExpression::Meta(expr::Meta { key: expr::MetaKey::Iifname })), Operator::EQ, Expression::String(name.clone().into())),
        Cond::Daddr(f, nets) => matches(payload(f.proto(), "daddr"), Operator::EQ, one_or_set(nets.iter().map(cidr_json).collect())),
        Cond::Saddr(f, nets) => matches(payload(f.proto(), "saddr"), Operator::EQ, one_or_set(nets.iter().map(cidr_json).collect())),
        Cond::SaddrNot(f, nets) => matches(payload(f.proto(), "saddr"), Operator::NEQ, one_or_set(nets.iter().map(cidr_json).collect())),
        Cond::SaddrInSet(f, set) => matches(payload(f.proto(), "saddr"), Operator::EQ, Expression::String(format!("@{set}").into())),
        Cond::Dport(p, ranges) => matches(payload(proto_name(*p), "dport"), Operator::EQ, one_or_set(ranges.iter().map(port_json).collect())),
        Cond::CtState(states) => {
            let right = if states.len() == 1 {
                Expression::String(states[0].into())
            } else {
                Expression::List(states.iter().map(|s| Expression::String(Cow::Borrowed(*s))).collect())
            };
            matches(Expression::Named(NamedExpression::CT(expr::CT { key: "state".into(), family: None, dir: None })), Operator::IN, right)
        }
        Cond::IpProtocol(f, n) => matches(payload(f.proto(), if *f == Family::V4 { "protocol" } else { "nexthdr" }), Operator::EQ, Expression::Number(u32::from(*n))),
        Cond::IcmpType(types) => matches(payload("icmp", "type"), Operator::EQ, one_or_set(types.iter().map(|t| Expression::String(Cow::Borrowed(*t))).collect())),
        Cond::Icmpv6Type(types) => matches(payload("icmpv6", "type"), Operator::EQ, one_or_set(types.iter().map(|t| Expression::String(Cow::Borrowed(*t))).collect())),
    }
}

fn stmt_json(s: &Stmt) -> Statement<'static> {
    match s {
        Stmt::Counter => Statement::Counter(stmt::Counter::Anonymous(None)),
        Stmt::Limit { rate, burst } => Statement::Limit(stmt::Limit { rate: *rate, rate_unit: None, per: Some("second".into()), burst: Some(*burst), burst_unit: None, inv: None }),
        Stmt::Log { prefix } => Statement::Log(Some(stmt::Log { prefix: Some(prefix.clone().into()), ..stmt::Log::new(None) })),
        Stmt::Accept => Statement::Accept(None),
        Stmt::Drop => Statement::Drop(None),
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

fn set_script(items: Vec<String>) -> String {
    if items.len() == 1 {
        items.into_iter().next().expect("one item")
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn cond_script(c: &Cond) -> String {
    let nets = |nets: &[Cidr]| set_script(nets.iter().map(cidr_script).collect());
    match c {
        Cond::IifName(name) => format!("iifname {}", quote(name)),
        Cond::Daddr(f, n) => format!("{} daddr {}", f.proto(), nets(n)),
        Cond::Saddr(f, n) => format!("{} saddr {}", f.proto(), nets(n)),
        Cond::SaddrNot(f, n) => format!("{} saddr != {}", f.proto(), nets(n)),
        Cond::SaddrInSet(f, set) => format!("{} saddr @{set}", f.proto()),
        Cond::Dport(p, ranges) => format!("{} dport {}", proto_name(*p), set_script(ranges.iter().map(|r| r.to_string()).collect())),
        Cond::CtState(states) => format!("ct state {}", states.join(",")),
        Cond::IpProtocol(f, n) => format!("{} {} {n}", f.proto(), if *f == Family::V4 { "protocol" } else { "nexthdr" }),
        Cond::IcmpType(t) => format!("icmp type {}", set_script(t.iter().map(|s| s.to_string()).collect())),
        Cond::Icmpv6Type(t) => format!("icmpv6 type {}", set_script(t.iter().map(|s| s.to_string()).collect())),
    }
}

fn cidr_script(c: &Cidr) -> String {
    if c.0.prefix_len() == c.0.max_prefix_len() {
        c.0.addr().to_string()
    } else {
        c.0.to_string()
    }
}

fn stmt_script(s: &Stmt) -> String {
    match s {
        Stmt::Counter => "counter".into(),
        Stmt::Limit { rate, burst } => format!("limit rate {rate}/second burst {burst} packets"),
        Stmt::Log { prefix } => format!("log prefix {}", quote(prefix)),
        Stmt::Accept => "accept".into(),
        Stmt::Drop => "drop".into(),
    }
}
