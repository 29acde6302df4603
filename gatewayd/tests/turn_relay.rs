//! TURN against coturn's own client tools over real sockets: `turnutils_stunclient`, and
//! `turnutils_uclient` over UDP, TCP and TLS relaying to `turnutils_peer` on loopback, with
//! REST-scheme credentials built from the shared secret and with credentials an agent got from
//! `/turn-credentials` (fetched by curl with HTTP Digest). A wrong password cannot allocate; the
//! stock lab profile refuses the loopback peer; allocations survive a reload.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, free_port, lab_profile_free_ports, Gateway, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);
/// Messages each uclient session sends (one every 20 ms).
const MESSAGES: u32 = 50;

struct Lab {
    dir: TempDir,
    gw: Gateway,
    ports: HashMap<u16, u16>,
    peer_port: u16,
    _peer: Peer,
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lab profile, with `allowed_peers` for loopback when asked.
fn lab(allow_loopback: bool) -> Lab {
    lab_edited(allow_loopback, |_, text| text)
}

/// The lab profile as `edit` leaves it (it gets the profile's directory to put files in).
fn lab_edited(allow_loopback: bool, edit: impl FnOnce(&Path, String) -> String) -> Lab {
    let dir = TempDir::new("turn-relay");
    let (text, ports) = lab_profile_free_ports();
    let mut text = edit(dir.path(), text);
    if allow_loopback {
        text = text.replace("relay_ports = \"43000-43999\"", "relay_ports = \"43000-43999\"\nallowed_peers = [\"127.0.0.1/32\"]");
    }
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    // Outside the lab's media range (40000-40999): a peer there is one of the gateway's own
    // media ports, which the stock profile lets TURN reach, and the refusal test would pass
    // traffic by the port's chance.
    let peer_port = std::iter::repeat_with(free_port).find(|p| !(40000..=40999).contains(p)).unwrap();
    let peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer (Debian package coturn; run scripts/setup)");
    Lab { dir, gw, ports, peer_port, _peer: Peer(peer) }
}

impl Lab {
    fn turn_port(&self, tls: bool) -> u16 {
        self.ports[if tls { &5349 } else { &3478 }]
    }

    /// One uclient run: `transport` is "udp", "tcp" or "tls"; `auth` the credential flags.
    fn uclient(&self, transport: &str, auth: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "turnutils_uclient"]);
        match transport {
            "tcp" => {
                cmd.arg("-t");
            }
            "tls" => {
                cmd.args(["-t", "-S"]);
            }
            _ => {}
        }
        let port = self.turn_port(transport == "tls").to_string();
        let peer = self.peer_port.to_string();
        let messages = MESSAGES.to_string();
        cmd.args(["-p", &port, "-e", "127.0.0.1", "-r", &peer, "-n", &messages, "-m", "2", "-l", "172"]);
        cmd.args(auth).arg("127.0.0.1");
        cmd.output().expect("turnutils_uclient runs")
    }

    fn metrics(&self) -> String {
        common::http_get(self.ports[&9090], "/metrics").expect("metrics answer")
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every message came back: uclient's totals say so (with `-m 2 -n N` it counts 2N).
fn assert_all_returned(out: &Output, what: &str) {
    let log = text(out);
    let sent = 2 * MESSAGES;
    assert!(log.contains(&format!("tot_send_msgs={sent}, tot_recv_msgs={sent}")), "{what}: not every message returned:\n{log}");
    assert!(log.contains("Total lost packets 0 (0.000000%)"), "{what}: lost packets:\n{log}");
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_secret_file_named_relative_to_the_profile_is_read_from_the_profile_directory() {
    // The daemon runs in another working directory (the crate's here, / under systemd).
    let lab = lab_edited(true, |dir, text| {
        std::fs::write(dir.join("turn.secret"), "lab-turn-secret\n").unwrap();
        text.replace("shared_secret = \"lab-turn-secret\"", "shared_secret_file = \"turn.secret\"")
    });
    assert_all_returned(&lab.uclient("udp", &["-W", "lab-turn-secret", "-u", "5001"]), "udp");
}

#[test]
fn stun_binding_reports_the_reflexive_address() {
    let lab = lab(false);
    let out = Command::new("turnutils_stunclient").args(["-p", &lab.turn_port(false).to_string(), "127.0.0.1"]).output().unwrap();
    let log = text(&out);
    assert!(log.contains("UDP reflexive addr: 127.0.0.1:"), "{log}");
}

#[test]
fn rest_credentials_relay_over_udp_tcp_and_tls_with_nothing_lost() {
    let lab = lab(true);
    let auth = ["-W", "lab-turn-secret", "-u", "5001"];
    for transport in ["udp", "tcp", "tls"] {
        assert_all_returned(&lab.uclient(transport, &auth), transport);
    }
    let m = lab.metrics();
    assert!(metric(&m, "gatewayd_turn_relayed_packets_total{direction=\"to_peer\"}") >= u64::from(6 * MESSAGES), "{m}");
    assert!(metric(&m, "gatewayd_turn_allocations_created_total") >= 6, "{m}");
    assert!(!m.contains(":5001"), "metrics never carry TURN usernames");
}

#[test]
fn credentials_from_the_web_listener_work_and_a_wrong_password_cannot_allocate() {
    let lab = lab(true);
    let url = format!("https://127.0.0.1:{}/turn-credentials", lab.ports[&8443]);
    let cacert = lab.dir.path().join("state/web.crt");
    let out = Command::new("curl").args(["-sS", "--digest", "-u", "5001:pass5001", "--cacert"]).arg(&cacert).arg(&url).output().expect("curl runs");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let (user, password) = (body["username"].as_str().unwrap(), body["password"].as_str().unwrap());
    assert_all_returned(&lab.uclient("udp", &["-u", user, "-w", password]), "minted credentials over UDP");
    assert_all_returned(&lab.uclient("tls", &["-u", user, "-w", password]), "minted credentials over TLS");

    let before = metric(&lab.metrics(), "gatewayd_turn_allocations_created_total");
    let out = lab.uclient("udp", &["-u", user, "-w", "not-the-password"]);
    assert!(text(&out).contains("Cannot complete Allocation"), "{}", text(&out));
    let m = lab.metrics();
    assert_eq!(metric(&m, "gatewayd_turn_allocations_created_total"), before, "a wrong password allocated");
    assert!(metric(&m, "gatewayd_turn_auth_failures_total") > 0, "{m}");
    assert!(metric(&m, "gatewayd_failures_total{kind=\"turn-auth\"}") > 0, "the guard hears of it: {m}");
}

#[test]
fn the_stock_lab_profile_refuses_a_loopback_peer() {
    let lab = lab(false);
    let out = lab.uclient("udp", &["-W", "lab-turn-secret", "-u", "5001"]);
    let log = text(&out);
    assert!(log.contains("403"), "the channel to 127.0.0.1:{} must be forbidden:\n{log}", lab.peer_port);
    let m = lab.metrics();
    assert!(metric(&m, "gatewayd_turn_peers_refused_total{reason=\"not-media-port\"}") > 0, "{m}");
    assert_eq!(metric(&m, "gatewayd_turn_relayed_packets_total{direction=\"to_peer\"}"), 0, "{m}");
}

#[test]
fn allocations_survive_a_reload_that_keeps_their_listener() {
    let mut lab = lab(true);
    // A long session in the background while the profile is reloaded.
    let mut cmd = Command::new("timeout");
    let port = lab.turn_port(false).to_string();
    let peer = lab.peer_port.to_string();
    cmd.args(["60", "turnutils_uclient", "-p", &port, "-e", "127.0.0.1", "-r", &peer, "-n", "250", "-m", "1", "-l", "172", "-W", "lab-turn-secret", "-u", "5002", "127.0.0.1"]);
    let session = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    eventually("the session allocated", DEADLINE, || (metric(&lab.metrics(), "gatewayd_turn_allocations ") > 0).then_some(()));
    let profile = lab.dir.path().join("profile.toml");
    let edited = std::fs::read_to_string(&profile).unwrap().replace("log_level = \"info\"", "log_level = \"debug\"");
    std::fs::write(&profile, edited).unwrap();
    lab.gw.signal("HUP");
    lab.gw.wait_for_log("profile reloaded", DEADLINE);
    let out = session.wait_with_output().unwrap();
    let log = text(&out);
    // uclient counts 2N for `-m 1 -n N`: it also relays over the reserved RTCP port.
    assert!(log.contains("tot_send_msgs=500, tot_recv_msgs=500") && log.contains("Total lost packets 0 (0.000000%)"), "{log}");
}
