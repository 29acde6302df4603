//! TURN on a DMZ-like profile (not lab mode, firewall managed, certificate from files) in the
//! namespace lab: a client on the internet side cannot relay to the SIP server, to the
//! gateway's internal address or to loopback (403, and nothing arrives there), while a peer the
//! profile allows is relayed with nothing lost, so the refusals are the policy and not a
//! broken relay.
//!
//! Needs root, `ip netns` and coturn's turnutils; skips with a message without namespaces.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{root, Gateway, TempDir};
use lab::*;

const PEER_PORT: u16 = 3480;

fn dmz_profile(dir: &std::path::Path) -> String {
    let tls = root().join("tests/profiles/tls");
    std::fs::write(dir.join("turn.secret"), "dmz-turn-secret\n").unwrap();
    profile_text("gwturn")
        .replace("lab_mode = true", "lab_mode = false")
        .replace(
            "[tls]\nsource = \"self-signed\"",
            &format!("[tls]\nsource = \"files\"\ncertificate = \"{}\"\nkey = \"{}\"", tls.join("gateway.crt").display(), tls.join("gateway.key").display()),
        )
        // Refused clients leave their allocations until they expire: room for every run here.
        .replace("relay_ports = \"43000-43010\"", "relay_ports = \"43000-43199\"")
        .replace("shared_secret = \"s\"", &format!("shared_secret_file = \"{}\"\nallowed_peers = [\"{NEIGHBOUR}/32\"]", dir.join("turn.secret").display()))
}

/// One uclient run as agent `dn` (each run holds two allocations until they expire: a DN each
/// keeps clear of the per-user quota).
fn uclient(ns: &str, dn: &str, peer: &str) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "30", "turnutils_uclient", "-W", "dmz-turn-secret", "-u", dn])
        .args(["-e", peer, "-r", &PEER_PORT.to_string(), "-n", "20", "-m", "1", "-l", "172", PUBLIC_GW])
        .output()
        .expect("turnutils_uclient (Debian package coturn)")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_dmz_gateway_never_relays_into_the_internal_network() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("t").expect("namespaces");
    let dir = TempDir::new("turn-netns");
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, dmz_profile(dir.path())).unwrap();
    let check = common::gatewayd().args(["validate"]).arg(&profile).output().unwrap();
    assert!(check.status.success(), "the DMZ profile is valid: {}", text(&check));

    // Listeners where a relayed packet would land if the policy let it through.
    let sinks: Vec<(&str, UdpSocket)> = [(UPSTREAM, &lab.internal), (OTHER_INTERNAL, &lab.internal)]
        .into_iter()
        .map(|(ip, ns)| (ip, in_netns(ns, || UdpSocket::bind((ip, PEER_PORT)).unwrap())))
        .collect();
    let loopback_sink = in_netns(&lab.gw, || UdpSocket::bind(("127.0.0.1", PEER_PORT)).unwrap());
    let peer = Command::new("ip")
        .args(["netns", "exec", &lab.inet, "turnutils_peer", "-L", NEIGHBOUR, "-p", &PEER_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _peer = Killed(peer);

    let mut gw = Gateway::start_in_netns(&lab.gw, &profile, &dir.path().join("state"));
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));

    // The allowed peer first: the relay works.
    let out = uclient(&lab.inet, "5001", NEIGHBOUR);
    let log = text(&out);
    assert!(log.contains("tot_send_msgs=40, tot_recv_msgs=40") && log.contains("Total lost packets 0 (0.000000%)"), "allowed peer:\n{log}");

    for (dn, target) in [("5002", UPSTREAM), ("5003", OTHER_INTERNAL), ("5004", INTERNAL_GW), ("5005", "127.0.0.1")] {
        let log = text(&uclient(&lab.inet, dn, target));
        assert!(log.contains("error 403"), "a relay to {target} must be forbidden:\n{log}");
    }
    let mut buf = [0u8; 2048];
    for (ip, sock) in sinks.iter().map(|(ip, s)| (*ip, s)).chain([("127.0.0.1 in the gateway", &loopback_sink)]) {
        sock.set_nonblocking(true).unwrap();
        assert!(sock.recv_from(&mut buf).is_err(), "a packet reached {ip}");
    }
    let metrics = run(&["ip", "netns", "exec", &lab.internal, "curl", "-s", "--interface", OTHER_INTERNAL, &format!("http://{INTERNAL_GW}:9090/metrics")]).unwrap_or_default();
    assert!(metrics.contains("gatewayd_turn_peers_refused_total{reason=\"internal\"}"), "{metrics}");
    gw.stop();
}
