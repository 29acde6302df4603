//! End to end in network namespaces this test creates: an "internet" namespace, the "gateway"
//! with the generated ruleset applied, and an "internal" namespace with the SIP server's
//! addresses. Stand-in TCP/UDP echo listeners in the gateway listen on every address, so
//! before the ruleset everything answers from everywhere and afterwards only what the profile
//! opens does. Then bans go through the ban service: the banned source is dropped on every port
//! (established connections included) while its neighbour keeps working, and comes back after
//! the ban time.
//!
//! Needs root and `ip netns`; skips with a message otherwise. Namespaces are unique per run and
//! deleted even when an assertion fails; the host ruleset is compared before and after.
//!
//! The lab (namespaces, echo listeners, probes) is `tests/netns/lab.rs`; the ban latency
//! benchmark is `firewall_ban_latency.rs`.

#[path = "../../tests/netns/lab.rs"]
mod lab;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewayd::firewall::{Firewall, Nft, Status};
use gatewayd::guard::{BanService, BanStore, Failure, GuardAction};
use gatewayd::profile::FailureKind;
use lab::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_profiles_openings_answer_and_bans_drop_one_source_everywhere() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let host_before = host_ruleset();
    let lab = Lab::create("a").expect("namespaces");
    serve_echo(&lab.gw, &TCP_PORTS, &UDP_PORTS);
    serve_echo(&lab.internal, &[7000], &[]);
    let everything = all(&TCP_PORTS, &UDP_PORTS);

    // Without the ruleset every stand-in answers from everywhere (so a drop below is the firewall's).
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, everything);
    assert_eq!(open_ports(&lab.internal, OTHER_INTERNAL, INTERNAL_GW).await, everything);
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, UPSTREAM, 7000).await, "routed before the ruleset");

    let profile = load("gatewayd");
    let firewall = Arc::new(Firewall::with_nft(Nft::in_netns(&lab.gw), false));
    let status = firewall.apply(&profile, &[]).await.expect("ruleset applies");
    assert_eq!(status, Status::Enforcing { table: "gatewayd".into() });

    // Internet side: web, TURN and the public media/relay ranges only.
    let public = all(&[80, 443, 3478, 5349], &[3478, 40000, 43000]);
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, public);
    assert_eq!(open_ports(&lab.inet, ATTACKER, INTERNAL_GW).await, vec![], "internal and management addresses are not reachable from the public side");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, UPSTREAM, 7000).await, "nothing routed from the public side to the internal network");
    // Internal side: SIP and RTP only from the upstream server; admin only from management sources.
    assert_eq!(open_ports(&lab.internal, UPSTREAM, INTERNAL_GW).await, all(&[5060], &[5060, 41000]));
    assert_eq!(open_ports(&lab.internal, OTHER_INTERNAL, INTERNAL_GW).await, all(&[9090], &[]));
    assert_eq!(open_ports(&lab.internal, UPSTREAM, PUBLIC_GW).await, vec![], "public services only on the public interface");

    // A ban through the ban service, fed by failures like a listener would.
    let state = std::env::temp_dir().join(format!("gatewayd-netns-{}", std::process::id()));
    let service = BanService::new(&profile, firewall.clone(), Some(BanStore::in_dir(&state)));
    let mut closures = service.subscribe_closures();
    let attacker: IpAddr = ATTACKER.parse().unwrap();
    let mut established = tcp_connect(&lab.inet, ATTACKER, SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)).await.expect("connects");
    for _ in 0..2 {
        assert!(service.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await.is_empty());
    }
    let tripped = Instant::now();
    let actions = service.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await;
    let in_effect = tripped.elapsed();
    assert!(matches!(actions.first(), Some(GuardAction::Ban(b)) if b.ip == attacker), "{actions:?}");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Udp, PUBLIC_GW, 40000).await, "dropped as soon as report() returns");
    assert!(in_effect < Duration::from_secs(1), "ban took {in_effect:?}");
    eprintln!("ban in the kernel {in_effect:?} after the tripping failure");
    assert_eq!(closures.try_recv().ok(), Some(attacker), "listeners are told to close the source's connections");
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, vec![], "banned on every port");
    assert!(!echoes(&mut established).await, "established connections are cut too");
    assert_eq!(open_ports(&lab.inet, NEIGHBOUR, PUBLIC_GW).await, public, "the neighbour keeps working");
    assert_eq!(service.list().len(), 1);
    assert!(state.join("bans.json").exists(), "bans are persisted");

    // After the ban time (2 s) the source works again, without anyone lifting it.
    let deadline = Instant::now() + Duration::from_secs(6);
    while !answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await {
        assert!(Instant::now() < deadline, "still banned after its ban time");
    }
    assert!(tripped.elapsed() >= Duration::from_millis(1900), "ban ended early: {:?}", tripped.elapsed());
    service.tick().await;
    assert!(service.list().is_empty());

    // An operator's ban survives a reload and a restart, and is lifted through the same API.
    service.ban(attacker, Some(Duration::from_secs(60))).await.expect("bans");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await);
    service.apply_firewall(&profile).await.expect("reload applies");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "ban survives a reload");
    service.flush();
    drop(service);
    let restarted = BanService::new(&profile, firewall.clone(), Some(BanStore::in_dir(&state)));
    let carried = restarted.firewall_bans();
    assert_eq!(carried.len(), 1);
    assert!(carried[0].1 > Duration::from_secs(50), "{carried:?}");
    // A fresh table (as after a reboot) gets the persisted ban preloaded.
    firewall.remove().await.unwrap();
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "no table, no ban");
    restarted.apply_firewall(&profile).await.expect("applies");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "ban survives a restart");
    // Something outside flushes the whole ruleset: housekeeping puts the table back, ban included.
    run(&["ip", "netns", "exec", &lab.gw, "nft", "flush", "ruleset"]).unwrap();
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "flushed");
    assert!(restarted.restore_firewall_if_gone(&profile).await, "noticed the missing table");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "ban restored with the table");
    assert_eq!(open_ports(&lab.inet, NEIGHBOUR, PUBLIC_GW).await, public, "ruleset restored");
    assert!(!restarted.restore_firewall_if_gone(&profile).await, "nothing to do when in place");
    restarted.remove(attacker).await.expect("lifted");
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "lifted ban lets the source in at once");
    assert!(restarted.remove(attacker).await.is_err(), "not banned any more");

    // Turning management off removes gatewayd's table; bans are then only logged.
    let mut off = profile.clone();
    off.firewall.manage = false;
    assert_eq!(firewall.apply(&off, &[]).await.unwrap(), Status::Disabled);
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, everything);
    assert!(restarted.ban(attacker, None).await.is_ok());
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "not enforced when not managed");

    let _ = std::fs::remove_dir_all(&state);
    drop(lab);
    assert_eq!(host_ruleset(), host_before, "the host ruleset is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permission_the_firewall_only_logs_and_a_bad_ruleset_changes_nothing() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("b").expect("namespaces");
    serve_echo(&lab.gw, &[443], &[]);
    let profile = load("gatewayd");

    // nft in a user namespace without mapped root: not permitted, nothing applied, log-only.
    let unprivileged = Firewall::with_nft(Nft::with_command(vec!["ip".into(), "netns".into(), "exec".into(), lab.gw.clone(), "unshare".into(), "-U".into(), "nft".into()]), false);
    let status = unprivileged.apply(&profile, &[]).await.expect("runs on");
    assert!(matches!(&status, Status::LogOnly { reason } if reason.contains("not permitted")), "{status:?}");
    unprivileged.ban(ATTACKER.parse().unwrap(), Duration::from_secs(60)).await.expect("logged only");
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "nothing was applied");

    // A ruleset nft refuses (a table name the kernel rejects) leaves the previous one in place.
    let firewall = Firewall::with_nft(Nft::in_netns(&lab.gw), false);
    firewall.apply(&profile, &[]).await.expect("applies");
    let mut bad = profile.clone();
    bad.firewall.table = "x".repeat(300);
    assert!(firewall.apply(&bad, &[]).await.is_err());
    assert_eq!(firewall.status(), Status::Enforcing { table: "gatewayd".into() });
    let listed = run(&["ip", "netns", "exec", &lab.gw, "nft", "list", "tables"]).unwrap();
    assert_eq!(listed.trim(), "table inet gatewayd", "exactly gatewayd's table, unchanged");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 9090).await);
}
