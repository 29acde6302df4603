//! The guard's input: failure reports, rate checks, operator bans and lifts, and wall-clock time,
//! which may also step back.
//!
//! Input: the first byte picks the configuration (the lab profile's `[bans]`, or a strict one
//! with an allowlist, one-failure rules and steep escalation), then operations of a few bytes
//! each. Invariants: loopback and the allowlist are never banned, a ban never lasts longer
//! than `max_ban_time`, a banned source is not banned again while its ban runs, tracked state
//! stays bounded, and what is persisted restores to the same bans.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use super::{lab, Input};
use crate::guard::{exempt, Failure, Guard, GuardAction, Limit, StoredState, MAX_TRACKED_SOURCES};
use crate::profile::{BanRule, Bans, Cidr, Duration as ProfileDuration, FailureKind};

const KINDS: [FailureKind; 7] = [
    FailureKind::DigestFailure,
    FailureKind::OriginRejected,
    FailureKind::MalformedSip,
    FailureKind::TlsHandshake,
    FailureKind::TurnAuth,
    FailureKind::Http4xx,
    FailureKind::RateLimited,
];

fn strict() -> Bans {
    let d = |s: u64| ProfileDuration(Duration::from_secs(s));
    Bans {
        enabled: true,
        allowlist: vec!["10.0.0.0/8".parse::<Cidr>().expect("cidr"), "2001:db8:1::/48".parse::<Cidr>().expect("cidr")],
        rules: vec![
            BanRule { name: "one".into(), events: vec![FailureKind::DigestFailure, FailureKind::TurnAuth], max_retry: 1, find_time: d(60), ban_time: d(3600) },
            BanRule { name: "few".into(), events: KINDS.to_vec(), max_retry: 3, find_time: d(86_400), ban_time: d(365 * 86_400) },
        ],
        escalation_factor: 1000,
        max_ban_time: d(10 * 365 * 86_400),
        rate_limits: crate::profile::RateLimits { new_connections_per_second: 1, sip_requests_per_second: 2, burst: 1, offices: Vec::new() },
    }
}

fn ip(input: &mut Input) -> IpAddr {
    match input.byte() % 10 {
        0 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
        2 => IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped()),
        3 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        4 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
        5 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        7 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        8 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::from(input.u32())),
    }
}

pub fn guard(data: &[u8]) {
    let mut input = Input::new(data);
    let config = if input.byte() & 1 == 0 { lab().profile.bans.clone() } else { strict() };
    let mut guard = Guard::new(&config);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut now = start;
    let cap = config.max_ban_time.0;
    while !input.is_empty() {
        let op = input.byte();
        let actions = match op % 8 {
            0..=2 => {
                let ip = ip(&mut input);
                let was_banned = guard.is_banned(ip, now);
                let kind = input.pick(&KINDS);
                let actions = guard.report(Failure { ip, kind }, now);
                if was_banned {
                    assert!(actions.is_empty(), "{ip} banned again while banned: {actions:?}");
                }
                actions
            }
            3 => {
                let ip = ip(&mut input);
                let limit = if input.byte() & 1 == 0 { Limit::NewConnection } else { Limit::SipRequest };
                let (admitted, actions) = guard.admit(ip, limit, now);
                if exempt(&config.allowlist, ip) {
                    assert!(admitted, "an exempt source {ip} was rate limited");
                }
                actions
            }
            4 => {
                let ip = ip(&mut input);
                let secs = input.u32();
                let duration = (secs & 1 == 0).then(|| Duration::from_secs(u64::from(secs)));
                guard.ban(ip, duration, now)
            }
            5 => {
                let ip = ip(&mut input);
                guard.unban(ip).into_iter().collect()
            }
            6 => {
                now += Duration::from_millis(u64::from(input.u16()) * 100);
                guard.tick(now)
            }
            _ => {
                // A clock stepped back, no further than the start of the run.
                let back = Duration::from_secs(u64::from(input.u16()));
                now = now.checked_sub(back).filter(|t| *t >= start).unwrap_or(start);
                guard.tick(now)
            }
        };
        for action in &actions {
            match action {
                GuardAction::Ban(ban) => {
                    assert!(!exempt(&config.allowlist, ban.ip), "exempt source {} banned", ban.ip);
                    assert!(ban.until >= ban.since, "a ban ends before it starts");
                    let length = ban.until.duration_since(ban.since).unwrap_or_default();
                    if matches!(ban.reason, crate::guard::BanReason::Rule { .. }) {
                        assert!(length <= cap, "a ban of {length:?} past max_ban_time {cap:?}");
                    }
                    assert!(!matches!(ban.ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()), "bans name canonical addresses");
                }
                GuardAction::CloseConnections(ip) => assert!(!exempt(&config.allowlist, *ip)),
                GuardAction::Unban(_) => {}
            }
        }
        assert!(guard.engine().tracked_sources() <= MAX_TRACKED_SOURCES);
    }
    // What is persisted comes back as it was.
    let saved = guard.snapshot(now);
    let json = serde_json::to_string(&saved).expect("the state serializes");
    let read: StoredState = serde_json::from_str(&json).expect("the state reads back");
    let mut restored = Guard::new(&config);
    restored.restore(read, now);
    assert_eq!(restored.bans(now), guard.bans(now), "bans differ after a restore");
}
