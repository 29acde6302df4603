//! The last known good profile, with the test as the supervisor (systemd's `Restart=` on the
//! appliance): a profile that validates but cannot start (its admin port is taken) fails three
//! starts; the fourth runs the last profile that reached READY and says so in the log and
//! `/health`; a fixed profile is tried again at once and becomes the new last good one. A
//! profile that does not load at start counts the same way.
//! Loopback only.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{eventually, free_port, http_get, lab_profile_free_ports, sha256_hex, Gateway, TempDir};

fn health(admin: u16) -> Value {
    eventually("GET /health", Duration::from_secs(10), || serde_json::from_str(&http_get(admin, "/health")?).ok())
}

/// With `broken` in `profile`: three starts end before READY, each logging `failure`; the fourth
/// runs `good` and says so in the log and `/health`.
fn fails_three_starts_then_falls_back(profile: &std::path::Path, state: &std::path::Path, failure: &str, good: &str, broken: &str, admin: u16) {
    for start in 1..=3 {
        let mut gw = Gateway::start(profile, state, &[]);
        let code = gw.wait_exit(Duration::from_secs(30));
        assert_ne!(code, Some(0), "start {start} must fail");
        assert!(gw.drain_log().iter().any(|l| l.contains(failure)), "start {start}: {:?}", gw.seen);
    }
    let mut gw = Gateway::start(profile, state, &[]);
    let said = gw.wait_for_log("LAST GOOD profile", Duration::from_secs(30));
    assert!(said.contains(&sha256_hex(broken.as_bytes())) && said.contains("3 times"), "{said}");
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    let h = health(admin);
    assert_eq!(h["profile_sha256"], sha256_hex(good.as_bytes()), "{h}");
    assert_eq!(h["profile_fallback"]["failed_sha256"], sha256_hex(broken.as_bytes()), "{h}");
    assert_eq!(h["profile_fallback"]["failed_starts"], 3, "{h}");
    gw.stop();
}

#[test]
fn a_profile_that_keeps_failing_to_start_gives_way_to_the_last_good_one() {
    let dir = TempDir::new("last-good");
    let (good, ports) = lab_profile_free_ports();
    let admin = ports[&9090];
    let profile = dir.path().join("profile.toml");
    let state = dir.path().join("state");

    std::fs::write(&profile, &good).unwrap();
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    assert_eq!(health(admin)["profile_sha256"], sha256_hex(good.as_bytes()));
    assert!(health(admin).get("profile_fallback").is_none());
    gw.stop();
    assert_eq!(std::fs::read_to_string(state.join("last-good-profile.toml")).unwrap(), good);

    // Valid, but its admin port is held by someone else: every start ends before READY.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let broken = good.replace(&format!("127.0.0.1:{admin}"), &format!("127.0.0.1:{taken_port}"));
    assert_ne!(broken, good);
    std::fs::write(&profile, &broken).unwrap();
    assert!(common::gatewayd().arg("validate").arg(&profile).status().unwrap().success(), "the new profile validates");
    fails_three_starts_then_falls_back(&profile, &state, "cannot listen on observe.admin", &good, &broken, admin);
    // The last good profile stays what it was: the fallback is not a new good one.
    assert_eq!(std::fs::read_to_string(state.join("last-good-profile.toml")).unwrap(), good);

    // The operator fixes the profile: a new one gets its own tries and, once READY, is the
    // last good one.
    let fixed_admin = free_port();
    let fixed = good.replace(&format!("127.0.0.1:{admin}"), &format!("127.0.0.1:{fixed_admin}"));
    std::fs::write(&profile, &fixed).unwrap();
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    let h = health(fixed_admin);
    assert_eq!(h["profile_sha256"], sha256_hex(fixed.as_bytes()), "{h}");
    assert!(h.get("profile_fallback").is_none(), "{h}");
    gw.stop();
    assert_eq!(std::fs::read_to_string(state.join("last-good-profile.toml")).unwrap(), fixed);
    drop(taken);
}

/// A profile that does not even load when the daemon starts (on the box: validated by root at
/// boot, unreadable for the daemon's user) is a failed start too: each of the first three ends
/// with its diagnostics, the fourth runs the last good profile.
#[test]
fn a_profile_that_does_not_load_at_start_gives_way_to_the_last_good_one() {
    let dir = TempDir::new("last-good-invalid");
    let (good, ports) = lab_profile_free_ports();
    let admin = ports[&9090];
    let profile = dir.path().join("profile.toml");
    let state = dir.path().join("state");

    std::fs::write(&profile, &good).unwrap();
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    gw.stop();

    let broken = format!("{good}\n[web]\nhttps = \"broken\"\n");
    std::fs::write(&profile, &broken).unwrap();
    fails_three_starts_then_falls_back(&profile, &state, "profile.toml:", &good, &broken, admin);
}
