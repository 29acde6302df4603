//! The generator on the example profiles: key rules present, nothing more open than needed.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::profile::{self, Profile};

fn example(name: &str) -> Profile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles").join(name);
    profile::load_str(&path, &std::fs::read_to_string(&path).unwrap(), std::iter::empty()).unwrap_or_else(|d| panic!("{d}")).profile
}

fn input_lines(p: &Profile) -> Vec<String> {
    let script = ruleset(p, &[]).to_script();
    let start = script.find("chain input").unwrap();
    let end = script[start..].find("\t}").unwrap() + start;
    script[start..end].lines().map(|l| l.trim().to_owned()).collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn dmz_profile_opens_exactly_the_public_internal_and_management_services() {
    let p = example("dmz-genesys.toml");
    let l = input_lines(&p);
    assert!(has(&l, "policy drop;"));
    assert_eq!(l.iter().position(|x| x.contains("iifname \"lo\" accept")), Some(2), "loopback first: {l:#?}");
    assert!(has(&l, "ip saddr @banned4 counter drop"));
    assert!(has(&l, "ip6 saddr @banned6 counter drop"));
    let bans = l.iter().position(|x| x.contains("@banned4")).unwrap();
    let established = l.iter().position(|x| x.contains("ct state established,related accept")).unwrap();
    assert!(bans < established, "a ban must cut established connections too");
    assert!(has(&l, "iifname \"ens192\" ip daddr 203.0.113.10 tcp dport { 80, 443, 3478, 5349 } accept"), "{l:#?}");
    assert!(has(&l, "iifname \"ens192\" ip daddr 203.0.113.10 udp dport { 3478, 10000-20000, 49152-65535 } accept"), "{l:#?}");
    assert!(has(&l, "iifname \"ens224\" ip daddr 192.168.210.54 ip saddr 192.168.210.81 udp dport { 5060, 20002-30000 } accept"), "{l:#?}");
    assert!(has(&l, "iifname \"ens256\" ip daddr 10.20.0.54 ip saddr 10.20.0.0/24 tcp dport { 22, 9090 } accept"), "{l:#?}");
    // SIP, admin and SSH never on the public side.
    for line in l.iter().filter(|x| x.contains("ens192")) {
        for port in ["5060", "9090", " 22"] {
            assert!(!line.contains(port), "public side opens {port}: {line}");
        }
    }
}

#[test]
fn behind_nat_matches_the_bound_address_and_both_upstream_servers_over_tcp() {
    let p = example("behind-nat.toml");
    let l = input_lines(&p);
    assert!(has(&l, "iifname \"eth0\" ip daddr 10.0.0.5 tcp dport { 80, 443, 3478, 5349 } accept"), "{l:#?}");
    assert!(!has(&l, "198.51.100.7"), "the NAT's public address never reaches the box");
    assert!(has(&l, "iifname \"eth1\" ip daddr 172.16.5.10 ip saddr { 172.16.5.20, 172.16.5.21 } tcp dport 5060 accept"), "{l:#?}");
    assert!(has(&l, "ip saddr { 172.16.5.20, 172.16.5.21 } udp dport { 5060, 30000-39999 } accept"), "{l:#?}");
    assert!(has(&l, "ip saddr 172.16.5.0/24 tcp dport 9090 accept"), "{l:#?}");
    assert!(!has(&l, "dport 22 "), "no ssh unless management.ssh");
}

#[test]
fn lab_profile_opens_loopback_services_without_interfaces() {
    let p = example("lab.toml");
    let l = input_lines(&p);
    assert!(!has(&l, "iifname \"eth"));
    assert!(has(&l, "ip daddr 127.0.0.1 tcp dport { 3478, 5349, 8080, 8443 } accept"), "{l:#?}");
    assert!(has(&l, "ip daddr 127.0.0.1 ip saddr 127.0.0.1 udp dport { 5060, 41000-42999 } accept"), "{l:#?}");
}

#[test]
fn forward_never_routes_public_to_internal() {
    let p = example("dmz-genesys.toml");
    let rs = ruleset(&p, &[]);
    let fwd = rs.chain(FORWARD_CHAIN).unwrap();
    assert!(fwd.rules.iter().any(|r| r.conds == vec![Cond::IifName("ens192".into()), Cond::Daddr(Family::V4, vec!["192.168.210.0/24".parse().unwrap()])] && r.stmts.contains(&Stmt::Drop)));
}

#[test]
fn services_follow_the_profile() {
    let mut p = example("dmz-genesys.toml");
    p.turn = None;
    p.media.single_port = Some(3479);
    p.management.ssh = false;
    p.observe.metrics = Some("10.20.0.54:9100".parse().unwrap());
    p.firewall.icmp = crate::profile::IcmpPolicy::Minimal;
    p.firewall.log_drops = true;
    p.firewall.allow.push(crate::profile::FirewallAllow { side: crate::profile::Side::Internal, protocol: crate::profile::Protocol::Udp, ports: "20002-30000".parse().unwrap(), from: vec!["192.168.210.0/24".parse().unwrap()] });
    let l = input_lines(&p);
    assert!(has(&l, "ip daddr 203.0.113.10 tcp dport { 80, 443 } accept"), "{l:#?}");
    assert!(has(&l, "ip daddr 203.0.113.10 udp dport 3479 accept"), "single media port only: {l:#?}");
    assert!(!has(&l, "10000-20000") && !has(&l, "49152"), "{l:#?}");
    assert!(has(&l, "tcp dport { 9090, 9100 } accept"), "{l:#?}");
    assert!(!has(&l, "echo-request"), "minimal icmp has no ping");
    assert!(has(&l, "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept"));
    assert!(has(&l, "ip saddr 192.168.210.0/24 udp dport 20002-30000 accept comment \"internal: allow[0]\""), "{l:#?}");
    assert!(l.iter().rev().find(|x| !x.is_empty()).unwrap().contains("log prefix \"gatewayd drop: \""), "{l:#?}");
}

#[test]
fn ipv6_addresses_get_ip6_rules_and_sources_of_the_other_family_are_skipped() {
    let mut p = example("dmz-genesys.toml");
    p.public.addresses.push("2001:db8::10".parse().unwrap());
    p.web.https.push("[2001:db8::10]:443".parse().unwrap());
    let l = input_lines(&p);
    assert!(has(&l, "ip6 daddr 2001:db8::10 tcp dport 443 accept"), "{l:#?}");
    assert!(has(&l, "ip6 daddr 2001:db8::10 udp dport { 3478, 10000-20000, 49152-65535 } accept") || has(&l, "ip6 daddr 2001:db8::10 udp dport"), "{l:#?}");
    // Management allows only IPv4 sources: no IPv6 management rule at all.
    assert!(!l.iter().any(|x| x.contains("ip6") && x.contains("9090")));
}

#[test]
fn wildcard_listeners_open_the_sides_addresses() {
    let mut p = example("dmz-genesys.toml");
    p.web.https = vec!["0.0.0.0:443".parse().unwrap()];
    let l = input_lines(&p);
    assert!(has(&l, "ip daddr 203.0.113.10 tcp dport { 80, 443, 3478, 5349 } accept"), "{l:#?}");
}

#[test]
fn bans_are_preloaded_into_the_sets_by_family() {
    let p = example("dmz-genesys.toml");
    let rs = ruleset(&p, &[("198.51.100.9".parse().unwrap(), Duration::from_secs(90)), ("2001:db8::9".parse().unwrap(), Duration::from_secs(30))]);
    let script = rs.to_script();
    assert!(script.contains("elements = { 198.51.100.9 timeout 90s }"), "{script}");
    assert!(script.contains("elements = { 2001:db8::9 timeout 30s }"), "{script}");
    let json = serde_json::to_value(rs.to_json()).unwrap();
    let text = json.to_string();
    assert!(text.contains(r#"{"elem":{"val":"198.51.100.9","timeout":90"#) || text.contains(r#""timeout":90"#), "{text}");
}

#[test]
fn the_transaction_replaces_only_gatewayds_table() {
    let mut p = example("dmz-genesys.toml");
    p.firewall.table = "gw_edge".into();
    let json = serde_json::to_value(ruleset(&p, &[]).to_json()).unwrap();
    let cmds = json["nftables"].as_array().unwrap();
    assert_eq!(cmds[0], serde_json::json!({"add": {"table": {"family": "inet", "name": "gw_edge"}}}));
    assert_eq!(cmds[1], serde_json::json!({"delete": {"table": {"family": "inet", "name": "gw_edge"}}}));
    for c in cmds {
        let obj = c.as_object().unwrap().values().next().unwrap().as_object().unwrap();
        let inner = obj.values().next().unwrap();
        let table = inner.get("table").or_else(|| inner.get("name").filter(|_| obj.contains_key("table"))).unwrap();
        assert_eq!(table, "gw_edge", "{c}");
        assert_eq!(inner["family"], "inet", "{c}");
    }
}

#[tokio::test]
async fn without_nft_or_management_the_firewall_only_logs() {
    let p = example("dmz-genesys.toml");
    let missing = Firewall::with_nft(Nft::with_command(vec!["/nonexistent/nft".into()]), false);
    let status = missing.apply(&p, &[]).await.expect("runs on");
    assert!(matches!(&status, Status::LogOnly { reason } if reason.contains("/nonexistent/nft")), "{status:?}");
    missing.ban("198.51.100.1".parse().unwrap(), Duration::from_secs(5)).await.expect("only logged");
    missing.unban("198.51.100.1".parse().unwrap()).await.expect("only logged");

    let mut off = p.clone();
    off.firewall.manage = false;
    assert_eq!(missing.apply(&off, &[]).await.unwrap(), Status::Disabled);
    assert_eq!(missing.status(), Status::Disabled);
}

#[test]
fn timeouts_round_up_so_a_ban_never_ends_early() {
    let p = example("dmz-genesys.toml");
    let rs = ruleset(&p, &[("198.51.100.9".parse().unwrap(), Duration::from_millis(1999)), ("198.51.100.10".parse().unwrap(), Duration::ZERO)]);
    let script = rs.to_script();
    assert!(script.contains("198.51.100.9 timeout 2s"), "{script}");
    assert!(script.contains("198.51.100.10 timeout 1s"), "{script}");
}

#[test]
fn a_pair_admits_vrrp_from_the_peer_only_on_the_sides_that_carry_it() {
    let p = example("ha-pair-a.toml");
    let l = input_lines(&p);
    assert!(has(&l, "iifname \"ens192\" ip saddr 203.0.113.12 ip protocol 112 accept"), "{l:#?}");
    assert!(has(&l, "iifname \"ens224\" ip saddr 192.168.210.12 ip protocol 112 accept"), "{l:#?}");
    assert_eq!(l.iter().filter(|x| x.contains("protocol 112")).count(), 2, "VRRP nowhere else: {l:#?}");
    assert!(has(&l, "iifname \"ens256\" ip daddr 10.20.0.11 ip saddr 10.20.0.12 udp dport 7960 accept"), "ban sync from the peer only: {l:#?}");
    let single = input_lines(&example("dmz-genesys.toml"));
    assert!(!single.iter().any(|x| x.contains("protocol 112") || x.contains("7960")), "no [ha], no VRRP: {single:#?}");
}

#[test]
fn the_peer_is_never_banned() {
    let p = example("ha-pair-a.toml");
    let bans = crate::guard::ban_config(&p);
    for peer in ["10.20.0.12", "203.0.113.12", "192.168.210.12"] {
        let ip: std::net::IpAddr = peer.parse().unwrap();
        assert!(bans.allowlist.iter().any(|c| c.contains(&ip)), "{peer} not allowlisted");
    }
}
