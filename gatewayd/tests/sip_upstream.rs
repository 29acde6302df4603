//! The internal side with a real SIP server: sipp plays it over UDP against a running gateway.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{lab_profile_free_ports, root, Gateway, TempDir};

struct Lab {
    _dir: TempDir,
    gw: Gateway,
    sip: u16,
    upstream: u16,
}

fn lab() -> Lab {
    let dir = TempDir::new("sipup");
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(20));
    Lab { sip: ports[&5060], upstream: ports[&5080], gw, _dir: dir }
}

/// Runs a sipp scenario from tests/sipp as the SIP server (from the upstream address).
fn sipp(lab: &Lab, scenario: &str, service: &str) -> std::process::Output {
    Command::new("sipp")
        .current_dir(root().join("tests/sipp"))
        .args(["-sf", scenario, "-s", service, "-m", "1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &lab.upstream.to_string(), "-timeout", "15s", "-timeout_error", "-aa", "-nostdin", "-trace_err"])
        .arg(format!("127.0.0.1:{}", lab.sip))
        .output()
        .expect("sipp runs (apt install sip-tester)")
}

fn assert_passed(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: sipp exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).lines().rev().take(15).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn options_for_an_unregistered_dn_is_not_200() {
    let lab = lab();
    let out = sipp(&lab, "options-unregistered.xml", "5001");
    assert_passed(&out, "OPTIONS for 5001");
    drop(lab.gw);
}

#[test]
fn a_call_to_an_unregistered_dn_gets_480() {
    let lab = lab();
    let out = sipp(&lab, "invite-unregistered.xml", "5002");
    assert_passed(&out, "INVITE to 5002");
    drop(lab.gw);
}

#[test]
fn a_session_interval_below_90_s_gets_422_with_min_se() {
    let lab = lab();
    let out = sipp(&lab, "invite-session-too-short.xml", "5001");
    assert_passed(&out, "INVITE with Session-Expires: 30");
    drop(lab.gw);
}
