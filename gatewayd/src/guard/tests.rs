//! The ban engine and limiter with injected time.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::profile::{BanRule, Bans, Duration as PDuration, FailureKind, RateLimits};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config() -> Bans {
    Bans {
        enabled: true,
        allowlist: vec!["10.20.0.0/24".parse().unwrap()],
        rules: vec![BanRule { name: "auth".into(), events: vec![FailureKind::DigestFailure, FailureKind::TurnAuth], max_retry: 3, find_time: PDuration::secs(60), ban_time: PDuration::secs(100) }],
        escalation_factor: 2,
        max_ban_time: PDuration::secs(350),
        rate_limits: RateLimits { new_connections_per_second: 2, sip_requests_per_second: 5, burst: 1, offices: Vec::new() },
    }
}

fn fail(g: &mut Guard, who: &str, kind: FailureKind, at: u64) -> Vec<GuardAction> {
    g.report(Failure { ip: ip(who), kind }, t(at))
}

fn banned_for(actions: &[GuardAction]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        GuardAction::Ban(b) => Some(b.until.duration_since(b.since).unwrap().as_secs()),
        _ => None,
    })
}

#[test]
fn max_retry_failures_within_find_time_ban_and_ask_to_close_connections() {
    let mut g = Guard::new(&config());
    assert!(fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 0).is_empty());
    assert!(fail(&mut g, "198.51.100.1", FailureKind::TurnAuth, 10).is_empty());
    let a = fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 20);
    assert_eq!(banned_for(&a), Some(100));
    assert!(a.contains(&GuardAction::CloseConnections(ip("198.51.100.1"))));
    assert!(g.is_banned(ip("198.51.100.1"), t(119)));
    assert!(!g.is_banned(ip("198.51.100.2"), t(21)));
    assert_eq!(g.counters().bans_by_rule, 1);
    assert_eq!(g.counters().failures["digest-failure"], 2);
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let mut g = Guard::new(&config());
    fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 0);
    fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 30);
    // The first failure left the 60 s window at 60.
    assert!(fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 60).is_empty());
    assert_eq!(banned_for(&fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 61)), Some(100));
}

#[test]
fn kinds_outside_the_rule_and_other_sources_do_not_count() {
    let mut g = Guard::new(&config());
    for i in 0..10 {
        assert!(fail(&mut g, "198.51.100.1", FailureKind::MalformedSip, i).is_empty());
    }
    fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 10);
    fail(&mut g, "198.51.100.2", FailureKind::DigestFailure, 10);
    assert!(fail(&mut g, "198.51.100.3", FailureKind::DigestFailure, 10).is_empty());
    assert!(!g.is_banned(ip("198.51.100.1"), t(11)));
}

#[test]
fn repeat_offenders_are_banned_longer_up_to_the_cap() {
    let mut g = Guard::new(&config());
    let mut at = 0;
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let mut a = Vec::new();
        for _ in 0..3 {
            a = fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, at);
            at += 1;
        }
        let len = banned_for(&a).expect("banned");
        lengths.push(len);
        at += len;
        let over = g.tick(t(at));
        assert_eq!(over, vec![GuardAction::Unban(ip("198.51.100.1"))]);
    }
    assert_eq!(lengths, vec![100, 200, 350, 350]);
    assert_eq!(g.counters().bans_expired, 4);
}

#[test]
fn offences_are_forgotten_after_max_ban_time() {
    let mut g = Guard::new(&config());
    for s in 0..3 {
        fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, s);
    }
    g.tick(t(102));
    // Ban ended at 102; 350 s later the history is gone.
    g.tick(t(102 + 351));
    let mut a = Vec::new();
    for s in 500..503 {
        a = fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, s);
    }
    assert_eq!(banned_for(&a), Some(100));
}

#[test]
fn allowlisted_loopback_and_mapped_loopback_sources_are_never_banned() {
    let mut g = Guard::new(&config());
    for who in ["10.20.0.7", "127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        for s in 0..10 {
            assert!(fail(&mut g, who, FailureKind::DigestFailure, s).is_empty(), "{who}");
        }
        assert!(g.ban(ip(who), None, t(0)).is_empty(), "{who}");
    }
    assert!(g.bans(t(0)).is_empty());
}

#[test]
fn ipv4_mapped_sources_count_as_their_ipv4_address() {
    let mut g = Guard::new(&config());
    fail(&mut g, "::ffff:198.51.100.1", FailureKind::DigestFailure, 0);
    fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 1);
    let a = fail(&mut g, "::ffff:198.51.100.1", FailureKind::DigestFailure, 2);
    match &a[0] {
        GuardAction::Ban(b) => assert_eq!(b.ip, ip("198.51.100.1")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bans_expire_and_can_be_lifted_early() {
    let mut g = Guard::new(&config());
    g.ban(ip("203.0.113.5"), Some(Duration::from_secs(30)), t(0));
    g.ban(ip("2001:db8::5"), None, t(0));
    assert_eq!(g.bans(t(1)).len(), 2);
    assert_eq!(g.tick(t(29)), vec![]);
    assert_eq!(g.tick(t(30)), vec![GuardAction::Unban(ip("203.0.113.5"))]);
    assert_eq!(g.unban(ip("2001:db8::5")), Some(GuardAction::Unban(ip("2001:db8::5"))));
    assert_eq!(g.unban(ip("2001:db8::5")), None);
    assert!(g.bans(t(31)).is_empty());
    assert_eq!((g.counters().bans_manual, g.counters().bans_lifted, g.counters().bans_expired), (2, 1, 1));
}

#[test]
fn a_banned_source_is_not_counted_again_and_disabled_bans_do_nothing() {
    let mut g = Guard::new(&config());
    for s in 0..3 {
        fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, s);
    }
    assert!(fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, 5).is_empty());
    let mut off = config();
    off.enabled = false;
    let mut g = Guard::new(&off);
    for s in 0..10 {
        assert!(fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, s).is_empty());
    }
}

#[test]
fn snapshot_and_restore_keep_bans_and_offences_across_a_restart() {
    let mut g = Guard::new(&config());
    for s in 0..3 {
        fail(&mut g, "198.51.100.1", FailureKind::DigestFailure, s);
    }
    g.ban(ip("198.51.100.2"), Some(Duration::from_secs(5)), t(0));
    let saved = g.snapshot(t(3));
    let json = serde_json::to_string(&saved).unwrap();
    let mut fresh = Guard::new(&config());
    fresh.restore(serde_json::from_str(&json).unwrap(), t(10));
    assert!(fresh.is_banned(ip("198.51.100.1"), t(10)));
    assert!(!fresh.is_banned(ip("198.51.100.2"), t(10)), "already over at restore");
    // The restored offence escalates the next ban.
    fresh.unban(ip("198.51.100.1"));
    fresh.restore(StoredState { bans: vec![], offences: saved.offences.clone() }, t(200));
    let mut a = Vec::new();
    for s in 200..203 {
        a = fail(&mut fresh, "198.51.100.1", FailureKind::DigestFailure, s);
    }
    assert_eq!(banned_for(&a), Some(200));
}

#[test]
fn reconfigure_keeps_active_bans() {
    let mut g = Guard::new(&config());
    g.ban(ip("198.51.100.1"), None, t(0));
    let mut c = config();
    c.rules[0].max_retry = 1;
    g.reconfigure(&c);
    assert!(g.is_banned(ip("198.51.100.1"), t(1)));
    assert_eq!(banned_for(&fail(&mut g, "198.51.100.2", FailureKind::TurnAuth, 1)), Some(100));
}

#[test]
fn token_buckets_allow_rate_plus_burst_then_refill() {
    let mut l = RateLimiter::new(&Bans { rate_limits: RateLimits { new_connections_per_second: 2, sip_requests_per_second: 5, burst: 1, offices: Vec::new() }, ..Bans::default() });
    let a = ip("198.51.100.1");
    let now = t(0);
    for _ in 0..3 {
        assert_eq!(l.check(a, Limit::NewConnection, now), Verdict::Allow);
    }
    assert!(matches!(l.check(a, Limit::NewConnection, now), Verdict::Deny { first: true, .. }));
    assert!(matches!(l.check(a, Limit::NewConnection, now), Verdict::Deny { first: false, .. }));
    // Other sources and other limits have their own buckets.
    assert_eq!(l.check(ip("198.51.100.2"), Limit::NewConnection, now), Verdict::Allow);
    assert_eq!(l.check(a, Limit::SipRequest, now), Verdict::Allow);
    // Half a second refills one token at 2/s.
    assert_eq!(l.check(a, Limit::NewConnection, now + Duration::from_millis(500)), Verdict::Allow);
    assert!(matches!(l.check(a, Limit::NewConnection, now + Duration::from_millis(500)), Verdict::Deny { first: false, .. }));
    assert_eq!(l.check(a, Limit::NewConnection, now + Duration::from_millis(1000)), Verdict::Allow);
    assert!(matches!(l.check(a, Limit::NewConnection, now + Duration::from_millis(1000)), Verdict::Deny { first: true, .. }));
    l.prune(now + Duration::from_secs(10));
    assert!(l.is_empty(), "refilled buckets are dropped");
}

#[test]
fn sustained_excess_is_reported_once_per_second_and_eventually_bans() {
    let mut c = config();
    c.rules.push(BanRule { name: "abuse".into(), events: vec![FailureKind::RateLimited], max_retry: 3, find_time: PDuration::secs(60), ban_time: PDuration::secs(60) });
    let mut g = Guard::new(&c);
    let a = ip("198.51.100.1");
    let mut banned_at = None;
    'outer: for sec in 0..10u64 {
        for i in 0..20u64 {
            let (_, actions) = g.admit(a, Limit::SipRequest, t(sec) + Duration::from_millis(i * 10));
            if banned_for(&actions).is_some() {
                banned_at = Some(sec);
                break 'outer;
            }
        }
    }
    assert_eq!(banned_at, Some(2), "third second of excess bans");
    assert_eq!(g.counters().failures["rate-limited"], 3);
    assert!(g.admit(ip("10.20.0.1"), Limit::SipRequest, t(0)).0, "allowlisted sources are not limited");
}

#[test]
fn tracked_sources_stay_bounded_under_a_spoofed_flood() {
    let mut c = config();
    c.rules[0].max_retry = 1000;
    let mut g = Guard::new(&c);
    for i in 0..(MAX_TRACKED_SOURCES as u32 + 10) {
        let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + 0x0100_0000 + i));
        g.report(Failure { ip: src, kind: FailureKind::DigestFailure }, t(u64::from(i) / 1000));
    }
    assert!(g.engine().tracked_sources() <= MAX_TRACKED_SOURCES);
}

#[test]
fn escalation_saturates() {
    assert_eq!(escalate(Duration::from_secs(10), 3, 1, Duration::from_secs(1000)), Duration::from_secs(10));
    assert_eq!(escalate(Duration::from_secs(10), 3, 3, Duration::from_secs(1000)), Duration::from_secs(90));
    assert_eq!(escalate(Duration::from_secs(10), 3, 40, Duration::from_secs(1000)), Duration::from_secs(1000));
    assert_eq!(escalate(Duration::from_secs(10), 1, 40, Duration::from_secs(1000)), Duration::from_secs(10));
}

#[test]
fn the_store_round_trips_and_sets_a_damaged_file_aside() {
    let dir = std::env::temp_dir().join(format!("gatewayd-bans-{}", std::process::id()));
    let store = BanStore::in_dir(&dir);
    assert_eq!(store.load().unwrap(), StoredState::default());
    let mut g = Guard::new(&config());
    g.ban(ip("198.51.100.1"), None, t(0));
    let state = g.snapshot(t(0));
    store.save(&state).unwrap();
    assert_eq!(store.load().unwrap(), state);
    std::fs::write(store.path(), b"{ not json").unwrap();
    let err = store.load().unwrap_err();
    assert!(err.contains("damaged"), "{err}");
    assert!(dir.join("bans.json.damaged").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn upstream_servers_and_the_gateways_own_addresses_are_never_banned() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles/dmz-genesys.toml");
    let p = crate::profile::load_str(&path, &std::fs::read_to_string(&path).unwrap(), std::iter::empty()).unwrap().profile;
    let mut g = Guard::new(&ban_config(&p));
    for who in ["192.168.210.81", "203.0.113.10", "192.168.210.54", "10.20.0.54", "10.20.0.9"] {
        for s in 0..50 {
            assert!(fail(&mut g, who, FailureKind::MalformedSip, s).is_empty(), "{who}");
            assert!(fail(&mut g, who, FailureKind::DigestFailure, s).is_empty(), "{who}");
        }
    }
    assert_eq!(banned_for(&{
        let mut a = Vec::new();
        for s in 0..5 {
            a = fail(&mut g, "192.168.210.99", FailureKind::DigestFailure, s);
        }
        a
    }), Some(3600), "other internal hosts are not exempt");
}

#[test]
fn an_office_range_gets_its_own_limits_and_the_allowlist_none() {
    use crate::profile::{Cidr, Office};
    let office = Office {
        name: "hq".into(),
        networks: vec!["203.0.113.0/24".parse::<Cidr>().unwrap()],
        new_connections_per_second: 10,
        sip_requests_per_second: 30,
        burst: 600,
        max_connections_per_source: 330,
    };
    let bans = Bans {
        allowlist: vec!["192.0.2.9/32".parse().unwrap()],
        rate_limits: RateLimits { new_connections_per_second: 2, sip_requests_per_second: 5, burst: 1, offices: vec![office] },
        ..Bans::default()
    };
    let mut l = RateLimiter::new(&bans);
    let now = t(0);
    // 300 agents behind one NAT address log in at once: a connection and two REGISTERs each.
    let nat = ip("203.0.113.5");
    for _ in 0..300 {
        assert_eq!(l.check(nat, Limit::NewConnection, now), Verdict::Allow);
        assert_eq!(l.check(nat, Limit::SipRequest, now), Verdict::Allow);
        assert_eq!(l.check(nat, Limit::SipRequest, now), Verdict::Allow);
    }
    // Outside the office the profile's limits hold; the allowlist is never limited.
    let other = ip("198.51.100.7");
    for _ in 0..6 {
        assert_eq!(l.check(other, Limit::SipRequest, now), Verdict::Allow);
    }
    let Verdict::Deny { retry_after, .. } = l.check(other, Limit::SipRequest, now) else { panic!("not limited") };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200), "one token at 5/s: {retry_after:?}");
    for _ in 0..1000 {
        assert_eq!(l.check(ip("192.0.2.9"), Limit::SipRequest, now), Verdict::Allow);
    }
}
